//! Access control with `--access-policy` and resource policies: a key allowed only
//! `kinesis:PutRecord*` on one stream writes it and nothing else; a Deny overrides an Allow;
//! a GetRecords iterator is judged by the stream it reads; a resource policy grants and
//! denies beside the broker's policy, and, set through one broker of a cluster, applies at
//! every broker. Refused requests get AccessDeniedException naming the action and the
//! resource, are counted, and change nothing.

mod common;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const ADMIN: &str = "AKIDADMIN";
const WRITER: &str = "AKIDWRITER";
const READER: &str = "AKIDREADER";
const OUTSIDER: &str = "AKIDOUTSIDER";
const SECRET: &str = "secret";

const POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "admins", "Effect": "Allow", "Principal": {"AWS": "group:admins"}, "Action": "*", "Resource": "*"},
    {"Sid": "orderWriters", "Effect": "Allow", "Principal": {"AWS": "AKIDWRITER"},
     "Action": "kinesis:PutRecord*", "Resource": "orders"},
    {"Sid": "readers", "Effect": "Allow", "Principal": {"AWS": ["group:readers"]},
     "Action": ["kinesis:Get*", "kinesis:Describe*", "kinesis:List*"], "Resource": "arn:aws:kinesis:*:*:stream/*"},
    {"Sid": "paymentsArePrivate", "Effect": "Deny", "Principal": {"AWS": "group:readers"},
     "Action": "kinesis:Get*", "Resource": "payments"}
  ]
}"#;

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn key_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("credentials");
    write_atomically(
        &file,
        &format!("{ADMIN} {SECRET} admins\n{WRITER} {SECRET}\n{READER} {SECRET} readers\n{OUTSIDER} {SECRET}\n"),
    );
    file
}

/// The AWS error code and message of a refused call.
fn refusal<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    result: Result<R, aws_sdk_kinesis::error::SdkError<E>>,
) -> (String, String) {
    let e = result.expect_err("refused");
    let e = e.as_service_error().unwrap_or_else(|| panic!("a service error: {e:?}"));
    (e.code().unwrap_or_default().to_string(), e.message().unwrap_or_default().to_string())
}

fn assert_denied<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    result: Result<R, aws_sdk_kinesis::error::SdkError<E>>,
    action: &str,
    resource: &str,
) -> String {
    let (code, message) = refusal(result);
    assert_eq!(code, "AccessDeniedException", "{action}: {message}");
    assert!(message.contains(&format!("perform: {action} on resource: {resource}")), "{message}");
    message
}

async fn put(k: &aws_sdk_kinesis::Client, stream: &str, n: usize) {
    for i in 0..n {
        k.put_record()
            .stream_name(stream)
            .partition_key(format!("k{i}"))
            .data(Blob::new(format!("r{i}")))
            .send()
            .await
            .unwrap();
    }
}

async fn iterator(k: &aws_sdk_kinesis::Client, stream: &str) -> Result<String, (String, String)> {
    let shard = "shardId-000000000000";
    k.get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .map(|o| o.shard_iterator().unwrap().to_string())
        .map_err(|e| {
            let e = e.into_service_error();
            (e.code().unwrap_or_default().to_string(), e.message().unwrap_or_default().to_string())
        })
}

