//! Consumer leases and checkpoints: the operations the broker serves under
//! `X-Amz-Target: StreamfabricLeases_20261129.<Operation>` (JSON 1.1 or CBOR 1.1 bodies,
//! errors as `{"__type", "message"}` like the Kinesis operations), and their shapes.
//!
//! A lease gives one worker of a consumer application the right to process one shard of a
//! stream, as in the KCL: it has an owner, a counter bumped by every change (the owner's
//! heartbeat), a checkpoint (sequence and sub-sequence number, or `TRIM_HORIZON`, `LATEST`,
//! `SHARD_END`) and the shard's parents and children. Every change is conditional on the
//! counter the caller last saw; a caller that lost a race or holds a stale counter gets
//! [`ErrorCode::LeaseConflict`](crate::ErrorCode::LeaseConflict)
//! (`LeaseConflictException`) and should re-read the lease.
//!
//! | operation | what |
//! |---|---|
//! | ListLeases | every lease of an application |
//! | CreateLeases | a lease for each shard of the stream that lacks one (the KCL's shard sync) |
//! | SyncLeases | the KCL's rules for one worker: create missing, renew held, take expired or unowned, else steal one |
//! | TakeLease | take one lease, conditional on its counter |
//! | RenewLease | heartbeat, by the owner with the current counter |
//! | Checkpoint | record progress, by the owner with the current counter |
//! | ReleaseLease | give a lease up (owner cleared) |
//! | DeleteLease | remove a lease, conditional on its counter |
//!
//! The typed client over HTTP is `leases::client::LeasesClient` (cargo feature `client`).

use serde::{Deserialize, Serialize};

#[cfg(feature = "client")]
pub mod client;

/// The `X-Amz-Target` prefix of the lease operations.
pub const LEASES_TARGET_PREFIX: &str = "StreamfabricLeases_20261129.";

/// Default failover time: a lease whose counter has not moved for this long is expired.
pub const DEFAULT_FAILOVER_TIME_MILLIS: u64 = 10_000;

/// Checkpoint sentinels.
pub const TRIM_HORIZON: &str = "TRIM_HORIZON";
pub const LATEST: &str = "LATEST";
pub const SHARD_END: &str = "SHARD_END";

macro_rules! lease_operations {
    ($($op:ident),* $(,)?) => {
        /// The lease operations, named as in `X-Amz-Target: StreamfabricLeases_20261129.<Op>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum LeaseOperation { $($op),* }
        impl LeaseOperation {
            pub const ALL: &'static [LeaseOperation] = &[$(LeaseOperation::$op),*];
            pub fn name(self) -> &'static str {
                match self { $(LeaseOperation::$op => stringify!($op)),* }
            }
            pub fn from_name(name: &str) -> Option<LeaseOperation> {
                match name { $(stringify!($op) => Some(LeaseOperation::$op),)* _ => None }
            }
        }
    };
}

lease_operations!(ListLeases, CreateLeases, SyncLeases, TakeLease, RenewLease, Checkpoint, ReleaseLease, DeleteLease,);

/// A position in a shard: a sequence number and the sub-sequence number of a user record
/// inside an aggregated record, or a sentinel (`TRIM_HORIZON`, `LATEST`, `SHARD_END`) with
/// sub-sequence 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtendedSequenceNumber {
    pub sequence_number: String,
    #[serde(default)]
    pub sub_sequence_number: u64,
}

