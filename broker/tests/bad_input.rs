//! Bad input gets AWS's error code, HTTP status and a message naming the member and the
//! limit; the broker keeps serving and what it stored is unchanged.

mod common;

use serde_json::{Value, json};
use streamfabric_broker::tokens::IteratorToken;

const STREAM: &str = "bad-input";

async fn fingerprint(b: &common::TestBroker) -> Vec<(u64, u64)> {
    let stream = b.running.broker.catalog.get(STREAM).unwrap();
    stream.shards().iter().map(|s| (s.log.bounds().start_offset, s.log.bounds().end_offset)).collect()
}

async fn iterator(b: &common::TestBroker, shard: &str) -> String {
    let (status, v) = b
        .json("GetShardIterator", json!({"StreamName": STREAM, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}))
        .await;
    assert_eq!(status, 200, "{v}");
    v["ShardIterator"].as_str().unwrap().to_string()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_aws_codes_and_loses_nothing() {
    let b = common::start().await;
    b.create_stream(STREAM, 2).await;
    let (status, put) =
        b.json("PutRecord", json!({"StreamName": STREAM, "PartitionKey": "k", "Data": b64(b"kept")})).await;
    assert_eq!(status, 200);
    let kept_seq = put["SequenceNumber"].as_str().unwrap().to_string();
    let kept_shard = put["ShardId"].as_str().unwrap().to_string();
    let before = fingerprint(&b).await;

    // Bodies that do not parse, and operations that do not exist.
    let (status, _, body) =
        b.raw("Kinesis_20131202.PutRecord", "application/x-amz-json-1.1", b"{not json".to_vec()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, v["__type"].as_str().unwrap()), (400, "SerializationException"));
    let (status, ct, body) =
        b.raw("Kinesis_20131202.PutRecord", "application/x-amz-cbor-1.1", vec![0xff, 0x00, 0x13]).await;
    assert_eq!((status, ct.as_str()), (400, "application/x-amz-cbor-1.1"));
    let v: ciborium::Value = ciborium::from_reader(body.as_slice()).unwrap();
    assert!(format!("{v:?}").contains("SerializationException"), "{v:?}");
    let (status, _, body) = b.raw("Kinesis_20131202.Frobnicate", "application/x-amz-json-1.1", b"{}".to_vec()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, v["__type"].as_str().unwrap()), (400, "UnknownOperationException"));
    assert!(v["message"].as_str().unwrap().contains("Frobnicate"));
    // A put of another content type (or none) is not a Kinesis request: AWS answers 404.
    let put = br#"{"StreamName":"bad-input","PartitionKey":"k","Data":"AA=="}"#.to_vec();
    for content_type in ["text/plain", "application/json", ""] {
        let (status, _, body) = b.raw("Kinesis_20131202.PutRecord", content_type, put.clone()).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, v["__type"].as_str().unwrap()), (404, "UnknownOperationException"), "{content_type:?}");
        assert!(v["message"].as_str().unwrap().contains("Content-Type"), "{v}");
    }
    let (status, _, _) =
        b.raw("Kinesis_20131202.DescribeLimits", "application/x-amz-json-1.1; charset=utf-8", b"{}".to_vec()).await;
    assert_eq!(status, 200, "parameters of the media type are allowed");
    let msg = b
        .expect_error(
            "PutRecord",
            json!({"StreamName": STREAM, "PartitionKey": "k", "Data": "***"}),
            400,
            "SerializationException",
        )
        .await;
    assert!(msg.contains("base64"), "{msg}");

    // Missing and oversized members.
    let msg =
        b.expect_error("PutRecord", json!({"StreamName": STREAM, "Data": b64(b"x")}), 400, "ValidationException").await;
    assert!(msg.contains("partitionKey") && msg.contains("null"), "{msg}");
    let msg = b
        .expect_error(
            "PutRecord",
            json!({"StreamName": STREAM, "PartitionKey": "k".repeat(257), "Data": b64(b"x")}),
            400,
            "ValidationException",
        )
        .await;
    assert!(msg.contains("partitionKey") && msg.contains("256"), "{msg}");
    let msg = b
        .expect_error(
            "PutRecord",
            json!({"StreamName": STREAM, "PartitionKey": "k", "Data": b64(&vec![7u8; 1024 * 1024 + 1])}),
            400,
            "ValidationException",
        )
        .await;
    assert!(msg.contains("data") && msg.contains("1048576"), "{msg}");
    let too_many: Vec<Value> = (0..501).map(|i| json!({"PartitionKey": format!("k{i}"), "Data": b64(b"x")})).collect();
    let msg = b
        .expect_error("PutRecords", json!({"StreamName": STREAM, "Records": too_many}), 400, "ValidationException")
        .await;
    assert!(msg.contains("records") && msg.contains("500"), "{msg}");
    let big: Vec<Value> =
        (0..6).map(|i| json!({"PartitionKey": format!("k{i}"), "Data": b64(&vec![1u8; 1024 * 1024 - 10])})).collect();
    let msg = b
        .expect_error("PutRecords", json!({"StreamName": STREAM, "Records": big}), 400, "InvalidArgumentException")
        .await;
    assert!(msg.contains("5242880"), "{msg}");
    // One bad entry fails the whole request: nothing of it is stored.
    let mixed = json!({"StreamName": STREAM, "Records": [
        {"PartitionKey": "good", "Data": b64(b"x")},
        {"PartitionKey": "", "Data": b64(b"x")}]});
    let msg = b.expect_error("PutRecords", mixed, 400, "ValidationException").await;
    assert!(msg.contains("records.2.member.partitionKey"), "{msg}");
    let msg = b
        .expect_error(
            "PutRecord",
            json!({"StreamName": STREAM, "PartitionKey": "k", "Data": "", "ExplicitHashKey": "12x"}),
            400,
            "ValidationException",
        )
        .await;
    assert!(msg.contains("explicitHashKey"), "{msg}");
    let msg = b.expect_error("PutRecord", json!({"StreamName": STREAM, "PartitionKey": "k", "Data": "", "ExplicitHashKey": "340282366920938463463374607431768211456"}), 400, "InvalidArgumentException").await;
    assert!(msg.contains("2^128-1"), "{msg}");

    // Retention out of range; unknown streams.
    for (hours, code) in
        [(23, "InvalidArgumentException"), (8761, "InvalidArgumentException"), (0, "ValidationException")]
    {
        let msg = b
            .expect_error(
                "IncreaseStreamRetentionPeriod",
                json!({"StreamName": STREAM, "RetentionPeriodHours": hours}),
                400,
                code,
            )
            .await;
        assert!(msg.contains(&hours.to_string()) || msg.contains("retentionPeriodHours"), "{msg}");
    }
    b.expect_error(
        "DecreaseStreamRetentionPeriod",
        json!({"StreamName": STREAM, "RetentionPeriodHours": 48}),
        400,
        "InvalidArgumentException",
    )
    .await;
    b.expect_error(
        "PutRecord",
        json!({"StreamName": "nope", "PartitionKey": "k", "Data": ""}),
        400,
        "ResourceNotFoundException",
    )
    .await;
    b.expect_error("CreateStream", json!({"StreamName": STREAM, "ShardCount": 1}), 400, "ResourceInUseException").await;
    let msg = b
        .expect_error("CreateStream", json!({"StreamName": "bad name!", "ShardCount": 1}), 400, "ValidationException")
        .await;
    assert!(msg.contains("streamName"), "{msg}");

    // Iterators: forged, expired, of another stream, and sequence numbers of another shard.
    let it = iterator(&b, &kept_shard).await;
    let mut forged = it.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let msg = b
        .expect_error(
            "GetRecords",
            json!({"ShardIterator": String::from_utf8(forged).unwrap()}),
            400,
            "InvalidArgumentException",
        )
        .await;
    assert!(msg.contains("ShardIterator"), "{msg}");
    let stream = b.running.broker.catalog.get(STREAM).unwrap();
    let old = b.running.broker.signer.iterator(&IteratorToken {
        stream: STREAM.into(),
        incarnation: stream.incarnation,
        shard_index: 0,
        position: 0,
        issued_ms: streamfabric_api::types::Timestamp::now().millis() - 301_000,
    });
    b.expect_error("GetRecords", json!({"ShardIterator": old}), 400, "ExpiredIteratorException").await;
    b.create_stream("other", 1).await;
    let msg = b
        .expect_error(
            "GetRecords",
            json!({"ShardIterator": it, "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/other"}),
            400,
            "InvalidArgumentException",
        )
        .await;
    assert!(msg.contains(STREAM), "{msg}");
    let other_shard = if kept_shard.ends_with('0') { "shardId-000000000001" } else { "shardId-000000000000" };
    let msg = b.expect_error("GetShardIterator", json!({"StreamName": STREAM, "ShardId": other_shard, "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": kept_seq}), 400, "InvalidArgumentException").await;
    assert!(msg.contains(&kept_shard), "{msg}");
    b.expect_error("GetShardIterator", json!({"StreamName": STREAM, "ShardId": kept_shard, "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": "12"}), 400, "InvalidArgumentException").await;
    b.expect_error(
        "GetShardIterator",
        json!({"StreamName": STREAM, "ShardId": kept_shard, "ShardIteratorType": "SOMEWHERE"}),
        400,
        "ValidationException",
    )
    .await;
    b.expect_error(
        "GetRecords",
        json!({"ShardIterator": iterator(&b, &kept_shard).await, "Limit": 10001}),
        400,
        "ValidationException",
    )
    .await;
    b.expect_error("ListShards", json!({"StreamName": STREAM, "NextToken": "abc"}), 400, "InvalidArgumentException")
        .await;

    // Nothing changed, and the broker still serves.
    assert_eq!(fingerprint(&b).await, before);
    let (status, v) = b.json("GetRecords", json!({"ShardIterator": iterator(&b, &kept_shard).await})).await;
    assert_eq!(status, 200);
    assert_eq!(v["Records"].as_array().unwrap().len(), 1);
    assert_eq!(v["Records"][0]["SequenceNumber"], kept_seq.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbor_requests_round_trip_as_the_java_sdk_sends_them() {
    use ciborium::Value as C;
    let b = common::start().await;
    b.create_stream("cbor", 1).await;
    let cbor = |entries: Vec<(&str, C)>| {
        let mut out = Vec::new();
        ciborium::into_writer(&C::Map(entries.into_iter().map(|(k, v)| (C::Text(k.into()), v)).collect()), &mut out)
            .unwrap();
        out
    };
    let field = |v: &C, name: &str| -> C {
        v.as_map().unwrap().iter().find(|(k, _)| k.as_text() == Some(name)).map(|(_, v)| v.clone()).unwrap_or(C::Null)
    };
    let post = |op: &'static str, body: Vec<u8>| {
        let addr = b.running.api_addr;
        async move {
            let (status, ct, body) =
                common::raw_post(addr, &format!("Kinesis_20131202.{op}"), "application/x-amz-cbor-1.1", body).await;
            assert_eq!(ct, "application/x-amz-cbor-1.1");
            (status, ciborium::from_reader::<C, _>(body.as_slice()).unwrap())
        }
    };
    let data: Vec<u8> = (0..=255u8).collect();
    let (status, put) = post(
        "PutRecord",
        cbor(vec![
            ("StreamName", C::Text("cbor".into())),
            ("PartitionKey", C::Text("key".into())),
            ("Data", C::Bytes(data.clone())),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{put:?}");
    let seq = field(&put, "SequenceNumber");
    let (_, it) = post(
        "GetShardIterator",
        cbor(vec![
            ("StreamName", C::Text("cbor".into())),
            ("ShardId", C::Text("shardId-000000000000".into())),
            ("ShardIteratorType", C::Text("AT_TIMESTAMP".into())),
            // The Java SDK sends timestamps as epoch milliseconds.
            (
                "Timestamp",
                C::Tag(1, Box::new(C::Integer((streamfabric_api::types::Timestamp::now().millis() - 60_000).into()))),
            ),
        ]),
    )
    .await;
    let (status, got) = post("GetRecords", cbor(vec![("ShardIterator", field(&it, "ShardIterator"))])).await;
    assert_eq!(status, 200, "{got:?}");
    let records = field(&got, "Records");
    let record = &records.as_array().unwrap()[0];
    assert_eq!(field(record, "Data"), C::Bytes(data));
    assert_eq!(field(record, "SequenceNumber"), seq);
    assert_eq!(field(record, "PartitionKey"), C::Text("key".into()));
    let arrival = i128::from(field(record, "ApproximateArrivalTimestamp").as_integer().unwrap());
    let now = streamfabric_api::types::Timestamp::now().millis() as i128;
    assert!((now - 60_000..=now).contains(&arrival), "arrival in epoch milliseconds: {arrival}");
}

async fn read_retained(b: &common::TestBroker) -> usize {
    let (_, it) = b
        .json(
            "GetShardIterator",
            json!({"StreamName": "retained", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await;
    let (_, v) = b.json("GetRecords", json!({"ShardIterator": it["ShardIterator"]})).await;
    v["Records"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_records_from_trim_horizon() {
    let b = common::start().await;
    b.create_stream("retained", 1).await;
    for i in 0..10 {
        b.json("PutRecord", json!({"StreamName": "retained", "PartitionKey": format!("k{i}"), "Data": b64(b"old")}))
            .await;
    }
    assert_eq!(read_retained(&b).await, 10);
    // 23 hours on, nothing has expired; 25 hours on, everything has.
    let now = streamfabric_api::types::Timestamp::now().millis();
    b.running.broker.enforce_retention(now + 23 * 3_600_000);
    assert_eq!(read_retained(&b).await, 10);
    b.running.broker.enforce_retention(now + 25 * 3_600_000);
    assert_eq!(read_retained(&b).await, 0);
    // New records are still accepted and read.
    b.json("PutRecord", json!({"StreamName": "retained", "PartitionKey": "k", "Data": b64(b"new")})).await;
    assert_eq!(read_retained(&b).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_limits_when_enforced_refuse_the_excess() {
    let b = common::start_with(|c| c.enforce_shard_limits = true).await;
    b.create_stream("limited", 1).await;
    // 1,000 records/s per shard: three quick batches of 500 cannot all fit.
    let mut failed = 0;
    let mut stored = 0;
    for round in 0..3 {
        let records: Vec<Value> =
            (0..500).map(|i| json!({"PartitionKey": format!("k{round}-{i}"), "Data": b64(&[1u8; 100])})).collect();
        let (status, v) = b.json("PutRecords", json!({"StreamName": "limited", "Records": records})).await;
        assert_eq!(status, 200, "{v}");
        for r in v["Records"].as_array().unwrap() {
            match r["ErrorCode"].as_str() {
                Some(code) => {
                    assert_eq!(code, "ProvisionedThroughputExceededException");
                    assert!(r["ErrorMessage"].as_str().unwrap().contains("shardId-000000000000"));
                    assert!(r["SequenceNumber"].is_null());
                    failed += 1;
                }
                None => stored += 1,
            }
        }
        assert_eq!(
            v["FailedRecordCount"],
            v["Records"].as_array().unwrap().iter().filter(|r| !r["ErrorCode"].is_null()).count()
        );
    }
    assert!(failed > 0 && stored >= 1000, "failed {failed}, stored {stored}");
    let shard = b.running.broker.catalog.get("limited").unwrap().shard(0).unwrap().clone();
    assert_eq!(shard.log.bounds().end_offset, stored as u64, "refused records are not stored");
    // 5 GetRecords calls/s per shard.
    let it = {
        let (_, v) = b
            .json(
                "GetShardIterator",
                json!({"StreamName": "limited", "ShardId": "shardId-000000000000", "ShardIteratorType": "LATEST"}),
            )
            .await;
        v["ShardIterator"].as_str().unwrap().to_string()
    };
    let mut throttled = 0;
    for _ in 0..8 {
        let (status, v) = b.json("GetRecords", json!({"ShardIterator": it})).await;
        if status == 400 {
            assert_eq!(v["__type"], "ProvisionedThroughputExceededException");
            throttled += 1;
        }
    }
    assert!(throttled >= 2, "{throttled} of 8 calls throttled");
}

/// The tag streamfabric.io/paused=true (how the operator carries spec.paused) stops writes
/// with ResourceInUseException; reads go on; removing it resumes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_stream_refuses_writes_and_serves_reads() {
    let broker = common::start().await;
    broker.create_stream("p", 1).await;
    let put = json!({"StreamName": "p", "PartitionKey": "a", "Data": "AAAA"});
    assert_eq!(broker.json("PutRecord", put.clone()).await.0, 200);
    let tag = json!({"StreamName": "p", "Tags": {"streamfabric.io/paused": "true"}});
    assert_eq!(broker.json("AddTagsToStream", tag).await.0, 200);

    let msg = broker.expect_error("PutRecord", put.clone(), 400, "ResourceInUseException").await;
    assert!(msg.contains("paused"), "{msg}");
    let batch = json!({"StreamName": "p", "Records": [{"PartitionKey": "b", "Data": "AAAA"}]});
    broker.expect_error("PutRecords", batch, 400, "ResourceInUseException").await;
    let (_, it) = broker
        .json(
            "GetShardIterator",
            json!({"StreamName": "p", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await;
    let (status, records) = broker.json("GetRecords", json!({"ShardIterator": it["ShardIterator"]})).await;
    assert_eq!(status, 200);
    assert_eq!(records["Records"].as_array().unwrap().len(), 1, "reads go on, and nothing refused was stored");

    let untag = json!({"StreamName": "p", "TagKeys": ["streamfabric.io/paused"]});
    assert_eq!(broker.json("RemoveTagsFromStream", untag).await.0, 200);
    let (status, answer) = broker.json("PutRecord", put).await;
    assert_eq!(status, 200, "{answer}");
}
