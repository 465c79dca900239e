//! SigV4 with `--credentials`: the AWS Rust SDK with a configured key works unchanged
//! (JSON and CBOR, SubscribeToShard's event stream, the DynamoDB lease store); a wrong
//! secret, an unknown key, a tampered body, a request signed more than 5 minutes ago, a
//! credential scoped to another region or service, and no signature each get AWS's error,
//! are counted by reason, and store nothing. A rotated credentials file is served without a
//! restart. In a cluster, requests forwarded between brokers carry a peer proof, and a
//! request that only claims to be forwarded is refused.

mod common;

use aws_sdk_kinesis::primitives::Blob;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use streamfabric_api::sigv4;

const KEY: &str = "AKIDSTREAMFABRIC";
const SECRET: &str = "s3cr3t/with+chars";

fn write_credentials(path: &Path, lines: &str) {
    // Written aside and renamed, as a Kubernetes Secret volume swaps its files.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, lines).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(dir: &Path) -> common::TestBroker {
    let file = dir.join("credentials");
    write_credentials(&file, &format!("# the tests' key\n{KEY} {SECRET}\n"));
    common::start_with(|c| c.credentials = Some(file)).await
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A request signed here (as the SDKs sign), then sent with `body` (which may differ from
/// the signed one) and `extra` headers.
struct Raw<'a> {
    target: &'a str,
    signed_body: &'a [u8],
    body: &'a [u8],
    key: &'a str,
    secret: &'a str,
    at: i64,
    region: &'a str,
    service: &'a str,
    extra: &'a [(&'a str, &'a str)],
    sign: bool,
}

impl Default for Raw<'_> {
    fn default() -> Self {
        Raw {
            target: "Kinesis_20131202.ListStreams",
            signed_body: b"{}",
            body: b"{}",
            key: KEY,
            secret: SECRET,
            at: now(),
            region: "us-east-1",
            service: "kinesis",
            extra: &[],
            sign: true,
        }
    }
}

