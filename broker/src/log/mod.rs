//! The per-shard durable log: an append-only sequence of records with contiguous offsets, stored
//! as segment files `{base_offset:020}.log` (plus sealed segments' `.index` / `.timeindex`) in
//! one directory.
//!
//! - `record`: on-disk record format (length prefix, CRC32C, offset, timestamp) and a reader.
//! - `index`: sparse offset/time indexes, in memory and as files.
//! - `segment`: segment files and the readers' view of each segment.
//! - `recovery`: opening a directory, validating and truncating a torn tail.
//! - `group_commit`: the append path (one write + one sync per group), rolling, background flush.
//!
//! Visibility rule: readers see a record only once its append is acknowledged, i.e. after the
//! sync under `FlushPolicy::Always`. Record data is never cached; reads use positioned reads.

mod group_commit;
mod index;
pub(crate) mod record;
mod recovery;

/// Where a log rebuilt from the object store starts: records below its first local segment
/// are read from the bucket (see `crate::tiered`).
pub use recovery::write_start_offset;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use group_commit::{Queue, Request, Writer, WriterTask};
use record::SegmentCursor;
use segment::Segment;

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Seal (roll) the active segment when it reaches this size (checked before each group is
    /// written, so a segment holds at most this much unless a single group is larger).
    pub segment_max_bytes: u64,
    /// ... or when its first record is this old (checked on append).
    pub segment_max_age: Duration,
    /// One sparse offset-index entry (and time-index entry) per this many bytes.
    pub index_interval_bytes: u32,
    pub flush: FlushPolicy,
    /// Told how long each group's sync took (the broker's fsync histogram).
    pub sync_observer: Option<SyncObserver>,
    /// Told of each segment once it is sealed (synced, read-only): the object-store tier uploads it.
    pub seal_observer: Option<SealObserver>,
}

/// A sealed segment file: immutable from now on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSegment {
    pub path: PathBuf,
    pub base_offset: u64,
    /// Offset after its last record.
    pub end_offset: u64,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    /// Size of the file.
    pub bytes: u64,
}

#[derive(Clone)]
pub struct SealObserver(pub Arc<dyn Fn(SealedSegment) + Send + Sync>);

impl std::fmt::Debug for SealObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealObserver")
    }
}

/// The file name of the segment starting at `base_offset`; a directory of such files (the last
/// one active) is a log, which is how a log is rebuilt from sealed segments kept elsewhere.
pub fn segment_file_name(base_offset: u64) -> String {
    segment::log_path(Path::new(""), base_offset).display().to_string()
}

/// The bytes of a segment file holding `records`, whose offsets must be contiguous: how a
/// log's tail is rebuilt from records kept elsewhere (the write-ahead objects).
pub fn encode_segment(records: &[StoredRecord]) -> Vec<u8> {
    debug_assert!(records.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    let len = records.iter().map(|r| record::encoded_len(r.partition_key.len(), r.data.len())).sum();
    let mut buf = Vec::with_capacity(len);
    for r in records {
        record::encode(&mut buf, r.offset, r.timestamp_ms, r.partition_key.as_bytes(), &r.data);
    }
    buf
}

#[derive(Clone)]
pub struct SyncObserver(pub Arc<dyn Fn(Duration) + Send + Sync>);

impl std::fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncObserver")
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_max_bytes: 64 << 20,
            segment_max_age: Duration::from_secs(3600),
            index_interval_bytes: 4096,
            flush: FlushPolicy::Always,
            sync_observer: None,
            seal_observer: None,
        }
    }
}

/// The durability choice, explicit: when an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fdatasync before acknowledging (default). Concurrent appends share one sync (group commit).
    Always,
    /// Acknowledge after write(2); a background flusher syncs at this interval.
    Interval(Duration),
    /// Acknowledge after write(2); the OS decides when (tests, benchmarks).
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    pub partition_key: String,
    pub data: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub partition_key: String,
    pub data: Bytes,
}

/// Records of one append get contiguous offsets starting here and one timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_offset: u64,
    pub timestamp_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBounds {
    /// First visible offset (advanced by retention).
    pub start_offset: u64,
    /// Next offset to be assigned among visible (acknowledged) records.
    pub end_offset: u64,
    pub last_timestamp_ms: Option<i64>,
}

