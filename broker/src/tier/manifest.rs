//! The per-shard manifest: `<prefix>/streams/<stream>/shards/<shard>/manifest.json`.
//!
//! ```json
//! {"version": 7, "stream_incarnation": 1, "shard": "shardId-000000000000", "epoch": 3,
//!  "segments": [{"base_offset": 0, "end_offset": 1200, "first_ts_ms": 1700000000000,
//!                "last_ts_ms": 1700000060000, "records": 1200, "raw_bytes": 1048576,
//!                "stored_bytes": 301234, "compression": "zstd",
//!                "key": "streams/s/shards/shardId-000000000000/segments/00000000000000000000-3.seg"}],
//!  "trimmed_before_offset": 0}
//! ```
//!
//! `version` is a generation counter bumped by every write (1 after creation); the
//! object's ETag is what conditional writes compare. `epoch` is the fencing token of
//! the shard's owner: a write carrying a lower epoch is refused, a higher one is
//! recorded; `owner` names the broker that took it. `key` is relative to the store prefix. Segments are kept sorted by
//! `base_offset` and never overlap. The pure logic (`claim_epoch`, `insert_segment`,
//! `remove_expired`, `find`) has no I/O.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::codec::Compression;
use super::versioned::{RetryPolicy, Updated, VersionedDoc, VersionedObject};
use super::{Result, TierError, UpdateVersion, join, layout};

/// One uploaded segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset after the last record (exclusive).
    pub end_offset: u64,
    pub first_ts_ms: u64,
    pub last_ts_ms: u64,
    pub records: u64,
    /// Size of the segment file (uncompressed).
    pub raw_bytes: u64,
    /// Size of the object.
    pub stored_bytes: u64,
    pub compression: Compression,
    /// Object key relative to the store prefix.
    pub key: String,
}

impl SegmentRef {
    pub fn contains_offset(&self, offset: u64) -> bool {
        self.base_offset <= offset && offset < self.end_offset
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    #[serde(default)]
    pub stream_incarnation: u64,
    pub shard: String,
    #[serde(default)]
    pub epoch: u64,
    /// The broker that took `epoch` (see `ManifestStore::take_ownership`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub segments: Vec<SegmentRef>,
    /// Offsets below this were removed by retention.
    #[serde(default)]
    pub trimmed_before_offset: u64,
    /// Set when the owner of `epoch` handed the shard on: it appends no more, and every
    /// record it held is in `segments`, which end here. The next owner continues at this
    /// offset (no gap); without it, the next owner takes over from a broker that may have
    /// records nobody else has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<u64>,
}

impl VersionedDoc for Manifest {
    fn generation(&self) -> u64 {
        self.version
    }
    fn set_generation(&mut self, generation: u64) {
        self.version = generation;
    }
}

impl Manifest {
    /// An empty manifest (version 0: not yet stored).
    pub fn new(shard: &str, stream_incarnation: u64) -> Self {
        Manifest {
            version: 0,
            stream_incarnation,
            shard: shard.to_string(),
            epoch: 0,
            owner: None,
            segments: Vec::new(),
            trimmed_before_offset: 0,
            released_at: None,
        }
    }

    /// Fencing: refuses `epoch` below the recorded one, records a higher one.
    pub fn claim_epoch(&mut self, epoch: u64) -> Result<()> {
        if epoch < self.epoch {
            return Err(TierError::StaleEpoch {
                what: format!("shard {} manifest", self.shard),
                current: self.epoch,
                attempted: epoch,
            });
        }
        self.epoch = epoch;
        Ok(())
    }

    /// Ownership: `owner` takes the next epoch, provided the recorded one is still `seen`
    /// (what the claimant read). Of claimants racing from the same `seen`, one succeeds;
    /// the others are refused with the winner's name.
    pub fn take_ownership(&mut self, owner: &str, seen: u64) -> Result<u64> {
        // Already this owner's: a retried claim whose first attempt landed unanswered.
        if self.epoch > seen && self.owner.as_deref() == Some(owner) {
            return Ok(self.epoch);
        }
        if self.epoch != seen {
            return Err(TierError::Conflict {
                path: format!("shard {} manifest", self.shard),
                reason: format!(
                    "ownership taken by {} at epoch {} (the claim was made from epoch {seen})",
                    self.owner.as_deref().unwrap_or("an unnamed broker"),
                    self.epoch
                ),
            });
        }
        self.epoch = seen + 1;
        self.owner = Some(owner.to_string());
        self.released_at = None;
        Ok(self.epoch)
    }

