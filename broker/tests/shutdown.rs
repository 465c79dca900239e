//! Stopping a broker (SIGTERM in a pod) finishes the requests in flight: a request whose
//! body is still arriving when the stop begins is answered, then the broker stops
//! accepting connections.

mod common;

use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_is_answered_before_the_broker_stops() {
    let b = common::start().await;
    b.create_stream("draining", 1).await;
    let body = serde_json::to_vec(&json!({"StreamName": "draining", "PartitionKey": "k", "Data": "aGVsbG8="})).unwrap();
    let addr = b.running.api_addr;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A first request answered on the connection: the broker has certainly accepted it.
    conn.write_all(format!("GET / HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    read_answer(&mut conn).await;
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\nx-amz-target: Kinesis_20131202.PutRecord\r\n\
         content-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    conn.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let common::TestBroker { running, dir: _dir } = b;
    let stopping = tokio::spawn(running.shutdown(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "the stop waits for the request in flight");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections once stopping");

    conn.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("SequenceNumber"), "{answer}");
    assert!(tokio::time::timeout(Duration::from_secs(10), stopping).await.unwrap().unwrap(), "stopped cleanly");
}

/// Read one answer (head and a `content-length` body) off the connection.
async fn read_answer(conn: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "the connection closed mid-answer");
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await.unwrap();
    head
}
