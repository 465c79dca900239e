//! The lease table of one consumer application in the object store:
//! `<prefix>/consumers/<application>/leases/<shard>.json`, one JSON document per lease.
//!
//! A table handle is bound to one stream: an application's leases are all of one stream, and
//! reading a lease of another is [`LeaseError::OtherStream`].
//!
//! Every change is one conditional PUT: create-if-absent for a new lease, ETag match for
//! any other change. Nothing is retried here: a write that loses, or a caller whose
//! expected counter or owner is stale, gets [`LeaseError::Conflict`] and decides itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use streamfabric_api::leases::{ExtendedSequenceNumber, Lease};

use super::LeaseError;
use super::rules::{self, Observations, ShardInfo};
use crate::tier::{TierError, TierStore, join, layout};

/// A lease with the object version it was read at.
#[derive(Debug, Clone)]
pub struct StoredLease {
    pub lease: Lease,
    pub version: UpdateVersion,
}

/// Handle on one application's leases of one stream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    app: String,
    stream: String,
}

/// What [`LeaseTable::sync`] did for a worker.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// The worker's workable leases afterwards.
    pub held: Vec<Lease>,
    pub created: Vec<String>,
    pub renewed: Vec<String>,
    pub taken: Vec<String>,
    pub stolen: Vec<String>,
    /// Renewals and takes that lost to another writer.
    pub lost: Vec<String>,
}

/// Settings of one sync round.
#[derive(Debug, Clone)]
pub struct SyncRound<'a> {
    pub shards: &'a [ShardInfo],
    pub worker: &'a str,
    /// This broker's monotonic clock, in milliseconds.
    pub now_ms: u64,
    pub failover_ms: u64,
    pub initial: ExtendedSequenceNumber,
}

impl LeaseTable {
    pub fn new(tier: &TierStore, app: &str, stream: &str) -> Result<Self, LeaseError> {
        layout::check_name("application", app)?;
        layout::check_name("stream", stream)?;
        let dir = join(tier.prefix(), &format!("consumers/{app}/leases"));
        Ok(LeaseTable { store: tier.store().clone(), dir, app: app.to_string(), stream: stream.to_string() })
    }

    pub fn application(&self) -> &str {
        &self.app
    }

    fn path(&self, shard: &str) -> Result<Path, LeaseError> {
        layout::check_name("shard", shard)?;
        Ok(self.dir.clone().join(format!("{shard}.json")))
    }

    fn conflict(&self, shard: &str, reason: impl Into<String>) -> LeaseError {
        LeaseError::Conflict { app: self.app.clone(), shard: shard.to_string(), reason: reason.into() }
    }

    fn not_found(&self, shard: &str) -> LeaseError {
        LeaseError::NotFound { app: self.app.clone(), shard: shard.to_string() }
    }

    /// One lease, or `None`.
    pub async fn get(&self, shard: &str) -> Result<Option<StoredLease>, LeaseError> {
        let path = self.path(shard)?;
        self.read(&path).await
    }

