//! What AWS keeps per stream and streamfabric records and shows as AWS does: enhanced
//! monitoring, server-side encryption with a KMS key, and tags by resource ARN (streams and
//! consumers). Bad input gets AWS's errors and changes nothing.

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