    /// The owner of `epoch` hands the shard on, every record it holds below `end` being
    /// listed (offsets past the listed segments are a gap: nothing was written there).
    pub fn release(&mut self, epoch: u64, end: u64) -> Result<()> {
        if epoch != self.epoch {
            return Err(TierError::StaleEpoch {
                what: format!("shard {} manifest", self.shard),
                current: self.epoch,
                attempted: epoch,
            });
        }
        if end < self.end_offset() {
            return Err(TierError::Conflict {
                path: format!("shard {} manifest", self.shard),
                reason: format!("released at {end} below the end of its segments ({})", self.end_offset()),
            });
        }
        self.released_at = Some(end);
        Ok(())
    }

    /// Inserts `seg` in offset order. Returns false when an identical entry is already
    /// listed (idempotent retry). Refuses an entry that overlaps another, that
    /// differs from the entry with the same base offset, or that lies below the
    /// retention trim point.
    pub fn insert_segment(&mut self, seg: SegmentRef) -> Result<bool> {
        let conflict = |reason: String| TierError::Conflict { path: seg.key.clone(), reason };
        if seg.end_offset <= seg.base_offset {
            return Err(conflict(format!("empty offset range {}..{}", seg.base_offset, seg.end_offset)));
        }
        if let Some(existing) = self.segments.iter().find(|s| s.base_offset == seg.base_offset) {
            if *existing == seg {
                return Ok(false);
            }
            return Err(conflict(format!(
                "manifest already lists a different segment at base offset {}: {:?}",
                seg.base_offset, existing
            )));
        }
        if seg.base_offset < self.trimmed_before_offset {
            return Err(conflict(format!(
                "segment {}..{} lies below the retention trim point {}",
                seg.base_offset, seg.end_offset, self.trimmed_before_offset
            )));
        }
        let idx = self.segments.partition_point(|s| s.base_offset < seg.base_offset);
        if let Some(prev) = idx.checked_sub(1).map(|i| &self.segments[i])
            && prev.end_offset > seg.base_offset
        {
            return Err(conflict(format!(
                "segment {}..{} overlaps {}..{}",
                seg.base_offset, seg.end_offset, prev.base_offset, prev.end_offset
            )));
        }
        if let Some(next) = self.segments.get(idx)
            && seg.end_offset > next.base_offset
        {
            return Err(conflict(format!(
                "segment {}..{} overlaps {}..{}",
                seg.base_offset, seg.end_offset, next.base_offset, next.end_offset
            )));
        }
        self.segments.insert(idx, seg);
        Ok(true)
    }

    /// Retention: removes the leading segments whose `last_ts_ms` is below
    /// `cutoff_ms` (stopping at the first one that is not), advances
    /// `trimmed_before_offset`, and returns what it removed.
    pub fn remove_expired(&mut self, cutoff_ms: u64) -> Vec<SegmentRef> {
        let n = self.segments.iter().take_while(|s| s.last_ts_ms < cutoff_ms).count();
        let removed: Vec<SegmentRef> = self.segments.drain(..n).collect();
        if let Some(last) = removed.last() {
            self.trimmed_before_offset = self.trimmed_before_offset.max(last.end_offset);
        }
        removed
    }

    /// The segment holding `offset`.
    pub fn find(&self, offset: u64) -> Option<&SegmentRef> {
        let idx = self.segments.partition_point(|s| s.end_offset <= offset);
        self.segments.get(idx).filter(|s| s.contains_offset(offset))
    }

    /// First segment whose records may be at or after `ts_ms` (AT_TIMESTAMP).
    pub fn find_by_time(&self, ts_ms: u64) -> Option<&SegmentRef> {
        self.segments.iter().find(|s| s.last_ts_ms >= ts_ms)
    }

