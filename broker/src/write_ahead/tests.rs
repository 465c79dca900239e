//! Durability `object` against a store that fails or hangs on demand: writes are refused
//! retryably while it does, nothing acknowledged is lost, and writing resumes by itself.

use crate::broker::Broker;
use crate::config::{BrokerConfig, Durability, FlushSetting};
use crate::tier::TierStore;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};
use serde_json::{Value, json};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use streamfabric_api::model::Operation;
use streamfabric_api::{ApiError, ErrorCode, Format};

const UP: u8 = 0;
const FAILING: u8 = 1;
const HANGING: u8 = 2;

/// A store whose PUTs fail, or never answer, while told to (reads keep working, as when
/// only writes are refused: the batcher is what is under test).
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<dyn ObjectStore>,
    mode: Arc<AtomicU8>,
}

impl std::fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlakyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.mode.load(Ordering::SeqCst) {
            FAILING => Err(object_store::Error::Generic { store: "flaky", source: "the store is down".into() }),
            HANGING => futures::future::pending().await,
            _ => self.inner.put_opts(location, payload, opts).await,
        }
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Wait (at most 2 s) for stream `s` to turn ACTIVE: the status delay passes on the next
/// write of its description.
async fn wait_active(broker: &Broker) {
    for _ in 0..200 {
        let d = call(broker, Operation::DescribeStreamSummary, json!({"StreamName": "s"})).await.unwrap();
        if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn call(broker: &Broker, op: Operation, body: Value) -> Result<Value, ApiError> {
    let out = broker.call(op, Format::Json, &serde_json::to_vec(&body).unwrap()).await?;
    Ok(Format::Json.decode(&out).expect("a JSON answer"))
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// (shard, sequence number, base64 data) of every record of the stream.
async fn read_all(broker: &Broker, shards: usize) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for i in 0..shards {
        let shard = format!("shardId-{i:012}");
        let it = call(
            broker,
            Operation::GetShardIterator,
            json!({"StreamName": "s", "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await
        .unwrap();
        let mut it = it["ShardIterator"].as_str().unwrap().to_string();
        loop {
            let page = call(broker, Operation::GetRecords, json!({"ShardIterator": it})).await.unwrap();
            let records = page["Records"].as_array().unwrap();
            for r in records {
                out.push((
                    shard.clone(),
                    r["SequenceNumber"].as_str().unwrap().to_string(),
                    r["Data"].as_str().unwrap().to_string(),
                ));
            }
            if records.is_empty() {
                break;
            }
            it = page["NextShardIterator"].as_str().unwrap().to_string();
        }
    }
    out
}

/// PutRecords of `n` records tagged `tag`: the acknowledged ones, or the error.
async fn put(broker: &Broker, tag: &str, n: usize) -> Result<Vec<(String, String, String)>, ApiError> {
    let data: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let records: Vec<Value> = data.iter().map(|d| json!({"PartitionKey": d, "Data": b64(d)})).collect();
    let answer = call(broker, Operation::PutRecords, json!({"StreamName": "s", "Records": records})).await?;
    assert_eq!(answer["FailedRecordCount"], 0, "{answer}");
    Ok(data
        .iter()
        .zip(answer["Records"].as_array().unwrap())
        .map(|(d, r)| (r["ShardId"].as_str().unwrap().into(), r["SequenceNumber"].as_str().unwrap().into(), b64(d)))
        .collect())
}

fn object_config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = BrokerConfig::for_dir(dir);
    config.durability = Durability::Object;
    config.object_put_timeout = Duration::from_millis(300);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_refuses_writes_retryably_and_loses_nothing_acknowledged() {
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mode = Arc::new(AtomicU8::new(UP));
    let flaky = Arc::new(FlakyStore { inner: memory.clone(), mode: mode.clone() });
    let dir = tempfile::tempdir().unwrap();
    let broker =
        Broker::open_with_tier(object_config(dir.path()), TierStore::new(flaky, Path::from("p"))).await.unwrap();
    call(&broker, Operation::CreateStream, json!({"StreamName": "s", "ShardCount": 2})).await.unwrap();
    wait_active(&broker).await;
    broker.archive.flush().await;

    let mut acked = put(&broker, "before", 50).await.unwrap();
    assert!(broker.metrics.object_batch_puts.get() >= 1);

    for (down, name) in [(FAILING, "failing"), (HANGING, "hanging")] {
        mode.store(down, Ordering::SeqCst);
        let e = put(&broker, name, 10).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ServiceUnavailable, "{name}: {}", e.message);
        assert_eq!(e.code.http_status(), 503, "retryable");
        let e = call(&broker, Operation::PutRecord, json!({"StreamName": "s", "PartitionKey": "k", "Data": b64(name)}))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ServiceUnavailable, "{name}: {}", e.message);
    }
    assert!(broker.metrics.object_batch_failures.get() >= 4);

    // Back up: writes go through again, without anyone restarting anything.
    mode.store(UP, Ordering::SeqCst);
    acked.extend(put(&broker, "after", 50).await.unwrap());
    let one = call(&broker, Operation::PutRecord, json!({"StreamName": "s", "PartitionKey": "k", "Data": b64("one")}))
        .await
        .unwrap();
    acked.push((one["ShardId"].as_str().unwrap().into(), one["SequenceNumber"].as_str().unwrap().into(), b64("one")));

    // The disk is lost: a new broker on an empty data directory and the same bucket.
    drop(broker);
    let fresh = tempfile::tempdir().unwrap();
    let restored =
        Broker::open_with_tier(object_config(fresh.path()), TierStore::new(memory, Path::from("p"))).await.unwrap();
    let stored = read_all(&restored, 2).await;
    for a in &acked {
        assert!(stored.contains(a), "acknowledged record lost: {a:?}");
    }
    // What was refused was never in a write-ahead object: it did not come back.
    assert_eq!(stored.len(), acked.len(), "only what was acknowledged is restored: {stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_durability_needs_flush_always() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = object_config(dir.path());
    config.flush = FlushSetting::Never;
    let e = Broker::open(config).await.err().expect("refused");
    assert!(e.to_string().contains("--flush always"), "{e}");
}

/// A broker alone claims an unclaimed shard before its first write, not at its first upload,
/// and each write-ahead chunk carries the epoch the shard was owned at before its append.
/// Stamped after the append, as it was, a write racing the claim could put a chunk of epoch
/// 0 above (in offsets) a chunk of epoch 1 written by a write that appended earlier; a
/// restore keeps a chunk only below the first offset a later epoch wrote
/// (`archive::records_past`), so that acknowledged chunk was dropped when the disk was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_ahead_chunks_carry_the_epoch_claimed_before_the_append() {
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let tier = TierStore::new(memory.clone(), Path::from("p"));
    let broker = Broker::open_with_tier(object_config(dir.path()), tier.clone()).await.unwrap();
    call(&broker, Operation::CreateStream, json!({"StreamName": "s", "ShardCount": 2})).await.unwrap();
    wait_active(&broker).await;
    let shards = broker.catalog.get("s").unwrap().shards();
    assert!(shards.iter().all(|s| s.bucket.owned_epoch().is_none()), "nothing claimed a shard yet");

    // Concurrent first writes: one claim per shard, never one write fencing another.
    let writes = (0..6).map(|w| {
        let broker = broker.clone();
        tokio::spawn(async move { put(&broker, &format!("first-{w}"), 20).await.unwrap() })
    });
    let mut acked = Vec::new();
    for w in futures::future::join_all(writes).await {
        acked.extend(w.unwrap());
    }
    let epochs: Vec<Option<u64>> = shards.iter().map(|s| s.bucket.owned_epoch()).collect();
    assert!(epochs.iter().all(|e| e.is_some_and(|e| e >= 1)), "claimed by the first writes: {epochs:?}");
    // The first uploads find the shards claimed already.
    for shard in &shards {
        shard.log.roll().unwrap();
    }
    broker.archive.flush().await;
    acked.extend(put(&broker, "second", 20).await.unwrap());
    assert_eq!(shards.iter().map(|s| s.bucket.owned_epoch()).collect::<Vec<_>>(), epochs, "no new epoch");

    let chunks = tier.read_all_wal().await.unwrap();
    assert!(!chunks.is_empty());
    for c in &chunks {
        let shard = shards.iter().find(|s| s.id == c.shard).unwrap();
        assert_eq!(Some(c.epoch), shard.bucket.owned_epoch(), "the chunk at {} of {}", c.first_offset, c.shard);
    }

    // The disk is lost: everything acknowledged comes back from the bucket.
    drop(broker);
    let fresh = tempfile::tempdir().unwrap();
    let restored =
        Broker::open_with_tier(object_config(fresh.path()), TierStore::new(memory, Path::from("p"))).await.unwrap();
    let stored = read_all(&restored, 2).await;
    for a in &acked {
        assert!(stored.contains(a), "acknowledged record lost: {a:?}");
    }
}
