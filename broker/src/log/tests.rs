use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// Test hook run just before the group-commit sync: (visible end at that moment, end being synced).
pub(super) type SyncHook = Box<dyn Fn(u64, u64) + Send + Sync>;

impl Inner {
    pub(super) fn before_sync(&self, written_end: u64) {
        let visible_end = lock(&self.state).end_offset;
        if let Some(hook) = &*lock(&self.sync_hook) {
            hook(visible_end, written_end);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig { flush, ..LogConfig::default() }
}

fn small(segment_max_bytes: u64) -> LogConfig {
    LogConfig { segment_max_bytes, index_interval_bytes: 64, flush: FlushPolicy::Never, ..LogConfig::default() }
}

fn rec(key: &str, data: &[u8]) -> NewRecord {
    NewRecord { partition_key: key.to_string(), data: Bytes::copy_from_slice(data) }
}

fn read_all(log: &ShardLog) -> Vec<StoredRecord> {
    log.read(0, usize::MAX, usize::MAX).unwrap()
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(&format!(".{ext}")))
        .collect();
    names.sort();
    names
}

/// (key, data) pairs as they should read back.
fn contents(records: &[StoredRecord]) -> Vec<(String, Vec<u8>)> {
    records.iter().map(|r| (r.partition_key.clone(), r.data.to_vec())).collect()
}

fn assert_offsets_contiguous(records: &[StoredRecord], first: u64) {
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, first + i as u64);
    }
}

#[test]
fn append_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = ShardLog::open(dir.path(), config(FlushPolicy::Always)).unwrap();
    assert_eq!(log.bounds(), LogBounds { start_offset: 0, end_offset: 0, last_timestamp_ms: None });
    assert!(log.read(0, 10, 1000).unwrap().is_empty());

    let a = rt.block_on(log.append(vec![rec("k1", b"one"), rec("k2", b"")])).unwrap();
    let b = rt.block_on(log.append(vec![rec("", b"three")])).unwrap();
    assert_eq!(a.first_offset, 0);
    assert_eq!(b.first_offset, 2);
    assert!(b.timestamp_ms >= a.timestamp_ms);

    let all = read_all(&log);
    assert_offsets_contiguous(&all, 0);
    assert_eq!(
        contents(&all),
        vec![("k1".into(), b"one".to_vec()), ("k2".into(), vec![]), ("".into(), b"three".to_vec())]
    );
    assert_eq!(all[0].timestamp_ms, a.timestamp_ms);
    assert_eq!(all[1].timestamp_ms, a.timestamp_ms);
    assert_eq!(all[2].timestamp_ms, b.timestamp_ms);
    assert_eq!(log.bounds(), LogBounds { start_offset: 0, end_offset: 3, last_timestamp_ms: Some(b.timestamp_ms) });
    assert_eq!(log.read(1, 10, 1000).unwrap()[0].offset, 1);
    assert!(log.read(3, 10, 1000).unwrap().is_empty());
    assert!(log.read(99, 10, 1000).unwrap().is_empty());
}

#[test]
fn invalid_appends_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = ShardLog::open(dir.path(), config(FlushPolicy::Never)).unwrap();
    let err = rt.block_on(log.append(vec![])).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let long_key = "k".repeat(record::MAX_KEY_LEN + 1);
    let err = rt.block_on(log.append(vec![rec(&long_key, b"x")])).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(log.bounds().end_offset, 0);
    assert_eq!(rt.block_on(log.append(vec![rec("k", b"x")])).unwrap().first_offset, 0);
}

