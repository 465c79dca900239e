//! Against a real S3-compatible store (MinIO): run by `scripts/e2e-objects`, which starts
//! one and sets STREAMFABRIC_TEST_S3_URL and STREAMFABRIC_TEST_S3_ENDPOINT (credentials in
//! the AWS_* variables). Ignored in `cargo test`, which uses no outside services.

mod common;

use serde_json::json;
use streamfabric_broker::tier::{StoreOptions, TierStore};

fn store() -> (String, String) {
    let url = std::env::var("STREAMFABRIC_TEST_S3_URL").expect("STREAMFABRIC_TEST_S3_URL (see scripts/e2e-objects)");
    let endpoint = std::env::var("STREAMFABRIC_TEST_S3_ENDPOINT").expect("STREAMFABRIC_TEST_S3_ENDPOINT");
    (url, endpoint)
}

/// Segment object keys of a shard, as the bucket lists them.
async fn listed_segments(tier: &TierStore, stream: &str, shard: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let dir = tier.path(&format!("streams/{stream}/shards/{shard}/segments"));
    let mut keys: Vec<String> =
        tier.store().list(Some(&dir)).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
    keys.sort();
    keys
}

/// Retention in the bucket: sealed segments are listed in MinIO; once their records are past
/// the stream's retention, the retention pass removes them from the bucket listing and the
/// manifest. The pass is run for a time 25 h ahead (`enforce_retention(now)` is the broker's
/// own entry point); every store request is real and signed with the real time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MinIO; run by scripts/e2e-objects"]
async fn retention_trims_segments_from_the_bucket_listing() {
    let (url, endpoint) = store();
    let options = StoreOptions { endpoint: Some(endpoint.clone()), ..StoreOptions::default() };
    let b = common::start_with(|c| {
        c.object_store = Some(url.clone());
        c.object_store_endpoint = Some(endpoint.clone());
        c.segment_bytes = 4096;
    })
    .await;
    let stream = format!("retention-{}", std::process::id());
    b.create_stream(&stream, 1).await;
    for i in 0..60 {
        let put = json!({"StreamName": stream, "PartitionKey": format!("k{i}"), "Data": "AAAA".repeat(100)});
        assert_eq!(b.json("PutRecord", put).await.0, 200);
    }
    b.running.broker.archive.flush().await;
    let tier = TierStore::open(&url, &options).unwrap();
    let shard = "shardId-000000000000";
    let before = listed_segments(&tier, &stream, shard).await;
    assert!(before.len() >= 3, "sealed segments are in the bucket: {before:?}");

    // Within retention: nothing goes.
    let now = streamfabric_api::types::Timestamp::now().millis();
    b.running.broker.enforce_retention(now + 23 * 3_600_000);
    b.running.broker.archive.flush().await;
    assert_eq!(listed_segments(&tier, &stream, shard).await, before);

    // Past it: every sealed segment leaves the listing and the manifest.
    b.running.broker.enforce_retention(now + 25 * 3_600_000);
    b.running.broker.archive.flush().await;
    let after = listed_segments(&tier, &stream, shard).await;
    assert!(after.is_empty(), "trimmed from the bucket: {after:?}");
    let (manifest, _) = tier.manifest(&stream, shard).unwrap().load().await.unwrap().unwrap();
    assert!(manifest.segments.is_empty(), "{manifest:?}");
    assert!(manifest.trimmed_before_offset > 0);
    println!("retention: {} segment objects listed, then {} after the pass", before.len(), after.len());
}
