//! Counters and exact latency percentiles (a sorted Vec of per-request microseconds: a
//! bounded run has at most a few million requests, so exactness is affordable).

use std::time::Duration;

/// Counters of the put phase; each worker keeps its own and they are merged at the end.
#[derive(Debug, Clone, Default)]
pub struct PutStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    pub acked_records: u64,
    pub acked_bytes: u64,
    /// Request body bytes sent (JSON + base64 overhead included).
    pub wire_bytes: u64,
    /// Whole requests retried after a 5xx or a throttle, and how many were throttles.
    pub retried_requests: u64,
    pub throttled_requests: u64,
    /// PutRecords entries resent after failing individually, and how many were throttles.
    pub retried_records: u64,
    pub throttled_records: u64,
    /// Entries still failing when their retries ran out (not acknowledged).
    pub failed_records: u64,
    /// Per HTTP request, microseconds from send to answer.
    pub latencies_us: Vec<u32>,
    /// With --rate: per batch, microseconds from its scheduled start to its final answer
    /// (includes queueing behind a slow server, i.e. corrects coordinated omission).
    pub scheduled_latencies_us: Vec<u32>,
}

impl PutStats {
    pub fn merge(&mut self, other: PutStats) {
        self.requests += other.requests;
        self.acked_records += other.acked_records;
        self.acked_bytes += other.acked_bytes;
        self.wire_bytes += other.wire_bytes;
        self.retried_requests += other.retried_requests;
        self.throttled_requests += other.throttled_requests;
        self.retried_records += other.retried_records;
        self.throttled_records += other.throttled_records;
        self.failed_records += other.failed_records;
        self.latencies_us.extend(other.latencies_us);
        self.scheduled_latencies_us.extend(other.scheduled_latencies_us);
    }
}

pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
}

/// Percentiles of a sample (sorted in place); None when empty.
pub fn percentiles(sample: &mut [u32]) -> Option<Percentiles> {
    sample.sort_unstable();
    Some(Percentiles {
        p50: nearest_rank(sample, 0.50)?,
        p99: nearest_rank(sample, 0.99)?,
        p999: nearest_rank(sample, 0.999)?,
        max: *sample.last()?,
    })
}

/// Nearest-rank percentile of a sorted sample: the smallest value with at least a fraction
/// `q` of the sample at or below it.
pub fn nearest_rank(sorted: &[u32], q: f64) -> Option<u32> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (q * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// `p50=1.234 p99=... p999=... max=...` in milliseconds, or `n/a` without samples.
pub fn latency_line(sample: &mut [u32]) -> String {
    let ms = |us: u32| format!("{:.3}", f64::from(us) / 1000.0);
    match percentiles(sample) {
        Some(p) => format!("p50={} p99={} p999={} max={}", ms(p.p50), ms(p.p99), ms(p.p999), ms(p.max)),
        None => "p50=n/a p99=n/a p999=n/a max=n/a".into(),
    }
}

/// Per second, guarding against a zero-length phase.
pub fn per_sec(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { count / seconds } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_small_samples() {
        assert_eq!(nearest_rank(&[], 0.5), None);
        assert_eq!(nearest_rank(&[7], 0.0), Some(7));
        assert_eq!(nearest_rank(&[7], 0.999), Some(7));
        let s = [1, 2, 3, 4];
        assert_eq!(nearest_rank(&s, 0.25), Some(1));
        assert_eq!(nearest_rank(&s, 0.5), Some(2));
        assert_eq!(nearest_rank(&s, 0.51), Some(3));
        assert_eq!(nearest_rank(&s, 1.0), Some(4));
    }

    #[test]
    fn percentiles_of_one_to_a_thousand() {
        let mut s: Vec<u32> = (1..=1000).rev().collect();
        let p = percentiles(&mut s).unwrap();
        assert_eq!(p, Percentiles { p50: 500, p99: 990, p999: 999, max: 1000 });
        assert_eq!(latency_line(&mut s), "p50=0.500 p99=0.990 p999=0.999 max=1.000");
        assert_eq!(latency_line(&mut []), "p50=n/a p99=n/a p999=n/a max=n/a");
    }

    #[test]
    fn p999_needs_a_thousand_samples_to_differ_from_max() {
        let mut s: Vec<u32> = (1..=100).collect();
        let p = percentiles(&mut s).unwrap();
        assert_eq!((p.p99, p.p999, p.max), (99, 100, 100));
    }

    #[test]
    fn merge_adds_counters_and_concatenates_samples() {
        let mut a = PutStats { requests: 2, acked_records: 10, latencies_us: vec![1, 2], ..Default::default() };
        let b = PutStats { requests: 3, failed_records: 1, latencies_us: vec![3], ..Default::default() };
        a.merge(b);
        assert_eq!((a.requests, a.acked_records, a.failed_records), (5, 10, 1));
        assert_eq!(a.latencies_us, vec![1, 2, 3]);
        assert_eq!(micros(Duration::from_secs(1)), 1_000_000);
        assert_eq!(micros(Duration::from_secs(1 << 40)), u32::MAX);
    }
}
