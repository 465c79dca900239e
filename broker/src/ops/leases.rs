//! The lease operations (`StreamfabricLeases_20261129.<Op>`): input checks, the stream's
//! shards from the catalog, the lease table in the object store, errors and metrics.
//!
//! Error codes: `ValidationException` (a member missing or malformed; the message names
//! it), `InvalidArgumentException` (a checkpoint outside the shard, an application bound
//! to another stream), `ResourceNotFoundException` (no such stream or lease),
//! `ResourceInUseException` (a child shard whose parents have not reached SHARD_END),
//! `LeaseConflictException` (lost a conditional write, or a stale owner or counter),
//! `ServiceUnavailable` (the object store cannot be reached; retry).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::validate::{self, bounded, required};
use crate::broker::Broker;
use crate::catalog::Stream;
use crate::leases::{LeaseError, LeaseTable, ShardInfo, SyncRound, rules};
use streamfabric_api::leases::*;
use streamfabric_api::names::{parse_shard_id, shard_id};
use streamfabric_api::sequence::SequenceNumber;
use streamfabric_api::{ApiError, ErrorCode, Format};

const MAX_NAME_CHARS: usize = 256;

fn application(value: &Option<String>) -> Result<&str, ApiError> {
    let app = required(value, "applicationName")?;
    if app.is_empty() || app.len() > MAX_NAME_CHARS {
        return Err(ApiError::validation("applicationName", app, "Member must have length between 1 and 256"));
    }
    if !app.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        || app == "."
        || app == ".."
    {
        return Err(ApiError::validation(
            "applicationName",
            app,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ (not . or ..)",
        ));
    }
    Ok(app)
}

fn worker(value: &Option<String>) -> Result<&str, ApiError> {
    let w = required(value, "workerId")?;
    if w.is_empty() || w.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::validation("workerId", w, "Member must have length between 1 and 256"));
    }
    if w.chars().any(char::is_control) {
        return Err(ApiError::validation("workerId", w, "Member must not contain control characters"));
    }
    Ok(w)
}

fn counter(value: Option<i64>, field: &str) -> Result<u64, ApiError> {
    let v = *required(&value, field)?;
    if v < 0 {
        return Err(ApiError::validation(field, v, "Member must have value greater than or equal to 0"));
    }
    Ok(v as u64)
}

fn initial(value: &Option<String>) -> Result<ExtendedSequenceNumber, ApiError> {
    if let Some(v) = value {
        validate::one_of("initialPosition", v, &[TRIM_HORIZON, LATEST])?;
    }
    Ok(rules::initial_position(value.as_deref()).expect("checked above"))
}

fn shard_infos(stream: &Stream) -> Vec<ShardInfo> {
    stream
        .meta()
        .shards
        .iter()
        .map(|s| ShardInfo {
            id: shard_id(s.index),
            parents: s.parent.iter().chain(s.adjacent_parent.iter()).map(|p| shard_id(*p)).collect(),
            closed: s.closed.is_some(),
            range: LeaseHashKeyRange {
                starting_hash_key: s.range.start.to_string(),
                ending_hash_key: s.range.end.to_string(),
            },
        })
        .collect()
}

/// Maps a lease failure to the answer: see the module documentation.
fn api_error(e: LeaseError) -> ApiError {
    match &e {
        LeaseError::NotFound { .. } => ApiError::not_found(e.to_string()),
        LeaseError::Conflict { .. } => ApiError::lease_conflict(e.to_string()),
        LeaseError::ParentsNotFinished { .. } => ApiError::in_use(e.to_string()),
        LeaseError::OtherStream { .. } => ApiError::invalid(e.to_string()),
        LeaseError::Store(t) if t.is_transient() => {
            ApiError::new(ErrorCode::ServiceUnavailable, format!("The object store could not be reached: {t}"))
        }
        LeaseError::Store(t) => ApiError::internal(format!("Lease storage failed: {t}")),
    }
}

/// The stream and shard an input names, the shard id in its canonical form.
struct Target {
    stream: Arc<Stream>,
    table: LeaseTable,
    shard: Option<String>,
}

