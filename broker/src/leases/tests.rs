//! Lease storage tests. Each is written once as `async fn name(b: &Backend)` and run by
//! `lease_tests!` against `memory://` (under a key prefix) and `file://` (a temporary
//! directory through `LocalConditionalStore`). Time is injected (`now_ms`), never slept.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use streamfabric_api::leases::{ExtendedSequenceNumber, Lease, LeaseHashKeyRange};

use super::*;
use crate::tier::{StoreOptions, open_store};

struct Backend {
    tier: TierStore,
    /// For file://, the URL, so that each caller can open its own store handle.
    url: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// A separate handle on the same store (a new `LocalConditionalStore` for file://).
    fn handle(&self) -> TierStore {
        match &self.url {
            Some(url) => TierStore::open(url, &StoreOptions::default()).unwrap(),
            None => self.tier.clone(),
        }
    }

    fn table(&self, app: &str) -> LeaseTable {
        LeaseTable::new(&self.handle(), app, STREAM).unwrap()
    }
}

fn memory() -> Backend {
    let (store, _) = open_store("memory://", &StoreOptions::default()).unwrap();
    Backend { tier: TierStore::new(store, Path::from("lease-tests/prefix")), url: None, _dir: None }
}

fn file() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/store", dir.path().display());
    let tier = TierStore::open(&url, &StoreOptions::default()).unwrap();
    Backend { tier, url: Some(url), _dir: Some(dir) }
}

macro_rules! lease_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::memory()).await;
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&super::file()).await;
                }
            )*
        }
    };
}

lease_tests!(
    create_and_list,
    renew_by_owner_only,
    take_with_stale_counter_refused,
    concurrent_takers_exactly_one_wins,
    checkpoint_by_non_owner_refused,
    child_not_leased_until_parents_shard_end,
    steal_one_at_a_time,
    expired_lease_taken_after_failover,
    release_and_delete,
);

const STREAM: &str = "orders";
const FAILOVER: u64 = 10_000;

fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
    ShardInfo {
        id: id.into(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        closed,
        range: LeaseHashKeyRange { starting_hash_key: "0".into(), ending_hash_key: "99".into() },
    }
}

fn open_shards(n: usize) -> Vec<ShardInfo> {
    (0..n).map(|i| shard(&format!("shardId-{i:012}"), &[], false)).collect()
}

fn ids(shards: &[ShardInfo]) -> BTreeSet<String> {
    shards.iter().map(|s| s.id.clone()).collect()
}

fn keys(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.lease_key.as_str()).collect()
}

/// One worker on its own broker: its own table handle and observations.
struct Worker {
    id: String,
    table: LeaseTable,
    observations: Mutex<Observations>,
}

impl Worker {
    fn new(b: &Backend, id: &str) -> Self {
        Worker { id: id.into(), table: b.table("app"), observations: Mutex::default() }
    }

    async fn sync(&self, shards: &[ShardInfo], now_ms: u64) -> SyncReport {
        let round = SyncRound {
            shards,
            worker: &self.id,
            now_ms,
            failover_ms: FAILOVER,
            initial: ExtendedSequenceNumber::trim_horizon(),
        };
        self.table.sync(&round, &self.observations).await.unwrap()
    }
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T, LeaseError>) -> bool {
    matches!(r, Err(LeaseError::Conflict { .. }))
}

// ---------------------------------------------------------------------------------

async fn create_and_list(b: &Backend) {
    let t = b.table("app");
    let shards =
        vec![shard("shardId-000000000000", &[], true), shard("shardId-000000000001", &["shardId-000000000000"], false)];
    assert!(t.list().await.unwrap().is_empty());
    let (created, table) = t.create_missing(&shards, &ExtendedSequenceNumber::trim_horizon()).await.unwrap();
    assert_eq!(created, vec!["shardId-000000000000", "shardId-000000000001"]);
    assert_eq!(table.len(), 2);
    let parent = &table[0].lease;
    assert_eq!(parent.child_shard_ids, vec!["shardId-000000000001"]);
    assert_eq!((parent.lease_owner.as_deref(), parent.lease_counter), (None, 0));
    assert_eq!(table[1].lease.parent_shard_ids, vec!["shardId-000000000000"]);
    assert_eq!(table[1].lease.stream_name, STREAM);
    // Idempotent; a second create of an existing lease is a conflict, not an overwrite.
    let (again, _) = t.create_missing(&shards, &ExtendedSequenceNumber::trim_horizon()).await.unwrap();
    assert!(again.is_empty());
    let mut changed = table[0].lease.clone();
    changed.lease_owner = Some("intruder".into());
    assert!(is_conflict(t.create(changed).await));
    assert_eq!(t.get("shardId-000000000000").await.unwrap().unwrap().lease.lease_owner, None);
    // Another application's table is separate; bad names are refused.
    assert!(b.table("other").list().await.unwrap().is_empty());
    assert!(LeaseTable::new(&b.tier, "a/b", STREAM).is_err());
    // The application's leases are of this stream: another stream's handle refuses them.
    let elsewhere = LeaseTable::new(&b.handle(), "app", "payments").unwrap();
    assert!(matches!(elsewhere.list().await, Err(LeaseError::OtherStream { .. })));
    assert!(matches!(elsewhere.get("shardId-000000000000").await, Err(LeaseError::OtherStream { .. })));
    assert!(matches!(t.get("../x").await, Err(LeaseError::Store(_))));
}

