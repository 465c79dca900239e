//! The KCL's lease rules as pure functions: which leases to create for a stream's shards,
//! which leases count as expired by this broker's observations, and which leases a worker
//! renews, takes and steals. No I/O; the caller reads the table, decides here and writes
//! each change conditionally.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use streamfabric_api::leases::{ExtendedSequenceNumber, LATEST, Lease, LeaseHashKeyRange};

/// A shard of the stream, as far as leases care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parents: Vec<String>,
    pub closed: bool,
    pub range: LeaseHashKeyRange,
}

/// The shards whose lease is missing and should be created: every shard without one,
/// except a closed shard whose children already have leases (its lease was deleted after
/// it was finished; recreating it would process it again).
pub fn leases_to_create(shards: &[ShardInfo], leases: &[Lease]) -> Vec<String> {
    let leased: BTreeSet<&str> = leases.iter().map(|l| l.lease_key.as_str()).collect();
    shards
        .iter()
        .filter(|s| !leased.contains(s.id.as_str()))
        .filter(|s| {
            let child_leased = shards.iter().any(|c| c.parents.contains(&s.id) && leased.contains(c.id.as_str()));
            !(s.closed && child_leased)
        })
        .map(|s| s.id.clone())
        .collect()
}

/// A new, unowned lease for `shard`. Shards with parents start at TRIM_HORIZON (their
/// parents' records come first); others at `initial` (TRIM_HORIZON or LATEST).
pub fn new_lease(stream: &str, shard: &ShardInfo, all: &[ShardInfo], initial: &ExtendedSequenceNumber) -> Lease {
    let checkpoint = if shard.parents.is_empty() { initial.clone() } else { ExtendedSequenceNumber::trim_horizon() };
    Lease {
        lease_key: shard.id.clone(),
        stream_name: stream.to_string(),
        lease_owner: None,
        lease_counter: 0,
        checkpoint,
        pending_checkpoint: None,
        owner_switches_since_checkpoint: 0,
        parent_shard_ids: shard.parents.clone(),
        child_shard_ids: all.iter().filter(|c| c.parents.contains(&shard.id)).map(|c| c.id.clone()).collect(),
        hash_key_range: shard.range.clone(),
    }
}

/// `TRIM_HORIZON` (default) or `LATEST` as a starting checkpoint.
pub fn initial_position(value: Option<&str>) -> Option<ExtendedSequenceNumber> {
    match value {
        None => Some(ExtendedSequenceNumber::trim_horizon()),
        Some(v) if v == LATEST || v == streamfabric_api::leases::TRIM_HORIZON => {
            Some(ExtendedSequenceNumber::sentinel(v))
        }
        Some(_) => None,
    }
}

/// Whether every parent of `lease` is finished: its lease is at SHARD_END, or it has no
/// lease and is no longer a shard of the stream (retention removed it).
pub fn parents_done(lease: &Lease, by_key: &BTreeMap<&str, &Lease>, stream_shards: &BTreeSet<String>) -> bool {
    lease.parent_shard_ids.iter().all(|p| match by_key.get(p.as_str()) {
        Some(parent) => parent.is_finished(),
        None => !stream_shards.contains(p),
    })
}

/// The parents that hold `lease` back, for error messages.
pub fn unfinished_parents<'a>(
    lease: &'a Lease,
    by_key: &BTreeMap<&str, &Lease>,
    stream_shards: &BTreeSet<String>,
) -> Vec<&'a str> {
    lease
        .parent_shard_ids
        .iter()
        .filter(|p| match by_key.get(p.as_str()) {
            Some(parent) => !parent.is_finished(),
            None => stream_shards.contains(*p),
        })
        .map(String::as_str)
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Observed {
    counter: u64,
    since_ms: u64,
}

/// What this broker has seen of an application's leases: each lease's counter and when it
/// was first seen at that value, on this broker's monotonic clock. A lease whose counter has
/// not moved for the failover time is expired; other brokers' clocks never matter.
#[derive(Debug, Default)]
pub struct Observations {
    seen: HashMap<String, Observed>,
}

