//! Shard log throughput: appends of PutRecords-sized batches (500 x 100-byte records), alone and
//! as the broker sees them (4 shards, 8 batches in flight each, so group commit merges them),
//! under FlushPolicy::Always and ::Never; appends of 400 x 1 KiB records alone; and reads of
//! 1,000 records.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use streamfabric_broker::log::{FlushPolicy, LogConfig, NewRecord, ShardLog};

const BATCH: usize = 500;
const RECORD_BYTES: usize = 100;
const SHARDS: usize = 4;
const IN_FLIGHT_PER_SHARD: usize = 8;

fn batch(payload: &Bytes) -> Vec<NewRecord> {
    batch_of(BATCH, payload)
}

fn batch_of(records: usize, payload: &Bytes) -> Vec<NewRecord> {
    (0..records).map(|i| NewRecord { partition_key: format!("pk-{i:05}"), data: payload.clone() }).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn open(dir: &std::path::Path, flush: FlushPolicy) -> ShardLog {
    ShardLog::open(dir, LogConfig { flush, ..LogConfig::default() }).unwrap()
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let payload = Bytes::from(vec![0xAB; RECORD_BYTES]);
    let mut group = c.benchmark_group("log_append_500x100B");
    for (name, flush) in [("always", FlushPolicy::Always), ("never", FlushPolicy::Never)] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), flush);
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("{name}/1_shard_1_in_flight"), |b| {
            b.iter_batched(
                || batch(&payload),
                |records| rt.block_on(log.append(records)).unwrap(),
                BatchSize::PerIteration,
            )
        });

        let dir = tempfile::tempdir().unwrap();
        let logs: Arc<Vec<ShardLog>> =
            Arc::new((0..SHARDS).map(|s| open(&dir.path().join(format!("shard-{s}")), flush)).collect());
        group.throughput(Throughput::Elements((SHARDS * IN_FLIGHT_PER_SHARD * BATCH) as u64));
        group.bench_function(format!("{name}/{SHARDS}_shards_{IN_FLIGHT_PER_SHARD}_in_flight"), |b| {
            b.iter_batched(
                || (0..SHARDS * IN_FLIGHT_PER_SHARD).map(|_| batch(&payload)).collect::<Vec<_>>(),
                |batches| {
                    rt.block_on(async {
                        let tasks: Vec<_> = batches
                            .into_iter()
                            .enumerate()
                            .map(|(i, records)| {
                                let logs = logs.clone();
                                tokio::spawn(async move { logs[i % SHARDS].append(records).await.unwrap() })
                            })
                            .collect();
                        for task in tasks {
                            task.await.unwrap();
                        }
                    })
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

/// Large records: what the append costs beyond the disk is mostly moving their bytes.
fn append_large(c: &mut Criterion) {
    const LARGE_BATCH: usize = 400;
    let rt = runtime();
    let payload = Bytes::from(vec![0xAB; 1024]);
    let mut group = c.benchmark_group("log_append_400x1KiB");
    group.throughput(Throughput::Bytes((LARGE_BATCH * payload.len()) as u64));
    for (name, flush) in [("always", FlushPolicy::Always), ("never", FlushPolicy::Never)] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), flush);
        group.bench_function(format!("{name}/1_shard_1_in_flight"), |b| {
            b.iter_batched(
                || batch_of(LARGE_BATCH, &payload),
                |records| rt.block_on(log.append(records)).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    const RECORDS: u64 = 200_000;
    const READ: usize = 1000;
    let rt = runtime();
    let payload = Bytes::from(vec![0xCD; RECORD_BYTES]);
    let dir = tempfile::tempdir().unwrap();
    let log = ShardLog::open(
        dir.path(),
        LogConfig { flush: FlushPolicy::Never, segment_max_bytes: 8 << 20, ..LogConfig::default() },
    )
    .unwrap();
    for _ in 0..RECORDS / BATCH as u64 {
        rt.block_on(log.append(batch(&payload))).unwrap();
    }
    let mut group = c.benchmark_group("log_read");
    group.throughput(Throughput::Elements(READ as u64));
    let mut from = 0;
    group.bench_function(format!("{READ}_records_of_100B"), |b| {
        b.iter(|| {
            let records = log.read(from, READ, 10 << 20).unwrap();
            assert_eq!(records.len(), READ);
            from = (from + 7 * READ as u64 + 13) % (RECORDS - READ as u64);
            records
        })
    });
    group.finish();
}

criterion_group!(benches, append, append_large, read);
criterion_main!(benches);
