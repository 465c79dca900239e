//! Sampling on delivery: which user records the application gets. A record sampled out is
//! not delivered, is checkpointed past like a delivered one, and is counted by reason.
//!
//! - uniform (`--sample-records F`): a fraction F of records, decided by a hash of the
//!   record's sequence and sub-sequence numbers, so a record read again (after a failover)
//!   gets the same decision;
//! - per key (`--sample-keys F`): a fraction F of partition keys, every record of a sampled
//!   key and none of the others, decided by a hash of the key alone: the same keys at every
//!   consumer and after restarts (not the MD5 that routes keys to shards, or sampling keys
//!   would sample shards);
//! - filter (`--sample-filter EXPR`): records whose JSON data satisfies the expression
//!   (`filter`).

use super::delivery::UserRecord;
use super::filter::Filter;

#[derive(Debug, Clone, Default)]
pub struct Sampling {
    pub records: Option<f64>,
    pub keys: Option<f64>,
    pub filter: Option<Filter>,
}

impl Sampling {
    pub fn is_everything(&self) -> bool {
        self.records.is_none() && self.keys.is_none() && self.filter.is_none()
    }

    /// None to deliver the record; else why it is sampled out.
    pub fn sampled_out(&self, record: &UserRecord) -> Option<&'static str> {
        if let Some(f) = self.keys
            && !below(key_hash(&record.partition_key), f)
        {
            return Some("key");
        }
        if let Some(f) = self.records {
            let seq = fnv1a(record.sequence_number.as_bytes());
            if !below(mix(seq ^ mix(record.sub_sequence_number.wrapping_add(0x51ed))), f) {
                return Some("uniform");
            }
        }
        if let Some(filter) = &self.filter {
            return match serde_json::from_slice(&record.data) {
                Ok(data) if filter.matches(&data) => None,
                Ok(_) => Some("filter"),
                Err(_) => Some("not_json"),
            };
        }
        None
    }
}

/// A partition key's hash, the same everywhere and always (not the MD5 that routes keys to
/// shards: keys of one shard spread over all of it).
pub fn key_hash(key: &str) -> u64 {
    mix(fnv1a(key.as_bytes()))
}

/// A fraction of the hash space.
fn below(hash: u64, fraction: f64) -> bool {
    (hash as f64) < fraction * (u64::MAX as f64)
}

/// FNV-1a, 64 bits: stable across versions and machines.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// splitmix64's finaliser: spreads FNV's output over all bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::HashMap;

    /// 100,000 records over 1,000 keys, as one shard's sequence numbers number them.
    fn records() -> Vec<UserRecord> {
        (0..100_000u64)
            .map(|i| UserRecord {
                sequence_number: format!("4960{:030}", 1_000_000 + i * 7),
                sub_sequence_number: i % 3,
                partition_key: format!("customer-{}", i % 1_000),
                explicit_hash_key: None,
                arrival_ms: 0,
                data: Bytes::from(format!(r#"{{"n": {i}, "kind": "{}"}}"#, if i % 4 == 0 { "refund" } else { "sale" })),
            })
            .collect()
    }

    /// The stated tolerances: ±1 percentage point of the records for uniform sampling
    /// (about ten standard deviations at 100,000 records), ±5 points of the keys for per-key
    /// sampling (about four standard deviations at 1,000 keys).
    #[test]
    fn fractions_are_within_tolerance_keys_are_all_or_none_and_filters_are_exact() {
        let all = records();
        for fraction in [0.01, 0.1, 0.5, 0.9] {
            let uniform = Sampling { records: Some(fraction), ..Sampling::default() };
            let kept = all.iter().filter(|r| uniform.sampled_out(r).is_none()).count() as f64 / all.len() as f64;
            assert!((kept - fraction).abs() < 0.01, "uniform {fraction}: kept {kept}");

            let by_key = Sampling { keys: Some(fraction), ..Sampling::default() };
            let mut per_key: HashMap<&str, (usize, usize)> = HashMap::new();
            for r in &all {
                let e = per_key.entry(r.partition_key.as_str()).or_default();
                e.0 += 1;
                e.1 += usize::from(by_key.sampled_out(r).is_none());
            }
            assert!(per_key.values().all(|(n, kept)| *kept == 0 || kept == n), "a key is kept whole or not at all");
            let keys_kept = per_key.values().filter(|(_, kept)| *kept > 0).count() as f64 / per_key.len() as f64;
            assert!((keys_kept - fraction).abs() < 0.05, "keys {fraction}: kept {keys_kept}");
        }
        // The same decisions every time (another consumer, a restart).
        let by_key = Sampling { keys: Some(0.3), ..Sampling::default() };
        let again = Sampling { keys: Some(0.3), ..Sampling::default() };
        assert!(all.iter().all(|r| by_key.sampled_out(r) == again.sampled_out(r)));

        let filter = Filter::parse(r#"kind == "refund" && n >= 50000"#).unwrap();
        let filtered = Sampling { filter: Some(filter), ..Sampling::default() };
        let kept: Vec<usize> =
            all.iter().enumerate().filter(|(_, r)| filtered.sampled_out(r).is_none()).map(|(i, _)| i).collect();
        let expected: Vec<usize> = (50_000..100_000).filter(|i| i % 4 == 0).collect();
        assert_eq!(kept, expected, "the filter selects exactly");
        let not_json = UserRecord { data: Bytes::from_static(b"\xff not json"), ..all[0].clone() };
        assert_eq!(filtered.sampled_out(&not_json), Some("not_json"));
    }
}
