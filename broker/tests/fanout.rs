//! SubscribeToShard through the AWS SDK (and raw CBOR, as the Java SDK sends it): records
//! pushed as they are put, a subscription renewed from its ContinuationSequenceNumber after
//! its lifetime (shortened here) with nothing lost or repeated, an empty shard's continuation
//! that starts at its first record, a second subscription refused within 5 s and taking over
//! after, a closed shard's end with its children, AWS's errors for bad requests, per-consumer
//! metrics, and a broker that stops without waiting for its subscriptions.

mod common;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Events = aws_sdk_kinesis::primitives::event_stream::EventReceiver<
    SubscribeToShardEventStream,
    aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
>;

async fn subscribe(
    k: &aws_sdk_kinesis::Client,
    consumer: &str,
    shard: &str,
    kind: ShardIteratorType,
    sequence_number: Option<&str>,
) -> Result<Events, String> {
    let position = StartingPosition::builder().r#type(kind).set_sequence_number(sequence_number.map(String::from));
    let answer =
        k.subscribe_to_shard().consumer_arn(consumer).shard_id(shard).starting_position(position.build().unwrap());
    match answer.send().await {
        Ok(out) => Ok(out.event_stream),
        Err(e) => Err(e.into_service_error().meta().code().unwrap_or("no code").to_string()),
    }
}

