//! The persisted description of a stream: what survives a restart besides the records.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use streamfabric_api::hashkey::HashRange;

use super::reshard::Change;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatus {
    Creating,
    Active,
    Updating,
    Deleting,
}

impl StreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "CREATING",
            Self::Active => "ACTIVE",
            Self::Updating => "UPDATING",
            Self::Deleting => "DELETING",
        }
    }
    /// Records can be written and read (AWS allows both while UPDATING).
    pub fn serves_data(self) -> bool {
        matches!(self, Self::Active | Self::Updating)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

impl StreamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioned => "PROVISIONED",
            Self::OnDemand => "ON_DEMAND",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub index: u64,
    pub parent: Option<u64>,
    pub adjacent_parent: Option<u64>,
    #[serde(with = "range_as_strings")]
    pub range: HashRange,
    pub created_ms: i64,
    /// Set once the shard is closed by a reshard: the time and its last offset + 1.
    pub closed: Option<ClosedShard>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedShard {
    pub at_ms: i64,
    pub end_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub name: String,
    /// Random per creation, so that iterators and tokens of a deleted stream never apply
    /// to a new stream of the same name.
    pub incarnation: u64,
    pub created_ms: i64,
    pub status: StreamStatus,
    pub mode: StreamMode,
    pub retention_hours: i64,
    pub tags: BTreeMap<String, String>,
    pub shards: Vec<ShardMeta>,
    /// A reshard accepted (the stream is UPDATING) but not yet applied; a restart applies it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_reshard: Vec<Change>,
    /// Registered enhanced fan-out consumers, in registration order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerMeta>,
    /// Recorded and shown, as AWS shows them: the shard-level metrics enabled (Prometheus
    /// has them all anyway) and the KMS key of server-side encryption (data at rest is the
    /// storage's to encrypt).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub shard_level_metrics: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// UpdateMaxRecordSize's limit; without it, the broker's `--max-record-bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_size_kib: Option<i64>,
    /// UpdateStreamWarmThroughput's target (on-demand streams), recorded and shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_throughput_mibps: Option<i64>,
    /// PutResourcePolicy's document (IAM JSON), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMeta {
    pub name: String,
    pub created_ms: i64,
    pub status: ConsumerStatus,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_policy: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerStatus {
    Creating,
    Active,
    Deleting,
}

impl ConsumerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "CREATING",
            Self::Active => "ACTIVE",
            Self::Deleting => "DELETING",
        }
    }
}

impl StreamMeta {
    pub fn open_shard_count(&self) -> usize {
        self.shards.iter().filter(|s| s.closed.is_none()).count()
    }

    pub fn load(path: &Path) -> io::Result<StreamMeta> {
        let bytes = fs::read(path)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
    }

    /// Replace the file atomically and durably: write a temporary, sync, rename, sync the directory.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().expect("meta path has a parent");
        fs::create_dir_all(dir)?;
        let tmp = path.with_extension("json.tmp");
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).expect("stream meta serializes"))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    }
}

/// u128 hash keys as decimal strings, as the API shows them.
mod range_as_strings {
    use super::HashRange;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Strings {
        start: String,
        end: String,
    }

    pub fn serialize<S: Serializer>(r: &HashRange, s: S) -> Result<S::Ok, S::Error> {
        Strings { start: r.start.to_string(), end: r.end.to_string() }.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashRange, D::Error> {
        let v = Strings::deserialize(d)?;
        let parse = |s: &str| s.parse::<u128>().map_err(serde::de::Error::custom);
        Ok(HashRange { start: parse(&v.start)?, end: parse(&v.end)? })
    }
}
