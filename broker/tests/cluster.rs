//! The fabric with real broker processes on one `file://` object store: a stream created at
//! one broker is served by all, writes and reads through any broker, iterators from one
//! broker work at another. Then, under load: a broker SIGKILLed and restarted on its disk;
//! a fourth broker joining (shards handed on to it); a broker paused (SIGSTOP) until its
//! shards were taken, then resumed; a broker killed for good (its shards taken over after
//! the member timeout). At the end every acknowledged record is read back exactly once, in
//! order per shard, and every refused entry was refused retryably.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAM: &str = "fabric";
const SHARDS: usize = 6;
const OBJECT: &str = "object";

/// The tests run one at a time: each runs several brokers, and on two cores two such tests
/// at once starve their heartbeats.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const LOCAL: &str = "local";
const MEMBER_TIMEOUT: &str = "3s";

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

struct Node {
    id: String,
    durability: &'static str,
    dir: PathBuf,
    api: SocketAddr,
    admin: SocketAddr,
    child: Child,
}

impl Node {
    async fn start(id: &str, durability: &'static str, dir: &Path, store: &str) -> Node {
        Node::start_on(id, durability, dir, store, free_addr(), free_addr()).await
    }

    async fn start_on(
        id: &str,
        durability: &'static str,
        dir: &Path,
        store: &str,
        api: SocketAddr,
        admin: SocketAddr,
    ) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_streamfabric-broker"));
        command.args(["serve", "--listen", &api.to_string(), "--admin-listen", &admin.to_string()]);
        if store.starts_with("s3://") {
            let endpoint = std::env::var("STREAMFABRIC_TEST_S3_ENDPOINT").expect("STREAMFABRIC_TEST_S3_ENDPOINT");
            command.args(["--object-store-endpoint", &endpoint]);
        }
        let child = command
            .args(["--broker-id", id, "--advertise", &api.to_string(), "--object-store", store])
            .args(["--durability", durability, "--segment-bytes", "32768", "--status-delay", "50ms"])
            .args(["--heartbeat-interval", "200ms", "--member-timeout", MEMBER_TIMEOUT])
            .arg("--data-dir")
            .arg(dir)
            .env("STREAMFABRIC_LOG", std::env::var("CLUSTER_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            // The broker logs to stdout: warnings (or CLUSTER_TEST_LOG's filter) show with the test's.
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(api).await.is_err() {
            assert!(Instant::now() < deadline, "broker {id} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Node { id: id.into(), durability, dir: dir.into(), api, admin, child }
    }

    async fn restart(&mut self, store: &str) {
        *self = Node::start_on(&self.id, self.durability, &self.dir.clone(), store, self.api, self.admin).await;
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    async fn cluster(&self) -> Value {
        match get(self.admin, "/cluster").await {
            Some((200, body)) => serde_json::from_str(&body).unwrap(),
            _ => Value::Null,
        }
    }

    async fn serving(&self) -> BTreeSet<String> {
        let view = self.cluster().await;
        view["serving"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; None when the broker cannot be reached (killed, paused, restarting).
async fn post(api: SocketAddr, op: &str, body: &Value) -> Option<(u16, Value)> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(api).await.ok()?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let req = http::Request::post("/")
            .header("host", api.to_string())
            .header("x-amz-target", format!("Kinesis_20131202.{op}"))
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
            .unwrap();
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await.ok().flatten()
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", addr.to_string()).body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await.ok()?.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Wait until every shard is served by exactly one of `nodes`, each serving some; on a
/// timeout, show how every broker sees the cluster.
async fn wait_served(what: &str, within: Duration, nodes: &[&Node]) -> Duration {
    wait_served_all(what, within, nodes, SHARDS).await
}

/// `wait_served` for a stream of `shards` shards (open and closed).
async fn wait_served_all(what: &str, within: Duration, nodes: &[&Node], shards: usize) -> Duration {
    let started = Instant::now();
    while !all_served_once(nodes, shards).await {
        if started.elapsed() > within {
            for node in nodes {
                eprintln!("{}: {:#}", node.id, node.cluster().await);
            }
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Every shard is served by exactly one of `nodes`, each of which serves at least one.
async fn all_served_once(nodes: &[&Node], shards: usize) -> bool {
    let mut count = BTreeMap::new();
    for node in nodes {
        let serving = node.serving().await;
        if serving.is_empty() {
            return false;
        }
        for s in serving {
            *count.entry(s).or_insert(0) += 1;
        }
    }
    count.len() == shards && count.values().all(|&c| c == 1)
}

#[derive(Default)]
struct Outcome {
    /// data -> (shard, sequence number), for every acknowledged record.
    acked: BTreeMap<String, (String, String)>,
    /// Error codes of refused entries and requests.
    refused: BTreeMap<String, u64>,
}

/// Writers that each PutRecords through the brokers in `targets` (rotating on a broker
/// that cannot be reached), with fresh data per batch, until `stop` (at most 5,000 batches).
fn start_writers(
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    outcome: Arc<Mutex<Outcome>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|w| {
            let (targets, stop, outcome) = (targets.clone(), stop.clone(), outcome.clone());
            tokio::spawn(async move {
                let mut pick = w;
                for n in 0..5_000 {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let api = {
                        let targets = targets.lock().unwrap();
                        targets[pick % targets.len()]
                    };
                    let batch: Vec<String> = (0..20).map(|i| format!("w{w}-{n}-{i}")).collect();
                    let records: Vec<Value> =
                        batch.iter().map(|d| json!({"PartitionKey": d, "Data": b64(d)})).collect();
                    let answer = post(api, "PutRecords", &json!({"StreamName": STREAM, "Records": records})).await;
                    {
                        let mut outcome = outcome.lock().unwrap();
                        match answer {
                            Some((200, answer)) => {
                                for (d, r) in batch.iter().zip(answer["Records"].as_array().unwrap()) {
                                    match r["SequenceNumber"].as_str() {
                                        Some(seq) => {
                                            let shard = r["ShardId"].as_str().unwrap().to_string();
                                            assert!(outcome.acked.insert(d.clone(), (shard, seq.into())).is_none());
                                        }
                                        None => {
                                            let code = r["ErrorCode"].as_str().unwrap_or("?").to_string();
                                            *outcome.refused.entry(code).or_default() += 1;
                                        }
                                    }
                                }
                            }
                            Some((status, error)) => {
                                let code = format!("{status} {}", error["__type"].as_str().unwrap_or("?"));
                                *outcome.refused.entry(code).or_default() += 1;
                            }
                            None => {
                                *outcome.refused.entry("unreachable".into()).or_default() += 1;
                                pick += 1;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

/// Every record of the stream, read through `readers` in turn (each iterator used at the
/// next broker), as (shard, sequence number, data) in read order.
async fn read_all(readers: &[SocketAddr]) -> Vec<(String, String, String)> {
    read_shards(readers, SHARDS).await
}

/// `read_all` of shards `0..shards`.
async fn read_shards(readers: &[SocketAddr], shards: usize) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for i in 0..shards {
        let shard = format!("shardId-{i:012}");
        let request = json!({"StreamName": STREAM, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"});
        let (status, it) = post(readers[i % readers.len()], "GetShardIterator", &request).await.unwrap();
        assert_eq!(status, 200, "{it}");
        let mut it = it["ShardIterator"].as_str().unwrap().to_string();
        let mut at = i + 1;
        loop {
            let (status, page) = post(readers[at % readers.len()], "GetRecords", &json!({"ShardIterator": it}))
                .await
                .expect("a reader's broker answers");
            assert_eq!(status, 200, "{page}");
            at += 1;
            let records = page["Records"].as_array().unwrap();
            for r in records {
                let data = base64::engine::general_purpose::STANDARD.decode(r["Data"].as_str().unwrap()).unwrap();
                let seq = r["SequenceNumber"].as_str().unwrap().to_string();
                out.push((shard.clone(), seq, String::from_utf8(data).unwrap()));
            }
            if records.is_empty() && page["MillisBehindLatest"] == 0 {
                break;
            }
            // A closed shard read to its end has no next iterator.
            let Some(next) = page["NextShardIterator"].as_str() else { break };
            it = next.to_string();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_on_one_store_serve_one_stream_through_restarts_joins_pauses_and_deaths() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let root = tempfile::tempdir().unwrap();
    let store = format!("file://{}", root.path().join("objects").display());
    std::fs::create_dir_all(root.path().join("objects")).unwrap();
    restarts_joins_pauses_and_deaths(root.path(), store).await;
}

/// The same against MinIO (`STREAMFABRIC_TEST_S3_URL`, a fresh prefix; the credentials and
/// the endpoint from the environment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MinIO; run by scripts/e2e-objects"]
async fn brokers_on_minio_serve_one_stream_through_restarts_joins_pauses_and_deaths() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let root = tempfile::tempdir().unwrap();
    let store = std::env::var("STREAMFABRIC_TEST_S3_URL").expect("STREAMFABRIC_TEST_S3_URL (see scripts/e2e-objects)");
    restarts_joins_pauses_and_deaths(root.path(), store).await;
}

/// Durability `object`, three brokers then four on `store`: see the module's comment.
async fn restarts_joins_pauses_and_deaths(root: &Path, store: String) {
    let dir = |id: &str| root.join(id);
    let mut nodes = Vec::new();
    for id in ["b1", "b2", "b3"] {
        nodes.push(Node::start(id, OBJECT, &dir(id), &store).await);
    }
    form_cluster(&nodes).await;

    let targets = Arc::new(Mutex::new(nodes.iter().map(|n| n.api).collect::<Vec<_>>()));
    let (stop, outcome) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Outcome::default())));
    let writers = start_writers(targets.clone(), stop.clone(), outcome.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Iterators from one broker read at another; a forged one is refused at all.
    let readers: Vec<SocketAddr> = nodes.iter().map(|n| n.api).collect();
    let early = read_all(&readers).await;
    assert!(early.len() > 100, "records were written through every broker: {}", early.len());
    let request = json!({"StreamName": STREAM, "ShardId": "shardId-000000000000", "ShardIteratorType": "LATEST"});
    let (_, it) = post(nodes[0].api, "GetShardIterator", &request).await.unwrap();
    let mut forged = it["ShardIterator"].as_str().unwrap().to_string();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for node in &nodes {
        let (status, error) = post(node.api, "GetRecords", &json!({"ShardIterator": forged})).await.unwrap();
        assert_eq!((status, error["__type"].as_str()), (400, Some("InvalidArgumentException")), "{error}");
    }

    // b2 SIGKILLed under load and restarted on its disk within the member timeout: it keeps
    // its shards (they wait for it) and loses nothing acknowledged.
    nodes[1].child.kill().unwrap();
    nodes[1].child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes[1].restart(&store).await;
    wait_served("b2 serving again after its restart", Duration::from_secs(20), &nodes.iter().collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A fourth broker joins: shards are handed on to it.
    nodes.push(Node::start("b4", OBJECT, &dir("b4"), &store).await);
    targets.lock().unwrap().push(nodes[3].api);
    let joined = wait_served("b4 serving shards", Duration::from_secs(30), &nodes.iter().collect::<Vec<_>>()).await;
    eprintln!("a joining broker served its shards {joined:?} after it started");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // b3 paused until its shards are taken by the others, then resumed: it acknowledges
    // nothing for them (writes sent to it are forwarded, or refused retryably).
    eprintln!("pausing b3");
    nodes[2].signal("-STOP");
    let others = [&nodes[0], &nodes[1], &nodes[3]];
    let taken = wait_served("b3's shards taken over", Duration::from_secs(30), &others).await;
    eprintln!("the shards of a paused broker were served by others {taken:?} after the pause");
    eprintln!("resuming b3");
    nodes[2].signal("-CONT");
    wait_served("b3 serving again", Duration::from_secs(30), &nodes.iter().collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // b2 killed for good: after the member timeout its shards are served by the others.
    targets.lock().unwrap().retain(|a| *a != nodes[1].api);
    eprintln!("killing b2");
    let killed = Instant::now();
    nodes[1].child.kill().unwrap();
    let survivors = [&nodes[0], &nodes[2], &nodes[3]];
    wait_served("b2's shards taken over", Duration::from_secs(30), &survivors).await;
    eprintln!("the shards of a killed broker were served by others {:?} after the kill", killed.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    let readers = [nodes[0].api, nodes[2].api, nodes[3].api];
    let read = read_all(&readers).await;

    check_every_acknowledged_record(&outcome, &read);
}

/// Durability `local`: shards move only by cooperative handoffs here (a broker joining, a
/// reshard taking its parents to the coordinator, a broker stopped with SIGTERM, which hands
/// its shards on before it leaves), and those lose nothing acknowledged; nobody waits for
/// the member timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_durability_handoffs_on_join_reshard_and_clean_shutdown_lose_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let root = tempfile::tempdir().unwrap();
    let store = format!("file://{}", root.path().join("objects").display());
    std::fs::create_dir_all(root.path().join("objects")).unwrap();
    let dir = |id: &str| root.path().join(id);
    let mut nodes =
        vec![Node::start("a", LOCAL, &dir("a"), &store).await, Node::start("b", LOCAL, &dir("b"), &store).await];
    form_cluster(&nodes).await;
    let targets = Arc::new(Mutex::new(nodes.iter().map(|n| n.api).collect::<Vec<_>>()));
    let (stop, outcome) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Outcome::default())));
    let writers = start_writers(targets.clone(), stop.clone(), outcome.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    nodes.push(Node::start("c", LOCAL, &dir("c"), &store).await);
    targets.lock().unwrap().push(nodes[2].api);
    wait_served("c serving shards", Duration::from_secs(30), &nodes.iter().collect::<Vec<_>>()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A reshard through a broker that does not coordinate, of shards spread over all three:
    // the coordinator takes the parents, closes them, and the children are spread.
    let (status, answer) = post(
        nodes[1].api,
        "UpdateShardCount",
        &json!({"StreamName": STREAM, "TargetShardCount": SHARDS * 2, "ScalingType": "UNIFORM_SCALING"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    for node in &nodes {
        wait_for("12 open shards, ACTIVE, at every broker", Duration::from_secs(60), || async {
            let summary = post(node.api, "DescribeStreamSummary", &json!({"StreamName": STREAM})).await;
            summary.is_some_and(|(s, v)| {
                let d = &v["StreamDescriptionSummary"];
                s == 200 && d["StreamStatus"] == "ACTIVE" && d["OpenShardCount"] == SHARDS * 2
            })
        })
        .await;
    }
    let all = SHARDS * 3;
    wait_served_all("parents and children served", Duration::from_secs(30), &nodes.iter().collect::<Vec<_>>(), all)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // a stopped cleanly: its shards are served by the others well within the member timeout.
    targets.lock().unwrap().retain(|api| *api != nodes[0].api);
    nodes[0].signal("-TERM");
    let rest = [&nodes[1], &nodes[2]];
    let moved = wait_served_all("a's shards handed on", Duration::from_secs(20), &rest, all).await;
    eprintln!("the shards of a broker stopped with SIGTERM were served by others {moved:?} after the signal");
    for node in rest {
        let (_, metrics) = get(node.admin, "/metrics").await.unwrap();
        let taken_over =
            metrics.lines().find(|l| l.starts_with("streamfabric_shard_handoffs_total{kind=\"taken_over\"}"));
        assert!(taken_over.is_none_or(|l| l.ends_with(" 0")), "{}: handed on, not taken over: {taken_over:?}", node.id);
    }
    assert!(nodes[0].child.wait().unwrap().success(), "a clean shutdown");
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    let read = read_shards(&[nodes[1].api, nodes[2].api], all).await;
    check_every_acknowledged_record(&outcome, &read);

    // Deleted through either broker: gone at both, and from the bucket.
    let (status, answer) = post(nodes[2].api, "DeleteStream", &json!({"StreamName": STREAM})).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    for node in &nodes[1..] {
        wait_for("the stream gone at every broker", Duration::from_secs(20), || async {
            let summary = post(node.api, "DescribeStreamSummary", &json!({"StreamName": STREAM})).await;
            summary.is_some_and(|(s, v)| s == 400 && v["__type"] == "ResourceNotFoundException")
        })
        .await;
    }
    let left = root.path().join("objects").join("streams").join(STREAM);
    let files = walkdir(&left);
    assert!(files.is_empty(), "the deleted stream's objects are gone from the bucket: {files:?}");
}

/// Every file under `dir` (none if it does not exist).
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for path in entries.map(|e| e.unwrap().path()) {
        if path.is_dir() { out.extend(walkdir(&path)) } else { out.push(path) }
    }
    out
}

/// Wait until `nodes` are live members with a coordinator; create the stream through the
/// first; wait until it is ACTIVE at every broker and its shards are spread over them.
async fn form_cluster(nodes: &[Node]) {
    wait_for("live members and a coordinator", Duration::from_secs(20), || async {
        let view = nodes[0].cluster().await;
        let live = view["members"].as_array().into_iter().flatten().filter(|m| m["liveness"] == "live").count();
        live == nodes.len() && view["coordinator"]["holder"].is_string()
    })
    .await;
    // Created through the first broker, whichever broker coordinates; visible at every broker.
    let (status, answer) =
        post(nodes[0].api, "CreateStream", &json!({"StreamName": STREAM, "ShardCount": SHARDS})).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    for node in nodes {
        wait_for("the stream ACTIVE at every broker", Duration::from_secs(10), || async {
            let summary = post(node.api, "DescribeStreamSummary", &json!({"StreamName": STREAM})).await;
            summary.is_some_and(|(s, v)| s == 200 && v["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")
        })
        .await;
    }
    let last = nodes.last().unwrap();
    let (status, again) =
        post(last.api, "CreateStream", &json!({"StreamName": STREAM, "ShardCount": 1})).await.unwrap();
    assert_eq!((status, again["__type"].as_str()), (400, Some("ResourceInUseException")), "one catalog: {again}");
    wait_served(
        "every shard served by one broker, each broker serving some",
        Duration::from_secs(20),
        &nodes.iter().collect::<Vec<_>>(),
    )
    .await;
    for node in nodes {
        // Ready once it serves every shard assigned to it (the assignment may still be
        // read a heartbeat late).
        wait_for("every broker ready", Duration::from_secs(5), || async {
            get(node.admin, "/readyz").await.is_some_and(|(status, _)| status == 200)
        })
        .await;
    }
}

/// Every acknowledged record read exactly once, where its answer said; order per shard;
/// every refusal one a client retries.
fn check_every_acknowledged_record(outcome: &Outcome, read: &[(String, String, String)]) {
    // Every acknowledged record exactly once, where its answer said; order per shard.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut placed: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut last_seq: BTreeMap<&str, u128> = BTreeMap::new();
    for (shard, seq, data) in read {
        *seen.entry(data.as_str()).or_default() += 1;
        placed.insert(data.as_str(), (shard.as_str(), seq.as_str()));
        let parsed = streamfabric_api::sequence::SequenceNumber::parse("sequenceNumber", seq).unwrap();
        let n = (u128::from(parsed.shard_index) << 64) | u128::from(parsed.offset);
        if let Some(previous) = last_seq.insert(shard.as_str(), n) {
            assert!(previous < n, "shard {shard}: sequence numbers out of order ({previous} then {n})");
        }
    }
    let mut missing = 0;
    let mut missing_by_shard: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (data, (shard, seq)) in &outcome.acked {
        match seen.get(data.as_str()) {
            None => {
                missing += 1;
                missing_by_shard.entry(shard.as_str()).or_default().push(seq.as_str());
            }
            Some(&count) => {
                assert_eq!(count, 1, "{data} read {count} times");
                assert_eq!(placed[data.as_str()], (shard.as_str(), seq.as_str()), "{data} where its answer said");
            }
        }
    }
    eprintln!(
        "{} records acknowledged, {} read, refused entries and requests: {:?}",
        outcome.acked.len(),
        read.len(),
        outcome.refused
    );
    for (shard, seqs) in &missing_by_shard {
        let (min, max) = (seqs.iter().min().unwrap(), seqs.iter().max().unwrap());
        eprintln!("{shard}: {} missing, {min}..={max}; last read {:?}", seqs.len(), last_seq.get(shard));
    }
    assert_eq!(missing, 0, "acknowledged records missing after the restarts, join, pause and death");
    assert!(outcome.acked.len() > 1_000, "the writers got work done: {}", outcome.acked.len());
    let retryable = ["ServiceUnavailable", "InternalFailure", "ProvisionedThroughputExceededException", "unreachable"];
    for code in outcome.refused.keys() {
        assert!(
            retryable.iter().any(|r| code.ends_with(r)),
            "a refusal that a client would not retry: {code} ({:?})",
            outcome.refused
        );
    }
}

/// SubscribeToShard at a broker that does not own the shard is relayed, as a stream, from
/// the owner: the consumer gets every shard's records live whichever broker it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_at_any_broker_stream_from_the_shards_owner() {
    use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
    let _alone = ONE_AT_A_TIME.lock().await;
    let root = tempfile::tempdir().unwrap();
    let store = format!("file://{}", root.path().join("objects").display());
    std::fs::create_dir_all(root.path().join("objects")).unwrap();
    let nodes = vec![
        Node::start("a", LOCAL, &root.path().join("a"), &store).await,
        Node::start("b", LOCAL, &root.path().join("b"), &store).await,
    ];
    form_cluster(&nodes).await;
    let stream_arn = format!("arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}");
    let registered = json!({"StreamARN": stream_arn, "ConsumerName": "everywhere"});
    let (status, answer) = post(nodes[1].api, "RegisterStreamConsumer", &registered).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let consumer = answer["Consumer"]["ConsumerARN"].as_str().unwrap().to_string();
    // ACTIVE as one broker sees it; the other may not have read it yet, and must then read
    // the stream's description before it refuses a subscription.
    wait_for("the consumer ACTIVE", Duration::from_secs(10), || async {
        let described = post(nodes[0].api, "DescribeStreamConsumer", &json!({"ConsumerARN": consumer})).await;
        described.is_some_and(|(_, v)| v["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE")
    })
    .await;
    let served_by_b = nodes[1].serving().await;
    let (_, listed) = post(nodes[0].api, "ListShards", &json!({"StreamName": STREAM})).await.unwrap();
    let shards = listed["Shards"].as_array().unwrap().clone();
    assert_eq!(shards.len(), SHARDS);
    let k = {
        use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://{}", nodes[1].api))
            .credentials_provider(Credentials::new("test", "test", None, None, "streamfabric-tests"))
            .build();
        aws_sdk_kinesis::Client::from_conf(config)
    };
    let mut relayed = 0;
    for shard in &shards {
        let id = shard["ShardId"].as_str().unwrap();
        relayed += usize::from(!served_by_b.contains(&format!("{STREAM}/{id}")));
        let position = StartingPosition::builder().r#type(ShardIteratorType::Latest).build().unwrap();
        let subscribed = k.subscribe_to_shard().consumer_arn(&consumer).shard_id(id).starting_position(position);
        let mut events = subscribed.send().await.unwrap().event_stream;
        let hash_key = shard["HashKeyRange"]["StartingHashKey"].as_str().unwrap();
        let put = json!({"StreamName": STREAM, "PartitionKey": "k", "ExplicitHashKey": hash_key, "Data": b64(id)});
        let (status, answer) = post(nodes[0].api, "PutRecord", &put).await.unwrap();
        assert_eq!((status, answer["ShardId"].as_str()), (200, Some(id)), "{answer}");
        let pushed = loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event");
            let Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) = event.unwrap() else {
                panic!("the stream of {id} ended early");
            };
            if let Some(record) = event.records.into_iter().next() {
                break record;
            }
        };
        assert_eq!(pushed.data.as_ref(), id.as_bytes(), "{id}'s record, live");
    }
    assert!(relayed > 0, "some shards are owned by the other broker, so their streams were relayed");
}
