//! The append path: group commit, segment rolling, and the interval flusher.
//!
//! `append` queues its batch; if no writer is running it starts one on tokio's blocking pool
//! (so the write and fdatasync never stall a worker thread, and other shards' logs progress).
//! The writer is the group's leader: it takes every queued batch, encodes them into one buffer,
//! issues one write and (under `FlushPolicy::Always`) one sync, and only then publishes the new
//! end to readers and answers the waiting appenders. Batches that queue up meanwhile form the
//! next group. The writer exits when the queue is empty.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::index::{self, IndexBuilder, IndexEntry};
use super::segment::{self, Segment};
use super::{Appended, FlushPolicy, Inner, NewRecord, lock, record};

/// A segment's file positions are u32 in the index; keep segments well below that.
const MAX_SEGMENT_BYTES: u64 = 1 << 31;
/// Don't let one large group pin a big encode buffer forever.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

pub(crate) struct Request {
    pub records: Vec<NewRecord>,
    pub done: oneshot::Sender<io::Result<Appended>>,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub pending: Vec<Request>,
    /// A writer is draining `pending`; new requests just queue.
    pub writer_running: bool,
}

/// The write side of the active segment; only the holder of `Inner::writer` changes the log.
pub(crate) struct Writer {
    pub active: ActiveSegment,
    pub last_ts: Option<i64>,
    /// Set after a failed sync (the file's state is then unknown) or by `destroy`.
    pub failed: Option<String>,
    /// Set by `ShardLog::close`: the shard was closed by a reshard and takes no more records.
    pub closed: bool,
    buf: Vec<u8>,
    new_entries: Vec<IndexEntry>,
}

pub(crate) struct ActiveSegment {
    pub base_offset: u64,
    pub file: Arc<std::fs::File>,
    /// Bytes written (and acknowledged); the next write goes here.
    pub size: u64,
    pub next_offset: u64,
    /// Timestamp of the first record, for age-based rolling.
    pub first_ts: Option<i64>,
    pub builder: IndexBuilder,
}

impl Writer {
    pub(crate) fn new(active: &Segment, builder: IndexBuilder, last_ts: Option<i64>) -> Self {
        Writer {
            active: ActiveSegment {
                base_offset: active.base_offset,
                file: active.file.clone(),
                size: active.size,
                next_offset: active.end_offset,
                first_ts: active.first_ts,
                builder,
            },
            last_ts,
            failed: None,
            closed: false,
            buf: Vec::new(),
            new_entries: Vec::new(),
        }
    }

