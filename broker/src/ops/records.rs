//! PutRecord and PutRecords: validate, then one append path (`Broker::append`): route by
//! hash key, append to shard logs, wait for durability, answer per record in request order.

use super::validate;
use crate::broker::Broker;
use crate::catalog::Stream;
use crate::config::Durability;
use crate::log::{Appended, NewRecord};
use crate::shard::Shard;
use crate::tier::{WalChunk, WalRecord};
use std::sync::Arc;
use streamfabric_api::hashkey::{hash_of_partition_key, parse_explicit_hash_key};
use streamfabric_api::limits::{
    DEFAULT_MAX_RECORD_BYTES, MAX_LARGE_PUT_RECORDS_BYTES, MAX_PUT_RECORDS_BYTES, MAX_PUT_RECORDS_ENTRIES,
};
use streamfabric_api::model::*;
use streamfabric_api::names::PAUSED_TAG;
use streamfabric_api::put_records_answer::{PutRecordsAnswer, WrittenShard};
use streamfabric_api::sequence::SequenceNumber;
use streamfabric_api::types::Blob;
use streamfabric_api::{ApiError, ErrorCode, Violations};

/// Field paths for errors: `partitionKey` for PutRecord, `records.N.member.partitionKey`
/// for entry N (1-based) of PutRecords. Formatted only when an error names it, not once
/// per record checked.
#[derive(Clone, Copy)]
struct Field<'a> {
    entry: Option<usize>,
    name: &'a str,
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entry {
            Some(i) => write!(f, "records.{}.member.{}", i + 1, self.name),
            None => f.write_str(self.name),
        }
    }
}

fn field(entry: Option<usize>, name: &str) -> Field<'_> {
    Field { entry, name }
}

/// Durability `object`: what goes into the write-ahead object for one append (`records`
/// are the caller's copies, kept from before the append; their data is shared, not copied).
/// `epoch` is the shard's ownership epoch as it was before the append (see `write_epoch`).
fn chunk_of(stream: &Stream, shard: &Shard, epoch: u64, appended: Appended, records: Vec<NewRecord>) -> WalChunk {
    WalChunk {
        stream: stream.name.clone(),
        incarnation: stream.incarnation,
        shard: shard.id.clone(),
        epoch,
        first_offset: appended.first_offset,
        timestamp_ms: appended.timestamp_ms,
        records: records.into_iter().map(|r| WalRecord { partition_key: r.partition_key, data: r.data }).collect(),
    }
}

/// Where each record of a write went, in request order: its shard (a position in `shards`)
/// and offset, or why it was not stored.
pub(crate) struct Written {
    pub shards: Vec<Arc<Shard>>,
    pub records: Vec<Result<(usize, u64), ApiError>>,
}

/// What became of one shard's part of a write.
struct ShardOutcome {
    /// This many of its records, from the first, were admitted and appended at consecutive
    /// offsets from the first offset (or failed together).
    admitted: usize,
    appended: Result<u64, ApiError>,
    /// Why the others were not (refused, or throttled).
    refused: Option<ApiError>,
}

