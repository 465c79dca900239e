//! Segment objects: upload (compress, put, list in the manifest), download,
//! retention and orphan sweeping.
//!
//! Crash safety: the object is written first, the manifest second. A crash between
//! the two leaves an unlisted object; uploading the same segment again succeeds (an
//! existing object with the same content counts as uploaded) and lists it. Retention
//! is the reverse: the manifest drops the entries first, the objects are deleted
//! second; a crash between leaves unlisted objects that [`TierStore::sweep_orphans`]
//! deletes.
//!
//! Objects are in the framed format of [`super::frames`] (independently compressed frames
//! and a footer indexing them), which [`super::remote`] reads with ranged GETs. Segments are
//! held in memory whole while being compressed and uploaded, and [`TierStore::download_segment`]
//! reads one back whole (one GET): sized for segments of tens of MiB.

use std::collections::HashSet;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutPayload, WriteMultipart};

use super::codec::{self, Compression};
use super::frames;
use super::manifest::SegmentRef;
use super::{Result, TierError, TierStore, layout};

/// Where the sealed segment file's bytes are.
#[derive(Debug, Clone)]
pub enum SegmentData {
    Bytes(Bytes),
    File(PathBuf),
}

/// A sealed segment to upload.
#[derive(Debug, Clone)]
pub struct SegmentUpload {
    pub stream: String,
    pub shard: String,
    /// The uploader's ownership epoch (fencing token).
    pub epoch: u64,
    pub base_offset: u64,
    /// Exclusive.
    pub end_offset: u64,
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
    pub records: u64,
    pub compression: Compression,
    pub data: SegmentData,
}

/// What an upload did, for metrics and logs.
#[derive(Debug, Clone)]
pub struct UploadReport {
    /// The manifest entry (as listed now).
    pub segment: SegmentRef,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Bytes sent to the object store by this call (0 if the object already existed).
    pub uploaded_bytes: u64,
    pub multipart: bool,
    /// The object already existed with the same content (retry after a crash).
    pub object_existed: bool,
    /// The manifest already listed the segment, nothing was written.
    pub already_listed: bool,
    /// Conditional manifest writes lost to other writers before this one won.
    pub manifest_conflicts: u32,
    pub compress_time: Duration,
    pub upload_time: Duration,
    pub manifest_time: Duration,
    pub total_time: Duration,
}

/// What [`TierStore::delete_before`] did.
#[derive(Debug, Clone, Default)]
pub struct RetentionReport {
    /// Entries removed from the manifest.
    pub removed: Vec<SegmentRef>,
    /// Objects deleted (or already gone).
    pub deleted_objects: usize,
    /// Objects whose delete failed (left as orphans for `sweep_orphans`).
    pub failed_deletes: usize,
    pub freed_stored_bytes: u64,
    pub trimmed_before_offset: u64,
}

/// What [`TierStore::sweep_orphans`] did.
#[derive(Debug, Clone, Default)]
pub struct SweepReport {
    /// Objects seen under the segments prefix.
    pub scanned: usize,
    /// Full paths of deleted orphans.
    pub deleted: Vec<String>,
    pub freed_bytes: u64,
    /// Unlisted objects younger than `min_age`, left alone.
    pub too_young: usize,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A sealed segment file's bytes, mapped rather than read: it was just written, so it is in
/// the page cache, and reading it would copy up to a segment's size (64 MiB) into freshly
/// zeroed memory per upload (a tenth of the broker's CPU under a steady write load).
fn map_sealed(path: &std::path::Path) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new()); // an empty mapping is an error
    }
    // SAFETY: a sealed segment is never written or truncated again, only deleted, and a
    // mapping outlives the deletion of its file.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
}

async fn blocking<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TierError::Corrupt { path: path.to_string(), reason: format!("codec task failed: {e}") })
}

/// Nice value of the thread compressing a sealed segment.
const BACKGROUND_NICE: i32 = 10;

/// Runs `f` on a thread of its own at a lower CPU priority: compressing a 64 MiB segment
/// takes a core for a tenth of a second, and at the same priority it delayed the puts
/// running meanwhile (their p99 at half the peak rate doubled on two cores). Nice 10 leaves
/// it the CPU the put path does not use. A thread per segment, not the blocking pool's,
/// because a thread cannot raise its priority back without privileges.
async fn in_background<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("segment-compress".into()).spawn(move || {
        // SAFETY: setpriority(2) on this thread (tid 0 is the caller) takes no pointers.
        // Failing to lower the priority only leaves it where it was.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
        let _ = done.send(f());
    });
    let failed = |reason: String| TierError::Corrupt { path: path.to_string(), reason };
    spawned.map_err(|e| failed(format!("no thread for the codec: {e}")))?;
    result.await.map_err(|_| failed("the codec thread failed".into()))
}

