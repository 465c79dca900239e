//! Where each shard is served, for clients that send straight to a shard's broker (the
//! sidecar): `X-Amz-Target: StreamfabricCluster_20261204.DescribeShardOwners`, JSON 1.1 or
//! CBOR 1.1 like the Kinesis operations. A broker that is not in a cluster owns every shard
//! itself and answers no owners (send to it). Owners move; a request sent to a broker that
//! no longer owns a shard is still served (forwarded to the owner), at the cost of one hop.

use serde::{Deserialize, Serialize};

/// The `X-Amz-Target` prefix of streamfabric's cluster operations.
pub const CLUSTER_TARGET_PREFIX: &str = "StreamfabricCluster_20261204.";
pub const DESCRIBE_SHARD_OWNERS: &str = "DescribeShardOwners";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeShardOwnersInput {
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeShardOwnersOutput {
    /// The stream's shards whose owner is known to the broker answering.
    pub shards: Vec<ShardOwner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShardOwner {
    pub shard_id: String,
    pub broker_id: String,
    /// `host:port` of the owner's Kinesis API (its `--advertise`).
    pub address: String,
}
