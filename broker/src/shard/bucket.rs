//! What this broker knows of one shard's objects in the store: whether it owns the shard
//! there (and at which epoch), how far its uploads reach, and the manifest it read last.
//! Shared by the shard and the upload jobs queued for it, so it outlives a log rebuilt
//! by a handoff, and goes with the shard when its stream is deleted.

use crate::tier::{Compression, Manifest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not taken yet (a broker alone claims at start, or before its first write or upload).
    Unclaimed,
    Owned {
        epoch: u64,
    },
    /// Another broker took the shard at a later epoch.
    Fenced,
    /// This broker handed the shard on (cluster): it writes it no more.
    Released,
}

/// A manifest as read from the store, and when (reads reload it once it may be stale).
#[derive(Clone)]
pub struct CachedManifest {
    pub manifest: Arc<Manifest>,
    pub loaded: Instant,
    /// `Tiers`' generation when loaded: a bump (retention changed the bucket, the shard
    /// changed hands) makes every cached manifest stale at once.
    pub generation: u64,
}

/// The stream's segment compression, if its tags choose one (else the broker's default);
/// one per stream, shared by its shards.
pub type StreamCompression = Arc<Mutex<Option<Compression>>>;

pub struct ShardBucket {
    pub stream: String,
    pub incarnation: u64,
    pub shard: String,
    claim: Mutex<Claim>,
    /// Held while claiming the shard in the store: writers and the uploader may claim at
    /// once, and two takes from the same epoch would fence this broker against itself.
    pub(crate) claiming: tokio::sync::Mutex<()>,
    /// Read on every append: set once the shard is fenced, never cleared but by a new claim.
    fenced: AtomicBool,
    fenced_gauge: prometheus::IntGauge,
    /// The offset after the last segment known to be listed in the manifest.
    uploaded_end: Mutex<Option<u64>>,
    manifest: Mutex<Option<CachedManifest>>,
    compression: StreamCompression,
}

impl ShardBucket {
    pub fn new(
        stream: &str,
        incarnation: u64,
        shard: &str,
        compression: StreamCompression,
        fenced_gauge: prometheus::IntGauge,
    ) -> ShardBucket {
        ShardBucket {
            stream: stream.to_string(),
            incarnation,
            shard: shard.to_string(),
            claim: Mutex::new(Claim::Unclaimed),
            claiming: tokio::sync::Mutex::new(()),
            fenced: AtomicBool::new(false),
            fenced_gauge,
            uploaded_end: Mutex::new(None),
            manifest: Mutex::new(None),
            compression,
        }
    }

    pub fn claim(&self) -> Claim {
        *self.claim.lock().unwrap()
    }

    /// Change the claim, keeping the fenced flag and gauge in step.
    fn set_claim(&self, next: Claim) {
        let mut claim = self.claim.lock().unwrap();
        let (was, is) = (*claim == Claim::Fenced, next == Claim::Fenced);
        *claim = next;
        self.fenced.store(is, Ordering::Release);
        match (was, is) {
            (false, true) => self.fenced_gauge.inc(),
            (true, false) => self.fenced_gauge.dec(),
            _ => {}
        }
    }

    /// This broker holds the shard at `epoch` (taken through the manifest).
    pub fn owned(&self, epoch: u64) {
        self.set_claim(Claim::Owned { epoch });
    }

    pub fn owned_epoch(&self) -> Option<u64> {
        match self.claim() {
            Claim::Owned { epoch } => Some(epoch),
            _ => None,
        }
    }

    /// Another broker owns the shard now: stop writing it.
    pub fn fence(&self, why: &str) {
        tracing::error!(stream = %self.stream, shard = %self.shard, "another broker owns this shard now; this broker stops writing it: {why}");
        self.set_claim(Claim::Fenced);
    }

    /// This broker handed the shard on: no more uploads, retention or sweeps of it here.
    pub fn release(&self) {
        self.set_claim(Claim::Released);
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// The offset after the last segment known to be in the manifest, if known.
    pub fn uploaded_end(&self) -> Option<u64> {
        *self.uploaded_end.lock().unwrap()
    }

    /// The manifest lists segments up to `end` (never moves back).
    pub fn note_uploaded(&self, end: u64) {
        let mut known = self.uploaded_end.lock().unwrap();
        *known = Some(known.map_or(end, |k| k.max(end)));
    }

    pub fn cached_manifest(&self) -> Option<CachedManifest> {
        self.manifest.lock().unwrap().clone()
    }

    pub fn cache_manifest(&self, cached: CachedManifest) {
        *self.manifest.lock().unwrap() = Some(cached);
    }

    /// The compression its segments are uploaded with; None: the broker's default.
    pub fn compression(&self) -> Option<Compression> {
        *self.compression.lock().unwrap()
    }
}

impl Drop for ShardBucket {
    fn drop(&mut self) {
        // A deleted stream's fenced shards are fenced no more.
        if *self.claim.get_mut().unwrap() == Claim::Fenced {
            self.fenced_gauge.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(gauge: &prometheus::IntGauge) -> ShardBucket {
        ShardBucket::new("s", 1, "shardId-000000000000", StreamCompression::default(), gauge.clone())
    }

    #[test]
    fn the_fenced_gauge_counts_shards_fenced_now() {
        let gauge = prometheus::IntGauge::new("fenced", "fenced shards").unwrap();
        let (a, b) = (bucket(&gauge), bucket(&gauge));
        a.owned(3);
        assert_eq!((a.owned_epoch(), a.is_fenced(), gauge.get()), (Some(3), false, 0));
        a.fence("taken");
        a.fence("taken again");
        b.fence("taken");
        assert_eq!((a.owned_epoch(), a.is_fenced(), gauge.get()), (None, true, 2));
        a.owned(5);
        assert_eq!((a.is_fenced(), gauge.get()), (false, 1), "taken back");
        drop(b);
        assert_eq!(gauge.get(), 0, "a deleted stream's fenced shard");
        a.release();
        assert_eq!((a.claim(), gauge.get()), (Claim::Released, 0));
    }

    #[test]
    fn the_upload_cursor_only_moves_forward() {
        let gauge = prometheus::IntGauge::new("fenced", "fenced shards").unwrap();
        let a = bucket(&gauge);
        assert_eq!(a.uploaded_end(), None);
        a.note_uploaded(10);
        a.note_uploaded(4);
        assert_eq!(a.uploaded_end(), Some(10));
    }
}
