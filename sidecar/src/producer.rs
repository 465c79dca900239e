//! The producer half, after the Kinesis Producer Library: records from the application are
//! buffered per stream and sent in PutRecords batches (at most `max_buffered_time` late,
//! sooner when no batch is in the air; `max_batch_records` and `max_batch_bytes` per
//! request: the KPL's defaults), entries the
//! brokers refuse retryably are sent again with backoff and jitter until their time to live
//! runs out, and each record is answered with its shard and sequence number, or its error
//! (or, fire and forget, as soon as it is buffered). The buffer is bounded in bytes: beyond
//! it a record is refused at once with `LimitExceededException`.
//! With aggregation on, the records of a batch that share a shard are packed into KPL
//! aggregates (`aggregation`) of at most `aggregation_max_bytes`, sent with the first
//! record's hash key; each record is answered with its aggregate's shard and sequence number.

use crate::aggregation::{Aggregate, SubRecord};
use crate::broker::{Brokers, CallError, retriable_code};
use crate::metrics::Metrics;
use crate::shards::{ShardMap, hash_key_of};
use bytes::Bytes;
use rand::Rng;
use std::collections::HashMap;
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
    /// Pack the small records of a shard into KPL aggregated records (consumers must
    /// de-aggregate: the KCL and the sidecar's consumer do).
    pub aggregate: bool,
    /// Bytes per aggregated record (KPL: 51,200).
    pub aggregation_max_bytes: usize,
    /// Send each shard's records straight to the broker serving it (from the cluster's
    /// DescribeShardOwners), not through the endpoint, which would forward them.
    pub route_to_owners: bool,
    /// When the application is answered.
    pub ack: Ack,
    /// Bytes (data and partition keys) of records accepted and not yet answered by the
    /// brokers, over all streams; a record beyond it is refused at once.
    pub max_buffered_bytes: usize,
}

/// When a put is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Once the brokers stored each record (or its last error): the answer says where.
    Stored,
    /// Once the records are buffered (fire and forget): the answers carry no shard or
    /// sequence number, and failures are only counted and logged.
    Buffered,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            max_buffered_time: Duration::from_millis(100),
            max_batch_records: MAX_PUT_RECORDS_ENTRIES,
            max_batch_bytes: MAX_PUT_RECORDS_BYTES,
            record_ttl: Duration::from_secs(30),
            max_in_flight: 4,
            aggregate: false,
            aggregation_max_bytes: crate::aggregation::DEFAULT_MAX_BYTES,
            route_to_owners: true,
            ack: Ack::Stored,
            max_buffered_bytes: 256 << 20,
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
    _buffered: Buffered,
}

/// A record's place in the buffer, given back when it is answered (dropped).
struct Buffered {
    bytes: usize,
    metrics: Arc<Metrics>,
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.metrics.buffered_records.dec();
        self.metrics.buffered_bytes.sub(self.bytes as i64);
    }
}

pub struct Producer {
    brokers: Brokers,
    settings: ProducerSettings,
    streams: Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
    metrics: Arc<Metrics>,
}

impl Producer {
    pub fn new(brokers: Brokers, settings: ProducerSettings, metrics: Arc<Metrics>) -> Arc<Producer> {
        Arc::new(Producer { brokers, settings, streams: Mutex::new(HashMap::new()), metrics })
    }

    /// Where the records go.
    pub fn brokers(&self) -> &Brokers {
        &self.brokers
    }

    /// Buffer `records` for `stream` and wait for each one's outcome, in the order given
    /// (with `Ack::Buffered`, only until they are buffered). Records beyond the buffer's
    /// bound are refused at once.
    pub async fn put(&self, stream: &str, records: Vec<Record>) -> Vec<Outcome> {
        let started = std::time::Instant::now();
        let queue = self.queue(stream);
        let deadline = Instant::now() + self.settings.record_ttl;
        let mut answers = Vec::with_capacity(records.len());
        for record in records {
            let bytes = record.size();
            let Some(buffered) = self.reserve(bytes) else {
                self.metrics.records.with_label_values(&["refused_full"]).inc();
                answers.push(Err(self.buffer_full(bytes)));
                continue;
            };
            let (reply, answer) = oneshot::channel();
            let _ = queue.send(Pending { record, reply, deadline, attempts: 0, _buffered: buffered });
            answers.push(Ok(answer));
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(match (answer, self.settings.ack) {
                (Err(refused), _) => Err(refused),
                (Ok(_), Ack::Buffered) => Ok(Placed { shard_id: String::new(), sequence_number: String::new() }),
                (Ok(answer), Ack::Stored) => {
                    answer.await.unwrap_or_else(|_| Err(ApiError::internal("the sidecar is stopping")))
                }
            });
        }
        self.metrics.put_seconds.observe(started.elapsed().as_secs_f64());
        outcomes
    }

