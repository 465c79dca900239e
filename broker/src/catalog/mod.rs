//! The streams this broker serves: their persisted descriptions and their open shard logs.

pub mod meta;
pub mod reshard;

use crate::archive::Archive;
use crate::log::{LogConfig, ShardLog};
use crate::metrics::Metrics;
use crate::shard::Shard;
use crate::shard::bucket::{ShardBucket, StreamCompression};
use crate::throttle::{ShardLimits, ShardThrottle};
use meta::{ShardMeta, StreamMeta, StreamStatus};
use reshard::Change;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use streamfabric_api::ApiError;
use streamfabric_api::names::{COMPRESSION_TAG, PAUSED_TAG, shard_id};

pub struct Stream {
    pub name: String,
    pub incarnation: u64,
    dir: PathBuf,
    archive: Archive,
    meta: Mutex<StreamMeta>,
    /// Chosen by its tags; its shards upload with it.
    compression: StreamCompression,
    topology: RwLock<Arc<Topology>>,
    /// Every append holds it shared and a reshard exclusively, so no append is in flight
    /// while shards close and the routes change.
    pub write_gate: tokio::sync::RwLock<()>,
    /// Writes are refused: the stream carries the tag `PAUSED_TAG` = `true`.
    paused: AtomicBool,
    /// StartStreamEncryption recorded a KMS key (puts answer EncryptionType KMS).
    encrypted: AtomicBool,
    /// UpdateMaxRecordSize's limit in bytes, 0 when not set; read on every put.
    max_record_bytes: AtomicUsize,
}

fn max_record_bytes(meta: &StreamMeta) -> usize {
    meta.max_record_size_kib.map_or(0, |kib| kib as usize * 1024)
}

fn paused(meta: &StreamMeta) -> bool {
    meta.tags.get(PAUSED_TAG).is_some_and(|v| v == "true")
}

/// The stream's own segment compression, if its tags choose one.
fn compression(meta: &StreamMeta) -> Option<crate::tier::Compression> {
    meta.tags.get(COMPRESSION_TAG).and_then(|v| v.parse().ok())
}

/// The shards of a stream at one moment.
pub struct Topology {
    /// Every shard, by index.
    pub all: BTreeMap<u64, Arc<Shard>>,
    /// Open shards sorted by the start of their hash range, for routing.
    open: Vec<Arc<Shard>>,
}

impl Topology {
    fn new(meta: &StreamMeta, all: BTreeMap<u64, Arc<Shard>>) -> Topology {
        let mut open: Vec<Arc<Shard>> =
            meta.shards.iter().filter(|s| s.closed.is_none()).map(|s| all[&s.index].clone()).collect();
        open.sort_by_key(|s| s.range.start);
        Topology { all, open }
    }

    /// The open shard whose hash range holds `key` (open ranges tile the key space).
    pub fn route(&self, key: u128) -> &Arc<Shard> {
        let at = self.open.partition_point(|s| s.range.start <= key);
        &self.open[at.saturating_sub(1)]
    }
}

impl Stream {
    pub fn meta(&self) -> StreamMeta {
        self.meta.lock().unwrap().clone()
    }

    pub fn with_meta<T>(&self, f: impl FnOnce(&StreamMeta) -> T) -> T {
        f(&self.meta.lock().unwrap())
    }

    pub fn status(&self) -> StreamStatus {
        self.meta.lock().unwrap().status
    }

    /// Change the description and persist it; on a failed write nothing changes.
    pub fn update_meta<T>(&self, change: impl FnOnce(&mut StreamMeta) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut meta = self.meta.lock().unwrap();
        let mut next = meta.clone();
        let out = change(&mut next)?;
        if next != *meta {
            next.store(&meta_path(&self.dir)).map_err(|e| {
                tracing::error!(stream = %self.name, "persisting stream description: {e}");
                ApiError::internal("The stream description could not be persisted")
            })?;
            self.archive.mirror(&next);
            *self.compression.lock().unwrap() = compression(&next);
            self.paused.store(paused(&next), Ordering::Relaxed);
            self.encrypted.store(next.kms_key_id.is_some(), Ordering::Relaxed);
            self.max_record_bytes.store(max_record_bytes(&next), Ordering::Relaxed);
            *meta = next;
        }
        Ok(out)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// The EncryptionType puts answer with.
    pub fn encryption_type(&self) -> &'static str {
        if self.encrypted.load(Ordering::Relaxed) { "KMS" } else { "NONE" }
    }

