//! Membership: each broker keeps its own record `members/<broker-id>.json` under the
//! store prefix and renews it every heartbeat; leaving cleanly deletes it.
//!
//! Only the broker named in a record writes it, so renewals are plain PUTs. Readers
//! judge liveness by watching the heartbeat counter change on their own monotonic
//! clock ([`MemberView`]); the wall-clock `heartbeat_ms` is for people reading the
//! record, never compared across machines.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::observe::ChangeClock;
use super::{BrokerId, ShardWeights, layout, unix_ms};
use crate::tier::{Result, TierError, TierStore};

/// One broker's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: BrokerId,
    /// `host:port` of its Kinesis API as peers reach it.
    pub address: String,
    /// Wall clock (ms since the epoch) when this process joined.
    pub started_ms: u64,
    /// Wall clock of the last renewal; informational only.
    pub heartbeat_ms: u64,
    /// Bumped by every renewal; what readers watch.
    pub heartbeat: u64,
    /// The recent load of the shards it serves (see `ShardSource::served_load`): the
    /// coordinator weighs shards by it when some must move.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub load: ShardWeights,
}

/// This broker's own membership: renews its record and knows whether its lease holds.
#[derive(Debug)]
pub struct Membership {
    store: Arc<dyn ObjectStore>,
    path: Path,
    record: tokio::sync::Mutex<MemberRecord>,
    /// When the last successful renewal was *issued*: a reader can only have seen that
    /// write after this instant, so our lease ends no later than theirs.
    last_success: Mutex<Option<Instant>>,
    /// Renewals that succeeded after the lease had run out (a pause, an outage): peers may
    /// have taken this broker's shards meanwhile, so what it owned must be checked again.
    lapses: AtomicU64,
    left: AtomicBool,
}

/// Part of `member_timeout` by which a broker's own lease ends before any reader can
/// judge it dead: covers the gap between checking the lease and acting on it.
const LEASE_SAFETY_FRACTION: u32 = 10;

fn lease_length(member_timeout: Duration) -> Duration {
    member_timeout.saturating_sub(member_timeout / LEASE_SAFETY_FRACTION)
}

impl Membership {
    /// Writes the first record. The counter continues from a record left by an earlier
    /// run of this broker, so it only grows.
    pub async fn join(tier: &TierStore, id: &str, address: &str) -> Result<Membership> {
        layout::check_broker_id(id)?;
        let store = tier.store().clone();
        let path = tier.path(&layout::member_key(id));
        let previous = read_record(&store, &path).await?.map_or(0, |r| r.heartbeat);
        let now_ms = unix_ms();
        let record = MemberRecord {
            id: id.to_string(),
            address: address.to_string(),
            started_ms: now_ms,
            heartbeat_ms: now_ms,
            heartbeat: previous,
            load: ShardWeights::new(),
        };
        let membership = Membership {
            store,
            path,
            record: tokio::sync::Mutex::new(record),
            last_success: Mutex::new(None),
            lapses: AtomicU64::new(0),
            left: AtomicBool::new(false),
        };
        membership.renew().await?;
        Ok(membership)
    }

    pub async fn record(&self) -> MemberRecord {
        self.record.lock().await.clone()
    }

    /// The load to report from the next renewal on.
    pub async fn set_load(&self, load: ShardWeights) {
        self.record.lock().await.load = load;
    }

    /// One heartbeat: bump the counter and write the record.
    pub async fn renew(&self) -> Result<()> {
        self.renew_within(None).await
    }

    /// `renew`, counting a lapse when the previous success is older than the lease of
    /// `member_timeout` (see `lease_valid`).
    async fn renew_within(&self, member_timeout: Option<Duration>) -> Result<()> {
        if self.left.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut record = self.record.lock().await;
        record.heartbeat += 1;
        record.heartbeat_ms = unix_ms();
        let body = serde_json::to_vec_pretty(&*record).expect("member records serialise");
        let issued = Instant::now();
        self.store.put(&self.path, PutPayload::from(body)).await.map_err(|e| TierError::store("put", &self.path, e))?;
        let mut last = self.last_success.lock().unwrap();
        if let (Some(previous), Some(timeout)) = (*last, member_timeout)
            && issued.saturating_duration_since(previous) >= lease_length(timeout)
        {
            self.lapses.fetch_add(1, Ordering::AcqRel);
        }
        *last = Some(last.map_or(issued, |t| t.max(issued)));
        Ok(())
    }