#[test]
fn concurrent_appends_get_contiguous_offsets_and_read_back_once() {
    const TASKS: usize = 8;
    const APPENDS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log =
        ShardLog::open(dir.path(), LogConfig { segment_max_bytes: 16 << 10, ..config(FlushPolicy::Always) }).unwrap();
    let results = rt.block_on(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    for i in 0..APPENDS {
                        let batch = vec![
                            rec(&format!("t{t}"), format!("{t}-{i}-a").as_bytes()),
                            rec(&format!("t{t}"), format!("{t}-{i}-b").as_bytes()),
                        ];
                        got.push((t, i, log.append(batch).await.unwrap()));
                    }
                    got
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    });
    let total = (TASKS * APPENDS * 2) as u64;
    let mut firsts: Vec<u64> = results.iter().map(|(_, _, a)| a.first_offset).collect();
    firsts.sort_unstable();
    assert_eq!(firsts, (0..total).step_by(2).collect::<Vec<_>>());
    assert_eq!(log.bounds().end_offset, total);

    let all = read_all(&log);
    assert_offsets_contiguous(&all, 0);
    let mut seen = HashSet::new();
    for (t, i, a) in &results {
        let first = &all[a.first_offset as usize];
        let second = &all[a.first_offset as usize + 1];
        assert_eq!(first.partition_key, format!("t{t}"));
        assert_eq!(first.data, format!("{t}-{i}-a").into_bytes());
        assert_eq!(second.data, format!("{t}-{i}-b").into_bytes());
        assert_eq!(first.timestamp_ms, a.timestamp_ms);
        assert!(seen.insert(first.data.clone()));
    }
    assert!(files_with_ext(dir.path(), "log").len() > 1, "small segments should have rolled");
}

#[test]
fn rolls_across_small_segments_and_reads_span_them() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = ShardLog::open(dir.path(), small(300)).unwrap();
    let mut model = Vec::new();
    for i in 0..60 {
        let batch: Vec<NewRecord> = (0..3).map(|j| rec(&format!("key{j}"), &vec![i as u8; 10 + j * 7])).collect();
        model.extend(batch.iter().map(|r| (r.partition_key.clone(), r.data.to_vec())));
        rt.block_on(log.append(batch)).unwrap();
        if i == 30 {
            log.roll().unwrap();
            log.roll().unwrap(); // rolling an empty segment does nothing
        }
    }
    let segments = files_with_ext(dir.path(), "log");
    assert!(segments.len() >= 10, "{segments:?}");
    assert_eq!(files_with_ext(dir.path(), "index").len(), segments.len() - 1, "sealed segments have an index");
    assert_eq!(segments[0], format!("{:020}.log", 0));

    let all = read_all(&log);
    assert_offsets_contiguous(&all, 0);
    assert_eq!(contents(&all), model);
    // Small reads from every offset cross segment boundaries.
    for from in 0..model.len() as u64 {
        let got = log.read(from, 7, usize::MAX).unwrap();
        let want = (model.len() as u64 - from).min(7) as usize;
        assert_eq!(got.len(), want);
        assert_offsets_contiguous(&got, from);
        assert_eq!(contents(&got), model[from as usize..from as usize + want]);
    }
}

#[test]
fn read_respects_max_records_and_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = ShardLog::open(dir.path(), small(1 << 20)).unwrap();
    // Each record: 2-byte key + 8-byte data = 10 counted bytes.
    let batch: Vec<NewRecord> = (0..20).map(|i| rec("pk", &[i as u8; 8])).collect();
    rt.block_on(log.append(batch)).unwrap();
    rt.block_on(log.append(vec![rec("big", &[7; 1000])])).unwrap();

    assert_eq!(log.read(0, 5, usize::MAX).unwrap().len(), 5);
    assert_eq!(log.read(0, 100, 30).unwrap().len(), 3);
    assert_eq!(log.read(0, 100, 39).unwrap().len(), 3);
    assert_eq!(log.read(0, 100, 40).unwrap().len(), 4);
    assert!(log.read(0, 0, usize::MAX).unwrap().is_empty());
    // At least one record, even if it alone exceeds max_bytes.
    let big = log.read(20, 10, 5).unwrap();
    assert_eq!(big.len(), 1);
    assert_eq!(big[0].data.len(), 1000);
    assert_eq!(log.read(0, 100, 1).unwrap().len(), 1);
    // The big record is not included once the limit is reached.
    assert_eq!(log.read(18, 100, 100).unwrap().len(), 2);
}

#[test]
fn reopen_keeps_records_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (before, bounds) = {
        let log = ShardLog::open(dir.path(), small(500)).unwrap();
        for i in 0..40u8 {
            rt.block_on(log.append(vec![rec("k", &[i; 20]), rec("q", &[i; 3])])).unwrap();
        }
        (read_all(&log), log.bounds())
    };
    let log = ShardLog::open(dir.path(), small(500)).unwrap();
    assert_eq!(log.bounds(), bounds);
    assert_eq!(read_all(&log), before);
    let a = rt.block_on(log.append(vec![rec("k", b"after")])).unwrap();
    assert_eq!(a.first_offset, 80);
    assert!(a.timestamp_ms >= bounds.last_timestamp_ms.unwrap());
}

