//! What AWS keeps per stream and streamfabric records and shows as AWS does: enhanced
//! monitoring, server-side encryption with a KMS key, tags by resource ARN (streams and
//! consumers), the maximum record size (records up to 10 MiB), warm throughput and the
//! account's settings. Bad input gets AWS's errors and changes nothing.

mod common;

use serde_json::json;
use std::time::Duration;

const ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/s";

async fn summary(b: &common::TestBroker) -> serde_json::Value {
    b.json("DescribeStreamSummary", json!({"StreamName": "s"})).await.1["StreamDescriptionSummary"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_monitoring_is_recorded_and_shown() {
    let b = common::start().await;
    b.create_stream("s", 1).await;
    let k = b.sdk();
    use aws_sdk_kinesis::types::MetricsName;
    let out = k
        .enable_enhanced_monitoring()
        .stream_name("s")
        .shard_level_metrics(MetricsName::IncomingBytes)
        .send()
        .await
        .unwrap();
    assert!(out.current_shard_level_metrics().is_empty());
    assert_eq!(out.desired_shard_level_metrics(), [MetricsName::IncomingBytes]);
    let out =
        k.enable_enhanced_monitoring().stream_arn(ARN).shard_level_metrics(MetricsName::All).send().await.unwrap();
    assert_eq!(out.current_shard_level_metrics(), [MetricsName::IncomingBytes]);
    assert_eq!(out.desired_shard_level_metrics().len(), 7, "ALL is every metric");
    assert_eq!(summary(&b).await["EnhancedMonitoring"][0]["ShardLevelMetrics"].as_array().unwrap().len(), 7);
    let out = k
        .disable_enhanced_monitoring()
        .stream_name("s")
        .shard_level_metrics(MetricsName::IncomingRecords)
        .send()
        .await
        .unwrap();
    assert_eq!(out.desired_shard_level_metrics().len(), 6);
    let out =
        k.disable_enhanced_monitoring().stream_name("s").shard_level_metrics(MetricsName::All).send().await.unwrap();
    assert!(out.desired_shard_level_metrics().is_empty());
    for body in [
        json!({"StreamName": "s", "ShardLevelMetrics": ["Nope"]}),
        json!({"StreamName": "s", "ShardLevelMetrics": []}),
        json!({"StreamName": "s"}),
    ] {
        b.expect_error("EnableEnhancedMonitoring", body, 400, "ValidationException").await;
    }
    b.expect_error(
        "EnableEnhancedMonitoring",
        json!({"StreamName": "x", "ShardLevelMetrics": ["ALL"]}),
        400,
        "ResourceNotFoundException",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_is_recorded_shown_and_answered_by_puts() {
    let b = common::start_with(|c| c.status_delay = Duration::from_millis(200)).await;
    b.create_stream("s", 1).await;
    let k = b.sdk();
    use aws_sdk_kinesis::types::EncryptionType;
    k.start_stream_encryption()
        .stream_name("s")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .unwrap();
    assert_eq!(summary(&b).await["StreamStatus"], "UPDATING", "for a moment, as in AWS");
    common::wait_active(&b, "s").await;
    let s = summary(&b).await;
    assert_eq!((s["EncryptionType"].as_str(), s["KeyId"].as_str()), (Some("KMS"), Some("alias/aws/kinesis")));
    let put = k
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.encryption_type(), Some(&EncryptionType::Kms));
    for (body, code) in [
        (json!({"StreamName": "s", "EncryptionType": "KMS"}), "ValidationException"),
        (json!({"StreamName": "s", "KeyId": "k"}), "ValidationException"),
        (json!({"StreamName": "s", "EncryptionType": "AES", "KeyId": "k"}), "ValidationException"),
        (json!({"StreamName": "s", "EncryptionType": "NONE", "KeyId": "k"}), "InvalidArgumentException"),
    ] {
        b.expect_error("StartStreamEncryption", body, 400, code).await;
    }
    k.stop_stream_encryption()
        .stream_name("s")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .unwrap();
    b.expect_error(
        "StopStreamEncryption",
        json!({"StreamName": "s", "EncryptionType": "KMS", "KeyId": "k"}),
        400,
        "ResourceInUseException",
    )
    .await;
    common::wait_active(&b, "s").await;
    let s = summary(&b).await;
    assert_eq!(s["EncryptionType"], "NONE");
    assert!(s.get("KeyId").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_tagged_by_arn_streams_and_consumers() {
    let b = common::start().await;
    b.create_stream("s", 1).await;
    let k = b.sdk();
    k.tag_resource().resource_arn(ARN).tags("team", "payments").send().await.unwrap();
    let by_stream = k.list_tags_for_stream().stream_name("s").send().await.unwrap();
    assert_eq!(by_stream.tags()[0].key(), "team");
    let consumer =
        k.register_stream_consumer().stream_arn(ARN).consumer_name("fan").tags("owner", "a").send().await.unwrap();
    let consumer_arn = consumer.consumer.unwrap().consumer_arn;
    k.tag_resource().resource_arn(&consumer_arn).tags("tier", "gold").send().await.unwrap();
    let tags = |arn: String| {
        let k = k.clone();
        async move {
            let out = k.list_tags_for_resource().resource_arn(arn).send().await.unwrap();
            out.tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().unwrap_or_default().to_string()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(tags(consumer_arn.clone()).await, [("owner".into(), "a".into()), ("tier".into(), "gold".into())]);
    assert_eq!(tags(ARN.into()).await, [("team".to_string(), "payments".to_string())]);
    k.untag_resource().resource_arn(&consumer_arn).tag_keys("owner").send().await.unwrap();
    k.untag_resource().resource_arn(ARN).tag_keys("team").send().await.unwrap();
    assert_eq!(tags(consumer_arn.clone()).await, [("tier".to_string(), "gold".to_string())]);
    assert!(tags(ARN.into()).await.is_empty());
    for (op, body, code) in [
        ("TagResource", json!({"ResourceARN": "arn:aws:s3:::bucket", "Tags": {"a": "b"}}), "ValidationException"),
        ("TagResource", json!({"ResourceARN": ARN}), "ValidationException"),
        ("TagResource", json!({"ResourceARN": ARN, "Tags": {}}), "ValidationException"),
        (
            "TagResource",
            json!({"ResourceARN": format!("{ARN}/consumer/ghost:1"), "Tags": {"a": "b"}}),
            "ResourceNotFoundException",
        ),
        ("ListTagsForResource", json!({}), "ValidationException"),
        ("UntagResource", json!({"ResourceARN": ARN}), "ValidationException"),
    ] {
        b.expect_error(op, body, 400, code).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_up_to_the_streams_max_record_size_are_written_and_read_back() {
    // The per-shard write limit is enforced (1 MiB/s): a large record is let through a full
    // bucket, as AWS lets large records burst.
    let b = common::start_with(|c| {
        c.enforce_shard_limits = true;
        c.shard_write_bytes_per_sec = 1 << 20;
        c.shard_write_records_per_sec = 1000;
        c.shard_read_bytes_per_sec = 2 << 20;
        c.shard_read_calls_per_sec = 5;
    })
    .await;
    b.create_stream("s", 1).await;
    let k = b.sdk();
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
    assert_eq!(summary(&b).await["MaxRecordSizeInKiB"], 1024, "1 MiB by default, as AWS");
    let big: Vec<u8> = (0..(5 << 19) + 17).map(|i: u32| (i % 251) as u8).collect();
    let refused = k.put_record().stream_name("s").partition_key("k").data(Blob::new(big.clone())).send().await;
    let e = refused.unwrap_err().into_service_error();
    assert!(e.meta().code() == Some("ValidationException"), "{e:?}");
    assert!(e.meta().message().unwrap().contains("1048576"), "names the limit: {e:?}");
    for kib in [1023, 10241] {
        b.expect_error(
            "UpdateMaxRecordSize",
            json!({"StreamARN": ARN, "MaxRecordSizeInKiB": kib}),
            400,
            "ValidationException",
        )
        .await;
    }
    b.expect_error("UpdateMaxRecordSize", json!({"StreamARN": ARN}), 400, "ValidationException").await;
    let ghost = "arn:aws:kinesis:us-east-1:000000000000:stream/ghost";
    b.expect_error(
        "UpdateMaxRecordSize",
        json!({"StreamARN": ghost, "MaxRecordSizeInKiB": 2048}),
        400,
        "ResourceNotFoundException",
    )
    .await;
    assert_eq!(summary(&b).await["MaxRecordSizeInKiB"], 1024, "refused changes change nothing");
    k.update_max_record_size().stream_arn(ARN).max_record_size_in_kib(3072).send().await.unwrap();
    assert_eq!(summary(&b).await["MaxRecordSizeInKiB"], 3072);
    let one = k.put_record().stream_name("s").partition_key("k").data(Blob::new(big.clone())).send().await.unwrap();
    // Two large records in one PutRecords: more than 5 MiB, within the 10 MiB of such streams.
    // Each one leaves the shard's bucket 2 s in debt, so the second is throttled and retried,
    // as the SDKs' callers retry failed entries.
    let mut pending = 2;
    for _ in 0..40 {
        let entries = (0..pending)
            .map(|_| PutRecordsRequestEntry::builder().partition_key("k").data(Blob::new(big.clone())).build().unwrap())
            .collect();
        let out = k.put_records().stream_name("s").set_records(Some(entries)).send().await.unwrap();
        for r in out.records() {
            assert!(matches!(r.error_code(), None | Some("ProvisionedThroughputExceededException")), "{r:?}");
        }
        pending = out.failed_record_count().unwrap_or(0) as usize;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(pending, 0, "both written once the shard's rate allowed");
    let too_big = vec![7u8; 3 * 1024 * 1024 + 1];
    let e = k.put_record().stream_name("s").partition_key("k").data(Blob::new(too_big)).send().await.unwrap_err();
    assert!(e.into_service_error().meta().message().unwrap().contains("3145728"));
    // Read back whole, one record per GetRecords when a record is above the 10 MiB answer's share.
    let mut it = k
        .get_shard_iterator()
        .stream_name("s")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let mut read = Vec::new();
    for _ in 0..100 {
        let page = k.get_records().shard_iterator(&it).send().await;
        let page = match page {
            Ok(page) => page,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            Err(e) => panic!("{e:?}"),
        };
        read.extend(page.records().iter().cloned());
        it = page.next_shard_iterator().unwrap().to_string();
        if read.len() == 3 {
            break;
        }
    }
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].sequence_number(), one.sequence_number());
    for r in &read {
        assert!(r.data().as_ref() == big.as_slice(), "a large record comes back whole");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_stream_takes_a_max_record_size_in_its_range_only() {
    let b = common::start().await;
    for kib in [1023, 10241] {
        let body = json!({"StreamName": "s", "ShardCount": 1, "MaxRecordSizeInKiB": kib});
        let message = b.expect_error("CreateStream", body, 400, "ValidationException").await;
        assert!(message.contains("maxRecordSizeInKiB"), "names the field: {message}");
    }
    assert_eq!(b.json("ListStreams", json!({})).await.1["StreamNames"], json!([]), "nothing created");
    let (status, answer) =
        b.json("CreateStream", json!({"StreamName": "s", "ShardCount": 1, "MaxRecordSizeInKiB": 4096})).await;
    assert_eq!(status, 200, "{answer}");
    common::wait_active(&b, "s").await;
    assert_eq!(summary(&b).await["MaxRecordSizeInKiB"], 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_throughput_and_account_settings_answer_as_aws_documents() {
    let b = common::start().await;
    b.create_stream("s", 2).await;
    let k = b.sdk();
    use aws_sdk_kinesis::types::{
        MinimumThroughputBillingCommitmentInput, MinimumThroughputBillingCommitmentInputStatus, StreamMode,
        StreamModeDetails,
    };
    b.expect_error(
        "UpdateStreamWarmThroughput",
        json!({"StreamName": "s", "WarmThroughputMiBps": 10}),
        400,
        "InvalidArgumentException",
    )
    .await;
    assert!(summary(&b).await.get("WarmThroughput").is_none(), "a provisioned stream has none");
    k.create_stream()
        .stream_name("od")
        .stream_mode_details(StreamModeDetails::builder().stream_mode(StreamMode::OnDemand).build().unwrap())
        .warm_throughput_mibps(8)
        .send()
        .await
        .unwrap();
    common::wait_active(&b, "od").await;
    let od = k.describe_stream_summary().stream_name("od").send().await.unwrap();
    let warm = od.stream_description_summary().unwrap().warm_throughput().unwrap();
    assert_eq!(warm.target_mibps(), Some(8));
    let open = od.stream_description_summary().unwrap().open_shard_count();
    assert_eq!(warm.current_mibps(), Some(open), "1 MiB/s per open shard");
    let out = k.update_stream_warm_throughput().stream_name("od").warm_throughput_mibps(32).send().await.unwrap();
    assert_eq!(out.stream_name(), Some("od"));
    assert_eq!(out.warm_throughput().unwrap().target_mibps(), Some(32));
    b.expect_error(
        "UpdateStreamWarmThroughput",
        json!({"StreamName": "od", "WarmThroughputMiBps": -1}),
        400,
        "ValidationException",
    )
    .await;
    let settings = k.describe_account_settings().send().await.unwrap();
    assert_eq!(settings.minimum_throughput_billing_commitment().unwrap().status().as_str(), "DISABLED");
    let disable = MinimumThroughputBillingCommitmentInput::builder()
        .status(MinimumThroughputBillingCommitmentInputStatus::Disabled)
        .build()
        .unwrap();
    let out = k.update_account_settings().minimum_throughput_billing_commitment(disable).send().await.unwrap();
    assert_eq!(out.minimum_throughput_billing_commitment().unwrap().status().as_str(), "DISABLED");
    b.expect_error(
        "UpdateAccountSettings",
        json!({"MinimumThroughputBillingCommitment": {"Status": "ENABLED"}}),
        400,
        "InvalidArgumentException",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_violated_constraint_of_a_request_is_named_in_one_answer() {
    let b = common::start().await;
    let message = b
        .expect_error("CreateStream", json!({"StreamName": "bad name!", "ShardCount": 0}), 400, "ValidationException")
        .await;
    assert!(message.starts_with("2 validation errors detected: Value 'bad name!' at 'streamName'"), "{message}");
    assert!(message.contains("; Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"), "{message}");
    b.create_stream("s", 1).await;
    let records = json!([
        {"PartitionKey": "", "Data": "AA=="},
        {"PartitionKey": "ok", "Data": "AA=="},
        {"Data": "AA=="},
        {"PartitionKey": "k", "Data": "AA==", "ExplicitHashKey": "x"},
    ]);
    let message =
        b.expect_error("PutRecords", json!({"StreamName": "s", "Records": records}), 400, "ValidationException").await;
    assert!(message.starts_with("3 validation errors detected: "), "{message}");
    for at in ["records.1.member.partitionKey", "records.3.member.partitionKey", "records.4.member.explicitHashKey"] {
        assert!(message.contains(&format!("at '{at}'")), "names {at}: {message}");
    }
    let message = b.expect_error("PutRecord", json!({"StreamName": "s"}), 400, "ValidationException").await;
    assert!(message.starts_with("2 validation errors detected: Value null at 'data'"), "{message}");
    let stored = b.json("DescribeStreamSummary", json!({"StreamName": "s"})).await;
    assert_eq!(stored.0, 200);
}
