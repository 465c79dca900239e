//! Per-shard throughput limits (AWS: 1 MiB/s or 1,000 records/s in; 2 MiB/s and 5 calls/s
//! out), enforced with token buckets when configured.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct ShardLimits {
    pub enforced: bool,
    pub write_bytes_per_sec: u64,
    pub write_records_per_sec: u64,
    pub read_bytes_per_sec: u64,
    pub read_calls_per_sec: u64,
}

/// A bucket that refills at `rate` per second up to one second's worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket { rate: rate as f64, tokens: rate as f64 }
    }
    fn refill(&mut self, elapsed_secs: f64) {
        self.tokens = (self.tokens + elapsed_secs * self.rate).min(self.rate);
    }
}

#[derive(Debug)]
struct Buckets {
    last: Instant,
    write_bytes: Bucket,
    write_records: Bucket,
    read_bytes: Bucket,
    read_calls: Bucket,
}

pub struct ShardThrottle {
    enforced: bool,
    buckets: Mutex<Buckets>,
}

impl ShardThrottle {
    pub fn new(limits: ShardLimits) -> ShardThrottle {
        ShardThrottle {
            enforced: limits.enforced,
            buckets: Mutex::new(Buckets {
                last: Instant::now(),
                write_bytes: Bucket::new(limits.write_bytes_per_sec),
                write_records: Bucket::new(limits.write_records_per_sec),
                read_bytes: Bucket::new(limits.read_bytes_per_sec),
                read_calls: Bucket::new(limits.read_calls_per_sec),
            }),
        }
    }

    fn with_buckets<T>(&self, f: impl FnOnce(&mut Buckets) -> T) -> T {
        let mut b = self.buckets.lock().unwrap();
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.write_bytes.refill(elapsed);
        b.write_records.refill(elapsed);
        b.read_bytes.refill(elapsed);
        b.read_calls.refill(elapsed);
        f(&mut b)
    }

    /// How many of `sizes` (bytes per record, in order) may be written now; takes their tokens.
    /// A record larger than one second's worth (UpdateMaxRecordSize allows up to 10 MiB) is
    /// admitted from a full bucket and leaves it in debt, as AWS bursts for large records and
    /// then returns to the shard's rate.
    pub fn admit_writes(&self, sizes: impl Iterator<Item = usize>) -> usize {
        if !self.enforced {
            return usize::MAX;
        }
        self.with_buckets(|b| {
            let mut admitted = 0;
            for size in sizes {
                if b.write_records.tokens < 1.0 || b.write_bytes.tokens < (size as f64).min(b.write_bytes.rate) {
                    break;
                }
                b.write_records.tokens -= 1.0;
                b.write_bytes.tokens -= size as f64;
                admitted += 1;
            }
            admitted
        })
    }

    /// Whether a GetRecords call may run now.
    pub fn admit_read_call(&self) -> bool {
        if !self.enforced {
            return true;
        }
        self.with_buckets(|b| {
            if b.read_calls.tokens < 1.0 || b.read_bytes.tokens <= 0.0 {
                return false;
            }
            b.read_calls.tokens -= 1.0;
            true
        })
    }

    /// Charge the bytes a read returned; the bucket may go negative, which delays the next
    /// reads, as AWS does after a large GetRecords.
    pub fn charge_read_bytes(&self, bytes: usize) {
        if self.enforced {
            self.with_buckets(|b| b.read_bytes.tokens -= bytes as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(enforced: bool) -> ShardLimits {
        ShardLimits {
            enforced,
            write_bytes_per_sec: 1000,
            write_records_per_sec: 10,
            read_bytes_per_sec: 100,
            read_calls_per_sec: 2,
        }
    }

    #[test]
    fn a_record_larger_than_the_bucket_passes_a_full_bucket_and_leaves_a_debt() {
        let t = ShardThrottle::new(limits(true));
        assert_eq!(t.admit_writes([5000].into_iter()), 1);
        // 4 s of debt: nothing passes until it is paid back.
        assert_eq!(t.admit_writes([1].into_iter()), 0);
    }

    #[test]
    fn writes_beyond_the_bucket_are_refused() {
        let t = ShardThrottle::new(limits(true));
        assert_eq!(t.admit_writes([1usize; 25].into_iter()), 10);
        assert_eq!(t.admit_writes([1usize; 5].into_iter()), 0);
        let t = ShardThrottle::new(limits(true));
        assert_eq!(t.admit_writes([400usize, 400, 400].into_iter()), 2);
    }

    #[test]
    fn reads_are_limited_by_calls_and_bytes() {
        let t = ShardThrottle::new(limits(true));
        assert!(t.admit_read_call());
        t.charge_read_bytes(500);
        assert!(!t.admit_read_call(), "bytes overdrawn");
        let t = ShardThrottle::new(limits(true));
        assert!(t.admit_read_call() && t.admit_read_call());
        assert!(!t.admit_read_call(), "third call in the same second");
    }

    #[test]
    fn unenforced_admits_everything() {
        let t = ShardThrottle::new(limits(false));
        assert_eq!(t.admit_writes([10_000usize; 3].into_iter()), usize::MAX);
        assert!((0..100).all(|_| t.admit_read_call()));
    }
}