    pub(crate) fn check_usable(&self) -> io::Result<()> {
        match &self.failed {
            Some(why) => Err(io::Error::other(format!("log unusable: {why}"))),
            None => Ok(()),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The right (and duty) to drain the queue, moved into the blocking task. If it is dropped
/// unfinished (a panic, or the runtime discarding the task), whoever is still queued gets an
/// error and the next append starts a new writer.
pub(crate) struct WriterTask {
    inner: Arc<Inner>,
    finished: bool,
}

impl WriterTask {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        WriterTask { inner, finished: false }
    }

    /// Commits group after group until the queue is empty.
    pub(crate) fn run(mut self) {
        let mut group = Vec::new();
        loop {
            {
                let mut queue = lock(&self.inner.queue);
                if queue.pending.is_empty() {
                    queue.writer_running = false;
                    self.finished = true;
                    return;
                }
                std::mem::swap(&mut queue.pending, &mut group);
            }
            match self.inner.commit_group(&group) {
                Ok(appended) => {
                    for (request, appended) in group.drain(..).zip(appended) {
                        let _ = request.done.send(Ok(appended));
                    }
                }
                Err(e) => {
                    for request in group.drain(..) {
                        let _ = request.done.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
        }
    }
}

impl Drop for WriterTask {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = lock(&self.inner.queue);
            queue.writer_running = false;
            queue.pending.clear(); // dropping the senders wakes those appenders with an error
        }
    }
}

impl Inner {
    /// Writes a group of batches with one write and at most one sync, then makes them visible.
    fn commit_group(&self, group: &[Request]) -> io::Result<Vec<Appended>> {
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        w.check_usable()?;
        if w.closed {
            return Err(io::Error::other("the shard is closed: it takes no more records"));
        }
        let now = now_ms();
        // Timestamps never go backwards, even if the wall clock does.
        let ts = w.last_ts.map_or(now, |last| last.max(now));
        let group_bytes: usize = group
            .iter()
            .flat_map(|r| &r.records)
            .map(|r| record::encoded_len(r.partition_key.len(), r.data.len()))
            .sum();
        if self.should_roll(&w.active, group_bytes as u64, now) {
            self.roll_locked(w)?;
        }

        let active = &mut w.active;
        let builder_before = active.builder;
        w.buf.clear();
        w.buf.reserve(group_bytes);
        w.new_entries.clear();
        let mut appended = Vec::with_capacity(group.len());
        let mut offset = active.next_offset;
        let mut position = active.size;
        for request in group {
            appended.push(Appended { first_offset: offset, timestamp_ms: ts });
            for r in &request.records {
                let len = record::encoded_len(r.partition_key.len(), r.data.len());
                if active.builder.observe(len) {
                    w.new_entries.push(IndexEntry {
                        rel_offset: (offset - active.base_offset) as u32,
                        position: position as u32,
                        timestamp_ms: ts,
                    });
                }
                record::encode(&mut w.buf, offset, ts, r.partition_key.as_bytes(), &r.data);
                offset += 1;
                position += len as u64;
            }
        }

        if let Err(e) = active.file.write_all_at(&w.buf, active.size) {
            active.builder = builder_before;
            // Cut off whatever part did land so the next group starts at a record boundary.
            if let Err(t) = active.file.set_len(active.size) {
                w.failed = Some(format!("write failed ({e}) and could not be undone ({t})"));
            }
            return Err(e);
        }
        if matches!(self.config.flush, FlushPolicy::Always) {
            #[cfg(test)]
            self.before_sync(offset);
            let started = std::time::Instant::now();
            if let Err(e) = active.file.sync_data() {
                // After a failed fsync the kernel may have dropped the dirty pages: stop here.
                w.failed = Some(format!("sync failed: {e}"));
                return Err(e);
            }
            if let Some(observe) = &self.config.sync_observer {
                (observe.0)(started.elapsed());
            }
        } else {
            self.unsynced.store(true, Ordering::Release);
        }

        // Durable under the policy: now, and only now, readers may see it.
        active.size = position;
        active.next_offset = offset;
        active.first_ts.get_or_insert(ts);
        w.last_ts = Some(ts);
        {
            let mut state = lock(&self.state);
            let seg = state.segments.get_mut(&active.base_offset).expect("active segment is in the map");
            seg.size = position;
            seg.end_offset = offset;
            seg.first_ts.get_or_insert(ts);
            seg.last_ts = Some(ts);
            seg.index.extend_from_slice(&w.new_entries);
            state.end_offset = offset;
            state.last_ts = Some(ts);
        }
        if w.buf.capacity() > KEEP_BUFFER_BYTES {
            w.buf = Vec::new();
        }
        Ok(appended)
    }

    fn should_roll(&self, active: &ActiveSegment, incoming_bytes: u64, now: i64) -> bool {
        if active.size == 0 {
            return false;
        }
        let max_bytes = self.config.segment_max_bytes.min(MAX_SEGMENT_BYTES);
        let max_age_ms = self.config.segment_max_age.as_millis().min(i64::MAX as u128) as i64;
        active.size + incoming_bytes > max_bytes
            || active.first_ts.is_some_and(|first| now.saturating_sub(first) >= max_age_ms)
    }

    /// Seals the active segment (sync, index files) and starts a new one at the next offset.
    /// A no-op on an empty segment, so there are never empty sealed segments.
    pub(crate) fn roll_locked(&self, w: &mut Writer) -> io::Result<()> {
        let active = &w.active;
        if active.size == 0 {
            return Ok(());
        }
        let durable = !matches!(self.config.flush, FlushPolicy::Never);
        if durable && let Err(e) = active.file.sync_data() {
            w.failed = Some(format!("sync failed: {e}"));
            return Err(e);
        }
        let base = active.base_offset;
        let (meta, entries) = {
            let mut state = lock(&self.state);
            let seg = state.segments.get_mut(&base).expect("active segment is in the map");
            (seg.meta(), seg.seal_index())
        };
        let (ix, tix) = (segment::index_path(&self.dir, base), segment::time_index_path(&self.dir, base));
        if let Err(e) = index::write_index_files(&ix, &tix, base, &meta, &entries) {
            // Not fatal: recovery rebuilds a missing index.
            tracing::warn!(dir = %self.dir.display(), base, error = %e, "could not write segment index");
        }

        let new_base = active.next_offset;
        let file = Arc::new(segment::open_rw(&segment::log_path(&self.dir, new_base), true)?);
        if durable {
            segment::sync_dir(&self.dir)?;
        }
        w.active = ActiveSegment {
            base_offset: new_base,
            file: file.clone(),
            size: 0,
            next_offset: new_base,
            first_ts: None,
            builder: IndexBuilder::new(self.config.index_interval_bytes),
        };
        let sealed = {
            let mut state = lock(&self.state);
            state.segments.insert(new_base, Segment::empty(new_base, file));
            super::sealed(&self.dir, &state.segments[&base])
        };
        if let Some(observe) = &self.config.seal_observer {
            (observe.0)(sealed);
        }
        Ok(())
    }
}

/// Syncs the active segment every `interval` while there are unsynced writes. Holds only a weak
/// reference, and `Inner`'s drop unparks it, so it ends with the log.
pub(crate) fn start_flusher(inner: &Arc<Inner>, interval: Duration) -> io::Result<()> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let handle = std::thread::Builder::new().name("log-flusher".into()).spawn(move || {
        loop {
            std::thread::park_timeout(interval);
            let Some(inner) = weak.upgrade() else { return };
            if inner.unsynced.swap(false, Ordering::AcqRel) {
                let file = lock(&inner.state).segments.values().next_back().map(|s| s.file.clone());
                if let Some(Err(e)) = file.map(|f| f.sync_data()) {
                    tracing::warn!(dir = %inner.dir.display(), error = %e, "background sync failed");
                    inner.unsynced.store(true, Ordering::Release);
                }
            }
        }
    })?;
    *lock(&inner.flusher) = Some(handle.thread().clone());
    Ok(())
}