    /// The largest record data this stream takes: its UpdateMaxRecordSize limit, or `default`.
    pub fn max_record_bytes(&self, default: usize) -> usize {
        match self.max_record_bytes.load(Ordering::Relaxed) {
            0 => default,
            set => set,
        }
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().unwrap().clone()
    }

    pub fn shard(&self, index: u64) -> Option<Arc<Shard>> {
        self.topology().all.get(&index).cloned()
    }

    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.topology().all.values().cloned().collect()
    }

    /// The shard of this stream named `id`, if it has one.
    pub fn shard_named(&self, id: &str) -> Option<Arc<Shard>> {
        streamfabric_api::names::parse_shard_id(id).and_then(|index| self.shard(index))
    }

    fn key(&self) -> StreamKey {
        StreamKey { name: self.name.clone(), incarnation: self.incarnation, compression: self.compression.clone() }
    }
}

/// What a stream's shards take from it when they open.
struct StreamKey {
    name: String,
    incarnation: u64,
    compression: StreamCompression,
}

fn meta_path(stream_dir: &Path) -> PathBuf {
    stream_dir.join("meta.json")
}

fn shard_dir(stream_dir: &Path, index: u64) -> PathBuf {
    stream_dir.join("shards").join(shard_id(index))
}

pub struct Catalog {
    dir: PathBuf,
    log_config: LogConfig,
    archive: Archive,
    limits: ShardLimits,
    metrics: Arc<Metrics>,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Shards serve as they open (a broker alone), or once taken (a cluster's handoff).
    serve_on_open: bool,
    /// One adoption at a time: two would open the same new stream's logs twice.
    adopting: Mutex<()>,
}

impl Catalog {
    /// Load every stream under `dir`, recovering each shard log.
    pub fn open(
        dir: PathBuf,
        log_config: LogConfig,
        archive: Archive,
        limits: ShardLimits,
        metrics: Arc<Metrics>,
        serve_on_open: bool,
    ) -> io::Result<Catalog> {
        std::fs::create_dir_all(&dir)?;
        let catalog = Catalog {
            dir,
            log_config,
            archive,
            limits,
            metrics,
            streams: RwLock::new(BTreeMap::new()),
            serve_on_open,
            adopting: Mutex::new(()),
        };
        let mut streams = BTreeMap::new();
        for entry in std::fs::read_dir(&catalog.dir)? {
            let stream_dir = entry?.path();
            let path = meta_path(&stream_dir);
            if !path.exists() {
                // A creation that crashed before its description was durable: nothing was acknowledged.
                tracing::warn!("removing incomplete stream directory {}", stream_dir.display());
                std::fs::remove_dir_all(&stream_dir)?;
                continue;
            }
            let in_dir = |e: io::Error| io::Error::new(e.kind(), format!("opening {}: {e}", stream_dir.display()));
            let meta = StreamMeta::load(&path).map_err(in_dir)?;
            let stream = catalog.open_stream(stream_dir.clone(), meta).map_err(in_dir)?;
            streams.insert(stream.name.clone(), Arc::new(stream));
        }
        *catalog.streams.write().unwrap() = streams;
        catalog.metrics.streams.set(catalog.streams.read().unwrap().len() as i64);
        Ok(catalog)
    }

