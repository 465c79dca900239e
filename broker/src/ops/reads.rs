//! GetShardIterator and GetRecords.

use super::shards::shard_index_arg;
use super::validate::{self, bounded, required};
use crate::broker::Broker;
use crate::catalog::Stream;
use crate::shard::Shard;
use crate::tokens::IteratorToken;
use std::sync::Arc;
use streamfabric_api::limits::{MAX_GET_RECORDS_BYTES, MAX_GET_RECORDS_LIMIT};
use streamfabric_api::model::*;
use streamfabric_api::names::shard_id;
use streamfabric_api::sequence::{Place, SequenceNumber};
use streamfabric_api::types::{Blob, Timestamp};
use streamfabric_api::{ApiError, ErrorCode, Violations};

pub(crate) const ITERATOR_TYPES: &[&str] =
    &["AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"];

impl Broker {
    pub(crate) fn shard_of(&self, stream: &crate::catalog::Stream, index: u64) -> Result<Arc<Shard>, ApiError> {
        stream.shard(index).ok_or_else(|| {
            ApiError::not_found(format!(
                "Shard {} in stream {} under account {} does not exist.",
                streamfabric_api::names::shard_id(index),
                stream.name,
                self.config.account
            ))
        })
    }

    pub(crate) async fn get_shard_iterator(
        &self,
        input: GetShardIteratorInput,
    ) -> Result<GetShardIteratorOutput, ApiError> {
        let mut checks = Violations::default();
        let shard_id = checks.check(required(&input.shard_id, "shardId"));
        let kind = checks.check(required(&input.shard_iterator_type, "shardIteratorType"));
        let kind = kind.and_then(|kind| checks.check(validate::one_of("shardIteratorType", kind, ITERATOR_TYPES)));
        checks.finish()?;
        let (Some(shard_id), Some(kind)) = (shard_id, kind) else { unreachable!("checked") };
        let stream = self.resolve_serving(&input.stream_name, &input.stream_arn)?;
        let shard = self.shard_of(&stream, shard_index_arg("shardId", shard_id)?)?;
        let starting = StartingAt {
            operation: "GetShardIterator",
            kind,
            sequence_number: input.starting_sequence_number.as_deref(),
            timestamp: input.timestamp,
        };
        let position = self.start_offset(&stream, &shard, starting).await?;
        let token = IteratorToken {
            stream: stream.name.clone(),
            incarnation: stream.incarnation,
            shard_index: shard.index,
            position,
            issued_ms: Timestamp::now().millis(),
        };
        Ok(GetShardIteratorOutput { shard_iterator: self.signer.iterator(&token) })
    }

    pub(crate) async fn get_records(&self, input: GetRecordsInput) -> Result<GetRecordsOutput, ApiError> {
        let mut checks = Violations::default();
        let iterator = checks.check(required(&input.shard_iterator, "shardIterator"));
        if let Some(iterator) = iterator.filter(|i| i.is_empty() || i.len() > 512) {
            checks.check::<()>(Err(ApiError::validation(
                "shardIterator",
                iterator,
                "Member must have length between 1 and 512",
            )));
        }
        let limit = checks.check(bounded("limit", input.limit, 1, MAX_GET_RECORDS_LIMIT, MAX_GET_RECORDS_LIMIT));
        checks.finish()?;
        let (Some(iterator), Some(limit)) = (iterator, limit.map(|l| l as usize)) else { unreachable!("checked") };
        let now = Timestamp::now().millis();
        let token = self.signer.parse_iterator(iterator, now)?;
        if let Some(arn) = &input.stream_arn {
            let named = validate::stream_name(&None, &Some(arn.clone()))?;
            if named != token.stream {
                return Err(ApiError::invalid(format!(
                    "The ShardIterator belongs to stream {}, not to {arn}.",
                    token.stream
                )));
            }
        }
        let stream = self.catalog.get(&token.stream).ok_or_else(|| self.not_found(&token.stream))?;
        if stream.incarnation != token.incarnation {
            return Err(ApiError::invalid(format!(
                "The ShardIterator belongs to an earlier stream named {} that was deleted.",
                token.stream
            )));
        }
        if !stream.status().serves_data() {
            return Err(self.not_found(&stream.name));
        }
        let shard = self.shard_of(&stream, token.shard_index)?;
        if !shard.throttle.admit_read_call() {
            shard.metrics.read_throttled.inc();
            return Err(ApiError::new(
                ErrorCode::ProvisionedThroughputExceeded,
                format!(
                    "Rate exceeded for shard {} in stream {} under account {}.",
                    shard.id, stream.name, self.config.account
                ),
            ));
        }
        let batch = self.read_batch(&stream, &shard, token.position, limit, MAX_GET_RECORDS_BYTES, now).await?;
        shard.throttle.charge_read_bytes(batch.bytes);
        let Batch { records, next, millis_behind, child_shards, .. } = batch;
        let next_shard_iterator = match child_shards {
            Some(_) => None,
            None => Some(self.signer.iterator(&IteratorToken { position: next, issued_ms: now, ..token })),
        };
        Ok(GetRecordsOutput { records, next_shard_iterator, millis_behind_latest: millis_behind, child_shards })
    }

