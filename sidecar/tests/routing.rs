//! Routing to shard owners: with three clustered brokers (in process, one `file://` store),
//! the sidecar learns each shard's broker (DescribeShardOwners) and sends its records
//! there, so no broker forwards any: the brokers together receive exactly the PutRecords
//! the sidecar sent, each of them some. Every record is stored once, where answered.

mod common;

use aws_sdk_kinesis::primitives::Blob;
use common::{request, sdk, shard_records};
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
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut brokers = Vec::new();
    for id in ["b1", "b2", "b3"] {
        brokers.push(clustered(&store, &root.path().join(id), id).await);
    }
    let first = format!("http://{}", brokers[0].api_addr);
    let direct = sdk(&first);
    direct.create_stream().stream_name("routed").shard_count(6).send().await.unwrap();
    // Every shard served somewhere: a put to each succeeds, and owners spread over brokers.
    let owners_client = streamfabric_sidecar::broker::Brokers::new(&first, Duration::from_secs(5));
    let target = "StreamfabricCluster_20261204.DescribeShardOwners";
    let input = serde_json::json!({"StreamName": "routed"});
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
        let summary = direct.describe_stream_summary().stream_name("routed").send().await.unwrap();
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
        .stream_name("routed")
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

    let side = streamfabric_sidecar::start(SidecarSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        broker_endpoint: first.clone(),
        broker_timeout: Duration::from_secs(5),
        admin_listen: None,
        producer: ProducerSettings { max_buffered_time: Duration::from_millis(20), ..ProducerSettings::default() },
        consumer: None,
    })
    .await
    .unwrap();
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