impl TierStore {
    /// Compresses and uploads a sealed segment, then lists it in the shard's manifest
    /// as the owner of `req.epoch`. Idempotent: repeating an upload that completed
    /// (fully or only the object) succeeds. Refused with `StaleEpoch` when the
    /// manifest carries a higher epoch, with `Conflict` when another object or
    /// manifest entry occupies the segment's key or offsets.
    pub async fn upload_segment(&self, req: SegmentUpload) -> Result<UploadReport> {
        let start = Instant::now();
        let manifest = self.manifest(&req.stream, &req.shard)?;
        let key = layout::segment_key(&req.stream, &req.shard, req.base_offset, req.epoch);
        let path = self.path(&key);
        if req.end_offset <= req.base_offset {
            return Err(TierError::Rejected {
                reason: format!("segment {path}: empty offset range {}..{}", req.base_offset, req.end_offset),
            });
        }
        let raw: Bytes = match &req.data {
            SegmentData::Bytes(b) => b.clone(),
            SegmentData::File(p) => map_sealed(p).map_err(|source| TierError::Io {
                op: "mapping segment file",
                path: p.display().to_string(),
                source,
            })?,
        };

        // Cheap early exits: fenced, or already listed.
        if let Some((m, _)) = manifest.load().await? {
            if m.epoch > req.epoch {
                return Err(TierError::StaleEpoch {
                    what: format!("{} manifest", manifest.path()),
                    current: m.epoch,
                    attempted: req.epoch,
                });
            }
            if let Some(s) = m.segments.iter().find(|s| s.base_offset == req.base_offset)
                && s.end_offset == req.end_offset
                && s.raw_bytes == raw.len() as u64
                && s.records == req.records
                && s.key == key
            {
                // Listed: make sure the object holds these bytes (one GET).
                if self.verify_existing(&path, &raw, None, req.compression).await?.compression != s.compression {
                    return Err(TierError::Corrupt {
                        path: path.to_string(),
                        reason: format!("manifest says {}, the object is stored otherwise", s.compression),
                    });
                }
                return Ok(UploadReport {
                    segment: s.clone(),
                    raw_bytes: s.raw_bytes,
                    stored_bytes: s.stored_bytes,
                    uploaded_bytes: 0,
                    multipart: false,
                    object_existed: true,
                    already_listed: true,
                    manifest_conflicts: 0,
                    compress_time: Duration::ZERO,
                    upload_time: Duration::ZERO,
                    manifest_time: Duration::ZERO,
                    total_time: start.elapsed(),
                });
            }
        }

        let t = Instant::now();
        let (level, comp, raw2) = (self.options().zstd_level, req.compression, raw.clone());
        let frame_bytes = self.options().frame_bytes;
        let compressed: Bytes = in_background(&path, move || frames::encode(&raw2, comp, level, frame_bytes))
            .await?
            .map_err(|e| TierError::Io { op: "framing and compressing segment", path: path.to_string(), source: e })?
            .0
            .into();
        let compress_time = t.elapsed();

        let t = Instant::now();
        let put = self.put_segment_object(&path, &raw, compressed, comp).await?;
        let upload_time = t.elapsed();

        let seg = SegmentRef {
            base_offset: req.base_offset,
            end_offset: req.end_offset,
            first_ts_ms: req.first_ts_ms,
            last_ts_ms: req.last_ts_ms,
            records: req.records,
            raw_bytes: raw.len() as u64,
            stored_bytes: put.stored_bytes,
            compression: put.compression,
            key,
        };
        let t = Instant::now();
        let updated = manifest.append_segment(req.epoch, seg.clone()).await?;
        let manifest_time = t.elapsed();
        Ok(UploadReport {
            raw_bytes: seg.raw_bytes,
            stored_bytes: seg.stored_bytes,
            segment: seg,
            uploaded_bytes: put.uploaded_bytes,
            multipart: put.multipart,
            object_existed: put.existed,
            already_listed: !updated.value,
            manifest_conflicts: updated.conflicts,
            compress_time,
            upload_time,
            manifest_time,
            total_time: start.elapsed(),
        })
    }

