//! Routing to shard owners: with three clustered brokers (in process, one `file://` store),
//! the sidecar learns each shard's broker (DescribeShardOwners) and sends its records
//! there, so no broker forwards any: the brokers together receive exactly the PutRecords
//! the sidecar sent, each of them some. Every record is stored once, where answered.

mod common;

use aws_sdk_kinesis::primitives::Blob;
use common::{request, sdk, shard_records, wait_active};
use std::collections::BTreeMap;
use std::time::Duration;
use streamfabric_sidecar::{ProducerSettings, SidecarSettings};

async fn clustered(store: &std::path::Path, dir: &std::path::Path, id: &str) -> streamfabric_broker::Running {
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = streamfabric_broker::BrokerConfig::for_dir(dir);
    config.listen = listen;
    config.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.object_store = Some(format!("file://{}", store.display()));
    config.broker_id = Some(id.to_string());
    config.advertise = Some(listen.to_string());
    streamfabric_broker::start(config).await.unwrap()
}

/// Three clustered brokers on one `file://` store (in a temporary directory: keep it) and
/// `stream` spread over them, each serving: the directory, the brokers, the first one's URL
/// and a client of it.
async fn three_brokers_with(
    stream: &str,
    shards: i32,
) -> (tempfile::TempDir, Vec<streamfabric_broker::Running>, String, aws_sdk_kinesis::Client) {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut brokers = Vec::new();
    for id in ["b1", "b2", "b3"] {
        brokers.push(clustered(&store, &root.path().join(id), id).await);
    }
    let first = format!("http://{}", brokers[0].api_addr);
    let direct = sdk(&first);
    direct.create_stream().stream_name(stream).shard_count(shards).send().await.unwrap();
    wait_spread_and_served(&first, &direct, stream).await;
    (root, brokers, first, direct)
}

/// A producer-only sidecar in front of the brokers at `broker`.
async fn producer_sidecar(broker: &str, producer: ProducerSettings) -> streamfabric_sidecar::Running {
    streamfabric_sidecar::start(SidecarSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker_endpoint: broker.to_string(),
        broker_timeout: Duration::from_secs(5),
        credentials: None,
        admin_listen: None,
        producer,
        consumer: None,
    })
    .await
    .unwrap()
}

