//! A bounded in-memory cache of what remote reads fetch: decompressed frames and parsed frame
//! indexes of segment objects, evicted least recently used first once their bytes exceed the
//! budget.
//!
//! In memory rather than on disk: a hit costs neither a read nor a decompression, nothing
//! needs cleaning up after a crash, and the budget is one number next to the broker's other
//! memory bounds. What it does not do is survive a restart (the bucket is still there).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};

use super::frames::FrameIndex;

/// Counters the cache moves; the broker registers them, tests read them.
#[derive(Clone)]
pub struct CacheCounters {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub evictions: IntCounter,
    /// Bytes fetched from the object store on misses (stored, i.e. compressed, bytes).
    pub fetched_bytes: IntCounter,
    /// Bytes held now.
    pub bytes: IntGauge,
}

impl CacheCounters {
    /// Counters registered nowhere (tests, benchmarks).
    pub fn unregistered() -> Self {
        let c = |n: &str| IntCounter::new(n, n).expect("valid metric");
        CacheCounters {
            hits: c("hits"),
            misses: c("misses"),
            evictions: c("evictions"),
            fetched_bytes: c("fetched_bytes"),
            bytes: IntGauge::new("bytes", "bytes").expect("valid metric"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CacheKey {
    Index(Arc<str>),
    Frame(Arc<str>, u32),
}

#[derive(Clone)]
pub(crate) enum Cached {
    Index(Arc<FrameIndex>),
    Frame(Bytes),
}

struct Entry {
    value: Cached,
    size: u64,
    tick: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<CacheKey, Entry>,
    /// Last use of each entry, oldest first.
    order: BTreeMap<u64, CacheKey>,
    bytes: u64,
    tick: u64,
}

pub struct FrameCache {
    budget: u64,
    lru: Mutex<Lru>,
    pub counters: CacheCounters,
}

impl FrameCache {
    /// A cache holding at most `budget` bytes (0: nothing is kept).
    pub fn new(budget: u64, counters: CacheCounters) -> Self {
        FrameCache { budget, lru: Mutex::new(Lru::default()), counters }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value, counted as a hit (and made the most recent), or a miss.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Cached> {
        let mut lru = self.lock();
        let lru = &mut *lru;
        lru.tick += 1;
        let tick = lru.tick;
        match lru.entries.get_mut(key) {
            Some(e) => {
                lru.order.remove(&e.tick);
                e.tick = tick;
                lru.order.insert(tick, key.clone());
                self.counters.hits.inc();
                Some(e.value.clone())
            }
            None => {
                self.counters.misses.inc();
                None
            }
        }
    }

    /// Keeps `value` (`size` bytes), evicting the least recently used entries to stay within
    /// the budget. A value larger than the whole budget is not kept.
    pub(crate) fn insert(&self, key: CacheKey, value: Cached, size: u64) {
        if size > self.budget {
            return;
        }
        let mut lru = self.lock();
        let lru = &mut *lru;
        if let Some(old) = lru.entries.remove(&key) {
            lru.order.remove(&old.tick);
            lru.bytes -= old.size;
        }
        while lru.bytes + size > self.budget {
            let Some((_, victim)) = lru.order.pop_first() else { break };
            if let Some(e) = lru.entries.remove(&victim) {
                lru.bytes -= e.size;
                self.counters.evictions.inc();
            }
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.order.insert(tick, key.clone());
        lru.entries.insert(key, Entry { value, size, tick });
        lru.bytes += size;
        self.counters.bytes.set(lru.bytes as i64);
    }

    /// Drops every entry of one object (its segment left the bucket).
    pub fn forget_object(&self, path: &str) {
        let mut lru = self.lock();
        let lru = &mut *lru;
        let doomed: Vec<CacheKey> = lru
            .entries
            .keys()
            .filter(|k| match k {
                CacheKey::Index(p) | CacheKey::Frame(p, _) => &**p == path,
            })
            .cloned()
            .collect();
        for k in doomed {
            if let Some(e) = lru.entries.remove(&k) {
                lru.order.remove(&e.tick);
                lru.bytes -= e.size;
            }
        }
        self.counters.bytes.set(lru.bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Cached {
        Cached::Frame(Bytes::from(vec![7u8; n]))
    }

    #[test]
    fn least_recently_used_goes_first_and_the_budget_holds() {
        let cache = FrameCache::new(1000, CacheCounters::unregistered());
        let key = |i: u32| CacheKey::Frame(Arc::from("obj"), i);
        for i in 0..3 {
            assert!(cache.get(&key(i)).is_none());
            cache.insert(key(i), frame(300), 300);
        }
        assert_eq!(cache.bytes(), 900);
        assert!(cache.get(&key(0)).is_some(), "0 is now the most recent");
        cache.insert(key(3), frame(300), 300); // evicts 1, the least recent
        assert!(cache.bytes() <= 1000);
        assert!(cache.get(&key(1)).is_none());
        assert!(cache.get(&key(0)).is_some() && cache.get(&key(2)).is_some() && cache.get(&key(3)).is_some());
        let c = &cache.counters;
        assert_eq!((c.hits.get(), c.misses.get(), c.evictions.get()), (4, 4, 1));
        cache.insert(key(9), frame(2000), 2000); // larger than the budget: not kept
        assert!(cache.get(&key(9)).is_none());
        assert_eq!(cache.bytes(), 900);
        cache.insert(key(4), frame(1000), 1000); // takes everything
        assert_eq!((cache.bytes(), c.evictions.get()), (1000, 4));
        assert_eq!(c.bytes.get(), 1000);
        cache.forget_object("obj");
        assert_eq!(cache.bytes(), 0);
        let none = FrameCache::new(0, CacheCounters::unregistered());
        none.insert(key(0), frame(1), 1);
        assert!(none.get(&key(0)).is_none());
    }
}