    /// Offset after the last uploaded segment (the trim point when there is none).
    pub fn end_offset(&self) -> u64 {
        self.segments.last().map_or(self.trimmed_before_offset, |s| s.end_offset)
    }
}

/// Reads and conditionally updates one shard's manifest.
#[derive(Debug, Clone)]
pub struct ManifestStore {
    obj: VersionedObject,
    stream: String,
    shard: String,
    stream_incarnation: Option<u64>,
}

impl ManifestStore {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        stream: &str,
        shard: &str,
        retry: RetryPolicy,
    ) -> Result<Self> {
        layout::check_name("stream", stream)?;
        layout::check_name("shard", shard)?;
        let path = join(prefix, &layout::manifest_key(stream, shard));
        Ok(ManifestStore {
            obj: VersionedObject::new(store, path, retry),
            stream: stream.to_string(),
            shard: shard.to_string(),
            stream_incarnation: None,
        })
    }

    /// Pins the stream incarnation: a new manifest is created with it, and updates of
    /// a manifest that carries another one are refused (`Conflict`): a re-created
    /// stream of the same name is not written by a broker that knew the old one.
    pub fn with_stream_incarnation(mut self, incarnation: u64) -> Self {
        self.stream_incarnation = Some(incarnation);
        self
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn shard(&self) -> &str {
        &self.shard
    }

    pub fn path(&self) -> &Path {
        self.obj.path()
    }

    /// Conditional writes this handle has lost so far.
    pub fn conflicts(&self) -> u64 {
        self.obj.conflicts()
    }

    pub async fn load(&self) -> Result<Option<(Manifest, UpdateVersion)>> {
        self.obj.load().await
    }

    /// Read-modify-write under optimistic concurrency (see [`super::versioned`]).
    /// When the manifest does not exist, `f` sees an empty one (`version` 0) and the
    /// result is created with create-if-absent. An error from `f` is returned as is,
    /// without retry; if `f` changes nothing, nothing is written.
    pub async fn update<R>(&self, mut f: impl FnMut(&mut Manifest) -> Result<R>) -> Result<Updated<Manifest, R>> {
        let shard = self.shard.clone();
        let pinned = self.stream_incarnation;
        let path = self.obj.path().to_string();
        self.obj
            .update(
                || Manifest::new(&shard, pinned.unwrap_or(0)),
                |m: &mut Manifest| {
                    if let Some(inc) = pinned
                        && m.stream_incarnation != inc
                    {
                        return Err(TierError::Conflict {
                            path: path.clone(),
                            reason: format!(
                                "manifest belongs to stream incarnation {}, writer to {inc}",
                                m.stream_incarnation
                            ),
                        });
                    }
                    f(m)
                },
            )
            .await
    }

    /// Records `epoch` as the owner's fencing token (refused if lower than stored).
    pub async fn claim_epoch(&self, epoch: u64) -> Result<Updated<Manifest, ()>> {
        self.update(|m| m.claim_epoch(epoch)).await
    }

    /// Take the shard for `owner` from epoch `seen` (see `Manifest::take_ownership`); the
    /// new epoch is then the fencing token of every write of this owner.
    pub async fn take_ownership(&self, owner: &str, seen: u64) -> Result<u64> {
        Ok(self.update(|m| m.take_ownership(owner, seen)).await?.value)
    }

    /// Hand the shard on as the owner of `epoch` (see `Manifest::release`).
    pub async fn release(&self, epoch: u64, end: u64) -> Result<()> {
        self.update(|m| m.release(epoch, end)).await?;
        Ok(())
    }

    /// Appends (inserts) a segment as the owner of `epoch`; returns whether it was
    /// newly listed (false: already listed, nothing written).
    pub async fn append_segment(&self, epoch: u64, seg: SegmentRef) -> Result<Updated<Manifest, bool>> {
        self.update(|m| {
            m.claim_epoch(epoch)?;
            m.insert_segment(seg.clone())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, end: u64, last_ts: u64) -> SegmentRef {
        SegmentRef {
            base_offset: base,
            end_offset: end,
            first_ts_ms: last_ts.saturating_sub(10),
            last_ts_ms: last_ts,
            records: end - base,
            raw_bytes: 100,
            stored_bytes: 50,
            compression: Compression::Zstd,
            key: layout::segment_key("s", "sh", base, 1),
        }
    }

    #[test]
    fn insert_keeps_order_and_refuses_overlap() {
        let mut m = Manifest::new("sh", 1);
        assert!(m.insert_segment(seg(10, 20, 1)).unwrap());
        assert!(m.insert_segment(seg(0, 10, 1)).unwrap());
        assert!(m.insert_segment(seg(30, 40, 1)).unwrap());
        assert!(!m.insert_segment(seg(10, 20, 1)).unwrap(), "identical is a no-op");
        assert!(m.insert_segment(seg(10, 21, 1)).is_err(), "same base, different entry");
        assert!(m.insert_segment(seg(15, 25, 1)).is_err());
        assert!(m.insert_segment(seg(25, 31, 1)).is_err());
        assert!(m.insert_segment(seg(5, 5, 1)).is_err());
        assert!(m.insert_segment(seg(20, 30, 1)).unwrap());
        let bases: Vec<u64> = m.segments.iter().map(|s| s.base_offset).collect();
        assert_eq!(bases, vec![0, 10, 20, 30]);
        assert_eq!(m.find(0).unwrap().base_offset, 0);
        assert_eq!(m.find(19).unwrap().base_offset, 10);
        assert_eq!(m.find(39).unwrap().base_offset, 30);
        assert!(m.find(40).is_none());
        assert_eq!(m.end_offset(), 40);
    }

    #[test]
    fn retention_removes_leading_run_and_trims() {
        let mut m = Manifest::new("sh", 1);
        for (i, ts) in [100, 200, 300, 400].into_iter().enumerate() {
            m.insert_segment(seg(i as u64 * 10, i as u64 * 10 + 10, ts)).unwrap();
        }
        assert!(m.remove_expired(50).is_empty());
        let removed = m.remove_expired(250);
        assert_eq!(removed.len(), 2);
        assert_eq!(m.trimmed_before_offset, 20);
        assert_eq!(m.find_by_time(250).unwrap().base_offset, 20);
        assert!(m.insert_segment(seg(0, 10, 100)).is_err(), "below trim point");
        assert_eq!(m.remove_expired(10_000).len(), 2);
        assert_eq!(m.end_offset(), 40);
    }

    #[test]
    fn a_claim_that_landed_unanswered_is_still_the_claimants() {
        let mut m = Manifest::new("sh", 1);
        assert_eq!(m.take_ownership("a", 0).unwrap(), 1);
        assert_eq!(m.take_ownership("a", 0).unwrap(), 1, "the retry finds its own claim");
        assert!(matches!(m.take_ownership("b", 0), Err(TierError::Conflict { .. })));
        assert_eq!((m.owner.as_deref(), m.epoch), (Some("a"), 1));
    }

    #[test]
    fn epoch_fencing() {
        let mut m = Manifest::new("sh", 1);
        m.claim_epoch(3).unwrap();
        m.claim_epoch(3).unwrap();
        assert!(matches!(m.claim_epoch(2), Err(TierError::StaleEpoch { current: 3, attempted: 2, .. })));
        m.claim_epoch(4).unwrap();
        assert_eq!(m.epoch, 4);
    }

    #[test]
    fn json_shape() {
        let mut m = Manifest::new("shardId-000000000001", 9);
        m.insert_segment(seg(0, 10, 5)).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        for k in ["version", "stream_incarnation", "shard", "epoch", "segments", "trimmed_before_offset"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let s = &v["segments"][0];
        for k in [
            "base_offset",
            "end_offset",
            "first_ts_ms",
            "last_ts_ms",
            "records",
            "raw_bytes",
            "stored_bytes",
            "compression",
            "key",
        ] {
            assert!(s.get(k).is_some(), "{k}");
        }
        assert_eq!(s["compression"], "zstd");
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
