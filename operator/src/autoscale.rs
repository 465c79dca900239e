//! The OnDemand autoscaler's decision, a pure function of what the brokers report: the
//! desired shard count is the write rate over (target utilisation x per-shard limit),
//! clamped to the bounds; growth is immediate (at most doubling per step, as
//! UpdateShardCount allows), a single hot shard is split, and shrinking waits until the
//! rate has stayed low for the stabilisation window (at most halving per step).

/// The write rate of one open shard, from two samples of the brokers' stats.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardLoad {
    pub shard_id: String,
    pub bytes_per_sec: f64,
    pub records_per_sec: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub min_shards: i32,
    pub max_shards: i32,
    /// 0 < target <= 1.
    pub target_utilization: f64,
    pub shard_write_bytes_per_sec: f64,
    pub shard_write_records_per_sec: f64,
    pub scale_down_stabilization_secs: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold,
    /// UpdateShardCount to this many open shards.
    Scale {
        to: i32,
    },
    /// SplitShard of this shard: it alone runs above its limit while the stream as a whole does not need more shards.
    SplitHot {
        shard_id: String,
    },
}

/// Utilisation of one shard against its limit (the larger of bytes and records).
fn utilization(load: &ShardLoad, p: &Policy) -> f64 {
    (load.bytes_per_sec / p.shard_write_bytes_per_sec).max(load.records_per_sec / p.shard_write_records_per_sec)
}

/// Shards needed to carry `loads` at the target utilisation, within the bounds.
pub fn desired_shards(loads: &[ShardLoad], p: &Policy) -> i32 {
    let bytes: f64 = loads.iter().map(|l| l.bytes_per_sec).sum();
    let records: f64 = loads.iter().map(|l| l.records_per_sec).sum();
    let per_shard = p.target_utilization.clamp(0.01, 1.0);
    let needed =
        (bytes / (per_shard * p.shard_write_bytes_per_sec)).max(records / (per_shard * p.shard_write_records_per_sec));
    (needed.ceil() as i64).clamp(p.min_shards as i64, p.max_shards as i64) as i32
}

/// What to do now. `low_since` is when the desired count first fell below the open count
/// (None if it has not); the second value is its next state.
pub fn decide(open: i32, loads: &[ShardLoad], p: &Policy, low_since: Option<i64>, now: i64) -> (Decision, Option<i64>) {
    let desired = desired_shards(loads, p);
    if desired > open {
        return (Decision::Scale { to: desired.min(open.saturating_mul(2)) }, None);
    }
    if open < p.max_shards
        && let Some(hot) = loads
            .iter()
            .filter(|l| utilization(l, p) > 1.0)
            .max_by(|a, b| utilization(a, p).total_cmp(&utilization(b, p)))
    {
        return (Decision::SplitHot { shard_id: hot.shard_id.clone() }, None);
    }
    if desired < open {
        let since = low_since.unwrap_or(now);
        if now - since >= p.scale_down_stabilization_secs {
            let floor = (open + 1) / 2;
            return (Decision::Scale { to: desired.max(floor) }, None);
        }
        return (Decision::Hold, Some(since));
    }
    (Decision::Hold, None)
}