/// A one-segment log with `n` records; returns the segment file's bytes and where the last record starts.
fn write_template(n: usize) -> (Vec<u8>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = ShardLog::open(dir.path(), small(1 << 20)).unwrap();
    for i in 0..n {
        rt.block_on(log.append(vec![rec(&format!("key{i}"), format!("data number {i}").as_bytes())])).unwrap();
    }
    drop(log);
    let bytes = fs::read(segment::log_path(dir.path(), 0)).unwrap();
    let last_len = record::encoded_len(format!("key{}", n - 1).len(), format!("data number {}", n - 1).len());
    let last_start = bytes.len() - last_len;
    (bytes, last_start)
}

/// Opens a log whose only segment holds `bytes` and checks it recovered exactly `valid` records.
fn check_recovers_to(bytes: &[u8], valid: u64, valid_len: usize, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(segment::log_path(dir.path(), 0), bytes).unwrap();
    let log = ShardLog::open(dir.path(), small(1 << 20)).unwrap();
    assert_eq!(log.bounds().end_offset, valid);
    let all = read_all(&log);
    assert_eq!(all.len() as u64, valid);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.partition_key, format!("key{i}"));
        assert_eq!(r.data, format!("data number {i}").into_bytes());
    }
    assert_eq!(fs::metadata(segment::log_path(dir.path(), 0)).unwrap().len(), valid_len as u64);
    let a = rt.block_on(log.append(vec![rec("new", b"record")])).unwrap();
    assert_eq!(a.first_offset, valid);
    let all = read_all(&log);
    assert_eq!(all.last().unwrap().data, Bytes::from_static(b"record"));
    assert_offsets_contiguous(&all, 0);
}

#[test]
fn torn_tail_is_truncated_at_every_cut_position() {
    let rt = runtime();
    let (bytes, last_start) = write_template(5);
    for cut in last_start..bytes.len() {
        check_recovers_to(&bytes[..cut], 4, last_start, &rt);
    }
    check_recovers_to(&bytes, 5, bytes.len(), &rt);
    // Garbage (zeros) after the last record, as after a crash that extended the file.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 100]);
    check_recovers_to(&padded, 5, bytes.len(), &rt);
}

#[test]
fn flipped_byte_truncates_at_the_damaged_record() {
    let rt = runtime();
    let (bytes, last_start) = write_template(5);
    for at in last_start..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0xFF;
        check_recovers_to(&damaged, 4, last_start, &rt);
    }
    // Damage in the middle of the segment drops everything from there.
    let second_start = record::encoded_len(4, 13);
    let mut damaged = bytes.clone();
    damaged[second_start + 30] ^= 0x01;
    check_recovers_to(&damaged, 1, second_start, &rt);
}

/// The in-memory sparse index of every segment, by base offset.
fn indexes(log: &ShardLog) -> Vec<(u64, Vec<index::IndexEntry>, u64, Option<i64>)> {
    let state = lock(&log.inner.state);
    state.segments.values().map(|s| (s.base_offset, s.index.clone(), s.end_offset, s.last_ts)).collect()
}

