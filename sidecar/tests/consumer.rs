//! The consumer through the sidecar, against a real broker in process and an application
//! that takes batches over HTTP: three workers of one application share the shards, follow a
//! reshard (parents before children), survive a worker's death (its leases move after the
//! failover time), retry a failing application, checkpoint what was delivered and release
//! their leases on shutdown; aggregates from the producer arrive as their user records.

mod common;

use aws_sdk_kinesis::primitives::Blob;
use base64::Engine;
use bytes::Bytes;
use common::{broker_with_stream, request_json, sdk, wait_active};
use http_body_util::{BodyExt, Full};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamfabric_api::leases::client::LeasesClient;
use streamfabric_sidecar::{ConsumerSettings, ProducerSettings, SidecarSettings};

/// One delivered user record: (worker path, shard, sequence, sub-sequence, key, data).
type Delivered = (String, String, String, u64, String, String);

/// The application: takes batches at `/<worker>`, refusing the first `refuse` with a 503.
struct App {
    url: String,
    delivered: Arc<Mutex<Vec<Delivered>>>,
    /// Per shard: batches being processed now, and the most at once.
    in_flight: Arc<Mutex<HashMap<String, (usize, usize)>>>,
}

async fn app(refuse: usize) -> App {
    slow_app(refuse, Duration::ZERO).await
}

/// An application that takes `processing` over each batch.
async fn slow_app(refuse: usize, processing: Duration) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let delivered: Arc<Mutex<Vec<Delivered>>> = Arc::default();
    let in_flight: Arc<Mutex<HashMap<String, (usize, usize)>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let (sink, flights) = (delivered.clone(), in_flight.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (sink, refused, flights) = (sink.clone(), refused.clone(), flights.clone());
            let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (sink, refused, flights) = (sink.clone(), refused.clone(), flights.clone());
                async move {
                    let worker = req.uri().path().trim_start_matches('/').to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    if refused.fetch_add(1, Ordering::SeqCst) < refuse {
                        return Ok::<_, std::convert::Infallible>(
                            http::Response::builder().status(503).body(Full::new(Bytes::new())).unwrap(),
                        );
                    }
                    let batch: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let shard = batch["shardId"].as_str().unwrap().to_string();
                    if !processing.is_zero() {
                        {
                            let mut f = flights.lock().unwrap();
                            let (now, peak) = f.entry(shard.clone()).or_default();
                            *now += 1;
                            *peak = (*peak).max(*now);
                        }
                        tokio::time::sleep(processing).await;
                        flights.lock().unwrap().get_mut(&shard).unwrap().0 -= 1;
                    }
                    let mut sink = sink.lock().unwrap();
                    for r in batch["records"].as_array().unwrap() {
                        let data =
                            base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
                        sink.push((
                            worker.clone(),
                            shard.clone(),
                            r["sequenceNumber"].as_str().unwrap().to_string(),
                            r["subSequenceNumber"].as_u64().unwrap(),
                            r["partitionKey"].as_str().unwrap().to_string(),
                            String::from_utf8(data).unwrap(),
                        ));
                    }
                    Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .into_owned(),
            );
        }
    });
    App { url, delivered, in_flight }
}

async fn consumer(
    broker: &str,
    app: &App,
    worker: &str,
    stream: &str,
    producer: ProducerSettings,
) -> streamfabric_sidecar::Running {
    consumer_sampling(broker, app, worker, stream, producer, Default::default()).await
}

async fn consumer_sampling(
    broker: &str,
    app: &App,
    worker: &str,
    stream: &str,
    producer: ProducerSettings,
    sampling: streamfabric_sidecar::consumer::sampling::Sampling,
) -> streamfabric_sidecar::Running {
    let url = format!("{}/{worker}", app.url);
    let push = (!app.url.is_empty()).then_some(url.as_str());
    let mut settings = ConsumerSettings::new("billing", stream, worker, push);
    settings.failover_time = Duration::from_secs(2);
    settings.idle_poll = Duration::from_millis(50);
    settings.sampling = sampling;
    streamfabric_sidecar::start(SidecarSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker_endpoint: broker.to_string(),
        broker_timeout: Duration::from_secs(5),
        credentials: None,
        admin_listen: None,
        producer,
        consumer: Some(settings),
    })
    .await
    .unwrap()
}

