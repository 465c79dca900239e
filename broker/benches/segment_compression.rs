//! Compressing a sealed segment into its object (`tier::frames::encode`, frames of 256 KiB) at
//! zstd levels 1 and 3, for two kinds of records: the load generator's (an id, then filler
//! drawn once) and JSON events. Prints each object's size once, to weigh speed against ratio.
//!
//!     cargo bench -p streamfabric-broker --bench segment_compression

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, RngCore, SeedableRng};
use streamfabric_broker::log::{FlushPolicy, LogConfig, NewRecord, ShardLog};
use streamfabric_broker::tier::Compression;
use streamfabric_broker::tier::frames::{self, DEFAULT_FRAME_BYTES};

const RECORDS: usize = 40_000;

/// A segment file of `RECORDS` records made by `record`.
fn segment(mut record: impl FnMut(usize) -> Vec<u8>) -> Bytes {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_max_bytes: 1 << 30, flush: FlushPolicy::Never, ..LogConfig::default() };
    let log = ShardLog::open(dir.path(), config).unwrap();
    for b in 0..RECORDS / 500 {
        let batch = (0..500)
            .map(|i| NewRecord {
                partition_key: format!("key-{}", (b * 500 + i) % 7919),
                data: Bytes::from(record(b * 500 + i)),
            })
            .collect();
        rt.block_on(log.append(batch)).unwrap();
    }
    log.roll().unwrap();
    let sealed = log.sealed_segments().pop().unwrap();
    Bytes::from(std::fs::read(sealed.path).unwrap())
}

fn segment_compression(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut filler = vec![0u8; 92];
    rng.fill_bytes(&mut filler);
    let loadgen = segment(|i| [&(i as u64).to_be_bytes()[..], &filler].concat());
    let pages = ["/home", "/cart", "/checkout", "/product/", "/search?q="];
    let events = segment(|i| {
        format!(
            r#"{{"event_id":"{:016x}","ts":{},"user":"u{:06}","page":"{}{}","latency_ms":{},"country":"{}"}}"#,
            rng.random::<u64>(),
            1_765_000_000_000u64 + i as u64 * 13,
            rng.random_range(0..1_000_000),
            pages[i % pages.len()],
            rng.random_range(0..10_000),
            rng.random_range(1..900),
            ["DE", "US", "FR", "JP", "BR"][rng.random_range(0..5)],
        )
        .into_bytes()
    });

    let mut group = c.benchmark_group("segment_compression");
    group.sample_size(10);
    for (name, raw) in [("loadgen_100B", &loadgen), ("json_events", &events)] {
        group.throughput(Throughput::Bytes(raw.len() as u64));
        for level in [1, 3] {
            let (object, _) = frames::encode(raw, Compression::Zstd, level, DEFAULT_FRAME_BYTES).unwrap();
            eprintln!(
                "{name} zstd {level}: {} -> {} bytes (x{:.2})",
                raw.len(),
                object.len(),
                raw.len() as f64 / object.len() as f64
            );
            group.bench_function(format!("{name}/zstd_{level}"), |b| {
                b.iter(|| frames::encode(raw, Compression::Zstd, level, DEFAULT_FRAME_BYTES).unwrap())
            });
        }
    }
}

criterion_group!(benches, segment_compression);
criterion_main!(benches);
