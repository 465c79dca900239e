//! Enhanced fan-out consumers through the AWS SDK: registered CREATING then ACTIVE with
//! AWS's ARN, described by ARN or by stream and name, listed in pages, at most 20 per
//! stream, deregistered DELETING then gone; bad input gets AWS's errors and changes nothing;
//! a stream with consumers is deleted only with EnforceConsumerDeletion.

mod common;

use serde_json::json;
use std::time::Duration;

async fn status_of(b: &common::TestBroker, arn: &str) -> Option<String> {
    let (code, answer) = b.json("DescribeStreamConsumer", json!({"ConsumerARN": arn})).await;
    (code == 200).then(|| answer["ConsumerDescription"]["ConsumerStatus"].as_str().unwrap().to_string())
}

async fn wait_status(b: &common::TestBroker, arn: &str, want: Option<&str>) {
    for _ in 0..500 {
        if status_of(b, arn).await.as_deref() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{arn} never {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_register_describe_list_and_deregister_as_in_aws() {
    let b = common::start().await;
    b.create_stream("orders", 2).await;
    let k = b.sdk();
    let stream_arn = "arn:aws:kinesis:us-east-1:000000000000:stream/orders";

    let out = k.register_stream_consumer().stream_arn(stream_arn).consumer_name("billing").send().await.unwrap();
    let c = out.consumer.unwrap();
    assert_eq!(c.consumer_status.as_str(), "CREATING");
    let arn = c.consumer_arn.clone();
    let seconds = c.consumer_creation_timestamp.secs();
    assert_eq!(arn, format!("{stream_arn}/consumer/billing:{seconds}"));
    wait_status(&b, &arn, Some("ACTIVE")).await;
    let by_name = k
        .describe_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name("billing")
        .send()
        .await
        .unwrap()
        .consumer_description
        .unwrap();
    assert_eq!((by_name.consumer_arn.as_str(), by_name.stream_arn.as_str()), (arn.as_str(), stream_arn));

    // The same name again: in use; 20 in all, then the limit.
    let again = k.register_stream_consumer().stream_arn(stream_arn).consumer_name("billing").send().await;
    assert_eq!(again.unwrap_err().into_service_error().meta().code(), Some("ResourceInUseException"));
    for i in 1..20 {
        k.register_stream_consumer().stream_arn(stream_arn).consumer_name(format!("c{i:02}")).send().await.unwrap();
    }
    let message = b
        .expect_error(
            "RegisterStreamConsumer",
            json!({"StreamARN": stream_arn, "ConsumerName": "c20"}),
            400,
            "LimitExceededException",
        )
        .await;
    assert!(message.contains("20"), "{message}");

    // Listed in registration order, in pages.
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = k
            .list_stream_consumers()
            .stream_arn(stream_arn)
            .max_results(7)
            .set_next_token(token.take())
            .send()
            .await
            .unwrap();
        assert!(page.consumers().len() <= 7);
        names.extend(page.consumers().iter().map(|c| c.consumer_name.clone()));
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let want: Vec<String> = std::iter::once("billing".to_string()).chain((1..20).map(|i| format!("c{i:02}"))).collect();
    assert_eq!(names, want);
    let summary = k.describe_stream_summary().stream_name("orders").send().await.unwrap();
    assert_eq!(summary.stream_description_summary.unwrap().consumer_count, Some(20));

    // Bad input: AWS's errors, nothing changed.
    for (op, body, code) in [
        ("RegisterStreamConsumer", json!({"ConsumerName": "x"}), "ValidationException"),
        (
            "RegisterStreamConsumer",
            json!({"StreamARN": stream_arn, "ConsumerName": "no spaces"}),
            "ValidationException",
        ),
        ("RegisterStreamConsumer", json!({"StreamARN": stream_arn}), "ValidationException"),
        (
            "RegisterStreamConsumer",
            json!({"StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/nope", "ConsumerName": "x"}),
            "ResourceNotFoundException",
        ),
        (
            "DescribeStreamConsumer",
            json!({"ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders"}),
            "ValidationException",
        ),
        (
            "DescribeStreamConsumer",
            json!({"StreamARN": stream_arn, "ConsumerName": "ghost"}),
            "ResourceNotFoundException",
        ),
        ("DescribeStreamConsumer", json!({"ConsumerName": "billing"}), "InvalidArgumentException"),
        ("ListStreamConsumers", json!({"StreamARN": stream_arn, "MaxResults": 0}), "ValidationException"),
        ("ListStreamConsumers", json!({}), "ValidationException"),
    ] {
        let message = b.expect_error(op, body.clone(), 400, code).await;
        assert!(!message.is_empty(), "{op} {body}: a message");
    }
    // A consumer ARN of an earlier registration of the same name is not this one.
    let stale = format!("{stream_arn}/consumer/billing:{}", seconds - 1);
    b.expect_error("DescribeStreamConsumer", json!({"ConsumerARN": stale}), 400, "ResourceNotFoundException").await;

    // A stream with consumers: DeleteStream refused unless told to take them too.
    let message = b.expect_error("DeleteStream", json!({"StreamName": "orders"}), 400, "ResourceInUseException").await;
    assert!(message.contains("EnforceConsumerDeletion"), "{message}");

    // Deregistered: DELETING, then gone.
    k.deregister_stream_consumer().consumer_arn(&arn).send().await.unwrap();
    assert!(matches!(status_of(&b, &arn).await.as_deref(), Some("DELETING") | None));
    wait_status(&b, &arn, None).await;
    let left = k.list_stream_consumers().stream_arn(stream_arn).send().await.unwrap();
    assert_eq!(left.consumers().len(), 19);
    let (code, _) = b.json("DeleteStream", json!({"StreamName": "orders", "EnforceConsumerDeletion": true})).await;
    assert_eq!(code, 200);
}

/// Registered consumers are in the stream's description: a restart keeps them, and finishes
/// the status changes it cut short (CREATING becomes ACTIVE, DELETING goes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_survive_a_restart_that_finishes_their_changes() {
    let data = tempfile::tempdir().unwrap();
    let start = |status_delay: Duration| {
        let dir = data.path().to_path_buf();
        common::start_with(move |c| {
            c.data_dir = dir;
            c.status_delay = status_delay;
        })
    };
    let stream_arn = "arn:aws:kinesis:us-east-1:000000000000:stream/kept";
    let register = |b: &common::TestBroker, name: &'static str| {
        let k = b.sdk();
        async move {
            let out = k.register_stream_consumer().stream_arn(stream_arn).consumer_name(name).send().await.unwrap();
            out.consumer.unwrap().consumer_arn
        }
    };
    let b = start(Duration::from_millis(20)).await;
    b.create_stream("kept", 1).await;
    let fan = register(&b, "fan").await;
    let kept = register(&b, "kept").await;
    wait_status(&b, &fan, Some("ACTIVE")).await;
    wait_status(&b, &kept, Some("ACTIVE")).await;
    assert!(b.running.shutdown(Duration::from_secs(5)).await);
    // A delay no test waits for: this broker stops with a consumer CREATING, one DELETING.
    let b = start(Duration::from_secs(3600)).await;
    let late = register(&b, "late").await;
    b.sdk().deregister_stream_consumer().consumer_arn(&fan).send().await.unwrap();
    assert_eq!(status_of(&b, &late).await.as_deref(), Some("CREATING"));
    assert_eq!(status_of(&b, &fan).await.as_deref(), Some("DELETING"));
    assert!(b.running.shutdown(Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = start(Duration::from_millis(20)).await;
    assert_eq!(status_of(&b, &kept).await.as_deref(), Some("ACTIVE"));
    assert_eq!(status_of(&b, &late).await.as_deref(), Some("ACTIVE"), "CREATING finished at start");
    assert_eq!(status_of(&b, &fan).await, None, "DELETING finished at start");
}
