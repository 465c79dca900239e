//! One shard as this broker holds it, in one place: its log, whether this broker serves it,
//! its state in the object store (`bucket`), its throttle and its metrics; and the steps of
//! its append path (refused unless served and owned, throttled, appended to the local log's
//! group commit). The request-level path around them, with the durability wait and the
//! fencing check after it, is `Broker::append` in `ops::records`.

pub mod bucket;

use crate::log::{Appended, NewRecord, ShardLog};
use crate::metrics::{Metrics, ShardMetrics};
use crate::throttle::ShardThrottle;
use bucket::ShardBucket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use streamfabric_api::ApiError;
use streamfabric_api::hashkey::HashRange;
use tokio::sync::watch;

pub struct Shard {
    pub index: u64,
    pub id: String,
    pub range: HashRange,
    pub log: ShardLog,
    pub throttle: ShardThrottle,
    pub metrics: ShardMetrics,
    /// Its state in the object store; shared with the uploads queued for it.
    pub bucket: Arc<ShardBucket>,
    /// This broker appends to and reads this log. Always, for a broker alone; in a cluster
    /// only while it owns the shard (the others forward to the owner).
    serving: AtomicBool,
    /// The end of what has been acknowledged to writers: SubscribeToShard streams wait on it
    /// to push records as they become durable.
    durable_end: watch::Sender<u64>,
}

impl Shard {
    /// Not serving until `set_serving`.
    pub fn new(
        index: u64,
        id: String,
        range: HashRange,
        log: ShardLog,
        throttle: ShardThrottle,
        metrics: ShardMetrics,
        bucket: Arc<ShardBucket>,
    ) -> Shard {
        let durable_end = watch::Sender::new(log.bounds().end_offset);
        Shard { index, id, range, log, throttle, metrics, bucket, serving: AtomicBool::new(false), durable_end }
    }

    /// Records up to `end` have been acknowledged: wake the subscriptions waiting for them.
    pub fn announce_durable(&self, end: u64) {
        self.durable_end.send_if_modified(|known| {
            let later = end > *known;
            *known = (*known).max(end);
            later
        });
    }

    pub fn watch_durable(&self) -> watch::Receiver<u64> {
        self.durable_end.subscribe()
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    /// Why this broker does not write the shard now, if it does not: it does not serve it
    /// (a cluster's handoff), or another broker took it in the object store.
    pub fn write_refusal(&self, broker_id: &str) -> Option<ApiError> {
        if !self.is_serving() {
            return Some(crate::fabric::routes::moving(&self.bucket.stream, &self.id));
        }
        self.bucket.is_fenced().then(|| self.fenced_error(broker_id))
    }

    pub fn fenced_error(&self, broker_id: &str) -> ApiError {
        ApiError::internal(format!(
            "Shard {} in stream {} is owned by another broker now (its object-store epoch moved on); \
             this broker ({broker_id}) no longer writes it.",
            self.id, self.bucket.stream
        ))
    }

    /// How many of `records`, from the first, the shard's write limits admit now.
    pub fn admit(&self, records: &[NewRecord]) -> usize {
        let sizes = records.iter().map(|r| r.data.len() + r.partition_key.len());
        let admitted = self.throttle.admit_writes(sizes).min(records.len());
        self.metrics.write_throttled.inc_by((records.len() - admitted) as u64);
        admitted
    }

    /// Append to the local log (one member of its group commit: durable on disk when this
    /// returns) and account for it.
    pub async fn append_local(&self, metrics: &Metrics, records: Vec<NewRecord>) -> Result<Appended, ApiError> {
        let bytes: usize = records.iter().map(|r| r.data.len() + r.partition_key.len()).sum();
        let count = records.len() as u64;
        let started = Instant::now();
        let appended = self.log.append(records).await.map_err(|e| {
            tracing::error!(stream = %self.bucket.stream, shard = %self.id, "append failed: {e}");
            ApiError::internal("The records could not be stored.")
        })?;
        metrics.append_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.incoming_records.inc_by(count);
        self.metrics.incoming_bytes.inc_by(bytes as u64);
        Ok(appended)
    }
}
