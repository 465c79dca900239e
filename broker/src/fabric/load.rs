//! The load of the shards this broker serves, as the coordinator weighs them when shards
//! must move (`cluster::plan`): bytes in per second over the last window, as 1 + KiB/s, so
//! that an idle shard weighs 1 like one nobody reported.

use crate::cluster::{ShardKey, ShardWeights};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rates are taken over at least this long: a burst of a second does not move shards.
pub const WINDOW: Duration = Duration::from_secs(10);

pub struct LoadMeter {
    state: Mutex<Option<Sample>>,
}

struct Sample {
    at: Instant,
    bytes: BTreeMap<ShardKey, u64>,
    weights: ShardWeights,
}

impl LoadMeter {
    pub fn new() -> LoadMeter {
        LoadMeter { state: Mutex::new(None) }
    }

    /// The weights from the served shards' bytes-in counters as of `now`: the last window's,
    /// recomputed once a window has passed (none before the first one has).
    pub fn weights(&self, counters: impl IntoIterator<Item = (ShardKey, u64)>, now: Instant) -> ShardWeights {
        let mut state = self.state.lock().unwrap();
        if let Some(sample) = state.as_ref()
            && now.saturating_duration_since(sample.at) < WINDOW
        {
            return sample.weights.clone();
        }
        let bytes: BTreeMap<ShardKey, u64> = counters.into_iter().collect();
        let weights = match state.as_ref() {
            None => ShardWeights::new(),
            Some(last) => {
                let secs = now.saturating_duration_since(last.at).as_secs_f64();
                bytes
                    .iter()
                    .filter_map(|(key, &now_bytes)| {
                        // A shard not served at the last sample has no rate yet.
                        let before = *last.bytes.get(key)?;
                        let per_sec = now_bytes.saturating_sub(before) as f64 / secs;
                        Some((key.clone(), 1 + (per_sec / 1024.0) as u64))
                    })
                    .collect()
            }
        };
        *state = Some(Sample { at: now, bytes, weights: weights.clone() });
        weights
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> ShardKey {
        ShardKey::new("s", streamfabric_api::names::shard_id(i))
    }

    #[test]
    fn weights_are_one_plus_kib_per_second_over_a_window() {
        let meter = LoadMeter::new();
        let t0 = Instant::now();
        assert!(meter.weights([(key(0), 0), (key(1), 500)], t0).is_empty(), "no rate before a window");
        // 10 MiB in 10 s on shard 0, nothing on shard 1, shard 2 new.
        let mid = [(key(0), 5 << 20), (key(1), 500)];
        assert!(meter.weights(mid, t0 + WINDOW / 2).is_empty(), "still the first window");
        let later = [(key(0), 10 << 20), (key(1), 500), (key(2), 1 << 20)];
        let w = meter.weights(later, t0 + WINDOW);
        assert_eq!(w, ShardWeights::from([(key(0), 1025), (key(1), 1)]));
        assert_eq!(meter.weights([], t0 + WINDOW + Duration::from_secs(1)), w, "kept within the window");
    }
}
