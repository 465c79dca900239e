//! Resharding through the AWS SDK: SplitShard, MergeShards and UpdateShardCount close their
//! parents at an ending sequence number, children record their parents, reads of a closed
//! shard end with ChildShards, writes never stop, and nothing acknowledged is lost or
//! reordered for a partition key.

mod common;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ScalingType, Shard, ShardIteratorType};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use streamfabric_broker::catalog::meta::StreamStatus;
use streamfabric_broker::catalog::reshard;

type Client = aws_sdk_kinesis::Client;

async fn shards(client: &Client, stream: &str) -> Vec<Shard> {
    client.list_shards().stream_name(stream).send().await.unwrap().shards().to_vec()
}

async fn open_count(client: &Client, stream: &str) -> usize {
    shards(client, stream)
        .await
        .iter()
        .filter(|s| s.sequence_number_range().unwrap().ending_sequence_number().is_none())
        .count()
}

/// Every record of a shard from TRIM_HORIZON, and the children named at its end (None if
/// the shard is open: then reading stops at the tip).
async fn read_all(client: &Client, stream: &str, shard: &str) -> (Vec<(String, String, String)>, Option<Vec<String>>) {
    let mut it = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = client.get_records().shard_iterator(&it).send().await.unwrap();
        for r in page.records() {
            let data = String::from_utf8(r.data().as_ref().to_vec()).unwrap();
            out.push((r.sequence_number().to_string(), r.partition_key().unwrap().to_string(), data));
        }
        match page.next_shard_iterator() {
            None => {
                let children = page.child_shards().iter().map(|c| c.shard_id().to_string()).collect();
                return (out, Some(children));
            }
            Some(next) if page.records().is_empty() && page.millis_behind_latest() == Some(0) => {
                let _ = next;
                return (out, None);
            }
            Some(next) => it = next.to_string(),
        }
    }
    panic!("shard {shard} did not drain");
}

