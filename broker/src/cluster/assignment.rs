//! The shard assignment: one versioned document `cluster/assignment.json`, written only
//! by the coordinator, read by every broker.
//!
//! ```json
//! {"generation": 12, "coordinator_generation": 3,
//!  "shards": {"orders/shardId-000000000000": "broker-0", "orders/shardId-000000000001": "broker-1"}}
//! ```
//!
//! `generation` is bumped by every write. `coordinator_generation` is the coordinator
//! lease generation of the writer: a write is conditional on the ETag read *and* refused
//! when the document carries a later coordinator generation than the writer holds, so a
//! deposed coordinator cannot overwrite its successor's plan. (A new coordinator's first
//! write records its generation even when the plan is unchanged: from then on every
//! write of its predecessor is refused.)
//!
//! [`plan`] is pure: it decides who owns what from the current assignment and who is
//! alive, moving as few shards as balance needs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{BrokerId, ShardKey, layout};
use crate::tier::versioned::{VersionedDoc, VersionedObject};
use crate::tier::{Result, TierError, TierStore, UpdateVersion, Updated};

/// Relative load of shards (e.g. recent bytes in); a shard not listed weighs 1.
pub type ShardWeights = BTreeMap<ShardKey, u64>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub generation: u64,
    #[serde(default)]
    pub coordinator_generation: u64,
    #[serde(default)]
    pub shards: BTreeMap<ShardKey, BrokerId>,
}

impl VersionedDoc for Assignment {
    fn generation(&self) -> u64 {
        self.generation
    }
    fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }
}

impl Assignment {
    pub fn owner(&self, key: &ShardKey) -> Option<&BrokerId> {
        self.shards.get(key)
    }