#[test]
fn sealed_segments_keep_a_thinned_index_in_memory_and_reads_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    // 1 KiB records, 256 KiB segments: an entry per 4 KiB written, one per 64 KiB kept.
    let log = ShardLog::open(dir.path(), small(256 << 10)).unwrap();
    for i in 0..600u32 {
        rt.block_on(log.append(vec![rec(&format!("k{i}"), &[i as u8; 1024])])).unwrap();
    }
    let sealed: Vec<_> = indexes(&log).into_iter().rev().skip(1).collect();
    assert!(sealed.len() >= 2, "{sealed:?}");
    for (base, entries, _, _) in &sealed {
        assert!((3..=5).contains(&entries.len()), "segment {base}: {} entries in memory", entries.len());
        assert!(entries.windows(2).all(|w| w[1].position - w[0].position >= index::SEALED_INTERVAL_BYTES));
        assert_eq!(entries.capacity(), entries.len(), "no slack kept");
        // The files keep every entry (one per 4 KiB).
        let (ix, tix) = (segment::index_path(dir.path(), *base), segment::time_index_path(dir.path(), *base));
        let size = std::fs::metadata(segment::log_path(dir.path(), *base)).unwrap().len();
        let (_, full) = index::load_index_files(&ix, &tix, *base, size).unwrap();
        assert!(full.len() >= 50, "segment {base}: {} entries in its files", full.len());
    }
    let check = |log: &ShardLog| {
        for from in (0..600).step_by(7) {
            let got = log.read(from, 1, usize::MAX).unwrap();
            assert_eq!((got[0].offset, got[0].partition_key.as_str()), (from, format!("k{from}").as_str()));
        }
    };
    check(&log);
    // Reopened from the index files, the same: thinned in memory, exact reads.
    drop(log);
    let log = ShardLog::open(dir.path(), small(256 << 10)).unwrap();
    assert_eq!(indexes(&log).into_iter().rev().skip(1).collect::<Vec<_>>(), sealed);
    check(&log);
}

#[test]
fn missing_or_damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (before, index_before, stamps) = {
        let log = ShardLog::open(dir.path(), small(400)).unwrap();
        let mut stamps = Vec::new();
        for i in 0..40u8 {
            stamps.push(rt.block_on(log.append(vec![rec("k", &[i; 30]), rec("k", &[i; 5])])).unwrap().timestamp_ms);
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        (read_all(&log), indexes(&log), stamps)
    };
    let sealed: Vec<u64> = index_before.iter().map(|(b, ..)| *b).take(index_before.len() - 1).collect();
    assert!(sealed.len() >= 4);
    fs::remove_file(segment::index_path(dir.path(), sealed[0])).unwrap();
    fs::remove_file(segment::time_index_path(dir.path(), sealed[1])).unwrap();
    let ix = segment::index_path(dir.path(), sealed[2]);
    let mut damaged = fs::read(&ix).unwrap();
    damaged[20] ^= 0x55;
    fs::write(&ix, damaged).unwrap();
    fs::write(segment::time_index_path(dir.path(), sealed[3]), b"short").unwrap();

    let log = ShardLog::open(dir.path(), small(400)).unwrap();
    assert_eq!(indexes(&log), index_before, "rebuilt index equals the one built while appending");
    for base in &sealed {
        assert!(segment::index_path(dir.path(), *base).exists());
        assert!(segment::time_index_path(dir.path(), *base).exists());
    }
    assert_eq!(read_all(&log), before);
    for from in (0..before.len() as u64).step_by(3) {
        assert_eq!(
            log.read(from, 5, usize::MAX).unwrap(),
            before[from as usize..(from as usize + 5).min(before.len())]
        );
    }
    for ts in stamps.iter().flat_map(|t| [t - 1, *t, t + 1]) {
        let want = before.iter().find(|r| r.timestamp_ms >= ts).map_or(before.len() as u64, |r| r.offset);
        assert_eq!(log.offset_at_timestamp(ts).unwrap(), want, "ts {ts}");
    }
}

/// Appends batches a few ms apart so timestamps differ; returns the log's records.
fn timed_log(dir: &Path, rt: &tokio::runtime::Runtime, config: LogConfig) -> (ShardLog, Vec<StoredRecord>) {
    let log = ShardLog::open(dir, config).unwrap();
    for i in 0..30u8 {
        let batch: Vec<NewRecord> = (0..(i % 4 + 1)).map(|_| rec("k", &[i; 25])).collect();
        rt.block_on(log.append(batch)).unwrap();
        if i % 3 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let all = read_all(&log);
    (log, all)
}

#[test]
fn offset_at_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, all) = timed_log(dir.path(), &rt, small(600));
    let end = all.len() as u64;
    let first_ts = all[0].timestamp_ms;
    let last_ts = all.last().unwrap().timestamp_ms;
    assert!(last_ts > first_ts);
    for ts in first_ts - 5..=last_ts + 5 {
        let want = all.iter().find(|r| r.timestamp_ms >= ts).map_or(end, |r| r.offset);
        assert_eq!(log.offset_at_timestamp(ts).unwrap(), want, "ts {ts}");
    }
    assert_eq!(log.offset_at_timestamp(i64::MIN).unwrap(), 0);
    assert_eq!(log.offset_at_timestamp(i64::MAX).unwrap(), end);
}