impl Broker {
    /// Decode, run and encode one lease operation.
    pub async fn call_leases(&self, op: LeaseOperation, format: Format, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        macro_rules! run {
            ($handler:ident) => {{
                let result = self.$handler(format.decode(body)?).await;
                self.count_lease_op(op.name(), result.as_ref().err());
                format.encode(&result?)
            }};
        }
        Ok(match op {
            LeaseOperation::ListLeases => run!(list_leases),
            LeaseOperation::CreateLeases => run!(create_leases),
            LeaseOperation::SyncLeases => run!(sync_leases),
            LeaseOperation::TakeLease => run!(take_lease),
            LeaseOperation::RenewLease => run!(renew_lease),
            LeaseOperation::Checkpoint => run!(checkpoint),
            LeaseOperation::ReleaseLease => run!(release_lease),
            LeaseOperation::DeleteLease => run!(delete_lease),
        })
    }

    fn count_lease_op(&self, op: &str, error: Option<&ApiError>) {
        let outcome = match error {
            None => "won",
            Some(e) if e.code == ErrorCode::LeaseConflict => "conflict",
            Some(_) => "error",
        };
        self.metrics.lease_operations.with_label_values(&[op, outcome]).inc();
    }

    fn lease_target(
        &self,
        app: &Option<String>,
        stream: &Option<String>,
        shard: Option<&Option<String>>,
    ) -> Result<Target, ApiError> {
        let app = application(app)?;
        let name = required(stream, "streamName")?;
        let stream = self.resolve(&Some(name.clone()), &None)?;
        let shard = match shard {
            None => None,
            Some(id) => {
                let id = required(id, "shardId")?;
                let index = parse_shard_id(id).ok_or_else(|| {
                    ApiError::validation(
                        "shardId",
                        id,
                        "Member must satisfy regular expression pattern: shardId-[0-9]{12}",
                    )
                })?;
                Some(shard_id(index))
            }
        };
        let table = self.leases.table(app, &stream.name).map_err(api_error)?;
        Ok(Target { stream, table, shard })
    }

    async fn list_leases(&self, input: ListLeasesInput) -> Result<ListLeasesOutput, ApiError> {
        let target = self.lease_target(&input.application_name, &input.stream_name, None)?;
        let leases = target.table.list().await.map_err(api_error)?.into_iter().map(|s| s.lease).collect();
        Ok(ListLeasesOutput { leases })
    }

    async fn create_leases(&self, input: CreateLeasesInput) -> Result<CreateLeasesOutput, ApiError> {
        let target = self.lease_target(&input.application_name, &input.stream_name, None)?;
        let initial = initial(&input.initial_position)?;
        let shards = shard_infos(&target.stream);
        let (created, table) = target.table.create_missing(&shards, &initial).await.map_err(api_error)?;
        for _ in &created {
            self.count_lease_op("CreateLeases.create", None);
        }
        Ok(CreateLeasesOutput { created, leases: table.into_iter().map(|s| s.lease).collect() })
    }

    async fn sync_leases(&self, input: SyncLeasesInput) -> Result<SyncLeasesOutput, ApiError> {
        let target = self.lease_target(&input.application_name, &input.stream_name, None)?;
        let worker = worker(&input.worker_id)?;
        let failover = bounded(
            "failoverTimeMillis",
            input.failover_time_millis,
            1,
            86_400_000,
            DEFAULT_FAILOVER_TIME_MILLIS as i64,
        )? as u64;
        let initial = initial(&input.initial_position)?;
        let shards = shard_infos(&target.stream);
        let app = target.table.application().to_string();
        let round = SyncRound { shards: &shards, worker, now_ms: self.leases.now_ms(), failover_ms: failover, initial };
        let report = target.table.sync(&round, &self.leases.observations(&app)).await.map_err(api_error)?;
        let counted = [
            ("SyncLeases.create", &report.created),
            ("SyncLeases.renew", &report.renewed),
            ("SyncLeases.take", &report.taken),
            ("SyncLeases.steal", &report.stolen),
        ];
        for (op, keys) in counted {
            self.metrics.lease_operations.with_label_values(&[op, "won"]).inc_by(keys.len() as u64);
        }
        self.metrics
            .lease_operations
            .with_label_values(&["SyncLeases.lost", "conflict"])
            .inc_by(report.lost.len() as u64);
        Ok(SyncLeasesOutput {
            leases: report.held,
            created: report.created,
            renewed: report.renewed,
            taken: report.taken,
            stolen: report.stolen,
            lost: report.lost,
        })
    }

