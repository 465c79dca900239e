//! Shared by the integration tests: an in-process broker on ephemeral ports, a raw HTTP
//! client for requests an SDK would refuse to send, and an AWS SDK client.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::Duration;
use streamfabric_broker::{BrokerConfig, Running};

pub struct TestBroker {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> TestBroker {
    start_with(|_| {}).await
}

pub async fn start_with(adjust: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::for_dir(dir.path());
    adjust(&mut config);
    let running = streamfabric_broker::start(config).await.unwrap();
    TestBroker { running, dir }
}

impl TestBroker {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.running.api_addr)
    }

    pub fn sdk(&self) -> aws_sdk_kinesis::Client {
        sdk_client(&self.endpoint())
    }

    /// POST a raw body; (status, content type, body).
    pub async fn raw(&self, target: &str, content_type: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
        raw_post(self.running.api_addr, target, content_type, body).await
    }

    /// A JSON request; (status, parsed body).
    pub async fn json(&self, op: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (status, _, bytes) = self
            .raw(&format!("Kinesis_20131202.{op}"), "application/x-amz-json-1.1", serde_json::to_vec(&body).unwrap())
            .await;
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// A JSON request that must fail with `code`; returns the message.
    pub async fn expect_error(&self, op: &str, body: serde_json::Value, status: u16, code: &str) -> String {
        let (got_status, answer) = self.json(op, body).await;
        assert_eq!(got_status, status, "{op}: {answer}");
        assert_eq!(answer["__type"], code, "{op}: {answer}");
        answer["message"].as_str().unwrap_or_default().to_string()
    }

    pub async fn create_stream(&self, name: &str, shards: i64) {
        let (status, answer) =
            self.json("CreateStream", serde_json::json!({"StreamName": name, "ShardCount": shards})).await;
        assert_eq!(status, 200, "{answer}");
        wait_active(self, name).await;
    }
}

impl TestBroker {
    /// Register an enhanced fan-out consumer of `stream` and wait until it is ACTIVE: its ARN.
    pub async fn register_consumer(&self, stream: &str, name: &str) -> String {
        let stream_arn = format!("arn:aws:kinesis:us-east-1:000000000000:stream/{stream}");
        let body = serde_json::json!({"StreamARN": stream_arn, "ConsumerName": name});
        let (status, answer) = self.json("RegisterStreamConsumer", body).await;
        assert_eq!(status, 200, "{answer}");
        let arn = answer["Consumer"]["ConsumerARN"].as_str().unwrap().to_string();
        for _ in 0..2000 {
            let (_, answer) = self.json("DescribeStreamConsumer", serde_json::json!({"ConsumerARN": arn})).await;
            if answer["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE" {
                return arn;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("consumer {arn} did not become ACTIVE");
    }
}

/// A sequence number as a number ordering like it within its shard (AWS's 56 digits do not
/// fit in a u128).
pub fn seq_value(sequence_number: &str) -> u128 {
    let seq = streamfabric_api::sequence::SequenceNumber::parse("sequenceNumber", sequence_number).unwrap();
    (u128::from(seq.shard_index) << 64) | u128::from(seq.offset)
}

pub async fn wait_active(broker: &TestBroker, name: &str) {
    for _ in 0..2000 {
        let (_, answer) = broker.json("DescribeStreamSummary", serde_json::json!({"StreamName": name})).await;
        if answer["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("stream {name} did not become ACTIVE");
}

pub async fn raw_post(addr: SocketAddr, target: &str, content_type: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/")
        .header("host", addr.to_string())
        .header("x-amz-target", target)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, ct, body)
}

/// `GET path` (the admin endpoints): status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", addr.to_string()).body(Full::new(Bytes::new())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

pub fn sdk_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    signed_client(endpoint, "test", "test")
}

/// An AWS SDK client signing with `key` and `secret`.
pub fn signed_client(endpoint: &str, key: &str, secret: &str) -> aws_sdk_kinesis::Client {
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(key, secret, None, None, "tests"))
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// What the broker stores, to compare before and after refused requests.
pub async fn fingerprint(k: &aws_sdk_kinesis::Client) -> Vec<String> {
    let mut seen = Vec::new();
    for name in k.list_streams().send().await.unwrap().stream_names() {
        seen.push(name.clone());
        let shards = k.list_shards().stream_name(name).send().await.unwrap();
        for shard in shards.shards() {
            let it = k
                .get_shard_iterator()
                .stream_name(name)
                .shard_id(shard.shard_id())
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap();
            let records = k.get_records().shard_iterator(it.shard_iterator().unwrap()).send().await.unwrap();
            seen.extend(records.records().iter().map(|r| format!("{}={:?}", r.sequence_number(), r.data())));
        }
    }
    seen
}

/// Two brokers (`b-0`, `b-1`) of one cluster on a directory object store under `root`,
/// requiring SigV4 with the keys of `credentials`; each with its data directory.
pub async fn start_signed_cluster(
    root: &std::path::Path,
    credentials: &std::path::Path,
) -> Vec<(Running, tempfile::TempDir)> {
    let free_addr = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let store = format!("file://{}", root.join("store").display());
    let mut brokers = Vec::new();
    for id in ["b-0", "b-1"] {
        let (api, admin) = (free_addr(), free_addr());
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::for_dir(dir.path());
        config.listen = api;
        config.admin_listen = admin;
        config.broker_id = Some(id.into());
        config.advertise = Some(api.to_string());
        config.object_store = Some(store.clone());
        config.heartbeat_interval = Duration::from_millis(200);
        config.credentials = Some(credentials.to_path_buf());
        brokers.push((streamfabric_broker::start(config).await.unwrap(), dir));
    }
    brokers
}

/// Wait (at most 10 s) until the SDK sees `stream` ACTIVE.
pub async fn wait_active_sdk(k: &aws_sdk_kinesis::Client, stream: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let summary = k.describe_stream_summary().stream_name(stream).send().await.unwrap();
        if summary.stream_description_summary().unwrap().stream_status().as_str() == "ACTIVE" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{stream} ACTIVE within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