/// PutRecords requests a broker received (its own and forwarded ones alike).
async fn put_records_received(broker: &streamfabric_broker::Running) -> u64 {
    let (_, text) = request(http::Method::GET, &format!("http://{}/metrics", broker.admin_addr), "").await;
    text.lines()
        .filter(|l| l.starts_with("streamfabric_requests_total{") && l.contains("operation=\"PutRecords\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_straight_to_the_broker_serving_their_shard() {
    let (_root, brokers, first, direct) = three_brokers_with("routed", 6).await;
    let producer = ProducerSettings { max_buffered_time: Duration::from_millis(20), ..ProducerSettings::default() };
    let side = producer_sidecar(&first, producer).await;
    let before: Vec<u64> = put_records_received_by(&brokers).await;
    let k = sdk(&format!("http://{}", side.addr));
    let mut answered = BTreeMap::new();
    for round in 0..10 {
        let entries: Vec<_> = (0..200)
            .map(|i| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{round}-{i}"))
                    .data(Blob::new(format!("{round}-{i}")))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = k.put_records().stream_name("routed").set_records(Some(entries)).send().await.unwrap();
        assert_eq!(out.failed_record_count, Some(0));
        for (i, r) in out.records.into_iter().enumerate() {
            answered.insert(format!("{round}-{i}"), (r.shard_id.unwrap(), r.sequence_number.unwrap()));
        }
    }
    let after = put_records_received_by(&brokers).await;
    let received: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let sent = side.metrics.put_requests.get();
    eprintln!("the sidecar sent {sent} PutRecords; the brokers received {received:?}");
    assert_eq!(received.iter().sum::<u64>(), sent, "no broker forwarded any: each went to its shards' owner");
    assert!(received.iter().all(|&n| n > 0), "each broker got its shards' records: {received:?}");

    // Stored once each, where answered (read through any broker).
    let mut seen: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (shard, _, _, records) in shard_records(&direct, "routed").await {
        for (sequence, _, data) in records {
            let data = String::from_utf8(data.to_vec()).unwrap();
            if data != "warm" {
                seen.entry(data).or_default().push((shard.clone(), sequence));
            }
        }
    }
    let seen: BTreeMap<String, (String, String)> = seen
        .into_iter()
        .map(|(d, mut places)| {
            assert_eq!(places.len(), 1, "{d} stored {} times", places.len());
            (d, places.remove(0))
        })
        .collect();
    assert_eq!(seen, answered);
    assert!(side.shutdown(Duration::from_secs(10)).await);
}

async fn put_records_received_by(brokers: &[streamfabric_broker::Running]) -> Vec<u64> {
    let mut out = Vec::new();
    for b in brokers {
        out.push(put_records_received(b).await);
    }
    out
}

/// Wait until the stream is ACTIVE with its shards spread over three brokers, each serving
/// (a put to every shard succeeds).
async fn wait_spread_and_served(first: &str, direct: &aws_sdk_kinesis::Client, stream: &str) {
    // Every shard served somewhere: a put to each succeeds, and owners spread over brokers.
    let owners_client = streamfabric_sidecar::broker::Brokers::new(first, Duration::from_secs(5));
    let target = "StreamfabricCluster_20261204.DescribeShardOwners";
    let input = serde_json::json!({"StreamName": stream});
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out: Result<serde_json::Value, _> = owners_client.call_target(target, &input).await;
        let owners: std::collections::BTreeSet<String> = out
            .ok()
            .and_then(|o| o["Shards"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|s| s["BrokerId"].as_str().unwrap().to_string())
            .collect();
        let summary = direct.describe_stream_summary().stream_name(stream).send().await.unwrap();
        let active = summary.stream_description_summary.unwrap().stream_status.as_str() == "ACTIVE";
        if active && owners.len() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "shards not spread over three brokers: {owners:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every broker serving its shards: a put through each of them works.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while direct
        .put_records()
        .stream_name(stream)
        .set_records(Some(
            (0..60)
                .map(|i| {
                    aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                        .partition_key(format!("warm-{i}"))
                        .data(Blob::new("warm"))
                        .build()
                        .unwrap()
                })
                .collect(),
        ))
        .send()
        .await
        .map_or(true, |o| o.failed_record_count != Some(0))
    {
        assert!(std::time::Instant::now() < deadline, "shards not all served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The judged scenario of the producer: 100,000 records through the sidecar (SDK PutRecords
/// and the plain HTTP API, side by side) while one of three brokers restarts and a shard
/// splits. Every acknowledged record is stored, where its answer said; a second copy only
/// of a record the sidecar sent again (an answer lost with the restarting broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_records_survive_a_broker_restart_and_a_split() {
    const PER_REQUEST: usize = 500;
    const REQUESTS: usize = 200; // 100,000 records
    let (root, brokers, first, direct) = three_brokers_with("busy", 4).await;
    let mut brokers: Vec<Option<streamfabric_broker::Running>> = brokers.into_iter().map(Some).collect();
    let store = root.path().join("store");
    let side = producer_sidecar(
        &first,
        ProducerSettings { record_ttl: Duration::from_secs(90), ..ProducerSettings::default() },
    )
    .await;
    let url = format!("http://{}", side.addr);

    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut producers = Vec::new();
    for task in 0..4 {
        let (url, sent) = (url.clone(), sent.clone());
        producers.push(tokio::spawn(async move {
            let k = sdk(&url);
            let mut answered: Vec<(String, String, String)> = Vec::new();
            for request_no in 0..REQUESTS / 4 {
                let data: Vec<String> = (0..PER_REQUEST).map(|i| format!("t{task}-{request_no}-{i}")).collect();
                let places: Vec<(String, String)> = if task % 2 == 0 {
                    let entries = data.iter().map(|d| {
                        aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                            .partition_key(d.clone())
                            .data(Blob::new(d.clone()))
                            .build()
                            .unwrap()
                    });
                    let out = k.put_records().stream_name("busy").set_records(Some(entries.collect())).send().await;
                    let out = out.expect("the sidecar answers");
                    assert_eq!(
                        out.failed_record_count,
                        Some(0),
                        "{:?}",
                        out.records.iter().find(|r| r.error_code.is_some())
                    );
                    out.records.into_iter().map(|r| (r.shard_id.unwrap(), r.sequence_number.unwrap())).collect()
                } else {
                    let body: Vec<serde_json::Value> =
                        data.iter().map(|d| serde_json::json!({"partitionKey": d, "data": d})).collect();
                    let body = serde_json::to_string(&body).unwrap();
                    let (status, text) =
                        request(http::Method::POST, &format!("{url}/v1/streams/busy/records"), &body).await;
                    assert_eq!(status, 200, "{text}");
                    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
                    answer["records"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| {
                            assert!(r.get("errorCode").is_none(), "{r}");
                            (
                                r["shardId"].as_str().unwrap().to_string(),
                                r["sequenceNumber"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect()
                };
                for (d, (shard, seq)) in data.into_iter().zip(places) {
                    answered.push((d, shard, seq));
                }
                sent.fetch_add(PER_REQUEST, std::sync::atomic::Ordering::Relaxed);
            }
            answered
        }));
    }
    let wait_sent = |n: usize| {
        let sent = sent.clone();
        async move {
            while sent.load(std::sync::atomic::Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // A broker restarts (on its own disk, at a new port) a fifth of the way in ...
    wait_sent(20_000).await;
    let b2 = brokers[1].take().unwrap();
    assert!(b2.shutdown(Duration::from_secs(10)).await);
    brokers[1] = Some(clustered(&store, &root.path().join("b2"), "b2").await);
    // ... and a shard splits half way.
    wait_sent(50_000).await;
    let shards = direct.list_shards().stream_name("busy").send().await.unwrap().shards.unwrap();
    let range = shards[0].hash_key_range.as_ref().unwrap();
    let (lo, hi): (u128, u128) = (range.starting_hash_key.parse().unwrap(), range.ending_hash_key.parse().unwrap());
    direct
        .split_shard()
        .stream_name("busy")
        .shard_to_split(&shards[0].shard_id)
        .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
        .send()
        .await
        .unwrap();
    let mut answered = Vec::new();
    for p in producers {
        answered.extend(p.await.unwrap());
    }
    assert_eq!(answered.len(), PER_REQUEST * REQUESTS);
    wait_active(&direct, "busy").await;

    let mut stored: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (shard, _, _, records) in shard_records(&direct, "busy").await {
        for (sequence, _, data) in records {
            stored.entry(String::from_utf8(data.to_vec()).unwrap()).or_default().push((shard.clone(), sequence));
        }
    }
    let mut twice = 0;
    for (data, shard, seq) in &answered {
        let places = stored.get(data).unwrap_or_else(|| panic!("{data} acknowledged, not stored"));
        assert!(places.contains(&(shard.clone(), seq.clone())), "{data} not where answered: {places:?}");
        twice += places.len() - 1;
    }
    let retried: u64 =
        ["throttled", "failed", "wrong_shard"].iter().map(|r| side.metrics.retries.with_label_values(&[r]).get()).sum();
    eprintln!(
        "{} records acknowledged, each stored; {twice} stored twice; {retried} sends retried; {} PutRecords",
        answered.len(),
        side.metrics.put_requests.get()
    );
    assert!(twice as u64 <= retried, "a second copy only of a record sent again");
    assert!(side.shutdown(Duration::from_secs(10)).await);
}
