//! Storage tests of the control plane. Each is written once as `async fn name(t: TierStore)`
//! and run by `storage_tests!` against `memory://` (under a non-empty key prefix) and
//! `file://` (a temporary directory, through `LocalConditionalStore`).
//!
//! Time is real (file:// I/O would not advance paused time), with short intervals. Waits
//! have deadlines that fail loudly. Only lower bounds on timing are asserted — the ones
//! the design guarantees however slow the machine (e.g. a silent broker's shards never
//! move before `member_timeout` less one heartbeat); upper bounds are deadlines.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

use crate::tier::tests::{file, memory, storage_tests};

storage_tests!(
    membership_heartbeats_lists_and_leaves,
    membership_lease_runs_out_when_renewals_stop,
    election_race_on_a_fresh_store_has_one_winner,
    election_has_one_holder_and_a_successor_with_a_higher_generation,
    assignment_write_refuses_a_stale_coordinator,
    three_brokers_own_two_of_six_shards_each,
    a_silent_brokers_shards_wait_for_member_timeout_then_move,
    a_fourth_broker_takes_shards_with_fewest_moves,
    a_crashed_coordinator_is_succeeded_and_the_generation_continues,
    a_broker_leaving_cleanly_hands_back_its_shards_and_the_lease,
    the_load_a_broker_reports_weighs_its_shards_when_some_move,
);

const HEARTBEAT: Duration = Duration::from_millis(50);
const MEMBER_TIMEOUT: Duration = Duration::from_millis(500);

fn settings() -> ClusterSettings {
    ClusterSettings {
        heartbeat_interval: HEARTBEAT,
        suspect_after: Duration::from_millis(200),
        member_timeout: MEMBER_TIMEOUT,
    }
}

/// A deadline far beyond what the design needs, so that only a real failure trips it.
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 10 ms until it yields a value; panics naming `what` at the deadline.
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn six_shards() -> Arc<dyn ShardSource> {
    Arc::new(|| (0..6).map(|i| ShardKey::new("orders", format!("shardId-{i:012}"))).collect::<Vec<_>>())
}

async fn start(t: &TierStore, id: &str) -> Cluster {
    Cluster::start(t.clone(), id, &format!("{id}.brokers:4567"), settings(), six_shards()).await.unwrap()
}

fn counts(a: &Assignment) -> BTreeMap<String, usize> {
    a.shards_per_broker().into_iter().map(|(b, n)| (b.to_string(), n)).collect()
}

fn expect(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(b, n)| (b.to_string(), *n)).collect()
}

/// Waits until every cluster handle sees the same assignment with these counts; returns it.
async fn settled(clusters: &[&Cluster], want: BTreeMap<String, usize>) -> Assignment {
    wait_for(&format!("every broker to see shards per broker {want:?}"), || {
        let views: Vec<Assignment> = clusters.iter().map(|c| (*c.assignments().borrow()).as_ref().clone()).collect();
        let want = want.clone();
        async move { (counts(&views[0]) == want && views.iter().all(|v| *v == views[0])).then(|| views[0].clone()) }
    })
    .await
}

async fn three(t: &TierStore) -> (Vec<Cluster>, Assignment) {
    let clusters = vec![start(t, "b1").await, start(t, "b2").await, start(t, "b3").await];
    let stable = settled(&clusters.iter().collect::<Vec<_>>(), expect(&[("b1", 2), ("b2", 2), ("b3", 2)])).await;
    (clusters, stable)
}

