//! One leased shard, read in order from its checkpoint: GetRecords, KPL aggregates split
//! into their user records (sub-sequence numbers as the KCL gives them: the position in the
//! aggregate; sub-records outside the shard's hash key range dropped, as the KCL does after
//! a reshard), delivered, then checkpointed. At the shard's end: SHARD_END.

use super::delivery::UserRecord;
use super::{Halt, Shared};
use crate::aggregation::deaggregate;
use crate::broker::CallError;
use crate::shards::hash_key_of;
use std::sync::Arc;
use std::time::Duration;
use streamfabric_api::ErrorCode;
use streamfabric_api::hashkey::HashRange;
use streamfabric_api::leases::{LATEST, Lease, SHARD_END, TRIM_HORIZON};
use streamfabric_api::model::{GetRecordsInput, GetRecordsOutput, GetShardIteratorInput, GetShardIteratorOutput};
use streamfabric_api::sequence::SequenceNumber;
use tokio::sync::watch;

/// A user record's place in the shard: sequence number (as `ordinal` gives it), then
/// sub-sequence number.
type Position = (u128, u64);

/// A sequence number as a number that orders like it within its shard (AWS's 56 digits do
/// not fit in a u128): the shard index above the record offset.
fn ordinal(sequence_number: &str) -> Option<u128> {
    let seq = SequenceNumber::parse("sequenceNumber", sequence_number).ok()?;
    Some((u128::from(seq.shard_index) << 64) | u128::from(seq.offset))
}

/// The sequence number of an `ordinal`.
fn sequence_number(ordinal: u128) -> String {
    SequenceNumber::new((ordinal >> 64) as u64, ordinal as u64).to_string()
}

/// Why a reader stops.
enum End {
    /// The halt was asked for.
    Halted,
    /// The lease is another worker's now.
    Lost,
    /// Read to SHARD_END and checkpointed.
    Finished,
}

pub async fn read(shared: Arc<Shared>, lease: Lease, halt: watch::Receiver<Halt>) {
    let shard = lease.lease_key.clone();
    let worker = shared.settings.worker_id.clone();
    let end = Reader::new(shared.clone(), lease, halt).run().await;
    let _ = shared.metrics.millis_behind_latest.remove_label_values(&[shard.as_str()]);
    match end {
        End::Finished => {
            // Nothing is left to do with it: released, so it counts for no worker's share.
            tracing::info!(%worker, %shard, "shard read to its end: SHARD_END checkpointed");
            let s = &shared.settings;
            let counter = shared.counters.lock().unwrap().remove(&shard);
            if let Some(counter) = counter {
                let _ = shared.leases.release_lease(&s.application, &s.stream, &shard, &s.worker_id, counter).await;
            }
        }
        End::Lost => tracing::info!(%worker, %shard, "lease lost: reading stopped"),
        End::Halted => tracing::info!(%worker, %shard, "stopped"),
    }
}

struct Reader {
    shared: Arc<Shared>,
    shard: String,
    range: HashRange,
    halt: watch::Receiver<Halt>,
    /// Records at or before this were processed (the checkpoint).
    done: Option<Position>,
    /// The last Kinesis record read, to get a new iterator after it.
    last_read: Option<String>,
}

impl Reader {
    fn new(shared: Arc<Shared>, lease: Lease, halt: watch::Receiver<Halt>) -> Reader {
        let range = HashRange {
            start: lease.hash_key_range.starting_hash_key.parse().unwrap_or(0),
            end: lease.hash_key_range.ending_hash_key.parse().unwrap_or(u128::MAX),
        };
        let checkpoint = &lease.checkpoint;
        let done = ordinal(&checkpoint.sequence_number).map(|seq| (seq, checkpoint.sub_sequence_number));
        let last_read = done.map(|_| checkpoint.sequence_number.clone());
        Reader { shared, shard: lease.lease_key, range, halt, done, last_read }
    }

    fn halted(&self) -> bool {
        *self.halt.borrow() != Halt::Run
    }

