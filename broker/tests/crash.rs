//! Crash safety of the real binary: SIGKILL while concurrent writers are being
//! acknowledged, restart, and every acknowledged record is there; a torn last record is
//! truncated at start, not fatal; streams, tags and retention survive restarts. In
//! durability `object`, the data directory can even be lost after the kill.

mod common;

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAM: &str = "crash";

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Broker {
    child: Child,
    api: SocketAddr,
}

async fn spawn(dir: &Path) -> Broker {
    spawn_with(dir, &[]).await
}

async fn spawn_with(dir: &Path, extra: &[&str]) -> Broker {
    let (api, admin) = (free_addr(), free_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_streamfabric-broker"))
        .args(["serve", "--listen", &api.to_string(), "--admin-listen", &admin.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Serving once /healthz answers: its listeners take connections before it has opened its
    // streams (after a lost disk, restored from the bucket), and a connection that waits there
    // may be reset if the start fails.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthy(admin).await {
        assert!(Instant::now() < deadline, "broker did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Broker { child, api }
}

async fn healthy(admin: SocketAddr) -> bool {
    let probe = async {
        let stream = tokio::net::TcpStream::connect(admin).await.ok()?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let req = http::Request::get("/healthz")
            .header("host", admin.to_string())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .ok()?;
        Some(sender.send_request(req).await.ok()?.status().is_success())
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten().unwrap_or(false)
}

async fn call(api: SocketAddr, op: &str, body: Value) -> (u16, Value) {
    let (status, _, bytes) = common::raw_post(
        api,
        &format!("Kinesis_20131202.{op}"),
        "application/x-amz-json-1.1",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Every record of every shard, as (shard, sequence number, data).
async fn read_all(api: SocketAddr, shards: usize) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for i in 0..shards {
        let shard = format!("shardId-{i:012}");
        let (_, it) = call(
            api,
            "GetShardIterator",
            json!({"StreamName": STREAM, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await;
        let mut it = it["ShardIterator"].as_str().unwrap().to_string();
        loop {
            let (status, page) = call(api, "GetRecords", json!({"ShardIterator": it})).await;
            assert_eq!(status, 200, "{page}");
            let records = page["Records"].as_array().unwrap();
            for r in records {
                out.push((
                    shard.clone(),
                    r["SequenceNumber"].as_str().unwrap().into(),
                    r["Data"].as_str().unwrap().into(),
                ));
            }
            if records.is_empty() && page["MillisBehindLatest"] == 0 {
                break;
            }
            it = page["NextShardIterator"].as_str().unwrap().to_string();
        }
    }
    out
}

/// (shard, sequence number, data) of the records acknowledged so far.
type Acked = Arc<Mutex<Vec<(String, String, String)>>>;

/// Writers that PutRecords until their broker stops answering; what was acknowledged.
fn start_writers(api: SocketAddr, writers: usize) -> (Acked, Vec<tokio::task::JoinHandle<()>>) {
    use base64::Engine;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let acked: Acked = Arc::default();
    let mut handles = Vec::new();
    for w in 0..writers {
        let acked = acked.clone();
        handles.push(tokio::spawn(async move {
            for n in 0.. {
                let batch: Vec<String> = (0..20).map(|i| format!("w{w}-{n}-{i}")).collect();
                let records: Vec<Value> =
                    batch.iter().map(|d| json!({"PartitionKey": d, "Data": b64(d.clone())})).collect();
                let body = serde_json::to_vec(&json!({"StreamName": STREAM, "Records": records})).unwrap();
                let Ok(Ok((200, _, bytes))) = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::spawn(common::raw_post(
                        api,
                        "Kinesis_20131202.PutRecords",
                        "application/x-amz-json-1.1",
                        body,
                    )),
                )
                .await
                else {
                    return;
                };
                let answer: Value = serde_json::from_slice(&bytes).unwrap();
                let mut acked = acked.lock().unwrap();
                for (d, r) in batch.into_iter().zip(answer["Records"].as_array().unwrap()) {
                    if let Some(seq) = r["SequenceNumber"].as_str() {
                        acked.push((r["ShardId"].as_str().unwrap().into(), seq.into(), b64(d)));
                    }
                }
            }
        }));
    }
    (acked, handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_durability_sigkill_and_lost_data_directory_lose_no_acknowledged_record() {
    let (dir, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = format!("file://{}", store.path().display());
    // Small segments: some records are sealed and uploaded when the broker dies, most not.
    let args = ["--durability", "object", "--object-store", &url, "--segment-bytes", "65536"];
    let mut broker = spawn_with(dir.path(), &args).await;
    let api = broker.api;
    assert_eq!(call(api, "CreateStream", json!({"StreamName": STREAM, "ShardCount": 3})).await.0, 200);
    for _ in 0..200 {
        let (_, d) = call(api, "DescribeStreamSummary", json!({"StreamName": STREAM})).await;
        if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (acked, writers) = start_writers(api, 6);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.child.kill().unwrap(); // SIGKILL
    broker.child.wait().unwrap();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "writers were acknowledged before the kill ({})", acked.len());

    // The disk is gone too: only the bucket is left.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let mut broker = spawn_with(dir.path(), &args).await;
    let stored = read_all(broker.api, 3).await;
    let stored_set: std::collections::HashSet<_> = stored.iter().cloned().collect();
    assert_eq!(stored_set.len(), stored.len(), "no record duplicated");
    for a in &acked {
        assert!(stored_set.contains(a), "acknowledged record lost: {a:?}");
    }
    // New numbers above every old one.
    for shard in 0..3u128 {
        let hash = (shard * (u128::MAX / 3) + 1).to_string();
        let (status, put) = call(
            broker.api,
            "PutRecord",
            json!({"StreamName": STREAM, "PartitionKey": "x", "Data": "", "ExplicitHashKey": hash}),
        )
        .await;
        assert_eq!(status, 200, "{put}");
        let shard_id = put["ShardId"].as_str().unwrap();
        let shard_max = acked.iter().filter(|a| a.0 == shard_id).map(|a| common::seq_value(&a.1)).max();
        let seq = common::seq_value(put["SequenceNumber"].as_str().unwrap());
        assert!(Some(seq) > shard_max, "{shard_id}: {seq} is not above {shard_max:?}");
    }
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = spawn(dir.path()).await;
    let api = broker.api;
    assert_eq!(call(api, "CreateStream", json!({"StreamName": STREAM, "ShardCount": 3})).await.0, 200);
    for _ in 0..200 {
        let (_, d) = call(api, "DescribeStreamSummary", json!({"StreamName": STREAM})).await;
        if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(call(api, "AddTagsToStream", json!({"StreamName": STREAM, "Tags": {"team": "core"}})).await.0, 200);
    assert_eq!(
        call(api, "IncreaseStreamRetentionPeriod", json!({"StreamName": STREAM, "RetentionPeriodHours": 72})).await.0,
        200
    );

    // Concurrent writers record what was acknowledged until the broker dies under them.
    let (acked, writers) = start_writers(api, 6);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.child.kill().unwrap(); // SIGKILL
    broker.child.wait().unwrap();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "writers were acknowledged before the kill ({})", acked.len());

    let mut broker = spawn(dir.path()).await;
    let stored = read_all(broker.api, 3).await;
    let stored_set: std::collections::HashSet<_> = stored.iter().cloned().collect();
    assert_eq!(stored_set.len(), stored.len(), "no record duplicated");
    for a in &acked {
        assert!(stored_set.contains(a), "acknowledged record lost: {a:?}");
    }
    let (_, d) = call(broker.api, "DescribeStreamSummary", json!({"StreamName": STREAM})).await;
    assert_eq!(d["StreamDescriptionSummary"]["RetentionPeriodHours"], 72);
    let (_, t) = call(broker.api, "ListTagsForStream", json!({"StreamName": STREAM})).await;
    assert_eq!(t["Tags"], json!([{"Key": "team", "Value": "core"}]));
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();

    // Tear the last record of shard 0's newest segment: it is dropped at start, the rest stays.
    let shard_dir = dir.path().join("streams").join(STREAM).join("shards").join("shardId-000000000000");
    let mut segments: Vec<_> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    assert!(len > 10);
    std::fs::OpenOptions::new().write(true).open(newest).unwrap().set_len(len - 5).unwrap();

    let broker = spawn(dir.path()).await;
    let after = read_all(broker.api, 3).await;
    let shard0_before: Vec<_> = stored.iter().filter(|r| r.0 == "shardId-000000000000").collect();
    let shard0_after: Vec<_> = after.iter().filter(|r| r.0 == "shardId-000000000000").collect();
    assert_eq!(shard0_after.len(), shard0_before.len() - 1, "exactly the torn record is gone");
    assert_eq!(shard0_after[..], shard0_before[..shard0_before.len() - 1]);
    assert_eq!(
        after.iter().filter(|r| r.0 != "shardId-000000000000").count(),
        stored.iter().filter(|r| r.0 != "shardId-000000000000").count()
    );
    // Writing continues on the truncated shard, with the next sequence number.
    let (status, put) = call(
        broker.api,
        "PutRecord",
        json!({"StreamName": STREAM, "PartitionKey": "x", "Data": "", "ExplicitHashKey": "0"}),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(
        put["SequenceNumber"].as_str().unwrap(),
        shard0_before.last().unwrap().1,
        "numbering continues after the last intact record"
    );
    let mut broker = broker;
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
}
