//! Unit and property tests of [`plan`] (pure, no I/O).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn key(i: usize) -> ShardKey {
    ShardKey::new(format!("s{}", i % 2), format!("shardId-{i:012}"))
}

fn keys(n: usize) -> Vec<ShardKey> {
    (0..n).map(key).collect()
}

fn ids(names: &[&str]) -> Vec<BrokerId> {
    names.iter().map(|s| s.to_string()).collect()
}

fn assigned(pairs: &[(usize, &str)]) -> Assignment {
    Assignment {
        generation: 7,
        coordinator_generation: 2,
        shards: pairs.iter().map(|(i, b)| (key(*i), b.to_string())).collect(),
    }
}

fn counts(a: &Assignment) -> BTreeMap<String, usize> {
    a.shards_per_broker().into_iter().map(|(b, n)| (b.to_string(), n)).collect()
}

#[test]
fn new_shards_spread_evenly_and_deterministically() {
    let a = plan(&Assignment::default(), &keys(6), &ids(&["c", "a", "b"]), &[], None);
    assert_eq!(counts(&a), BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]));
    let again =
        plan(&Assignment::default(), &keys(6).into_iter().rev().collect::<Vec<_>>(), &ids(&["b", "c", "a"]), &[], None);
    assert_eq!(a, again);
}

#[test]
fn a_joining_broker_takes_the_fewest_shards_needed() {
    let current = plan(&Assignment::default(), &keys(6), &ids(&["a", "b", "c"]), &[], None);
    let next = plan(&current, &keys(6), &ids(&["a", "b", "c", "d"]), &[], None);
    assert_eq!(next.moved_since(&current), 1, "6 over 4 is 2,2,1,1: one shard moves");
    assert_eq!(counts(&next)["d"], 1);
    // 8 shards over 4 from 3,3,2: two move, both to d, none between a, b, c.
    let current = assigned(&[(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "b"), (6, "c"), (7, "c")]);
    let next = plan(&current, &keys(8), &ids(&["a", "b", "c", "d"]), &[], None);
    assert_eq!(next.moved_since(&current), 2);
    assert_eq!(counts(&next), BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2), ("d".into(), 2)]));
}

#[test]
fn a_waiting_brokers_shards_stay_and_a_dead_brokers_move() {
    let current = assigned(&[(0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "c"), (5, "c")]);
    // c waits (grace period): nothing moves, and a, b stay balanced.
    let next = plan(&current, &keys(6), &ids(&["a", "b"]), &ids(&["c"]), None);
    assert_eq!(next.shards, current.shards);
    // A new shard while c waits goes to a live broker.
    let next = plan(&current, &keys(7), &ids(&["a", "b"]), &ids(&["c"]), None);
    assert!(["a", "b"].contains(&next.owner(&key(6)).unwrap().as_str()));
    assert_eq!(next.moved_since(&current), 0);
    // c is dead: its two shards go to a and b, one each.
    let next = plan(&current, &keys(6), &ids(&["a", "b"]), &[], None);
    assert_eq!(counts(&next), BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));
    assert_eq!(next.moved_since(&current), 2);
}

#[test]
fn closed_shards_leave_and_generations_are_kept() {
    let current = assigned(&[(0, "a"), (1, "a"), (2, "b")]);
    let next = plan(&current, &keys(2), &ids(&["a", "b"]), &[], None);
    assert_eq!(next.shards.len(), 2);
    assert!(next.owner(&key(2)).is_none());
    assert_eq!((next.generation, next.coordinator_generation), (7, 2));
    assert_eq!(counts(&next), BTreeMap::from([("a".into(), 1), ("b".into(), 1)]));
}

#[test]
fn with_nobody_live_orphans_go_to_waiting_brokers_and_with_nobody_at_all_nowhere() {
    let current = assigned(&[(0, "a"), (1, "gone")]);
    let next = plan(&current, &keys(3), &[], &ids(&["a", "b"]), None);
    assert_eq!(next.owner(&key(0)).unwrap(), "a");
    // Fewest shards first, ties by id: b gets one, then a (tied at one each) the other.
    assert_eq!(counts(&next), BTreeMap::from([("a".into(), 2), ("b".into(), 1)]));
    assert!(plan(&current, &keys(3), &[], &[], None).shards.is_empty());
}