#[test]
fn trim_before_advances_start_deletes_old_segments_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, all) = timed_log(dir.path(), &rt, small(600));
    let segments_before = files_with_ext(dir.path(), "log").len();
    let mid = &all[all.len() / 2];
    let cutoff = mid.timestamp_ms;
    let want_start = all.iter().find(|r| r.timestamp_ms >= cutoff).unwrap().offset;

    log.trim_before(cutoff).unwrap();
    let b = log.bounds();
    assert_eq!(b.start_offset, want_start);
    assert_eq!(b.end_offset, all.len() as u64);
    assert_eq!(log.read(0, usize::MAX, usize::MAX).unwrap(), all[want_start as usize..]);
    assert_eq!(log.offset_at_timestamp(0).unwrap(), want_start);
    let segments_after = files_with_ext(dir.path(), "log");
    assert!(segments_after.len() < segments_before);
    // Every remaining segment holds records at or after the start (or is the segment holding it).
    let first_base: u64 = segments_after[0].trim_end_matches(".log").parse().unwrap();
    assert!(first_base <= want_start);
    assert!(all.iter().filter(|r| r.offset < first_base).all(|r| r.timestamp_ms < cutoff));

    log.trim_before(cutoff).unwrap();
    assert_eq!(log.bounds(), b);
    log.trim_before(cutoff - 1000).unwrap();
    assert_eq!(log.bounds(), b, "the start never moves back");
    drop(log);

    let log = ShardLog::open(dir.path(), small(600)).unwrap();
    assert_eq!(log.bounds(), b, "the start survives a restart");
    log.trim_before(cutoff).unwrap();
    assert_eq!(log.bounds(), b);

    // Trimming everything keeps the active segment's file; appends carry on.
    log.trim_before(i64::MAX).unwrap();
    let b = log.bounds();
    assert_eq!(b.start_offset, b.end_offset);
    assert_eq!(files_with_ext(dir.path(), "log").len(), 1);
    assert!(read_all(&log).is_empty());
    let a = rt.block_on(log.append(vec![rec("k", b"fresh")])).unwrap();
    assert_eq!(a.first_offset, b.end_offset);
    assert_eq!(read_all(&log).len(), 1);
    drop(log);
    let log = ShardLog::open(dir.path(), small(600)).unwrap();
    assert_eq!(log.bounds().start_offset, b.end_offset);
    assert_eq!(read_all(&log)[0].data, Bytes::from_static(b"fresh"));
}

#[test]
fn evicting_old_segments_keeps_the_start_and_stops_reads_below_local_data() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, all) = timed_log(dir.path(), &rt, small(600));
    let sealed = log.sealed_segments();
    assert!(sealed.len() >= 4, "{} sealed", sealed.len());
    let (segments, bytes) = log.local_footprint();
    assert_eq!(segments, sealed.len() + 1);
    assert_eq!(
        bytes,
        fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                e.file_name().to_str().unwrap().ends_with(".log").then(|| e.metadata().unwrap().len())
            })
            .sum::<u64>()
    );

    // Only what `uploaded` accepts goes, oldest first, and never past a refusal.
    let not_third = |base: u64, _end: u64| base != sealed[2].base_offset;
    let evicted = log.evict_oldest(0, not_third).unwrap();
    assert_eq!(evicted, sealed[..2].to_vec());
    assert!(log.evict_oldest(0, not_third).unwrap().is_empty());
    let local_start = sealed[2].base_offset;
    assert_eq!(log.local_start_offset(), local_start);
    assert_eq!(log.bounds().start_offset, 0, "evicted records stay readable (remotely)");
    assert!(!dir.path().join(segment_file_name(sealed[0].base_offset)).exists());
    assert!(log.read(0, usize::MAX, usize::MAX).unwrap().is_empty(), "no skipping over evicted records");
    assert_eq!(log.read(local_start, usize::MAX, usize::MAX).unwrap(), all[local_start as usize..]);
    // Within the byte budget nothing more goes.
    assert!(log.evict_oldest(u64::MAX, |_, _| true).unwrap().is_empty());

    // Retention cannot tell from local data whether evicted records expired until local ones do.
    let first_local_ts = all[local_start as usize].timestamp_ms;
    log.trim_before(first_local_ts).unwrap();
    assert_eq!(log.bounds().start_offset, 0);
    drop(log);
    let log = ShardLog::open(dir.path(), small(600)).unwrap();
    assert_eq!((log.bounds().start_offset, log.local_start_offset()), (0, local_start), "survives a restart");
    let cutoff = all.iter().map(|r| r.timestamp_ms).find(|&t| t > first_local_ts).unwrap();
    log.trim_before(cutoff).unwrap();
    let want = all.iter().find(|r| r.timestamp_ms >= cutoff).unwrap().offset;
    assert!(want > local_start);
    assert_eq!(log.bounds().start_offset, want);
    assert_eq!(log.read(0, usize::MAX, usize::MAX).unwrap(), all[want as usize..]);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = ShardLog::open(dir.path(), LogConfig { segment_max_age: Duration::ZERO, ..small(1 << 20) }).unwrap();
    for _ in 0..3 {
        rt.block_on(log.append(vec![rec("k", b"v")])).unwrap();
    }
    assert_eq!(files_with_ext(dir.path(), "log").len(), 3);
    assert_eq!(read_all(&log).len(), 3);
}

