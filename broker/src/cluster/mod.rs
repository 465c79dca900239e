//! The cluster's control plane: brokers sharing one object-store prefix form one
//! cluster, coordinated only through the store's conditional writes.
//!
//! ```text
//! <prefix>/members/<broker-id>.json      membership record, renewed every heartbeat (membership)
//! <prefix>/cluster/coordinator.json      coordinator lease (coordinator)
//! <prefix>/cluster/assignment.json       shard -> owner, written by the coordinator (assignment)
//! ```
//!
//! * [`membership`]: this broker's record and heartbeat, its own lease, and readers'
//!   judgement of others (live / waiting / dead by watching counters on a monotonic clock).
//! * [`coordinator`]: electing one coordinator by a conditional lease.
//! * [`assignment`]: the assignment document and the pure [`assignment::plan`].
//! * [`Cluster`]: ties them together for one broker.
//!
//! Nothing here forwards requests or hands shards over: it decides and publishes who
//! should own what; the broker acts on [`Cluster::assignments`].

pub mod assignment;
pub mod coordinator;
pub mod membership;
pub mod observe;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

pub use assignment::{Assignment, AssignmentStore, ShardWeights, plan, plan_open_and_closed};
pub use coordinator::{CoordinatorLease, Election};
pub use membership::{Liveness, MemberRecord, MemberStatus, MemberView, Membership};

use crate::tier::{Result, TierError, TierStore};

/// A broker's name in the cluster (`--broker-id`).
pub type BrokerId = String;

/// One shard of one stream; written `<stream>/<shardId>` in documents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardKey {
    pub stream: String,
    pub shard: String,
}

impl ShardKey {
    pub fn new(stream: impl Into<String>, shard: impl Into<String>) -> Self {
        ShardKey { stream: stream.into(), shard: shard.into() }
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.shard)
    }
}

impl std::str::FromStr for ShardKey {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // Stream names cannot contain '/' (tier::layout::check_name).
        match s.split_once('/') {
            Some((stream, shard)) if !stream.is_empty() && !shard.is_empty() => Ok(ShardKey::new(stream, shard)),
            _ => Err(format!("shard key {s:?} is not <stream>/<shardId>")),
        }
    }
}

impl Serialize for ShardKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ShardKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Timing of the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// How often a broker renews its record (and the coordinator its lease), and how often
    /// every broker reads members and the assignment (default 1 s).
    pub heartbeat_interval: Duration,
    /// A member whose counter has not been seen to change for this long is live no more
    /// but keeps its shards (default 3 s).
    pub suspect_after: Duration,
    /// A member (or coordinator) not seen renewing for this long is dead: its shards (or
    /// the lease) are taken (default 10 s, `--member-timeout`).
    pub member_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            heartbeat_interval: Duration::from_secs(1),
            suspect_after: Duration::from_secs(3),
            member_timeout: Duration::from_secs(10),
        }
    }
}

impl ClusterSettings {
    /// The intervals must nest: several heartbeats fit in `suspect_after`, which is at
    /// most `member_timeout`; otherwise healthy members would look waiting or dead.
    pub fn check(&self) -> Result<()> {
        let ClusterSettings { heartbeat_interval: beat, suspect_after, member_timeout } = self;
        if beat.is_zero() || *suspect_after < *beat * 2 || suspect_after > member_timeout {
            return Err(TierError::Rejected {
                reason: format!(
                    "cluster timing: need 0 < heartbeat interval ({beat:?}) <= suspect-after / 2 ({suspect_after:?} / 2) \
                     and suspect-after <= member timeout ({member_timeout:?})"
                ),
            });
        }
        Ok(())
    }
}

