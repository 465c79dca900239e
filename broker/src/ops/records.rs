//! PutRecord and PutRecords: validate, route by hash key, append to shard logs, answer
//! per record in request order.

use super::validate;
use crate::broker::Broker;
use crate::catalog::{Shard, Stream};
use crate::config::Durability;
use crate::log::{Appended, NewRecord};
use crate::metrics::Metrics;
use crate::tier::{WalChunk, WalRecord};
use std::sync::Arc;
use std::time::Instant;
use streamfabric_api::hashkey::{hash_of_partition_key, parse_explicit_hash_key};
use streamfabric_api::limits::{MAX_PUT_RECORDS_BYTES, MAX_PUT_RECORDS_ENTRIES};
use streamfabric_api::model::*;
use streamfabric_api::names::PAUSED_TAG;
use streamfabric_api::sequence::SequenceNumber;
use streamfabric_api::types::Blob;
use streamfabric_api::{ApiError, ErrorCode};

/// Field paths for errors: `partitionKey` for PutRecord, `records.N.member.partitionKey`
/// for entry N (1-based) of PutRecords.
fn field(entry: Option<usize>, name: &str) -> String {
    match entry {
        Some(i) => format!("records.{}.member.{name}", i + 1),
        None => name.to_string(),
    }
}

/// Append to one shard and account for it.
async fn append(metrics: &Metrics, shard: &Shard, records: Vec<NewRecord>) -> Result<Appended, ApiError> {
    let bytes: usize = records.iter().map(|r| r.data.len() + r.partition_key.len()).sum();
    let count = records.len() as u64;
    let started = Instant::now();
    let appended = shard.log.append(records).await.map_err(|e| {
        tracing::error!(shard = %shard.id, "append failed: {e}");
        ApiError::internal("The records could not be stored.")
    })?;
    metrics.append_seconds.observe(started.elapsed().as_secs_f64());
    shard.metrics.incoming_records.inc_by(count);
    shard.metrics.incoming_bytes.inc_by(bytes as u64);
    Ok(appended)
}

