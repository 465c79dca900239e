//! Reads of data no longer on local disk: with small segments and a small local retention,
//! sealed segments are uploaded, then deleted locally, and every record still reads back,
//! exactly once and in order, from TRIM_HORIZON, AT_SEQUENCE_NUMBER and AT_TIMESTAMP, moving
//! from the object store on to the local log; while the store cannot be read, GetRecords
//! answers the retryable ServiceUnavailable.

mod common;

use serde_json::{Value, json};
use std::time::Duration;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    seq: String,
    data: String,
    key: String,
    ts_ms: i64,
}

async fn iterator(b: &common::TestBroker, spec: Value) -> String {
    let mut req = json!({"StreamName": "old", "ShardId": "shardId-000000000000"});
    req.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    let (status, it) = b.json("GetShardIterator", req).await;
    assert_eq!(status, 200, "{it}");
    it["ShardIterator"].as_str().unwrap().to_string()
}

/// Every record from `it` to the end of the shard, `limit` per call.
async fn drain(b: &common::TestBroker, mut it: String, limit: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let (status, page) = b.json("GetRecords", json!({"ShardIterator": it, "Limit": limit})).await;
        assert_eq!(status, 200, "{page}");
        let records = page["Records"].as_array().unwrap();
        out.extend(records.iter().map(|r| Rec {
            seq: r["SequenceNumber"].as_str().unwrap().to_string(),
            data: r["Data"].as_str().unwrap().to_string(),
            key: r["PartitionKey"].as_str().unwrap().to_string(),
            ts_ms: (r["ApproximateArrivalTimestamp"].as_f64().unwrap() * 1000.0).round() as i64,
        }));
        if records.is_empty() && page["MillisBehindLatest"] == 0 {
            return out;
        }
        it = page["NextShardIterator"].as_str().unwrap().to_string();
    }
    panic!("the shard did not drain");
}