/// What the coordinator assigns: every shard of all streams, closed ones too (their owner
/// serves their reads), and optionally their load.
pub trait ShardSource: Send + Sync + 'static {
    fn shards(&self) -> Vec<ShardKey>;
    /// Those of `shards()` that are closed: they are balanced apart from the open ones.
    fn closed_shards(&self) -> BTreeSet<ShardKey> {
        BTreeSet::new()
    }
    /// The recent load of the shards this broker serves, as weights (an idle shard weighs
    /// 1, as an unlisted one does); reported in its membership record.
    fn served_load(&self) -> ShardWeights {
        ShardWeights::new()
    }
    /// Shards the coordinator assigns to itself whatever the plan says (the parents of a
    /// reshard it is about to apply: a shard closes at the broker serving it).
    fn pinned_to_coordinator(&self) -> Vec<ShardKey> {
        Vec::new()
    }
}

impl<F: Fn() -> Vec<ShardKey> + Send + Sync + 'static> ShardSource for F {
    fn shards(&self) -> Vec<ShardKey> {
        self()
    }
}

/// Key layout of the cluster's objects, relative to the store prefix.
pub mod layout {
    use crate::tier::Result;

    pub fn members_dir() -> &'static str {
        "members"
    }
    pub fn member_key(broker_id: &str) -> String {
        format!("members/{broker_id}.json")
    }
    pub fn coordinator_key() -> &'static str {
        "cluster/coordinator.json"
    }
    pub fn assignment_key() -> &'static str {
        "cluster/assignment.json"
    }
    /// Broker ids become key segments: the same alphabet as stream names.
    pub fn check_broker_id(id: &str) -> Result<()> {
        crate::tier::layout::check_name("broker id", id)
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One broker's membership in the cluster: its heartbeat, its part in the election, and
/// (while coordinator) the assignment it writes. Dropping it stops the tasks without
/// leaving (as a crash would); [`Cluster::leave`] leaves cleanly.
pub struct Cluster {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    broker_id: BrokerId,
    tier: TierStore,
    settings: ClusterSettings,
    membership: Arc<Membership>,
    election: Election,
    assignments: AssignmentStore,
    shards: Arc<dyn ShardSource>,
    assignment_tx: watch::Sender<Arc<Assignment>>,
    /// When this broker began watching members: it plans nothing before it has watched
    /// them for `suspect_after` (until then every member looks waiting).
    watching_since: Instant,
    members: Mutex<Members>,
    /// Wakes the control loop before its next tick (new shards to assign).
    nudged: tokio::sync::Notify,
}

struct Members {
    view: MemberView,
    latest: Vec<MemberStatus>,
}

impl Cluster {
    /// Joins (writes this broker's record) and spawns the heartbeat and the control loop.
    pub async fn start(
        tier: TierStore,
        broker_id: &str,
        advertise: &str,
        settings: ClusterSettings,
        shards: Arc<dyn ShardSource>,
    ) -> Result<Cluster> {
        settings.check()?;
        let membership = Arc::new(Membership::join(&tier, broker_id, advertise).await?);
        let election = Election::new(&tier, broker_id, settings.member_timeout)?;
        let assignments = AssignmentStore::new(&tier);
        let initial = assignments.load().await?.map(|(a, _)| a).unwrap_or_default();
        let (assignment_tx, _) = watch::channel(Arc::new(initial));
        let shared = Arc::new(Shared {
            members: Mutex::new(Members {
                view: MemberView::new(settings.suspect_after, settings.member_timeout),
                latest: Vec::new(),
            }),
            broker_id: broker_id.to_string(),
            tier,
            membership: membership.clone(),
            election,
            assignments,
            shards,
            assignment_tx,
            watching_since: Instant::now(),
            nudged: tokio::sync::Notify::new(),
            settings,
        });
        let heartbeat = membership.spawn_heartbeat(shared.settings.heartbeat_interval, shared.settings.member_timeout);
        let control = tokio::spawn(Shared::control_loop(shared.clone()));
        Ok(Cluster { shared, tasks: Mutex::new(vec![heartbeat, control]) })
    }

    pub fn broker_id(&self) -> &str {
        &self.shared.broker_id
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.shared.settings
    }

    /// The owner of a shard and its advertised address; None when the shard is not
    /// assigned, or its owner's record is gone (or not yet read: the first control round
    /// follows `start` by at most one heartbeat).
    pub fn owner_of(&self, stream: &str, shard: &str) -> Option<(BrokerId, String)> {
        let owner = self.shared.assignment_tx.borrow().owner(&ShardKey::new(stream, shard))?.clone();
        let members = self.shared.members.lock().unwrap();
        let address = members.latest.iter().find(|m| m.record.id == owner)?.record.address.clone();
        Some((owner, address))
    }

    /// The latest assignment, and every later one.
    pub fn assignments(&self) -> watch::Receiver<Arc<Assignment>> {
        self.shared.assignment_tx.subscribe()
    }

    /// Run a control round now (as coordinator: plan shards the catalog just gained).
    pub fn nudge(&self) {
        self.shared.nudged.notify_one();
    }

    pub fn is_coordinator(&self) -> bool {
        self.shared.election.is_coordinator()
    }

    /// False once this broker's own heartbeat has not succeeded for nearly
    /// `member_timeout`: it must not acknowledge writes then (peers may be taking its shards).
    pub fn lease_valid(&self) -> bool {
        self.shared.membership.lease_valid(self.shared.settings.member_timeout)
    }

    /// How many times this broker's lease ran out and was renewed again: whatever it owned
    /// before a lapse must be checked against the object store before it is served again.
    pub fn lease_lapses(&self) -> u64 {
        self.shared.membership.lapses()
    }

    /// The advertised address of a member as last read (None: not a member).
    pub fn address_of(&self, broker: &str) -> Option<String> {
        let members = self.shared.members.lock().unwrap();
        members.latest.iter().find(|m| m.record.id == broker).map(|m| m.record.address.clone())
    }

    /// How this broker last judged a member (None: no record, it left or never joined).
    pub fn liveness_of(&self, broker: &str) -> Option<Liveness> {
        self.shared.members.lock().unwrap().latest.iter().find(|m| m.record.id == broker).map(|m| m.liveness)
    }

    /// How long this broker has been reading the cluster's members: a broker with no record
    /// is known to be gone only once this exceeds the member timeout.
    pub fn watched_for(&self) -> Duration {
        self.shared.watching_since.elapsed()
    }

    /// The coordinator's id and address, as last read.
    pub fn coordinator(&self) -> Option<(BrokerId, String)> {
        let holder = self.shared.election.last_seen()?.holder?;
        let address = self.address_of(&holder)?;
        Some((holder, address))
    }

    /// Members as this broker last judged them.
    pub fn members(&self) -> Vec<MemberStatus> {
        self.shared.members.lock().unwrap().latest.clone()
    }

    /// The `/cluster` admin view: members with liveness, the coordinator, and the
    /// assignment's generation and shards per broker.
    pub fn admin_view(&self) -> serde_json::Value {
        let members: Vec<_> = self
            .members()
            .into_iter()
            .map(|m| {
                json!({
                    "id": m.record.id,
                    "address": m.record.address,
                    "liveness": m.liveness,
                    "heartbeat": m.record.heartbeat,
                    "heartbeat_ms": m.record.heartbeat_ms,
                    "started_ms": m.record.started_ms,
                    "unchanged_for_ms": m.unchanged_for.as_millis() as u64,
                    "load": m.record.load,
                })
            })
            .collect();
        let lease = self.shared.election.last_seen();
        let assignment = self.shared.assignment_tx.borrow().clone();
        json!({
            "broker_id": self.broker_id(),
            "lease_valid": self.lease_valid(),
            "members": members,
            "coordinator": {
                "holder": lease.as_ref().and_then(|l| l.holder.clone()),
                "generation": lease.as_ref().map(|l| l.generation),
                "this_broker": self.is_coordinator(),
            },
            "assignment": {
                "generation": assignment.generation,
                "coordinator_generation": assignment.coordinator_generation,
                "shards_per_broker": assignment.shards_per_broker(),
                "shards": assignment.shards,
            },
        })
    }

    /// Leaves cleanly: stops the tasks, frees the coordinator lease if held, deletes the
    /// membership record.
    pub async fn leave(&self) -> Result<()> {
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        let released = self.shared.election.release().await;
        self.shared.membership.leave().await?;
        released
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().unwrap().iter() {
            task.abort();
        }
    }
}

impl Shared {
    async fn control_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.nudged.notified() => {}
            }
            self.control_tick().await;
        }
    }

    /// One round for every broker: judge members, take part in the election, plan (as
    /// coordinator), and pick up the assignment. Failures are logged; the next round retries.
    async fn control_tick(&self) {
        self.membership.set_load(self.shards.served_load()).await;
        match membership::list(&self.tier).await {
            Ok(records) => {
                let now = Instant::now();
                let mut members = self.members.lock().unwrap();
                members.latest = members.view.observe(records, now);
            }
            Err(e) => tracing::warn!(broker = %self.broker_id, "reading cluster members failed: {e}"),
        }
        let floor = self.assignment_tx.borrow().coordinator_generation;
        if let Err(e) = self.election.tick(floor).await {
            tracing::warn!(broker = %self.broker_id, "coordinator election round failed: {e}");
        }
        if let Some(generation) = self.election.generation_held()
            && self.watching_since.elapsed() >= self.settings.suspect_after
            && let Err(e) = self.coordinate(generation).await
        {
            tracing::warn!(broker = %self.broker_id, generation, "writing the shard assignment failed: {e}");
        }
        match self.assignments.load().await {
            Ok(Some((assignment, _))) => self.publish(assignment),
            Ok(None) => {}
            Err(e) => tracing::warn!(broker = %self.broker_id, "reading the shard assignment failed: {e}"),
        }
    }

    /// As coordinator of `generation`: plan from live members and the shards; write when
    /// the plan (or the writer's generation) changed.
    async fn coordinate(&self, generation: u64) -> Result<()> {
        let (live, waiting, weights) = {
            let members = self.members.lock().unwrap();
            let ids = |want: Liveness| -> Vec<BrokerId> {
                members.latest.iter().filter(|m| m.liveness == want).map(|m| m.record.id.clone()).collect()
            };
            // Each shard's load as its owner reports it (a dead broker's reports are old).
            let weights: ShardWeights = members
                .latest
                .iter()
                .filter(|m| m.liveness != Liveness::Dead)
                .flat_map(|m| m.record.load.iter().map(|(k, w)| (k.clone(), *w)))
                .collect();
            (ids(Liveness::Live), ids(Liveness::Waiting), weights)
        };
        if live.is_empty() {
            // Not even this broker is seen renewing yet: nothing to place shards on.
            return Ok(());
        }
        let shards = self.shards.shards();
        let closed = self.shards.closed_shards();
        let pinned = self.shards.pinned_to_coordinator();
        let written = self
            .assignments
            .write_as_coordinator(
                generation,
                || self.election.generation_held() == Some(generation),
                |current| {
                    let mut next =
                        plan_open_and_closed(current, &shards, &closed, &live, &waiting, Some(&weights)).shards;
                    for key in pinned.iter().filter(|k| shards.contains(k)) {
                        next.insert(key.clone(), self.broker_id.clone());
                    }
                    next
                },
            )
            .await;
        match written {
            Ok(updated) => {
                if updated.written {
                    tracing::info!(
                        broker = %self.broker_id, generation = updated.doc.generation,
                        "wrote the shard assignment: {:?}", updated.doc.shards_per_broker()
                    );
                }
                self.publish(updated.doc);
                Ok(())
            }
            Err(TierError::StaleEpoch { current, .. }) => {
                tracing::warn!(broker = %self.broker_id, generation, "a coordinator of generation {current} wrote the assignment; stepping down");
                self.election.step_down();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn publish(&self, assignment: Assignment) {
        // Any difference, not only a higher generation: an assignment document deleted and
        // recreated starts its generation afresh.
        self.assignment_tx.send_if_modified(|current| {
            let changed = **current != assignment;
            if changed {
                *current = Arc::new(assignment);
            }
            changed
        });
    }
}
