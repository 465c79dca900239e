//! Resharding as pure changes to a stream description: SplitShard, MergeShards, and
//! UpdateShardCount as the sequence of splits and merges that reaches uniform ranges.
//!
//! Every child has at most two parents (ParentShardId, AdjacentParentShardId), as in
//! Kinesis, so a uniform rescale goes through intermediate shards that are closed as
//! soon as they are created (they never hold records). Applying the same changes to the
//! same description always yields the same shard indexes, so a plan can be simulated,
//! persisted, and replayed.

use super::meta::{ClosedShard, ShardMeta, StreamMeta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use streamfabric_api::ApiError;
use streamfabric_api::hashkey::HashRange;
use streamfabric_api::names::shard_id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Close `shard`; children cover [start, at - 1] and [at, end].
    Split {
        shard: u64,
        #[serde(with = "u128_as_string")]
        at: u128,
    },
    /// Close `shard` and `adjacent`; one child covers both ranges.
    Merge { shard: u64, adjacent: u64 },
}

fn open_shard(meta: &StreamMeta, index: u64) -> Result<&ShardMeta, ApiError> {
    let shard = meta.shards.iter().find(|s| s.index == index).ok_or_else(|| {
        ApiError::not_found(format!("Shard {} in stream {} does not exist.", shard_id(index), meta.name))
    })?;
    if shard.closed.is_some() {
        return Err(ApiError::invalid(format!(
            "Shard {} in stream {} is closed: only open shards can be resharded.",
            shard_id(index),
            meta.name
        )));
    }
    Ok(shard)
}

/// Checks that `change` can be applied to `meta` as it is.
pub fn validate(meta: &StreamMeta, change: Change) -> Result<(), ApiError> {
    match change {
        Change::Split { shard, at } => {
            let range = open_shard(meta, shard)?.range;
            if at <= range.start || at > range.end {
                return Err(ApiError::invalid(format!(
                    "NewStartingHashKey {at} is not inside shard {}: it must be greater than its StartingHashKey {} \
                     and at most its EndingHashKey {}.",
                    shard_id(shard),
                    range.start,
                    range.end
                )));
            }
        }
        Change::Merge { shard, adjacent } => {
            let (a, b) = (open_shard(meta, shard)?.range, open_shard(meta, adjacent)?.range);
            let touching = a.end.checked_add(1) == Some(b.start) || b.end.checked_add(1) == Some(a.start);
            if shard == adjacent || !touching {
                return Err(ApiError::invalid(format!(
                    "Shards {} and {} in stream {} are not adjacent: their hash key ranges must touch.",
                    shard_id(shard),
                    shard_id(adjacent),
                    meta.name
                )));
            }
        }
    }
    Ok(())
}

/// Applies `changes` in order. A shard open before the first change is closed at the offset
/// `end_offset` gives for it; a shard created and closed within `changes` at offset 0. Returns
/// the indexes of the shards created, in order.
pub fn apply(
    meta: &mut StreamMeta,
    changes: &[Change],
    end_offset: impl Fn(u64) -> u64,
    now_ms: i64,
) -> Result<Vec<u64>, ApiError> {
    let mut created = Vec::new();
    for &change in changes {
        validate(meta, change)?;
        let mut next_index = meta.shards.iter().map(|s| s.index + 1).max().unwrap_or(0);
        let close = |meta: &mut StreamMeta, index: u64| {
            let end = if created.contains(&index) { 0 } else { end_offset(index) };
            let shard = meta.shards.iter_mut().find(|s| s.index == index).expect("validated");
            shard.closed = Some(ClosedShard { at_ms: now_ms, end_offset: end });
            shard.range
        };
        let mut child = |parent: u64, adjacent_parent: Option<u64>, range: HashRange| {
            let index = next_index;
            next_index += 1;
            ShardMeta { index, parent: Some(parent), adjacent_parent, range, created_ms: now_ms, closed: None }
        };
        let children = match change {
            Change::Split { shard, at } => {
                let range = close(meta, shard);
                vec![
                    child(shard, None, HashRange { start: range.start, end: at - 1 }),
                    child(shard, None, HashRange { start: at, end: range.end }),
                ]
            }
            Change::Merge { shard, adjacent } => {
                let (a, b) = (close(meta, shard), close(meta, adjacent));
                let range = HashRange { start: a.start.min(b.start), end: a.end.max(b.end) };
                vec![child(shard, Some(adjacent), range)]
            }
        };
        created.extend(children.iter().map(|c| c.index));
        meta.shards.extend(children);
    }
    Ok(created)
}