#[test]
fn hot_shards_are_spread_without_costing_moves() {
    let mut weights = ShardWeights::new();
    weights.insert(key(0), 100);
    weights.insert(key(1), 100);
    let a = plan(&Assignment::default(), &keys(4), &ids(&["a", "b"]), &[], Some(&weights));
    assert_ne!(a.owner(&key(0)), a.owner(&key(1)), "the two hot shards land apart: {a:?}");
    assert_eq!(counts(&a), BTreeMap::from([("a".into(), 2), ("b".into(), 2)]));
    // Balanced by count already: weights move nothing.
    let lopsided = assigned(&[(0, "a"), (1, "a"), (2, "b"), (3, "b")]);
    assert_eq!(plan(&lopsided, &keys(4), &ids(&["a", "b"]), &[], Some(&weights)), lopsided);
}

#[test]
fn a_broker_giving_up_shards_gives_its_surplus_of_load_not_all_its_hot_shards() {
    // One broker held everything; two of six shards are hot. The newcomer must take three:
    // one hot and two idle leaves each with half the load (two hot ones would not).
    let mut weights = ShardWeights::new();
    weights.insert(key(0), 1000);
    weights.insert(key(1), 1000);
    let alone = assigned(&[(0, "a"), (1, "a"), (2, "a"), (3, "a"), (4, "a"), (5, "a")]);
    let next = plan(&alone, &keys(6), &ids(&["a", "b"]), &[], Some(&weights));
    assert_eq!(counts(&next), BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));
    assert_ne!(next.owner(&key(0)), next.owner(&key(1)), "the hot shards end apart: {next:?}");
    // A broker under the mean load gives up its lightest shards.
    let mut weights = ShardWeights::new();
    weights.insert(key(4), 5000);
    let lopsided = assigned(&[(0, "a"), (1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b")]);
    let next = plan(&lopsided, &keys(6), &ids(&["a", "b", "c"]), &[], Some(&weights));
    assert_eq!(next.owner(&key(4)).unwrap(), "b", "the hot shard stays: {next:?}");
    assert_eq!(counts(&next), BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]));
}

#[test]
fn shard_keys_serialise_as_stream_slash_shard() {
    let a = assigned(&[(1, "a")]);
    let v = serde_json::to_value(&a).unwrap();
    assert_eq!(v["shards"]["s1/shardId-000000000001"], "a");
    assert_eq!(serde_json::from_value::<Assignment>(v).unwrap(), a);
    assert!("nostream".parse::<ShardKey>().is_err());
}

const BROKERS: usize = 6;

fn broker(i: usize) -> BrokerId {
    format!("b{i}")
}

/// A random situation: open and closed shards with current owners (some unknown), the
/// live and waiting brokers, maybe weights.
#[derive(Debug, Clone)]
struct Case {
    current: Assignment,
    open: Vec<ShardKey>,
    live: Vec<BrokerId>,
    waiting: Vec<BrokerId>,
    weights: Option<ShardWeights>,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        0usize..30,
        0usize..4,
        prop::collection::vec(prop::option::of(0usize..BROKERS + 1), 34),
        prop::collection::vec(0u8..3, BROKERS),
        prop::option::of(prop::collection::vec(0u64..20, 34)),
    )
        .prop_map(|(n_open, n_closed, owners, roles, weights)| {
            let all = keys(n_open + n_closed);
            let current = Assignment {
                generation: 3,
                coordinator_generation: 1,
                // Broker index BROKERS is one no longer a member at all.
                shards: all.iter().zip(&owners).filter_map(|(k, o)| o.map(|o| (k.clone(), broker(o)))).collect(),
            };
            let live = (0..BROKERS).filter(|i| roles[*i] == 1).map(broker).collect();
            let waiting = (0..BROKERS).filter(|i| roles[*i] == 2).map(broker).collect();
            let weights = weights.map(|w| all.iter().cloned().zip(w).collect());
            Case { current, open: all[..n_open].to_vec(), live, waiting, weights }
        })
}