    /// Where a reader of `shard` starts, as GetShardIterator and SubscribeToShard name it.
    pub(crate) async fn start_offset(
        &self,
        stream: &Stream,
        shard: &Shard,
        starting: StartingAt<'_>,
    ) -> Result<u64, ApiError> {
        let StartingAt { operation, kind, sequence_number, timestamp } = starting;
        let bounds = shard.log.bounds();
        Ok(match kind {
            "TRIM_HORIZON" => bounds.start_offset,
            "LATEST" => bounds.end_offset,
            "AT_TIMESTAMP" => {
                let at = timestamp.ok_or_else(|| {
                    ApiError::invalid("The timestamp must be specified for shardIteratorType AT_TIMESTAMP.")
                })?;
                let local = shard.log.offset_at_timestamp(at.millis()).map_err(|e| {
                    tracing::error!(shard = %shard.id, "time index lookup: {e}");
                    ApiError::internal("The shard's time index could not be read.")
                })?;
                // Records evicted from local disk may be the first ones at or after it.
                let local_start = shard.log.local_start_offset();
                if bounds.start_offset < local_start && local <= local_start {
                    let remote = self.tiers.offset_at_timestamp(stream, shard, at.millis(), bounds.start_offset);
                    remote.await.map_err(|e| remote_error(shard, e))?.unwrap_or(local)
                } else {
                    local
                }
            }
            _ => {
                let given = sequence_number.ok_or_else(|| {
                    ApiError::invalid(format!("StartingSequenceNumber must be specified for shardIteratorType {kind}."))
                })?;
                let place = Place::parse("startingSequenceNumber", given)?;
                if place.shard_index() != shard.index {
                    return Err(ApiError::invalid(format!(
                        "Invalid StartingSequenceNumber. It encodes {}, while it was used in a call to a shard with {}",
                        streamfabric_api::names::shard_id(place.shard_index()),
                        shard.id
                    )));
                }
                if place.record().is_some_and(|seq| seq.offset >= bounds.end_offset) {
                    return Err(ApiError::invalid(format!(
                        "StartingSequenceNumber {given} used in {operation} on shard {} in stream {} under account {} has not been issued yet.",
                        shard.id, stream.name, self.config.account
                    )));
                }
                place.start_offset(kind == "AFTER_SEQUENCE_NUMBER")
            }
        })
    }