    async fn take_lease(&self, input: TakeLeaseInput) -> Result<LeaseOutput, ApiError> {
        let target = self.lease_target(&input.application_name, &input.stream_name, Some(&input.shard_id))?;
        let worker = worker(&input.worker_id)?;
        let expected = counter(input.expected_lease_counter, "expectedLeaseCounter")?;
        let shards: BTreeSet<String> = shard_infos(&target.stream).into_iter().map(|s| s.id).collect();
        let shard = target.shard.as_deref().expect("named");
        let lease = target.table.take(shard, worker, expected, &shards).await.map_err(api_error)?;
        Ok(LeaseOutput { lease })
    }

    async fn renew_lease(&self, input: OwnedLeaseInput) -> Result<LeaseOutput, ApiError> {
        let target = self.lease_target(&input.application_name, &input.stream_name, Some(&input.shard_id))?;
        let worker = worker(&input.worker_id)?;
        let count = counter(input.lease_counter, "leaseCounter")?;
        let shard = target.shard.as_deref().expect("named");
        let lease = target.table.renew(shard, worker, count).await.map_err(api_error)?;
        Ok(LeaseOutput { lease })
    }

    async fn release_lease(&self, input: OwnedLeaseInput) -> Result<LeaseOutput, ApiError> {
        let target = self.lease_target(&input.application_name, &input.stream_name, Some(&input.shard_id))?;
        let worker = worker(&input.worker_id)?;
        let count = counter(input.lease_counter, "leaseCounter")?;
        let shard = target.shard.as_deref().expect("named");
        let lease = target.table.release(shard, worker, count).await.map_err(api_error)?;
        Ok(LeaseOutput { lease })
    }

    async fn checkpoint(&self, input: CheckpointInput) -> Result<LeaseOutput, ApiError> {
        let target = self.lease_target(&input.application_name, &input.stream_name, Some(&input.shard_id))?;
        let worker = worker(&input.worker_id)?;
        let count = counter(input.lease_counter, "leaseCounter")?;
        let sub = counter(Some(input.sub_sequence_number.unwrap_or(0)), "subSequenceNumber")?;
        let position = self.checkpoint_position(&target, required(&input.sequence_number, "sequenceNumber")?, sub)?;
        let shard = target.shard.as_deref().expect("named");
        let lease = target
            .table
            .checkpoint(shard, worker, count, position, input.prepare.unwrap_or(false))
            .await
            .map_err(api_error)?;
        Ok(LeaseOutput { lease })
    }

    /// A checkpoint must be a number this shard issued, or SHARD_END of a closed shard.
    fn checkpoint_position(&self, target: &Target, value: &str, sub: u64) -> Result<ExtendedSequenceNumber, ApiError> {
        let id = target.shard.as_deref().expect("named");
        let index = parse_shard_id(id).expect("canonical");
        let meta = target.stream.meta();
        let shard = meta.shards.iter().find(|s| s.index == index).ok_or_else(|| {
            ApiError::not_found(format!("Shard {id} in stream {} does not exist.", target.stream.name))
        })?;
        if value == SHARD_END {
            if shard.closed.is_none() {
                return Err(ApiError::invalid(format!(
                    "SequenceNumber SHARD_END: shard {id} is open; only a closed shard read to its end reaches SHARD_END."
                )));
            }
            return Ok(ExtendedSequenceNumber::shard_end());
        }
        let seq = SequenceNumber::parse("sequenceNumber", value)?;
        if seq.shard_index != index {
            return Err(ApiError::invalid(format!(
                "SequenceNumber {value} belongs to shard {}, not to {id}.",
                shard_id(seq.shard_index)
            )));
        }
        let issued_end = target.stream.shard(index).map(|s| s.log.bounds().end_offset).unwrap_or(0);
        if seq.offset >= issued_end {
            return Err(ApiError::invalid(format!(
                "SequenceNumber {value} has not been issued by shard {id} of stream {}.",
                target.stream.name
            )));
        }
        Ok(ExtendedSequenceNumber { sequence_number: value.to_string(), sub_sequence_number: sub })
    }

    async fn delete_lease(&self, input: DeleteLeaseInput) -> Result<DeleteLeaseOutput, ApiError> {
        let target = self.lease_target(&input.application_name, &input.stream_name, Some(&input.shard_id))?;
        let expected = counter(input.expected_lease_counter, "expectedLeaseCounter")?;
        let shard = target.shard.as_deref().expect("named");
        target.table.delete(shard, expected).await.map_err(api_error)?;
        Ok(DeleteLeaseOutput {})
    }
}