#[test]
fn always_policy_makes_records_visible_only_after_sync() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = ShardLog::open(dir.path(), config(FlushPolicy::Always)).unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let synced = Arc::new(AtomicBool::new(false));
    let (s, d) = (syncs.clone(), synced.clone());
    *lock(&log.inner.sync_hook) = Some(Box::new(move |visible_end, written_end| {
        assert!(visible_end < written_end, "records visible before their sync");
        std::thread::sleep(Duration::from_millis(20));
        s.fetch_add(1, Ordering::SeqCst);
        d.store(true, Ordering::SeqCst);
    }));
    for i in 0..3u64 {
        synced.store(false, Ordering::SeqCst);
        let a = rt.block_on(log.append(vec![rec("k", b"v"), rec("k", b"w")])).unwrap();
        assert!(synced.load(Ordering::SeqCst), "append resolved before the sync");
        assert_eq!(a.first_offset, i * 2);
        assert_eq!(log.bounds().end_offset, i * 2 + 2);
    }
    assert_eq!(syncs.load(Ordering::SeqCst), 3);
}

#[test]
fn interval_policy_syncs_in_background() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let log = ShardLog::open(dir.path(), config(FlushPolicy::Interval(Duration::from_millis(5)))).unwrap();
    rt.block_on(log.append(vec![rec("k", b"v")])).unwrap();
    assert_eq!(log.bounds().end_offset, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while log.inner.unsynced.load(Ordering::Acquire) {
        assert!(std::time::Instant::now() < deadline, "flusher never synced");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn destroy_removes_all_files() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("shard-0");
    let rt = runtime();
    let log = ShardLog::open(&dir, small(200)).unwrap();
    for i in 0..20u8 {
        rt.block_on(log.append(vec![rec("k", &[i; 40])])).unwrap();
    }
    log.trim_before(0).unwrap();
    let other = log.clone();
    log.destroy().unwrap();
    assert!(!dir.exists());
    assert!(rt.block_on(other.append(vec![rec("k", b"v")])).is_err());
    assert!(read_all(&other).is_empty());
}

#[derive(Clone, Debug)]
enum Op {
    /// (key length, data length) per record; an empty batch must be rejected.
    Append(Vec<(usize, usize)>),
    Roll,
    Reopen,
    Read {
        from: u64,
        max_records: usize,
        max_bytes: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0usize..12, prop_oneof![0usize..200, 500usize..1100]), 0..6).prop_map(Op::Append),
        1 => Just(Op::Roll),
        1 => Just(Op::Reopen),
        2 => (0u64..60, 1usize..20, 0usize..600).prop_map(|(from, max_records, max_bytes)| Op::Read { from, max_records, max_bytes }),
    ]
}

