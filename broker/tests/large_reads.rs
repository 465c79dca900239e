//! GetRecords answers of up to 10 MiB go out in pieces (chunked), encoded while they are
//! sent: the pieces must make the same answer in both encodings, and SDKs must read them.

mod common;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;

const RECORDS: usize = 6_000;
const SIZE: usize = 2_048;

fn data(i: usize) -> Vec<u8> {
    (0..SIZE).map(|j| (i * 31 + j) as u8).collect()
}

/// One request: the answer's headers, its body frames and their concatenation.
async fn post(addr: SocketAddr, op: &str, content_type: &str, body: Vec<u8>) -> (http::HeaderMap, usize, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/")
        .header("host", addr.to_string())
        .header("x-amz-target", format!("Kinesis_20131202.{op}"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{op}");
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let (mut frames, mut bytes) = (0, Vec::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames += 1;
            bytes.extend_from_slice(&data);
        }
    }
    (headers, frames, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_answers_are_sent_in_pieces_that_make_the_whole_answer() {
    let b = common::start().await;
    b.create_stream("large", 1).await;
    let k = b.sdk();
    for batch in 0..RECORDS / 500 {
        let entries = (batch * 500..(batch + 1) * 500)
            .map(|i| {
                PutRecordsRequestEntry::builder().partition_key(format!("key-{i}")).data(Blob::new(data(i))).build()
            })
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let put = k.put_records().stream_name("large").set_records(Some(entries)).send().await.unwrap();
        assert_eq!(put.failed_record_count, Some(0));
    }
    let iterator = || async {
        let it = k.get_shard_iterator().stream_name("large").shard_id("shardId-000000000000");
        let it = it.shard_iterator_type(ShardIteratorType::TrimHorizon).send().await.unwrap();
        it.shard_iterator.unwrap()
    };

    // JSON: 10 MiB of records, base64 in about 14 MB of answer, sent in many pieces.
    let addr = b.running.api_addr;
    let body = serde_json::to_vec(&serde_json::json!({"ShardIterator": iterator().await})).unwrap();
    let (headers, frames, json) = post(addr, "GetRecords", "application/x-amz-json-1.1", body).await;
    assert_eq!(headers.get("transfer-encoding").map(|v| v.to_str().unwrap()), Some("chunked"));
    assert!(headers.get("content-length").is_none());
    assert!(frames > 20, "{frames} pieces of {} bytes", json.len());
    let answer: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let records = answer["Records"].as_array().unwrap();
    let json_count = records.len();
    // As many as fit in 10 MiB of keys and data.
    let bytes = |n: usize| (0..n).map(|i| SIZE + format!("key-{i}").len()).sum::<usize>();
    assert!(bytes(json_count) <= 10 << 20 && bytes(json_count + 1) > 10 << 20, "{json_count}");
    use base64::Engine;
    for (i, r) in records.iter().enumerate() {
        let got = base64::engine::general_purpose::STANDARD.decode(r["Data"].as_str().unwrap()).unwrap();
        assert_eq!(got, data(i), "record {i}");
        assert_eq!(r["PartitionKey"], format!("key-{i}"));
    }
    assert!(answer["NextShardIterator"].is_string() && answer["MillisBehindLatest"].is_number());

    // CBOR (the Java SDK's and the KCL's encoding): the same records.
    let mut body = Vec::new();
    let request = ciborium::Value::Map(vec![("ShardIterator".into(), iterator().await.into())]);
    ciborium::into_writer(&request, &mut body).unwrap();
    let (_, frames, cbor) = post(addr, "GetRecords", "application/x-amz-cbor-1.1", body).await;
    assert!(frames > 20, "{frames} pieces of {} bytes", cbor.len());
    let answer: streamfabric_api::model::GetRecordsOutput = ciborium::from_reader(cbor.as_slice()).unwrap();
    assert_eq!(answer.records.len(), json_count);
    for (i, r) in answer.records.iter().enumerate() {
        assert_eq!(r.data.0, data(i), "record {i}");
    }

    // The Rust SDK reads every record back, in order, exactly once.
    let mut it = Some(iterator().await);
    let mut read = 0;
    while let Some(current) = it.take() {
        let got = k.get_records().shard_iterator(current).send().await.unwrap();
        for r in got.records() {
            assert_eq!(r.data().as_ref(), data(read).as_slice(), "record {read}");
            read += 1;
        }
        if got.records().is_empty() {
            break;
        }
        it = got.next_shard_iterator;
    }
    assert_eq!(read, RECORDS);
}
