//! The producer half, after the Kinesis Producer Library: records from the application are
//! buffered per stream and sent in PutRecords batches (at most `max_buffered_time` late,
//! sooner when no batch is in the air; `max_batch_records` and `max_batch_bytes` per
//! request: the KPL's defaults), entries the
//! brokers refuse retryably are sent again with backoff and jitter until their time to live
//! runs out, and each record is answered with its shard and sequence number, or its error.

use crate::broker::{Brokers, CallError, retriable_code};
use bytes::Bytes;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use streamfabric_api::limits::{MAX_PUT_RECORDS_BYTES, MAX_PUT_RECORDS_ENTRIES};
use streamfabric_api::model::{PutRecordsInput, PutRecordsOutput, PutRecordsRequestEntry};
use streamfabric_api::types::Blob;
use streamfabric_api::{ApiError, ErrorCode};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// How long a record may wait for others to share its request (KPL: 100 ms).
    pub max_buffered_time: Duration,
    /// Records per PutRecords (KPL and Kinesis: 500).
    pub max_batch_records: usize,
    /// Bytes of data and partition keys per PutRecords (Kinesis: 5 MiB).
    pub max_batch_bytes: usize,
    /// How long a record is retried before its last error is its answer (KPL: 30 s).
    pub record_ttl: Duration,
    /// PutRecords in flight at once per stream.
    pub max_in_flight: usize,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            max_buffered_time: Duration::from_millis(100),
            max_batch_records: MAX_PUT_RECORDS_ENTRIES,
            max_batch_bytes: MAX_PUT_RECORDS_BYTES,
            record_ttl: Duration::from_secs(30),
            max_in_flight: 4,
        }
    }
}

/// One record as the application gave it (already validated).
#[derive(Debug, Clone)]
pub struct Record {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
}

impl Record {
    /// What it counts for in a request's 5 MiB.
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub shard_id: String,
    pub sequence_number: String,
}

pub type Outcome = Result<Placed, ApiError>;

struct Pending {
    record: Record,
    reply: oneshot::Sender<Outcome>,
    deadline: Instant,
    attempts: u32,
}

/// What the producer did, for metrics and tests.
#[derive(Debug, Default)]
pub struct ProducerCounters {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
}

pub struct Producer {
    brokers: Brokers,
    settings: ProducerSettings,
    streams: Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
    pub counters: Arc<ProducerCounters>,
}

impl Producer {
    pub fn new(brokers: Brokers, settings: ProducerSettings) -> Arc<Producer> {
        Arc::new(Producer {
            brokers,
            settings,
            streams: Mutex::new(HashMap::new()),
            counters: Arc::new(ProducerCounters::default()),
        })
    }

    /// Where the records go.
    pub fn brokers(&self) -> &Brokers {
        &self.brokers
    }

    /// Buffer `records` for `stream` and wait for each one's outcome, in the order given.
    pub async fn put(&self, stream: &str, records: Vec<Record>) -> Vec<Outcome> {
        let queue = self.queue(stream);
        let deadline = Instant::now() + self.settings.record_ttl;
        let mut answers = Vec::with_capacity(records.len());
        for record in records {
            let (reply, answer) = oneshot::channel();
            let _ = queue.send(Pending { record, reply, deadline, attempts: 0 });
            answers.push(answer);
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(answer.await.unwrap_or_else(|_| Err(ApiError::internal("the sidecar is stopping"))));
        }
        outcomes
    }

    /// The batching queue of a stream, started on first use.
    fn queue(&self, stream: &str) -> mpsc::UnboundedSender<Pending> {
        let mut streams = self.streams.lock().unwrap();
        if let Some(queue) = streams.get(stream).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (send, receive) = mpsc::unbounded_channel();
        let batcher = Batcher {
            stream: stream.to_string(),
            brokers: self.brokers.clone(),
            settings: self.settings.clone(),
            counters: self.counters.clone(),
            requeue: send.clone(),
            in_flight: Arc::new(Semaphore::new(self.settings.max_in_flight.max(1))),
            landed: Arc::new(Notify::new()),
        };
        tokio::spawn(batcher.run(receive));
        streams.insert(stream.to_string(), send.clone());
        send
    }
}