async fn renew_by_owner_only(b: &Backend) {
    let t = b.table("app");
    let shards = open_shards(1);
    let s = &shards[0].id;
    t.create_missing(&shards, &ExtendedSequenceNumber::trim_horizon()).await.unwrap();
    let l = t.take(s, "w1", 0, &ids(&shards)).await.unwrap();
    assert_eq!((l.lease_owner.as_deref(), l.lease_counter), (Some("w1"), 1));
    let l = t.renew(s, "w1", 1).await.unwrap();
    assert_eq!(l.lease_counter, 2);
    assert!(is_conflict(t.renew(s, "w1", 1).await), "stale counter");
    assert!(is_conflict(t.renew(s, "w2", 2).await), "not the owner");
    assert!(matches!(t.renew("shardId-000000000999", "w1", 0).await, Err(LeaseError::NotFound { .. })));
    assert_eq!(t.get(s).await.unwrap().unwrap().lease.lease_counter, 2, "refusals changed nothing");
}

async fn take_with_stale_counter_refused(b: &Backend) {
    let t = b.table("app");
    let shards = open_shards(1);
    let (s, all) = (&shards[0].id, ids(&shards));
    t.create_missing(&shards, &ExtendedSequenceNumber::trim_horizon()).await.unwrap();
    t.take(s, "w1", 0, &all).await.unwrap();
    assert!(is_conflict(t.take(s, "w2", 0, &all).await));
    let l = t.take(s, "w2", 1, &all).await.unwrap();
    assert_eq!((l.lease_owner.as_deref(), l.lease_counter, l.owner_switches_since_checkpoint), (Some("w2"), 2, 2));
    // A write based on an old read loses even when the counter check passed then.
    let old = t.get(s).await.unwrap().unwrap();
    t.renew(s, "w2", 2).await.unwrap();
    let mut next = old.lease.clone();
    next.lease_owner = Some("w3".into());
    assert!(is_conflict(t.replace(&old, next).await));
    assert_eq!(t.get(s).await.unwrap().unwrap().lease.lease_owner.as_deref(), Some("w2"));
}

