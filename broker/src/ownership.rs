//! Which shards this broker owns in the object store. A broker takes each shard it serves
//! by writing its name and the next epoch into the shard's manifest, conditionally on the
//! epoch it read (`ManifestStore::take_ownership`): of brokers racing for a shard exactly
//! one wins. Every later manifest write carries that epoch, so once another broker takes
//! the shard, this one's uploads are refused (`StaleEpoch`) and it stops writing the shard.

use crate::tier::{TierError, TierStore};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Owned {
        epoch: u64,
    },
    /// Another broker took the shard at a later epoch.
    Fenced,
    /// This broker handed the shard on (cluster): it writes it no more.
    Released,
}

pub struct Ownership {
    broker_id: String,
    shards: Mutex<HashMap<(String, String), Claim>>,
    /// A shard this broker has no claim on is claimed at its first upload (one broker
    /// alone); in a cluster only the assignment's handoff takes shards, so it is not.
    claim_on_demand: bool,
    /// Fast path for the write path: no lookup while nothing is fenced.
    any_fenced: AtomicBool,
    fenced_gauge: prometheus::IntGauge,
}

impl Ownership {
    pub fn new(broker_id: String, fenced_gauge: prometheus::IntGauge, claim_on_demand: bool) -> Ownership {
        Ownership {
            broker_id,
            shards: Mutex::default(),
            claim_on_demand,
            any_fenced: AtomicBool::new(false),
            fenced_gauge,
        }
    }

    pub fn broker_id(&self) -> &str {
        &self.broker_id
    }

    /// Take the shard (or keep it, if the manifest already names this broker); returns the
    /// epoch this broker writes with. `Conflict`: another broker took it meanwhile.
    pub async fn claim(&self, tier: &TierStore, stream: &str, shard: &str) -> Result<u64, TierError> {
        let manifest = tier.manifest(stream, shard)?;
        let current = manifest.load().await?.map(|(m, _)| (m.epoch, m.owner));
        let epoch = match current {
            Some((epoch, Some(owner))) if owner == self.broker_id => epoch,
            other => manifest.take_ownership(&self.broker_id, other.map_or(0, |(epoch, _)| epoch)).await?,
        };
        self.shards.lock().unwrap().insert((stream.into(), shard.into()), Claim::Owned { epoch });
        Ok(epoch)
    }

    /// The epoch to write the shard with, claiming it first if this broker has not yet.
    /// None: the shard is fenced (another broker owns it).
    pub async fn epoch(&self, tier: &TierStore, stream: &str, shard: &str) -> Result<Option<u64>, TierError> {
        let known = self.shards.lock().unwrap().get(&(stream.to_string(), shard.to_string())).copied();
        match known {
            Some(Claim::Owned { epoch }) => Ok(Some(epoch)),
            Some(Claim::Fenced | Claim::Released) => Ok(None),
            None if !self.claim_on_demand => Ok(None),
            None => match self.claim(tier, stream, shard).await {
                Ok(epoch) => Ok(Some(epoch)),
                Err(TierError::Conflict { reason, .. }) => {
                    self.fence(stream, shard, &reason);
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Take the shard from epoch `from` (an operator's or coordinator's handoff): exactly one
    /// of brokers taking it from the same epoch wins; a loser is fenced for the shard.
    pub async fn take(&self, tier: &TierStore, stream: &str, shard: &str, from: u64) -> Result<u64, TierError> {
        match tier.manifest(stream, shard)?.take_ownership(&self.broker_id, from).await {
            Ok(epoch) => {
                let mut shards = self.shards.lock().unwrap();
                shards.insert((stream.into(), shard.into()), Claim::Owned { epoch });
                self.fenced_gauge.set(shards.values().filter(|c| **c == Claim::Fenced).count() as i64);
                Ok(epoch)
            }
            Err(TierError::Conflict { path, reason }) => {
                self.fence(stream, shard, &reason);
                Err(TierError::Conflict { path, reason })
            }
            Err(e) => Err(e),
        }
    }

    /// Another broker owns the shard now: stop writing it.
    pub fn fence(&self, stream: &str, shard: &str, why: &str) {
        tracing::error!(%stream, %shard, "another broker owns this shard now; this broker stops writing it: {why}");
        let mut shards = self.shards.lock().unwrap();
        shards.insert((stream.into(), shard.into()), Claim::Fenced);
        self.fenced_gauge.set(shards.values().filter(|c| **c == Claim::Fenced).count() as i64);
        self.any_fenced.store(true, Ordering::Release);
    }

    /// The epoch this broker holds the shard at, if it owns it.
    pub fn owned_epoch(&self, stream: &str, shard: &str) -> Option<u64> {
        match self.shards.lock().unwrap().get(&(stream.to_string(), shard.to_string())) {
            Some(Claim::Owned { epoch }) => Some(*epoch),
            _ => None,
        }
    }

    /// Record that this broker holds the shard at `epoch` (taken through the manifest).
    pub fn owned(&self, stream: &str, shard: &str, epoch: u64) {
        self.shards.lock().unwrap().insert((stream.into(), shard.into()), Claim::Owned { epoch });
    }

    /// This broker handed the shard on: no more uploads, retention or sweeps of it here.
    pub fn release(&self, stream: &str, shard: &str) {
        self.shards.lock().unwrap().insert((stream.into(), shard.into()), Claim::Released);
    }

    pub fn is_fenced(&self, stream: &str, shard: &str) -> bool {
        self.any_fenced.load(Ordering::Acquire)
            && self.shards.lock().unwrap().get(&(stream.to_string(), shard.to_string())) == Some(&Claim::Fenced)
    }

    /// A deleted stream's claims (a stream of the same name claims afresh).
    pub fn forget(&self, stream: &str) {
        let mut shards = self.shards.lock().unwrap();
        shards.retain(|(s, _), _| s != stream);
        self.fenced_gauge.set(shards.values().filter(|c| **c == Claim::Fenced).count() as i64);
    }
}

/// This broker's name in manifests: `configured`, else the one kept in `<data-dir>/broker.id`
/// (created at random on first start).
pub fn broker_id(configured: Option<&str>, data_dir: &Path) -> std::io::Result<String> {
    if let Some(id) = configured {
        return Ok(id.to_string());
    }
    let path = data_dir.join("broker.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) | Err(_) => {
            let id = format!("broker-{:016x}", rand::random::<u64>());
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
    }
}