/// The fewest shards of live brokers that must move for counts within one: brute force
/// over which brokers end with one more.
fn fewest_moves_of_live_shards(held: &[usize], orphans: usize) -> usize {
    let total = orphans + held.iter().sum::<usize>();
    let (base, extra) = (total / held.len(), total % held.len());
    (0u32..1 << held.len())
        .filter(|mask| mask.count_ones() as usize == extra)
        .map(|mask| {
            held.iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(base + usize::from(mask & (1 << i) != 0)))
                .sum::<usize>()
        })
        .min()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plan_properties(case in cases()) {
        let Case { current, open, live, waiting, weights } = &case;
        let next = plan(current, open, live, waiting, weights.as_ref());
        let live_set: BTreeSet<&str> = live.iter().map(String::as_str).collect();
        let waiting_set: BTreeSet<&str> = waiting.iter().map(String::as_str).collect();
        let open_set: BTreeSet<&ShardKey> = open.iter().collect();

        // Exactly the open shards, each owned by a live or waiting broker.
        if live.is_empty() && waiting.is_empty() {
            prop_assert!(next.shards.is_empty());
            return Ok(());
        }
        prop_assert_eq!(next.shards.keys().collect::<BTreeSet<_>>(), open_set.clone());
        for owner in next.shards.values() {
            prop_assert!(live_set.contains(owner.as_str()) || waiting_set.contains(owner.as_str()));
        }
        for key in &open_set {
            let before = current.shards.get(*key).map(String::as_str);
            let after = next.shards[*key].as_str();
            // A waiting broker's shards stay; a waiting broker gets none while anyone is live.
            if before.is_some_and(|b| waiting_set.contains(b)) {
                prop_assert_eq!(Some(after), before);
            } else if !live.is_empty() {
                prop_assert!(live_set.contains(after), "{key} went to {after}, not live");
            }
        }
        prop_assert_eq!((next.generation, next.coordinator_generation), (3, 1));

        if !live.is_empty() {
            // Counts per live broker within one.
            let per = next.shards_per_broker();
            let live_counts: Vec<usize> = live.iter().map(|b| per.get(b.as_str()).copied().unwrap_or(0)).collect();
            prop_assert!(live_counts.iter().max().unwrap() - live_counts.iter().min().unwrap() <= 1, "{live_counts:?}");

            // Moves of live brokers' shards: the fewest possible, and only from brokers
            // that lose to brokers that gain.
            let held: Vec<usize> = live.iter()
                .map(|b| open.iter().filter(|k| current.shards.get(*k) == Some(b)).count())
                .collect();
            let orphans = open.iter()
                .filter(|k| current.shards.get(*k).is_none_or(|o| !live_set.contains(o.as_str()) && !waiting_set.contains(o.as_str())))
                .count();
            let moved = open.iter()
                .filter(|k| current.shards.get(*k).is_some_and(|o| live_set.contains(o.as_str()) && next.shards[*k] != *o))
                .count();
            prop_assert_eq!(moved, fewest_moves_of_live_shards(&held, orphans));
            for b in live {
                let lost = open.iter().any(|k| current.shards.get(k) == Some(b) && next.shards[k] != *b);
                let gained = open.iter().any(|k| next.shards[k] == *b && current.shards.get(k) != Some(b));
                prop_assert!(!(lost && gained), "{b} both gave and received shards");
            }
        }

        // Stable: planning again changes nothing.
        let again = plan(&next, open, live, waiting, weights.as_ref());
        prop_assert_eq!(&again, &next);

        // Deterministic whatever the order of the inputs.
        fn rev<T: Clone>(v: &[T]) -> Vec<T> {
            v.iter().rev().cloned().collect()
        }
        let shuffled = plan(current, &rev(open), &rev(live), &rev(waiting), weights.as_ref());
        prop_assert_eq!(&shuffled, &next);
    }
}

#[test]
fn open_shards_spread_over_every_broker_whatever_the_closed_ones() {
    // After a reshard 6 -> 8 on four brokers, with the parents (0..6) and the
    // intermediate shards of uniform scaling (6..17) closed: each broker gets two of the
    // eight open ones, not a share of 25 that leaves one broker none.
    let all = keys(25);
    let closed: BTreeSet<ShardKey> = all[..17].iter().cloned().collect();
    let current = plan(&Assignment::default(), &all[..17], &ids(&["a", "b", "c"]), &[], None);
    let next = plan_open_and_closed(&current, &all, &closed, &ids(&["a", "b", "c", "d"]), &[], None);
    let open_counts = |a: &Assignment| {
        let mut n: BTreeMap<String, usize> = BTreeMap::new();
        for (k, b) in &a.shards {
            if !closed.contains(k) {
                *n.entry(b.clone()).or_default() += 1;
            }
        }
        n
    };
    assert_eq!(
        open_counts(&next),
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2), ("d".into(), 2)])
    );
    let total: Vec<usize> = counts(&next).into_values().collect();
    assert!(total.iter().max().unwrap() - total.iter().min().unwrap() <= 2, "{total:?}");
    assert_eq!(next.shards.len(), 25, "closed shards keep an owner for their reads");
}