    /// Up to `limit` records of `shard` from offset `from` (at most 10 MiB; from the object
    /// store below the local data), where the next read goes on, how far behind the latest
    /// record it is, and past the end of a closed shard its children. Counted as read.
    pub(crate) async fn read_batch(
        &self,
        stream: &Stream,
        shard: &Shard,
        from: u64,
        limit: usize,
        max_bytes: usize,
        now: i64,
    ) -> Result<Batch, ApiError> {
        // Below the local data: from the object store, then on into the local log.
        let mut stored = Vec::new();
        let mut local_from = from;
        let start = shard.log.bounds().start_offset;
        if from.max(start) < shard.log.local_start_offset() {
            let min_ts = now - stream.meta().retention_hours * 3_600_000;
            let remote = self.tiers.read(stream, shard, from.max(start), limit, max_bytes, min_ts);
            let remote = remote.await.map_err(|e| remote_error(shard, e))?;
            stored = remote.records;
            local_from = remote.next;
        }
        let room = max_bytes.saturating_sub(stored.iter().map(|r| r.data.len() + r.partition_key.len()).sum());
        if stored.len() < limit && (stored.is_empty() || room > 0) {
            let (log, want) = (shard.log.clone(), limit - stored.len());
            let local = tokio::task::spawn_blocking(move || log.read(local_from, want, room))
                .await
                .map_err(|e| ApiError::internal(format!("read task failed: {e}")))?
                .map_err(|e| {
                    tracing::error!(shard = %shard.id, "read failed: {e}");
                    ApiError::internal("The records could not be read.")
                })?;
            // The log returns one record even beyond `room`: that one waits for the next call.
            let mut left = room;
            for r in local {
                let size = r.data.len() + r.partition_key.len();
                if !stored.is_empty() && size > left {
                    break;
                }
                left = left.saturating_sub(size);
                stored.push(r);
            }
        }
        let bounds = shard.log.bounds();
        let next = stored.last().map_or(local_from.max(bounds.start_offset), |r| r.offset + 1);
        let millis_behind = match stored.last() {
            Some(last) if next < bounds.end_offset => (now - last.timestamp_ms).max(0),
            _ => 0,
        };
        let bytes: usize = stored.iter().map(|r| r.data.len() + r.partition_key.len()).sum();
        shard.metrics.outgoing_records.inc_by(stored.len() as u64);
        shard.metrics.outgoing_bytes.inc_by(bytes as u64);
        shard.metrics.millis_behind.set(millis_behind);
        let records = stored
            .into_iter()
            .map(|r| Record {
                sequence_number: SequenceNumber::new(shard.index, r.offset).text(),
                approximate_arrival_timestamp: Timestamp(r.timestamp_ms),
                data: Blob(r.data),
                partition_key: r.partition_key,
                encryption_type: None,
            })
            .collect();
        // Past the last record of a closed shard: no next iterator; the children instead.
        let child_shards = stream.with_meta(|m| {
            let closed = m.shards.iter().find(|s| s.index == shard.index)?.closed?;
            (next >= closed.end_offset).then(|| {
                let children =
                    m.shards.iter().filter(|c| c.parent == Some(shard.index) || c.adjacent_parent == Some(shard.index));
                children
                    .map(|c| ChildShard {
                        shard_id: shard_id(c.index),
                        parent_shards: c.parent.into_iter().chain(c.adjacent_parent).map(shard_id).collect(),
                        hash_key_range: HashKeyRange {
                            starting_hash_key: c.range.start.to_string(),
                            ending_hash_key: c.range.end.to_string(),
                        },
                    })
                    .collect::<Vec<_>>()
            })
        });
        Ok(Batch { records, next, millis_behind, child_shards, bytes })
    }
}

/// Where a reader starts: the iterator type (checked already) and what it needs.
pub(crate) struct StartingAt<'a> {
    /// For messages: the operation asking.
    pub operation: &'static str,
    pub kind: &'a str,
    pub sequence_number: Option<&'a str>,
    pub timestamp: Option<Timestamp>,
}

/// What one read of a shard gave.
pub(crate) struct Batch {
    pub records: Vec<Record>,
    /// The offset the next read starts from.
    pub next: u64,
    pub millis_behind: i64,
    /// At the end of a closed shard: its children.
    pub child_shards: Option<Vec<ChildShard>>,
    /// Data and partition keys of the records.
    pub bytes: usize,
}

/// A remote read that failed: retryable while the object store cannot be reached, an
/// internal failure when what it holds is damaged. Never partial or wrong records.
fn remote_error(shard: &Shard, e: crate::tier::TierError) -> ApiError {
    tracing::warn!(shard = %shard.id, "reading older records from the object store: {e}");
    if e.is_transient() {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("Older records of shard {} are in the object store, which cannot be reached now; retry.", shard.id),
        )
    } else {
        ApiError::internal(format!("Older records of shard {} could not be read from the object store.", shard.id))
    }
}