    /// Wait until every buffered record is answered (stored, or failed), up to `grace`: at
    /// shutdown, fire-and-forget records are not dropped. False if some were still waiting.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        let deadline = Instant::now() + grace;
        while self.metrics.buffered_records.get() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// Room for `bytes` more in the buffer.
    fn reserve(&self, bytes: usize) -> Option<Buffered> {
        let after = self.metrics.buffered_bytes.get() as usize + bytes;
        if after > self.settings.max_buffered_bytes {
            return None;
        }
        self.metrics.buffered_records.inc();
        self.metrics.buffered_bytes.add(bytes as i64);
        Some(Buffered { bytes, metrics: self.metrics.clone() })
    }

    fn buffer_full(&self, bytes: usize) -> ApiError {
        ApiError::new(
            ErrorCode::LimitExceeded,
            format!(
                "The sidecar's buffer is full: {} bytes of records wait for the brokers, and a record of {bytes} \
                 bytes would pass the limit of {} (--max-buffered-bytes). The brokers are slower than the \
                 application or unreachable; retry later.",
                self.metrics.buffered_bytes.get(),
                self.settings.max_buffered_bytes
            ),
        )
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
            metrics: self.metrics.clone(),
            requeue: send.clone(),
            in_flight: Arc::new(Semaphore::new(self.settings.max_in_flight.max(1))),
            landed: Arc::new(Notify::new()),
            shard_map: Arc::new(tokio::sync::Mutex::new(None)),
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
    metrics: Arc<Metrics>,
    requeue: mpsc::UnboundedSender<Pending>,
    in_flight: Arc<Semaphore>,
    landed: Arc<Notify>,
    /// The stream's shards and owners; None until read, or once found stale.
    shard_map: Arc<tokio::sync::Mutex<Option<Arc<ShardMap>>>>,
}

/// One PutRecords entry: a record, or an aggregate of records of one shard.
struct Entry {
    input: PutRecordsRequestEntry,
    members: Vec<Pending>,
    /// For an aggregate: the shard it must land on.
    predicted_shard: Option<String>,
    /// The broker to send it to (`host:port`); None: the endpoint.
    owner: Option<String>,
}

impl Entry {
    fn plain(p: Pending) -> Entry {
        let input = PutRecordsRequestEntry {
            data: Some(Blob(p.record.data.clone())),
            partition_key: Some(p.record.partition_key.clone()),
            explicit_hash_key: p.record.explicit_hash_key.clone(),
        };
        Entry { input, members: vec![p], predicted_shard: None, owner: None }
    }

    fn to(mut self, owner: Option<&str>) -> Entry {
        self.owner = owner.map(String::from);
        self
    }

    /// What it counts for in a request's 5 MiB.
    fn size(&self) -> usize {
        self.input.data.as_ref().map_or(0, |d| d.0.len()) + self.input.partition_key.as_ref().map_or(0, String::len)
    }
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
            // Aggregated, many records share an entry: only the bytes bound a batch.
            let max_records = if self.settings.aggregate { usize::MAX } else { self.settings.max_batch_records };
            while batch.len() < max_records {
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
        let entries = if self.settings.aggregate || self.settings.route_to_owners {
            self.by_shard(batch).await
        } else {
            batch.into_iter().map(Entry::plain).collect()
        };
        // Per broker, in parallel; one broker's requests one after another, so records of
        // a key (always of one shard, so of one broker) stay in order.
        let mut by_owner: Vec<(Option<String>, Vec<Entry>)> = Vec::new();
        for entry in entries {
            match by_owner.iter_mut().find(|(owner, _)| *owner == entry.owner) {
                Some((_, group)) => group.push(entry),
                None => by_owner.push((entry.owner.clone(), vec![entry])),
            }
        }
        let sends = by_owner.into_iter().map(|(owner, group)| async move {
            for request in self.requests(group) {
                self.send_request(request, owner.as_deref()).await;
            }
        });
        futures::future::join_all(sends).await;
    }

