//! Write rates from two samples of the brokers' cumulative counters (pure).

use crate::autoscale::ShardLoad;
use std::collections::BTreeMap;
use streamfabric_api::stats::BrokerStats;

/// Cumulative (bytes, records) written per open shard of one stream, at a time in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at_secs: f64,
    pub shards: BTreeMap<String, (u64, u64)>,
}

impl Sample {
    /// The open shards of `stream` in a `/stats` document; None if the brokers lack it.
    pub fn of(stats: &BrokerStats, stream: &str, at_secs: f64) -> Option<Sample> {
        let s = stats.streams.iter().find(|s| s.name == stream)?;
        let shards = s
            .shards
            .iter()
            .filter(|sh| sh.open)
            .map(|sh| (sh.shard_id.clone(), (sh.incoming_bytes, sh.incoming_records)))
            .collect();
        Some(Sample { at_secs, shards })
    }
}

/// Per-shard write rates between two samples. A counter that went backwards (a broker
/// restarted) counts as a fresh start from zero; a shard new in `next` counts from zero.
pub fn loads(prev: &Sample, next: &Sample) -> Option<Vec<ShardLoad>> {
    let dt = next.at_secs - prev.at_secs;
    if dt <= 0.0 {
        return None;
    }
    Some(
        next.shards
            .iter()
            .map(|(id, &(bytes, records))| {
                let (b0, r0) =
                    prev.shards.get(id).copied().filter(|&(b0, r0)| b0 <= bytes && r0 <= records).unwrap_or((0, 0));
                ShardLoad {
                    shard_id: id.clone(),
                    bytes_per_sec: (bytes - b0) as f64 / dt,
                    records_per_sec: (records - r0) as f64 / dt,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, shards: &[(&str, u64, u64)]) -> Sample {
        Sample { at_secs: at, shards: shards.iter().map(|(id, b, r)| (id.to_string(), (*b, *r))).collect() }
    }

    #[test]
    fn rates_from_two_samples() {
        let a = sample(10.0, &[("s0", 1000, 10), ("s1", 0, 0)]);
        let b = sample(12.0, &[("s0", 5000, 50), ("s1", 100, 1), ("s2", 40, 4)]);
        let l = loads(&a, &b).unwrap();
        assert_eq!(l[0], ShardLoad { shard_id: "s0".into(), bytes_per_sec: 2000.0, records_per_sec: 20.0 });
        assert_eq!(l[1].bytes_per_sec, 50.0);
        assert_eq!(l[2].records_per_sec, 2.0, "a new shard counts from zero");
        assert!(loads(&b, &a).is_none(), "time must move forward");
        let restarted = sample(14.0, &[("s0", 300, 3)]);
        assert_eq!(loads(&b, &restarted).unwrap()[0].bytes_per_sec, 150.0, "a reset counter starts from zero");
    }
}
