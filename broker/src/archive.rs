//! The broker's use of the object-store tier: sealed segments are uploaded (compressed) and
//! listed in their shard's manifest; stream descriptions are mirrored to the bucket; and a
//! broker whose data directory is empty rebuilds its streams from the bucket.

use crate::catalog::meta::{StreamMeta, StreamStatus};
use crate::log::{SealObserver, SealedSegment, StoredRecord, encode_segment, segment_file_name};
use crate::metrics::Metrics;
use crate::ownership::Ownership;
use crate::shard::bucket::ShardBucket;
use crate::tier::codec::Compression;
use crate::tier::segments::{SegmentData, SegmentUpload};
use crate::tier::{TierError, TierStore, WalChunk};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use streamfabric_api::names::shard_id;
use tokio::sync::{mpsc, oneshot};

/// Offsets skipped when a shard is rebuilt from the bucket. Records of the lost active
/// segment may have been acknowledged (durability `local`); their numbers must never be
/// given out again, and no active segment holds 2^32 records.
pub const RESTORE_OFFSET_GAP: u64 = 1 << 32;

enum UploadJob {
    Segment {
        shard: Arc<ShardBucket>,
        segment: SealedSegment,
    },
    /// Retention: segments whose records are all older than the cutoff leave the bucket.
    Trim {
        shard: Arc<ShardBucket>,
        cutoff_ms: i64,
    },
    /// Segment objects the manifest does not list (an upload cut short between its PUT and
    /// the manifest update, or a crash) and older than `ORPHAN_MIN_AGE` leave the bucket.
    Sweep {
        shard: Arc<ShardBucket>,
    },
    /// Answered once every job queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// A segment the store keeps refusing (not an outage: a conflict) is given up after this many
/// attempts, so that it does not hold up the uploads queued behind it.
const REFUSALS_BEFORE_GIVING_UP: u32 = 5;

/// An unlisted segment object younger than this may be an upload in flight: it is kept.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(3600);

/// Changes to the bucket's stream descriptions, applied in order by one task.
enum MetaJob {
    Mirror(Box<StreamMeta>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Archive {
    tier: TierStore,
    pub ownership: Arc<Ownership>,
    /// Bytes of sealed segments not yet in the object store.
    backlog: Arc<AtomicU64>,
    backlog_gauge: prometheus::IntGauge,
    jobs: mpsc::UnboundedSender<UploadJob>,
    meta_jobs: mpsc::UnboundedSender<MetaJob>,
}

impl Archive {
    /// Start the uploader on the current runtime.
    pub fn start(
        tier: TierStore,
        compression: Compression,
        ownership: Arc<Ownership>,
        metrics: Arc<Metrics>,
    ) -> Archive {
        let (jobs, queue) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicU64::new(0));
        let metrics_gauge = metrics.upload_backlog_bytes.clone();
        let uploader = Uploader {
            tier: tier.clone(),
            default_compression: compression,
            ownership: ownership.clone(),
            backlog: backlog.clone(),
            metrics: metrics.clone(),
        };
        tokio::spawn(uploader.run(queue));
        let (meta_jobs, meta_queue) = mpsc::unbounded_channel();
        tokio::spawn(meta_loop(tier.clone(), meta_queue, metrics));
        let backlog_gauge = metrics_gauge;
        Archive { tier, ownership, backlog, backlog_gauge, jobs, meta_jobs }
    }

    /// Take the shard named from epoch `from`; see `Ownership::take`.
    pub async fn take(
        &self,
        stream: &str,
        shard: &str,
        from: u64,
        held: Option<&ShardBucket>,
    ) -> Result<u64, TierError> {
        self.ownership.take(&self.tier, stream, shard, from, held).await
    }

    /// Take (or keep) the shard for this broker in the object store; see `Ownership`.
    pub async fn claim(&self, shard: &ShardBucket) -> Result<u64, TierError> {
        self.ownership.claim(&self.tier, shard).await
    }

    /// The object store it writes to.
    pub fn tier(&self) -> &TierStore {
        &self.tier
    }

    /// Offset after the last segment of `shard` in its manifest (read from the bucket the
    /// first time; then kept up to date by the uploads).
    pub async fn uploaded_end(&self, shard: &ShardBucket) -> Result<u64, TierError> {
        if let Some(end) = shard.uploaded_end() {
            return Ok(end);
        }
        let end = self.listed_end(&shard.stream, &shard.shard).await?;
        shard.note_uploaded(end);
        Ok(end)
    }

    /// Offset after the last segment the bucket's manifest of a shard lists.
    pub async fn listed_end(&self, stream: &str, shard: &str) -> Result<u64, TierError> {
        Ok(self.tier.manifest(stream, shard)?.load().await?.map_or(0, |(m, _)| m.end_offset()))
    }

    /// Bytes of sealed segments waiting for the object store.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// What the shard log calls when it seals a segment: queue its upload.
    pub fn seal_observer(&self, shard: Arc<ShardBucket>) -> SealObserver {
        let jobs = self.jobs.clone();
        let (backlog, gauge) = (self.backlog.clone(), self.backlog_gauge.clone());
        SealObserver(Arc::new(move |segment| {
            gauge.set((backlog.fetch_add(segment.bytes, Ordering::Relaxed) + segment.bytes) as i64);
            let _ = jobs.send(UploadJob::Segment { shard: shard.clone(), segment });
        }))
    }

    /// Queue the sealed segments a manifest does not list yet (after a restart).
    pub async fn catch_up(&self, shard: &Arc<ShardBucket>, sealed: Vec<SealedSegment>) -> Result<usize, TierError> {
        let manifest = self.tier.manifest(&shard.stream, &shard.shard)?.load().await?.map(|(m, _)| m);
        shard.note_uploaded(manifest.as_ref().map_or(0, |m| m.end_offset()));
        let listed = manifest.map(|m| m.segments).unwrap_or_default();
        let mut queued = 0;
        for segment in sealed {
            if !listed.iter().any(|s| s.base_offset == segment.base_offset) {
                let now = self.backlog.fetch_add(segment.bytes, Ordering::Relaxed) + segment.bytes;
                self.backlog_gauge.set(now as i64);
                let _ = self.jobs.send(UploadJob::Segment { shard: shard.clone(), segment });
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Delete the shard's orphaned segment objects (queued behind pending uploads).
    pub fn sweep(&self, shard: &Arc<ShardBucket>) {
        let _ = self.jobs.send(UploadJob::Sweep { shard: shard.clone() });
    }

    /// Apply retention in the bucket too (queued behind pending uploads).
    pub fn trim(&self, shard: &Arc<ShardBucket>, cutoff_ms: i64) {
        let _ = self.jobs.send(UploadJob::Trim { shard: shard.clone(), cutoff_ms });
    }

    /// Mirror a stream's description to the bucket (soon, in order), so that the bucket
    /// alone describes the stream.
    pub fn mirror(&self, meta: &StreamMeta) {
        let _ = self.meta_jobs.send(MetaJob::Mirror(Box::new(meta.clone())));
    }

    /// Wait until every description change queued so far is in the bucket.
    pub async fn flush_meta(&self) {
        let (mirrored, mirrors) = oneshot::channel();
        let _ = self.meta_jobs.send(MetaJob::Flush(mirrored));
        let _ = mirrors.await;
    }

    /// A deleted stream's objects leave the bucket, its description last (after the DELETING
    /// status queued before it), so that it never comes back in a restore.
    pub async fn purge(&self, name: &str) -> Result<usize, TierError> {
        self.flush_meta().await;
        self.tier.delete_stream_objects(name).await
    }

    /// Wait until every queued upload and description change is in the bucket (tests, shutdown).
    pub async fn flush(&self) {
        let (uploaded, uploads) = oneshot::channel();
        let (mirrored, mirrors) = oneshot::channel();
        let _ = self.jobs.send(UploadJob::Flush(uploaded));
        let _ = self.meta_jobs.send(MetaJob::Flush(mirrored));
        let _ = uploads.await;
        let _ = mirrors.await;
    }

    /// Streams the bucket describes that are not in `local`, with their shards rebuilt under
    /// `streams_dir`: each log starts at its first sealed segment, which stays in the bucket
    /// (reads below the local data fetch it), holds the records of the write-ahead objects
    /// past the sealed ones (durability `object`), and numbering continues past a gap.
    pub async fn restore_missing(&self, streams_dir: &Path, local: &[String]) -> Result<Vec<String>, TierError> {
        let mut restored = Vec::new();
        let mut write_ahead: Option<Vec<WalChunk>> = None;
        for name in self.tier.list_streams().await? {
            if local.contains(&name) {
                continue;
            }
            let Some((doc, _)) = self.tier.stream_meta(&name)?.load().await? else { continue };
            let Ok(meta) = serde_json::from_value::<StreamMeta>(doc.meta) else {
                tracing::warn!(stream = %name, "the bucket's description of this stream is not readable; skipped");
                continue;
            };
            if meta.status == StreamStatus::Deleting {
                continue;
            }
            let stream_dir = streams_dir.join(&name);
            if write_ahead.is_none() {
                write_ahead = Some(self.tier.read_all_wal().await?);
            }
            for shard in &meta.shards {
                let dir = stream_dir.join("shards").join(shard_id(shard.index));
                let replay = write_ahead.as_deref().unwrap_or_default();
                self.rebuild_shard_dir(&name, meta.incarnation, shard.index, &dir, replay, None).await?;
            }
            let meta_path = stream_dir.join("meta.json");
            meta.store(&meta_path).map_err(|e| io_error("write", &meta_path, e))?;
            tracing::info!(stream = %name, shards = meta.shards.len(), "restored from the object store");
            restored.push(name);
        }
        Ok(restored)
    }
}

impl Archive {
    /// Write a shard's log directory from the bucket: the log starts at its first sealed
    /// segment, which stays in the bucket (reads below the local data fetch it), holds the
    /// records of `replay` (write-ahead objects) past the sealed ones, and its numbering
    /// continues at `continue_at` (a release offset: its owner handed it on with everything
    /// listed) or else past a gap (records of a lost active segment may have been
    /// acknowledged; their numbers must never be given out again). Returns where it continues.
    pub async fn rebuild_shard_dir(
        &self,
        stream: &str,
        incarnation: u64,
        index: u64,
        dir: &Path,
        replay: &[WalChunk],
        continue_at: Option<u64>,
    ) -> Result<u64, TierError> {
        let id = shard_id(index);
        tokio::fs::create_dir_all(dir).await.map_err(|e| io_error("create", dir, e))?;
        let manifest = self.tier.manifest(stream, &id)?.load().await?.map(|(m, _)| m);
        let mut start = manifest.as_ref().and_then(|m| m.segments.first()).map(|s| s.base_offset);
        let mut end = manifest.as_ref().map_or(0, |m| m.end_offset());
        let tail = records_past(replay, stream, incarnation, &id, end);
        let replayed = tail.len();
        for run in contiguous_runs(&tail) {
            write_durably(&dir.join(segment_file_name(run[0].offset)), &encode_segment(run)).await?;
            start.get_or_insert(run[0].offset);
            end = end.max(run[run.len() - 1].offset + 1);
        }
        if replayed > 0 {
            tracing::info!(%stream, shard = %id, replayed, "records replayed from write-ahead objects");
        }
        let next = match continue_at {
            Some(at) => at.max(end),
            None => end + RESTORE_OFFSET_GAP,
        };
        // An empty segment file at the new start is the log's active segment.
        write_durably(&dir.join(segment_file_name(next)), &[]).await?;
        crate::log::write_start_offset(dir, start.unwrap_or(next)).map_err(|e| io_error("write", dir, e))?;
        Ok(next)
    }
}

/// The records of `chunks` for one shard (of this incarnation of its stream) at or past
/// `from`, by offset. Where owners overlap, the later owner's chunks win: a record of epoch
/// `e` is kept only below the first offset any later epoch wrote (what a superseded owner
/// still wrote from there on was never acknowledged; the later owner's records were).
pub fn records_past(chunks: &[WalChunk], stream: &str, incarnation: u64, shard: &str, from: u64) -> Vec<StoredRecord> {
    let ours: Vec<&WalChunk> =
        chunks.iter().filter(|c| c.stream == stream && c.incarnation == incarnation && c.shard == shard).collect();
    // For each epoch, where the epochs after it began.
    let mut later_start: BTreeMap<u64, u64> = BTreeMap::new();
    for c in &ours {
        let start = later_start.entry(c.epoch).or_insert(u64::MAX);
        *start = (*start).min(c.first_offset);
    }
    let mut after = u64::MAX;
    for start in later_start.values_mut().rev() {
        (*start, after) = (after, after.min(*start));
    }
    let mut by_offset = BTreeMap::new();
    for c in ours {
        let limit = later_start[&c.epoch];
        for (i, r) in c.records.iter().enumerate() {
            let offset = c.first_offset + i as u64;
            if offset >= from && offset < limit {
                by_offset.insert(
                    offset,
                    StoredRecord {
                        offset,
                        timestamp_ms: c.timestamp_ms,
                        partition_key: r.partition_key.clone(),
                        data: r.data.clone(),
                    },
                );
            }
        }
    }
    by_offset.into_values().collect()
}

/// `records` (sorted by offset) cut where offsets skip: a segment holds contiguous offsets.
/// Writes that were appended but never acknowledged leave such holes.
fn contiguous_runs(records: &[StoredRecord]) -> impl Iterator<Item = &[StoredRecord]> {
    records.chunk_by(|a, b| b.offset == a.offset + 1)
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> TierError {
    TierError::Io { op, path: path.display().to_string(), source }
}

/// Write a file whole and durably (temporary name, sync, rename).
async fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), TierError> {
    let (target, bytes) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let tmp = target.with_extension("restoring");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(|e| io_error("write", path, e))
}

async fn apply_meta(tier: &TierStore, job: &MetaJob) -> Result<(), TierError> {
    match job {
        MetaJob::Mirror(meta) => {
            let value = serde_json::to_value(meta.as_ref()).expect("stream meta serializes");
            tier.stream_meta(&meta.name)?
                .update(|current| {
                    *current = value.clone();
                    Ok(())
                })
                .await?;
        }
        MetaJob::Flush(_) => {}
    }
    Ok(())
}

/// Apply description changes in order; a failure is retried (the store may be down).
async fn meta_loop(tier: TierStore, mut queue: mpsc::UnboundedReceiver<MetaJob>, metrics: Arc<Metrics>) {
    while let Some(job) = queue.recv().await {
        if let MetaJob::Flush(done) = job {
            let _ = done.send(());
            continue;
        }
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = apply_meta(&tier, &job).await {
            metrics.object_store_errors.inc();
            tracing::warn!("mirroring a stream description failed, retrying in {backoff:?}: {e}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// The upload task's state: it uploads queued segments one at a time and applies retention.
struct Uploader {
    tier: TierStore,
    default_compression: Compression,
    ownership: Arc<Ownership>,
    backlog: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Uploader {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<UploadJob>) {
        while let Some(job) = queue.recv().await {
            match job {
                UploadJob::Segment { shard, segment } => {
                    self.upload(&shard, &segment).await;
                    let left = self.backlog.fetch_sub(segment.bytes, Ordering::Relaxed) - segment.bytes;
                    self.metrics.upload_backlog_bytes.set(left as i64);
                }
                UploadJob::Trim { shard, cutoff_ms } => self.trim(&shard, cutoff_ms).await,
                UploadJob::Sweep { shard } => self.sweep(&shard).await,
                UploadJob::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Only the owner sweeps; not retried (the next sweep tries again).
    async fn sweep(&self, bucket: &ShardBucket) {
        let (stream, shard) = (&bucket.stream, &bucket.shard);
        let swept = match self.ownership.epoch(&self.tier, bucket).await {
            Ok(Some(_)) => self.tier.sweep_orphans(stream, shard, ORPHAN_MIN_AGE).await,
            Ok(None) => return,
            Err(e) => Err(e),
        };
        match swept {
            Ok(report) if !report.deleted.is_empty() => {
                self.metrics.segment_orphans_deleted.inc_by(report.deleted.len() as u64);
                tracing::info!(%stream, %shard, deleted = report.deleted.len(), bytes = report.freed_bytes, "orphaned segment objects deleted");
            }
            Ok(_) => {}
            Err(e) => {
                self.metrics.object_store_errors.inc();
                tracing::warn!(%stream, %shard, "sweeping orphaned segment objects: {e}");
            }
        }
    }

    /// Not retried: the next retention pass tries again.
    async fn trim(&self, bucket: &ShardBucket, cutoff_ms: i64) {
        let (stream, shard) = (&bucket.stream, &bucket.shard);
        let epoch = match self.ownership.epoch(&self.tier, bucket).await {
            Ok(Some(epoch)) => epoch,
            Ok(None) => return, // the owner applies retention
            Err(e) => {
                self.metrics.object_store_errors.inc();
                tracing::warn!(%stream, %shard, "retention in the object store: {e}");
                return;
            }
        };
        match self.tier.delete_before(stream, shard, epoch, cutoff_ms.max(0) as u64).await {
            Ok(report) if report.deleted_objects > 0 => {
                tracing::info!(%stream, %shard, deleted = report.deleted_objects, "retention in the object store");
            }
            Ok(_) => {}
            Err(TierError::StaleEpoch { current, .. }) => {
                bucket.fence(&format!("epoch {current} was taken by another broker"));
            }
            Err(e) => {
                self.metrics.object_store_errors.inc();
                tracing::warn!(%stream, %shard, "retention in the object store: {e}");
            }
        }
    }

    /// Upload one sealed segment and list it in the manifest; a failure is retried with
    /// backoff (the store may be down) without losing its place. Gives up when the segment
    /// is gone (retention), another broker owns the shard, or the store keeps refusing it.
    async fn upload(&self, bucket: &ShardBucket, segment: &SealedSegment) {
        let (stream, shard) = (&bucket.stream, &bucket.shard);
        let mut backoff = Duration::from_millis(100);
        let mut refusals = 0;
        loop {
            let started = Instant::now();
            let attempt = match self.ownership.epoch(&self.tier, bucket).await {
                Ok(None) => return,
                Ok(Some(epoch)) => {
                    let upload = SegmentUpload {
                        stream: stream.to_string(),
                        shard: shard.to_string(),
                        epoch,
                        base_offset: segment.base_offset,
                        end_offset: segment.end_offset,
                        first_ts_ms: segment.first_ts_ms.max(0) as u64,
                        last_ts_ms: segment.last_ts_ms.max(0) as u64,
                        records: segment.end_offset - segment.base_offset,
                        compression: bucket.compression().unwrap_or(self.default_compression),
                        data: SegmentData::File(segment.path.clone()),
                    };
                    self.tier.upload_segment(upload).await
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(report) => {
                    let m = &self.metrics;
                    m.segment_uploads.inc();
                    m.segment_upload_bytes.inc_by(report.uploaded_bytes);
                    m.segment_raw_bytes.inc_by(report.raw_bytes);
                    m.segment_stored_bytes.inc_by(report.stored_bytes);
                    m.segment_upload_seconds.observe(started.elapsed().as_secs_f64());
                    bucket.note_uploaded(segment.end_offset);
                    return;
                }
                Err(TierError::StaleEpoch { current, .. }) => {
                    bucket.fence(&format!("epoch {current} was taken by another broker"));
                    return;
                }
                Err(e) => {
                    self.metrics.object_store_errors.inc();
                    if !segment.path.exists() {
                        // Trimmed by retention (or its stream deleted) before it could be uploaded.
                        tracing::warn!(%stream, %shard, "segment gone before upload: {e}");
                        return;
                    }
                    refusals += u32::from(!e.is_transient());
                    if refusals >= REFUSALS_BEFORE_GIVING_UP {
                        // The store answers but will not take it (a conflicting object or entry):
                        // retrying forever would hold up every other upload behind it. It stays
                        // on local disk, and the catch-up at the next start tries again.
                        self.metrics.segment_uploads_abandoned.inc();
                        tracing::error!(%stream, %shard, base = segment.base_offset, "upload refused {refusals} times, left on local disk: {e}");
                        return;
                    }
                    tracing::warn!(%stream, %shard, base = segment.base_offset, "upload failed, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    // Capped low: writes may be waiting on this backlog to drain.
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