/// The next SubscribeToShardEvent; None once the stream ended.
async fn next_event(events: &mut Events) -> Option<aws_sdk_kinesis::types::SubscribeToShardEvent> {
    let event = tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("an event within 30 s");
    match event.expect("no error in the stream")? {
        SubscribeToShardEventStream::SubscribeToShardEvent(e) => Some(e),
        other => panic!("unexpected event {other:?}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_pushed_as_they_are_put_and_renewed_subscriptions_go_on_from_their_continuation() {
    let b = common::start_with(|c| c.subscription_lifetime = Duration::from_secs(2)).await;
    b.create_stream("live", 1).await;
    let consumer = b.register_consumer("live", "dashboard").await;
    let k = b.sdk();
    const N: usize = 150;
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let putter = {
        let (k, sent_at) = (k.clone(), sent_at.clone());
        tokio::spawn(async move {
            for i in 0..N {
                let data = format!("r{i}");
                sent_at.lock().unwrap().insert(data.clone(), Instant::now());
                let put = k.put_record().stream_name("live").partition_key(format!("k{}", i % 7));
                put.data(Blob::new(data)).send().await.unwrap();
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let (mut received, mut latencies, mut subscriptions) = (Vec::new(), Vec::new(), 0);
    let (mut kind, mut continuation) = (ShardIteratorType::TrimHorizon, None::<String>);
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < N {
        assert!(Instant::now() < deadline, "{} of {N} records within 60 s", received.len());
        let mut events = subscribe(&k, &consumer, "shardId-000000000000", kind, continuation.as_deref()).await.unwrap();
        subscriptions += 1;
        while let Some(event) = next_event(&mut events).await {
            for r in event.records {
                let data = String::from_utf8(r.data.into_inner()).unwrap();
                latencies.push(sent_at.lock().unwrap()[&data].elapsed());
                received.push(data);
            }
            continuation = Some(event.continuation_sequence_number);
        }
        // The lifetime ended the stream: on from where it stopped, as the KCL does.
        kind = ShardIteratorType::AfterSequenceNumber;
    }
    putter.await.unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("r{i}")).collect();
    assert_eq!(received, expected, "every record once, in order, across renewals");
    assert!(subscriptions >= 2, "the 2 s lifetime ended a subscription at least once: {subscriptions}");
    latencies.sort();
    eprintln!(
        "SubscribeToShard put-to-event latency over {N} records, {subscriptions} subscriptions: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_shards_continuation_goes_on_at_its_first_record() {
    let b = common::start_with(|c| c.subscription_lifetime = Duration::from_secs(1)).await;
    b.create_stream("quiet", 1).await;
    let consumer = b.register_consumer("quiet", "late").await;
    let k = b.sdk();
    let mut events = subscribe(&k, &consumer, "shardId-000000000000", ShardIteratorType::Latest, None).await.unwrap();
    let mut continuation = None;
    while let Some(event) = next_event(&mut events).await {
        assert!(event.records.is_empty());
        continuation = Some(event.continuation_sequence_number);
    }
    let continuation = continuation.expect("an event before the stream ended");
    assert_eq!(continuation.len(), 56, "a sequence number of AWS's length: {continuation}");
    let put = k.put_record().stream_name("quiet").partition_key("k").data(Blob::new("first"));
    let first_seq = put.send().await.unwrap().sequence_number;
    assert!(continuation < first_seq, "the continuation comes before the first record");

    let mut events =
        subscribe(&k, &consumer, "shardId-000000000000", ShardIteratorType::AfterSequenceNumber, Some(&continuation))
            .await
            .unwrap();
    let event = next_event(&mut events).await.unwrap();
    assert_eq!(event.records.len(), 1, "AFTER the continuation is the first record, not past it");
    assert_eq!(event.records[0].data.as_ref(), b"first");
    // GetShardIterator takes it too.
    let iterator = k
        .get_shard_iterator()
        .stream_name("quiet")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
        .starting_sequence_number(&continuation)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = k.get_records().shard_iterator(iterator).send().await.unwrap().records;
    assert_eq!(records.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_subscription_is_refused_within_five_seconds_and_takes_over_after() {
    let b = common::start().await;
    b.create_stream("shared", 1).await;
    let consumer = b.register_consumer("shared", "reporting").await;
    let k = b.sdk();
    let shard = "shardId-000000000000";
    let started = Instant::now();
    let mut first = subscribe(&k, &consumer, shard, ShardIteratorType::Latest, None).await.unwrap();
    let refused = subscribe(&k, &consumer, shard, ShardIteratorType::Latest, None).await.err();
    assert_eq!(refused.as_deref(), Some("ResourceInUseException"));
    // Another consumer, or another shard, is not affected.
    let other = b.register_consumer("shared", "audit").await;
    subscribe(&k, &other, shard, ShardIteratorType::Latest, None).await.unwrap();

    tokio::time::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()) + Duration::from_millis(200)).await;
    let mut second = subscribe(&k, &consumer, shard, ShardIteratorType::Latest, None).await.unwrap();
    // The first one ends with ResourceInUseException, as in AWS.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), first.recv()).await.expect("the first stream ends") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the first stream ended without telling why"),
            Err(e) => break e.into_service_error(),
        };
    };
    assert!(ended.is_resource_in_use_exception(), "{ended:?}");
    k.put_record().stream_name("shared").partition_key("k").data(Blob::new("after")).send().await.unwrap();
    loop {
        let event = next_event(&mut second).await.expect("the second stream goes on");
        if let Some(r) = event.records.first() {
            assert_eq!(r.data.as_ref(), b"after");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_shard_ends_its_subscription_with_its_children() {
    let b = common::start().await;
    b.create_stream("splitting", 1).await;
    let consumer = b.register_consumer("splitting", "follower").await;
    let k = b.sdk();
    for i in 0..10 {
        let put = k.put_record().stream_name("splitting").partition_key(format!("k{i}"));
        put.data(Blob::new(format!("r{i}"))).send().await.unwrap();
    }
    let shard = "shardId-000000000000";
    let mut events = subscribe(&k, &consumer, shard, ShardIteratorType::TrimHorizon, None).await.unwrap();
    let split = k.split_shard().stream_name("splitting").shard_to_split(shard);
    split.new_starting_hash_key((1u128 << 127).to_string()).send().await.unwrap();
    let (mut records, mut children) = (0, None);
    while let Some(event) = next_event(&mut events).await {
        records += event.records.len();
        if let Some(c) = event.child_shards.filter(|c| !c.is_empty()) {
            assert!(children.is_none(), "children once, in the last event");
            assert!(event.continuation_sequence_number.is_empty(), "no continuation past the end, as AWS sends it");
            children = Some(c);
        }
    }
    assert_eq!(records, 10);
    let children = children.expect("the last event names the children");
    let ids: Vec<&str> = children.iter().map(|c| c.shard_id.as_str()).collect();
    assert_eq!(ids, ["shardId-000000000001", "shardId-000000000002"]);
    assert!(children.iter().all(|c| c.parent_shards == [shard]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_get_aws_errors() {
    let b = common::start().await;
    b.create_stream("checked", 2).await;
    let consumer = b.register_consumer("checked", "strict").await;
    let at_latest = json!({"Type": "LATEST"});
    let cases = [
        (
            json!({"ShardId": "shardId-000000000000", "StartingPosition": at_latest}),
            "ValidationException",
            "consumerARN",
        ),
        (json!({"ConsumerARN": consumer, "StartingPosition": at_latest}), "ValidationException", "shardId"),
        (
            json!({"ConsumerARN": consumer, "ShardId": "shardId-000000000000"}),
            "ValidationException",
            "startingPosition",
        ),
        (
            json!({"ConsumerARN": consumer, "ShardId": "shardId-000000000000", "StartingPosition": {"Type": "SOMETIME"}}),
            "ValidationException",
            "startingPosition.type",
        ),
        (
            json!({"ConsumerARN": format!("{consumer}0"), "ShardId": "shardId-000000000000", "StartingPosition": at_latest}),
            "ResourceNotFoundException",
            "strict",
        ),
        (
            json!({"ConsumerARN": consumer, "ShardId": "shardId-000000000009", "StartingPosition": at_latest}),
            "ResourceNotFoundException",
            "shardId-000000000009",
        ),
        (
            json!({"ConsumerARN": consumer, "ShardId": "shardId-000000000000", "StartingPosition": {"Type": "AT_SEQUENCE_NUMBER"}}),
            "InvalidArgumentException",
            "StartingSequenceNumber",
        ),
    ];
    for (body, code, named) in cases {
        let message = b.expect_error("SubscribeToShard", body.clone(), 400, code).await;
        assert!(message.contains(named), "{body}: {message:?} names {named}");
    }
    // A sequence number of another shard.
    let (_, put) = b
        .json(
            "PutRecord",
            json!({"StreamName": "checked", "PartitionKey": "k", "Data": "AA==", "ExplicitHashKey": "0"}),
        )
        .await;
    let body = json!({"ConsumerARN": consumer, "ShardId": "shardId-000000000001",
        "StartingPosition": {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": put["SequenceNumber"]}});
    b.expect_error("SubscribeToShard", body, 400, "InvalidArgumentException").await;
    let (_, metrics) = common::http_get(b.running.admin_addr, "/metrics").await;
    assert!(!metrics.contains("streamfabric_subscriptions{"), "no subscription was opened:\n{metrics}");
}

/// The Java SDK (and so the KCL) subscribes in CBOR: the events come back in CBOR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbor_subscriptions_get_cbor_events_and_consumers_are_counted() {
    let b = common::start_with(|c| c.subscription_lifetime = Duration::from_secs(1)).await;
    b.create_stream("binary", 1).await;
    let consumer = b.register_consumer("binary", "java").await;
    for i in 0u8..3 {
        let (status, _) =
            b.json("PutRecord", json!({"StreamName": "binary", "PartitionKey": "k", "Data": format!("AAE{i}")})).await;
        assert_eq!(status, 200);
    }
    let request = json!({"ConsumerARN": consumer, "ShardId": "shardId-000000000000", "StartingPosition": {"Type": "TRIM_HORIZON"}});
    let mut body = Vec::new();
    ciborium::into_writer(&request, &mut body).unwrap();
    // The stream ends after its 1 s lifetime: the whole answer can be collected.
    let (status, content_type, answer) =
        b.raw("Kinesis_20131202.SubscribeToShard", "application/x-amz-cbor-1.1", body).await;
    assert_eq!((status, content_type.as_str()), (200, "application/vnd.amazon.eventstream"));
    let mut rest = bytes::Bytes::from(answer);
    let mut messages = Vec::new();
    while !rest.is_empty() {
        messages.push(aws_smithy_eventstream::frame::read_message_from(&mut rest).unwrap());
    }
    let event_type = |m: &aws_smithy_types::event_stream::Message| {
        let h = m.headers().iter().find(|h| h.name().as_str() == ":event-type").unwrap();
        h.value().as_string().unwrap().as_str().to_string()
    };
    assert_eq!(event_type(&messages[0]), "initial-response");
    let payload: ciborium::Value = ciborium::from_reader(messages[1].payload().as_ref()).unwrap();
    let records = payload.as_map().unwrap().iter().find(|(k, _)| k.as_text() == Some("Records")).unwrap();
    let records = records.1.as_array().unwrap();
    assert_eq!(records.len(), 3, "{payload:?}");
    let data = records[0].as_map().unwrap().iter().find(|(k, _)| k.as_text() == Some("Data")).unwrap();
    assert!(data.1.is_bytes(), "blobs are CBOR byte strings: {data:?}");

    let (_, metrics) = common::http_get(b.running.admin_addr, "/metrics").await;
    let line = metrics.lines().find(|l| l.starts_with("streamfabric_subscription_records_total{"));
    assert_eq!(line, Some("streamfabric_subscription_records_total{consumer=\"java\",stream=\"binary\"} 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_broker_ends_its_subscriptions_instead_of_waiting_for_them() {
    let b = common::start().await;
    b.create_stream("stopping", 1).await;
    let consumer = b.register_consumer("stopping", "patient").await;
    let k = b.sdk();
    let mut events = subscribe(&k, &consumer, "shardId-000000000000", ShardIteratorType::Latest, None).await.unwrap();
    next_event(&mut events).await.expect("the first event");
    let started = Instant::now();
    assert!(b.running.shutdown(Duration::from_secs(20)).await, "a clean shutdown");
    assert!(started.elapsed() < Duration::from_secs(10), "not held by the subscription: {:?}", started.elapsed());
    assert!(next_event(&mut events).await.is_none(), "the subscription ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_shard_limits_enforced_a_subscription_is_paced_to_the_read_rate() {
    // 256 KiB/s here (AWS: 2 MiB/s per consumer and shard), writes unlimited in effect.
    let b = common::start_with(|c| {
        c.enforce_shard_limits = true;
        c.shard_read_bytes_per_sec = 256 * 1024;
        c.shard_read_calls_per_sec = 1000;
        c.shard_write_bytes_per_sec = 64 << 20;
        c.shard_write_records_per_sec = 100_000;
    })
    .await;
    b.create_stream("paced", 1).await;
    let consumer = b.register_consumer("paced", "slow").await;
    let k = b.sdk();
    let mut sequence_numbers = Vec::new();
    for i in 0..8u8 {
        let put = k.put_record().stream_name("paced").partition_key("k").data(Blob::new(vec![i; 200 * 1024]));
        sequence_numbers.push(put.send().await.unwrap().sequence_number);
    }
    let started = Instant::now();
    let mut events =
        subscribe(&k, &consumer, "shardId-000000000000", ShardIteratorType::TrimHorizon, None).await.unwrap();
    let mut received = Vec::new();
    while received.len() < sequence_numbers.len() {
        let event = next_event(&mut events).await.expect("the subscription lasts 5 minutes");
        received.extend(event.records.into_iter().map(|r| r.sequence_number));
    }
    assert_eq!(received, sequence_numbers, "every record, in order");
    // Events of at most 1 MiB: the second waits until the first's 1,000 KiB fit 256 KiB/s
    // less one second of burst, 2.9 s; unpaced, everything comes at once.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500), "paced to the read rate: all records after {took:?}");
}
