//! The official Rust SDK drives the broker: 10,000 records into a 4-shard stream through
//! PutRecords and PutRecord, every shard read back exactly once and in order, every
//! iterator type, and paging.

mod common;

use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use md5::{Digest, Md5};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};

type Acked = BTreeMap<String, Vec<(String, String, Vec<u8>)>>; // shard -> (sequence, key, data)

fn random_key(rng: &mut impl Rng) -> String {
    let len = rng.random_range(1..=40);
    (0..len).map(|_| rng.random_range(b'!'..=b'~') as char).collect()
}

async fn read_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    kind: ShardIteratorType,
    seq: Option<&str>,
    at: Option<DateTime>,
) -> Vec<aws_sdk_kinesis::types::Record> {
    let mut it = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(seq.map(String::from))
        .set_timestamp(at)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = client.get_records().shard_iterator(&it).limit(997).send().await.unwrap();
        let n = page.records().len();
        assert!(n <= 997, "Limit respected");
        out.extend(page.records().iter().cloned());
        it = page.next_shard_iterator().expect("an open shard always has a next iterator").to_string();
        if n == 0 && page.millis_behind_latest() == Some(0) {
            return out;
        }
    }
    panic!("shard {shard} did not drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_round_trip_through_the_sdk() {
    let broker = common::start().await;
    let client = broker.sdk();
    let stream = "sdk-scenario";
    client.create_stream().stream_name(stream).shard_count(4).send().await.unwrap();
    for _ in 0..200 {
        let s = client.describe_stream_summary().stream_name(stream).send().await.unwrap();
        if s.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let shards = client.list_shards().stream_name(stream).send().await.unwrap().shards().to_vec();
    assert_eq!(shards.len(), 4);
    let ranges: HashMap<String, (u128, u128)> = shards
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (s.shard_id().to_string(), (r.starting_hash_key().parse().unwrap(), r.ending_hash_key().parse().unwrap()))
        })
        .collect();

    let mut rng = rand::rng();
    let mut acked: Acked = BTreeMap::new();
    let mut remember = |shard: &str, seq: &str, key: String, data: Vec<u8>| {
        acked.entry(shard.to_string()).or_default().push((seq.to_string(), key, data));
    };
    // 9,000 through PutRecords in batches of 500 ...
    for _ in 0..18 {
        let batch: Vec<(String, Vec<u8>)> = (0..500)
            .map(|_| {
                let size = rng.random_range(0..2048);
                (random_key(&mut rng), (0..size).map(|_| rng.random()).collect())
            })
            .collect();
        let entries = batch
            .iter()
            .map(|(k, d)| {
                PutRecordsRequestEntry::builder().partition_key(k).data(Blob::new(d.clone())).build().unwrap()
            })
            .collect();
        let out = client.put_records().stream_name(stream).set_records(Some(entries)).send().await.unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
        assert_eq!(out.records().len(), 500);
        for ((k, d), r) in batch.into_iter().zip(out.records()) {
            remember(r.shard_id().unwrap(), r.sequence_number().unwrap(), k, d);
        }
    }
    // ... and 1,000 through PutRecord.
    for i in 0..1000 {
        let key = random_key(&mut rng);
        let data: Vec<u8> = format!("single-{i}").into_bytes();
        let out = client
            .put_record()
            .stream_name(stream)
            .partition_key(&key)
            .data(Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
        remember(out.shard_id(), out.sequence_number(), key, data);
    }
    assert_eq!(acked.values().map(Vec::len).sum::<usize>(), 10_000);

    // Every shard from TRIM_HORIZON: each acknowledged record once, in order, intact, on
    // the shard whose range holds the MD5 of its key.
    for (shard, expected) in &acked {
        let got = read_shard(&client, stream, shard, ShardIteratorType::TrimHorizon, None, None).await;
        assert_eq!(got.len(), expected.len(), "{shard}: record count");
        let mut previous = None;
        for (record, (seq, key, data)) in got.iter().zip(expected) {
            let got_seq = common::seq_value(record.sequence_number());
            assert!(Some(got_seq) > previous, "{shard}: sequence numbers increase");
            previous = Some(got_seq);
            assert_eq!(record.sequence_number(), seq);
            assert_eq!(record.partition_key(), Some(key.as_str()));
            assert_eq!(record.data().as_ref(), data.as_slice());
            let hash = u128::from_be_bytes(Md5::digest(key.as_bytes()).into());
            let (lo, hi) = ranges[shard];
            assert!(lo <= hash && hash <= hi, "{shard}: routed by MD5 of the partition key");
        }
    }

    // AT_SEQUENCE_NUMBER and AFTER_SEQUENCE_NUMBER start at and after a record.
    let (shard, records) = acked.iter().next().unwrap();
    let middle = &records[records.len() / 2];
    let at = read_shard(&client, stream, shard, ShardIteratorType::AtSequenceNumber, Some(&middle.0), None).await;
    assert_eq!(at.len(), records.len() - records.len() / 2);
    assert_eq!(at[0].sequence_number(), middle.0);
    let after = read_shard(&client, stream, shard, ShardIteratorType::AfterSequenceNumber, Some(&middle.0), None).await;
    assert_eq!(after.len(), at.len() - 1);
    assert_eq!(after[0].sequence_number(), at[1].sequence_number());

    // LATEST sees only what comes after it; AT_TIMESTAMP starts at the first record at or after the time.
    let latest_it = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let nothing = client.get_records().shard_iterator(&latest_it).send().await.unwrap();
    assert!(nothing.records().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let boundary = DateTime::from_millis(streamfabric_api::types::Timestamp::now().millis());
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let key = (0..)
        .map(|i| format!("latest-{i}"))
        .find(|k| {
            let h = u128::from_be_bytes(Md5::digest(k.as_bytes()).into());
            ranges[shard].0 <= h && h <= ranges[shard].1
        })
        .unwrap();
    let fresh = client
        .put_record()
        .stream_name(stream)
        .partition_key(&key)
        .data(Blob::new(b"fresh".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.shard_id(), shard);
    let seen = client.get_records().shard_iterator(nothing.next_shard_iterator().unwrap()).send().await.unwrap();
    assert_eq!(seen.records().len(), 1);
    assert_eq!(seen.records()[0].sequence_number(), fresh.sequence_number());
    let since = read_shard(&client, stream, shard, ShardIteratorType::AtTimestamp, None, Some(boundary)).await;
    assert_eq!(since.len(), 1, "AT_TIMESTAMP starts at the first record after the boundary");
    assert_eq!(since[0].data().as_ref(), b"fresh");

    // Paging: ListShards by NextToken, DescribeStream by ExclusiveStartShardId, ListStreams.
    let mut seen_shards = Vec::new();
    let mut page = client.list_shards().stream_name(stream).max_results(1).send().await.unwrap();
    loop {
        assert!(page.shards().len() <= 1);
        seen_shards.extend(page.shards().iter().map(|s| s.shard_id().to_string()));
        match page.next_token() {
            Some(token) => page = client.list_shards().next_token(token).max_results(1).send().await.unwrap(),
            None => break,
        }
    }
    assert_eq!(seen_shards, acked.keys().cloned().collect::<Vec<_>>());
    let mut described = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let d = client
            .describe_stream()
            .stream_name(stream)
            .limit(1)
            .set_exclusive_start_shard_id(start.clone())
            .send()
            .await
            .unwrap();
        let desc = d.stream_description().unwrap();
        described.extend(desc.shards().iter().map(|s| s.shard_id().to_string()));
        if !desc.has_more_shards() {
            break;
        }
        start = described.last().cloned();
    }
    assert_eq!(described, seen_shards);
    for name in ["sdk-b", "sdk-c"] {
        client.create_stream().stream_name(name).shard_count(1).send().await.unwrap();
    }
    let mut names = Vec::new();
    let mut listed = client.list_streams().limit(1).send().await.unwrap();
    loop {
        names.extend(listed.stream_names().iter().cloned());
        assert_eq!(listed.stream_summaries().len(), listed.stream_names().len());
        match (listed.has_more_streams(), listed.next_token()) {
            (true, Some(t)) => listed = client.list_streams().next_token(t).limit(1).send().await.unwrap(),
            _ => break,
        }
    }
    assert_eq!(names, vec!["sdk-b", "sdk-c", "sdk-scenario"]);
}

/// AWS answers operations that have no output with an empty body (JSON and CBOR alike);
/// the SDKs read it as the empty output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_without_output_answer_with_an_empty_body() {
    let b = common::start().await;
    let create = serde_json::to_vec(&serde_json::json!({"StreamName": "quiet", "ShardCount": 1})).unwrap();
    let (status, content_type, body) =
        b.raw("Kinesis_20131202.CreateStream", "application/x-amz-json-1.1", create).await;
    assert_eq!((status, content_type.as_str(), body.len()), (200, "application/x-amz-json-1.1", 0));
    common::wait_active(&b, "quiet").await;
    let mut tags = Vec::new();
    ciborium::into_writer(&serde_json::json!({"StreamName": "quiet", "Tags": {"team": "a"}}), &mut tags).unwrap();
    let (status, _, body) = b.raw("Kinesis_20131202.AddTagsToStream", "application/x-amz-cbor-1.1", tags).await;
    assert_eq!((status, body.len()), (200, 0), "CBOR too");
    // Through the SDK: the same calls succeed, and an answer with output still has it.
    let k = b.sdk();
    k.increase_stream_retention_period().stream_name("quiet").retention_period_hours(48).send().await.unwrap();
    let tags = k.list_tags_for_stream().stream_name("quiet").send().await.unwrap().tags;
    assert_eq!(tags.len(), 1);
    k.delete_stream().stream_name("quiet").send().await.unwrap();
}