/// One shard's log. Cheap to clone; all clones share the same log.
#[derive(Clone)]
pub struct ShardLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    /// What readers see. Held only briefly; never across I/O.
    state: Mutex<State>,
    /// Serializes everything that changes files: group commits, rolls, trims, destroy.
    writer: Mutex<Writer>,
    queue: Mutex<Queue>,
    /// Writes not yet synced (for the interval flusher).
    unsynced: AtomicBool,
    flusher: Mutex<Option<std::thread::Thread>>,
    #[cfg(test)]
    sync_hook: Mutex<Option<tests::SyncHook>>,
}

struct State {
    /// Sealed segments and, last, the active one.
    segments: BTreeMap<u64, Segment>,
    start_offset: u64,
    end_offset: u64,
    last_ts: Option<i64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(flusher) = lock(&self.flusher).take() {
            flusher.unpark();
        }
    }
}

/// Locks, ignoring poisoning: every critical section leaves the data consistent before any
/// step that can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sealed(dir: &Path, s: &Segment) -> SealedSegment {
    SealedSegment {
        path: segment::log_path(dir, s.base_offset),
        base_offset: s.base_offset,
        end_offset: s.end_offset,
        first_ts_ms: s.first_ts.unwrap_or(0),
        last_ts_ms: s.last_ts.unwrap_or(0),
        bytes: s.size,
    }
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl ShardLog {
    /// Open (creating the directory if needed) and recover: a torn or corrupt tail of the last
    /// segment is truncated to the last valid record (logged with a warning, not fatal); a missing
    /// or damaged index file is rebuilt from the segment; nothing acknowledged is lost.
    pub fn open(dir: &Path, config: LogConfig) -> io::Result<ShardLog> {
        if config.index_interval_bytes == 0 || config.segment_max_bytes == 0 {
            return Err(invalid_input("index_interval_bytes and segment_max_bytes must be positive".into()));
        }
        let recovered = recovery::recover(dir, config.index_interval_bytes)?;
        let active = recovered.segments.values().next_back().expect("recovery leaves an active segment");
        let last_ts = recovered.segments.values().rev().find_map(|s| s.last_ts);
        let writer = Writer::new(active, recovered.active_builder, last_ts);
        let state = State {
            end_offset: active.end_offset,
            start_offset: recovered.start_offset,
            last_ts,
            segments: recovered.segments,
        };
        let interval = match config.flush {
            FlushPolicy::Interval(every) => Some(every),
            _ => None,
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            config,
            state: Mutex::new(state),
            writer: Mutex::new(writer),
            queue: Mutex::new(Queue::default()),
            unsynced: AtomicBool::new(false),
            flusher: Mutex::new(None),
            #[cfg(test)]
            sync_hook: Mutex::new(None),
        });
        if let Some(every) = interval {
            group_commit::start_flusher(&inner, every)?;
        }
        Ok(ShardLog { inner })
    }

    /// Append a batch; resolves once durable under the flush policy. Concurrent callers are merged
    /// into one write and one sync. An empty batch is rejected. If the future is dropped after
    /// the batch was queued, the batch may still be written.
    pub async fn append(&self, records: Vec<NewRecord>) -> io::Result<Appended> {
        if records.is_empty() {
            return Err(invalid_input("append of an empty batch".into()));
        }
        for r in &records {
            if r.partition_key.len() > record::MAX_KEY_LEN || r.data.len() > record::MAX_DATA_LEN {
                return Err(invalid_input(format!(
                    "record too large: key {} bytes (max {}), data {} bytes (max {})",
                    r.partition_key.len(),
                    record::MAX_KEY_LEN,
                    r.data.len(),
                    record::MAX_DATA_LEN
                )));
            }
        }
        let (done, result) = oneshot::channel();
        let start_writer = {
            let mut queue = lock(&self.inner.queue);
            queue.pending.push(Request { records, done });
            !std::mem::replace(&mut queue.writer_running, true)
        };
        if start_writer {
            let task = WriterTask::new(self.inner.clone());
            tokio::task::spawn_blocking(move || task.run());
        }
        result.await.map_err(|_| io::Error::other("log writer stopped before answering"))?
    }

    /// Up to `max_records` visible records from `from` (or from the start offset, if later) whose
    /// key+data bytes total at most `max_bytes`, but at least one if any is available.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> io::Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        // Start small (a reader may want one record) and let the cursor grow its reads.
        let first_chunk = max_bytes.saturating_add(4096).clamp(4 << 10, 64 << 10);
        while out.len() < max_records {
            // Snapshot the segment holding `next` and its visible extent, then read unlocked.
            let (mut cursor, seg_end) = {
                let state = lock(&self.inner.state);
                next = next.max(state.start_offset);
                if next >= state.end_offset || next < local_start(&state) {
                    break; // below the local data: evicted, the object store has it
                }
                let Some(seg) = segment_at_or_after(&state.segments, next) else { break };
                next = next.max(seg.base_offset);
                let pos = seg.position_for_offset(next);
                (SegmentCursor::new(seg.file.clone(), pos, seg.size, first_chunk, 1 << 20), seg.end_offset)
            };
            while let Some(rec) = cursor.next_record()? {
                if rec.offset < next {
                    continue; // the index points at or before `next`
                }
                let size = rec.key.len() + rec.data.len();
                if !out.is_empty() && bytes + size > max_bytes {
                    return Ok(out);
                }
                let partition_key = String::from_utf8(rec.key.to_vec())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "partition key is not UTF-8"))?;
                out.push(StoredRecord {
                    offset: rec.offset,
                    timestamp_ms: rec.timestamp_ms,
                    partition_key,
                    data: rec.data,
                });
                bytes += size;
                if out.len() == max_records {
                    return Ok(out);
                }
            }
            next = seg_end;
        }
        Ok(out)
    }

    /// The sealed segments still on disk, oldest first (the active one is not among them).
    pub fn sealed_segments(&self) -> Vec<SealedSegment> {
        let state = lock(&self.inner.state);
        let active = state.segments.keys().next_back().copied();
        state
            .segments
            .values()
            .filter(|s| Some(s.base_offset) != active && s.end_offset > s.base_offset)
            .map(|s| sealed(&self.inner.dir, s))
            .collect()
    }

    /// The first offset kept on local disk. Offsets from the start offset up to this one were
    /// evicted (see [`ShardLog::evict_oldest`]) and are read from the object store.
    pub fn local_start_offset(&self) -> u64 {
        local_start(&lock(&self.inner.state))
    }

    /// Segments on local disk (the active one included) and their bytes.
    pub fn local_footprint(&self) -> (usize, u64) {
        let state = lock(&self.inner.state);
        (state.segments.len(), state.segments.values().map(|s| s.size).sum())
    }

    /// Local retention: deletes the oldest sealed segments from local disk while the log's
    /// local bytes exceed `keep_bytes`, stopping at the first one `uploaded` refuses (given
    /// its base and end offsets) and never touching the active segment. Unlike retention,
    /// the start offset stays: the evicted records are still readable, from the object
    /// store. Returns the evicted segments.
    pub fn evict_oldest(&self, keep_bytes: u64, uploaded: impl Fn(u64, u64) -> bool) -> io::Result<Vec<SealedSegment>> {
        let w = lock(&self.inner.writer);
        w.check_usable()?;
        let (doomed, start) = {
            let state = lock(&self.inner.state);
            let mut local: u64 = state.segments.values().map(|s| s.size).sum();
            let mut doomed = Vec::new();
            for s in state.segments.values() {
                if local <= keep_bytes
                    || s.base_offset == w.active.base_offset
                    || !uploaded(s.base_offset, s.end_offset)
                {
                    break;
                }
                local -= s.size;
                doomed.push(sealed(&self.inner.dir, s));
            }
            (doomed, state.start_offset)
        };
        if doomed.is_empty() {
            return Ok(doomed);
        }
        // Persist the start first, so that a restart does not take the first local offset for it.
        recovery::write_start_offset(&self.inner.dir, start)?;
        {
            let mut state = lock(&self.inner.state);
            for s in &doomed {
                state.segments.remove(&s.base_offset);
            }
        }
        for s in &doomed {
            segment::delete_files(&self.inner.dir, s.base_offset)?;
        }
        Ok(doomed)
    }

    pub fn bounds(&self) -> LogBounds {
        let state = lock(&self.inner.state);
        LogBounds { start_offset: state.start_offset, end_offset: state.end_offset, last_timestamp_ms: state.last_ts }
    }

    /// First visible offset whose timestamp >= `ts_ms` (time index, then a short scan);
    /// the end offset if there is none.
    pub fn offset_at_timestamp(&self, ts_ms: i64) -> io::Result<u64> {
        let (mut cursor, start, end) = {
            let state = lock(&self.inner.state);
            let start = state.start_offset;
            let found =
                state.segments.values().find(|s| s.end_offset > start && s.last_ts.is_some_and(|last| last >= ts_ms));
            let Some(seg) = found else { return Ok(state.end_offset) };
            let cursor =
                SegmentCursor::new(seg.file.clone(), seg.position_for_time(ts_ms), seg.size, 8 << 10, 64 << 10);
            (cursor, start, state.end_offset)
        };
        while let Some(rec) = cursor.next_record()? {
            if rec.timestamp_ms >= ts_ms {
                // Timestamps never decrease, so if this is before the start, the start qualifies.
                return Ok(rec.offset.max(start));
            }
        }
        Ok(end)
    }

    /// Retention: hide records with timestamp < `cutoff_ms` (the start offset advances to the
    /// first record at or after it; it never moves back) and delete sealed segments wholly before
    /// the new start. The start is persisted, so it survives a restart. Idempotent.
    pub fn trim_before(&self, cutoff_ms: i64) -> io::Result<()> {
        let w = lock(&self.inner.writer);
        w.check_usable()?;
        let mut target = self.offset_at_timestamp(cutoff_ms)?;
        {
            // With evicted records below the local data, the local data tells whether they
            // expired only when some local records did: else leave the start where it is (the
            // object store's retention removes their segments, readers skip expired records).
            let state = lock(&self.inner.state);
            if state.start_offset < local_start(&state) && target <= local_start(&state) {
                target = state.start_offset;
            }
        }
        if target > lock(&self.inner.state).start_offset {
            // Persist first: a crash after this only leaves segments that the next open removes.
            recovery::write_start_offset(&self.inner.dir, target)?;
        }
        let doomed: Vec<u64> = {
            let mut state = lock(&self.inner.state);
            state.start_offset = state.start_offset.max(target);
            let start = state.start_offset;
            let doomed: Vec<u64> = state
                .segments
                .values()
                .filter(|s| s.base_offset != w.active.base_offset && s.end_offset <= start)
                .map(|s| s.base_offset)
                .collect();
            for base in &doomed {
                state.segments.remove(base);
            }
            doomed
        };
        for base in doomed {
            segment::delete_files(&self.inner.dir, base)?;
        }
        Ok(())
    }

    /// Take no more records (a reshard closed the shard): appends still queued fail, the
    /// active segment is sealed so the object store gets the tail, and the end offset (one
    /// past the last record, which stays readable) is returned. Closing twice is harmless.
    pub fn close(&self) -> io::Result<u64> {
        let mut w = lock(&self.inner.writer);
        w.check_usable()?;
        w.closed = true;
        if let Err(e) = self.inner.roll_locked(&mut w) {
            w.closed = false;
            return Err(e);
        }
        Ok(w.active.next_offset)
    }

    /// Undo `close` when the reshard that asked for it could not complete.
    pub fn reopen(&self) {
        lock(&self.inner.writer).closed = false;
    }

    /// Seal the active segment now (a no-op if it is empty).
    pub fn roll(&self) -> io::Result<()> {
        let mut w = lock(&self.inner.writer);
        w.check_usable()?;
        self.inner.roll_locked(&mut w)
    }

    /// Remove every file of this log, and its directory if nothing else is in it. Other clones
    /// of this log fail their appends afterwards and read nothing.
    pub fn destroy(self) -> io::Result<()> {
        let mut w = lock(&self.inner.writer);
        w.failed = Some("log destroyed".into());
        let bases: Vec<u64> = {
            let mut state = lock(&self.inner.state);
            state.start_offset = state.end_offset;
            std::mem::take(&mut state.segments).into_keys().collect()
        };
        for base in bases {
            segment::delete_files(&self.inner.dir, base)?;
        }
        recovery::remove_start_offset(&self.inner.dir)?;
        match std::fs::remove_dir(&self.inner.dir) {
            Err(e) if !matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Base offset of the oldest segment on local disk.
fn local_start(state: &State) -> u64 {
    state.segments.keys().next().copied().unwrap_or(state.end_offset)
}

/// The segment holding `offset`, or else the first one after it (segments may have gaps where a
/// damaged sealed segment was cut short).
fn segment_at_or_after(segments: &BTreeMap<u64, Segment>, offset: u64) -> Option<&Segment> {
    let containing = segments.range(..=offset).next_back().map(|(_, s)| s).filter(|s| s.end_offset > offset);
    containing.or_else(|| segments.range(offset + 1..).next().map(|(_, s)| s))
}
