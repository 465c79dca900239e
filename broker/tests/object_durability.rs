//! Durability `object` through the broker's API: concurrent writers, then the data
//! directory is lost (never flushed, never sealed); a broker on an empty data directory
//! against the same bucket serves every acknowledged record with its number and data, and
//! numbers new records above them. Write-ahead objects leave the bucket once uploaded
//! segments hold their records.

mod common;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use streamfabric_broker::BrokerConfig;
use streamfabric_broker::config::Durability;

const SHARDS: usize = 3;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

type Acked = Vec<(String, String, String)>;

/// Every record of stream `s`, as (shard, sequence number, data).
async fn read_all(b: &common::TestBroker) -> Acked {
    let mut out = Vec::new();
    for i in 0..SHARDS {
        let shard = format!("shardId-{i:012}");
        let (_, it) = b
            .json("GetShardIterator", json!({"StreamName": "s", "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}))
            .await;
        let mut it = it["ShardIterator"].as_str().unwrap().to_string();
        loop {
            let (status, page) = b.json("GetRecords", json!({"ShardIterator": it})).await;
            assert_eq!(status, 200, "{page}");
            let records = page["Records"].as_array().unwrap();
            for r in records {
                out.push((
                    shard.clone(),
                    r["SequenceNumber"].as_str().unwrap().to_string(),
                    r["Data"].as_str().unwrap().to_string(),
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

/// Six writers (PutRecords of 20, and PutRecord) at once; what each was acknowledged.
async fn write_concurrently(b: &common::TestBroker, rounds: usize) -> Acked {
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let api = b.running.api_addr;
    let mut writers = Vec::new();
    for w in 0..6 {
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..rounds {
                let batch: Vec<String> = (0..20).map(|i| format!("w{w}-{n}-{i}-{}", "x".repeat(i * 13))).collect();
                let records: Vec<Value> = batch.iter().map(|d| json!({"PartitionKey": d, "Data": b64(d)})).collect();
                let body = serde_json::to_vec(&json!({"StreamName": "s", "Records": records})).unwrap();
                let (status, _, bytes) =
                    common::raw_post(api, "Kinesis_20131202.PutRecords", "application/x-amz-json-1.1", body).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
                let answer: Value = serde_json::from_slice(&bytes).unwrap();
                {
                    let mut list = acked.lock().unwrap();
                    for (d, r) in batch.iter().zip(answer["Records"].as_array().unwrap()) {
                        list.push((
                            r["ShardId"].as_str().unwrap().into(),
                            r["SequenceNumber"].as_str().unwrap().into(),
                            b64(d),
                        ));
                    }
                }
                let single = format!("w{w}-{n}-single");
                let body =
                    serde_json::to_vec(&json!({"StreamName": "s", "PartitionKey": single, "Data": b64(&single)}))
                        .unwrap();
                let (status, _, bytes) =
                    common::raw_post(api, "Kinesis_20131202.PutRecord", "application/x-amz-json-1.1", body).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
                let r: Value = serde_json::from_slice(&bytes).unwrap();
                acked.lock().unwrap().push((
                    r["ShardId"].as_str().unwrap().into(),
                    r["SequenceNumber"].as_str().unwrap().into(),
                    b64(&single),
                ));
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

fn object_mode(store: &Path) -> impl Fn(&mut BrokerConfig) + '_ {
    move |c| {
        c.object_store = Some(format!("file://{}", store.display()));
        c.durability = Durability::Object;
        // Small segments: some records are sealed and uploaded, the rest only in the
        // active segments (and so only in the write-ahead objects).
        c.segment_bytes = 24 * 1024;
    }
}

fn wal_objects(store: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(store.join("wal")) else { return Vec::new() };
    entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "wal")).collect()
}

fn max_per_shard(records: &Acked) -> BTreeMap<String, u128> {
    let mut max = BTreeMap::new();
    for (shard, seq, _) in records {
        let seq = common::seq_value(seq);
        let m = max.entry(shard.clone()).or_insert(0);
        *m = seq.max(*m);
    }
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_record_survives_a_lost_data_directory() {
    let store = tempfile::tempdir().unwrap();
    let first = common::start_with(object_mode(store.path())).await;
    first.create_stream("s", SHARDS as i64).await;
    let acked = write_concurrently(&first, 15).await;
    assert_eq!(acked.len(), 6 * 15 * 21);
    let puts = first.running.broker.metrics.object_batch_puts.get();
    assert!(puts >= 1, "write-ahead objects written");
    let uploaded = first.running.broker.metrics.segment_uploads.get();
    let sealed: usize =
        first.running.broker.catalog.get("s").unwrap().shards().iter().map(|s| s.log.sealed_segments().len()).sum();
    assert!(sealed > 0, "some records were sealed ({uploaded} uploaded so far)");
    let unsealed: usize = first
        .running
        .broker
        .catalog
        .get("s")
        .unwrap()
        .shards()
        .iter()
        .map(|s| s.log.bounds().end_offset - s.log.sealed_segments().last().map_or(0, |g| g.end_offset))
        .sum::<u64>() as usize;
    assert!(unsealed > 0, "some records were only in active segments");

    // The disk is lost, without a seal: nothing of it is read again. (The first broker lives
    // on in this process, unlike a dead pod; its queued uploads are let finish first so
    // that they do not race the second broker's.)
    first.running.broker.archive.flush().await;
    std::fs::remove_dir_all(first.dir.path()).unwrap();
    let second = common::start_with(object_mode(store.path())).await;
    let stored = read_all(&second).await;
    let stored_set: HashSet<_> = stored.iter().cloned().collect();
    assert_eq!(stored_set.len(), stored.len(), "no record twice");
    for a in &acked {
        assert!(stored_set.contains(a), "acknowledged record lost: {a:?}");
    }
    assert_eq!(stored.len(), acked.len(), "nothing but what was acknowledged");

    // New numbers are above every old one, shard by shard.
    let old_max = max_per_shard(&acked);
    let newer = write_concurrently(&second, 1).await;
    for (shard, seq, _) in &newer {
        assert!(common::seq_value(seq) > old_max[shard], "{shard}: {seq} is not above the old numbers");
    }

    // The replayed records are sealed segments of the new broker: once they are uploaded,
    // the write-ahead objects of the first broker are redundant and leave the bucket.
    second.running.broker.archive.flush().await;
    for shard in second.running.broker.catalog.get("s").unwrap().shards() {
        shard.log.roll().unwrap();
    }
    second.running.broker.archive.flush().await;
    second.running.broker.clean_write_ahead().await.unwrap();
    assert_eq!(wal_objects(store.path()), Vec::<PathBuf>::new(), "every record is in an uploaded segment");

    // ... and a third broker, from segments alone, still has everything.
    std::fs::remove_dir_all(second.dir.path()).unwrap();
    let third = common::start_with(object_mode(store.path())).await;
    let again: HashSet<_> = read_all(&third).await.into_iter().collect();
    for a in acked.iter().chain(&newer) {
        assert!(again.contains(a), "record lost after the write-ahead objects were deleted: {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_ahead_objects_are_deleted_once_uploaded_segments_hold_their_records() {
    let store = tempfile::tempdir().unwrap();
    let b = common::start_with(object_mode(store.path())).await;
    b.create_stream("s", SHARDS as i64).await;
    write_concurrently(&b, 10).await;
    b.running.broker.archive.flush().await;
    let written = wal_objects(store.path()).len();
    assert!(written >= 1);

    // The active segments are not uploaded: the objects holding their records stay.
    let report = b.running.broker.clean_write_ahead().await.unwrap();
    let left = wal_objects(store.path()).len();
    assert!(left >= 1 && report.kept == left, "objects with unsealed records are kept: {report:?}");
    assert!(left <= written);

    for shard in b.running.broker.catalog.get("s").unwrap().shards() {
        shard.log.roll().unwrap();
    }
    b.running.broker.archive.flush().await;
    let report = b.running.broker.clean_write_ahead().await.unwrap();
    assert_eq!(report.kept, 0);
    assert!(wal_objects(store.path()).is_empty());
    let metrics = &b.running.broker.metrics;
    assert_eq!(metrics.object_wal_deleted.get(), metrics.object_batch_puts.get(), "each object deleted once");

    // A deleted stream's objects go too (nothing will ever cover them).
    write_concurrently(&b, 1).await;
    assert!(!wal_objects(store.path()).is_empty());
    b.json("DeleteStream", json!({"StreamName": "s"})).await;
    for _ in 0..200 {
        if b.running.broker.catalog.get("s").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    b.running.broker.archive.flush().await;
    b.running.broker.clean_write_ahead().await.unwrap();
    assert!(wal_objects(store.path()).is_empty());
}
