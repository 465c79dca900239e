//! The two tiers of a shard, as the broker sees them: records below a shard's local data are
//! read from its uploaded segments in the object store (ranged GETs through the frame
//! cache), local retention deletes uploaded segments from local disk beyond
//! `--local-retention-bytes`, and the local vs remote segment gauges.

use crate::catalog::{Catalog, Stream};
use crate::metrics::Metrics;
use crate::shard::Shard;
use crate::shard::bucket::CachedManifest;
use crate::tier::{FrameCache, Manifest, RemoteRead, RemoteReadRequest, RemoteReader, TierError, TierStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A cached manifest is reloaded after this long (retention in the bucket removes segments).
const MANIFEST_MAX_AGE: Duration = Duration::from_secs(30);
/// A remote read that takes longer is answered as unavailable: it holds one of the broker's
/// few GetRecords slots, which local readers need too.
const REMOTE_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Tiers {
    reader: RemoteReader,
    /// Manifests cached (in each shard's bucket state) under an older generation are stale.
    generation: AtomicU64,
    local_retention_bytes: Option<u64>,
    metrics: Arc<Metrics>,
}

impl Tiers {
    pub fn new(tier: TierStore, cache_bytes: u64, local_retention_bytes: Option<u64>, metrics: Arc<Metrics>) -> Self {
        let cache = Arc::new(FrameCache::new(cache_bytes, metrics.remote_cache.clone()));
        Tiers { reader: RemoteReader::new(tier, cache), generation: AtomicU64::new(0), local_retention_bytes, metrics }
    }

    pub fn reader(&self) -> &RemoteReader {
        &self.reader
    }

    /// The shard's cached manifest, if one is cached in the current generation.
    fn cached(&self, shard: &Shard) -> Option<CachedManifest> {
        let generation = self.generation.load(Ordering::Acquire);
        shard.bucket.cached_manifest().filter(|c| c.generation == generation)
    }

    /// The shard's manifest: the cached one unless `fresh` (or none is cached), else loaded.
    async fn manifest(&self, stream: &Stream, shard: &Shard, fresh: bool) -> Result<Arc<Manifest>, TierError> {
        if !fresh && let Some(c) = self.cached(shard) {
            return Ok(c.manifest);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = self.reader.tier().manifest(&stream.name, &shard.id)?.load().await.inspect_err(|_| {
            self.metrics.object_store_errors.inc();
        })?;
        let manifest = Arc::new(loaded.map(|(m, _)| m).unwrap_or_else(|| Manifest::new(&shard.id, 0)));
        // Versions only grow: an older (or missing) manifest than one seen before is not the
        // bucket's state but a store answering wrongly (a lost or replaced bucket, a stale
        // replica). Reads must not take its word for which records exist.
        if let Some(seen) = self.cached(shard).map(|c| c.manifest)
            && manifest.version < seen.version
        {
            return Err(unreadable(
                &stream.name,
                &shard.id,
                format!("manifest version {} is older than version {} seen before", manifest.version, seen.version),
            ));
        }
        shard.bucket.cache_manifest(CachedManifest { manifest: manifest.clone(), loaded: Instant::now(), generation });
        Ok(manifest)
    }

    /// Records from `from` up to the shard's local data, from the object store. A read that
    /// fails on the cached manifest is tried once more on a fresh one (retention may have
    /// removed a segment meanwhile).
    pub async fn read(
        &self,
        stream: &Stream,
        shard: &Shard,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        min_timestamp_ms: i64,
    ) -> Result<RemoteRead, TierError> {
        let read = self.read_within(stream, shard, from, max_records, max_bytes, min_timestamp_ms);
        self.bounded(stream, shard, read).await
    }

    /// `work` within `REMOTE_READ_TIMEOUT`: a remote read holds one of the broker's few read slots.
    async fn bounded<T>(
        &self,
        stream: &Stream,
        shard: &Shard,
        work: impl std::future::Future<Output = Result<T, TierError>>,
    ) -> Result<T, TierError> {
        match tokio::time::timeout(REMOTE_READ_TIMEOUT, work).await {
            Ok(done) => done,
            Err(_) => {
                self.metrics.object_store_errors.inc();
                Err(unreadable(&stream.name, &shard.id, format!("no answer within {REMOTE_READ_TIMEOUT:?}")))
            }
        }
    }

    async fn read_within(
        &self,
        stream: &Stream,
        shard: &Shard,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        min_timestamp_ms: i64,
    ) -> Result<RemoteRead, TierError> {
        let until = shard.log.local_start_offset();
        let req = RemoteReadRequest { from, until, max_records, max_bytes, min_timestamp_ms };
        let mut manifest = self.manifest(stream, shard, false).await?;
        if from < until && from >= manifest.end_offset() {
            // Cached before the segments holding `from` were listed (by this broker's
            // predecessor as the shard's owner, say): the bucket knows more now.
            manifest = self.manifest(stream, shard, true).await?;
        }
        if manifest.version == 0 && from < until {
            // Evicted segments were listed before they left local disk.
            return Err(unreadable(&stream.name, &shard.id, "the shard has no manifest".into()));
        }
        let read = match self.reader.read(&manifest, req).await {
            Ok(read) => Ok(read),
            Err(_) => {
                let manifest = self.manifest(stream, shard, true).await?;
                self.reader.read(&manifest, req).await
            }
        };
        let read = read.inspect_err(|_| self.metrics.object_store_errors.inc())?;
        self.metrics.remote_records.inc_by(read.records.len() as u64);
        Ok(read)
    }

    /// The first offset from `from` below the shard's local data whose record is at least
    /// `ts_ms` old, if the object store holds one.
    pub async fn offset_at_timestamp(
        &self,
        stream: &Stream,
        shard: &Shard,
        ts_ms: i64,
        from: u64,
    ) -> Result<Option<u64>, TierError> {
        let find = self.offset_at_timestamp_within(stream, shard, ts_ms, from);
        self.bounded(stream, shard, find).await
    }

    async fn offset_at_timestamp_within(
        &self,
        stream: &Stream,
        shard: &Shard,
        ts_ms: i64,
        from: u64,
    ) -> Result<Option<u64>, TierError> {
        let until = shard.log.local_start_offset();
        let manifest = self.manifest(stream, shard, false).await?;
        if manifest.version == 0 && from < until {
            return Err(unreadable(&stream.name, &shard.id, "the shard has no manifest".into()));
        }
        let found = match self.reader.offset_at_timestamp(&manifest, ts_ms, from, until).await {
            Ok(found) => Ok(found),
            Err(_) => {
                let manifest = self.manifest(stream, shard, true).await?;
                self.reader.offset_at_timestamp(&manifest, ts_ms, from, until).await
            }
        };
        found.inspect_err(|_| self.metrics.object_store_errors.inc())
    }

    /// Local retention over every shard, then the gauges. A shard over its local budget has
    /// its manifest loaded afresh, and only segments it lists (same offsets) are deleted.
    pub async fn local_retention_pass(&self, catalog: &Catalog) {
        let (mut local_count, mut local_bytes) = (0usize, 0u64);
        let (mut remote_count, mut remote_bytes) = (0usize, 0u64);
        for stream in catalog.all() {
            for shard in &stream.shards() {
                let sealed = shard.log.sealed_segments();
                let (_, bytes) = shard.log.local_footprint();
                let over = self.local_retention_bytes.is_some_and(|keep| bytes > keep);
                let stale = match self.cached(shard) {
                    None => true,
                    Some(k) => {
                        k.loaded.elapsed() > MANIFEST_MAX_AGE
                            || sealed.last().is_some_and(|s| s.end_offset > k.manifest.end_offset())
                    }
                };
                if (over || stale)
                    && let Err(e) = self.manifest(&stream, shard, true).await
                {
                    tracing::warn!(stream = %stream.name, shard = %shard.id, "loading the manifest: {e}");
                }
                // A segment the manifest lists (same offsets) is in the bucket: it may go.
                let cached = self.cached(shard).map(|c| c.manifest);
                if let Some(manifest) = &cached {
                    remote_count += manifest.segments.len();
                    remote_bytes += manifest.segments.iter().map(|s| s.stored_bytes).sum::<u64>();
                }
                if let (true, Some(keep), Some(manifest)) = (over, self.local_retention_bytes, cached) {
                    let listed = move |base: u64, end: u64| {
                        manifest.segments.iter().any(|s| s.base_offset == base && s.end_offset == end)
                    };
                    let log = shard.log.clone();
                    match tokio::task::spawn_blocking(move || log.evict_oldest(keep, listed)).await {
                        Ok(Ok(evicted)) => self.metrics.segments_evicted.inc_by(evicted.len() as u64),
                        Ok(Err(e)) => tracing::warn!(stream = %stream.name, shard = %shard.id, "local retention: {e}"),
                        Err(e) => tracing::warn!(stream = %stream.name, shard = %shard.id, "local retention task: {e}"),
                    }
                }
                let (count, bytes) = shard.log.local_footprint();
                local_count += count;
                local_bytes += bytes;
            }
        }
        self.metrics.local_segments.set(local_count as i64);
        self.metrics.local_segment_bytes.set(local_bytes as i64);
        self.metrics.remote_segments.set(remote_count as i64);
        self.metrics.remote_segment_bytes.set(remote_bytes as i64);
    }

    /// Forget cached manifests (after retention changed the bucket, or a shard changed hands).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The object store does not show what it must hold: retryable, like an unreachable store.
fn unreadable(stream: &str, shard: &str, reason: String) -> TierError {
    TierError::Store {
        op: "read",
        path: crate::tier::layout::manifest_key(stream, shard),
        source: object_store::Error::Generic { store: "manifest", source: reason.into() },
    }
}
