//! The codec's share of the hot paths: decoding a PutRecords body (500 x 100 B, 400 x 1 KiB; CBOR
//! data copied or shared), hashing their partition keys, encoding its answer, and encoding a
//! GetRecords answer.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use streamfabric_api::Format;
use streamfabric_api::hashkey::hash_of_partition_key;
use streamfabric_api::model::{GetRecordsOutput, PutRecordsInput, PutRecordsRequestEntry, Record};
use streamfabric_api::put_records_answer::{PutRecordsAnswer, WrittenShard};
use streamfabric_api::records_answer::RecordsAnswer;
use streamfabric_api::sequence::SequenceNumber;
use streamfabric_api::types::{Blob, Timestamp};

fn put_records_body(format: Format, records: usize, size: usize) -> Vec<u8> {
    let input = PutRecordsInput {
        stream_name: Some("bench".into()),
        stream_arn: None,
        records: Some(
            (0..records)
                .map(|i| PutRecordsRequestEntry {
                    data: Some(Blob(Bytes::from(vec![(i % 251) as u8; size]))),
                    partition_key: Some(format!("partition-key-{i:08}")),
                    explicit_hash_key: None,
                })
                .collect(),
        ),
    };
    format.encode(&input)
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for (format, name) in [(Format::Json, "json"), (Format::Cbor, "cbor")] {
        for (records, size, label) in [(500, 100, "500x100B"), (400, 1024, "400x1KiB")] {
            let body = put_records_body(format, records, size);
            group.throughput(Throughput::Elements(records as u64));
            group.bench_function(format!("decode_put_records_{label}_{name}"), |b| {
                b.iter(|| black_box(format.decode::<PutRecordsInput>(black_box(&body)).unwrap()))
            });
            if format == Format::Cbor {
                // As the broker decodes: record data stays in the body.
                let body = Bytes::from(body);
                group.bench_function(format!("decode_put_records_{label}_{name}_shared"), |b| {
                    b.iter(|| black_box(format.decode_shared::<PutRecordsInput>(black_box(&body)).unwrap()))
                });
            }
        }
    }
    let keys: Vec<String> = (0..500).map(|i| format!("partition-key-{i:08}")).collect();
    group.throughput(Throughput::Elements(500));
    group.bench_function("md5_hash_key_x500", |b| {
        b.iter(|| keys.iter().map(|k| hash_of_partition_key(black_box(k))).fold(0u128, |a, h| a ^ h))
    });
    group.throughput(Throughput::Elements(500));
    group.bench_function("sequence_number_text_x500", |b| {
        b.iter(|| (0..500u64).map(|o| SequenceNumber::new(3, black_box(o)).text().len()).sum::<usize>())
    });
    group.bench_function("sequence_number_to_string_x500", |b| {
        b.iter(|| (0..500u64).map(|o| SequenceNumber::new(3, black_box(o)).to_string().len()).sum::<usize>())
    });
    // A PutRecords answer of 500 records over 4 shards: as the broker encodes it, and as it
    // did before (building the model type's two Strings per record, then encoding that).
    let put_answer = PutRecordsAnswer {
        shards: (0..4).map(|i| WrittenShard { index: i, id: format!("shardId-{i:012}") }).collect(),
        records: (0..500u64).map(|i| Ok(((i % 4) as usize, 1_000_000 + i))).collect(),
        encryption_type: "NONE".into(),
    };
    for format in [Format::Json, Format::Cbor] {
        let name = if format == Format::Json { "json" } else { "cbor" };
        group.throughput(Throughput::Elements(500));
        group.bench_function(format!("encode_put_records_answer_x500_{name}"), |b| {
            b.iter(|| black_box(put_answer.encode(format)))
        });
        group.bench_function(format!("encode_put_records_answer_x500_{name}_via_model"), |b| {
            b.iter(|| black_box(format.encode(&put_answer.clone().into_output())))
        });
    }
    let answer = GetRecordsOutput {
        records: (0..1000)
            .map(|i| Record {
                sequence_number: format!("49{:032}", i),
                approximate_arrival_timestamp: Timestamp(1_700_000_000_000 + i),
                data: Blob(Bytes::from(vec![7u8; 1024])),
                partition_key: format!("partition-key-{i:08}"),
                encryption_type: None,
            })
            .collect(),
        next_shard_iterator: Some("x".repeat(120)),
        millis_behind_latest: 0,
        child_shards: None,
    };
    group.throughput(Throughput::Bytes(1000 * 1024));
    group.bench_function("encode_get_records_1000x1KiB_json", |b| b.iter(|| black_box(Format::Json.encode(&answer))));
    // As the broker sends it: piece by piece (the answer's clone is set-up, not measured).
    group.bench_function("encode_get_records_1000x1KiB_json_pieces", |b| {
        b.iter_batched(
            || answer.clone(),
            |answer| RecordsAnswer::new(Format::Json, answer).map(|piece| piece.len()).sum::<usize>(),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