async fn membership_heartbeats_lists_and_leaves(t: TierStore) {
    let a = Arc::new(Membership::join(&t, "a", "a.brokers:4567").await.unwrap());
    let b = Arc::new(Membership::join(&t, "b", "b.brokers:4567").await.unwrap());
    let _beats = [a.spawn_heartbeat(HEARTBEAT, MEMBER_TIMEOUT), b.spawn_heartbeat(HEARTBEAT, MEMBER_TIMEOUT)];
    let first = membership::list(&t).await.unwrap();
    assert_eq!(first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(first[0].address, "a.brokers:4567");
    let mut view = MemberView::new(Duration::from_millis(200), MEMBER_TIMEOUT);
    view.observe(first, Instant::now());
    wait_for("both members to be seen renewing", || {
        let t = t.clone();
        let mut v = view.clone();
        async move {
            let statuses = v.observe(membership::list(&t).await.unwrap(), Instant::now());
            statuses.iter().all(|s| s.liveness == Liveness::Live).then_some(())
        }
    })
    .await;
    // Counters only grow, also across a restart of the same broker id.
    let before = membership::list(&t).await.unwrap()[0].heartbeat;
    let again = Membership::join(&t, "a", "a2.brokers:4567").await.unwrap();
    assert!(again.record().await.heartbeat > before);
    again.leave().await.unwrap();
    a.leave().await.unwrap();
    let ids: Vec<String> = membership::list(&t).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["b"], "a left: its record is gone and its heartbeat does not bring it back");
    assert!(!a.lease_valid(MEMBER_TIMEOUT), "a broker that left holds no lease");
    assert!(Membership::join(&t, "bad/id", "x:1").await.is_err(), "ids become key segments");
    let slow = ClusterSettings { heartbeat_interval: MEMBER_TIMEOUT, ..settings() };
    assert!(
        Cluster::start(t.clone(), "c", "c:1", slow, six_shards()).await.is_err(),
        "heartbeat slower than suspect-after"
    );
}

async fn membership_lease_runs_out_when_renewals_stop(t: TierStore) {
    let m = Arc::new(Membership::join(&t, "paused", "p:1").await.unwrap());
    assert!(m.lease_valid(MEMBER_TIMEOUT));
    let beat = m.spawn_heartbeat(HEARTBEAT, MEMBER_TIMEOUT);
    tokio::time::sleep(HEARTBEAT * 3).await;
    assert!(m.lease_valid(MEMBER_TIMEOUT), "renewing: the lease holds");
    assert_eq!(m.lapses(), 0);
    // As a SIGSTOPped process: no renewal succeeds from now on.
    beat.abort();
    let _ = beat.await;
    let last = membership::list(&t).await.unwrap()[0].heartbeat;
    wait_for("the lease to run out", || async { (!m.lease_valid(MEMBER_TIMEOUT)).then_some(()) }).await;
    assert_eq!(membership::list(&t).await.unwrap()[0].heartbeat, last, "nothing renewed meanwhile");
    // A renewal that succeeds again restores it, and is counted as following a lapse.
    let _beat = m.spawn_heartbeat(HEARTBEAT, MEMBER_TIMEOUT);
    wait_for("the lease to hold again", || async { m.lease_valid(MEMBER_TIMEOUT).then_some(()) }).await;
    assert_eq!(m.lapses(), 1, "the renewal after the pause is a lapse");
}

async fn election_race_on_a_fresh_store_has_one_winner(t: TierStore) {
    let elections: Vec<Arc<Election>> =
        (0..8).map(|i| Arc::new(Election::new(&t, &format!("r{i}"), MEMBER_TIMEOUT).unwrap())).collect();
    for round in 0..3 {
        let ticks: Vec<_> = elections
            .iter()
            .map(|e| {
                let e = e.clone();
                tokio::spawn(async move { e.tick(0).await })
            })
            .collect();
        for tick in ticks {
            tick.await.unwrap().unwrap();
        }
        let holders: Vec<usize> = (0..elections.len()).filter(|i| elections[*i].is_coordinator()).collect();
        assert_eq!(holders.len(), 1, "round {round}: holders {holders:?}");
        assert_eq!(elections[holders[0]].generation_held(), Some(1), "renewals keep the generation");
    }
}