impl Observations {
    /// Records the table as read at `now_ms` and returns the keys of the owned leases that
    /// are expired. A lease seen for the first time counts as renewed now.
    pub fn observe(&mut self, leases: &[Lease], now_ms: u64, failover_ms: u64) -> BTreeSet<String> {
        let mut expired = BTreeSet::new();
        let mut next = HashMap::with_capacity(leases.len());
        for lease in leases {
            let observed = match self.seen.get(&lease.lease_key) {
                Some(o) if o.counter == lease.lease_counter => *o,
                _ => Observed { counter: lease.lease_counter, since_ms: now_ms },
            };
            if lease.lease_owner.is_some() && now_ms.saturating_sub(observed.since_ms) >= failover_ms {
                expired.insert(lease.lease_key.clone());
            }
            next.insert(lease.lease_key.clone(), observed);
        }
        self.seen = next;
        expired
    }
}

/// What a worker does in one round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Leases it holds, to renew.
    pub renew: Vec<String>,
    /// Unowned or expired leases to take.
    pub take: Vec<String>,
    /// One lease of the most loaded worker, when nothing is free and this worker is below
    /// its fair share.
    pub steal: Option<String>,
}

/// The KCL's lease taking for `worker`.
///
/// Only workable leases count: not finished (SHARD_END) and with every parent finished.
/// The fair share is ceil(workable / workers), workers being the owners of unexpired
/// workable leases and this one. Below it, the worker takes unowned and expired leases up
/// to its share; when there are none, it steals one lease from the worker holding the most,
/// if that worker is above the share (or at it, while this worker needs more than one).
pub fn plan(worker: &str, leases: &[Lease], stream_shards: &BTreeSet<String>, expired: &BTreeSet<String>) -> Plan {
    let by_key: BTreeMap<&str, &Lease> = leases.iter().map(|l| (l.lease_key.as_str(), l)).collect();
    let workable: Vec<&Lease> =
        by_key.values().copied().filter(|l| !l.is_finished() && parents_done(l, &by_key, stream_shards)).collect();
    let renew: Vec<String> =
        workable.iter().filter(|l| l.lease_owner.as_deref() == Some(worker)).map(|l| l.lease_key.clone()).collect();
    let available: Vec<&Lease> = workable
        .iter()
        .copied()
        .filter(|l| match &l.lease_owner {
            None => true,
            Some(owner) => owner != worker && expired.contains(&l.lease_key),
        })
        .collect();
    let mut held: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    for l in &workable {
        if let Some(owner) = l.lease_owner.as_deref()
            && owner != worker
            && !expired.contains(&l.lease_key)
        {
            held.entry(owner).or_default().push(l);
        }
    }
    let mut plan = Plan { renew, ..Plan::default() };
    if workable.is_empty() {
        return plan;
    }
    let workers = held.len() + 1;
    let target = workable.len().div_ceil(workers);
    let need = target.saturating_sub(plan.renew.len());
    if need == 0 {
        return plan;
    }
    if !available.is_empty() {
        plan.take = available.iter().take(need).map(|l| l.lease_key.clone()).collect();
        return plan;
    }
    // Most loaded worker; ties go to the first name, so that the choice is stable.
    let Some((_, victim)) = held.iter().max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0))) else {
        return plan;
    };
    let over = victim.len().saturating_sub(target);
    if victim.len() >= target && (over > 0 || need > 1) {
        plan.steal = victim.first().map(|l| l.lease_key.clone());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            closed,
            range: LeaseHashKeyRange { starting_hash_key: "0".into(), ending_hash_key: "1".into() },
        }
    }

    fn lease(key: &str, owner: Option<&str>, parents: &[&str], finished: bool) -> Lease {
        let s = shard(key, parents, false);
        let mut l = new_lease("s", &s, &[], &ExtendedSequenceNumber::trim_horizon());
        l.lease_owner = owner.map(str::to_string);
        if finished {
            l.checkpoint = ExtendedSequenceNumber::shard_end();
        }
        l
    }

    fn keys(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn set(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn create_missing_leases_but_not_finished_parents_with_leased_children() {
        let shards = [shard("a", &[], true), shard("b", &["a"], false), shard("c", &[], false)];
        // nothing leased: everything
        assert_eq!(leases_to_create(&shards, &[]), keys(&["a", "b", "c"]));
        // a child leased, the closed parent gone from the table: not recreated
        assert_eq!(leases_to_create(&shards, &[lease("b", None, &["a"], false)]), keys(&["c"]));
        // an open shard whose lease is gone is recreated
        assert_eq!(
            leases_to_create(&shards, &[lease("a", None, &[], true), lease("b", None, &["a"], false)]),
            keys(&["c"])
        );
    }

    #[test]
    fn new_lease_records_parents_children_and_start() {
        let shards = [shard("a", &[], true), shard("b", &[], true), shard("m", &["a", "b"], false)];
        let latest = ExtendedSequenceNumber::sentinel(LATEST);
        let a = new_lease("s", &shards[0], &shards, &latest);
        assert_eq!(a.child_shard_ids, keys(&["m"]));
        assert_eq!(a.checkpoint.sequence_number, "LATEST");
        let m = new_lease("s", &shards[2], &shards, &latest);
        assert_eq!(m.parent_shard_ids, keys(&["a", "b"]));
        assert_eq!(m.checkpoint.sequence_number, "TRIM_HORIZON", "children always start at the horizon");
        assert_eq!((m.lease_counter, m.lease_owner.clone()), (0, None));
    }

    #[test]
    fn initial_positions() {
        assert_eq!(initial_position(None).unwrap().sequence_number, "TRIM_HORIZON");
        assert_eq!(initial_position(Some("LATEST")).unwrap().sequence_number, "LATEST");
        assert!(initial_position(Some("AT_TIMESTAMP")).is_none());
    }

    #[test]
    fn expiry_by_unmoved_counter_on_this_brokers_clock() {
        let mut obs = Observations::default();
        let mut l = lease("a", Some("w1"), &[], false);
        let unowned = lease("u", None, &[], false);
        // first sight counts as a renewal, however old the lease is
        assert!(obs.observe(&[l.clone(), unowned.clone()], 1_000_000, 10).is_empty());
        assert!(obs.observe(std::slice::from_ref(&l), 1_000_009, 10).is_empty());
        assert_eq!(obs.observe(std::slice::from_ref(&l), 1_000_010, 10), set(&["a"]));
        // the counter moves: fresh again from now
        l.lease_counter += 1;
        assert!(obs.observe(std::slice::from_ref(&l), 1_000_015, 10).is_empty());
        assert!(obs.observe(std::slice::from_ref(&l), 1_000_024, 10).is_empty());
        assert_eq!(obs.observe(std::slice::from_ref(&l), 1_000_025, 10), set(&["a"]));
        // unowned leases are never "expired" (they are free anyway)
        assert!(obs.observe(std::slice::from_ref(&unowned), 9_000_000, 10).is_empty());
        // a lease that left the table is forgotten: seeing it again starts over
        obs.observe(&[], 9_000_001, 10);
        assert!(obs.observe(std::slice::from_ref(&l), 9_000_002, 10).is_empty());
    }

    struct Case {
        name: &'static str,
        leases: Vec<Lease>,
        shards: &'static [&'static str],
        expired: &'static [&'static str],
        want: Plan,
    }

    fn p(renew: &[&str], take: &[&str], steal: Option<&str>) -> Plan {
        Plan { renew: keys(renew), take: keys(take), steal: steal.map(str::to_string) }
    }

    #[test]
    fn plan_table() {
        let all = &["a", "b", "c", "d", "e", "f"];
        let cases = vec![
            Case {
                name: "alone, everything unowned: take all",
                leases: vec![lease("a", None, &[], false), lease("b", None, &[], false)],
                shards: all,
                expired: &[],
                want: p(&[], &["a", "b"], None),
            },
            Case {
                name: "renew what it holds, take the free one up to the share",
                leases: vec![
                    lease("a", Some("me"), &[], false),
                    lease("b", Some("w2"), &[], false),
                    lease("c", None, &[], false),
                    lease("d", None, &[], false),
                ],
                shards: all,
                expired: &[],
                want: p(&["a"], &["c"], None),
            },
            Case {
                name: "expired leases are taken; their owner does not count as a worker",
                leases: vec![lease("a", Some("dead"), &[], false), lease("b", Some("dead"), &[], false)],
                shards: all,
                expired: &["a", "b"],
                want: p(&[], &["a", "b"], None),
            },
            Case {
                name: "no steal while a lease is expired",
                leases: vec![
                    lease("a", Some("w2"), &[], false),
                    lease("b", Some("w2"), &[], false),
                    lease("c", Some("w2"), &[], false),
                    lease("d", Some("dead"), &[], false),
                ],
                shards: all,
                expired: &["d"],
                want: p(&[], &["d"], None),
            },
            Case {
                name: "steal exactly one from the most loaded worker",
                leases: vec![
                    lease("a", Some("w2"), &[], false),
                    lease("b", Some("w3"), &[], false),
                    lease("c", Some("w3"), &[], false),
                    lease("d", Some("w3"), &[], false),
                    lease("e", Some("w2"), &[], false),
                    lease("f", Some("w3"), &[], false),
                ],
                shards: all,
                expired: &[],
                want: p(&[], &[], Some("b")),
            },
            Case {
                name: "at the share: nothing to do",
                leases: vec![
                    lease("a", Some("me"), &[], false),
                    lease("b", Some("w2"), &[], false),
                    lease("c", Some("w2"), &[], false),
                ],
                shards: all,
                expired: &[],
                want: p(&["a"], &[], None),
            },
            Case {
                name: "balanced (1,1 of 2 with a third worker): no steal",
                leases: vec![lease("a", Some("w2"), &[], false), lease("b", Some("w3"), &[], false)],
                shards: all,
                expired: &[],
                want: p(&[], &[], None),
            },
            Case {
                name: "victim at the share but this worker needs two: steal one",
                leases: vec![
                    lease("a", Some("w2"), &[], false),
                    lease("b", Some("w2"), &[], false),
                    lease("c", Some("w3"), &[], false),
                    lease("d", Some("w3"), &[], false),
                    lease("e", Some("w4"), &[], false),
                ],
                shards: all,
                expired: &[],
                want: p(&[], &[], Some("a")),
            },
            Case {
                name: "a child waits for its parent's SHARD_END",
                leases: vec![lease("a", Some("w2"), &[], false), lease("b", None, &["a"], false)],
                shards: all,
                expired: &[],
                want: p(&[], &[], None),
            },
            Case {
                name: "a merge child waits for both parents",
                leases: vec![
                    lease("a", None, &[], true),
                    lease("b", Some("w2"), &[], false),
                    lease("c", None, &["a", "b"], false),
                ],
                shards: all,
                expired: &[],
                want: p(&[], &[], None),
            },
            Case {
                name: "parents finished: the child is taken, finished parents are not",
                leases: vec![
                    lease("a", None, &[], true),
                    lease("b", None, &[], true),
                    lease("c", None, &["a", "b"], false),
                ],
                shards: all,
                expired: &[],
                want: p(&[], &["c"], None),
            },
            Case {
                name: "a parent without a lease still in the stream blocks; one gone from it does not",
                leases: vec![lease("c", None, &["a"], false), lease("z", None, &["gone"], false)],
                shards: &["a", "c", "z"],
                expired: &[],
                want: p(&[], &["z"], None),
            },
            Case {
                name: "finished leases it holds are neither renewed nor counted",
                leases: vec![lease("a", Some("me"), &[], true), lease("b", None, &[], false)],
                shards: all,
                expired: &[],
                want: p(&[], &["b"], None),
            },
        ];
        for c in cases {
            let shards: BTreeSet<String> = c.shards.iter().map(|s| s.to_string()).collect();
            let got = plan("me", &c.leases, &shards, &set(c.expired));
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn stealing_converges_one_lease_per_round() {
        // w2 holds 6 leases; "me" steals one per round until both hold 3.
        let mut leases: Vec<Lease> =
            ["a", "b", "c", "d", "e", "f"].iter().map(|k| lease(k, Some("w2"), &[], false)).collect();
        let shards: BTreeSet<String> = leases.iter().map(|l| l.lease_key.clone()).collect();
        let mut rounds = 0;
        loop {
            let plan = plan("me", &leases, &shards, &BTreeSet::new());
            assert!(plan.take.is_empty());
            let Some(stolen) = plan.steal else { break };
            leases.iter_mut().find(|l| l.lease_key == stolen).unwrap().lease_owner = Some("me".into());
            rounds += 1;
            assert!(rounds <= 6, "stealing did not converge");
        }
        assert_eq!(rounds, 3);
        let mine = leases.iter().filter(|l| l.lease_owner.as_deref() == Some("me")).count();
        assert_eq!(mine, 3);
    }
}