/// Provisioned mode: the next UpdateShardCount target on the way from `open` to the
/// `wanted` spec.shards (one call may at most double or halve), or None when there.
pub fn provisioned_step(open: i32, wanted: i32) -> Option<i32> {
    (open > 0 && open != wanted).then(|| wanted.clamp((open + 1) / 2, open.saturating_mul(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn policy() -> Policy {
        Policy {
            min_shards: 2,
            max_shards: 16,
            target_utilization: 0.5,
            shard_write_bytes_per_sec: MIB,
            shard_write_records_per_sec: 1000.0,
            scale_down_stabilization_secs: 300,
        }
    }

    fn even(shards: usize, total_bytes: f64, total_records: f64) -> Vec<ShardLoad> {
        (0..shards)
            .map(|i| ShardLoad {
                shard_id: format!("shardId-{i:012}"),
                bytes_per_sec: total_bytes / shards as f64,
                records_per_sec: total_records / shards as f64,
            })
            .collect()
    }

    #[test]
    fn provisioned_steps_walk_to_spec_shards_doubling_or_halving_at_most() {
        let table = [
            (4, 4, None),
            (4, 6, Some(6)),
            (4, 20, Some(8)),
            (8, 20, Some(16)),
            (16, 20, Some(20)),
            (20, 3, Some(10)),
            (5, 1, Some(3)),
            (3, 1, Some(2)),
            (2, 1, Some(1)),
            (0, 4, None),
        ];
        for (open, wanted, step) in table {
            assert_eq!(provisioned_step(open, wanted), step, "{open} -> {wanted}");
        }
    }

    #[test]
    fn desired_is_rate_over_target_times_limit_clamped() {
        let p = policy();
        // (rate, records) -> desired
        let table = [
            (0.0, 0.0, 2),             // idle: the floor
            (MIB, 0.0, 2),             // 1 MiB/s at 50% of 1 MiB/s per shard: 2
            (3.0 * MIB, 0.0, 6),       // 6
            (0.1 * MIB, 4000.0, 8),    // records dominate: 4000 / 500
            (100.0 * MIB, 0.0, 16),    // capped at max
            (2.5 * MIB, 0.0, 5),       // 5 exactly
            (2.5 * MIB + 1.0, 0.0, 6), // just over: round up
        ];
        for (bytes, records, want) in table {
            assert_eq!(desired_shards(&even(4, bytes, records), &p), want, "bytes {bytes} records {records}");
        }
    }

    #[test]
    fn decisions() {
        let p = policy();
        struct Case {
            name: &'static str,
            open: i32,
            loads: Vec<ShardLoad>,
            low_since: Option<i64>,
            now: i64,
            want: Decision,
            want_low_since: Option<i64>,
        }
        let mut hot = even(4, 0.4 * MIB, 0.0);
        hot[2].bytes_per_sec = 1.5 * MIB;
        let cases = [
            Case {
                name: "grow at most double",
                open: 2,
                loads: even(2, 10.0 * MIB, 0.0),
                low_since: None,
                now: 0,
                want: Decision::Scale { to: 4 },
                want_low_since: None,
            },
            Case {
                name: "grow to desired",
                open: 4,
                loads: even(4, 2.5 * MIB, 0.0),
                low_since: None,
                now: 0,
                want: Decision::Scale { to: 5 },
                want_low_since: None,
            },
            Case {
                name: "steady",
                open: 4,
                loads: even(4, 2.0 * MIB, 0.0),
                low_since: Some(10),
                now: 20,
                want: Decision::Hold,
                want_low_since: None,
            },
            Case {
                name: "a hot shard splits",
                open: 4,
                loads: hot,
                low_since: None,
                now: 0,
                want: Decision::SplitHot { shard_id: "shardId-000000000002".into() },
                want_low_since: None,
            },
            Case {
                name: "low starts the window",
                open: 8,
                loads: even(8, 0.5 * MIB, 0.0),
                low_since: None,
                now: 1000,
                want: Decision::Hold,
                want_low_since: Some(1000),
            },
            Case {
                name: "low within the window holds",
                open: 8,
                loads: even(8, 0.5 * MIB, 0.0),
                low_since: Some(1000),
                now: 1299,
                want: Decision::Hold,
                want_low_since: Some(1000),
            },
            Case {
                name: "low past the window shrinks at most half",
                open: 8,
                loads: even(8, 0.5 * MIB, 0.0),
                low_since: Some(1000),
                now: 1300,
                want: Decision::Scale { to: 4 },
                want_low_since: None,
            },
            Case {
                name: "shrink to desired",
                open: 4,
                loads: even(4, 1.5 * MIB, 0.0),
                low_since: Some(0),
                now: 300,
                want: Decision::Scale { to: 3 },
                want_low_since: None,
            },
            Case {
                name: "never below min",
                open: 2,
                loads: even(2, 0.0, 0.0),
                low_since: Some(0),
                now: 10_000,
                want: Decision::Hold,
                want_low_since: None,
            },
        ];
        for c in cases {
            let (got, low) = decide(c.open, &c.loads, &p, c.low_since, c.now);
            assert_eq!(got, c.want, "{}", c.name);
            assert_eq!(low, c.want_low_since, "{}", c.name);
        }
    }
}