async fn election_has_one_holder_and_a_successor_with_a_higher_generation(t: TierStore) {
    const N: usize = 5;
    let elections: Vec<Arc<Election>> =
        (0..N).map(|i| Arc::new(Election::new(&t, &format!("e{i}"), MEMBER_TIMEOUT).unwrap())).collect();
    let mut tasks: Vec<_> = elections
        .iter()
        .map(|e| {
            let e = e.clone();
            tokio::spawn(async move {
                loop {
                    let _ = e.tick(0).await;
                    tokio::time::sleep(HEARTBEAT).await;
                }
            })
        })
        .collect();
    // A sampler checks, all along, that at most one believes it holds the lease and that
    // the held generation never goes down.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (elections, done) = (elections.clone(), done.clone());
        tokio::spawn(async move {
            let mut highest = 0;
            while !done.load(Ordering::Relaxed) {
                let held: Vec<u64> = elections.iter().filter_map(|e| e.generation_held()).collect();
                assert!(held.len() <= 1, "two coordinators at once: generations {held:?}");
                if let Some(&g) = held.first() {
                    assert!(g >= highest, "generation went down from {highest} to {g}");
                    highest = g;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            highest
        })
    };
    let holder = |elections: Vec<Arc<Election>>| async move {
        elections.iter().position(|e| e.is_coordinator()).map(|i| (i, elections[i].generation_held().unwrap()))
    };
    let (first, g1) = wait_for("a coordinator", || holder(elections.clone())).await;

    // The holder stops renewing (crash or pause): another takes over, not before the
    // lease could have run out.
    tasks[first].abort();
    let stopped = Instant::now();
    let (second, g2) = wait_for("a successor", || {
        let es = elections.clone();
        async move { holder(es).await.filter(|(i, _)| *i != first) }
    })
    .await;
    assert!(
        stopped.elapsed() >= MEMBER_TIMEOUT - HEARTBEAT,
        "taken over after {:?}, before the holder's lease could have run out",
        stopped.elapsed()
    );
    assert!(g2 > g1, "generation {g2} after {g1}");
    assert!(!elections[first].is_coordinator());

    // A clean release hands over at the next tick, with a higher generation still.
    tasks[second].abort();
    elections[second].release().await.unwrap();
    let (_, g3) = wait_for("a successor after a release", || {
        let es = elections.clone();
        async move { holder(es).await.filter(|(i, _)| *i != first && *i != second) }
    })
    .await;
    assert!(g3 > g2);
    done.store(true, Ordering::Relaxed);
    let highest = sampler.await.unwrap();
    assert!((g1..=g3).contains(&highest), "sampled generation {highest} outside {g1}..={g3}");
    for task in tasks.drain(..) {
        task.abort();
    }
}

async fn assignment_write_refuses_a_stale_coordinator(t: TierStore) {
    let store = AssignmentStore::new(&t);
    let key = ShardKey::new("s", "shardId-000000000000");
    let to = |owner: &'static str| {
        let key = key.clone();
        move |_: &Assignment| BTreeMap::from([(key.clone(), owner.to_string())])
    };
    let w = store.write_as_coordinator(1, || true, to("a")).await.unwrap();
    assert_eq!((w.doc.generation, w.doc.coordinator_generation), (1, 1));
    // A new coordinator's first write records its generation.
    let w = store.write_as_coordinator(2, || true, to("a")).await.unwrap();
    assert!(w.written, "the generation changed even though the plan did not");
    assert_eq!((w.doc.generation, w.doc.coordinator_generation), (2, 2));
    // From then on the old one is refused.
    match store.write_as_coordinator(1, || true, to("b")).await {
        Err(TierError::StaleEpoch { current: 2, attempted: 1, .. }) => {}
        other => panic!("stale coordinator not refused: {other:?}"),
    }
    // A coordinator whose lease lapsed writes nothing.
    assert!(matches!(store.write_as_coordinator(2, || false, to("b")).await, Err(TierError::Rejected { .. })));
    let (doc, _) = store.load().await.unwrap().unwrap();
    assert_eq!(doc.owner(&key).map(String::as_str), Some("a"));
    assert_eq!(doc.generation, 2);
}