/// Several batches of a shard in flight at once: each page split by key, every key's
/// records still delivered in order, every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_batches_of_a_shard_are_in_flight_at_once_each_key_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, broker_url, direct) = broker_with_stream(dir.path(), "orders", 1).await;
    put(&direct, "orders", "a", 3_000).await;
    let app = slow_app(0, Duration::from_millis(100)).await;
    let mut settings = ConsumerSettings::new("billing", "orders", "w1", Some(&format!("{}/w1", app.url)));
    settings.batches_in_flight = 4;
    settings.max_records = 500;
    let worker = streamfabric_sidecar::start(SidecarSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker_endpoint: broker_url.clone(),
        broker_timeout: Duration::from_secs(5),
        credentials: None,
        admin_listen: None,
        producer: ProducerSettings::default(),
        consumer: Some(settings),
    })
    .await
    .unwrap();
    wait_for("every record delivered", 60, || app.delivered.lock().unwrap().len() >= 3_000).await;
    let peak = app.in_flight.lock().unwrap()["shardId-000000000000"].1;
    assert_eq!(peak, 4, "four batches of the one shard at once");
    let delivered = app.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 3_000, "each record once");
    let mut last: HashMap<String, usize> = HashMap::new();
    for r in &delivered {
        let i: usize = r.5.strip_prefix("a-").unwrap().parse().unwrap();
        if let Some(before) = last.insert(r.4.clone(), i) {
            assert!(before < i, "{}: {before} delivered before {i}", r.4);
        }
    }
    assert!(worker.shutdown(Duration::from_secs(10)).await);
}

/// A sequence number's place in its shard (sentinels such as TRIM_HORIZON first).
fn ordinal(sequence_number: &str) -> (u64, u64) {
    streamfabric_api::sequence::SequenceNumber::parse("s", sequence_number)
        .map_or((0, 0), |s| (s.shard_index, s.offset + 1))
}