/// The splits and merges that turn the open shards into `target` shards of uniform ranges
/// (UpdateShardCount with UNIFORM_SCALING): first split wherever a target boundary falls
/// inside an open shard, then merge, left to right, the shards inside each target range.
pub fn uniform_plan(meta: &StreamMeta, target: u32) -> Vec<Change> {
    let mut sim = meta.clone();
    let mut changes = Vec::new();
    let mut step = |sim: &mut StreamMeta, change: Change| {
        apply(sim, &[change], |_| 0, 0).expect("planned changes are valid");
        changes.push(change);
    };
    let targets = HashRange::uniform(target);
    for boundary in targets.iter().skip(1).map(|t| t.start) {
        let inside =
            sim.shards.iter().find(|s| s.closed.is_none() && s.range.start < boundary && boundary <= s.range.end);
        if let Some(s) = inside {
            let change = Change::Split { shard: s.index, at: boundary };
            step(&mut sim, change);
        }
    }
    for t in &targets {
        loop {
            let mut within: Vec<&ShardMeta> = sim
                .shards
                .iter()
                .filter(|s| s.closed.is_none() && t.start <= s.range.start && s.range.end <= t.end)
                .collect();
            if within.len() < 2 {
                break;
            }
            within.sort_by_key(|s| s.range.start);
            let change = Change::Merge { shard: within[0].index, adjacent: within[1].index };
            step(&mut sim, change);
        }
    }
    changes
}

/// Which shards open now `changes` would close: their logs must stop taking records.
pub fn closes_open(meta: &StreamMeta, changes: &[Change]) -> Vec<u64> {
    let open: Vec<u64> = meta.shards.iter().filter(|s| s.closed.is_none()).map(|s| s.index).collect();
    let mut closed = BTreeSet::new();
    for change in changes {
        match *change {
            Change::Split { shard, .. } => closed.insert(shard),
            Change::Merge { shard, adjacent } => closed.insert(shard) | closed.insert(adjacent),
        };
    }
    closed.into_iter().filter(|i| open.contains(i)).collect()
}