    async fn run(mut self) -> End {
        let mut iterator = None;
        let mut failures = 0u32;
        loop {
            if self.halted() {
                return End::Halted;
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => match self.iterator().await {
                    Ok(it) => it,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(shard = %self.shard, "GetShardIterator failed (retried): {e:?}");
                        self.pause(backoff(failures)).await;
                        continue;
                    }
                },
            };
            let input = GetRecordsInput {
                shard_iterator: Some(it),
                limit: Some(self.shared.settings.max_records as i64),
                stream_arn: None,
            };
            let page: GetRecordsOutput = match self.shared.brokers.call("GetRecords", &input).await {
                Ok(page) => page,
                Err(e) => {
                    // An expired iterator, a broker restarting: a fresh iterator from the last
                    // record read.
                    failures += 1;
                    if !matches!(&e, CallError::Api(api) if api.code == ErrorCode::ExpiredIterator) {
                        tracing::warn!(shard = %self.shard, "GetRecords failed (retried): {e:?}");
                    }
                    self.pause(backoff(failures)).await;
                    continue;
                }
            };
            failures = 0;
            let lag = self.shared.metrics.millis_behind_latest.with_label_values(&[self.shard.as_str()]);
            lag.set(page.millis_behind_latest);
            let read_any = !page.records.is_empty();
            let (batch, end_position) = self.user_records(&page);
            if let Some(last) = page.records.last() {
                self.last_read = Some(last.sequence_number.clone());
            }
            if !batch.is_empty() {
                match self
                    .shared
                    .http
                    .deliver(&self.shared, &self.shard, page.millis_behind_latest, &batch, &self.halt)
                    .await
                {
                    true => {}
                    false => return End::Halted,
                }
            }
            if let Some(position) = end_position.filter(|p| Some(*p) > self.done) {
                match self.checkpoint(&sequence_number(position.0), position.1).await {
                    Ok(()) => self.done = Some(position),
                    Err(end) => return end,
                }
            }
            match page.next_shard_iterator {
                Some(next) => iterator = Some(next),
                None => {
                    return match self.checkpoint(SHARD_END, 0).await {
                        Ok(()) => End::Finished,
                        Err(end) => end,
                    };
                }
            }
            if !read_any {
                self.pause(self.shared.settings.idle_poll).await;
            }
        }
    }

    /// Sleep, cut short by a halt.
    async fn pause(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, self.halt.wait_for(|h| *h != Halt::Run)).await;
    }

    /// An iterator at the first record not yet processed.
    async fn iterator(&self) -> Result<String, CallError> {
        let s = &self.shared.settings;
        let (kind, at) = match (&self.last_read, self.done) {
            // Past what was read here; at the checkpoint's record when resuming a lease (its
            // later sub-records may be unprocessed), skipping what is at or before it.
            (Some(seq), Some((done, _))) if ordinal(seq) == Some(done) => ("AT_SEQUENCE_NUMBER", Some(seq.clone())),
            (Some(seq), _) => ("AFTER_SEQUENCE_NUMBER", Some(seq.clone())),
            (None, _) if s.initial_position == LATEST && self.done.is_none() => (LATEST, None),
            (None, _) => (TRIM_HORIZON, None),
        };
        let input = GetShardIteratorInput {
            stream_name: Some(s.stream.clone()),
            stream_arn: None,
            shard_id: Some(self.shard.clone()),
            shard_iterator_type: Some(kind.into()),
            starting_sequence_number: at,
            timestamp: None,
        };
        let out: GetShardIteratorOutput = self.shared.brokers.call("GetShardIterator", &input).await?;
        Ok(out.shard_iterator)
    }

    /// The page's user records not yet processed and sampled in, and the position of its
    /// last one (also when it was dropped, skipped or sampled out: the checkpoint moves past).
    fn user_records(&self, page: &GetRecordsOutput) -> (Vec<UserRecord>, Option<Position>) {
        let mut out = Vec::new();
        let mut end = None;
        for record in &page.records {
            let Some(seq) = ordinal(&record.sequence_number) else { continue };
            let subs = match deaggregate(&record.data.0) {
                Some(subs) => subs.into_iter().map(|s| (s.partition_key, s.explicit_hash_key, s.data, true)).collect(),
                None => vec![(record.partition_key.clone(), None, record.data.0.clone(), false)],
            };
            for (sub, (partition_key, explicit_hash_key, data, aggregated)) in subs.into_iter().enumerate() {
                let position = (seq, sub as u64);
                end = Some(position);
                if self.done.is_some_and(|done| position <= done) {
                    continue;
                }
                if aggregated && !self.range.contains(hash_key_of(&partition_key, explicit_hash_key.as_deref())) {
                    self.shared.metrics.dropped_out_of_range.inc();
                    continue;
                }
                let user = UserRecord {
                    sequence_number: record.sequence_number.clone(),
                    sub_sequence_number: sub as u64,
                    partition_key,
                    explicit_hash_key,
                    arrival_ms: record.approximate_arrival_timestamp.millis(),
                    data,
                };
                match self.shared.settings.sampling.sampled_out(&user) {
                    None => out.push(user),
                    Some(reason) => self.shared.metrics.sampled_out.with_label_values(&[reason]).inc(),
                }
            }
        }
        (out, end)
    }

    /// Checkpoint with the lease's current counter; a conflict with this worker still the
    /// owner (a renewal moved the counter) is retried with the new one.
    async fn checkpoint(&self, sequence: &str, sub: u64) -> Result<(), End> {
        let s = &self.shared.settings;
        for attempt in 0..20u32 {
            let Some(counter) = self.shared.counter(&self.shard) else { return Err(End::Lost) };
            let result = self
                .shared
                .leases
                .checkpoint(&s.application, &s.stream, &self.shard, &s.worker_id, counter, sequence, sub)
                .await;
            match result {
                Ok(lease) => {
                    self.shared.set_counter(&self.shard, lease.lease_counter);
                    self.shared.metrics.checkpoints.inc();
                    return Ok(());
                }
                Err(e) if e.is_conflict() => {
                    let leases = self.shared.leases.list_leases(&s.application, &s.stream).await.unwrap_or_default();
                    match leases.iter().find(|l| l.lease_key == self.shard) {
                        Some(l) if l.lease_owner.as_deref() == Some(s.worker_id.as_str()) => {
                            self.shared.set_counter(&self.shard, l.lease_counter)
                        }
                        _ => return Err(End::Lost),
                    }
                }
                Err(e) => {
                    tracing::warn!(shard = %self.shard, "checkpoint failed (retried): {e}");
                    tokio::time::sleep(backoff(attempt + 1)).await;
                }
            }
        }
        Err(End::Lost)
    }
}

/// 100 ms doubling to 5 s, with jitter.
pub(super) fn backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(100).saturating_mul(1 << failures.min(6)).min(Duration::from_secs(5));
    ceiling.mul_f64(rand::random_range(0.5..=1.0))
}