fn metric(b: &common::TestBroker, name: &str) -> i64 {
    let text = String::from_utf8(b.running.broker.metrics.render()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

fn local_segment_bases(b: &common::TestBroker) -> Vec<u64> {
    let dir = b.dir.path().join("streams/old/shards/shardId-000000000000");
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort();
    bases
}

fn offset(seq: &str) -> u64 {
    seq[seq.len() - 20..].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_records_read_back_from_the_object_store() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let b = common::start_with(|c| {
        c.object_store = Some(url.clone());
        c.segment_bytes = 16 * 1024;
        c.local_retention_bytes = Some(48 * 1024);
        c.local_retention_check = Duration::from_millis(50);
        c.remote_cache_bytes = 96 * 1024; // smaller than the remote data: reads evict
    })
    .await;
    b.create_stream("old", 1).await;

    // ~600 KiB in 30 batches, a few ms apart so that timestamps differ between batches.
    let mut written = Vec::new();
    for batch in 0..30 {
        let records: Vec<_> = (0..100)
            .map(|i| json!({"PartitionKey": format!("k{batch}-{i}"), "Data": b64(format!("{batch}-{i}-{}", "x".repeat(150)).as_bytes())}))
            .collect();
        let (status, v) = b.json("PutRecords", json!({"StreamName": "old", "Records": records.clone()})).await;
        assert_eq!((status, v["FailedRecordCount"].as_i64()), (200, Some(0)), "{v}");
        for (r, put) in records.iter().zip(v["Records"].as_array().unwrap()) {
            written
                .push((put["SequenceNumber"].as_str().unwrap().to_string(), r["Data"].as_str().unwrap().to_string()));
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    b.running.broker.archive.flush().await;

    // Wait (polling, generous deadline) until local retention has evicted most of the shard.
    let shard = b.running.broker.catalog.get("old").unwrap().shard(0).unwrap().clone();
    let end = shard.log.bounds().end_offset;
    assert_eq!(end, 3000);
    for _ in 0..600 {
        if shard.log.local_start_offset() > end / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let local_start = shard.log.local_start_offset();
    assert!(local_start > end / 2, "local retention evicted up to {local_start} of {end}");
    assert_eq!(shard.log.bounds().start_offset, 0, "evicted records are still the stream's");
    let bases = local_segment_bases(&b);
    assert_eq!(bases.first(), Some(&local_start), "the local dir no longer holds the evicted segments");
    assert!(metric(&b, "streamfabric_segments_evicted_total") >= 10);
    assert!(metric(&b, "streamfabric_remote_segments") >= 10);
    let local_bytes = metric(&b, "streamfabric_local_segment_bytes");
    assert!(local_bytes > 0 && local_bytes <= 48 * 1024 + 16 * 1024, "{local_bytes} local bytes");

    // TRIM_HORIZON: every record exactly once, in order, across the tiers; small and large pages.
    for limit in [10_000, 37] {
        let all = drain(&b, iterator(&b, json!({"ShardIteratorType": "TRIM_HORIZON"})).await, limit).await;
        let got: Vec<(String, String)> = all.iter().map(|r| (r.seq.clone(), r.data.clone())).collect();
        assert_eq!(got.len(), written.len(), "limit {limit}");
        assert!(got == written, "limit {limit}: records differ");
    }
    let misses = metric(&b, "streamfabric_remote_cache_misses_total");
    assert!(misses > 0);
    assert!(metric(&b, "streamfabric_remote_fetch_bytes_total") > 0);
    assert!(metric(&b, "streamfabric_remote_cache_evictions_total") > 0, "the cache stays within its budget");
    assert!(metric(&b, "streamfabric_remote_cache_bytes") <= 96 * 1024);
    assert!(metric(&b, "streamfabric_remote_records_total") >= 2 * local_start as i64);

    // AT_SEQUENCE_NUMBER / AFTER_SEQUENCE_NUMBER into the remote part.
    let all = drain(&b, iterator(&b, json!({"ShardIteratorType": "TRIM_HORIZON"})).await, 500).await;
    let at = (local_start / 3) as usize;
    let from_at = drain(
        &b,
        iterator(&b, json!({"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": all[at].seq})).await,
        1000,
    )
    .await;
    assert!(from_at == all[at..], "AT_SEQUENCE_NUMBER");
    let after = drain(
        &b,
        iterator(&b, json!({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": all[at].seq}))
            .await,
        1000,
    )
    .await;
    assert!(after == all[at + 1..], "AFTER_SEQUENCE_NUMBER");

    // AT_TIMESTAMP into the remote part: the first record at or after it.
    let batch_starts: Vec<usize> =
        (1..all.len()).filter(|&i| all[i].ts_ms > all[i - 1].ts_ms && (i as u64) < local_start).collect();
    assert!(batch_starts.len() >= 3, "timestamps differ between batches");
    for &i in &batch_starts[..3] {
        let ts = all[i].ts_ms;
        let it = iterator(&b, json!({"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": ts as f64 / 1000.0})).await;
        let got = drain(&b, it, 1000).await;
        let first = all.iter().position(|r| r.ts_ms >= ts).unwrap();
        assert_eq!(offset(&got[0].seq), offset(&all[first].seq), "AT_TIMESTAMP {ts}");
        assert!(got == all[first..]);
    }
    assert!(all.iter().all(|r| r.key.starts_with('k')));

    // The object store unreadable: retryable ServiceUnavailable, never missing records; back
    // when it returns.
    let moved = objects.path().with_extension("away");
    std::fs::rename(objects.path(), &moved).unwrap();
    let it = iterator(&b, json!({"ShardIteratorType": "TRIM_HORIZON"})).await;
    let (status, answer) = b.json("GetRecords", json!({"ShardIterator": it, "Limit": 10_000})).await;
    std::fs::rename(&moved, objects.path()).unwrap();
    assert_eq!((status, answer["__type"].as_str()), (503, Some("ServiceUnavailable")), "{answer}");
    let again = drain(&b, iterator(&b, json!({"ShardIteratorType": "TRIM_HORIZON"})).await, 10_000).await;
    assert!(again == all);

    // Retention reaches both tiers: all expired, nothing left to read, the bucket emptied.
    let now = streamfabric_api::types::Timestamp::now().millis();
    b.running.broker.enforce_retention(now + 25 * 3_600_000);
    b.running.broker.archive.flush().await;
    let left = drain(&b, iterator(&b, json!({"ShardIteratorType": "TRIM_HORIZON"})).await, 10_000).await;
    assert!(left.is_empty(), "{} records outlived retention", left.len());
}
