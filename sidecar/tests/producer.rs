//! The producer through the sidecar, against a real broker in process: AWS SDK calls and
//! the plain HTTP API are batched into PutRecords, every acknowledged record is stored once
//! where its answer said, bad input is refused at once with the broker's error, and records
//! buffered while the brokers are down are retried until they come back, also through a
//! shutdown.

mod common;

use aws_sdk_kinesis::primitives::Blob;
use common::{request, request_json, sdk, shard_records, wait_active};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use streamfabric_sidecar::{ProducerSettings, SidecarSettings};

async fn sidecar(broker: &str) -> streamfabric_sidecar::Running {
    streamfabric_sidecar::start(SidecarSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker_endpoint: broker.to_string(),
        broker_timeout: Duration::from_secs(5),
        credentials: None,
        admin_listen: None,
        producer: ProducerSettings { max_buffered_time: Duration::from_millis(20), ..ProducerSettings::default() },
        consumer: None,
    })
    .await
    .unwrap()
}

async fn broker_on(dir: &std::path::Path, listen: SocketAddr) -> streamfabric_broker::Running {
    let mut config = streamfabric_broker::BrokerConfig::for_dir(dir);
    config.listen = listen;
    streamfabric_broker::start(config).await.unwrap()
}

async fn create_active(k: &aws_sdk_kinesis::Client, stream: &str, shards: i32) {
    k.create_stream().stream_name(stream).shard_count(shards).send().await.unwrap();
    wait_active(k, stream).await;
}