    /// Renews every `interval` until the task is aborted; failures are logged and the
    /// lease runs out on its own ([`Membership::lease_valid`]).
    pub fn spawn_heartbeat(self: &Arc<Self>, interval: Duration, member_timeout: Duration) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.renew_within(Some(member_timeout)).await {
                    tracing::warn!(path = %me.path, "membership heartbeat failed: {e}");
                }
            }
        })
    }

    /// True while the last successful renewal is younger than `member_timeout` less a
    /// safety margin (a tenth of it). A broker that was paused (SIGSTOP) or cut off from
    /// the store finds this false before any peer may judge it dead and take its shards,
    /// and must not acknowledge writes until a renewal succeeds again.
    pub fn lease_valid(&self, member_timeout: Duration) -> bool {
        self.last_success.lock().unwrap().is_some_and(|t| t.elapsed() < lease_length(member_timeout))
    }

    /// How many times the lease ran out and was renewed again (counted by the heartbeat task).
    pub fn lapses(&self) -> u64 {
        self.lapses.load(Ordering::Acquire)
    }

    /// Leaves cleanly: deletes the record (peers see the broker gone at their next read,
    /// without waiting for `member_timeout`). Stop the heartbeat task first.
    pub async fn leave(&self) -> Result<()> {
        self.left.store(true, Ordering::Release);
        *self.last_success.lock().unwrap() = None;
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(TierError::store("delete", &self.path, e)),
        }
    }
}

