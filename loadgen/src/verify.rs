//! Verification bookkeeping: which ids each worker had acknowledged, and how many times
//! each was read back. Bitsets and byte counters indexed by the per-worker counter keep
//! this at one bit + one byte per record.

use crate::workload::RecordId;

/// The counters a worker's records were acknowledged under.
#[derive(Debug, Clone, Default)]
pub struct AckSet {
    bits: Vec<u64>,
    len: u64,
}

impl AckSet {
    pub fn insert(&mut self, counter: u32) {
        let (word, bit) = (counter as usize / 64, counter % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.len += 1;
        }
    }
    pub fn contains(&self, counter: u32) -> bool {
        let (word, bit) = (counter as usize / 64, counter % 64);
        self.bits.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    /// One past the highest counter that could be in the set.
    fn capacity(&self) -> usize {
        self.bits.len() * 64
    }
}

/// What one worker learnt of its records in the put phase.
#[derive(Debug, Clone, Default)]
pub struct WorkerAcks {
    pub acked: AckSet,
    /// Records sent again after a request whose outcome was unknown (connection lost,
    /// no answer, a 5xx): the first copy may have been written too, so a second copy of
    /// these is the producer's at-least-once, as with any Kinesis producer that retries.
    pub resent: AckSet,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records acknowledged by the put phase.
    pub acked: u64,
    /// Records read during the drain.
    pub read: u64,
    /// Acknowledged records read exactly once.
    pub exactly_once: u64,
    /// Acknowledged records never read.
    pub missing: u64,
    /// Acknowledged records read more than once (counted once per record), never resent.
    pub duplicated: u64,
    /// Acknowledged records read more than once after a resend (see `WorkerAcks::resent`).
    pub resent_duplicated: u64,
    /// Reads of this run's records that were never acknowledged (e.g. applied before a
    /// retried 5xx, or given up after bounded retries).
    pub unacked_extra: u64,
    /// Reads of records not written by this run (another run's tag, or too short for an id).
    pub foreign: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicated == 0
    }
}

pub struct Verifier {
    run: u16,
    workers: Vec<WorkerAcks>,
    /// Saturating read counts per worker, indexed by counter.
    seen: Vec<Vec<u8>>,
    read: u64,
    unacked_extra: u64,
    foreign: u64,
}

impl Verifier {
    /// `workers[w]` is what worker w learnt of its records.
    pub fn new(run: u16, workers: Vec<WorkerAcks>) -> Verifier {
        let seen = workers.iter().map(|a| vec![0u8; a.acked.capacity()]).collect();
        Verifier { run, workers, seen, read: 0, unacked_extra: 0, foreign: 0 }
    }

    /// Tally one record read back, given the id decoded from its data (None: too short).
    pub fn observe(&mut self, id: Option<RecordId>) {
        self.read += 1;
        let Some(id) = id else {
            self.foreign += 1;
            return;
        };
        if id.run != self.run {
            self.foreign += 1;
            return;
        }
        let w = id.worker as usize;
        let acked = self.workers.get(w).is_some_and(|a| a.acked.contains(id.counter));
        if !acked {
            self.unacked_extra += 1;
            return;
        }
        let count = &mut self.seen[w][id.counter as usize];
        *count = count.saturating_add(1);
    }

    pub fn finish(self) -> VerifyReport {
        let mut report = VerifyReport {
            read: self.read,
            unacked_extra: self.unacked_extra,
            foreign: self.foreign,
            ..VerifyReport::default()
        };
        for (worker, seen) in self.workers.iter().zip(&self.seen) {
            report.acked += worker.acked.len();
            for (counter, &n) in seen.iter().enumerate() {
                let counter = counter as u32;
                if !worker.acked.contains(counter) {
                    continue;
                }
                match n {
                    0 => report.missing += 1,
                    1 => report.exactly_once += 1,
                    _ if worker.resent.contains(counter) => report.resent_duplicated += 1,
                    _ => report.duplicated += 1,
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(run: u16, worker: u16, counter: u32) -> Vec<u8> {
        let mut d = RecordId { run, worker, counter }.encode().to_vec();
        d.extend_from_slice(b"filler");
        d
    }

    fn id(data: &[u8]) -> Option<RecordId> {
        RecordId::decode(data)
    }

    #[test]
    fn ack_set_counts_distinct_members() {
        let mut a = AckSet::default();
        for c in [0, 63, 64, 1000, 63] {
            a.insert(c);
        }
        assert_eq!(a.len(), 4);
        assert!(a.contains(63) && a.contains(1000) && !a.contains(1) && !a.contains(1_000_000));
    }

    #[test]
    fn classifies_missing_duplicated_extra_and_foreign() {
        let mut w0 = AckSet::default();
        let mut w1 = AckSet::default();
        for c in 0..10 {
            w0.insert(c);
        }
        for c in [0, 2, 4] {
            w1.insert(c);
        }
        let mut resent = AckSet::default();
        resent.insert(7);
        resent.insert(3);
        let mut v = Verifier::new(
            7,
            vec![WorkerAcks { acked: w0, resent }, WorkerAcks { acked: w1, resent: AckSet::default() }],
        );
        // Worker 0: 0..8 once, 8 twice, 7 twice (resent), 3 once (resent), 9 never.
        // Worker 1: 0 three times, 2 once, 4 never.
        for c in 0..9 {
            v.observe(id(&data(7, 0, c)));
        }
        v.observe(id(&data(7, 0, 8)));
        v.observe(id(&data(7, 0, 7)));
        for _ in 0..3 {
            v.observe(id(&data(7, 1, 0)));
        }
        v.observe(id(&data(7, 1, 2)));
        // Never acknowledged: counter 1 of worker 1, a counter past the set, an unknown worker.
        v.observe(id(&data(7, 1, 1)));
        v.observe(id(&data(7, 1, 5000)));
        v.observe(id(&data(7, 9, 0)));
        // Another run's record and one too short to carry an id.
        v.observe(id(&data(8, 0, 9)));
        v.observe(RecordId::decode(b"short"));
        let r = v.finish();
        assert_eq!(
            r,
            VerifyReport {
                acked: 13,
                read: 20,
                exactly_once: 8,
                missing: 2,
                duplicated: 2,
                resent_duplicated: 1,
                unacked_extra: 3,
                foreign: 2,
            }
        );
        assert!(!r.ok());
    }

    #[test]
    fn a_clean_read_back_is_ok() {
        let mut a = AckSet::default();
        (0..100).for_each(|c| a.insert(c));
        let mut v = Verifier::new(1, vec![WorkerAcks { acked: a, resent: AckSet::default() }]);
        (0..100).for_each(|c| v.observe(id(&data(1, 0, c))));
        let r = v.finish();
        assert!(r.ok());
        assert_eq!((r.acked, r.read, r.exactly_once), (100, 100, 100));
    }

    #[test]
    fn a_second_copy_of_a_resent_record_is_the_producers_retry_not_a_failure() {
        let (mut acked, mut resent) = (AckSet::default(), AckSet::default());
        (0..4).for_each(|c| acked.insert(c));
        resent.insert(2);
        let mut v = Verifier::new(3, vec![WorkerAcks { acked, resent }]);
        [0, 1, 2, 2, 3].into_iter().for_each(|c| v.observe(id(&data(3, 0, c))));
        let r = v.finish();
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.exactly_once, r.resent_duplicated, r.duplicated), (3, 1, 0));
    }
}
