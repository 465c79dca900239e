//! Consumer leases and checkpoints, kept in the object store with the KCL's rules.
//!
//! * [`table`]: one application's lease table, `<prefix>/consumers/<app>/leases/<shard>.json`,
//!   every change a conditional PUT (create-if-absent or ETag match); a lost race or a stale
//!   owner or counter is [`LeaseError::Conflict`], never a silent overwrite.
//! * [`rules`]: the KCL's decisions as pure functions (which leases to create, renew, take,
//!   steal; expiry by this broker's observations; children only after their parents reached
//!   SHARD_END).
//! * [`Leases`]: the broker's state for the lease operations: the observations per
//!   application and the monotonic clock they are taken on.
//!
//! The operations (`StreamfabricLeases_20261129.<Op>`) are described in
//! `streamfabric_api::leases` and handled in `ops::leases`.

pub mod rules;
pub mod table;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::tier::{TierError, TierStore};
pub use rules::{Observations, ShardInfo};
pub use table::{LeaseTable, StoredLease, SyncReport, SyncRound};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("No lease for shard {shard} of application {app}.")]
    NotFound { app: String, shard: String },
    /// A conditional write lost to another writer, or the caller's owner or counter is stale.
    #[error("Lease for shard {shard} of application {app}: {reason}.")]
    Conflict { app: String, shard: String, reason: String },
    /// A child shard's lease while a parent has not reached SHARD_END.
    #[error("Lease for shard {shard} of application {app} waits for its parent shards {parents} to reach SHARD_END.")]
    ParentsNotFinished { app: String, shard: String, parents: String },
    /// The application's leases are of another stream than the one named.
    #[error("Application {app} leases shards of stream {found}, not of {named}.")]
    OtherStream { app: String, found: String, named: String },
    #[error(transparent)]
    Store(#[from] TierError),
}

/// What the broker keeps for the lease operations.
pub struct Leases {
    tier: TierStore,
    started: Instant,
    observations: Mutex<HashMap<String, Arc<Mutex<Observations>>>>,
}

impl Leases {
    pub fn new(tier: TierStore) -> Self {
        Leases { tier, started: Instant::now(), observations: Mutex::new(HashMap::new()) }
    }

    pub fn table(&self, app: &str, stream: &str) -> Result<LeaseTable, LeaseError> {
        LeaseTable::new(&self.tier, app, stream)
    }

    /// Milliseconds on this broker's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// This broker's observations of `app`'s leases.
    pub fn observations(&self, app: &str) -> Arc<Mutex<Observations>> {
        self.observations.lock().unwrap().entry(app.to_string()).or_default().clone()
    }
}