/// What `read` should return from the model.
fn expected_read(
    model: &[(String, Vec<u8>)],
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for r in model.iter().skip(from as usize).take(max_records) {
        let size = r.0.len() + r.1.len();
        if !out.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        out.push(r.clone());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = || LogConfig { segment_max_bytes: 700, index_interval_bytes: 100, flush: FlushPolicy::Never, ..LogConfig::default() };
        let mut log = ShardLog::open(dir.path(), config()).unwrap();
        let mut model: Vec<(String, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let batch: Vec<NewRecord> = sizes
                        .iter()
                        .enumerate()
                        .map(|(i, &(k, d))| {
                            let n = model.len() + i;
                            rec(&"abcdefghijkl"[..k], &vec![(n % 251) as u8; d])
                        })
                        .collect();
                    let result = rt.block_on(log.append(batch.clone()));
                    if batch.is_empty() {
                        prop_assert!(result.is_err());
                    } else {
                        prop_assert_eq!(result.unwrap().first_offset, model.len() as u64);
                        model.extend(batch.into_iter().map(|r| (r.partition_key, r.data.to_vec())));
                    }
                }
                Op::Roll => log.roll().unwrap(),
                Op::Reopen => {
                    drop(log);
                    log = ShardLog::open(dir.path(), config()).unwrap();
                }
                Op::Read { from, max_records, max_bytes } => {
                    let got = log.read(from, max_records, max_bytes).unwrap();
                    prop_assert_eq!(contents(&got), expected_read(&model, from, max_records, max_bytes));
                    assert_offsets_contiguous(&got, from);
                }
            }
            prop_assert_eq!(log.bounds().end_offset, model.len() as u64);
        }
        let all = read_all(&log);
        assert_offsets_contiguous(&all, 0);
        prop_assert_eq!(contents(&all), model.clone());
        drop(log);
        let log = ShardLog::open(dir.path(), config()).unwrap();
        prop_assert_eq!(contents(&read_all(&log)), model);
    }
}

#[tokio::test]
async fn sealed_segments_are_announced_and_listed() {
    use std::sync::Mutex as StdMutex;
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<StdMutex<Vec<SealedSegment>>> = Arc::default();
    let observer = {
        let seen = seen.clone();
        SealObserver(Arc::new(move |s| seen.lock().unwrap().push(s)))
    };
    let log = ShardLog::open(dir.path(), LogConfig { seal_observer: Some(observer), ..small(4 << 10) }).unwrap();
    for i in 0..40u64 {
        log.append(vec![NewRecord { partition_key: format!("k{i}"), data: Bytes::from(vec![1u8; 400]) }])
            .await
            .unwrap();
    }
    let announced = seen.lock().unwrap().clone();
    assert!(announced.len() >= 3, "{} seals", announced.len());
    assert_eq!(log.sealed_segments(), announced, "listed as announced, oldest first");
    for pair in announced.windows(2) {
        assert_eq!(pair[0].end_offset, pair[1].base_offset, "contiguous");
    }
    let first = &announced[0];
    assert_eq!(first.base_offset, 0);
    assert!(first.path.ends_with(segment_file_name(0)));
    assert!(first.first_ts_ms > 0 && first.last_ts_ms >= first.first_ts_ms);
}

#[test]
fn a_closed_log_refuses_appends_keeps_its_records_and_seals_its_tail() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sealed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sealed.clone();
    let observer =
        SealObserver(Arc::new(move |s: SealedSegment| seen.lock().unwrap().push((s.base_offset, s.end_offset))));
    let log =
        ShardLog::open(dir.path(), LogConfig { seal_observer: Some(observer), ..config(FlushPolicy::Always) }).unwrap();
    rt.block_on(log.append(vec![rec("a", b"1"), rec("b", b"2"), rec("c", b"3")])).unwrap();
    assert_eq!(log.close().unwrap(), 3);
    assert_eq!(*sealed.lock().unwrap(), vec![(0, 3)], "the tail is sealed for the object store");
    let refused = rt.block_on(log.append(vec![rec("d", b"4")])).unwrap_err();
    assert!(refused.to_string().contains("closed"), "{refused}");
    assert_eq!(log.close().unwrap(), 3, "closing twice is harmless");
    assert_eq!(contents(&read_all(&log)).len(), 3);
    assert_eq!(log.bounds().end_offset, 3);

    // Reopened after a failed reshard: appends continue the numbering.
    log.reopen();
    let appended = rt.block_on(log.append(vec![rec("d", b"4")])).unwrap();
    assert_eq!(appended.first_offset, 3);
}