    async fn read(&self, path: &Path) -> Result<Option<StoredLease>, LeaseError> {
        let got = match self.store.get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(TierError::store("get", path, e).into()),
        };
        let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
        let bytes = got.bytes().await.map_err(|e| TierError::store("get", path, e))?;
        let lease: Lease = serde_json::from_slice(&bytes)
            .map_err(|e| TierError::Corrupt { path: path.to_string(), reason: format!("invalid lease JSON: {e}") })?;
        if lease.stream_name != self.stream {
            return Err(LeaseError::OtherStream {
                app: self.app.clone(),
                found: lease.stream_name,
                named: self.stream.clone(),
            });
        }
        Ok(Some(StoredLease { lease, version }))
    }

    /// Every lease, sorted by shard id.
    pub async fn list(&self) -> Result<Vec<StoredLease>, LeaseError> {
        let metas: Vec<_> = match self.store.list(Some(&self.dir)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(TierError::store("list", &self.dir, e).into()),
        };
        let paths: Vec<Path> =
            metas.into_iter().map(|m| m.location).filter(|p| p.extension() == Some("json")).collect();
        let mut leases: Vec<StoredLease> = futures::stream::iter(paths)
            .map(|p| async move { self.read(&p).await })
            .buffer_unordered(16)
            .try_filter_map(|l| async move { Ok(l) })
            .try_collect()
            .await?;
        leases.sort_by(|a, b| a.lease.lease_key.cmp(&b.lease.lease_key));
        Ok(leases)
    }

    /// Creates `lease`; `Conflict` if the shard already has one.
    pub async fn create(&self, lease: Lease) -> Result<StoredLease, LeaseError> {
        let path = self.path(&lease.lease_key)?;
        let body = serde_json::to_vec_pretty(&lease).expect("leases serialise");
        match self.store.put_opts(&path, PutPayload::from(body), PutMode::Create.into()).await {
            Ok(r) => Ok(StoredLease { lease, version: r.into() }),
            Err(object_store::Error::AlreadyExists { .. }) => Err(self.conflict(&lease.lease_key, "already exists")),
            Err(e) => Err(TierError::store("put (create)", &path, e).into()),
        }
    }

    /// Replaces `current` with `next` if the stored lease is still `current`.
    pub async fn replace(&self, current: &StoredLease, next: Lease) -> Result<StoredLease, LeaseError> {
        let shard = current.lease.lease_key.clone();
        let path = self.path(&shard)?;
        let body = serde_json::to_vec_pretty(&next).expect("leases serialise");
        let mode = PutMode::Update(current.version.clone());
        match self.store.put_opts(&path, PutPayload::from(body), mode.into()).await {
            Ok(r) => Ok(StoredLease { lease: next, version: r.into() }),
            Err(e) if crate::tier::versioned::is_conflict(&e) => {
                Err(self.conflict(&shard, "changed by another writer since it was read"))
            }
            Err(e) => Err(TierError::store("put (conditional)", &path, e).into()),
        }
    }

    async fn load(&self, shard: &str) -> Result<StoredLease, LeaseError> {
        self.get(shard).await?.ok_or_else(|| self.not_found(shard))
    }

    fn check_counter(&self, lease: &Lease, expected: u64) -> Result<(), LeaseError> {
        if lease.lease_counter != expected {
            return Err(self.conflict(
                &lease.lease_key,
                format!("lease counter is {}, not the expected {expected}", lease.lease_counter),
            ));
        }
        Ok(())
    }

    fn check_owner(&self, lease: &Lease, worker: &str, counter: u64) -> Result<(), LeaseError> {
        if lease.lease_owner.as_deref() != Some(worker) {
            let owner = lease.lease_owner.as_deref().unwrap_or("nobody");
            return Err(self.conflict(&lease.lease_key, format!("held by {owner}, not by {worker}")));
        }
        self.check_counter(lease, counter)
    }

    /// Whether every parent of `lease` is finished; reads the parents' leases.
    async fn check_parents(&self, lease: &Lease, stream_shards: &BTreeSet<String>) -> Result<(), LeaseError> {
        let mut parents = Vec::new();
        for p in &lease.parent_shard_ids {
            if let Some(stored) = self.get(p).await? {
                parents.push(stored.lease);
            }
        }
        let by_key: BTreeMap<&str, &Lease> = parents.iter().map(|l| (l.lease_key.as_str(), l)).collect();
        let waiting = rules::unfinished_parents(lease, &by_key, stream_shards);
        if !waiting.is_empty() {
            return Err(LeaseError::ParentsNotFinished {
                app: self.app.clone(),
                shard: lease.lease_key.clone(),
                parents: waiting.join(", "),
            });
        }
        Ok(())
    }

    /// `worker` takes the lease if its counter is still `expected_counter` and its parents
    /// are finished (`stream_shards`: the stream's shard ids, see [`rules::parents_done`]).
    pub async fn take(
        &self,
        shard: &str,
        worker: &str,
        expected_counter: u64,
        stream_shards: &BTreeSet<String>,
    ) -> Result<Lease, LeaseError> {
        let current = self.load(shard).await?;
        self.check_counter(&current.lease, expected_counter)?;
        self.check_parents(&current.lease, stream_shards).await?;
        Ok(self.replace(&current, taken(&current.lease, worker)).await?.lease)
    }

    /// The owner's heartbeat: bumps the counter.
    pub async fn renew(&self, shard: &str, worker: &str, counter: u64) -> Result<Lease, LeaseError> {
        let current = self.load(shard).await?;
        self.check_owner(&current.lease, worker, counter)?;
        let mut next = current.lease.clone();
        next.lease_counter += 1;
        Ok(self.replace(&current, next).await?.lease)
    }

    /// Records `position` as the checkpoint (or, with `prepare`, the pending checkpoint);
    /// only by the owner with the current counter, which it bumps. The caller has checked
    /// that the position belongs to the shard.
    pub async fn checkpoint(
        &self,
        shard: &str,
        worker: &str,
        counter: u64,
        position: ExtendedSequenceNumber,
        prepare: bool,
    ) -> Result<Lease, LeaseError> {
        let current = self.load(shard).await?;
        self.check_owner(&current.lease, worker, counter)?;
        let mut next = current.lease.clone();
        next.lease_counter += 1;
        if prepare {
            next.pending_checkpoint = Some(position);
        } else {
            next.checkpoint = position;
            next.pending_checkpoint = None;
            next.owner_switches_since_checkpoint = 0;
        }
        Ok(self.replace(&current, next).await?.lease)
    }

    /// The owner gives the lease up: no owner, counter bumped.
    pub async fn release(&self, shard: &str, worker: &str, counter: u64) -> Result<Lease, LeaseError> {
        let current = self.load(shard).await?;
        self.check_owner(&current.lease, worker, counter)?;
        let mut next = current.lease.clone();
        next.lease_owner = None;
        next.lease_counter += 1;
        Ok(self.replace(&current, next).await?.lease)
    }

    /// Deletes the lease if its counter is `expected_counter`. The object store's DELETE
    /// has no precondition, so a change that lands between the check and the delete is
    /// lost with the lease; delete only leases nobody works on (finished ones).
    pub async fn delete(&self, shard: &str, expected_counter: u64) -> Result<(), LeaseError> {
        let current = self.load(shard).await?;
        self.check_counter(&current.lease, expected_counter)?;
        let path = self.path(shard)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(TierError::store("delete", &path, e).into()),
        }
    }

    /// Creates the missing leases of `shards` (see [`rules::leases_to_create`]). Returns the
    /// ids it created and the table afterwards; a lease another writer created first is fine.
    pub async fn create_missing(
        &self,
        shards: &[ShardInfo],
        initial: &ExtendedSequenceNumber,
    ) -> Result<(Vec<String>, Vec<StoredLease>), LeaseError> {
        let table = self.list().await?;
        let leases: Vec<Lease> = table.iter().map(|s| s.lease.clone()).collect();
        let missing = rules::leases_to_create(shards, &leases);
        if missing.is_empty() {
            return Ok((Vec::new(), table));
        }
        let mut created = Vec::new();
        for id in missing {
            let shard = shards.iter().find(|s| s.id == id).expect("planned from these shards");
            match self.create(rules::new_lease(&self.stream, shard, shards, initial)).await {
                Ok(_) => created.push(id),
                Err(LeaseError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((created, self.list().await?))
    }

    /// One round of the KCL's rules for a worker: create missing leases, renew the held
    /// ones, take unowned and expired ones up to the fair share, else steal one. Expiry is
    /// judged by `observations` (this broker's view, updated here).
    pub async fn sync(
        &self,
        round: &SyncRound<'_>,
        observations: &Mutex<Observations>,
    ) -> Result<SyncReport, LeaseError> {
        let (created, table) = self.create_missing(round.shards, &round.initial).await?;
        let leases: Vec<Lease> = table.iter().map(|s| s.lease.clone()).collect();
        let stream_shards: BTreeSet<String> = round.shards.iter().map(|s| s.id.clone()).collect();
        let expired = observations.lock().unwrap().observe(&leases, round.now_ms, round.failover_ms);
        let plan = rules::plan(round.worker, &leases, &stream_shards, &expired);
        let by_key: BTreeMap<&str, &StoredLease> = table.iter().map(|s| (s.lease.lease_key.as_str(), s)).collect();
        let mut report = SyncReport { created, ..SyncReport::default() };
        let mut held = Vec::new();
        for key in &plan.renew {
            let current = by_key[key.as_str()];
            let mut next = current.lease.clone();
            next.lease_counter += 1;
            match self.replace(current, next).await {
                Ok(s) => {
                    report.renewed.push(key.clone());
                    held.push(s.lease);
                }
                Err(LeaseError::Conflict { .. }) => report.lost.push(key.clone()),
                Err(e) => return Err(e),
            }
        }
        let takes = plan.take.iter().map(|k| (k, false)).chain(plan.steal.iter().map(|k| (k, true)));
        for (key, steal) in takes {
            let current = by_key[key.as_str()];
            match self.replace(current, taken(&current.lease, round.worker)).await {
                Ok(s) => {
                    if steal { &mut report.stolen } else { &mut report.taken }.push(key.clone());
                    held.push(s.lease);
                }
                Err(LeaseError::Conflict { .. }) => report.lost.push(key.clone()),
                Err(e) => return Err(e),
            }
        }
        held.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
        report.held = held;
        Ok(report)
    }
}

/// `lease` as taken by `worker`: counter bumped; an owner switch counted.
fn taken(lease: &Lease, worker: &str) -> Lease {
    let mut next = lease.clone();
    if next.lease_owner.as_deref() != Some(worker) {
        next.owner_switches_since_checkpoint += 1;
    }
    next.lease_owner = Some(worker.to_string());
    next.lease_counter += 1;
    next
}