/// A DynamoDB call (the lease store) signed with `key`: (status, answer).
async fn signed_dynamo(
    b: &common::TestBroker,
    key: &str,
    op: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt, Full};
    let signer = streamfabric_api::sigv4::Signer {
        access_key_id: key.into(),
        secret_access_key: SECRET.into(),
        region: "us-east-1".into(),
        service: "dynamodb".into(),
    };
    let (addr, body) = (b.running.api_addr, serde_json::to_vec(&body).unwrap());
    let (host, target) = (addr.to_string(), format!("DynamoDB_20120810.{op}"));
    let headers = [("content-type", "application/x-amz-json-1.0"), ("x-amz-target", target.as_str())];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (date, authorization) = signer.sign_post(&host, &headers, &body, now);
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post("/").header("host", host).header("x-amz-date", date);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let req = req.header("authorization", authorization).body(Full::new(bytes::Bytes::from(body))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let answer = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_does_only_what_the_policies_allow_and_a_deny_wins() {
    let root = tempfile::tempdir().unwrap();
    let keys = key_file(root.path());
    let policy = root.path().join("policy.json");
    write_atomically(&policy, POLICY);
    let b = common::start_with(|c| {
        c.credentials = Some(keys);
        c.access_policy = Some(policy.clone());
    })
    .await;
    let client = |key: &str| common::signed_client(&b.endpoint(), key, SECRET);
    let (admin, writer, reader, outsider) = (client(ADMIN), client(WRITER), client(READER), client(OUTSIDER));
    for name in ["orders", "payments"] {
        admin.create_stream().stream_name(name).shard_count(1).send().await.unwrap();
        common::wait_active_sdk(&admin, name).await;
    }
    put(&admin, "payments", 3).await;
    let arn = |s: &str| format!("arn:aws:kinesis:us-east-1:000000000000:stream/{s}");

    // The writer writes orders, one record and many.
    put(&writer, "orders", 2).await;
    let entry = PutRecordsRequestEntry::builder().partition_key("p").data(Blob::new("batch")).build().unwrap();
    writer.put_records().stream_name("orders").records(entry.clone()).send().await.unwrap();
    let before = common::fingerprint(&admin).await;

    // ... and can do nothing else.
    let (code, message) = iterator(&writer, "orders").await.unwrap_err();
    assert_eq!(code, "AccessDeniedException");
    assert_eq!(
        message,
        format!(
            "User: {WRITER} is not authorized to perform: kinesis:GetShardIterator on resource: {} because no policy allows the kinesis:GetShardIterator action",
            arn("orders")
        )
    );
    assert_denied(
        writer.put_record().stream_name("payments").partition_key("p").data(Blob::new("x")).send().await,
        "kinesis:PutRecord",
        &arn("payments"),
    );
    assert_denied(
        writer.put_records().stream_name("payments").records(entry).send().await,
        "kinesis:PutRecords",
        &arn("payments"),
    );
    assert_denied(writer.delete_stream().stream_name("orders").send().await, "kinesis:DeleteStream", &arn("orders"));
    assert_denied(
        writer.create_stream().stream_name("mine").shard_count(1).send().await,
        "kinesis:CreateStream",
        &arn("mine"),
    );
    assert_denied(writer.list_streams().send().await, "kinesis:ListStreams", "*");
    // A key no statement names gets nothing.
    assert_denied(
        outsider.describe_stream_summary().stream_name("orders").send().await,
        "kinesis:DescribeStreamSummary",
        &arn("orders"),
    );

    // The reader reads orders, by an iterator of its own and by the admin's.
    let it = iterator(&reader, "orders").await.unwrap();
    assert_eq!(reader.get_records().shard_iterator(it).send().await.unwrap().records().len(), 3);
    reader.describe_stream().stream_name("orders").send().await.unwrap();
    // A Deny overrides the readers' Allow on payments, for iterators and for GetRecords of
    // an iterator someone else was given.
    let (code, message) = iterator(&reader, "payments").await.unwrap_err();
    assert_eq!(code, "AccessDeniedException");
    assert!(
        message.ends_with("with an explicit deny in the broker's access policy (statement paymentsArePrivate)"),
        "{message}"
    );
    let admins_iterator = iterator(&admin, "payments").await.unwrap();
    assert_denied(
        reader.get_records().shard_iterator(admins_iterator).send().await,
        "kinesis:GetRecords",
        &arn("payments"),
    );
    reader.describe_stream_summary().stream_name("payments").send().await.unwrap();
    assert_denied(
        reader.put_record().stream_name("orders").partition_key("p").data(Blob::new("x")).send().await,
        "kinesis:PutRecord",
        &arn("orders"),
    );

    // A resource policy grants beside the broker's policy: the outsider may describe orders.
    let grant = format!(
        r#"{{"Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "{OUTSIDER}"}}, "Action": "kinesis:DescribeStreamSummary", "Resource": "{}"}}]}}"#,
        arn("orders")
    );
    admin.put_resource_policy().resource_arn(arn("orders")).policy(&grant).send().await.unwrap();
    outsider.describe_stream_summary().stream_name("orders").send().await.unwrap();
    assert_denied(
        outsider.describe_stream_summary().stream_name("payments").send().await,
        "kinesis:DescribeStreamSummary",
        &arn("payments"),
    );
    // ... and cannot lift a Deny of the broker's: the reader stays out of payments.
    let lift = r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]}"#;
    admin.put_resource_policy().resource_arn(arn("payments")).policy(lift).send().await.unwrap();
    assert_eq!(iterator(&reader, "payments").await.unwrap_err().0, "AccessDeniedException");
    // Setting a policy is an action like the others.
    assert_denied(
        writer.put_resource_policy().resource_arn(arn("orders")).policy(lift).send().await,
        "kinesis:PutResourcePolicy",
        &arn("orders"),
    );
    assert_eq!(admin.get_resource_policy().resource_arn(arn("orders")).send().await.unwrap().policy(), grant);

    assert_eq!(common::fingerprint(&admin).await, before, "refused requests changed nothing");
    let (_, metrics) = common::http_get(b.running.admin_addr, "/metrics").await;
    for action in ["kinesis:GetShardIterator", "kinesis:PutRecord", "kinesis:GetRecords"] {
        assert!(
            metrics.contains(&format!("streamfabric_access_denied_total{{action=\"{action}\"}}")),
            "{action} counted"
        );
    }

    // The lease store's tables are resources too (dynamodb:<Operation> on the table's ARN).
    let table = json!({"TableName": "leases", "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}], "BillingMode": "PAY_PER_REQUEST"});
    let (status, answer) = signed_dynamo(&b, ADMIN, "CreateTable", table).await;
    assert_eq!(status, 200, "{answer}");
    let get = json!({"TableName": "leases", "Key": {"leaseKey": {"S": "shard-0"}}});
    let (status, answer) = signed_dynamo(&b, READER, "GetItem", get).await;
    assert_eq!(
        (status, answer["__type"].as_str()),
        (400, Some("com.amazonaws.dynamodb.v20120810#AccessDeniedException"))
    );
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("dynamodb:GetItem on resource: arn:aws:dynamodb:us-east-1:000000000000:table/leases"),
        "{message}"
    );
    // An operation the lease store does not serve is refused as such, and names no metric.
    let (_, answer) = signed_dynamo(&b, READER, "MadeUpOperation", json!({})).await;
    assert_eq!(answer["__type"], "com.amazonaws.dynamodb.v20120810#UnknownOperationException");
    let (_, metrics) = common::http_get(b.running.admin_addr, "/metrics").await;
    assert!(metrics.contains("action=\"dynamodb:GetItem\"") && !metrics.contains("MadeUpOperation"));

    // The policy file is re-read: the writer may now read orders too, without a restart.
    write_atomically(&policy, &POLICY.replace("\"kinesis:PutRecord*\"", "[\"kinesis:PutRecord*\", \"kinesis:Get*\"]"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while iterator(&writer, "orders").await.is_err() {
        assert!(Instant::now() < deadline, "the changed policy applied within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One that does not read keeps the policy in use.
    write_atomically(&policy, r#"{"Statement": [{"Effect": "Perhaps"}]}"#);
    tokio::time::sleep(Duration::from_secs(3)).await;
    iterator(&writer, "orders").await.unwrap();
    assert_denied(writer.delete_stream().stream_name("orders").send().await, "kinesis:DeleteStream", &arn("orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_does_not_read_stops_the_start_naming_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let policy = root.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*", "Condition": {}}]}"#,
    )
    .unwrap();
    let mut config = streamfabric_api::settings::BrokerConfig::for_dir(root.path());
    config.access_policy = Some(policy);
    let e = streamfabric_broker::start(config).await.err().expect("refused");
    assert!(e.to_string().contains("Statement[0].Condition: not supported"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_policies_set_through_one_broker_apply_at_every_broker_of_a_cluster() {
    let root = tempfile::tempdir().unwrap();
    let keys = key_file(root.path());
    let brokers = common::start_signed_cluster(root.path(), &keys).await;
    let at = |i: usize, key: &str| common::signed_client(&format!("http://{}", brokers[i].0.api_addr), key, SECRET);
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/shared";
    at(0, ADMIN).create_stream().stream_name("shared").shard_count(2).send().await.unwrap();
    // Without an access policy every key may write (until a resource policy denies it).
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in [0, 1] {
        while at(i, WRITER)
            .put_record()
            .stream_name("shared")
            .partition_key("p")
            .data(Blob::new("w"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "both brokers serve the stream within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Set at b-1 (which passes it to the coordinator), denied at both.
    let deny = format!(
        r#"{{"Statement": [{{"Sid": "noWriter", "Effect": "Deny", "Principal": {{"AWS": ["{WRITER}"]}}, "Action": "kinesis:PutRecord*", "Resource": "{arn}"}}]}}"#
    );
    at(1, ADMIN).put_resource_policy().resource_arn(arn).policy(&deny).send().await.unwrap();
    let put_at = |i: usize, key: &'static str| {
        let k = at(i, key);
        async move { k.put_record().stream_name("shared").partition_key("p").data(Blob::new("x")).send().await }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in [0, 1] {
        loop {
            match put_at(i, WRITER).await {
                Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("AccessDeniedException") => break,
                _ => assert!(Instant::now() < deadline, "broker {i} applies the resource policy within 30 s"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let message = assert_denied(put_at(i, WRITER).await, "kinesis:PutRecord", arn);
        assert!(message.contains("explicit deny in the resource's policy (statement noWriter)"), "{message}");
        put_at(i, ADMIN).await.unwrap();
        assert_eq!(at(i, WRITER).get_resource_policy().resource_arn(arn).send().await.unwrap().policy(), deny);
    }

    // Policies are checked when set, and kept with consumers too.
    let (code, message) = refusal(
        at(0, ADMIN)
            .put_resource_policy()
            .resource_arn(arn)
            .policy(r#"{"Statement": [{"Effect": "Maybe"}]}"#)
            .send()
            .await,
    );
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("InvalidArgumentException", "Policy: Statement[0].Effect must be \"Allow\" or \"Deny\".")
    );
    let consumer = at(0, ADMIN).register_stream_consumer().stream_arn(arn).consumer_name("c1").send().await.unwrap();
    let consumer_arn = consumer.consumer().unwrap().consumer_arn().to_string();
    at(0, ADMIN).put_resource_policy().resource_arn(&consumer_arn).policy(&deny).send().await.unwrap();
    assert_eq!(at(0, ADMIN).get_resource_policy().resource_arn(&consumer_arn).send().await.unwrap().policy(), deny);

    // Deleted at b-0, lifted at both.
    at(0, ADMIN).delete_resource_policy().resource_arn(arn).send().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in [0, 1] {
        while put_at(i, WRITER).await.is_err() {
            assert!(Instant::now() < deadline, "broker {i} lifts the deleted policy within 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(at(0, ADMIN).get_resource_policy().resource_arn(arn).send().await.unwrap().policy(), "{}");
    let (code, _) = refusal(at(0, ADMIN).delete_resource_policy().resource_arn(arn).send().await);
    assert_eq!(code, "ResourceNotFoundException");
}
