//! What the sidecar's test files share: an AWS SDK client, waiting for a stream, reading a
//! whole stream back, and plain HTTP calls.
// Each test file uses some of these.
#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use std::time::Duration;

pub fn sdk(endpoint: &str) -> aws_sdk_kinesis::Client {
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "sidecar-tests"))
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

pub async fn wait_active(k: &aws_sdk_kinesis::Client, stream: &str) {
    for _ in 0..500 {
        let d = k.describe_stream_summary().stream_name(stream).send().await.unwrap();
        if d.stream_description_summary.unwrap().stream_status.as_str() == "ACTIVE" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{stream} did not become ACTIVE");
}

/// A broker in process on a free port with `stream` created and ACTIVE: the broker, its
/// URL and a client of it.
pub async fn broker_with_stream(
    dir: &std::path::Path,
    stream: &str,
    shards: i32,
) -> (streamfabric_broker::Running, String, aws_sdk_kinesis::Client) {
    let mut config = streamfabric_broker::BrokerConfig::for_dir(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let broker = streamfabric_broker::start(config).await.unwrap();
    let url = format!("http://{}", broker.api_addr);
    let client = sdk(&url);
    client.create_stream().stream_name(stream).shard_count(shards).send().await.unwrap();
    wait_active(&client, stream).await;
    (broker, url, client)
}

/// One shard's records as stored: (shard id, hash key range start, end, [(sequence, key, data)]).
pub type ShardRecords = (String, u128, u128, Vec<(String, String, bytes::Bytes)>);

/// Every record of `stream`, shard by shard, from TRIM_HORIZON to the tip.
pub async fn shard_records(k: &aws_sdk_kinesis::Client, stream: &str) -> Vec<ShardRecords> {
    let mut out = Vec::new();
    let shards = k.list_shards().stream_name(stream).send().await.unwrap().shards.unwrap_or_default();
    for shard in shards {
        let range = shard.hash_key_range.unwrap();
        let (start, end) = (range.starting_hash_key.parse().unwrap(), range.ending_hash_key.parse().unwrap());
        let mut records = Vec::new();
        let mut it = k
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard.shard_id)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(i) = it {
            let page = k.get_records().shard_iterator(i).limit(10_000).send().await.unwrap();
            records.extend(page.records.iter().map(|r| {
                let key = r.partition_key().unwrap_or_default().to_string();
                (r.sequence_number.clone(), key, bytes::Bytes::copy_from_slice(r.data.as_ref()))
            }));
            if page.records.is_empty() && page.millis_behind_latest == Some(0) {
                break;
            }
            it = page.next_shard_iterator;
        }
        out.push((shard.shard_id, start, end, records));
    }
    out
}

/// One HTTP request: the status and the body.
pub async fn request(method: http::Method, url: &str, body: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request =
        http::Request::builder().method(method).uri(url).body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// One HTTP request answered with JSON.
pub async fn request_json(method: http::Method, url: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = request(method, url, body).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}")))
}