#[derive(Clone)]
struct Batcher {
    stream: String,
    brokers: Brokers,
    settings: ProducerSettings,
    counters: Arc<ProducerCounters>,
    requeue: mpsc::UnboundedSender<Pending>,
    in_flight: Arc<Semaphore>,
    landed: Arc<Notify>,
}

impl Batcher {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Pending>) {
        let mut carried: Option<Pending> = None;
        loop {
            let first = match carried.take() {
                Some(p) => p,
                None => match queue.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            // Records wait only while another batch of the stream is in the air, and never
            // past max_buffered_time: alone, a record goes at once; under load, batches
            // grow with the load.
            let flush_at = Instant::now() + self.settings.max_buffered_time;
            let mut bytes = first.record.size();
            let mut batch = vec![first];
            while batch.len() < self.settings.max_batch_records {
                let next = match queue.try_recv() {
                    Ok(next) => Some(next),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) if self.idle() => break,
                    Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                        next = queue.recv() => next,
                        // A batch landed: if none is in the air now, send what we have.
                        _ = self.landed.notified() => continue,
                        _ = tokio::time::sleep_until(flush_at) => break,
                    },
                };
                let Some(next) = next else { break };
                if bytes + next.record.size() > self.settings.max_batch_bytes {
                    carried = Some(next);
                    break;
                }
                bytes += next.record.size();
                batch.push(next);
            }
            let permit = self.in_flight.clone().acquire_owned().await.expect("never closed");
            let this = self.clone();
            tokio::spawn(async move {
                this.send(batch).await;
                drop(permit);
                this.landed.notify_one();
            });
        }
    }

    /// No PutRecords of this stream in the air.
    fn idle(&self) -> bool {
        self.in_flight.available_permits() == self.settings.max_in_flight.max(1)
    }

    async fn send(&self, batch: Vec<Pending>) {
        let input = PutRecordsInput {
            stream_name: Some(self.stream.clone()),
            stream_arn: None,
            records: Some(
                batch
                    .iter()
                    .map(|p| PutRecordsRequestEntry {
                        data: Some(Blob(p.record.data.clone())),
                        partition_key: Some(p.record.partition_key.clone()),
                        explicit_hash_key: p.record.explicit_hash_key.clone(),
                    })
                    .collect(),
            ),
        };
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        match self.brokers.call::<_, PutRecordsOutput>("PutRecords", &input).await {
            Ok(out) if out.records.len() == batch.len() => {
                for (pending, result) in batch.into_iter().zip(out.records) {
                    match (result.shard_id, result.sequence_number, result.error_code) {
                        (Some(shard_id), Some(sequence_number), None) => {
                            self.counters.records.fetch_add(1, Ordering::Relaxed);
                            let _ = pending.reply.send(Ok(Placed { shard_id, sequence_number }));
                        }
                        (_, _, code) => {
                            let code = code.as_deref().and_then(ErrorCode::parse).unwrap_or(ErrorCode::InternalFailure);
                            let error = ApiError::new(code, result.error_message.unwrap_or_default());
                            self.retry_or_fail(pending, error, retriable_code(code));
                        }
                    }
                }
            }
            Ok(out) => {
                let error = ApiError::internal(format!(
                    "the brokers answered {} entries for a request of {}",
                    out.records.len(),
                    batch.len()
                ));
                batch.into_iter().for_each(|p| self.retry_or_fail(p, error.clone(), true));
            }
            Err(e) => {
                let retriable = e.is_retriable();
                let error = match e {
                    CallError::Api(api) => api,
                    CallError::Transport(reason) => ApiError::internal(format!("brokers unreachable: {reason}")),
                };
                batch.into_iter().for_each(|p| self.retry_or_fail(p, error.clone(), retriable));
            }
        }
    }

    /// Send a refused record again after a backoff with full jitter, unless its time to
    /// live would run out first; then its last error is its answer.
    fn retry_or_fail(&self, mut pending: Pending, error: ApiError, retriable: bool) {
        let ceiling =
            Duration::from_millis(100).saturating_mul(1 << pending.attempts.min(5)).min(Duration::from_secs(2));
        let backoff = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        if !retriable || Instant::now() + backoff >= pending.deadline {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            let _ = pending.reply.send(Err(error));
            return;
        }
        pending.attempts += 1;
        self.counters.retried.fetch_add(1, Ordering::Relaxed);
        let requeue = self.requeue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = requeue.send(pending);
        });
    }
}
