//! The put phase: record generation, one worker task per connection, pacing, retries.

use crate::answers::{PutRecordAnswer, PutRecordsAnswer};
use crate::cli::PARTITION_KEY_LEN;
use crate::client::{self, CallError, Connection, Endpoint};
use crate::stats::{PutStats, micros};
use crate::verify::WorkerAcks;
use bytes::Bytes;
use rand::distr::Alphanumeric;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use streamfabric_api::model::{Operation, PutRecordInput, PutRecordsInput, PutRecordsRequestEntry};
use streamfabric_api::types::Blob;
use tokio::task::JoinSet;

pub const ID_BYTES: usize = 8;
/// Attempts for a whole request answered with a 5xx or a throttle before the run aborts.
const MAX_REQUEST_ATTEMPTS: u32 = 20;
/// Attempts for an entry a PutRecords answer reports as failed before it is given up.
const MAX_ENTRY_ATTEMPTS: u32 = 10;

/// A record's unique id, the first 8 bytes of its data (big-endian):
/// `[run tag: 16 bits][worker: 16 bits][counter: 32 bits]`. The random run tag tells this
/// run's records from those an earlier run left in the same stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId {
    pub run: u16,
    pub worker: u16,
    pub counter: u32,
}

impl RecordId {
    pub fn encode(self) -> [u8; ID_BYTES] {
        ((u64::from(self.run) << 48) | (u64::from(self.worker) << 32) | u64::from(self.counter)).to_be_bytes()
    }

    /// None for data too short to carry an id.
    pub fn decode(data: &[u8]) -> Option<RecordId> {
        let raw = u64::from_be_bytes(data.get(..ID_BYTES)?.try_into().ok()?);
        Some(RecordId { run: (raw >> 48) as u16, worker: (raw >> 32) as u16, counter: raw as u32 })
    }
}

/// Generates one worker's records: id + a filler drawn once, and a random partition key.
pub struct RecordGen {
    run: u16,
    worker: u16,
    next: u32,
    filler: Vec<u8>,
    rng: SmallRng,
}

impl RecordGen {
    pub fn new(run: u16, worker: u16, record_size: usize) -> RecordGen {
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut filler = vec![0u8; record_size - ID_BYTES];
        rng.fill_bytes(&mut filler);
        RecordGen { run, worker, next: 0, filler, rng }
    }

    /// The next record and its counter; None once the 32-bit counter space is used up.
    pub fn next_record(&mut self) -> Option<(u32, Bytes, String)> {
        let counter = self.next;
        self.next = counter.checked_add(1)?;
        let mut data = Vec::with_capacity(ID_BYTES + self.filler.len());
        data.extend_from_slice(&RecordId { run: self.run, worker: self.worker, counter }.encode());
        data.extend_from_slice(&self.filler);
        let key: String = (&mut self.rng).sample_iter(Alphanumeric).take(PARTITION_KEY_LEN).map(char::from).collect();
        Some((counter, Bytes::from(data), key))
    }
}

pub struct PutConfig {
    pub stream: String,
    pub run_tag: u16,
    pub connections: u16,
    pub records: u64,
    pub duration: Duration,
    pub record_size: usize,
    pub batch_size: usize,
    /// Total records per second, if paced.
    pub rate: Option<f64>,
    pub request_timeout: Duration,
}

pub struct PutOutcome {
    pub stats: PutStats,
    /// Indexed by worker id.
    pub acks: Vec<WorkerAcks>,
    pub seconds: f64,
}

/// Run the put phase to completion; the first worker error aborts all of them.
pub async fn put_phase(endpoint: &Endpoint, cfg: PutConfig) -> Result<PutOutcome, String> {
    // Connect first so that connection setup is not part of the measured time.
    let mut connecting = JoinSet::new();
    for worker in 0..cfg.connections {
        let (endpoint, timeout) = (endpoint.clone(), cfg.request_timeout);
        connecting.spawn(async move { (worker, Connection::open(&endpoint, timeout).await) });
    }
    let mut connections = Vec::with_capacity(cfg.connections as usize);
    while let Some(joined) = connecting.join_next().await {
        let (worker, conn) = joined.map_err(|e| format!("connect task failed: {e}"))?;
        connections.push((worker, conn.map_err(|e| format!("opening connection {worker}: {e}"))?));
    }

    let cfg = Arc::new(cfg);
    let claimed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for (worker, conn) in connections {
        let worker_task = Worker::new(worker, conn, cfg.clone(), claimed.clone(), start);
        workers.spawn(worker_task.run());
    }
    let mut stats = PutStats::default();
    let mut acks = vec![WorkerAcks::default(); cfg.connections as usize];
    while let Some(joined) = workers.join_next().await {
        match joined.map_err(|e| format!("worker task failed: {e}"))? {
            Ok((worker, worker_stats, worker_acks)) => {
                stats.merge(worker_stats);
                acks[worker as usize] = worker_acks;
            }
            Err(e) => {
                workers.abort_all();
                return Err(e);
            }
        }
    }
    Ok(PutOutcome { stats, acks, seconds: start.elapsed().as_secs_f64() })
}