    /// Open a shard's log; `bucket`: its state in the object store, kept from the log it
    /// replaces (else new).
    fn open_shard(
        &self,
        stream_dir: &Path,
        stream: &StreamKey,
        s: &ShardMeta,
        bucket: Option<Arc<ShardBucket>>,
    ) -> io::Result<Arc<Shard>> {
        let id = shard_id(s.index);
        let bucket = bucket.unwrap_or_else(|| {
            let compression = stream.compression.clone();
            let fenced = self.metrics.fenced_shards.clone();
            Arc::new(ShardBucket::new(&stream.name, stream.incarnation, &id, compression, fenced))
        });
        let mut config = self.log_config.clone();
        config.seal_observer = Some(self.archive.seal_observer(bucket.clone()));
        let log = ShardLog::open(&shard_dir(stream_dir, s.index), config)?;
        if s.closed.is_some() {
            log.close()?;
        }
        let metrics = self.metrics.shard(&stream.name, &id);
        let shard = Shard::new(s.index, id, s.range, log, ShardThrottle::new(self.limits), metrics, bucket);
        shard.set_serving(self.serve_on_open);
        Ok(Arc::new(shard))
    }

    fn open_stream(&self, dir: PathBuf, meta: StreamMeta) -> io::Result<Stream> {
        let key = StreamKey {
            name: meta.name.clone(),
            incarnation: meta.incarnation,
            compression: Arc::new(Mutex::new(compression(&meta))),
        };
        let mut shards = BTreeMap::new();
        for s in &meta.shards {
            shards.insert(s.index, self.open_shard(&dir, &key, s, None)?);
        }
        // Files of shards the description no longer lists (removed past retention, or opened
        // by a reshard that failed before it was persisted): nothing refers to them.
        if let Ok(entries) = std::fs::read_dir(dir.join("shards")) {
            for entry in entries.flatten() {
                let listed = entry.file_name().to_str().and_then(streamfabric_api::names::parse_shard_id);
                if listed.is_none_or(|index| !shards.contains_key(&index)) {
                    tracing::warn!("removing unlisted shard directory {}", entry.path().display());
                    std::fs::remove_dir_all(entry.path())?;
                }
            }
        }
        Ok(Stream {
            name: key.name,
            incarnation: key.incarnation,
            compression: key.compression,
            dir,
            archive: self.archive.clone(),
            topology: RwLock::new(Arc::new(Topology::new(&meta, shards))),
            paused: AtomicBool::new(paused(&meta)),
            encrypted: AtomicBool::new(meta.kms_key_id.is_some()),
            max_record_bytes: AtomicUsize::new(max_record_bytes(&meta)),
            meta: Mutex::new(meta),
            write_gate: tokio::sync::RwLock::new(()),
        })
    }

    /// Apply the reshard the stream holds as pending (it is UPDATING): close the shards it
    /// replaces at their current ends, open the new ones, persist, switch the routes, and
    /// make the stream ACTIVE. The caller holds the stream's write gate, so no append is in
    /// flight. On failure nothing changes but the status, which returns to ACTIVE.
    pub fn apply_pending_reshard(&self, stream: &Stream, now_ms: i64) -> Result<(), ApiError> {
        let meta = stream.meta();
        let changes = meta.pending_reshard.clone();
        let applied = self.reshard(stream, &meta, &changes, now_ms);
        if applied.is_err() {
            let _ = stream.update_meta(|m| {
                m.status = StreamStatus::Active;
                m.pending_reshard.clear();
                Ok(())
            });
        }
        applied
    }