async fn put(k: &aws_sdk_kinesis::Client, stream: &str, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let entries = chunk
            .iter()
            .map(|i| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{}", i % 40))
                    .data(Blob::new(format!("{prefix}-{i}")))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = k.put_records().stream_name(stream).set_records(Some(entries)).send().await.unwrap();
        assert_eq!(out.failed_record_count, Some(0));
    }
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_shards_follow_a_reshard_survive_a_death_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, broker_url, direct) = broker_with_stream(dir.path(), "orders", 4).await;
    put(&direct, "orders", "a", 2_000).await;

    // The application refuses its first three batches: they are retried, not lost.
    let app = app(3).await;
    let w1 = consumer(&broker_url, &app, "w1", "orders", ProducerSettings::default()).await;
    let w2 = consumer(&broker_url, &app, "w2", "orders", ProducerSettings::default()).await;
    let w3 = consumer(&broker_url, &app, "w3", "orders", ProducerSettings::default()).await;
    // A reshard while the parents are being read: their children's records come after.
    direct
        .update_shard_count()
        .stream_name("orders")
        .target_shard_count(8)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    wait_active(&direct, "orders").await;
    put(&direct, "orders", "b", 2_000).await;
    let distinct = |d: &Arc<Mutex<Vec<Delivered>>>| {
        d.lock().unwrap().iter().map(|r| r.5.clone()).collect::<std::collections::HashSet<_>>().len()
    };
    wait_for("half the records delivered", 60, || distinct(&app.delivered) >= 2_000).await;

    // The three workers hold leases (the fair share: later ones steal from the first).
    let leases = LeasesClient::new(&broker_url).unwrap();
    let owners = || async {
        let all = leases.list_leases("billing", "orders").await.unwrap();
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for l in all.iter().filter(|l| !l.is_finished()) {
            *by.entry(l.lease_owner.clone().unwrap_or_default()).or_default() += 1;
        }
        by
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let by = owners().await;
        if ["w1", "w2", "w3"].iter().all(|w| by.get(*w).is_some_and(|&n| n > 0)) {
            break;
        }
        assert!(Instant::now() < deadline, "leases not shared: {by:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let retries = |r: &streamfabric_sidecar::Running| r.metrics.delivery_retries.get();
    assert!(retries(&w1) + retries(&w2) + retries(&w3) >= 3, "the refused batches were delivered again");

    // w2 dies without a word: after the failover time the others take its leases and read on.
    let killed_at = Instant::now();
    w2.consumer.unwrap().kill().await;
    // Its last checkpoints: only records after them may be delivered twice.
    let at_death: HashMap<String, (u64, u64)> = leases
        .list_leases("billing", "orders")
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.lease_owner.as_deref() == Some("w2") && !l.is_finished())
        .map(|l| (l.lease_key.clone(), ordinal(&l.checkpoint.sequence_number)))
        .collect();
    assert!(!at_death.is_empty(), "w2 held leases when it died");
    let deadline = Instant::now() + Duration::from_secs(30);
    while owners().await.contains_key("w2") {
        assert!(Instant::now() < deadline, "w2's leases never moved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = killed_at.elapsed();
    eprintln!("w2's {} leases moved {moved:?} after its death (failover time 2 s)", at_death.len());
    // Expired after the failover time since its last renewal (at most a third of it before
    // the death), then taken at the others' next sync (every third of it): 2.7 s; the
    // bound leaves room for a loaded machine.
    assert!(moved <= Duration::from_secs(5), "{moved:?}");
    put(&direct, "orders", "c", 1_000).await;
    wait_for("every record delivered after a worker's death", 60, || distinct(&app.delivered) >= 5_000).await;
    eprintln!("every record delivered {:?} after w2's death", killed_at.elapsed());
    let by = owners().await;
    assert_eq!(
        by.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["w1", "w3"],
        "w1 and w3 hold every unfinished lease: {by:?}"
    );

    // Order per key over the reshard and the death: first deliveries follow the put order
    // (a before b before c, and by index within each).
    let delivered = app.delivered.lock().unwrap().clone();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for (i, r) in delivered.iter().enumerate() {
        first_seen.entry(r.5.clone()).or_insert(i);
    }
    let order_of = |data: &str| {
        let (prefix, i) = data.split_once('-').unwrap();
        (prefix.to_string(), i.parse::<usize>().unwrap())
    };
    // Per key: (position of first delivery, (prefix, index) as put).
    type Arrival = (usize, (String, usize));
    let mut by_key: BTreeMap<String, Vec<Arrival>> = BTreeMap::new();
    for (data, at) in &first_seen {
        let (prefix, i) = order_of(data);
        by_key.entry(format!("key-{}", i % 40)).or_default().push((*at, (prefix, i)));
    }
    for (key, mut arrivals) in by_key {
        arrivals.sort();
        let puts: Vec<_> = arrivals.iter().map(|(_, p)| p.clone()).collect();
        let mut sorted = puts.clone();
        sorted.sort();
        assert_eq!(puts, sorted, "{key}: delivered out of put order");
    }
    let duplicates = delivered.len() - first_seen.len();
    eprintln!("{} deliveries of 5,000 records ({duplicates} again after the death)", delivered.len());
    let mut times: HashMap<&str, usize> = HashMap::new();
    for r in &delivered {
        *times.entry(&r.5).or_default() += 1;
    }
    for r in delivered.iter().filter(|r| times[r.5.as_str()] > 1) {
        let checkpoint = at_death.get(&r.1);
        assert!(
            checkpoint.is_some_and(|c| ordinal(&r.2) > *c),
            "{} delivered twice: not after the last checkpoint of a shard w2 held ({:?})",
            r.5,
            checkpoint
        );
    }

    // Shutdown checkpoints and releases: a new worker finds nothing left to deliver.
    assert!(w1.shutdown(Duration::from_secs(10)).await, "stopped in time");
    assert!(w3.shutdown(Duration::from_secs(10)).await, "stopped in time");
    let all = leases.list_leases("billing", "orders").await.unwrap();
    // (A finished lease w2 had checkpointed at SHARD_END just before its death stays its.)
    let held: Vec<_> = all.iter().filter(|l| l.lease_owner.as_deref().is_some_and(|o| o != "w2")).collect();
    assert!(held.is_empty(), "every lease of w1 and w3 released: {held:?}");
    assert!(all.iter().filter(|l| !l.is_finished()).all(|l| l.lease_owner.is_none()), "{all:?}");
    assert!(all.iter().filter(|l| !l.child_shard_ids.is_empty()).all(|l| l.is_finished()), "parents at SHARD_END");
    let before = app.delivered.lock().unwrap().len();
    let w4 = consumer(&broker_url, &app, "w4", "orders", ProducerSettings::default()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.delivered.lock().unwrap().len(), before, "nothing after the checkpoints is delivered again");
    put(&direct, "orders", "d", 10).await;
    wait_for("a new record reaches the new worker", 20, || distinct(&app.delivered) >= 5_010).await;
    assert!(w4.shutdown(Duration::from_secs(10)).await);
}

/// Aggregates written by the sidecar's producer reach the application as their user
/// records, with the KCL's sub-sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_records_are_delivered_as_their_user_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, broker_url, _) = broker_with_stream(dir.path(), "agg", 2).await;
    let app = app(0).await;
    let producer =
        ProducerSettings { aggregate: true, max_buffered_time: Duration::from_millis(20), ..Default::default() };
    let side = consumer(&broker_url, &app, "w1", "agg", producer).await;
    put(&sdk(&format!("http://{}", side.addr)), "agg", "r", 1_000).await;
    wait_for("every user record delivered", 30, || app.delivered.lock().unwrap().len() >= 1_000).await;
    let delivered = app.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1_000, "each once");
    assert!(delivered.iter().any(|r| r.3 > 0), "sub-sequence numbers of aggregated records");
    for r in &delivered {
        let i: usize = r.5.strip_prefix("r-").unwrap().parse().unwrap();
        assert_eq!(r.4, format!("key-{}", i % 40), "{} keeps its partition key", r.5);
    }
    let aggregates = side.metrics.aggregates.get();
    assert!(aggregates > 0);
    assert!(side.shutdown(Duration::from_secs(10)).await);
}

