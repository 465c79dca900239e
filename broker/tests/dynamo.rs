//! The DynamoDB-compatible lease store's guarantee: two brokers on one object store racing
//! for the same item with conditional writes never both win (exactly one of each pair of
//! racing creates and of racing counter updates succeeds, the other gets
//! ConditionalCheckFailedException), and both see the same table afterwards. The answers
//! themselves are compared with moto's DynamoDB server in e2e-compat (e2e/dynamo/oracle.py).

mod common;

use serde_json::{Value, json};
use std::net::SocketAddr;

async fn dynamo(addr: SocketAddr, op: &str, body: Value) -> (u16, Value) {
    let target = format!("DynamoDB_20120810.{op}");
    let (status, content_type, bytes) =
        common::raw_post(addr, &target, "application/x-amz-json-1.0", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(content_type, "application/x-amz-json-1.0");
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Of two answers to racing writes: exactly one success and one ConditionalCheckFailedException.
fn one_winner(a: &(u16, Value), b: &(u16, Value)) -> usize {
    let failed = |r: &(u16, Value)| {
        r.0 == 400 && r.1["__type"] == "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"
    };
    match (a.0 == 200, b.0 == 200) {
        (true, false) if failed(b) => 0,
        (false, true) if failed(a) => 1,
        _ => panic!("exactly one of two racing conditional writes wins: {a:?} {b:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_on_one_store_never_both_win_a_conditional_write() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let a = common::start_with(|c| c.object_store = Some(url.clone())).await;
    let b = common::start_with(|c| c.object_store = Some(url.clone())).await;
    let (a, b) = (a.running.api_addr, b.running.api_addr);
    let table = "race-leases";
    let (status, answer) = dynamo(
        a,
        "CreateTable",
        json!({"TableName": table, "BillingMode": "PAY_PER_REQUEST",
               "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
               "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = dynamo(b, "DescribeTable", json!({"TableName": table})).await;
    assert_eq!((status, answer["Table"]["TableStatus"].as_str()), (200, Some("ACTIVE")), "one table, seen at both");

    const ROUNDS: usize = 20;
    let mut wins = [0, 0];
    for round in 0..ROUNDS {
        let key = format!("shardId-{round:012}");
        let create = |owner: &str| {
            json!({"TableName": table, "ConditionExpression": "attribute_not_exists(leaseKey)",
                   "Item": {"leaseKey": {"S": key}, "leaseOwner": {"S": owner}, "leaseCounter": {"N": "1"}}})
        };
        let (ra, rb) = tokio::join!(dynamo(a, "PutItem", create("a")), dynamo(b, "PutItem", create("b")));
        let creator = one_winner(&ra, &rb);
        // Then both take the lease at counter 1, as KCL workers do (legacy Expected).
        let take = |owner: &str| {
            json!({"TableName": table, "Key": {"leaseKey": {"S": key}},
                   "Expected": {"leaseCounter": {"Value": {"N": "1"}}},
                   "AttributeUpdates": {"leaseOwner": {"Value": {"S": owner}},
                                        "leaseCounter": {"Value": {"N": "1"}, "Action": "ADD"}}})
        };
        let (ra, rb) = tokio::join!(dynamo(a, "UpdateItem", take("a")), dynamo(b, "UpdateItem", take("b")));
        let taker = one_winner(&ra, &rb);
        wins[taker] += 1;
        let (_, got) =
            dynamo([a, b][creator], "GetItem", json!({"TableName": table, "Key": {"leaseKey": {"S": key}}})).await;
        assert_eq!(got["Item"]["leaseCounter"]["N"], "2", "one update applied: {got}");
        assert_eq!(got["Item"]["leaseOwner"]["S"], ["a", "b"][taker], "the winner's: {got}");
    }
    eprintln!("racing takes won by a: {}, by b: {}", wins[0], wins[1]);
    for addr in [a, b] {
        let (status, scanned) = dynamo(addr, "Scan", json!({"TableName": table})).await;
        assert_eq!((status, scanned["Count"].as_u64()), (200, Some(ROUNDS as u64)), "{scanned}");
    }
    let (status, _) = dynamo(b, "DeleteTable", json!({"TableName": table})).await;
    assert_eq!(status, 200);
    let (status, gone) = dynamo(a, "GetItem", json!({"TableName": table, "Key": {"leaseKey": {"S": "x"}}})).await;
    assert_eq!(
        (status, gone["__type"].as_str()),
        (400, Some("com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"))
    );
    // An operation outside the subset is refused by name.
    let (status, refused) = dynamo(a, "BatchWriteItem", json!({})).await;
    assert_eq!(status, 400);
    assert!(refused["message"].as_str().unwrap().contains("BatchWriteItem"), "{refused}");
}