    fn reshard(&self, stream: &Stream, meta: &StreamMeta, changes: &[Change], now_ms: i64) -> Result<(), ApiError> {
        let topology = stream.topology();
        let failed = |what: &str, e: io::Error| {
            tracing::error!(stream = %stream.name, "reshard: {what}: {e}");
            ApiError::internal(format!("The reshard could not be applied: {what} failed."))
        };
        let mut ends = BTreeMap::new();
        let reopen = |ends: &BTreeMap<u64, u64>| ends.keys().for_each(|i| topology.all[i].log.reopen());
        for index in reshard::closes_open(meta, changes) {
            match topology.all[&index].log.close() {
                Ok(end) => ends.insert(index, end),
                Err(e) => {
                    reopen(&ends);
                    return Err(failed("closing a shard", e));
                }
            };
        }
        let mut next = meta.clone();
        let created = reshard::apply(&mut next, changes, |i| ends[&i], now_ms).inspect_err(|_| reopen(&ends))?;
        next.status = StreamStatus::Active;
        next.pending_reshard.clear();
        let mut all = topology.all.clone();
        for &index in &created {
            let s = next.shards.iter().find(|s| s.index == index).expect("created shards are described");
            match self.open_shard(&stream.dir, &stream.key(), s, None) {
                Ok(shard) => all.insert(index, shard),
                Err(e) => {
                    reopen(&ends);
                    return Err(failed("opening a new shard", e));
                }
            };
        }
        stream
            .update_meta(|m| {
                // Tags or retention may have changed meanwhile; the shards could not.
                m.shards = next.shards.clone();
                m.status = StreamStatus::Active;
                m.pending_reshard.clear();
                Ok(())
            })
            .inspect_err(|_| reopen(&ends))?;
        *stream.topology.write().unwrap() = Arc::new(Topology::new(&next, all));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().unwrap().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Stream>> {
        self.streams.read().unwrap().values().cloned().collect()
    }

    pub fn open_shard_count(&self) -> usize {
        self.all().iter().map(|s| s.meta.lock().unwrap().open_shard_count()).sum()
    }

    /// Persist and open a new stream; refuses a name in use and a total beyond `shard_limit`.
    pub fn create(&self, meta: StreamMeta, shard_limit: i64) -> Result<Arc<Stream>, ApiError> {
        let mut streams = self.streams.write().unwrap();
        if streams.contains_key(&meta.name) {
            return Err(ApiError::in_use(format!("Stream {} already exists.", meta.name)));
        }
        let open: usize = streams.values().map(|s| s.meta.lock().unwrap().open_shard_count()).sum();
        if open + meta.open_shard_count() > shard_limit as usize {
            return Err(ApiError::limit(format!(
                "This request would exceed the shard limit for the account: {open} shards are open, \
                 {} more were requested and the limit is {shard_limit}.",
                meta.open_shard_count()
            )));
        }
        let dir = self.dir.join(&meta.name);
        let created = meta.store(&meta_path(&dir)).and_then(|_| self.open_stream(dir.clone(), meta));
        let stream = match created {
            Ok(stream) => Arc::new(stream),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                tracing::error!("creating stream directory {}: {e}", dir.display());
                return Err(ApiError::internal("The stream could not be created on disk"));
            }
        };
        self.archive.mirror(&stream.meta());
        streams.insert(stream.name.clone(), stream.clone());
        self.metrics.streams.set(streams.len() as i64);
        Ok(stream)
    }

    /// Remove the shards closed longer ago than the retention period: every record they held
    /// has expired, and AWS stops listing such shards too. Not while a reshard is under way.
    pub fn drop_expired_closed_shards(&self, stream: &Stream, now_ms: i64) -> Result<Vec<u64>, ApiError> {
        let expired = stream.update_meta(|m| {
            if m.status != StreamStatus::Active {
                return Ok(Vec::new());
            }
            let cutoff = now_ms - m.retention_hours * 3_600_000;
            let expired: Vec<u64> =
                m.shards.iter().filter(|s| s.closed.is_some_and(|c| c.at_ms <= cutoff)).map(|s| s.index).collect();
            m.shards.retain(|s| !expired.contains(&s.index));
            Ok(expired)
        })?;
        if expired.is_empty() {
            return Ok(expired);
        }
        let topology = stream.topology();
        let mut all = topology.all.clone();
        for index in &expired {
            if let Some(shard) = all.remove(index) {
                self.metrics.forget_shard(&stream.name, &shard.id);
                if let Err(e) = shard.log.clone().destroy() {
                    tracing::warn!(stream = %stream.name, shard = %shard.id, "removing an expired shard's files: {e}");
                }
            }
        }
        *stream.topology.write().unwrap() = Arc::new(stream.with_meta(|m| Topology::new(m, all)));
        Ok(expired)
    }

