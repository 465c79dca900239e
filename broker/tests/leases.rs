//! The lease operations through the typed client (`streamfabric_api::leases::client`)
//! against an in-process broker.

mod common;

use serde_json::json;
use streamfabric_api::ErrorCode;
use streamfabric_api::leases::client::{ClientError, LeasesClient};

const APP: &str = "orders-app";
const STREAM: &str = "orders";

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Api(e)) => (e.code, e.message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

async fn put(b: &common::TestBroker, key: &str) -> (String, String) {
    let (status, answer) =
        b.json("PutRecord", json!({"StreamName": STREAM, "PartitionKey": key, "Data": "aGVsbG8="})).await;
    assert_eq!(status, 200, "{answer}");
    (answer["ShardId"].as_str().unwrap().to_string(), answer["SequenceNumber"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn workers_share_leases_and_checkpoint_through_the_client() {
    let b = common::start().await;
    b.create_stream(STREAM, 2).await;
    let c = LeasesClient::new(&b.endpoint()).unwrap();

    assert!(c.list_leases(APP, STREAM).await.unwrap().is_empty());
    let w1 = c.sync_leases(APP, STREAM, "w1", None).await.unwrap();
    assert_eq!(w1.created.len(), 2);
    assert_eq!(w1.taken.len(), 2, "alone, w1 takes every lease: {w1:?}");
    // A second worker steals one lease; not two.
    let w2 = c.sync_leases(APP, STREAM, "w2", None).await.unwrap();
    assert_eq!((w2.taken.len(), w2.stolen.len()), (0, 1), "{w2:?}");
    let w1 = c.sync_leases(APP, STREAM, "w1", None).await.unwrap();
    assert_eq!(w1.leases.len(), 1, "w1 renews the lease it kept: {w1:?}");
    let w2 = c.sync_leases(APP, STREAM, "w2", None).await.unwrap();
    assert_eq!((w2.leases.len(), w2.stolen.len()), (1, 0), "balanced now: {w2:?}");
    let all = c.list_leases(APP, STREAM).await.unwrap();
    let mut owners: Vec<_> = all.iter().map(|l| l.lease_owner.clone().unwrap()).collect();
    owners.sort();
    assert_eq!(owners, vec!["w1", "w2"]);

    // Take with a stale counter: LeaseConflictException, nothing changed.
    let lease = w2.leases[0].clone();
    let shard = lease.lease_key.clone();
    let stale = c.take_lease(APP, STREAM, &shard, "w3", lease.lease_counter - 1).await;
    let (err, message) = code(stale);
    assert_eq!(err, ErrorCode::LeaseConflict, "{message}");
    assert!(message.contains(&shard), "{message}");

    // Checkpoint: by the owner with its counter, a number of this shard.
    let (seq_shard, seq) = loop {
        let (s, n) = put(&b, &format!("k{}", rand_suffix())).await;
        if s == shard {
            break (s, n);
        }
    };
    assert_eq!(seq_shard, shard);
    let not_owner = c.checkpoint(APP, STREAM, &shard, "w1", lease.lease_counter, &seq, 0).await;
    assert!(not_owner.unwrap_err().is_conflict());
    let done = c.checkpoint(APP, STREAM, &shard, "w2", lease.lease_counter, &seq, 2).await.unwrap();
    assert_eq!((done.checkpoint.sequence_number.as_str(), done.checkpoint.sub_sequence_number), (seq.as_str(), 2));
    assert_eq!(done.lease_counter, lease.lease_counter + 1);
    let again = c.checkpoint(APP, STREAM, &shard, "w2", lease.lease_counter, &seq, 3).await;
    assert!(again.unwrap_err().is_conflict(), "the old counter is stale after a checkpoint");

    // Positions that do not belong to the shard.
    let other = all.iter().find(|l| l.lease_key != shard).unwrap();
    let (e, m) = code(c.checkpoint(APP, STREAM, &other.lease_key, "w1", other.lease_counter, &seq, 0).await);
    assert_eq!(e, ErrorCode::InvalidArgument, "{m}");
    assert!(m.contains("belongs to shard"), "{m}");
    let (e, m) = code(c.checkpoint(APP, STREAM, &shard, "w2", done.lease_counter, "SHARD_END", 0).await);
    assert_eq!(e, ErrorCode::InvalidArgument, "open shards have no SHARD_END: {m}");
    let (e, m) = code(c.checkpoint(APP, STREAM, &shard, "w2", done.lease_counter, "12x", 0).await);
    assert_eq!(e, ErrorCode::Validation);
    assert!(m.contains("sequenceNumber"), "{m}");
    let unissued = format!("{}99999999", &seq[..seq.len() - 8]);
    let (e, m) = code(c.checkpoint(APP, STREAM, &shard, "w2", done.lease_counter, &unissued, 0).await);
    assert_eq!(e, ErrorCode::InvalidArgument, "{m}");

    // Renew, release, delete.
    let renewed = c.renew_lease(APP, STREAM, &shard, "w2", done.lease_counter).await.unwrap();
    let released = c.release_lease(APP, STREAM, &shard, "w2", renewed.lease_counter).await.unwrap();
    assert_eq!(released.lease_owner, None);
    assert!(c.delete_lease(APP, STREAM, &shard, released.lease_counter + 5).await.unwrap_err().is_conflict());
    c.delete_lease(APP, STREAM, &shard, released.lease_counter).await.unwrap();
    assert_eq!(c.list_leases(APP, STREAM).await.unwrap().len(), 1);
    let (e, _) = code(c.renew_lease(APP, STREAM, &shard, "w2", released.lease_counter).await);
    assert_eq!(e, ErrorCode::ResourceNotFound);

    // Metrics count lease operations by outcome.
    let metrics = admin_get(&b, "/metrics").await;
    assert!(
        metrics.contains(r#"streamfabric_lease_operations_total{operation="TakeLease",outcome="conflict"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"streamfabric_lease_operations_total{operation="SyncLeases.steal",outcome="won"} 1"#));
}

#[tokio::test]
async fn expired_leases_are_taken_after_the_failover_time() {
    let b = common::start().await;
    b.create_stream(STREAM, 2).await;
    let c = LeasesClient::new(&b.endpoint()).unwrap();
    let w1 = c.sync_leases(APP, STREAM, "w1", None).await.unwrap();
    assert_eq!(w1.leases.len(), 2);
    // w2 first sees the leases; w1 stops renewing; with a 1 ms failover they expire.
    let first = c.sync_leases(APP, STREAM, "w2", Some(60_000)).await.unwrap();
    assert!(first.taken.is_empty() && first.stolen.len() == 1, "{first:?}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = c.sync_leases(APP, STREAM, "w2", Some(1)).await.unwrap();
    assert_eq!(second.taken.len(), 1, "w1's remaining lease expired: {second:?}");
    assert_eq!(second.leases.len(), 2);
    let w1_lease = &w1.leases[0];
    let lost = c.renew_lease(APP, STREAM, &w1_lease.lease_key, "w1", w1_lease.lease_counter).await;
    assert!(lost.unwrap_err().is_conflict());
}

#[tokio::test]
async fn inputs_are_checked_and_errors_name_the_member() {
    let b = common::start().await;
    b.create_stream(STREAM, 1).await;
    b.create_stream("other", 1).await;
    let c = LeasesClient::new(&b.endpoint()).unwrap();
    let (e, m) = code(c.list_leases("bad/app", STREAM).await);
    assert_eq!(e, ErrorCode::Validation);
    assert!(m.contains("applicationName"), "{m}");
    let (e, _) = code(c.list_leases(APP, "missing").await);
    assert_eq!(e, ErrorCode::ResourceNotFound);
    let (e, m) = code(c.take_lease(APP, STREAM, "shard-7", "w1", 0).await);
    assert_eq!(e, ErrorCode::Validation);
    assert!(m.contains("shardId"), "{m}");
    let (e, m) = code(c.take_lease(APP, STREAM, "shardId-000000000000", "", 0).await);
    assert_eq!(e, ErrorCode::Validation);
    assert!(m.contains("workerId"), "{m}");
    let (e, _) = code(c.take_lease(APP, STREAM, "shardId-000000000000", "w1", 0).await);
    assert_eq!(e, ErrorCode::ResourceNotFound, "no lease before CreateLeases");
    let created = c.create_leases(APP, STREAM, Some("LATEST")).await.unwrap();
    assert_eq!(created.created, vec!["shardId-000000000000"]);
    assert_eq!(created.leases[0].checkpoint.sequence_number, "LATEST");
    let (e, m) = code(c.create_leases(APP, STREAM, Some("AT_TIMESTAMP")).await);
    assert_eq!(e, ErrorCode::Validation);
    assert!(m.contains("initialPosition"), "{m}");
    // The application is bound to the stream of its leases.
    let (e, m) = code(c.list_leases(APP, "other").await);
    assert_eq!(e, ErrorCode::InvalidArgument, "{m}");
    let (e, m) = code(c.sync_leases(APP, STREAM, "w1", Some(0)).await);
    assert_eq!(e, ErrorCode::Validation);
    assert!(m.contains("failoverTimeMillis"), "{m}");
    // A negative counter, a missing member, an unknown operation (raw requests).
    let (status, answer) = lease_json(
        &b,
        "TakeLease",
        json!({"ApplicationName": APP, "StreamName": STREAM, "ShardId": "shardId-000000000000", "WorkerId": "w"}),
    )
    .await;
    assert_eq!((status, answer["__type"].as_str()), (400, Some("ValidationException")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("expectedLeaseCounter"));
    // CBOR 1.1 bodies are answered in CBOR, like the Kinesis operations.
    let mut body = Vec::new();
    ciborium::into_writer(&json!({"ApplicationName": APP, "StreamName": STREAM}), &mut body).unwrap();
    let (status, content_type, answer) =
        b.raw("StreamfabricLeases_20261129.ListLeases", "application/x-amz-cbor-1.1", body).await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-amz-cbor-1.1"));
    let answer: serde_json::Value = ciborium::from_reader(&answer[..]).unwrap();
    assert_eq!(answer["Leases"][0]["LeaseKey"], "shardId-000000000000", "{answer}");
    let (status, answer) = lease_json(&b, "StealEverything", json!({})).await;
    assert_eq!((status, answer["__type"].as_str()), (400, Some("UnknownOperationException")), "{answer}");
}

async fn lease_json(b: &common::TestBroker, op: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, _, bytes) = b
        .raw(
            &format!("StreamfabricLeases_20261129.{op}"),
            "application/x-amz-json-1.1",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

async fn admin_get(b: &common::TestBroker, path: &str) -> String {
    common::http_get(b.running.admin_addr, path).await.1
}

fn rand_suffix() -> u64 {
    rand::random()
}

/// With real resharding: a split's children get leases but are handed out only once the
/// parent's lease is checkpointed at SHARD_END, which the broker allows only after the split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_a_split_are_leased_after_their_parent_reaches_shard_end() {
    let b = common::start().await;
    b.create_stream(STREAM, 1).await;
    let c = LeasesClient::new(&b.endpoint()).unwrap();
    let parent = "shardId-000000000000";
    let first = c.sync_leases(APP, STREAM, "w1", None).await.unwrap();
    assert_eq!(first.leases.len(), 1);
    let counter = first.leases[0].lease_counter;
    let (e, m) = code(c.checkpoint(APP, STREAM, parent, "w1", counter, "SHARD_END", 0).await);
    assert_eq!(e, ErrorCode::InvalidArgument, "the shard is still open: {m}");

    let split = json!({"StreamName": STREAM, "ShardToSplit": parent, "NewStartingHashKey": "1000"});
    assert_eq!(b.json("SplitShard", split).await.0, 200);
    common::wait_active(&b, STREAM).await;
    let during = c.sync_leases(APP, STREAM, "w1", None).await.unwrap();
    let held: Vec<&str> = during.leases.iter().map(|l| l.lease_key.as_str()).collect();
    assert_eq!(held, [parent], "children wait for their parent: {during:?}");
    let listed = c.list_leases(APP, STREAM).await.unwrap();
    assert_eq!(listed.len(), 3, "the children's leases exist: {listed:?}");

    let counter = during.leases[0].lease_counter;
    c.checkpoint(APP, STREAM, parent, "w1", counter, "SHARD_END", 0).await.unwrap();
    let after = c.sync_leases(APP, STREAM, "w1", None).await.unwrap();
    let mut held: Vec<&str> = after.leases.iter().map(|l| l.lease_key.as_str()).collect();
    held.sort();
    assert_eq!(held, ["shardId-000000000001", "shardId-000000000002"], "{after:?}");
}