struct Worker {
    id: u16,
    conn: Connection,
    cfg: Arc<PutConfig>,
    claimed: Arc<AtomicU64>,
    start: Instant,
    deadline: Instant,
    generator: RecordGen,
    stats: PutStats,
    acks: WorkerAcks,
}

/// When request `k` of `worker` is due, from the start: `(k + worker / workers) * interval`.
/// The workers' schedules are staggered so that together they send evenly spaced requests at
/// the target rate; aligned, they would send one burst of `workers` requests per interval,
/// and the burst's queueing would be measured as the server's latency.
fn due_after(interval: Duration, k: u64, worker: u16, workers: u16) -> Duration {
    interval.mul_f64(k as f64 + f64::from(worker) / f64::from(workers))
}

type WorkerResult = Result<(u16, PutStats, WorkerAcks), String>;

impl Worker {
    fn new(id: u16, conn: Connection, cfg: Arc<PutConfig>, claimed: Arc<AtomicU64>, start: Instant) -> Worker {
        let generator = RecordGen::new(cfg.run_tag, id, cfg.record_size);
        let deadline = start + cfg.duration;
        Worker {
            id,
            conn,
            cfg,
            claimed,
            start,
            deadline,
            generator,
            stats: PutStats::default(),
            acks: WorkerAcks::default(),
        }
    }

    async fn run(mut self) -> WorkerResult {
        // With --rate, each worker sends one request per interval (see `due_after`).
        let interval = self.cfg.rate.map(|rate| {
            let per_worker = rate / f64::from(self.cfg.connections);
            Duration::from_secs_f64(self.cfg.batch_size as f64 / per_worker)
        });
        for k in 0u64.. {
            let scheduled = match interval {
                Some(i) => {
                    let due = self.start + due_after(i, k, self.id, self.cfg.connections);
                    if due >= self.deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    Some(due)
                }
                None => None,
            };
            if Instant::now() >= self.deadline {
                break;
            }
            let Some(n) = self.claim() else { break };
            if self.cfg.batch_size == 1 {
                self.put_record().await?;
            } else {
                self.put_records(n).await?;
            }
            if let Some(due) = scheduled {
                self.stats.scheduled_latencies_us.push(micros(due.elapsed()));
            }
        }
        Ok((self.id, self.stats, self.acks))
    }

    /// Claim up to a batch from the shared record budget.
    fn claim(&self) -> Option<usize> {
        let batch = self.cfg.batch_size as u64;
        let before = self.claimed.fetch_add(batch, Ordering::Relaxed);
        (before < self.cfg.records).then(|| batch.min(self.cfg.records - before) as usize)
    }

    fn next_record(&mut self) -> Result<(u32, Bytes, String), String> {
        self.generator.next_record().ok_or_else(|| format!("worker {} ran out of 32-bit record ids", self.id))
    }

    /// One timed HTTP exchange.
    async fn send(&mut self, op: Operation, body: Vec<u8>) -> Result<Bytes, CallError> {
        self.stats.requests += 1;
        self.stats.wire_bytes += body.len() as u64;
        let sent = Instant::now();
        let answer = self.conn.call_raw(op, body).await;
        self.stats.latencies_us.push(micros(sent.elapsed()));
        answer
    }

    /// Count a retriable failure of a whole request and back off, or give up.
    async fn absorb(&mut self, op: Operation, attempt: u32, err: CallError) -> Result<(), String> {
        if !err.is_retriable() || attempt + 1 >= MAX_REQUEST_ATTEMPTS {
            return Err(format!("{} failed after {} attempt(s): {err}", op.name(), attempt + 1));
        }
        self.stats.retried_requests += 1;
        if err.is_throttle() {
            self.stats.throttled_requests += 1;
        }
        tokio::time::sleep(backoff(attempt)).await;
        Ok(())
    }

    async fn put_record(&mut self) -> Result<(), String> {
        let (counter, data, key) = self.next_record()?;
        let input = PutRecordInput {
            stream_name: Some(self.cfg.stream.clone()),
            data: Some(Blob(data)),
            partition_key: Some(key),
            ..Default::default()
        };
        let body = self.conn.format().encode(&input);
        for attempt in 0..MAX_REQUEST_ATTEMPTS {
            match self.send(Operation::PutRecord, body.clone()).await {
                Ok(answer) => {
                    let _: PutRecordAnswer =
                        client::decode(self.conn.format(), &answer).map_err(|e| format!("PutRecord answer: {e}"))?;
                    self.ack(counter);
                    return Ok(());
                }
                Err(e) => {
                    if e.may_have_applied() {
                        self.acks.resent.insert(counter);
                    }
                    self.absorb(Operation::PutRecord, attempt, e).await?
                }
            }
        }
        unreachable!("absorb gives up on the last attempt")
    }