async fn three_brokers_own_two_of_six_shards_each(t: TierStore) {
    let (clusters, stable) = three(&t).await;
    assert_eq!(clusters.iter().filter(|c| c.is_coordinator()).count(), 1);
    for c in &clusters {
        for (key, owner) in &stable.shards {
            let (id, address) = c.owner_of(&key.stream, &key.shard).expect("every shard has an owner");
            assert_eq!(&id, owner);
            assert_eq!(address, format!("{owner}.brokers:4567"));
        }
        assert!(c.owner_of("orders", "shardId-000000000099").is_none());
        assert!(c.lease_valid());
    }
    let view = clusters[0].admin_view();
    assert_eq!(view["broker_id"], "b1");
    assert_eq!(view["members"].as_array().unwrap().len(), 3);
    assert_eq!(view["members"][1]["address"], "b2.brokers:4567");
    assert_eq!(view["assignment"]["shards_per_broker"], serde_json::json!({"b1": 2, "b2": 2, "b3": 2}));
    assert_eq!(view["assignment"]["generation"], stable.generation);
    assert!(view["coordinator"]["holder"].as_str().is_some_and(|h| h.starts_with('b')));
    assert!(view["coordinator"]["generation"].as_u64().is_some_and(|g| g >= 1));
}

async fn a_silent_brokers_shards_wait_for_member_timeout_then_move(t: TierStore) {
    let (mut clusters, stable) = three(&t).await;
    let silent = clusters.iter().position(|c| !c.is_coordinator()).unwrap();
    let silent_id = clusters[silent].broker_id().to_string();
    drop(clusters.remove(silent)); // heartbeat and loop stop; the record stays, as after a crash
    let stopped = Instant::now();
    let rest: Vec<&Cluster> = clusters.iter().collect();
    let moved = wait_for(&format!("{silent_id}'s shards to move"), || {
        let a = (*rest[0].assignments().borrow()).as_ref().clone();
        let id = silent_id.clone();
        async move { (!a.shards.values().any(|o| *o == id)).then_some(a) }
    })
    .await;
    assert!(
        stopped.elapsed() >= MEMBER_TIMEOUT - HEARTBEAT,
        "{silent_id}'s shards moved after {:?}, within the grace period",
        stopped.elapsed()
    );
    assert_eq!(moved.moved_since(&stable), 2, "only the silent broker's two shards moved");
    let ids: Vec<&str> = rest.iter().map(|c| c.broker_id()).collect();
    settled(&rest, expect(&[(ids[0], 3), (ids[1], 3)])).await;
    // The coordinator moved the shards on its own observation; each other broker sees the
    // silent one dead by its own clock, within a heartbeat or so.
    wait_for(&format!("{silent_id} seen dead by {}", rest[0].broker_id()), || {
        let view = rest[0].admin_view();
        let members = view["members"].as_array().cloned().unwrap_or_default();
        let dead = members.iter().any(|m| m["id"] == silent_id.as_str() && m["liveness"] == "dead");
        async move { dead.then_some(()) }
    })
    .await;
}

async fn a_fourth_broker_takes_shards_with_fewest_moves(t: TierStore) {
    let (mut clusters, stable) = three(&t).await;
    clusters.push(start(&t, "b4").await);
    let all: Vec<&Cluster> = clusters.iter().collect();
    let after = wait_for("b4 to get shards", || {
        let a = (*all[0].assignments().borrow()).as_ref().clone();
        async move { counts(&a).contains_key("b4").then_some(a) }
    })
    .await;
    let per = counts(&after);
    assert_eq!(per["b4"], 1, "6 shards over 4 brokers: 2,2,1,1 {per:?}");
    assert_eq!(after.moved_since(&stable), 1, "one move suffices: {stable:?} -> {after:?}");
    assert_eq!(per.values().sum::<usize>(), 6);
    assert!(per.values().all(|n| (1..=2).contains(n)));
}

