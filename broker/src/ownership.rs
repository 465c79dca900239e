//! How this broker owns shards in the object store. A broker takes each shard it serves
//! by writing its name and the next epoch into the shard's manifest, conditionally on the
//! epoch it read (`ManifestStore::take_ownership`): of brokers racing for a shard exactly
//! one wins. Every later manifest write carries that epoch, so once another broker takes
//! the shard, this one's uploads are refused (`StaleEpoch`) and it stops writing the shard.

use crate::shard::bucket::{Claim, ShardBucket};
use crate::tier::{TierError, TierStore};
use std::path::Path;

/// How this broker takes shards in the object store; each shard's claim is in its `ShardBucket`.
pub struct Ownership {
    broker_id: String,
    /// A shard this broker has no claim on is claimed at its first upload (one broker
    /// alone); in a cluster only the assignment's handoff takes shards, so it is not.
    claim_on_demand: bool,
}

impl Ownership {
    pub fn new(broker_id: String, claim_on_demand: bool) -> Ownership {
        Ownership { broker_id, claim_on_demand }
    }

    pub fn broker_id(&self) -> &str {
        &self.broker_id
    }

    /// Take the shard (or keep it, if the manifest already names this broker); returns the
    /// epoch this broker writes with. `Conflict`: another broker took it meanwhile.
    pub async fn claim(&self, tier: &TierStore, shard: &ShardBucket) -> Result<u64, TierError> {
        let _claiming = shard.claiming.lock().await;
        self.claim_locked(tier, shard).await
    }

    async fn claim_locked(&self, tier: &TierStore, shard: &ShardBucket) -> Result<u64, TierError> {
        let manifest = tier.manifest(&shard.stream, &shard.shard)?;
        let current = manifest.load().await?.map(|(m, _)| (m.epoch, m.owner));
        let epoch = match current {
            Some((epoch, Some(owner))) if owner == self.broker_id => epoch,
            other => manifest.take_ownership(&self.broker_id, other.map_or(0, |(epoch, _)| epoch)).await?,
        };
        shard.owned(epoch);
        Ok(epoch)
    }

    /// The epoch to write the shard with, claiming it first if this broker has not yet.
    /// None: the shard is fenced (another broker owns it), or handed on.
    pub async fn epoch(&self, tier: &TierStore, shard: &ShardBucket) -> Result<Option<u64>, TierError> {
        match shard.claim() {
            Claim::Owned { epoch } => return Ok(Some(epoch)),
            Claim::Fenced | Claim::Released => return Ok(None),
            Claim::Unclaimed if !self.claim_on_demand => return Ok(None),
            Claim::Unclaimed => {}
        }
        let _claiming = shard.claiming.lock().await;
        if shard.claim() != Claim::Unclaimed {
            // Claimed (or fenced) by whoever held the lock before.
            return Ok(shard.owned_epoch());
        }
        match self.claim_locked(tier, shard).await {
            Ok(epoch) => Ok(Some(epoch)),
            Err(TierError::Conflict { reason, .. }) => {
                shard.fence(&reason);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Take the shard named from epoch `from` (an operator's or coordinator's handoff):
    /// exactly one of brokers taking it from the same epoch wins; a loser is fenced for the
    /// shard. `held`: the shard as this broker holds it, if it does.
    pub async fn take(
        &self,
        tier: &TierStore,
        stream: &str,
        shard: &str,
        from: u64,
        held: Option<&ShardBucket>,
    ) -> Result<u64, TierError> {
        match tier.manifest(stream, shard)?.take_ownership(&self.broker_id, from).await {
            Ok(epoch) => {
                held.inspect(|s| s.owned(epoch));
                Ok(epoch)
            }
            Err(TierError::Conflict { path, reason }) => {
                held.inspect(|s| s.fence(&reason));
                Err(TierError::Conflict { path, reason })
            }
            Err(e) => Err(e),
        }
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