async fn wait_active(client: &Client, stream: &str) {
    for _ in 0..3000 {
        let summary = client.describe_stream_summary().stream_name(stream).send().await.unwrap();
        if summary.stream_description_summary().unwrap().stream_status().as_str() == "ACTIVE" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("stream {stream} stayed UPDATING");
}

/// Writers keep putting "key:counter" records for 16 keys while the stream is resharded;
/// returns what each acknowledged.
fn spawn_writers(
    client: Client,
    stream: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, String)>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut counter = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut request = client.put_records().stream_name(stream);
            let mut sent = Vec::new();
            for k in 0..16 {
                let key = format!("key-{k}");
                let data = format!("{key}:{counter}");
                request = request.records(
                    aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                        .partition_key(&key)
                        .data(Blob::new(data.clone()))
                        .build()
                        .unwrap(),
                );
                sent.push((key, data));
            }
            counter += 1;
            let answer = request.send().await.unwrap();
            assert_eq!(answer.failed_record_count(), Some(0), "no record fails during a reshard");
            for ((key, data), result) in sent.into_iter().zip(answer.records()) {
                acked.push((result.sequence_number().unwrap().to_string(), format!("{key}|{data}")));
            }
        }
        acked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_merge_and_rescale_under_load_lose_and_reorder_nothing() {
    let broker = common::start().await;
    let client = broker.sdk();
    let stream = "reshard";
    broker.create_stream(stream, 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(client.clone(), stream, stop.clone());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Split shard 0 at a quarter of the key space.
    let quarter = (u128::MAX / 4).to_string();
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(&quarter)
        .send()
        .await
        .unwrap();
    wait_active(&client, stream).await;
    let after_split = shards(&client, stream).await;
    assert_eq!(after_split.len(), 4);
    let parent = &after_split[0];
    assert!(parent.sequence_number_range().unwrap().ending_sequence_number().is_some(), "the parent is closed");
    for child in &after_split[2..] {
        assert_eq!(child.parent_shard_id(), Some("shardId-000000000000"));
    }
    assert_eq!(after_split[3].hash_key_range().unwrap().starting_hash_key(), quarter);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Merge the two children back.
    client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge("shardId-000000000002")
        .adjacent_shard_to_merge("shardId-000000000003")
        .send()
        .await
        .unwrap();
    wait_active(&client, stream).await;
    let merged = shards(&client, stream).await;
    let child = merged.last().unwrap();
    assert_eq!(child.shard_id(), "shardId-000000000004");
    assert_eq!(
        (child.parent_shard_id(), child.adjacent_parent_shard_id()),
        (Some("shardId-000000000002"), Some("shardId-000000000003"))
    );
    assert_eq!(child.hash_key_range().unwrap().starting_hash_key(), "0");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Rescale 2 -> 3 -> 6 -> 3 open shards.
    for target in [3, 6, 3] {
        let answer = client
            .update_shard_count()
            .stream_name(stream)
            .target_shard_count(target)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.target_shard_count(), Some(target));
        wait_active(&client, stream).await;
        assert_eq!(open_count(&client, stream).await, target as usize);
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = writers.await.unwrap();
    assert!(acked.len() > 1000, "writers made progress: {}", acked.len());

    // The open shards' ranges are uniform again and tile the key space.
    let all = shards(&client, stream).await;
    let mut open: Vec<(u128, u128)> = all
        .iter()
        .filter(|s| s.sequence_number_range().unwrap().ending_sequence_number().is_none())
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (r.starting_hash_key().parse().unwrap(), r.ending_hash_key().parse().unwrap())
        })
        .collect();
    open.sort();
    let uniform: Vec<(u128, u128)> =
        streamfabric_api::hashkey::HashRange::uniform(3).iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(open, uniform);

    // Read every shard: closed ones end with their children, per the listing.
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    let mut per_shard: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for s in &all {
        let (records, children) = read_all(&client, stream, s.shard_id()).await;
        let closed = s.sequence_number_range().unwrap().ending_sequence_number();
        match (closed, children) {
            (Some(end), Some(children)) => {
                let expected: BTreeSet<String> = all
                    .iter()
                    .filter(|c| {
                        c.parent_shard_id() == Some(s.shard_id()) || c.adjacent_parent_shard_id() == Some(s.shard_id())
                    })
                    .map(|c| c.shard_id().to_string())
                    .collect();
                assert_eq!(children.into_iter().collect::<BTreeSet<_>>(), expected, "children of {}", s.shard_id());
                if let Some(last) = records.last() {
                    assert!(common::seq_value(&last.0) <= common::seq_value(end), "nothing past the end");
                }
            }
            (None, None) => {}
            (closed, children) => panic!("{}: closed {closed:?} but children {children:?}", s.shard_id()),
        }
        for (seq, key, data) in &records {
            assert!(stored.insert(seq.clone(), format!("{key}|{data}")).is_none(), "{seq} read twice");
        }
        per_shard.insert(s.shard_id().to_string(), records);
    }
    for (seq, record) in &acked {
        assert_eq!(stored.get(seq), Some(record), "acknowledged {seq} reads back");
    }
    assert_eq!(stored.len(), acked.len(), "nothing stored that was not acknowledged");

    // Per key, a consumer that finishes parents before children sees counters in order.
    let parents: BTreeMap<String, Vec<String>> = all
        .iter()
        .map(|s| {
            (
                s.shard_id().to_string(),
                s.parent_shard_id().into_iter().chain(s.adjacent_parent_shard_id()).map(String::from).collect(),
            )
        })
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    while done.len() < all.len() {
        let ready: Vec<String> = parents
            .iter()
            .filter(|(s, ps)| !done.contains(*s) && ps.iter().all(|p| done.contains(p)))
            .map(|(s, _)| s.clone())
            .collect();
        assert!(!ready.is_empty(), "the lineage is a DAG");
        // Siblings hold disjoint keys, so their relative order does not matter.
        for shard in ready {
            for (_, key, data) in &per_shard[&shard] {
                let counter: u64 = data.rsplit(':').next().unwrap().parse().unwrap();
                if let Some(prev) = last.insert(key.clone(), counter) {
                    assert!(counter > prev, "{key}: {counter} after {prev} (shard {shard})");
                }
            }
            done.insert(shard);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reshard_requests_get_the_aws_errors_and_change_nothing() {
    let broker = common::start_with(|c| c.status_delay = std::time::Duration::from_millis(300)).await;
    broker.create_stream("r", 4).await;
    let base = serde_json::json!({"StreamName": "r"});
    let with = |extra: serde_json::Value| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    let msg = broker
        .expect_error(
            "UpdateShardCount",
            with(serde_json::json!({"TargetShardCount": 9, "ScalingType": "UNIFORM_SCALING"})),
            400,
            "LimitExceededException",
        )
        .await;
    assert!(msg.contains("double or halve"), "{msg}");
    broker
        .expect_error(
            "UpdateShardCount",
            with(serde_json::json!({"TargetShardCount": 1, "ScalingType": "UNIFORM_SCALING"})),
            400,
            "LimitExceededException",
        )
        .await;
    let msg = broker
        .expect_error(
            "UpdateShardCount",
            with(serde_json::json!({"TargetShardCount": 3, "ScalingType": "FAST"})),
            400,
            "ValidationException",
        )
        .await;
    assert!(msg.contains("scalingType"), "{msg}");
    broker
        .expect_error(
            "UpdateShardCount",
            with(serde_json::json!({"ScalingType": "UNIFORM_SCALING"})),
            400,
            "ValidationException",
        )
        .await;
    broker
        .expect_error(
            "UpdateShardCount",
            with(serde_json::json!({"TargetShardCount": 0, "ScalingType": "UNIFORM_SCALING"})),
            400,
            "ValidationException",
        )
        .await;
    let msg = broker
        .expect_error(
            "SplitShard",
            with(serde_json::json!({"ShardToSplit": "shardId-000000000001", "NewStartingHashKey": "5"})),
            400,
            "InvalidArgumentException",
        )
        .await;
    assert!(msg.contains("NewStartingHashKey"), "{msg}");
    broker
        .expect_error(
            "SplitShard",
            with(serde_json::json!({"ShardToSplit": "shardId-000000000001", "NewStartingHashKey": "-5"})),
            400,
            "ValidationException",
        )
        .await;
    broker
        .expect_error(
            "SplitShard",
            with(serde_json::json!({"ShardToSplit": "shardId-000000000009", "NewStartingHashKey": "5"})),
            400,
            "ResourceNotFoundException",
        )
        .await;
    broker
        .expect_error("SplitShard", with(serde_json::json!({"NewStartingHashKey": "5"})), 400, "ValidationException")
        .await;
    let msg = broker.expect_error("MergeShards", with(serde_json::json!({"ShardToMerge": "shardId-000000000000", "AdjacentShardToMerge": "shardId-000000000002"})), 400, "InvalidArgumentException").await;
    assert!(msg.contains("not adjacent"), "{msg}");
    let limited = common::start_with(|c| c.shard_limit = 5).await;
    limited.create_stream("l", 4).await;
    limited
        .expect_error(
            "UpdateShardCount",
            serde_json::json!({"StreamName": "l", "TargetShardCount": 6, "ScalingType": "UNIFORM_SCALING"}),
            400,
            "LimitExceededException",
        )
        .await;

    // Nothing changed so far; a valid split makes the stream UPDATING, and a second reshard
    // meanwhile is refused.
    let (_, listed) = broker.json("ListShards", base.clone()).await;
    assert_eq!(listed["Shards"].as_array().unwrap().len(), 4);
    let (status, answer) = broker.json("MergeShards", with(serde_json::json!({"ShardToMerge": "shardId-000000000000", "AdjacentShardToMerge": "shardId-000000000001"}))).await;
    assert_eq!(status, 200, "{answer}");
    let msg = broker.expect_error("SplitShard", with(serde_json::json!({"ShardToSplit": "shardId-000000000002", "NewStartingHashKey": (u128::MAX - 5).to_string()})), 400, "ResourceInUseException").await;
    assert!(msg.contains("UPDATING"), "{msg}");
    broker.expect_error("DeleteStream", base.clone(), 400, "ResourceInUseException").await;
    common::wait_active(&broker, "r").await;
    let (_, listed) = broker.json("ListShards", base.clone()).await;
    assert_eq!(listed["Shards"].as_array().unwrap().len(), 5);
    let msg = broker
        .expect_error(
            "SplitShard",
            with(serde_json::json!({"ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "5"})),
            400,
            "InvalidArgumentException",
        )
        .await;
    assert!(msg.contains("closed"), "{msg}");
}

/// A reshard accepted (UPDATING, plan persisted) but not applied before the process stopped
/// is applied when the broker opens the data directory again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_reshard_is_applied_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = streamfabric_broker::BrokerConfig::for_dir(dir.path());
    {
        let broker = streamfabric_broker::Broker::open(config.clone()).await.unwrap();
        let create = serde_json::to_vec(&serde_json::json!({"StreamName": "p", "ShardCount": 2})).unwrap();
        broker
            .call(streamfabric_api::model::Operation::CreateStream, streamfabric_api::codec::Format::Json, &create)
            .await
            .unwrap();
        let stream = broker.catalog.get("p").unwrap();
        stream
            .update_meta(|m| {
                m.status = StreamStatus::Updating;
                m.pending_reshard = reshard::uniform_plan(m, 4);
                Ok(())
            })
            .unwrap();
    }
    let broker = streamfabric_broker::Broker::open(config).await.unwrap();
    let meta = broker.catalog.get("p").unwrap().meta();
    assert_eq!(meta.status, StreamStatus::Active);
    assert!(meta.pending_reshard.is_empty());
    assert_eq!(meta.open_shard_count(), 4);
    assert_eq!(meta.shards.len(), 6);
}

/// Closed shards leave the listing once the retention period has passed since they closed;
/// their files go, and the children keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_shards_past_retention_are_removed() {
    let broker = common::start().await;
    broker.create_stream("x", 1).await;
    let (status, _) =
        broker.json("PutRecord", serde_json::json!({"StreamName": "x", "PartitionKey": "a", "Data": "AAAA"})).await;
    assert_eq!(status, 200);
    let split =
        serde_json::json!({"StreamName": "x", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "12345"});
    assert_eq!(broker.json("SplitShard", split).await.0, 200);
    common::wait_active(&broker, "x").await;
    let parent_dir = broker.dir.path().join("streams/x/shards/shardId-000000000000");
    assert!(parent_dir.exists(), "{}", parent_dir.display());

    let now = streamfabric_api::types::Timestamp::now().millis();
    broker.running.broker.enforce_retention(now + 23 * 3_600_000);
    let (_, listed) = broker.json("ListShards", serde_json::json!({"StreamName": "x"})).await;
    assert_eq!(listed["Shards"].as_array().unwrap().len(), 3, "within retention: still listed");

    broker.running.broker.enforce_retention(now + 25 * 3_600_000);
    let (_, listed) = broker.json("ListShards", serde_json::json!({"StreamName": "x"})).await;
    let ids: Vec<&str> = listed["Shards"].as_array().unwrap().iter().map(|s| s["ShardId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["shardId-000000000001", "shardId-000000000002"]);
    assert!(!parent_dir.exists(), "the parent's files are gone");
    broker
        .expect_error(
            "GetShardIterator",
            serde_json::json!({"StreamName": "x", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"}),
            400,
            "ResourceNotFoundException",
        )
        .await;
    let (status, put) =
        broker.json("PutRecord", serde_json::json!({"StreamName": "x", "PartitionKey": "a", "Data": "AAAA"})).await;
    assert_eq!(status, 200, "{put}");
}

/// ListShards' filters after reshards, as the KCL reads them: AT_TRIM_HORIZON gives the
/// shards open at the trim horizon (here the first ones: every shard is in retention),
/// AT_LATEST the open ones, AT_TIMESTAMP those open then; each set tiles the hash key
/// space. FROM_TRIM_HORIZON gives all, FROM_TIMESTAMP all but those closed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_filters_after_reshards_give_whole_hash_key_spaces() {
    let b = common::start().await;
    let client = b.sdk();
    b.create_stream("tree", 4).await;
    wait_active(&client, "tree").await;
    let mut between = None;
    for target in [8, 5] {
        if target == 5 {
            // A moment when the 8 were open and no other.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            between = Some(aws_sdk_kinesis::primitives::DateTime::from_millis(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
            ));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        client
            .update_shard_count()
            .stream_name("tree")
            .target_shard_count(target)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .unwrap();
        wait_active(&client, "tree").await;
    }
    let filtered_at = |kind: &'static str, at: Option<aws_sdk_kinesis::primitives::DateTime>| {
        let client = client.clone();
        async move {
            let filter =
                aws_sdk_kinesis::types::ShardFilter::builder().r#type(kind.into()).set_timestamp(at).build().unwrap();
            let out = client.list_shards().stream_name("tree").shard_filter(filter).send().await.unwrap();
            out.shards().to_vec()
        }
    };
    let filtered = |kind: &'static str| filtered_at(kind, None);
    let ids = |shards: &[Shard]| shards.iter().map(|s| s.shard_id().to_string()).collect::<Vec<_>>();
    let all = filtered("FROM_TRIM_HORIZON").await;
    assert_eq!(ids(&all), ids(&shards(&client, "tree").await));
    assert!(all.len() > 8, "{} shards after two reshards", all.len());
    let roots = filtered("AT_TRIM_HORIZON").await;
    let first: Vec<String> = (0..4).map(|i| format!("shardId-{i:012}")).collect();
    assert_eq!(ids(&roots), first, "the shards open at the trim horizon");
    let open = filtered("AT_LATEST").await;
    assert_eq!(open.len(), 5);
    let then = filtered_at("AT_TIMESTAMP", between).await;
    assert_eq!(then.len(), 8, "the shards open between the reshards: {:?}", ids(&then));
    let since = filtered_at("FROM_TIMESTAMP", between).await;
    let since_ids = ids(&since);
    assert!(ids(&then).iter().chain(&ids(&open)).all(|id| since_ids.contains(id)), "{since_ids:?}");
    assert!(first.iter().all(|id| !since_ids.contains(id)), "none closed before: {since_ids:?}");
    for (what, set) in [("AT_TRIM_HORIZON", &roots), ("AT_LATEST", &open), ("AT_TIMESTAMP", &then)] {
        let mut ranges: Vec<(u128, u128)> = set
            .iter()
            .map(|s| {
                let r = s.hash_key_range().unwrap();
                (r.starting_hash_key().parse().unwrap(), r.ending_hash_key().parse().unwrap())
            })
            .collect();
        ranges.sort();
        assert_eq!(ranges[0].0, 0, "{what}");
        assert_eq!(ranges.last().unwrap().1, u128::MAX, "{what}");
        assert!(ranges.windows(2).all(|w| w[0].1 + 1 == w[1].0), "{what}: a hole or an overlap in {ranges:?}");
    }
}