    /// Where a shard's log lives.
    pub fn shard_dir(&self, stream: &str, index: u64) -> PathBuf {
        shard_dir(&self.dir.join(stream), index)
    }

    /// Take the cluster's description of a stream (written by the coordinator) as this
    /// broker's: a new stream is opened, a changed one updated (new shards opened, closed
    /// ones closed, removed ones dropped), one of an earlier incarnation replaced. Nothing
    /// is mirrored back. Shards open not serving until the handoff takes them.
    pub fn adopt(&self, meta: StreamMeta) -> io::Result<()> {
        let _one = self.adopting.lock().unwrap();
        let current = self.get(&meta.name);
        if let Some(stream) = &current {
            if stream.incarnation == meta.incarnation {
                return self.adopt_change(stream, meta);
            }
            self.remove(&meta.name)?;
        }
        let dir = self.dir.join(&meta.name);
        meta.store(&meta_path(&dir))?;
        let stream = Arc::new(self.open_stream(dir, meta)?);
        let mut streams = self.streams.write().unwrap();
        streams.insert(stream.name.clone(), stream);
        self.metrics.streams.set(streams.len() as i64);
        Ok(())
    }

    fn adopt_change(&self, stream: &Stream, meta: StreamMeta) -> io::Result<()> {
        if stream.meta() == meta {
            return Ok(());
        }
        let topology = stream.topology();
        let mut all = BTreeMap::new();
        for s in &meta.shards {
            let shard = match topology.all.get(&s.index) {
                Some(shard) => shard.clone(),
                None => self.open_shard(&stream.dir, &stream.key(), s, None)?,
            };
            if s.closed.is_some() {
                shard.log.close()?;
            }
            all.insert(s.index, shard);
        }
        for (index, shard) in &topology.all {
            if !all.contains_key(index) {
                self.metrics.forget_shard(&stream.name, &shard.id);
                let _ = shard.log.clone().destroy();
            }
        }
        let mut current = stream.meta.lock().unwrap();
        meta.store(&meta_path(&stream.dir))?;
        *stream.compression.lock().unwrap() = compression(&meta);
        stream.paused.store(paused(&meta), Ordering::Relaxed);
        stream.encrypted.store(meta.kms_key_id.is_some(), Ordering::Relaxed);
        stream.max_record_bytes.store(max_record_bytes(&meta), Ordering::Relaxed);
        *stream.topology.write().unwrap() = Arc::new(Topology::new(&meta, all));
        *current = meta;
        Ok(())
    }

    /// Open a shard's log afresh from its directory (rebuilt from the bucket by a handoff)
    /// in place of the one the stream holds, whose files must be gone; not serving yet. Its
    /// state in the object store carries over.
    pub fn reopen_shard(&self, stream: &Stream, index: u64) -> io::Result<Arc<Shard>> {
        let s = stream
            .with_meta(|m| m.shards.iter().find(|s| s.index == index).cloned())
            .ok_or_else(|| io::Error::other(format!("shard {index} of {} is not described", stream.name)))?;
        let bucket = stream.shard(index).map(|old| old.bucket.clone());
        let shard = self.open_shard(&stream.dir, &stream.key(), &s, bucket)?;
        shard.set_serving(false);
        let meta = stream.meta();
        let mut topology = stream.topology.write().unwrap();
        let mut all = topology.all.clone();
        all.insert(index, shard.clone());
        *topology = Arc::new(Topology::new(&meta, all));
        Ok(shard)
    }

    /// Forget a stream and delete its files.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let Some(stream) = self.streams.write().unwrap().remove(name) else {
            return Ok(());
        };
        self.metrics.streams.set(self.streams.read().unwrap().len() as i64);
        for shard in stream.shards() {
            self.metrics.forget_shard(&stream.name, &shard.id);
        }
        std::fs::remove_dir_all(&stream.dir)
    }
}