/// Durability `object`: what goes into the write-ahead object for one append (`records`
/// are the caller's copies, kept from before the append; their data is shared, not copied).
fn chunk_of(stream: &Stream, shard: &Shard, appended: Appended, records: Vec<NewRecord>) -> WalChunk {
    WalChunk {
        stream: stream.name.clone(),
        incarnation: stream.incarnation,
        shard: shard.id.clone(),
        first_offset: appended.first_offset,
        timestamp_ms: appended.timestamp_ms,
        records: records.into_iter().map(|r| WalRecord { partition_key: r.partition_key, data: r.data }).collect(),
    }
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

    /// Check one record and give its hash key (explicit, or the MD5 of its partition key).
    fn record_hash(
        &self,
        entry: Option<usize>,
        data: Option<&Blob>,
        key: Option<&str>,
        explicit_hash_key: Option<&str>,
    ) -> Result<u128, ApiError> {
        let data = data.ok_or_else(|| ApiError::missing(&field(entry, "data")))?;
        let key = key.ok_or_else(|| ApiError::missing(&field(entry, "partitionKey")))?;
        validate::partition_key(&field(entry, "partitionKey"), key)?;
        validate::record_data(&field(entry, "data"), data.0.len(), self.config.max_record_bytes)?;
        match explicit_hash_key {
            Some(h) => parse_explicit_hash_key(&field(entry, "explicitHashKey"), h),
            None => Ok(hash_of_partition_key(key)),
        }
    }

    /// Check a PutRecords request as a whole (entries, size, each record) and give each
    /// record's hash key, in request order.
    pub(crate) fn check_put_records(&self, entries: &[PutRecordsRequestEntry]) -> Result<Vec<u128>, ApiError> {
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
        let total: usize = entries
            .iter()
            .map(|e| e.data.as_ref().map_or(0, |d| d.0.len()) + e.partition_key.as_ref().map_or(0, |k| k.len()))
            .sum();
        if total > MAX_PUT_RECORDS_BYTES {
            return Err(ApiError::invalid(format!(
                "Records size exceeds the limit: the request carries {total} bytes of data and partition keys; PutRecords accepts at most {MAX_PUT_RECORDS_BYTES} bytes (5 MiB)."
            )));
        }
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                self.record_hash(Some(i), e.data.as_ref(), e.partition_key.as_deref(), e.explicit_hash_key.as_deref())
            })
            .collect()
    }

    /// The hash key of a PutRecord's record.
    pub(crate) fn check_put_record(&self, input: &PutRecordInput) -> Result<u128, ApiError> {
        let hash = self.record_hash(
            None,
            input.data.as_ref(),
            input.partition_key.as_deref(),
            input.explicit_hash_key.as_deref(),
        )?;
        if let Some(s) = &input.sequence_number_for_ordering {
            // Ordering is per shard already; the value must still be well formed.
            SequenceNumber::parse("sequenceNumberForOrdering", s)?;
        }
        Ok(hash)
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

    /// A shard another broker has taken in the object store is not written here any more;
    /// in a cluster, neither is one this broker does not serve (now).
    fn fenced(&self, stream: &Stream, shard: &Shard) -> Option<ApiError> {
        if !shard.is_serving() {
            return Some(crate::fabric::routes::moving(&stream.name, &shard.id));
        }
        self.archive.ownership.is_fenced(&stream.name, &shard.id).then(|| {
            ApiError::internal(format!(
                "Shard {} in stream {} is owned by another broker now (its object-store epoch moved on); \
                 this broker ({}) no longer writes it.",
                shard.id,
                stream.name,
                self.archive.ownership.broker_id()
            ))
        })
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

    pub(crate) async fn put_record(&self, input: PutRecordInput) -> Result<PutRecordOutput, ApiError> {
        let hash = self.check_put_record(&input)?;
        let (key, data) = (input.partition_key.unwrap_or_default(), input.data.unwrap_or_default());
        let stream = self.resolve_serving(&input.stream_name, &input.stream_arn)?;
        self.check_not_paused(&stream)?;
        self.check_upload_backlog()?;
        let mark = self.begin_write()?;
        let _writing = stream.write_gate.read().await;
        let topology = stream.topology();
        let shard = topology.route(hash);
        if let Some(e) = self.fenced(&stream, shard) {
            return Err(e);
        }
        let size = data.0.len() + key.len();
        if shard.throttle.admit_writes(std::iter::once(size)) == 0 {
            shard.metrics.write_throttled.inc();
            return Err(self.throttled(&stream, shard));
        }
        let records = vec![NewRecord { partition_key: key, data: data.0 }];
        let kept = self.object_durability().then(|| records.clone());
        let appended = append(&self.metrics, shard, records).await?;
        if let Some(records) = kept {
            self.write_ahead(vec![chunk_of(&stream, shard, appended, records)]).await?;
        }
        self.check_may_acknowledge(mark)?;
        Ok(PutRecordOutput {
            shard_id: shard.id.clone(),
            sequence_number: SequenceNumber::new(shard.index, appended.first_offset).to_string(),
            encryption_type: "NONE".into(),
        })
    }

    pub(crate) async fn put_records(&self, mut input: PutRecordsInput) -> Result<PutRecordsOutput, ApiError> {
        let entries = input.records.take().ok_or_else(|| ApiError::missing("records"))?;
        let hashes = self.check_put_records(&entries)?;
        self.put_checked_records(input, entries, hashes).await
    }

    /// PutRecords of entries already checked (`check_put_records`), with their hash keys.
    pub(crate) async fn put_checked_records(
        &self,
        input: PutRecordsInput,
        entries: Vec<PutRecordsRequestEntry>,
        hashes: Vec<u128>,
    ) -> Result<PutRecordsOutput, ApiError> {
        let stream = self.resolve_serving(&input.stream_name, &input.stream_arn)?;
        self.check_not_paused(&stream)?;
        self.check_upload_backlog()?;
        let mark = self.begin_write()?;
        let _writing = stream.write_gate.read().await;
        let topology = stream.topology();

        // Group by shard, keeping each record's position in the request.
        let mut groups: Vec<(Arc<Shard>, Vec<usize>, Vec<NewRecord>)> = Vec::new();
        for (i, (e, hash)) in entries.into_iter().zip(hashes).enumerate() {
            let shard = topology.route(hash);
            let g = match groups.iter().position(|g| Arc::ptr_eq(&g.0, shard)) {
                Some(g) => g,
                None => {
                    groups.push((shard.clone(), Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[g].1.push(i);
            groups[g].2.push(NewRecord {
                partition_key: e.partition_key.unwrap_or_default(),
                data: e.data.unwrap_or_default().0,
            });
        }
        let mut results = vec![PutRecordsResultEntry::default(); groups.iter().map(|g| g.1.len()).sum()];
        let mut failed = 0;

        // Shards append concurrently; each shard's batch is one group-commit member.
        let mut appends = tokio::task::JoinSet::new();
        for (shard, positions, mut records) in groups {
            if let Some(err) = self.fenced(&stream, &shard) {
                for &p in &positions {
                    results[p].error_code = Some(err.code.as_entry_code().as_str().into());
                    results[p].error_message = Some(err.message.clone());
                }
                failed += positions.len();
                continue;
            }
            let admitted = shard.throttle.admit_writes(records.iter().map(|r| r.data.len() + r.partition_key.len()));
            if admitted < records.len() {
                let refused = records.len() - admitted;
                shard.metrics.write_throttled.inc_by(refused as u64);
                let err = self.throttled(&stream, &shard);
                for &p in &positions[admitted..] {
                    results[p].error_code = Some(err.code.as_str().into());
                    results[p].error_message = Some(err.message.clone());
                }
                failed += refused;
                records.truncate(admitted);
            }
            if records.is_empty() {
                continue;
            }
            let metrics = self.metrics.clone();
            let object = self.object_durability();
            appends.spawn(async move {
                let kept = object.then(|| records.clone());
                let outcome = append(&metrics, &shard, records).await;
                (shard, positions, outcome, kept)
            });
        }
        let mut chunks = Vec::new();
        while let Some(joined) = appends.join_next().await {
            let (shard, positions, outcome, kept) =
                joined.map_err(|e| ApiError::internal(format!("append task failed: {e}")))?;
            if let (Ok(appended), Some(records)) = (&outcome, kept) {
                chunks.push(chunk_of(&stream, &shard, *appended, records));
            }
            match outcome.map(|a| a.first_offset) {
                Ok(first) => {
                    for (n, &p) in positions.iter().enumerate() {
                        if results[p].error_code.is_none() {
                            results[p].shard_id = Some(shard.id.clone());
                            results[p].sequence_number =
                                Some(SequenceNumber::new(shard.index, first + n as u64).to_string());
                        }
                    }
                }
                Err(e) => {
                    for &p in &positions {
                        if results[p].error_code.is_none() {
                            results[p].error_code = Some(ErrorCode::InternalFailure.as_str().into());
                            results[p].error_message = Some(e.message.clone());
                            failed += 1;
                        }
                    }
                }
            }
        }
        // One write-ahead object holds every shard's records of the request (and others').
        self.write_ahead(chunks).await?;
        self.check_may_acknowledge(mark)?;
        Ok(PutRecordsOutput { failed_record_count: failed as i64, records: results, encryption_type: "NONE".into() })
    }
}
