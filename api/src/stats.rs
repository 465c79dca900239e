//! The broker's `/stats` document (admin port): per stream and shard, what is stored and
//! what went through, as cumulative counters. The operator derives rates from two samples.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerStats {
    /// In a cluster: this broker's id, and `streams` list only the shards it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    pub streams: Vec<StreamStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStats {
    pub name: String,
    pub status: String,
    pub shards: Vec<ShardStats>,
    /// In a cluster: shards assigned to this broker that it does not serve yet (a handoff
    /// or takeover under way).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taking: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub shard_id: String,
    pub open: bool,
    pub start_offset: u64,
    pub end_offset: u64,
    pub incoming_records: u64,
    pub incoming_bytes: u64,
    pub outgoing_records: u64,
    pub outgoing_bytes: u64,
}