impl ExtendedSequenceNumber {
    pub fn sentinel(name: &str) -> Self {
        ExtendedSequenceNumber { sequence_number: name.to_string(), sub_sequence_number: 0 }
    }
    pub fn trim_horizon() -> Self {
        Self::sentinel(TRIM_HORIZON)
    }
    pub fn shard_end() -> Self {
        Self::sentinel(SHARD_END)
    }
    pub fn is_shard_end(&self) -> bool {
        self.sequence_number == SHARD_END
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeaseHashKeyRange {
    pub starting_hash_key: String,
    pub ending_hash_key: String,
}

/// One lease, as answered and as stored in the object store
/// (`<prefix>/consumers/<application>/leases/<shard>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Lease {
    /// The shard id.
    pub lease_key: String,
    pub stream_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    /// Bumped by every change; changes are conditional on it.
    pub lease_counter: u64,
    pub checkpoint: ExtendedSequenceNumber,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_checkpoint: Option<ExtendedSequenceNumber>,
    #[serde(default)]
    pub owner_switches_since_checkpoint: u64,
    #[serde(default)]
    pub parent_shard_ids: Vec<String>,
    #[serde(default)]
    pub child_shard_ids: Vec<String>,
    pub hash_key_range: LeaseHashKeyRange,
}

impl Lease {
    /// The shard's records are all processed: its children may be leased.
    pub fn is_finished(&self) -> bool {
        self.checkpoint.is_shard_end()
    }
}

/// ListLeases: every lease of an application (whose leases are all of one stream).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListLeasesInput {
    pub application_name: Option<String>,
    pub stream_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListLeasesOutput {
    pub leases: Vec<Lease>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateLeasesInput {
    pub application_name: Option<String>,
    pub stream_name: Option<String>,
    /// Checkpoint of new leases of shards without parents: `TRIM_HORIZON` (default) or
    /// `LATEST`. Children of other shards always start at `TRIM_HORIZON`.
    pub initial_position: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateLeasesOutput {
    /// Shard ids whose lease this call created.
    pub created: Vec<String>,
    /// Every lease of the application afterwards.
    pub leases: Vec<Lease>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SyncLeasesInput {
    pub application_name: Option<String>,
    pub stream_name: Option<String>,
    pub worker_id: Option<String>,
    /// Default 10,000 (the KCL's failoverTimeMillis).
    pub failover_time_millis: Option<i64>,
    /// As in [`CreateLeasesInput::initial_position`].
    pub initial_position: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SyncLeasesOutput {
    /// The leases the worker holds after the call (finished ones, at SHARD_END, left out).
    pub leases: Vec<Lease>,
    pub created: Vec<String>,
    pub renewed: Vec<String>,
    pub taken: Vec<String>,
    pub stolen: Vec<String>,
    /// Held leases whose renewal or take lost to another worker.
    pub lost: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TakeLeaseInput {
    pub application_name: Option<String>,
    pub stream_name: Option<String>,
    pub shard_id: Option<String>,
    pub worker_id: Option<String>,
    /// The counter the caller last saw; the take fails if the lease moved since.
    pub expected_lease_counter: Option<i64>,
}

/// RenewLease and ReleaseLease: by the owner, with the current counter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OwnedLeaseInput {
    pub application_name: Option<String>,
    pub stream_name: Option<String>,
    pub shard_id: Option<String>,
    pub worker_id: Option<String>,
    pub lease_counter: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckpointInput {
    pub application_name: Option<String>,
    pub stream_name: Option<String>,
    pub shard_id: Option<String>,
    pub worker_id: Option<String>,
    pub lease_counter: Option<i64>,
    /// A sequence number of the shard, or `SHARD_END` once the shard is closed and read
    /// to its end.
    pub sequence_number: Option<String>,
    pub sub_sequence_number: Option<i64>,
    /// Record it as the pending checkpoint (the KCL's prepareCheckpoint) instead.
    pub prepare: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteLeaseInput {
    pub application_name: Option<String>,
    pub stream_name: Option<String>,
    pub shard_id: Option<String>,
    pub expected_lease_counter: Option<i64>,
}

/// The answer of the single-lease operations: the lease as stored now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeaseOutput {
    pub lease: Lease,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteLeaseOutput {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_round_trip() {
        for op in LeaseOperation::ALL {
            assert_eq!(LeaseOperation::from_name(op.name()), Some(*op));
        }
        assert_eq!(LeaseOperation::from_name("PutRecord"), None);
    }

    #[test]
    fn lease_json_shape() {
        let lease = Lease {
            lease_key: "shardId-000000000001".into(),
            stream_name: "s".into(),
            lease_owner: None,
            lease_counter: 3,
            checkpoint: ExtendedSequenceNumber::trim_horizon(),
            pending_checkpoint: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: vec!["shardId-000000000000".into()],
            child_shard_ids: vec![],
            hash_key_range: LeaseHashKeyRange { starting_hash_key: "0".into(), ending_hash_key: "9".into() },
        };
        let v = serde_json::to_value(&lease).unwrap();
        assert_eq!(v["LeaseKey"], "shardId-000000000001");
        assert_eq!(v["Checkpoint"]["SequenceNumber"], "TRIM_HORIZON");
        assert!(v.get("LeaseOwner").is_none(), "an unowned lease has no LeaseOwner member");
        assert_eq!(serde_json::from_value::<Lease>(v).unwrap(), lease);
    }
}