    /// Entries cut into PutRecords requests within the entry count and byte limits.
    fn requests(&self, entries: Vec<Entry>) -> Vec<Vec<Entry>> {
        let mut requests: Vec<Vec<Entry>> = Vec::new();
        let mut bytes = 0;
        for entry in entries {
            let full = requests.last().is_none_or(|r| {
                r.len() >= self.settings.max_batch_records || bytes + entry.size() > self.settings.max_batch_bytes
            });
            if full {
                requests.push(Vec::new());
                bytes = 0;
            }
            bytes += entry.size();
            requests.last_mut().expect("pushed").push(entry);
        }
        requests
    }

    /// The batch as entries for the brokers serving their shards; with aggregation, records
    /// of one shard packed into aggregates in their order. Without a shard map (ListShards
    /// failing), records go one per entry, to the endpoint.
    async fn by_shard(&self, batch: Vec<Pending>) -> Vec<Entry> {
        let map = self.shard_map().await;
        let owner = |shard: &str| if self.settings.route_to_owners { map.owner_of(shard) } else { None };
        let mut entries = Vec::new();
        let mut by_shard: HashMap<String, Vec<Pending>> = HashMap::new();
        let mut shard_order = Vec::new();
        for p in batch {
            let hash = hash_key_of(&p.record.partition_key, p.record.explicit_hash_key.as_deref());
            match map.shard_of(hash) {
                Some(shard) => {
                    let members = by_shard.entry(shard.to_string()).or_insert_with(|| {
                        shard_order.push(shard.to_string());
                        Vec::new()
                    });
                    members.push(p);
                }
                None => entries.push(Entry::plain(p)),
            }
        }
        for shard in shard_order {
            let to = owner(&shard);
            if !self.settings.aggregate {
                entries.extend(by_shard.remove(&shard).unwrap_or_default().into_iter().map(|p| Entry::plain(p).to(to)));
                continue;
            }
            let mut aggregate = Aggregate::default();
            let mut members = Vec::new();
            for p in by_shard.remove(&shard).unwrap_or_default() {
                let sub = SubRecord {
                    partition_key: p.record.partition_key.clone(),
                    explicit_hash_key: p.record.explicit_hash_key.clone(),
                    data: p.record.data.clone(),
                };
                if !aggregate.is_empty() && aggregate.encoded_len_with(&sub) > self.settings.aggregation_max_bytes {
                    let full = self.packed(std::mem::take(&mut aggregate), std::mem::take(&mut members), &shard);
                    entries.push(full.to(to));
                }
                if Aggregate::default().encoded_len_with(&sub) > self.settings.aggregation_max_bytes {
                    // Too big to share an aggregate: alone, as the KPL sends it.
                    entries.push(Entry::plain(p).to(to));
                    continue;
                }
                aggregate.push(sub);
                members.push(p);
            }
            if !members.is_empty() {
                entries.push(self.packed(aggregate, members, &shard).to(to));
            }
        }
        entries
    }

    /// One entry for records of `shard`: alone as it is, or as an aggregate routed by the
    /// first record's hash key.
    fn packed(&self, aggregate: Aggregate, mut members: Vec<Pending>, shard: &str) -> Entry {
        if members.len() == 1 {
            return Entry::plain(members.pop().expect("one"));
        }
        self.metrics.aggregates.inc();
        self.metrics.aggregated_records.inc_by(members.len() as u64);
        let first = &members[0].record;
        let input = PutRecordsRequestEntry {
            data: Some(Blob(aggregate.encode())),
            partition_key: Some(first.partition_key.clone()),
            explicit_hash_key: Some(hash_key_of(&first.partition_key, first.explicit_hash_key.as_deref()).to_string()),
        };
        Entry { input, members, predicted_shard: Some(shard.to_string()), owner: None }
    }

    /// The stream's shard map, read again when missing or old (an empty one, read again
    /// soon, while ListShards fails).
    async fn shard_map(&self) -> Arc<ShardMap> {
        let mut map = self.shard_map.lock().await;
        match map.as_ref().filter(|m| m.is_fresh()) {
            Some(fresh) => fresh.clone(),
            None => {
                let loaded = Arc::new(ShardMap::load(&self.brokers, &self.stream).await.unwrap_or_else(|e| {
                    tracing::warn!(stream = %self.stream, "no shard map, records go unaggregated to the endpoint: {e:?}");
                    ShardMap::unknown()
                }));
                *map = Some(loaded.clone());
                loaded
            }
        }
    }

