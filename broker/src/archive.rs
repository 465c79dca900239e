//! The broker's use of the object-store tier: sealed segments are uploaded (compressed) and
//! listed in their shard's manifest; stream descriptions are mirrored to the bucket; and a
//! broker whose data directory is empty rebuilds its streams from the bucket.

use crate::catalog::meta::{StreamMeta, StreamStatus};
use crate::log::{SealObserver, SealedSegment, segment_file_name};
use crate::metrics::Metrics;
use crate::tier::codec::Compression;
use crate::tier::segments::{SegmentData, SegmentUpload};
use crate::tier::{TierError, TierStore};
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

/// Single-writer ownership is not implemented yet: every upload claims epoch 0.
const EPOCH: u64 = 0;

enum UploadJob {
    Segment {
        stream: String,
        shard: String,
        segment: SealedSegment,
    },
    /// Retention: segments whose records are all older than the cutoff leave the bucket.
    Trim {
        stream: String,
        shard: String,
        cutoff_ms: i64,
    },
    /// Answered once every job queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// Changes to the bucket's stream descriptions, applied in order by one task.
enum MetaJob {
    Mirror(Box<StreamMeta>),
    Forget(String),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Archive {
    tier: TierStore,
    /// Bytes of sealed segments not yet in the object store.
    backlog: Arc<AtomicU64>,
    backlog_gauge: prometheus::IntGauge,
    jobs: mpsc::UnboundedSender<UploadJob>,
    meta_jobs: mpsc::UnboundedSender<MetaJob>,
}

impl Archive {
    /// Start the uploader on the current runtime.
    pub fn start(tier: TierStore, compression: Compression, metrics: Arc<Metrics>) -> Archive {
        let (jobs, queue) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicU64::new(0));
        let metrics_gauge = metrics.upload_backlog_bytes.clone();
        tokio::spawn(upload_loop(tier.clone(), compression, queue, backlog.clone(), metrics.clone()));
        let (meta_jobs, meta_queue) = mpsc::unbounded_channel();
        tokio::spawn(meta_loop(tier.clone(), meta_queue, metrics));
        let backlog_gauge = metrics_gauge;
        Archive { tier, backlog, backlog_gauge, jobs, meta_jobs }
    }

    /// The object store the archive writes to (remote reads use it too).
    pub fn tier(&self) -> &TierStore {
        &self.tier
    }

    /// Bytes of sealed segments waiting for the object store.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// What the shard log calls when it seals a segment: queue its upload.
    pub fn seal_observer(&self, stream: &str, shard: &str) -> SealObserver {
        let (jobs, stream, shard) = (self.jobs.clone(), stream.to_string(), shard.to_string());
        let (backlog, gauge) = (self.backlog.clone(), self.backlog_gauge.clone());
        SealObserver(Arc::new(move |segment| {
            gauge.set((backlog.fetch_add(segment.bytes, Ordering::Relaxed) + segment.bytes) as i64);
            let _ = jobs.send(UploadJob::Segment { stream: stream.clone(), shard: shard.clone(), segment });
        }))
    }

