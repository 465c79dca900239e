//! Reading a sealed segment back from the object store through ranged GETs of its frames:
//! cold (a fresh frame cache: footer + every frame fetched and decompressed) and warm (every
//! frame cached), per compression. The store is `file://` in a temporary directory, so the
//! figures are the broker's side of a remote read (GET, CRC, decompress, record parsing);
//! add the store's latency and bandwidth for S3 or MinIO (scripts/e2e-objects prints those).
//!
//!     cargo bench -p streamfabric-broker --bench remote_reads

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamfabric_broker::log::{FlushPolicy, LogConfig, NewRecord, ShardLog};
use streamfabric_broker::tier::segments::{SegmentData, SegmentUpload};
use streamfabric_broker::tier::{
    CacheCounters, Compression, FrameCache, RemoteReadRequest, RemoteReader, StoreOptions, TierStore,
};

const RECORDS: usize = 16_000;
const RECORD_BYTES: usize = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn remote_reads(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // One sealed segment of 16,000 records of 1,000 bytes (text-like, so compressible).
    let log = ShardLog::open(
        &dir.path().join("log"),
        LogConfig { segment_max_bytes: 1 << 30, flush: FlushPolicy::Never, ..LogConfig::default() },
    )
    .unwrap();
    for b in 0..RECORDS / 500 {
        let batch = (0..500)
            .map(|i| NewRecord {
                partition_key: format!("pk-{b}-{i}"),
                data: Bytes::from(
                    format!("event {b:05}-{i:03} user=u{} action=click page=/p/{} ", i % 97, i % 13).repeat(40),
                )
                .slice(..RECORD_BYTES),
            })
            .collect();
        rt.block_on(log.append(batch)).unwrap();
    }
    log.roll().unwrap();
    let sealed = log.sealed_segments().pop().unwrap();
    let url = format!("file://{}", dir.path().join("objects").display());
    let tier = TierStore::open(&url, &StoreOptions::default()).unwrap();
    let data_bytes = (RECORDS * RECORD_BYTES) as u64;

    let mut group = c.benchmark_group("remote_read_16k_x_1KB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(data_bytes));
    for (i, compression) in [Compression::Zstd, Compression::Lz4, Compression::None].into_iter().enumerate() {
        let upload = SegmentUpload {
            stream: format!("bench-{compression}"),
            shard: "shardId-000000000000".into(),
            epoch: 0,
            base_offset: sealed.base_offset,
            end_offset: sealed.end_offset,
            first_ts_ms: sealed.first_ts_ms as u64,
            last_ts_ms: sealed.last_ts_ms as u64,
            records: sealed.end_offset - sealed.base_offset,
            compression,
            data: SegmentData::File(sealed.path.clone()),
        };
        let report = rt.block_on(tier.upload_segment(upload)).unwrap();
        let manifest = rt
            .block_on(tier.manifest(&format!("bench-{compression}"), "shardId-000000000000").unwrap().load())
            .unwrap()
            .unwrap()
            .0;
        if i == 0 {
            println!("segment: {} raw bytes, {} records", report.raw_bytes, sealed.end_offset - sealed.base_offset);
        }
        println!("{compression}: {} stored bytes", report.stored_bytes);
        let all = RemoteReadRequest {
            from: 0,
            until: u64::MAX,
            max_records: usize::MAX,
            max_bytes: usize::MAX,
            min_timestamp_ms: i64::MIN,
        };
        group.bench_function(format!("{compression}/cold"), |b| {
            b.iter(|| {
                let reader = RemoteReader::new(
                    tier.clone(),
                    Arc::new(FrameCache::new(256 << 20, CacheCounters::unregistered())),
                );
                let got = rt.block_on(reader.read(&manifest, all)).unwrap();
                assert_eq!(got.records.len(), RECORDS);
            })
        });
        let warm = RemoteReader::new(tier.clone(), Arc::new(FrameCache::new(256 << 20, CacheCounters::unregistered())));
        rt.block_on(warm.read(&manifest, all)).unwrap();
        group.bench_function(format!("{compression}/warm"), |b| {
            b.iter(|| {
                let got = rt.block_on(warm.read(&manifest, all)).unwrap();
                assert_eq!(got.records.len(), RECORDS);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, remote_reads);
criterion_main!(benches);