    /// One PutRecords, to `owner` or else the endpoint.
    async fn send_request(&self, entries: Vec<Entry>, owner: Option<&str>) {
        let input = PutRecordsInput {
            stream_name: Some(self.stream.clone()),
            stream_arn: None,
            records: Some(entries.iter().map(|e| e.input.clone()).collect()),
        };
        self.metrics.put_requests.inc();
        self.metrics.batch_records.observe(entries.iter().map(|e| e.members.len()).sum::<usize>() as f64);
        let brokers = owner.map_or_else(|| self.brokers.clone(), |address| self.brokers.at(address));
        let answer = brokers.call::<_, PutRecordsOutput>("PutRecords", &input).await;
        if owner.is_some() && matches!(answer, Err(CallError::Transport(_))) {
            // The owner is gone or moved: read the owners again before the retries.
            *self.shard_map.lock().await = None;
        }
        match answer {
            Ok(out) if out.records.len() == entries.len() => {
                for (entry, result) in entries.into_iter().zip(out.records) {
                    match (result.shard_id, result.sequence_number, result.error_code) {
                        (Some(shard_id), _, None) if entry.predicted_shard.as_ref().is_some_and(|p| *p != shard_id) => {
                            // Resharded since the map was read: some of its records may lie
                            // outside the shard, where consumers drop them. Send them again.
                            *self.shard_map.lock().await = None;
                            let error = ApiError::internal(format!(
                                "the stream's shards changed: the records were stored in {shard_id}, not the expected shard"
                            ));
                            for p in entry.members {
                                self.retry_or_fail(p, error.clone(), true, "wrong_shard");
                            }
                        }
                        (Some(shard_id), Some(sequence_number), None) => {
                            self.metrics.records.with_label_values(&["stored"]).inc_by(entry.members.len() as u64);
                            for pending in entry.members {
                                let placed =
                                    Placed { shard_id: shard_id.clone(), sequence_number: sequence_number.clone() };
                                let _ = pending.reply.send(Ok(placed));
                            }
                        }
                        (_, _, code) => {
                            let code = code.as_deref().and_then(ErrorCode::parse).unwrap_or(ErrorCode::InternalFailure);
                            let error = ApiError::new(code, result.error_message.unwrap_or_default());
                            let reason =
                                if code == ErrorCode::ProvisionedThroughputExceeded { "throttled" } else { "failed" };
                            for p in entry.members {
                                self.retry_or_fail(p, error.clone(), retriable_code(code), reason);
                            }
                        }
                    }
                }
            }
            Ok(out) => {
                let error = ApiError::internal(format!(
                    "the brokers answered {} entries for a request of {}",
                    out.records.len(),
                    entries.len()
                ));
                for p in entries.into_iter().flat_map(|e| e.members) {
                    self.retry_or_fail(p, error.clone(), true, "failed");
                }
            }
            Err(e) => {
                let retriable = e.is_retriable();
                let error = match e {
                    CallError::Api(api) => api,
                    CallError::Transport(reason) => ApiError::internal(format!("brokers unreachable: {reason}")),
                };
                let reason =
                    if error.code == ErrorCode::ProvisionedThroughputExceeded { "throttled" } else { "failed" };
                for p in entries.into_iter().flat_map(|e| e.members) {
                    self.retry_or_fail(p, error.clone(), retriable, reason);
                }
            }
        }
    }

    /// Send a refused record again after a backoff with full jitter, unless its time to
    /// live would run out first; then its last error is its answer.
    fn retry_or_fail(&self, mut pending: Pending, error: ApiError, retriable: bool, reason: &str) {
        let ceiling =
            Duration::from_millis(100).saturating_mul(1 << pending.attempts.min(5)).min(Duration::from_secs(2));
        let backoff = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        if !retriable || Instant::now() + backoff >= pending.deadline {
            self.metrics.records.with_label_values(&["failed"]).inc();
            if self.settings.ack == Ack::Buffered {
                // Nobody waits for this answer: say it here.
                tracing::warn!(stream = %self.stream, "a buffered record was not stored: {}", error.message);
            }
            let _ = pending.reply.send(Err(error));
            return;
        }
        pending.attempts += 1;
        self.metrics.retries.with_label_values(&[reason]).inc();
        let requeue = self.requeue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = requeue.send(pending);
        });
    }
}