/// Every record of `stream`, read straight from the broker: data -> [(shard, sequence)].
async fn stored(k: &aws_sdk_kinesis::Client, stream: &str) -> BTreeMap<Vec<u8>, Vec<(String, String)>> {
    let mut out: BTreeMap<Vec<u8>, Vec<(String, String)>> = BTreeMap::new();
    for (shard, _, _, records) in shard_records(k, stream).await {
        for (sequence, _, data) in records {
            out.entry(data.to_vec()).or_default().push((shard.clone(), sequence));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_and_plain_records_are_batched_and_each_stored_once_where_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_on(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let broker_url = format!("http://{}", broker.api_addr);
    let side = sidecar(&broker_url).await;
    let k = sdk(&format!("http://{}", side.addr));
    // Operations other than PutRecord(s) pass through to the brokers.
    create_active(&k, "orders", 4).await;

    // 40 callers of PutRecord at once, and PutRecords of 50.
    let mut tasks = Vec::new();
    for caller in 0..40 {
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            for i in 0..100 {
                let data = format!("one {caller}-{i}");
                let out = k
                    .put_record()
                    .stream_name("orders")
                    .partition_key(format!("k{caller}-{i}"))
                    .data(Blob::new(data.clone()))
                    .send()
                    .await
                    .unwrap();
                placed.push((data.into_bytes(), (out.shard_id, out.sequence_number)));
            }
            let entries: Vec<_> = (0..50)
                .map(|i| {
                    aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                        .partition_key(format!("b{caller}-{i}"))
                        .data(Blob::new(format!("batch {caller}-{i}")))
                        .build()
                        .unwrap()
                })
                .collect();
            let out = k.put_records().stream_name("orders").set_records(Some(entries)).send().await.unwrap();
            assert_eq!(out.failed_record_count, Some(0));
            for (i, r) in out.records.into_iter().enumerate() {
                let data = format!("batch {caller}-{i}").into_bytes();
                placed.push((data, (r.shard_id.unwrap(), r.sequence_number.unwrap())));
            }
            placed
        }));
    }
    let mut answered = BTreeMap::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert_eq!(answered.len(), 6_000);

    // The plain API: a JSON array (text and base64) and JSON lines.
    let http = |body: &'static str| {
        let url = format!("http://{}/v1/streams/orders/records", side.addr);
        async move { post(&url, body).await }
    };
    let (status, answer) =
        http(r#"[{"partitionKey": "p1", "data": "plain text"}, {"partitionKey": "p2", "dataBase64": "AAEC/w=="}]"#)
            .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["failedRecordCount"], 0, "{answer}");
    let place = |v: &serde_json::Value| {
        (v["shardId"].as_str().unwrap().to_string(), v["sequenceNumber"].as_str().unwrap().to_string())
    };
    answered.insert(b"plain text".to_vec(), place(&answer["records"][0]));
    answered.insert(vec![0, 1, 2, 255], place(&answer["records"][1]));
    let (status, answer) = http(
        "{\"partitionKey\": \"p3\", \"data\": \"line one\"}\n{\"partitionKey\": \"p4\", \"data\": \"line two\"}\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answered.insert(b"line one".to_vec(), place(&answer["records"][0]));
    answered.insert(b"line two".to_vec(), place(&answer["records"][1]));

    // Bad input is refused at once, with the broker's code and the field and limit named.
    let long_key = "k".repeat(257);
    let err =
        k.put_record().stream_name("orders").partition_key(&long_key).data(Blob::new("x")).send().await.unwrap_err();
    let err = err.into_service_error();
    assert_eq!(err.meta().code(), Some("ValidationException"));
    let message = err.meta().message().unwrap();
    assert!(message.contains("partitionKey") && message.contains("256"), "{message}");
    let (status, answer) = http(r#"[{"data": "no key"}]"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("records.1.partitionKey"), "{answer}");
    let (status, answer) = http(r#"[{"partitionKey": "p", "data": "x", "dataBase64": "eA=="}]"#).await;
    assert_eq!((status, answer["errorCode"].as_str()), (400, Some("InvalidArgumentException")), "{answer}");
    let err = k.put_record().stream_name("absent").partition_key("p").data(Blob::new("x")).send().await.unwrap_err();
    assert_eq!(err.into_service_error().meta().code(), Some("ResourceNotFoundException"));
    let entry =
        aws_sdk_kinesis::types::PutRecordsRequestEntry::builder().partition_key("p").data(Blob::new("x")).build();
    let err = k.put_records().stream_name("absent").records(entry.unwrap()).send().await.unwrap_err();
    assert_eq!(err.into_service_error().meta().code(), Some("ResourceNotFoundException"), "the whole request, as AWS");

    // Stored once each, where the answer said, and nothing else (the refused ones are not).
    let direct = sdk(&broker_url);
    let seen = stored(&direct, "orders").await;
    let twice: Vec<_> = seen.iter().filter(|(_, places)| places.len() > 1).collect();
    assert!(twice.is_empty(), "stored twice: {:?}", &twice[..twice.len().min(3)]);
    let seen: BTreeMap<_, _> = seen.into_iter().map(|(d, mut p)| (d, p.remove(0))).collect();
    assert_eq!(seen, answered, "every acknowledged record stored once, at its answered place; nothing else");
    let batches = side.metrics.put_requests.get();
    assert!(batches < 6_004 / 10, "{batches} PutRecords for 6,004 records: batched");
    eprintln!("6,004 records in {batches} PutRecords to the broker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_buffered_while_the_broker_is_down_are_retried_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let broker = broker_on(dir.path(), listen).await;
    let broker_url = format!("http://{listen}");
    create_active(&sdk(&broker_url), "orders", 2).await;
    assert!(broker.shutdown(Duration::from_secs(5)).await);

    let side = sidecar(&broker_url).await;
    let k = sdk(&format!("http://{}", side.addr));
    let put = tokio::spawn(async move {
        k.put_record().stream_name("orders").partition_key("p").data(Blob::new("while down")).send().await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(side.metrics.retries.with_label_values(&["failed"]).get() > 0, "retried while the broker was down");
    // Stopping now (SIGTERM) waits for the call in flight: its record is not dropped.
    let addr = side.addr;
    let stopping = tokio::spawn(side.shutdown(Duration::from_secs(20)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connection once stopping");
    let back = broker_on(dir.path(), listen).await;
    let out = put.await.unwrap().expect("answered once the broker was back");
    assert!(stopping.await.unwrap(), "stopped once the call in flight was answered");
    let seen = stored(&sdk(&broker_url), "orders").await;
    assert_eq!(seen.get(b"while down".as_slice()), Some(&vec![(out.shard_id, out.sequence_number)]));
    drop(back);
}

async fn post(url: &str, body: &'static str) -> (u16, serde_json::Value) {
    request_json(http::Method::POST, url, body).await
}

/// Aggregation: records of one shard share KPL aggregates; de-aggregated, every acknowledged
/// record is in an aggregate stored where its answer said, on a shard whose range holds its
/// hash key, once, in order per key. After a reshard the sidecar's shard map is stale: an
/// aggregate landing on another shard than predicted is sent again, and the records are
/// still found in range (consumers drop what is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_records_land_in_their_shards_and_deaggregate_to_every_record() {
    use streamfabric_sidecar::aggregation::deaggregate;
    use streamfabric_sidecar::shards::hash_key_of;
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_on(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let broker_url = format!("http://{}", broker.api_addr);
    let side = streamfabric_sidecar::start(SidecarSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker_endpoint: broker_url.clone(),
        broker_timeout: Duration::from_secs(5),
        credentials: None,
        admin_listen: None,
        producer: ProducerSettings {
            max_buffered_time: Duration::from_millis(20),
            aggregate: true,
            aggregation_max_bytes: 4_096,
            ..ProducerSettings::default()
        },
        consumer: None,
    })
    .await
    .unwrap();
    let k = sdk(&format!("http://{}", side.addr));
    let direct = sdk(&broker_url);
    create_active(&direct, "agg", 4).await;

    // Callers put PutRecords of 50 one after another; keys repeat, so order per key is defined.
    let put_all = |phase: &'static str| {
        let tasks: Vec<_> = (0..20)
            .map(|caller| {
                let k = k.clone();
                tokio::spawn(async move {
                    let mut placed = Vec::new();
                    for round in 0..5 {
                        let entries: Vec<_> = (0..50)
                            .map(|i| {
                                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                                    .partition_key(format!("key-{caller}-{}", i % 7))
                                    .data(Blob::new(format!("{phase} {caller} {round} {i}")))
                                    .build()
                                    .unwrap()
                            })
                            .collect();
                        let out = k.put_records().stream_name("agg").set_records(Some(entries)).send().await.unwrap();
                        assert_eq!(out.failed_record_count, Some(0));
                        for (i, r) in out.records.into_iter().enumerate() {
                            let key = format!("key-{caller}-{}", i % 7);
                            let data = format!("{phase} {caller} {round} {i}");
                            placed.push((data, key, r.shard_id.unwrap(), r.sequence_number.unwrap()));
                        }
                    }
                    placed
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        }
    };
    let mut answered = put_all("before").await;
    assert_eq!(answered.len(), 5_000);
    let aggregates = side.metrics.aggregates.get();
    assert!(aggregates > 0, "records were aggregated");

    direct
        .update_shard_count()
        .stream_name("agg")
        .target_shard_count(8)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    for _ in 0..500 {
        let d = direct.describe_stream_summary().stream_name("agg").send().await.unwrap();
        if d.stream_description_summary.unwrap().stream_status.as_str() == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answered.extend(put_all("after").await);
    assert!(side.metrics.retries.with_label_values(&["wrong_shard"]).get() > 0, "the stale shard map was noticed");

    // De-aggregate as a consumer does: sub-records outside the shard's range are dropped.
    let mut found: BTreeMap<String, Vec<(String, String, usize)>> = BTreeMap::new();
    let (mut kinesis_records, mut user_records, mut dropped) = (0, 0, 0);
    for (shard, start, end, records) in shard_records(&direct, "agg").await {
        for (sequence, key, data) in records {
            kinesis_records += 1;
            // A record alone in its shard's batch goes as it is, as with the KPL.
            let subs = deaggregate(&data).unwrap_or_else(|| {
                vec![streamfabric_sidecar::aggregation::SubRecord { partition_key: key, explicit_hash_key: None, data }]
            });
            for (index, sub) in subs.into_iter().enumerate() {
                let hash = hash_key_of(&sub.partition_key, sub.explicit_hash_key.as_deref());
                if !(start..=end).contains(&hash) {
                    dropped += 1;
                    continue;
                }
                user_records += 1;
                let data = String::from_utf8(sub.data.to_vec()).unwrap();
                found.entry(data).or_default().push((shard.clone(), sequence.clone(), index));
            }
        }
    }
    eprintln!(
        "{} user records in {kinesis_records} Kinesis records ({aggregates} aggregates before the reshard); {dropped} dropped out of range",
        answered.len()
    );
    assert!(kinesis_records * 10 < user_records, "{kinesis_records} Kinesis records for {user_records} user records");
    let wrong = side.metrics.retries.with_label_values(&["wrong_shard"]).get();
    // Per (key, round): the first and last place (sequence, position in the aggregate).
    // Sequence numbers are all 56 digits: as strings they order like the numbers.
    type Place = (String, usize);
    let mut rounds_of_key: BTreeMap<(String, u32), (Place, Place)> = BTreeMap::new();
    for (data, key, shard, sequence) in &answered {
        let places = found.get(data).unwrap_or_else(|| panic!("{data} acknowledged but not found"));
        assert!(
            places.iter().any(|(s, q, _)| s == shard && q == sequence),
            "{data}: answered {shard} {sequence}, stored at {places:?}"
        );
        assert!(places.len() == 1 || wrong > 0, "{data} stored {} times", places.len());
        // Order per key across a caller's rounds (each waits for the previous one's answers):
        // every record of a round is placed (sequence, then position in the aggregate) after
        // the previous round's. Only before the reshard: records sent again after it may
        // overtake others, as with the KPL.
        let (_, _, index) = places.iter().find(|(s, q, _)| s == shard && q == sequence).unwrap();
        let at = (sequence.clone(), *index);
        if data.starts_with("before") {
            let round: u32 = data.split(' ').nth(2).unwrap().parse().unwrap();
            let span = rounds_of_key.entry((key.clone(), round)).or_insert((at.clone(), at.clone()));
            *span = (span.0.clone().min(at.clone()), span.1.clone().max(at));
        }
    }
    for ((key, round), (_, last)) in &rounds_of_key {
        if let Some((first_next, _)) = rounds_of_key.get(&(key.clone(), round + 1)) {
            assert!(last < first_next, "key {key}: round {} placed before round {round} ended", round + 1);
        }
    }
}

/// Fire and forget: puts are answered once buffered (no placement), the buffer is bounded
/// (a record beyond it is refused at once with LimitExceededException naming the limit),
/// buffered records wait out a broker outage and are all stored before shutdown ends, and
/// the admin port's metrics count what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_answers_at_once_bounds_its_buffer_and_stores_everything_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let broker = broker_on(dir.path(), listen).await;
    let broker_url = format!("http://{listen}");
    create_active(&sdk(&broker_url), "events", 2).await;
    assert!(broker.shutdown(Duration::from_secs(5)).await, "the brokers are down while the application puts");

    let side = streamfabric_sidecar::start(SidecarSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker_endpoint: broker_url.clone(),
        broker_timeout: Duration::from_secs(2),
        credentials: None,
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        producer: ProducerSettings {
            ack: streamfabric_sidecar::producer::Ack::Buffered,
            max_buffered_bytes: 2_000,
            max_buffered_time: Duration::from_millis(20),
            ..ProducerSettings::default()
        },
        consumer: None,
    })
    .await
    .unwrap();
    let k = sdk(&format!("http://{}", side.addr));
    // 30 records of 100 bytes (and a 6-byte key): 18 fit in 2,000 bytes.
    let entries: Vec<_> = (0..30)
        .map(|i| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(format!("k-{i:04}"))
                .data(Blob::new(format!("{i:0100}")))
                .build()
                .unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let out = k.put_records().stream_name("events").set_records(Some(entries)).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "answered at once, with the brokers down");
    let accepted: Vec<usize> =
        out.records.iter().enumerate().filter(|(_, r)| r.error_code.is_none()).map(|(i, _)| i).collect();
    assert_eq!(accepted, (0..18).collect::<Vec<_>>(), "{:?}", out.records);
    let refused = &out.records[18];
    assert_eq!(refused.error_code.as_deref(), Some("LimitExceededException"));
    assert!(refused.error_message.as_deref().unwrap().contains("--max-buffered-bytes"), "{refused:?}");
    assert_eq!(out.failed_record_count, Some(12));
    assert_eq!(out.records[0].sequence_number.as_deref(), Some(""), "no placement when fire and forget");

    let metrics = get(&format!("http://{}/metrics", side.admin_addr.unwrap())).await;
    assert!(metrics.contains("streamfabric_sidecar_buffered_records 18"), "{metrics}");
    assert!(metrics.contains("streamfabric_sidecar_records_total{outcome=\"refused_full\"} 12"), "{metrics}");

    // The brokers come back; shutdown waits until every buffered record is stored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = broker_on(dir.path(), listen).await;
    let metrics_at = side.metrics.clone();
    assert!(side.shutdown(Duration::from_secs(20)).await, "every buffered record answered before exit");
    assert_eq!(metrics_at.buffered_records.get(), 0);
    assert_eq!(metrics_at.records.with_label_values(&["stored"]).get(), 18);
    let seen = stored(&sdk(&broker_url), "events").await;
    let expected: std::collections::BTreeSet<Vec<u8>> = (0..18).map(|i| format!("{i:0100}").into_bytes()).collect();
    assert_eq!(seen.keys().cloned().collect::<std::collections::BTreeSet<_>>(), expected);
    drop(back);
}

async fn get(url: &str) -> String {
    request(http::Method::GET, url, "").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_signs_its_calls_for_brokers_that_require_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(&credentials, "AKIDSIDECAR sidecar-secret\n").unwrap();
    let mut config = streamfabric_broker::BrokerConfig::for_dir(dir.path());
    config.credentials = Some(credentials);
    let broker = streamfabric_broker::start(config).await.unwrap();
    let broker_url = format!("http://{}", broker.api_addr);
    let signed = |access_key_id: &str| {
        Some(streamfabric_api::sigv4::Signer {
            access_key_id: access_key_id.into(),
            secret_access_key: "sidecar-secret".into(),
            region: "us-east-1".into(),
            service: "kinesis".into(),
        })
    };
    let start = |credentials| {
        streamfabric_sidecar::start(SidecarSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            broker_endpoint: broker_url.clone(),
            broker_timeout: Duration::from_secs(5),
            credentials,
            admin_listen: None,
            producer: ProducerSettings { max_buffered_time: Duration::from_millis(20), ..ProducerSettings::default() },
            consumer: None,
        })
    };
    let unsigned = start(None).await.unwrap();
    let e = sdk(&format!("http://{}", unsigned.addr)).list_streams().send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("MissingAuthenticationTokenException"));
    let unknown = start(signed("AKIDNOBODY")).await.unwrap();
    let e = sdk(&format!("http://{}", unknown.addr)).list_streams().send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("UnrecognizedClientException"));

    let side = start(signed("AKIDSIDECAR")).await.unwrap();
    let k = sdk(&format!("http://{}", side.addr));
    create_active(&k, "signed", 2).await;
    for i in 0..50 {
        k.put_record()
            .stream_name("signed")
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("r{i}")))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(stored(&k, "signed").await.len(), 50, "every record stored once, read back through the sidecar");
}