async fn a_crashed_coordinator_is_succeeded_and_the_generation_continues(t: TierStore) {
    let (mut clusters, stable) = three(&t).await;
    let coordinator = clusters.iter().position(|c| c.is_coordinator()).unwrap();
    let crashed_id = clusters[coordinator].broker_id().to_string();
    drop(clusters.remove(coordinator));
    let stopped = Instant::now();
    let rest: Vec<&Cluster> = clusters.iter().collect();
    wait_for("a new coordinator", || async { rest.iter().any(|c| c.is_coordinator()).then_some(()) }).await;
    assert!(stopped.elapsed() >= MEMBER_TIMEOUT - HEARTBEAT, "succeeded after {:?}", stopped.elapsed());
    let ids: Vec<&str> = rest.iter().map(|c| c.broker_id()).collect();
    let after = settled(&rest, expect(&[(ids[0], 3), (ids[1], 3)])).await;
    assert!(
        after.generation > stable.generation,
        "assignment generation {} after {}",
        after.generation,
        stable.generation
    );
    assert!(after.coordinator_generation > stable.coordinator_generation);
    assert!(!after.shards.values().any(|o| *o == crashed_id));
    assert_eq!(after.moved_since(&stable), 2);
}

async fn a_broker_leaving_cleanly_hands_back_its_shards_and_the_lease(t: TierStore) {
    let (mut clusters, stable) = three(&t).await;
    let coordinator = clusters.iter().position(|c| c.is_coordinator()).unwrap();
    let gone = clusters.remove(coordinator);
    let gone_id = gone.broker_id().to_string();
    gone.leave().await.unwrap();
    let rest: Vec<&Cluster> = clusters.iter().collect();
    let ids: Vec<&str> = rest.iter().map(|c| c.broker_id()).collect();
    let after = settled(&rest, expect(&[(ids[0], 3), (ids[1], 3)])).await;
    assert!(after.coordinator_generation > stable.coordinator_generation);
    assert!(!membership::list(&t).await.unwrap().iter().any(|r| r.id == gone_id));
    assert_eq!(rest.iter().filter(|c| c.is_coordinator()).count(), 1);
}

/// Six shards, two of them hot as the broker serving them reports.
struct HotShards;

impl ShardSource for HotShards {
    fn shards(&self) -> Vec<ShardKey> {
        (0..6).map(|i| ShardKey::new("orders", format!("shardId-{i:012}"))).collect()
    }
    fn served_load(&self) -> ShardWeights {
        (0..2).map(|i| (ShardKey::new("orders", format!("shardId-{i:012}")), 1000)).collect()
    }
}

async fn the_load_a_broker_reports_weighs_its_shards_when_some_move(t: TierStore) {
    let b1 = Cluster::start(t.clone(), "b1", "b1.brokers:4567", settings(), Arc::new(HotShards)).await.unwrap();
    settled(&[&b1], expect(&[("b1", 6)])).await;
    wait_for("b1 to report its load", || {
        let t = t.clone();
        async move {
            let records = membership::list(&t).await.unwrap();
            records.iter().any(|r| r.id == "b1" && r.load.len() == 2).then_some(())
        }
    })
    .await;
    let b2 = start(&t, "b2").await;
    let after = settled(&[&b1, &b2], expect(&[("b1", 3), ("b2", 3)])).await;
    let owner = |i: usize| after.owner(&ShardKey::new("orders", format!("shardId-{i:012}"))).cloned();
    // By count alone b1 would give up its three highest keys and keep both hot shards.
    assert_ne!(owner(0), owner(1), "one hot shard each: {after:?}");
}