async fn send(addr: SocketAddr, r: Raw<'_>) -> (u16, Value) {
    let host = addr.to_string();
    let date = sigv4::amz_date(r.at);
    let content_type =
        if r.target.starts_with("DynamoDB") { "application/x-amz-json-1.0" } else { "application/x-amz-json-1.1" };
    let mut headers: Vec<(&str, &str)> =
        vec![("host", &host), ("content-type", content_type), ("x-amz-date", &date), ("x-amz-target", r.target)];
    headers.extend_from_slice(r.extra);
    let hash = sigv4::sha256_hex(r.signed_body);
    let payload_hash = r.extra.iter().find(|(n, _)| *n == "x-amz-content-sha256").map_or(hash.as_str(), |(_, v)| v);
    let signed = sigv4::Request { method: "POST", path: "/", query: "", headers: &headers, payload_hash };
    let authorization = sigv4::authorization(&signed, r.key, r.secret, r.region, r.service, &date);
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post("/");
    for (name, value) in &headers {
        req = req.header(*name, *value);
    }
    if r.sign {
        req = req.header("authorization", authorization);
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::copy_from_slice(r.body))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["__type"].as_str().map_or("", |t| t.rsplit('#').next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_are_served_and_every_bad_signature_gets_awss_error_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let k = common::signed_client(&b.endpoint(), KEY, SECRET);
    k.create_stream().stream_name("s").shard_count(1).send().await.unwrap();
    common::wait_active_sdk(&k, "s").await;
    k.put_record().stream_name("s").partition_key("k").data(Blob::new("kept")).send().await.unwrap();
    let before = common::fingerprint(&k).await;
    let addr = b.running.api_addr;

    // The SDK with a wrong secret, and with an unknown key.
    let e = common::signed_client(&b.endpoint(), KEY, "wrong")
        .list_streams()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.meta().code(), Some("InvalidSignatureException"), "{e:?}");
    let e = common::signed_client(&b.endpoint(), "AKIDNOBODY", SECRET)
        .list_streams()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.meta().code(), Some("UnrecognizedClientException"), "{e:?}");

    let put = br#"{"StreamName":"s","PartitionKey":"k","Data":"AAAA"}"#;
    let tampered = br#"{"StreamName":"s","PartitionKey":"k","Data":"BBBB"}"#;
    let create = br#"{"StreamName":"intruder","ShardCount":1}"#;
    let ten_minutes_ago = now() - 600;
    let cases: Vec<(&str, Raw<'_>, &str, &str)> = vec![
        (
            "no signature",
            Raw { target: "Kinesis_20131202.CreateStream", body: create, sign: false, ..Raw::default() },
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ),
        (
            "tampered body",
            Raw { target: "Kinesis_20131202.PutRecord", signed_body: put, body: tampered, ..Raw::default() },
            "InvalidSignatureException",
            "does not match",
        ),
        (
            "tampered body, hash given",
            Raw {
                target: "Kinesis_20131202.PutRecord",
                signed_body: put,
                body: tampered,
                extra: &[("x-amz-content-sha256", "5d8e3a53f5c3f35f4da0ba3f9a8d7e5b2c1a90b6a8e1c8a6f1b3a9e0d2c4b6a8")],
                ..Raw::default()
            },
            "InvalidSignatureException",
            "x-amz-content-sha256",
        ),
        (
            "unsigned payload outside event streams",
            Raw {
                target: "Kinesis_20131202.CreateStream",
                signed_body: b"",
                body: create,
                extra: &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
                ..Raw::default()
            },
            "InvalidSignatureException",
            "x-amz-content-sha256",
        ),
        (
            "replayed after 10 minutes",
            Raw {
                target: "Kinesis_20131202.CreateStream",
                signed_body: create,
                body: create,
                at: ten_minutes_ago,
                ..Raw::default()
            },
            "InvalidSignatureException",
            "Signature expired",
        ),
        (
            "from the future",
            Raw {
                target: "Kinesis_20131202.CreateStream",
                signed_body: create,
                body: create,
                at: now() + 600,
                ..Raw::default()
            },
            "InvalidSignatureException",
            "not yet current",
        ),
        (
            "another region",
            Raw {
                target: "Kinesis_20131202.CreateStream",
                signed_body: create,
                body: create,
                region: "eu-west-1",
                ..Raw::default()
            },
            "InvalidSignatureException",
            "region",
        ),
        (
            "another service",
            Raw {
                target: "Kinesis_20131202.CreateStream",
                signed_body: create,
                body: create,
                service: "dynamodb",
                ..Raw::default()
            },
            "InvalidSignatureException",
            "'kinesis'",
        ),
        (
            "a forwarded request without a peer proof",
            Raw {
                target: "Kinesis_20131202.CreateStream",
                body: create,
                sign: false,
                extra: &[("x-streamfabric-forwarded-by", "b-9")],
                ..Raw::default()
            },
            "MissingAuthenticationTokenException",
            "peer-proof",
        ),
        (
            "the lease store, wrong secret",
            Raw {
                target: "DynamoDB_20120810.CreateTable",
                signed_body: b"{}",
                body: b"{}",
                service: "dynamodb",
                secret: "wrong",
                ..Raw::default()
            },
            "InvalidSignatureException",
            "does not match",
        ),
    ];
    for (what, raw, expected, message) in cases {
        let (status, v) = send(addr, raw).await;
        assert_eq!((status, code(&v)), (400, expected), "{what}: {v}");
        assert!(v["message"].as_str().unwrap_or_default().contains(message), "{what}: {v}");
    }
    let (status, v) = send(addr, Raw { signed_body: b"{}", body: b"{}", ..Raw::default() }).await;
    assert_eq!(status, 200, "the same request signed right is served: {v}");
    let (status, v) = send(
        addr,
        Raw {
            target: "DynamoDB_20120810.ListTables",
            signed_body: b"{}",
            body: b"{}",
            service: "dynamodb",
            ..Raw::default()
        },
    )
    .await;
    assert_eq!(status, 200, "the lease store takes dynamodb-scoped signatures: {v}");
    assert_eq!(common::fingerprint(&k).await, before, "nothing refused was stored");

    // CBOR and the event stream, as the SDKs sign them.
    let consumer = k
        .register_stream_consumer()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/s")
        .consumer_name("c")
        .send()
        .await
        .unwrap();
    let arn = consumer.consumer().unwrap().consumer_arn().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition};
        let position = StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon).build().unwrap();
        match k
            .subscribe_to_shard()
            .consumer_arn(&arn)
            .shard_id("shardId-000000000000")
            .starting_position(position)
            .send()
            .await
        {
            Ok(out) => break out.event_stream,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    let mut events = events;
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap().unwrap();
    let aws_sdk_kinesis::types::SubscribeToShardEventStream::SubscribeToShardEvent(event) = event else {
        panic!("a records event first: {event:?}")
    };
    assert_eq!(event.records()[0].data().as_ref(), b"kept", "a signed subscription streams");

    let (_, metrics) = common::http_get(b.running.admin_addr, "/metrics").await;
    for reason in ["missing", "signature", "unknown_key", "expired", "scope", "payload", "peer"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!("streamfabric_auth_failures_total{{reason=\"{reason}\"}}"))),
            "failures counted as {reason}"
        );
    }
    assert!(metrics.contains(&format!("streamfabric_auth_requests_total{{access_key_id=\"{KEY}\"}}")));
    assert!(metrics.contains("streamfabric_auth_keys 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_credentials_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    common::signed_client(&b.endpoint(), KEY, SECRET).list_streams().send().await.unwrap();
    write_credentials(&dir.path().join("credentials"), "AKIDROTATED newsecret\n");
    let rotated = common::signed_client(&b.endpoint(), "AKIDROTATED", "newsecret");
    let deadline = Instant::now() + Duration::from_secs(10);
    while rotated.list_streams().send().await.is_err() {
        assert!(Instant::now() < deadline, "the new key is served within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e =
        common::signed_client(&b.endpoint(), KEY, SECRET).list_streams().send().await.unwrap_err().into_service_error();
    assert_eq!(e.meta().code(), Some("UnrecognizedClientException"), "the old key is gone: {e:?}");
    // A broken file keeps the keys in use.
    write_credentials(&dir.path().join("credentials"), "not a pair of words here\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    rotated.list_streams().send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_requests_are_not_authenticated() {
    let b = common::start().await;
    let (status, v) = send(b.running.api_addr, Raw { sign: false, ..Raw::default() }).await;
    assert_eq!(status, 200, "{v}");
    let (_, metrics) = common::http_get(b.running.admin_addr, "/metrics").await;
    assert!(metrics.contains("streamfabric_auth_keys 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_forwarded_requests_carry_a_peer_proof() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("credentials");
    write_credentials(&file, &format!("{KEY} {SECRET}\n"));
    let brokers = common::start_signed_cluster(root.path(), &file).await;
    let endpoint = |i: usize| format!("http://{}", brokers[i].0.api_addr);
    let k0 = common::signed_client(&endpoint(0), KEY, SECRET);
    k0.create_stream().stream_name("c").shard_count(4).send().await.unwrap();
    // Each broker owns some of the shards once the cluster has assigned them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut put = 0;
    while put < 200 {
        assert!(Instant::now() < deadline, "200 records written through both brokers within 30 s ({put})");
        let k = common::signed_client(&endpoint(put % 2), KEY, SECRET);
        match k
            .put_record()
            .stream_name("c")
            .partition_key(format!("key-{put}"))
            .data(Blob::new(format!("r{put}")))
            .send()
            .await
        {
            Ok(_) => put += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let (_, metrics) = common::http_get(brokers[0].0.admin_addr, "/metrics").await;
    assert!(
        !metrics.lines().any(|l| l.starts_with("streamfabric_auth_failures_total{reason=\"peer\"}")),
        "no forwarded request was refused"
    );
    let mut read = 0;
    let k1 = common::signed_client(&endpoint(1), KEY, SECRET);
    for shard in k1.list_shards().stream_name("c").send().await.unwrap().shards() {
        let it = k1
            .get_shard_iterator()
            .stream_name("c")
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        read += k1.get_records().shard_iterator(it.shard_iterator().unwrap()).send().await.unwrap().records().len();
    }
    assert_eq!(read, 200, "every record read back through the other broker");
}