impl Broker {
    /// Writes wait while too much sealed data has not reached the object store (it is
    /// down): refusing them, retryably, bounds what a lost disk could take with it.
    fn check_upload_backlog(&self) -> Result<(), ApiError> {
        let backlog = self.archive.backlog_bytes();
        if backlog > self.config.upload_backlog_limit {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!(
                    "The object store is behind: {backlog} bytes of sealed segments await upload (limit {}). Retry later.",
                    self.config.upload_backlog_limit
                ),
            ));
        }
        Ok(())
    }

    /// Durability `object`: wait until the appended records are in the object store. On
    /// failure nothing of the request is acknowledged: the records stay in the local log
    /// (readers may see them), and a client retry may store them twice, as with Kinesis.
    async fn write_ahead(&self, chunks: Vec<WalChunk>) -> Result<(), ApiError> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.wal.write(chunks).await.map_err(|e| {
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!("The records could not be made durable in the object store ({e}). Retry later."),
            )
        })
    }

    /// Durability `object`: the epoch this append's write-ahead chunk carries, the shard
    /// claimed first if this broker alone has not claimed it yet (as its first upload would).
    ///
    /// Taken before the append, never after: a replay keeps a chunk only below the first
    /// offset any later epoch wrote (`archive::records_past`), so the epochs of one log's
    /// chunks must not decrease with their offsets. Read after the append, an unclaimed
    /// shard's chunk (epoch 0) could follow, at higher offsets, the chunk of a write that
    /// appended earlier but read the epoch after the claim: an acknowledged chunk that a
    /// restore from the bucket drops.
    async fn write_epoch(&self, shard: &Shard) -> Result<u64, ApiError> {
        match self.archive.ownership.epoch(self.archive.tier(), &shard.bucket).await {
            Ok(Some(epoch)) => Ok(epoch),
            // Fenced (its writes are refused), or in a cluster, where only a handoff claims
            // (and serving follows it).
            Ok(None) => Ok(0),
            Err(e) => Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!("The shard could not be claimed in the object store ({e}). Retry later."),
            )),
        }
    }

    /// In a cluster, a write begins only while the membership lease holds (see `fabric`).
    fn begin_write(&self) -> Result<u64, ApiError> {
        self.fabric.as_ref().map_or(Ok(0), |f| f.begin_write())
    }

    /// In a cluster, only while this broker's membership lease holds and has held since
    /// `mark` (see `fabric`).
    fn check_may_acknowledge(&self, mark: u64) -> Result<(), ApiError> {
        self.fabric.as_ref().map_or(Ok(()), |f| f.check_may_acknowledge(mark))
    }

    fn object_durability(&self) -> bool {
        self.config.durability == Durability::Object
    }

    /// The largest record data the named stream takes (the broker's limit for a stream not
    /// known here: the stream's own check follows wherever it is served).
    pub(crate) fn record_limit(&self, name: &Option<String>, arn: &Option<String>) -> usize {
        let default = self.config.max_record_bytes;
        self.resolve(name, arn).map_or(default, |stream| stream.max_record_bytes(default))
    }

    /// Check one record and give its hash key (explicit, or the MD5 of its partition key).
    fn record_hash(
        &self,
        checks: &mut Violations,
        entry: Option<usize>,
        record: (Option<&Blob>, Option<&str>, Option<&str>),
        max_record_bytes: usize,
    ) -> Option<u128> {
        let (data, key, explicit_hash_key) = record;
        let data = checks.check(data.ok_or_else(|| ApiError::missing(&field(entry, "data").to_string())));
        let key = checks.check(key.ok_or_else(|| ApiError::missing(&field(entry, "partitionKey").to_string())));
        if let Some(key) = key {
            checks.check(validate::partition_key(field(entry, "partitionKey"), key));
        }
        if let Some(data) = data {
            checks.check(validate::record_data(field(entry, "data"), data.0.len(), max_record_bytes));
        }
        match explicit_hash_key {
            Some(h) => checks.check(parse_explicit_hash_key(field(entry, "explicitHashKey"), h)),
            None => key.map(hash_of_partition_key),
        }
    }

    /// Check a PutRecords request as a whole (entries, size, each record) and give each
    /// record's hash key, in request order. Every violated constraint is named in one answer.
    pub(crate) fn check_put_records(
        &self,
        entries: &[PutRecordsRequestEntry],
        max_record_bytes: usize,
    ) -> Result<Vec<u128>, ApiError> {
        if entries.is_empty() {
            return Err(ApiError::validation("records", "[]", "Member must have length greater than or equal to 1"));
        }
        if entries.len() > MAX_PUT_RECORDS_ENTRIES {
            return Err(ApiError::validation(
                "records",
                format!("<{} entries>", entries.len()),
                &format!("Member must have length less than or equal to {MAX_PUT_RECORDS_ENTRIES}"),
            ));
        }
        let mut checks = Violations::default();
        let hashes: Vec<Option<u128>> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let record = (e.data.as_ref(), e.partition_key.as_deref(), e.explicit_hash_key.as_deref());
                self.record_hash(&mut checks, Some(i), record, max_record_bytes)
            })
            .collect();
        checks.finish()?;
        // AWS: 5 MiB per request, 10 MiB for a stream whose records may be larger than 1 MiB.
        let limit = if max_record_bytes > DEFAULT_MAX_RECORD_BYTES {
            MAX_LARGE_PUT_RECORDS_BYTES
        } else {
            MAX_PUT_RECORDS_BYTES
        };
        let total: usize = entries
            .iter()
            .map(|e| e.data.as_ref().map_or(0, |d| d.0.len()) + e.partition_key.as_ref().map_or(0, |k| k.len()))
            .sum();
        if total > limit {
            return Err(ApiError::invalid(format!(
                "Records size exceeds the limit: the request carries {total} bytes of data and partition keys; PutRecords accepts at most {limit} bytes ({} MiB) for this stream.",
                limit >> 20
            )));
        }
        Ok(hashes.into_iter().map(|h| h.expect("checked")).collect())
    }

    /// The hash key of a PutRecord's record.
    pub(crate) fn check_put_record(&self, input: &PutRecordInput, max_record_bytes: usize) -> Result<u128, ApiError> {
        let mut checks = Violations::default();
        let record = (input.data.as_ref(), input.partition_key.as_deref(), input.explicit_hash_key.as_deref());
        let hash = self.record_hash(&mut checks, None, record, max_record_bytes);
        if let Some(s) = &input.sequence_number_for_ordering {
            // Ordering is per shard already; the value must still be well formed.
            checks.check(SequenceNumber::parse("sequenceNumberForOrdering", s));
        }
        checks.finish()?;
        Ok(hash.expect("checked"))
    }

    /// A paused stream (spec.paused of its DataStream) takes no writes; reads go on.
    fn check_not_paused(&self, stream: &Stream) -> Result<(), ApiError> {
        if stream.is_paused() {
            return Err(ApiError::in_use(format!(
                "Stream {} under account {} is paused for writes (tag {PAUSED_TAG}=true); reads go on. \
                 Remove the tag, or clear the DataStream's spec.paused, to resume.",
                stream.name, self.config.account
            )));
        }
        Ok(())
    }

    fn throttled(&self, stream: &Stream, shard: &Shard) -> ApiError {
        ApiError::new(
            ErrorCode::ProvisionedThroughputExceeded,
            format!(
                "Rate exceeded for shard {} in stream {} under account {}.",
                shard.id, stream.name, self.config.account
            ),
        )
    }

    /// The one way records are written, for PutRecord and PutRecords alike (received or
    /// forwarded), each record with its hash key. Per shard, concurrently: refused unless
    /// this broker serves and owns it, throttled, appended to the log's group commit. Then,
    /// durability `object`, one write-ahead object for the whole request; then the fencing
    /// checks: a shard taken by another broker meanwhile acknowledges nothing, nor does a
    /// broker whose cluster lease lapsed (Err: nothing of the request is acknowledged).
    pub(crate) async fn append(&self, stream: &Stream, records: Vec<(u128, NewRecord)>) -> Result<Written, ApiError> {
        self.check_not_paused(stream)?;
        self.check_upload_backlog()?;
        let mark = self.begin_write()?;
        let _writing = stream.write_gate.read().await;
        let topology = stream.topology();

        // Group by shard; `placed` keeps each record's shard and place in its group.
        let mut shards: Vec<Arc<Shard>> = Vec::new();
        let mut groups: Vec<Vec<NewRecord>> = Vec::new();
        let mut placed = Vec::with_capacity(records.len());
        for (hash, record) in records {
            let shard = topology.route(hash);
            let s = shards.iter().position(|s| Arc::ptr_eq(s, shard)).unwrap_or_else(|| {
                shards.push(shard.clone());
                groups.push(Vec::new());
                shards.len() - 1
            });
            placed.push((s, groups[s].len()));
            groups[s].push(record);
        }

        // Durability `object`: each shard's epoch for its write-ahead chunk, before any append.
        let mut epochs = Vec::with_capacity(shards.len());
        for shard in &shards {
            epochs.push(if self.object_durability() { self.write_epoch(shard).await? } else { 0 });
        }

        let broker_id = self.archive.ownership.broker_id();
        let mut outcomes: Vec<ShardOutcome> = Vec::with_capacity(shards.len());
        let mut appends = tokio::task::JoinSet::new();
        for (s, (shard, mut group)) in shards.iter().zip(groups).enumerate() {
            if let Some(refused) = shard.write_refusal(broker_id) {
                outcomes.push(ShardOutcome { admitted: 0, appended: Ok(0), refused: Some(refused) });
                continue;
            }
            let admitted = shard.admit(&group);
            let refused = (admitted < group.len()).then(|| self.throttled(stream, shard));
            outcomes.push(ShardOutcome { admitted, appended: Ok(0), refused });
            if admitted == 0 {
                continue;
            }
            group.truncate(admitted);
            let (shard, metrics, object, epoch) =
                (shard.clone(), self.metrics.clone(), self.object_durability(), epochs[s]);
            appends.spawn(async move {
                let kept = object.then(|| group.clone());
                (s, shard.append_local(&metrics, group).await, kept.map(|records| (epoch, records)))
            });
        }
        let mut chunks = Vec::new();
        while let Some(joined) = appends.join_next().await {
            let (s, appended, kept) = joined.map_err(|e| ApiError::internal(format!("append task failed: {e}")))?;
            if let (Ok(appended), Some((epoch, records))) = (&appended, kept) {
                chunks.push(chunk_of(stream, &shards[s], epoch, *appended, records));
            }
            outcomes[s].appended = appended.map(|a| a.first_offset);
        }
        // One write-ahead object holds every shard's records of the request (and others').
        self.write_ahead(chunks).await?;
        for (outcome, shard) in outcomes.iter_mut().zip(&shards) {
            if outcome.admitted > 0 && outcome.appended.is_ok() && shard.bucket.is_fenced() {
                outcome.appended = Err(shard.fenced_error(broker_id));
            }
        }
        self.check_may_acknowledge(mark)?;
        for (outcome, shard) in outcomes.iter().zip(&shards) {
            if let Ok(first) = outcome.appended
                && outcome.admitted > 0
            {
                shard.announce_durable(first + outcome.admitted as u64);
            }
        }

        let records = placed
            .into_iter()
            .map(|(s, i)| {
                let outcome = &outcomes[s];
                if i < outcome.admitted {
                    outcome.appended.clone().map(|first| (s, first + i as u64))
                } else {
                    Err(outcome.refused.clone().expect("records not admitted have a reason"))
                }
            })
            .collect();
        Ok(Written { shards, records })
    }

    pub(crate) async fn put_record(&self, input: PutRecordInput) -> Result<PutRecordOutput, ApiError> {
        let hash = self.check_put_record(&input, self.record_limit(&input.stream_name, &input.stream_arn))?;
        let (key, data) = (input.partition_key.unwrap_or_default(), input.data.unwrap_or_default());
        let stream = self.resolve_serving(&input.stream_name, &input.stream_arn)?;
        let record = NewRecord { partition_key: key, data: data.0 };
        let written = self.append(&stream, vec![(hash, record)]).await?;
        let (s, offset) = written.records.into_iter().next().expect("one record written")?;
        let shard = &written.shards[s];
        Ok(PutRecordOutput {
            shard_id: shard.id.clone(),
            sequence_number: SequenceNumber::new(shard.index, offset).text(),
            encryption_type: stream.encryption_type().into(),
        })
    }

    pub(crate) async fn put_records(&self, mut input: PutRecordsInput) -> Result<PutRecordsAnswer, ApiError> {
        let entries = input.records.take().ok_or_else(|| ApiError::missing("records"))?;
        let hashes = self.check_put_records(&entries, self.record_limit(&input.stream_name, &input.stream_arn))?;
        self.put_checked_records(input, entries, hashes).await
    }

    /// PutRecords of entries already checked (`check_put_records`), with their hash keys.
    pub(crate) async fn put_checked_records(
        &self,
        input: PutRecordsInput,
        entries: Vec<PutRecordsRequestEntry>,
        hashes: Vec<u128>,
    ) -> Result<PutRecordsAnswer, ApiError> {
        let stream = self.resolve_serving(&input.stream_name, &input.stream_arn)?;
        let records = hashes.into_iter().zip(entries).map(|(hash, e)| {
            (hash, NewRecord { partition_key: e.partition_key.unwrap_or_default(), data: e.data.unwrap_or_default().0 })
        });
        let written = self.append(&stream, records.collect()).await?;
        Ok(PutRecordsAnswer {
            shards: written.shards.iter().map(|s| WrittenShard { index: s.index, id: s.id.clone() }).collect(),
            records: written.records,
            encryption_type: stream.encryption_type().into(),
        })
    }
}