    /// Queue the sealed segments a manifest does not list yet (after a restart).
    pub async fn catch_up(&self, stream: &str, shard: &str, sealed: Vec<SealedSegment>) -> Result<usize, TierError> {
        let listed = self.tier.manifest(stream, shard)?.load().await?.map(|(m, _)| m.segments).unwrap_or_default();
        let mut queued = 0;
        for segment in sealed {
            if !listed.iter().any(|s| s.base_offset == segment.base_offset) {
                let now = self.backlog.fetch_add(segment.bytes, Ordering::Relaxed) + segment.bytes;
                self.backlog_gauge.set(now as i64);
                let _ = self.jobs.send(UploadJob::Segment { stream: stream.into(), shard: shard.into(), segment });
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Apply retention in the bucket too (queued behind pending uploads).
    pub fn trim(&self, stream: &str, shard: &str, cutoff_ms: i64) {
        let _ = self.jobs.send(UploadJob::Trim { stream: stream.into(), shard: shard.into(), cutoff_ms });
    }

    /// Mirror a stream's description to the bucket (soon, in order), so that the bucket
    /// alone describes the stream.
    pub fn mirror(&self, meta: &StreamMeta) {
        let _ = self.meta_jobs.send(MetaJob::Mirror(Box::new(meta.clone())));
    }

    /// A deleted stream must not come back in a restore.
    pub fn forget(&self, name: &str) {
        let _ = self.meta_jobs.send(MetaJob::Forget(name.to_string()));
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

    /// Streams the bucket describes that are not in `local`, with their shards rebuilt
    /// under `streams_dir` from the sealed segments: numbering continues past a gap.
    pub async fn restore_missing(&self, streams_dir: &Path, local: &[String]) -> Result<Vec<String>, TierError> {
        let mut restored = Vec::new();
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
            for shard in &meta.shards {
                let id = shard_id(shard.index);
                let dir = stream_dir.join("shards").join(&id);
                tokio::fs::create_dir_all(&dir).await.map_err(|e| io_error("create", &dir, e))?;
                let manifest = self.tier.manifest(&name, &id)?.load().await?.map(|(m, _)| m);
                let next = match &manifest {
                    Some(m) => {
                        for segment in &m.segments {
                            let bytes = self.tier.download_segment(segment).await?;
                            write_durably(&dir.join(segment_file_name(segment.base_offset)), &bytes).await?;
                        }
                        m.end_offset() + RESTORE_OFFSET_GAP
                    }
                    None => RESTORE_OFFSET_GAP,
                };
                // An empty segment file at the new start is the log's active segment.
                write_durably(&dir.join(segment_file_name(next)), &[]).await?;
            }
            let meta_path = stream_dir.join("meta.json");
            meta.store(&meta_path).map_err(|e| io_error("write", &meta_path, e))?;
            tracing::info!(stream = %name, shards = meta.shards.len(), "restored from the object store");
            restored.push(name);
        }
        Ok(restored)
    }
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
        MetaJob::Forget(name) => tier.stream_meta(name)?.delete().await?,
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

/// Upload queued segments one at a time; a failed upload is retried with backoff (the
/// store may be down), without losing its place.
async fn upload_loop(
    tier: TierStore,
    compression: Compression,
    mut queue: mpsc::UnboundedReceiver<UploadJob>,
    backlog: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    while let Some(job) = queue.recv().await {
        let (stream, shard, segment) = match job {
            UploadJob::Segment { stream, shard, segment } => (stream, shard, segment),
            UploadJob::Trim { stream, shard, cutoff_ms } => {
                // Not retried: the next retention pass tries again.
                match tier.delete_before(&stream, &shard, EPOCH, cutoff_ms.max(0) as u64).await {
                    Ok(report) if report.deleted_objects > 0 => {
                        tracing::info!(%stream, %shard, deleted = report.deleted_objects, "retention in the object store");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        metrics.object_store_errors.inc();
                        tracing::warn!(%stream, %shard, "retention in the object store: {e}");
                    }
                }
                continue;
            }
            UploadJob::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let upload = SegmentUpload {
                stream: stream.clone(),
                shard: shard.clone(),
                epoch: EPOCH,
                base_offset: segment.base_offset,
                end_offset: segment.end_offset,
                first_ts_ms: segment.first_ts_ms.max(0) as u64,
                last_ts_ms: segment.last_ts_ms.max(0) as u64,
                records: segment.end_offset - segment.base_offset,
                compression,
                data: SegmentData::File(segment.path.clone()),
            };
            match tier.upload_segment(upload).await {
                Ok(report) => {
                    metrics.segment_uploads.inc();
                    metrics.segment_upload_bytes.inc_by(report.uploaded_bytes);
                    metrics.segment_raw_bytes.inc_by(report.raw_bytes);
                    metrics.segment_stored_bytes.inc_by(report.stored_bytes);
                    metrics.segment_upload_seconds.observe(started.elapsed().as_secs_f64());
                    break;
                }
                Err(e) => {
                    metrics.object_store_errors.inc();
                    if !segment.path.exists() {
                        // Trimmed by retention (or its stream deleted) before it could be uploaded.
                        tracing::warn!(%stream, %shard, "segment gone before upload: {e}");
                        break;
                    }
                    tracing::warn!(%stream, %shard, base = segment.base_offset, "upload failed, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    // Capped low: writes may be waiting on this backlog to drain.
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let left = backlog.fetch_sub(segment.bytes, Ordering::Relaxed) - segment.bytes;
        metrics.upload_backlog_bytes.set(left as i64);
    }
}