    /// Number of shards per owner (owners with none are absent).
    pub fn shards_per_broker(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for owner in self.shards.values() {
            *counts.entry(owner.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// Shards present in both with a different owner.
    pub fn moved_since(&self, earlier: &Assignment) -> usize {
        self.shards.iter().filter(|(k, owner)| earlier.shards.get(*k).is_some_and(|o| o != *owner)).count()
    }
}

/// The assignment that should follow `current`, given the open shards of all streams,
/// the live brokers, and the `waiting` ones (not renewing lately but within the grace
/// period). Guarantees:
///
/// * every open shard has exactly one owner, among `live` (or, when none is live, among
///   `waiting`; when neither has a member, the assignment is empty); shards no longer
///   open leave it;
/// * a shard owned by a waiting broker stays where it is;
/// * counts per live broker differ by at most one, and reaching that moves as few shards
///   as possible: orphans (shards of dead or unknown brokers, new shards) are placed,
///   and only the excess of over-loaded brokers moves, to under-loaded ones. The brokers
///   that end with one shard more are those holding the most now (ties: lower id);
/// * weights never cost a move: counts come first, and weights only choose among the
///   count-minimal plans (the heaviest shards to move go to the lightest receivers; an
///   over-loaded broker gives up shards weighing as near its surplus over the mean load
///   as whole shards allow, one below the mean its lightest);
/// * deterministic: the same sets give the same result whatever the order of the
///   slices; ties are broken by ids and keys.
///
/// `generation` and `coordinator_generation` are copied from `current` (the write sets them).
pub fn plan(
    current: &Assignment,
    shards: &[ShardKey],
    live: &[BrokerId],
    waiting: &[BrokerId],
    weights: Option<&ShardWeights>,
) -> Assignment {
    let weight = |k: &ShardKey| weights.and_then(|w| w.get(k)).copied().unwrap_or(1);
    let live: BTreeSet<&str> = live.iter().map(String::as_str).collect();
    let waiting: BTreeSet<&str> = waiting.iter().map(String::as_str).filter(|b| !live.contains(b)).collect();
    let open: BTreeSet<&ShardKey> = shards.iter().collect();

    let mut next: BTreeMap<ShardKey, BrokerId> = BTreeMap::new();
    // Shards live brokers hold now, per broker.
    let mut held: BTreeMap<&str, Vec<&ShardKey>> = live.iter().map(|b| (*b, Vec::new())).collect();
    let mut orphans: Vec<&ShardKey> = Vec::new();
    for key in open {
        match current.shards.get(key).map(String::as_str) {
            Some(owner) if waiting.contains(owner) => {
                next.insert(key.clone(), owner.to_string());
            }
            Some(owner) if live.contains(owner) => held.get_mut(owner).expect("live").push(key),
            _ => orphans.push(key),
        }
    }

    if live.is_empty() {
        // Nobody to balance over: orphans go to the waiting brokers, fewest shards first.
        let mut load: BTreeMap<&str, (usize, u64)> = waiting.iter().map(|b| (*b, (0, 0))).collect();
        for (key, owner) in &next {
            let l = load.get_mut(owner.as_str()).expect("waiting owner");
            *l = (l.0 + 1, l.1 + weight(key));
        }
        sort_to_place(&mut orphans, &weight);
        for key in orphans {
            let Some((&to, _)) = load.iter().min_by_key(|(b, load)| (**load, **b)) else { break };
            let l = load.get_mut(to).expect("receiver");
            *l = (l.0 + 1, l.1 + weight(key));
            next.insert(key.clone(), to.to_string());
        }
        return Assignment {
            generation: current.generation,
            coordinator_generation: current.coordinator_generation,
            shards: next,
        };
    }

    // Targets: `total / live` each, one more for the `total % live` brokers holding the
    // most (so that the fewest must give shards up).
    let total = orphans.len() + held.values().map(Vec::len).sum::<usize>();
    let (base, extra) = (total / live.len(), total % live.len());
    let mut by_holding: Vec<&str> = live.iter().copied().collect();
    by_holding.sort_by(|a, b| held[b].len().cmp(&held[a].len()).then(a.cmp(b)));
    let target: BTreeMap<&str, usize> =
        by_holding.iter().enumerate().map(|(i, b)| (*b, base + usize::from(i < extra))).collect();

    let total_weight: u64 = held.values().flatten().chain(orphans.iter()).map(|k| weight(k)).sum();
    let mean_weight = total_weight as f64 / live.len() as f64;
    let mut to_place = orphans;
    for (broker, keys) in held.iter_mut() {
        let excess = keys.len().saturating_sub(target[broker]);
        if excess > 0 {
            let load: u64 = keys.iter().map(|k| weight(k)).sum();
            to_place.extend(give_up(keys, excess, load as f64 - mean_weight, &weight));
        }
    }
    let mut load: BTreeMap<&str, (u64, usize)> =
        held.iter().map(|(b, keys)| (*b, (keys.iter().map(|k| weight(k)).sum(), keys.len()))).collect();
    for (broker, keys) in &held {
        for key in keys {
            next.insert((*key).clone(), broker.to_string());
        }
    }
    sort_to_place(&mut to_place, &weight);
    for key in to_place {
        let (&to, _) = load
            .iter()
            .filter(|(b, (_, n))| *n < target[**b])
            .min_by_key(|(b, (w, n))| (*w, *n, **b))
            .expect("targets add up to the shards placed");
        let l = load.get_mut(to).expect("receiver");
        l.0 += weight(key);
        l.1 += 1;
        next.insert(key.clone(), to.to_string());
    }
    Assignment { generation: current.generation, coordinator_generation: current.coordinator_generation, shards: next }
}

/// [`plan`] for open and closed shards apart, each class balanced over the brokers on its
/// own: the open shards carry every write, so a broker holding only closed ones (after a
/// reshard, say) would leave the others all the work however even the total count looked.
pub fn plan_open_and_closed(
    current: &Assignment,
    shards: &[ShardKey],
    closed: &BTreeSet<ShardKey>,
    live: &[BrokerId],
    waiting: &[BrokerId],
    weights: Option<&ShardWeights>,
) -> Assignment {
    let (closed_keys, open_keys): (Vec<ShardKey>, Vec<ShardKey>) =
        shards.iter().cloned().partition(|k| closed.contains(k));
    let mut next = plan(current, &open_keys, live, waiting, weights);
    next.shards.extend(plan(current, &closed_keys, live, waiting, None).shards);
    next
}

/// The `count` shards a broker with too many gives up, taken out of `keys`: as near to its
/// `surplus` of weight over the mean as whole shards allow (heaviest first, each that still
/// fits), the rest of the count its lightest. A broker under the mean gives its lightest.
fn give_up<'k>(
    keys: &mut Vec<&'k ShardKey>,
    count: usize,
    surplus: f64,
    weight: &impl Fn(&ShardKey) -> u64,
) -> Vec<&'k ShardKey> {
    // Heaviest first (ties: higher key first).
    keys.sort_by(|a, b| weight(b).cmp(&weight(a)).then(b.cmp(a)));
    let mut left = surplus;
    let mut given = vec![false; keys.len()];
    let mut n = 0;
    for (i, key) in keys.iter().enumerate() {
        if n < count && (weight(key) as f64) <= left {
            given[i] = true;
            left -= weight(key) as f64;
            n += 1;
        }
    }
    for i in (0..keys.len()).rev() {
        if n == count {
            break;
        }
        if !given[i] {
            given[i] = true;
            n += 1;
        }
    }
    let mut out = Vec::with_capacity(count);
    let mut kept = Vec::with_capacity(keys.len() - count);
    for (key, g) in keys.drain(..).zip(given) {
        if g { out.push(key) } else { kept.push(key) }
    }
    *keys = kept;
    out
}

/// Heaviest first, then by key: heavy shards are placed while the choice is widest.
fn sort_to_place(keys: &mut [&ShardKey], weight: &impl Fn(&ShardKey) -> u64) {
    keys.sort_by(|a, b| weight(b).cmp(&weight(a)).then(a.cmp(b)));
}

/// Reads the assignment and writes it as the coordinator.
#[derive(Debug, Clone)]
pub struct AssignmentStore {
    obj: VersionedObject,
}

impl AssignmentStore {
    pub fn new(tier: &TierStore) -> Self {
        AssignmentStore {
            obj: VersionedObject::new(
                tier.store().clone(),
                tier.path(layout::assignment_key()),
                tier.options().retry.clone(),
            ),
        }
    }

    pub async fn load(&self) -> Result<Option<(Assignment, UpdateVersion)>> {
        self.obj.load().await
    }

    /// Replaces the shards by `next(current)` as the coordinator of `generation`,
    /// conditional on the ETag read (re-read and re-planned on conflict). Refused with
    /// `StaleEpoch` when the document was written by a later coordinator generation, and
    /// with `Rejected` when `still_holding()` turns false (the lease lapsed meanwhile).
    pub async fn write_as_coordinator(
        &self,
        generation: u64,
        still_holding: impl Fn() -> bool,
        mut next: impl FnMut(&Assignment) -> BTreeMap<ShardKey, BrokerId>,
    ) -> Result<Updated<Assignment, ()>> {
        self.obj
            .update(Assignment::default, |doc: &mut Assignment| {
                if doc.coordinator_generation > generation {
                    return Err(TierError::StaleEpoch {
                        what: "cluster assignment".into(),
                        current: doc.coordinator_generation,
                        attempted: generation,
                    });
                }
                if !still_holding() {
                    return Err(TierError::Rejected {
                        reason: format!("coordinator lease of generation {generation} lapsed"),
                    });
                }
                doc.shards = next(doc);
                doc.coordinator_generation = generation;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests;