mod u128_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::meta::{StreamMode, StreamStatus};
    use proptest::prelude::*;

    fn stream(n: u32) -> StreamMeta {
        StreamMeta {
            name: "s".into(),
            incarnation: 1,
            created_ms: 0,
            status: StreamStatus::Active,
            mode: StreamMode::Provisioned,
            retention_hours: 24,
            tags: Default::default(),
            pending_reshard: Vec::new(),
            consumers: Vec::new(),
            shard_level_metrics: Default::default(),
            kms_key_id: None,
            max_record_size_kib: None,
            warm_throughput_mibps: None,
            resource_policy: None,
            shards: HashRange::uniform(n)
                .into_iter()
                .enumerate()
                .map(|(i, range)| ShardMeta {
                    index: i as u64,
                    parent: None,
                    adjacent_parent: None,
                    range,
                    created_ms: 0,
                    closed: None,
                })
                .collect(),
        }
    }

    fn open_ranges(meta: &StreamMeta) -> Vec<HashRange> {
        let mut open: Vec<HashRange> = meta.shards.iter().filter(|s| s.closed.is_none()).map(|s| s.range).collect();
        open.sort_by_key(|r| r.start);
        open
    }

    #[test]
    fn split_closes_the_parent_at_its_end_and_tiles_its_range() {
        let mut meta = stream(1);
        let created = apply(&mut meta, &[Change::Split { shard: 0, at: 1 << 127 }], |_| 42, 7).unwrap();
        assert_eq!(created, vec![1, 2]);
        assert_eq!(meta.shards[0].closed, Some(ClosedShard { at_ms: 7, end_offset: 42 }));
        assert_eq!(meta.shards[1].range, HashRange { start: 0, end: (1 << 127) - 1 });
        assert_eq!(meta.shards[2].range, HashRange { start: 1 << 127, end: u128::MAX });
        assert!(meta.shards[1..].iter().all(|s| s.parent == Some(0) && s.adjacent_parent.is_none()));
    }

    #[test]
    fn merge_records_both_parents() {
        let mut meta = stream(3);
        let created = apply(&mut meta, &[Change::Merge { shard: 2, adjacent: 1 }], |i| i * 10, 5).unwrap();
        assert_eq!(created, vec![3]);
        let child = &meta.shards[3];
        assert_eq!((child.parent, child.adjacent_parent), (Some(2), Some(1)));
        assert_eq!(child.range, HashRange { start: meta.shards[1].range.start, end: u128::MAX });
        assert_eq!(meta.shards[1].closed.unwrap().end_offset, 10);
        assert_eq!(meta.shards[2].closed.unwrap().end_offset, 20);
    }

    #[test]
    fn invalid_changes_are_refused_and_name_the_problem() {
        let meta = stream(3);
        let start = meta.shards[1].range.start;
        let e = validate(&meta, Change::Split { shard: 1, at: start }).unwrap_err();
        assert!(e.message.contains("NewStartingHashKey"), "{}", e.message);
        let e = validate(&meta, Change::Merge { shard: 0, adjacent: 2 }).unwrap_err();
        assert!(e.message.contains("not adjacent"), "{}", e.message);
        let e = validate(&meta, Change::Merge { shard: 1, adjacent: 1 }).unwrap_err();
        assert!(e.message.contains("not adjacent"), "{}", e.message);
        let e = validate(&meta, Change::Split { shard: 9, at: 1 }).unwrap_err();
        assert_eq!(e.code, streamfabric_api::ErrorCode::ResourceNotFound);
        let mut closed = meta.clone();
        apply(&mut closed, &[Change::Split { shard: 0, at: 5 }], |_| 0, 0).unwrap();
        let e = validate(&closed, Change::Split { shard: 0, at: 6 }).unwrap_err();
        assert!(e.message.contains("closed"), "{}", e.message);
    }

    #[test]
    fn a_change_serializes_with_the_key_as_a_decimal_string() {
        let change = Change::Split { shard: 3, at: u128::MAX };
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(json, format!(r#"{{"kind":"split","shard":3,"at":"{}"}}"#, u128::MAX));
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change);
    }

    proptest! {
        /// From any uniform count to any count within [n/2, 2n]: the open shards end up exactly
        /// the uniform ranges, every child has at most two parents, and pre-existing shards get
        /// their end offsets while intermediates end at 0.
        #[test]
        fn uniform_plan_reaches_uniform_ranges(n in 1u32..40, factor in 0.5f64..2.0) {
            let target = ((n as f64 * factor).round() as u32).max(1);
            let mut meta = stream(n);
            let plan = uniform_plan(&meta, target);
            let before = meta.shards.len() as u64;
            apply(&mut meta, &plan, |i| 1000 + i, 1).unwrap();
            prop_assert_eq!(open_ranges(&meta), HashRange::uniform(target));
            for s in &meta.shards {
                if let Some(c) = s.closed {
                    let expected = if s.index < before { 1000 + s.index } else { 0 };
                    prop_assert_eq!(c.end_offset, expected);
                }
            }
            if target == n {
                prop_assert!(plan.is_empty());
            }
        }

        /// Random splits then a rescale: still uniform in the end.
        #[test]
        fn uniform_plan_from_uneven_shards(splits in proptest::collection::vec(any::<u128>(), 0..6), target in 1u32..12) {
            let mut meta = stream(2);
            for key in splits {
                let shard = meta.shards.iter().find(|s| s.closed.is_none() && s.range.start < key && key <= s.range.end);
                if let Some(s) = shard {
                    let change = Change::Split { shard: s.index, at: key };
                    apply(&mut meta, &[change], |_| 0, 0).unwrap();
                }
            }
            let plan = uniform_plan(&meta, target);
            apply(&mut meta, &plan, |_| 0, 0).unwrap();
            prop_assert_eq!(open_ranges(&meta), HashRange::uniform(target));
        }
    }
}