async fn concurrent_takers_exactly_one_wins(b: &Backend) {
    const TAKERS: usize = 8;
    let shards = open_shards(5);
    let all = Arc::new(ids(&shards));
    b.table("app").create_missing(&shards, &ExtendedSequenceNumber::trim_horizon()).await.unwrap();
    for s in &shards {
        let barrier = Arc::new(tokio::sync::Barrier::new(TAKERS));
        let tasks: Vec<_> = (0..TAKERS)
            .map(|i| {
                let (table, barrier, all, shard) = (b.table("app"), barrier.clone(), all.clone(), s.id.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    (format!("w{i}"), table.take(&shard, &format!("w{i}"), 0, &all).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (worker, result) = task.await.unwrap();
            match result {
                Ok(lease) => winners.push((worker, lease)),
                Err(LeaseError::Conflict { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one taker wins {}", s.id);
        let stored = b.table("app").get(&s.id).await.unwrap().unwrap().lease;
        assert_eq!(stored.lease_owner.as_deref(), Some(winners[0].0.as_str()));
        assert_eq!(stored.lease_counter, 1);
    }
}

async fn checkpoint_by_non_owner_refused(b: &Backend) {
    let t = b.table("app");
    let shards = open_shards(1);
    let s = &shards[0].id;
    t.create_missing(&shards, &ExtendedSequenceNumber::trim_horizon()).await.unwrap();
    t.take(s, "w1", 0, &ids(&shards)).await.unwrap();
    let pos = |n: &str, sub| ExtendedSequenceNumber { sequence_number: n.into(), sub_sequence_number: sub };
    assert!(is_conflict(t.checkpoint(s, "w2", 1, pos("4900", 0), false).await), "not the owner");
    assert!(is_conflict(t.checkpoint(s, "w1", 0, pos("4900", 0), false).await), "stale counter");
    let l = t.checkpoint(s, "w1", 1, pos("4901", 0), true).await.unwrap();
    assert_eq!(l.pending_checkpoint, Some(pos("4901", 0)));
    assert_eq!(l.checkpoint.sequence_number, "TRIM_HORIZON");
    let l = t.checkpoint(s, "w1", 2, pos("4901", 3), false).await.unwrap();
    assert_eq!((l.checkpoint.clone(), l.pending_checkpoint.clone(), l.lease_counter), (pos("4901", 3), None, 3));
    assert_eq!(l.owner_switches_since_checkpoint, 0);
    assert_eq!(t.get(s).await.unwrap().unwrap().lease, l, "stored as answered");
}

async fn child_not_leased_until_parents_shard_end(b: &Backend) {
    let (a, c, m) = ("shardId-000000000000", "shardId-000000000001", "shardId-000000000002");
    let shards = vec![shard(a, &[], true), shard(c, &[], true), shard(m, &[a, c], false)];
    let w = Worker::new(b, "w1");
    let r = w.sync(&shards, 0).await;
    assert_eq!(r.created.len(), 3);
    assert_eq!(keys(&r.held), vec![a, c], "the merge child waits");
    assert!(matches!(w.table.take(m, "w1", 0, &ids(&shards)).await, Err(LeaseError::ParentsNotFinished { .. })));
    let held = r.held;
    w.table.checkpoint(a, "w1", held[0].lease_counter, ExtendedSequenceNumber::shard_end(), false).await.unwrap();
    let r = w.sync(&shards, 1).await;
    assert_eq!(keys(&r.held), vec![c], "one parent finished is not enough");
    w.table.checkpoint(c, "w1", r.held[0].lease_counter, ExtendedSequenceNumber::shard_end(), false).await.unwrap();
    let r = w.sync(&shards, 2).await;
    assert_eq!(keys(&r.held), vec![m]);
    assert_eq!(r.taken, vec![m]);
}

async fn steal_one_at_a_time(b: &Backend) {
    let shards = open_shards(4);
    let (w1, w2) = (Worker::new(b, "w1"), Worker::new(b, "w2"));
    assert_eq!(w1.sync(&shards, 0).await.held.len(), 4);
    let mut now = 1;
    let mut steals = 0;
    loop {
        // w1 keeps renewing, so nothing ever expires.
        w1.sync(&shards, now).await;
        let r = w2.sync(&shards, now).await;
        assert!(r.taken.is_empty(), "nothing is free: {r:?}");
        assert!(r.stolen.len() <= 1, "one steal per round: {r:?}");
        if r.stolen.is_empty() {
            break;
        }
        steals += 1;
        now += 1;
        assert!(steals <= 4, "stealing does not converge");
    }
    assert_eq!(steals, 2);
    let table = w1.table.list().await.unwrap();
    let owned = |w: &str| table.iter().filter(|s| s.lease.lease_owner.as_deref() == Some(w)).count();
    assert_eq!((owned("w1"), owned("w2")), (2, 2));
}

async fn expired_lease_taken_after_failover(b: &Backend) {
    let shards = open_shards(1);
    let (w1, w2) = (Worker::new(b, "w1"), Worker::new(b, "w2"));
    let held = w1.sync(&shards, 0).await.held;
    assert_eq!(held.len(), 1);
    // w2's broker first sees the lease at 1000 and counts from there.
    assert!(w2.sync(&shards, 1_000).await.held.is_empty());
    assert!(w2.sync(&shards, 1_000 + FAILOVER - 1).await.held.is_empty(), "not expired yet");
    let r = w2.sync(&shards, 1_000 + FAILOVER).await;
    assert_eq!(r.taken, vec![shards[0].id.clone()]);
    // The old owner's heartbeat now fails, and its next sync holds nothing.
    assert!(is_conflict(w1.table.renew(&shards[0].id, "w1", held[0].lease_counter).await));
    assert!(w1.sync(&shards, 2 * FAILOVER).await.held.is_empty());
    let l = w2.table.get(&shards[0].id).await.unwrap().unwrap().lease;
    assert_eq!((l.lease_owner.as_deref(), l.owner_switches_since_checkpoint), (Some("w2"), 2));
}

async fn release_and_delete(b: &Backend) {
    let shards = open_shards(1);
    let s = &shards[0].id;
    let (w1, w2) = (Worker::new(b, "w1"), Worker::new(b, "w2"));
    let held = w1.sync(&shards, 0).await.held;
    let l = w1.table.release(s, "w1", held[0].lease_counter).await.unwrap();
    assert_eq!(l.lease_owner, None);
    // Unowned: taken at once, no failover wait.
    assert_eq!(w2.sync(&shards, 1).await.taken, vec![s.clone()]);
    let counter = w2.table.get(s).await.unwrap().unwrap().lease.lease_counter;
    assert!(is_conflict(w2.table.delete(s, counter - 1).await));
    w2.table.delete(s, counter).await.unwrap();
    assert!(w2.table.get(s).await.unwrap().is_none());
    assert!(matches!(w2.table.delete(s, counter).await, Err(LeaseError::NotFound { .. })));
}