/// All member records under the prefix, sorted by id. A record that vanishes between
/// the listing and its read is skipped; so is one that does not parse (logged).
pub async fn list(tier: &TierStore) -> Result<Vec<MemberRecord>> {
    let dir = tier.path(layout::members_dir());
    let objects: Vec<_> =
        tier.store().list(Some(&dir)).try_collect().await.map_err(|e| TierError::store("list", &dir, e))?;
    let mut records = Vec::with_capacity(objects.len());
    for meta in objects {
        if meta.location.extension() != Some("json") {
            continue;
        }
        match read_record(tier.store(), &meta.location).await {
            Ok(Some(r)) => records.push(r),
            Ok(None) => {}
            Err(e @ TierError::Corrupt { .. }) => tracing::warn!("skipping member record: {e}"),
            Err(e) => return Err(e),
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(records)
}

async fn read_record(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Option<MemberRecord>> {
    let got = match store.get(path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(TierError::store("get", path, e)),
    };
    let bytes = match got.bytes().await {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(TierError::store("get", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| TierError::Corrupt { path: path.to_string(), reason: format!("invalid member record: {e}") })
}

/// A member as one reader judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Its counter changed within `suspect_after`: it gets shards.
    Live,
    /// Not seen renewing lately (or not yet seen renewing at all), but within
    /// `member_timeout`: it keeps its shards and gets no new ones (a restarted pod comes
    /// back with its disk).
    Waiting,
    /// No change seen for `member_timeout`: its shards are taken.
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub record: MemberRecord,
    pub liveness: Liveness,
    /// How long this reader has seen the counter stand still.
    pub unchanged_for: Duration,
}

/// One reader's table of "last counter seen, and when", per member.
#[derive(Debug, Clone)]
pub struct MemberView {
    clocks: HashMap<BrokerId, ChangeClock<u64>>,
    suspect_after: Duration,
    member_timeout: Duration,
}

impl MemberView {
    pub fn new(suspect_after: Duration, member_timeout: Duration) -> Self {
        MemberView { clocks: HashMap::new(), suspect_after: suspect_after.min(member_timeout), member_timeout }
    }

    /// Records a listing read at `now` and judges every member in it. Members whose record
    /// is gone (left cleanly) are forgotten.
    pub fn observe(&mut self, records: Vec<MemberRecord>, now: Instant) -> Vec<MemberStatus> {
        self.clocks.retain(|id, _| records.iter().any(|r| &r.id == id));
        records
            .into_iter()
            .map(|record| {
                let clock = self
                    .clocks
                    .entry(record.id.clone())
                    .and_modify(|c| c.observe(record.heartbeat, now))
                    .or_insert_with(|| ChangeClock::new(record.heartbeat, now));
                let unchanged_for = clock.unchanged_for(now);
                let seen_change = clock.seen_change();
                let liveness = judge(seen_change, unchanged_for, self.suspect_after, self.member_timeout);
                MemberStatus { record, liveness, unchanged_for }
            })
            .collect()
    }
}

fn judge(seen_change: bool, unchanged_for: Duration, suspect_after: Duration, member_timeout: Duration) -> Liveness {
    if unchanged_for >= member_timeout {
        Liveness::Dead
    } else if seen_change && unchanged_for < suspect_after {
        Liveness::Live
    } else {
        Liveness::Waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, heartbeat: u64) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            address: format!("{id}:4567"),
            started_ms: 0,
            heartbeat_ms: 0,
            heartbeat,
            load: ShardWeights::new(),
        }
    }

    fn judged(statuses: &[MemberStatus]) -> Vec<(&str, Liveness)> {
        statuses.iter().map(|s| (s.record.id.as_str(), s.liveness)).collect()
    }

    #[test]
    fn liveness_follows_observed_counter_changes_not_wall_clocks() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut view = MemberView::new(ms(300), ms(1000));
        // First sight: not yet seen renewing, so waiting (it may have died long ago).
        let s = view.observe(vec![rec("a", 7), rec("b", 3)], t0);
        assert_eq!(judged(&s), [("a", Liveness::Waiting), ("b", Liveness::Waiting)]);
        // a renews, b does not.
        let s = view.observe(vec![rec("a", 8), rec("b", 3)], t0 + ms(100));
        assert_eq!(judged(&s), [("a", Liveness::Live), ("b", Liveness::Waiting)]);
        // a stops: live until suspect_after, waiting until member_timeout, then dead.
        let s = view.observe(vec![rec("a", 8), rec("b", 3)], t0 + ms(399));
        assert_eq!(s[0].liveness, Liveness::Live);
        let s = view.observe(vec![rec("a", 8), rec("b", 3)], t0 + ms(400));
        assert_eq!(s[0].liveness, Liveness::Waiting);
        let s = view.observe(vec![rec("a", 8), rec("b", 3)], t0 + ms(1099));
        assert_eq!(judged(&s), [("a", Liveness::Waiting), ("b", Liveness::Dead)]);
        let s = view.observe(vec![rec("a", 8), rec("b", 3)], t0 + ms(1100));
        assert_eq!(s[0].liveness, Liveness::Dead);
        // a comes back (a restarted pod): live again at once.
        let s = view.observe(vec![rec("a", 9), rec("b", 3)], t0 + ms(5000));
        assert_eq!(s[0].liveness, Liveness::Live);
    }

    #[test]
    fn a_member_that_left_is_forgotten() {
        let t0 = Instant::now();
        let mut view = MemberView::new(Duration::from_millis(300), Duration::from_secs(1));
        view.observe(vec![rec("a", 1), rec("b", 1)], t0);
        view.observe(vec![rec("a", 2)], t0 + Duration::from_millis(50));
        // b rejoins later: first sight again, not judged by its old observation.
        let s = view.observe(vec![rec("a", 3), rec("b", 1)], t0 + Duration::from_secs(5));
        assert_eq!(judged(&s), [("a", Liveness::Live), ("b", Liveness::Waiting)]);
    }
}
