//! The object-store tier through the broker: sealed segments reach the bucket with the
//! stream's description, and a broker started on an empty data directory against that
//! bucket serves the stream again: every sealed record reads back, numbering continues
//! without reuse.

mod common;

use serde_json::json;
use std::collections::BTreeMap;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn read_all(b: &common::TestBroker, stream: &str, shard: &str) -> Vec<(String, String)> {
    let (_, it) = b
        .json("GetShardIterator", json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}))
        .await;
    let mut it = it["ShardIterator"].as_str().unwrap().to_string();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let (status, page) = b.json("GetRecords", json!({"ShardIterator": it, "Limit": 500})).await;
        assert_eq!(status, 200, "{page}");
        let records = page["Records"].as_array().unwrap();
        out.extend(
            records
                .iter()
                .map(|r| (r["SequenceNumber"].as_str().unwrap().to_string(), r["Data"].as_str().unwrap().to_string())),
        );
        if records.is_empty() && page["MillisBehindLatest"] == 0 {
            return out;
        }
        it = page["NextShardIterator"].as_str().unwrap().to_string();
    }
    panic!("{shard} did not drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_directory_comes_back_from_the_object_store() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let small_segments = |c: &mut streamfabric_broker::BrokerConfig| {
        c.object_store = Some(url.clone());
        c.segment_bytes = 16 * 1024;
    };
    let first = common::start_with(small_segments).await;
    first.create_stream("kept", 2).await;
    first.json("AddTagsToStream", json!({"StreamName": "kept", "Tags": {"owner": "tier"}})).await;
    first.json("IncreaseStreamRetentionPeriod", json!({"StreamName": "kept", "RetentionPeriodHours": 48})).await;
    for batch in 0..6 {
        let records: Vec<_> = (0..500).map(|i| json!({"PartitionKey": format!("k{batch}-{i}"), "Data": b64(format!("record {batch}-{i}").as_bytes())})).collect();
        let (status, v) = first.json("PutRecords", json!({"StreamName": "kept", "Records": records})).await;
        assert_eq!((status, v["FailedRecordCount"].as_i64()), (200, Some(0)));
    }
    first.running.broker.archive.flush().await;

    // What the first broker sealed (and so uploaded), per shard.
    let stream = first.running.broker.catalog.get("kept").unwrap();
    let mut sealed_end = BTreeMap::new();
    let mut before = BTreeMap::new();
    for shard in stream.shards() {
        let end = shard.log.sealed_segments().last().map_or(0, |s| s.end_offset);
        assert!(end > 0, "{} sealed something", shard.id);
        sealed_end.insert(shard.id.clone(), end);
        before.insert(shard.id.clone(), read_all(&first, "kept", &shard.id).await);
    }
    let uploaded = first.running.broker.metrics.segment_uploads.get();
    assert!(uploaded >= 2, "{uploaded} segments uploaded");
    let (_, it) = first
        .json(
            "GetShardIterator",
            json!({"StreamName": "kept", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await;
    let first_iterator = it["ShardIterator"].as_str().unwrap().to_string();
    let raw = first.running.broker.metrics.segment_raw_bytes.get();
    let stored = first.running.broker.metrics.segment_stored_bytes.get();
    assert!(stored < raw, "zstd compresses repetitive records: {stored} of {raw} bytes");

    // A new broker with an empty data directory, on the same bucket.
    let second = common::start_with(small_segments).await;
    let (_, summary) = second.json("DescribeStreamSummary", json!({"StreamName": "kept"})).await;
    assert_eq!(summary["StreamDescriptionSummary"]["RetentionPeriodHours"], 48, "{summary}");
    assert_eq!(summary["StreamDescriptionSummary"]["OpenShardCount"], 2);
    let (_, tags) = second.json("ListTagsForStream", json!({"StreamName": "kept"})).await;
    assert_eq!(tags["Tags"], json!([{"Key": "owner", "Value": "tier"}]));
    for (shard, old) in &before {
        let end = sealed_end[shard];
        let expected: Vec<_> = old.iter().filter(|(seq, _)| seq_offset(seq) < end).cloned().collect();
        let restored = read_all(&second, "kept", shard).await;
        assert_eq!(restored, expected, "{shard}: every sealed record, same numbers and data");
    }
    // The key that signs iterators is the bucket's: one issued before the disk was lost works.
    let (status, page) = second.json("GetRecords", json!({"ShardIterator": first_iterator, "Limit": 1})).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["Records"][0]["SequenceNumber"].as_str(),
        before["shardId-000000000000"].first().map(|r| r.0.as_str())
    );
    let mut forged = first_iterator.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    second.expect_error("GetRecords", json!({"ShardIterator": forged}), 400, "InvalidArgumentException").await;
    // Restored lazily: the sealed records were read from the bucket, nothing downloaded.
    assert!(second.running.broker.metrics.remote_records.get() > 0);
    let restored_stream = second.running.broker.catalog.get("kept").unwrap();
    assert!(restored_stream.shards().iter().all(|s| s.log.sealed_segments().is_empty()), "no segment downloaded");
    // New writes are numbered after everything the first broker ever acknowledged.
    for i in 0..20 {
        let (status, put) = second
            .json("PutRecord", json!({"StreamName": "kept", "PartitionKey": format!("new{i}"), "Data": b64(b"new")}))
            .await;
        assert_eq!(status, 200, "{put}");
        let shard = put["ShardId"].as_str().unwrap();
        let old_max = before[shard].iter().map(|(s, _)| common::seq_value(s)).max().unwrap();
        let seq = common::seq_value(put["SequenceNumber"].as_str().unwrap());
        assert!(seq > old_max, "no number reused on {shard}");
    }

    // Retention reaches the bucket: 49 hours on, no segment of the 48-hour stream is left.
    let count_segments =
        || walk(objects.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "seg")).count();
    assert!(count_segments() >= 2);
    let now = streamfabric_api::types::Timestamp::now().millis();
    second.running.broker.enforce_retention(now + 47 * 3_600_000);
    second.running.broker.archive.flush().await;
    assert!(count_segments() >= 2, "nothing expires before the retention period");
    second.running.broker.enforce_retention(now + 49 * 3_600_000);
    second.running.broker.archive.flush().await;
    assert_eq!(count_segments(), 0, "expired segments are deleted from the bucket");

    // A deleted stream is not restored.
    second.json("DeleteStream", json!({"StreamName": "kept"})).await;
    for _ in 0..100 {
        if second.running.broker.catalog.get("kept").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    second.running.broker.archive.flush().await;
    let third = common::start_with(small_segments).await;
    let (status, _) = third.json("DescribeStreamSummary", json!({"StreamName": "kept"})).await;
    assert_eq!(status, 400, "deleted streams stay deleted");
}

/// Every file of one stream in the bucket at `objects`.
fn stream_objects(objects: &std::path::Path, stream: &str) -> Vec<std::path::PathBuf> {
    let dir = objects.join("streams").join(stream);
    if dir.exists() { walk(&dir) } else { Vec::new() }
}

async fn put_batches(b: &common::TestBroker, stream: &str, batches: usize) {
    for batch in 0..batches {
        let records: Vec<_> = (0..500)
            .map(|i| json!({"PartitionKey": format!("k{batch}-{i}"), "Data": b64(format!("record {batch}-{i}").as_bytes())}))
            .collect();
        let (status, v) = b.json("PutRecords", json!({"StreamName": stream, "Records": records})).await;
        assert_eq!((status, v["FailedRecordCount"].as_i64()), (200, Some(0)), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_leaves_nothing_in_the_bucket_and_its_name_starts_afresh() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let b = common::start_with(|c| {
        c.object_store = Some(url.clone());
        c.segment_bytes = 16 * 1024;
        c.status_delay = std::time::Duration::from_millis(300);
    })
    .await;
    for name in ["gone", "other"] {
        b.create_stream(name, 2).await;
        put_batches(&b, name, 4).await;
    }
    b.running.broker.archive.flush().await;
    let before = stream_objects(objects.path(), "gone").len();
    assert!(before >= 4, "segments, manifests and the description are in the bucket: {before}");
    let other = stream_objects(objects.path(), "other");

    b.json("DeleteStream", json!({"StreamName": "gone"})).await;
    let (_, summary) = b.json("DescribeStreamSummary", json!({"StreamName": "gone"})).await;
    assert_eq!(summary["StreamDescriptionSummary"]["StreamStatus"], "DELETING");
    b.expect_error("CreateStream", json!({"StreamName": "gone", "ShardCount": 1}), 400, "ResourceInUseException").await;
    for _ in 0..200 {
        if b.running.broker.catalog.get("gone").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    b.expect_error("DescribeStreamSummary", json!({"StreamName": "gone"}), 400, "ResourceNotFoundException").await;
    assert_eq!(
        stream_objects(objects.path(), "gone"),
        Vec::<std::path::PathBuf>::new(),
        "{before} objects were deleted"
    );
    assert_eq!(stream_objects(objects.path(), "other"), other, "another stream's objects are untouched");

    // The name starts afresh: nothing of the deleted stream reads back.
    b.create_stream("gone", 2).await;
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        assert_eq!(read_all(&b, "gone", shard).await, vec![], "{shard} of the new stream is empty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_cut_short_by_a_restart_is_finished_at_the_next_start() {
    let objects = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let on_disk = |status_delay| {
        let (url, data) = (url.clone(), data.path().to_path_buf());
        move |c: &mut streamfabric_broker::BrokerConfig| {
            c.data_dir = data;
            c.object_store = Some(url);
            c.segment_bytes = 16 * 1024;
            c.status_delay = status_delay;
        }
    };
    let first = common::start_with(on_disk(std::time::Duration::from_millis(20))).await;
    first.create_stream("gone", 2).await;
    put_batches(&first, "gone", 4).await;
    assert!(first.running.shutdown(std::time::Duration::from_secs(5)).await);
    // A delay no test waits for: this broker stops while the stream is DELETING.
    let deleting = common::start_with(on_disk(std::time::Duration::from_secs(3600))).await;
    deleting.json("DeleteStream", json!({"StreamName": "gone"})).await;
    deleting.running.broker.archive.flush().await;
    assert!(!stream_objects(objects.path(), "gone").is_empty());
    assert!(deleting.running.shutdown(std::time::Duration::from_secs(5)).await);

    let second = common::start_with(on_disk(std::time::Duration::from_millis(20))).await;
    second.expect_error("DescribeStreamSummary", json!({"StreamName": "gone"}), 400, "ResourceNotFoundException").await;
    assert_eq!(stream_objects(objects.path(), "gone"), Vec::<std::path::PathBuf>::new());
    assert!(!data.path().join("streams").join("gone").exists(), "its files are gone too");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

/// The record offset inside one of our sequence numbers (last 20 digits).
fn seq_offset(seq: &str) -> u64 {
    seq[seq.len() - 20..].parse().unwrap()
}

/// A broker on the object store at `url` whose segments seal every 4 KiB.
async fn small_segments_on(url: &str) -> common::TestBroker {
    common::start_with(|c| {
        c.object_store = Some(url.to_string());
        c.segment_bytes = 4096;
    })
    .await
}

/// 40 records of 300 bytes: enough to seal several 4 KiB segments.
async fn put_40(b: &common::TestBroker, stream: &str) {
    for i in 0..40 {
        let put = json!({"StreamName": stream, "PartitionKey": format!("k{i}"), "Data": b64(&[i as u8; 300])});
        assert_eq!(b.json("PutRecord", put).await.0, 200);
    }
}

fn manifest_owner(
    objects: &std::path::Path,
    stream: &str,
    shard: &str,
) -> impl std::future::Future<Output = (Option<String>, u64)> {
    let url = format!("file://{}", objects.display());
    let (stream, shard) = (stream.to_string(), shard.to_string());
    async move {
        let tier = streamfabric_broker::tier::TierStore::open(&url, &Default::default()).unwrap();
        let (m, _) = tier.manifest(&stream, &shard).unwrap().load().await.unwrap().unwrap();
        (m.owner, m.epoch)
    }
}

/// Shard ownership in the bucket: a broker started on another disk against the same bucket
/// takes the shards; the previous owner is fenced at its next upload and refuses writes to
/// them. Two brokers taking the same shard from the same epoch: exactly one wins, each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_shards_were_taken_stops_writing_them() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let config = |id: &'static str| {
        let url = url.clone();
        move |c: &mut streamfabric_broker::BrokerConfig| {
            c.object_store = Some(url);
            c.segment_bytes = 4096;
            c.broker_id = Some(id.into());
        }
    };
    let a = common::start_with(config("broker-a")).await;
    a.create_stream("owned", 1).await;
    let put = |i: usize| json!({"StreamName": "owned", "PartitionKey": format!("k{i}"), "Data": b64(&[7u8; 300])});
    for i in 0..40 {
        assert_eq!(a.json("PutRecord", put(i)).await.0, 200);
    }
    a.running.broker.archive.flush().await;
    let shard = "shardId-000000000000";
    assert_eq!(manifest_owner(objects.path(), "owned", shard).await, (Some("broker-a".into()), 1));

    // B restores the stream from the bucket and takes its shard.
    let b = common::start_with(config("broker-b")).await;
    assert_eq!(manifest_owner(objects.path(), "owned", shard).await, (Some("broker-b".into()), 2));
    assert_eq!(b.json("PutRecord", put(0)).await.0, 200);

    // A learns at its next upload, then refuses writes to the shard.
    let mut refused = None;
    for i in 0..400 {
        let (status, answer) = a.json("PutRecord", put(i)).await;
        if status != 200 {
            refused = Some((status, answer));
            break;
        }
        a.running.broker.archive.flush().await;
    }
    let (status, answer) = refused.expect("the fenced broker refuses writes");
    assert_eq!((status, answer["__type"].as_str()), (500, Some("InternalFailure")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("owned by another broker"), "{answer}");
    assert_eq!(a.running.broker.metrics.fenced_shards.get(), 1);
    assert_eq!(manifest_owner(objects.path(), "owned", shard).await.0.as_deref(), Some("broker-b"));
    assert_eq!(b.json("PutRecord", put(1)).await.0, 200, "the owner writes on");

    // Races: both take a fresh shard from epoch 0 at once, ten times.
    for round in 0..10 {
        let stream = format!("race-{round}");
        let (ta, tb) = tokio::join!(
            a.running.broker.archive.take(&stream, shard, 0, None),
            b.running.broker.archive.take(&stream, shard, 0, None)
        );
        let winners: Vec<&str> =
            [("broker-a", &ta), ("broker-b", &tb)].iter().filter(|(_, r)| r.is_ok()).map(|(who, _)| *who).collect();
        assert_eq!(winners.len(), 1, "round {round}: {ta:?} {tb:?}");
        let loser = if ta.is_ok() { &tb } else { &ta };
        assert!(matches!(loser, Err(streamfabric_broker::tier::TierError::Conflict { .. })), "{loser:?}");
        assert_eq!(manifest_owner(objects.path(), &stream, shard).await, (Some(winners[0].to_string()), 1));
    }
}

/// Compression per stream: the tag streamfabric.io/compression chooses how the stream's
/// sealed segments are stored (zstd by default); a bad value is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_chooses_its_segment_compression() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let b = small_segments_on(&url).await;
    let tagged = json!({"StreamName": "fast", "ShardCount": 1, "Tags": {"streamfabric.io/compression": "lz4"}});
    assert_eq!(b.json("CreateStream", tagged).await.0, 200);
    common::wait_active(&b, "fast").await;
    b.create_stream("small", 1).await;
    let bad = json!({"StreamName": "small", "Tags": {"streamfabric.io/compression": "gzip"}});
    let msg = b.expect_error("AddTagsToStream", bad, 400, "InvalidArgumentException").await;
    assert!(msg.contains("zstd, lz4 or none"), "{msg}");
    for stream in ["fast", "small"] {
        put_40(&b, stream).await;
    }
    b.running.broker.archive.flush().await;
    let tier = streamfabric_broker::tier::TierStore::open(&url, &Default::default()).unwrap();
    for (stream, expected) in [("fast", "lz4"), ("small", "zstd")] {
        let (m, _) = tier.manifest(stream, "shardId-000000000000").unwrap().load().await.unwrap().unwrap();
        assert!(!m.segments.is_empty(), "{stream} uploaded segments");
        assert!(m.segments.iter().all(|s| s.compression.as_str() == expected), "{stream}: {:?}", m.segments);
    }
}

/// The orphan sweep deletes segment objects no manifest lists once they are an hour old,
/// and keeps listed segments and young strays (an upload in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphan_sweep_deletes_old_unlisted_segment_objects_only() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let b = small_segments_on(&url).await;
    b.create_stream("swept", 1).await;
    put_40(&b, "swept").await;
    b.running.broker.archive.flush().await;
    let segments = objects.path().join("streams/swept/shards/shardId-000000000000/segments");
    let listed = std::fs::read_dir(&segments).unwrap().count();
    assert!(listed > 0);
    let stray = |name: &str, age_secs: u64| {
        let path = segments.join(name);
        std::fs::write(&path, b"left by an interrupted upload").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs)).unwrap();
        path
    };
    let old = stray("99999999999999999990.seg", 2 * 3600);
    let young = stray("99999999999999999991.seg", 60);

    b.running.broker.sweep_orphans();
    b.running.broker.archive.flush().await;
    assert!(!old.exists(), "an old orphan is deleted");
    assert!(young.exists(), "a young one may be an upload in flight");
    assert_eq!(std::fs::read_dir(&segments).unwrap().count(), listed + 1, "listed segments stay");
    assert_eq!(b.running.broker.metrics.segment_orphans_deleted.get(), 1);
}

/// A segment the store keeps refusing (here: another object already at its key) is given up
/// after a few attempts and stays on local disk; the uploads behind it go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_does_not_hold_up_the_others() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let b = small_segments_on(&url).await;
    b.create_stream("blocked", 1).await;
    let segments = objects.path().join("streams/blocked/shards/shardId-000000000000/segments");
    std::fs::create_dir_all(&segments).unwrap();
    std::fs::write(segments.join("00000000000000000000-1.seg"), b"someone else's bytes").unwrap();
    put_40(&b, "blocked").await;
    b.running.broker.archive.flush().await;
    let metrics = &b.running.broker.metrics;
    assert_eq!(metrics.segment_uploads_abandoned.get(), 1, "the first segment is given up");
    assert!(metrics.segment_uploads.get() >= 2, "the later ones are uploaded");
    assert_eq!(metrics.upload_backlog_bytes.get(), 0, "nothing holds writes back");
    let shard = b.running.broker.catalog.get("blocked").unwrap().shard(0).unwrap();
    assert_eq!(shard.log.sealed_segments()[0].base_offset, 0, "it stays on local disk");
}