    async fn put_records(&mut self, n: usize) -> Result<(), String> {
        let mut counters = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let (counter, data, key) = self.next_record()?;
            counters.push(counter);
            entries.push(PutRecordsRequestEntry {
                data: Some(Blob(data)),
                partition_key: Some(key),
                explicit_hash_key: None,
            });
        }
        let mut input = PutRecordsInput { stream_name: Some(self.cfg.stream.clone()), stream_arn: None, records: None };
        let mut entry_attempt = 0;
        let mut request_attempt = 0;
        loop {
            input.records = Some(entries);
            let body = self.conn.format().encode(&input);
            entries = input.records.take().unwrap_or_default();
            let answer = match self.send(Operation::PutRecords, body).await {
                Ok(answer) => answer,
                Err(e) => {
                    if e.may_have_applied() {
                        counters.iter().for_each(|&c| self.acks.resent.insert(c));
                    }
                    self.absorb(Operation::PutRecords, request_attempt, e).await?;
                    request_attempt += 1;
                    continue;
                }
            };
            let answer: PutRecordsAnswer =
                client::decode(self.conn.format(), &answer).map_err(|e| format!("PutRecords answer: {e}"))?;
            if answer.records.len() != entries.len() {
                return Err(format!(
                    "PutRecords answered {} results for {} entries",
                    answer.records.len(),
                    entries.len()
                ));
            }
            let failed = answer.records.iter().filter(|r| r.error_code.is_some()).count();
            if let Some(count) = answer.failed_record_count.filter(|&c| c != failed as i64) {
                return Err(format!(
                    "PutRecords answered FailedRecordCount {count} but {failed} entries carry an ErrorCode"
                ));
            }
            // Keep the failed entries (in order) for another attempt; acknowledge the rest.
            let (mut retry_counters, mut retry_entries) = (Vec::new(), Vec::new());
            for ((result, counter), entry) in answer.records.iter().zip(counters).zip(entries) {
                match &result.error_code {
                    None => self.ack(counter),
                    Some(code) => {
                        self.stats.throttled_records += u64::from(client::is_throttle_code(code));
                        retry_counters.push(counter);
                        retry_entries.push(entry);
                    }
                }
            }
            if retry_entries.is_empty() {
                return Ok(());
            }
            entry_attempt += 1;
            if entry_attempt >= MAX_ENTRY_ATTEMPTS {
                self.stats.failed_records += retry_entries.len() as u64;
                return Ok(());
            }
            self.stats.retried_records += retry_entries.len() as u64;
            // Throttled or not: a shard moving between brokers refuses writes for a second
            // or two, and immediate retries would use up every attempt in milliseconds.
            tokio::time::sleep(backoff(entry_attempt - 1)).await;
            (counters, entries) = (retry_counters, retry_entries);
        }
    }

    fn ack(&mut self, counter: u32) {
        self.acks.acked.insert(counter);
        self.stats.acked_records += 1;
        self.stats.acked_bytes += self.cfg.record_size as u64;
    }
}

/// 10 ms doubling per attempt, capped at 640 ms, with up to 50% jitter so that throttled
/// workers do not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let base = 10u64 << attempt.min(6);
    Duration::from_millis(base + rand::rng().random_range(0..=base / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_workers_together_send_evenly_spaced_requests() {
        let interval = Duration::from_millis(80);
        let mut due: Vec<Duration> =
            (0..8u16).flat_map(|w| (0..3u64).map(move |k| due_after(interval, k, w, 8))).collect();
        due.sort();
        assert_eq!(due.len(), 24);
        for (n, at) in due.iter().enumerate() {
            assert_eq!(at.as_micros(), n as u128 * 10_000, "request {n} of the merged schedule");
        }
    }

    #[test]
    fn ids_round_trip_and_are_big_endian() {
        let id = RecordId { run: 0xabcd, worker: 3, counter: 0x0102_0304 };
        assert_eq!(id.encode(), [0xab, 0xcd, 0x00, 0x03, 0x01, 0x02, 0x03, 0x04]);
        assert_eq!(RecordId::decode(&id.encode()), Some(id));
        let max = RecordId { run: u16::MAX, worker: u16::MAX, counter: u32::MAX };
        assert_eq!(RecordId::decode(&max.encode()), Some(max));
        assert_eq!(RecordId::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn generated_records_have_the_size_unique_ids_and_alphanumeric_keys() {
        let mut g = RecordGen::new(9, 4, 100);
        let mut seen = std::collections::HashSet::new();
        for expected in 0..1000u32 {
            let (counter, data, key) = g.next_record().unwrap();
            assert_eq!(counter, expected);
            assert_eq!(data.len(), 100);
            assert_eq!(RecordId::decode(&data), Some(RecordId { run: 9, worker: 4, counter }));
            assert!(key.len() == PARTITION_KEY_LEN && key.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(seen.insert(data));
        }
        let (_, minimal, _) = RecordGen::new(1, 0, ID_BYTES).next_record().unwrap();
        assert_eq!(minimal.len(), ID_BYTES);
    }

    #[test]
    fn the_counter_space_ends_cleanly() {
        let mut g = RecordGen::new(0, 0, 8);
        g.next = u32::MAX;
        assert!(g.next_record().is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= Duration::from_millis(10) && backoff(0) <= Duration::from_millis(15));
        assert!(backoff(30) >= Duration::from_millis(640) && backoff(30) <= Duration::from_millis(960));
    }
}