/// A filter on delivery: exactly the matching records reach the application, the others
/// are counted by reason and checkpointed past (a new worker delivers none of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_delivers_exactly_the_matching_records_and_checkpoints_past_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, broker_url, direct) = broker_with_stream(dir.path(), "json", 2).await;
    let entries: Vec<_> = (0..400)
        .map(|i| {
            let kind = if i % 4 == 0 { "refund" } else { "sale" };
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .data(Blob::new(format!(r#"{{"n": {i}, "kind": "{kind}"}}"#)))
                .build()
                .unwrap()
        })
        .chain(std::iter::once(
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key("binary")
                .data(Blob::new(vec![0xff, 0x00]))
                .build()
                .unwrap(),
        ))
        .collect();
    direct.put_records().stream_name("json").set_records(Some(entries)).send().await.unwrap();

    let app = app(0).await;
    let filter = streamfabric_sidecar::consumer::filter::Filter::parse(r#"kind == "refund" && n >= 200"#).unwrap();
    let sampling = streamfabric_sidecar::consumer::sampling::Sampling { filter: Some(filter), ..Default::default() };
    let side = consumer_sampling(&broker_url, &app, "w1", "json", ProducerSettings::default(), sampling).await;
    let m = side.metrics.clone();
    let out = |reason: &str| m.sampled_out.with_label_values(&[reason]).get();
    wait_for("every record judged", 30, || out("filter") + out("not_json") + m.delivered_records.get() == 401).await;
    let mut got: Vec<usize> = app
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.5).unwrap()["n"].as_u64().unwrap() as usize)
        .collect();
    got.sort();
    assert_eq!(got, (200..400).filter(|i| i % 4 == 0).collect::<Vec<_>>());
    assert_eq!((out("filter"), out("not_json")), (350, 1));
    assert!(side.shutdown(Duration::from_secs(10)).await);
    let before = app.delivered.lock().unwrap().len();
    let again = consumer(&broker_url, &app, "w2", "json", ProducerSettings::default()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.delivered.lock().unwrap().len(), before, "the sampled-out records were checkpointed past");
    assert!(again.shutdown(Duration::from_secs(10)).await);
}

/// The pull API: records come from GET /v1/next, a shard's next batch only once its
/// records are checkpointed through POST /v1/checkpoint; each record once, in order per
/// shard; what was checkpointed is not handed out again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_api_hands_out_records_and_moves_on_at_each_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, broker_url, direct) = broker_with_stream(dir.path(), "pulled", 2).await;
    put(&direct, "pulled", "p", 600).await;
    let no_app = App { url: String::new(), delivered: Arc::default(), in_flight: Arc::default() };
    let producer = ProducerSettings { max_buffered_time: Duration::from_millis(5), ..Default::default() };
    let side = consumer(&broker_url, &no_app, "puller", "pulled", producer).await;
    let base = format!("http://{}", side.addr);

    let (status, bad) = request_json(http::Method::GET, &format!("{base}/v1/next?max=0"), "").await;
    assert_eq!((status, bad["errorCode"].as_str()), (400, Some("ValidationException")), "{bad}");
    let mut got: Vec<(String, (u64, u64), String)> = Vec::new();
    let mut rounds = 0;
    while got.len() < 600 {
        rounds += 1;
        assert!(rounds < 200, "only {} of 600 records pulled", got.len());
        let (status, page) = request_json(http::Method::GET, &format!("{base}/v1/next?max=150&waitMs=2000"), "").await;
        assert_eq!(status, 200, "{page}");
        let records = page["records"].as_array().unwrap();
        assert!(records.len() <= 150);
        // Unless checkpointed, nothing more comes of those batches.
        let (_, more) = request_json(http::Method::GET, &format!("{base}/v1/next?max=1000&waitMs=0"), "").await;
        let mut last: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for r in records.iter().chain(more["records"].as_array().unwrap()) {
            let shard = r["shardId"].as_str().unwrap().to_string();
            let seq = r["sequenceNumber"].as_str().unwrap().to_string();
            let data = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
            got.push((shard.clone(), ordinal(&seq), String::from_utf8(data).unwrap()));
            last.insert(shard, (seq, r["subSequenceNumber"].as_u64().unwrap()));
        }
        for (shard, (seq, sub)) in last {
            let body = format!(r#"{{"shardId": "{shard}", "sequenceNumber": "{seq}", "subSequenceNumber": {sub}}}"#);
            let (status, answer) = request_json(http::Method::POST, &format!("{base}/v1/checkpoint"), &body).await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    let distinct: std::collections::HashSet<_> = got.iter().map(|g| g.2.clone()).collect();
    assert_eq!((got.len(), distinct.len()), (600, 600), "each record once");
    let mut by_shard: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for (shard, seq, _) in &got {
        by_shard.entry(shard).or_default().push(*seq);
    }
    assert!(by_shard.values().all(|seqs| seqs.windows(2).all(|w| w[0] < w[1])), "in order per shard");
    let body = r#"{"shardId": "shardId-000000000000", "sequenceNumber": "1", "subSequenceNumber": 0}"#;
    let (status, answer) = request_json(http::Method::POST, &format!("{base}/v1/checkpoint"), body).await;
    assert_eq!((status, answer["errorCode"].as_str()), (409, Some("InvalidArgumentException")), "{answer}");

    // The brokers hold the checkpoints: after a restart nothing is handed out again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(side.shutdown(Duration::from_secs(10)).await);
    let again = consumer(&broker_url, &no_app, "puller-2", "pulled", ProducerSettings::default()).await;
    let (_, page) =
        request_json(http::Method::GET, &format!("http://{}/v1/next?max=10&waitMs=3000", again.addr), "").await;
    assert_eq!(page["records"].as_array().unwrap().len(), 0, "{page}");
    assert!(again.shutdown(Duration::from_secs(10)).await);
}