    /// Writes the object create-if-absent. Small objects: one `PutMode::Create`.
    /// Large ones: HEAD, then a multipart upload (object_store offers no conditional
    /// multipart completion, so two uploaders racing on the same new key both
    /// "win"; segment content for a key is deterministic and only the epoch owner
    /// uploads, so the loser overwrites identical bytes).
    async fn put_segment_object(
        &self,
        path: &Path,
        raw: &Bytes,
        compressed: Bytes,
        comp: Compression,
    ) -> Result<PutOutcome> {
        let len = compressed.len() as u64;
        if compressed.len() > self.options().multipart_threshold {
            match self.store().head(path).await {
                Ok(_) => return self.verify_existing(path, raw, Some(compressed), comp).await,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(TierError::store("head", path, e)),
            }
            let upload =
                self.store().put_multipart(path).await.map_err(|e| TierError::store("multipart start", path, e))?;
            let part = self.options().multipart_part_size.max(1);
            let mut w = WriteMultipart::new_with_chunk_size(upload, part);
            let mut off = 0;
            while off < compressed.len() {
                if let Err(e) = w.wait_for_capacity(self.options().multipart_concurrency.max(1)).await {
                    let _ = w.abort().await;
                    return Err(TierError::store("multipart put", path, e));
                }
                let end = (off + part).min(compressed.len());
                w.put(compressed.slice(off..end));
                off = end;
            }
            w.finish().await.map_err(|e| TierError::store("multipart finish", path, e))?;
            return Ok(PutOutcome {
                compression: comp,
                stored_bytes: len,
                uploaded_bytes: len,
                multipart: true,
                existed: false,
            });
        }
        match self.store().put_opts(path, PutPayload::from(compressed.clone()), PutMode::Create.into()).await {
            Ok(_) => Ok(PutOutcome {
                compression: comp,
                stored_bytes: len,
                uploaded_bytes: len,
                multipart: false,
                existed: false,
            }),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let mut out = self.verify_existing(path, raw, Some(compressed), comp).await?;
                out.uploaded_bytes = len;
                Ok(out)
            }
            Err(e) => Err(TierError::store("put (create)", path, e)),
        }
    }

    /// An object exists where we meant to create one: it is ours if it holds the same
    /// segment bytes, whatever compression it was written with.
    async fn verify_existing(
        &self,
        path: &Path,
        raw: &Bytes,
        compressed: Option<Bytes>,
        comp: Compression,
    ) -> Result<PutOutcome> {
        let existing = self
            .store()
            .get(path)
            .await
            .map_err(|e| TierError::store("get", path, e))?
            .bytes()
            .await
            .map_err(|e| TierError::store("get", path, e))?;
        let stored_bytes = existing.len() as u64;
        let same = |compression| {
            Ok(PutOutcome { compression, stored_bytes, uploaded_bytes: 0, multipart: false, existed: true })
        };
        if compressed.is_some_and(|c| c == existing) {
            return same(comp);
        }
        let raw2 = raw.clone();
        let found = blocking(path, move || {
            if frames::is_framed(&existing) {
                let c = frames::parse_footer(&existing, existing.len() as u64).ok()?.compression;
                return frames::decode(&existing).is_ok_and(|d| d == raw2[..]).then_some(c);
            }
            if let Some(c) = Compression::sniff(&existing)
                && codec::decompress(&existing, c, raw2.len()).is_ok_and(|d| d == raw2[..])
            {
                return Some(c);
            }
            (existing == raw2).then_some(Compression::None)
        })
        .await?;
        match found {
            Some(c) => same(c),
            None => Err(TierError::Conflict {
                path: path.to_string(),
                reason: "an object with different content already exists under this segment key".into(),
            }),
        }
    }

    /// The segment file, decompressed: byte-identical to what was uploaded.
    pub async fn download_segment(&self, seg: &SegmentRef) -> Result<Bytes> {
        let path = self.path(&seg.key);
        let data = self
            .store()
            .get(&path)
            .await
            .map_err(|e| TierError::store("get", &path, e))?
            .bytes()
            .await
            .map_err(|e| TierError::store("get", &path, e))?;
        if data.len() as u64 != seg.stored_bytes {
            return Err(TierError::Corrupt {
                path: path.to_string(),
                reason: format!("object has {} bytes, manifest says {}", data.len(), seg.stored_bytes),
            });
        }
        let (comp, hint) = (seg.compression, seg.raw_bytes as usize);
        let raw = blocking(&path, move || {
            if frames::is_framed(&data) {
                frames::decode(&data)
            } else {
                // The earlier whole-file format.
                codec::decompress(&data, comp, hint).map_err(|e| format!("cannot decompress ({comp}): {e}"))
            }
        })
        .await?
        .map_err(|reason| TierError::Corrupt { path: path.to_string(), reason })?;
        if raw.len() as u64 != seg.raw_bytes {
            return Err(TierError::Corrupt {
                path: path.to_string(),
                reason: format!("decompressed to {} bytes, manifest says {}", raw.len(), seg.raw_bytes),
            });
        }
        Ok(raw.into())
    }

    /// Bytes `range` of the decompressed segment file (clamped to its length). Reads
    /// and decompresses the whole object; cache the result of
    /// [`TierStore::download_segment`] when reading a segment piecewise.
    pub async fn read_range(&self, seg: &SegmentRef, range: Range<u64>) -> Result<Bytes> {
        let all = self.download_segment(seg).await?;
        let end = (range.end as usize).min(all.len());
        let start = (range.start as usize).min(end);
        Ok(all.slice(start..end))
    }

    /// Retention: drops the leading manifest entries whose `last_ts_ms < cutoff_ms`
    /// (as the owner of `epoch`; fenced like uploads), then deletes their objects.
    /// Failed deletes are counted and left for [`TierStore::sweep_orphans`].
    pub async fn delete_before(
        &self,
        stream: &str,
        shard: &str,
        epoch: u64,
        cutoff_ms: u64,
    ) -> Result<RetentionReport> {
        let manifest = self.manifest(stream, shard)?;
        let updated = manifest
            .update(|m| {
                if m.version == 0 {
                    return Ok(Vec::new()); // no manifest: nothing to do, and do not create one
                }
                m.claim_epoch(epoch)?;
                Ok(m.remove_expired(cutoff_ms))
            })
            .await?;
        let mut report =
            RetentionReport { trimmed_before_offset: updated.doc.trimmed_before_offset, ..Default::default() };
        for seg in &updated.value {
            let path = self.path(&seg.key);
            match self.store().delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    report.deleted_objects += 1;
                    report.freed_stored_bytes += seg.stored_bytes;
                }
                Err(e) => {
                    tracing::warn!(%path, "retention: deleting segment object failed, left for the orphan sweep: {e}");
                    report.failed_deletes += 1;
                }
            }
        }
        report.removed = updated.value;
        Ok(report)
    }

    /// Deletes objects under the shard's `segments/` prefix that the manifest does not
    /// list and that are at least `min_age` old. The listing is taken before the
    /// manifest is read, so a segment listed meanwhile is kept; `min_age` protects
    /// uploads in flight (object written, manifest not yet updated): use well over
    /// the longest upload (e.g. an hour) outside tests.
    pub async fn sweep_orphans(&self, stream: &str, shard: &str, min_age: Duration) -> Result<SweepReport> {
        let manifest = self.manifest(stream, shard)?;
        let dir = self.path(&layout::segments_dir(stream, shard));
        let mut objects = Vec::new();
        let mut listing = self.store().list(Some(&dir));
        while let Some(item) = listing.next().await {
            match item {
                Ok(meta) => objects.push(meta),
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(TierError::store("list", &dir, e)),
            }
        }
        let listed: HashSet<String> = match manifest.load().await? {
            Some((m, _)) => m.segments.iter().map(|s| self.path(&s.key).to_string()).collect(),
            None => HashSet::new(),
        };
        let now = now_ms();
        let min_age_ms = min_age.as_millis() as i64;
        let mut report = SweepReport { scanned: objects.len(), ..Default::default() };
        for meta in objects {
            if listed.contains(meta.location.as_ref()) {
                continue;
            }
            if now - meta.last_modified.timestamp_millis() < min_age_ms {
                report.too_young += 1;
                continue;
            }
            match self.store().delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    report.freed_bytes += meta.size;
                    report.deleted.push(meta.location.to_string());
                }
                Err(e) => return Err(TierError::store("delete", &meta.location, e)),
            }
        }
        Ok(report)
    }
}

struct PutOutcome {
    compression: Compression,
    stored_bytes: u64,
    uploaded_bytes: u64,
    multipart: bool,
    existed: bool,
}
