//! The `DataStream` custom resource (group `streamfabric.io`, version `v1alpha1`): what a
//! platform team declares, and what the operator reports back.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kinesis-compatible stream served by a StatefulSet of brokers.
// Each printcolumn repeats `type_`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "streamfabric.io",
    version = "v1alpha1",
    kind = "DataStream",
    namespaced,
    shortname = "dstream",
    status = "DataStreamStatus",
    derive = "PartialEq",
    doc = "A Kinesis-compatible data stream served by streamfabric brokers",
    scale(spec_replicas_path = ".spec.shards", status_replicas_path = ".status.openShards"),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".spec.shards"),
    printcolumn(name = "Open", type_ = "integer", json_path = ".status.openShards"),
    printcolumn(name = "Brokers", type_ = "integer", json_path = ".status.readyBrokers"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(name = "Handoffs", type_ = "integer", json_path = ".status.handoffs", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.durability != 'Object' || has(self.objectStore)").message("durability Object needs spec.objectStore"))]
#[x_kube(validation = Rule::new("self.mode != 'OnDemand' || has(self.scaling)").message("mode OnDemand needs spec.scaling (minShards, maxShards)"))]
#[x_kube(validation = Rule::new("!has(self.scaling) || (self.shards >= self.scaling.minShards && self.shards <= self.scaling.maxShards)").message("spec.shards must lie within spec.scaling's minShards..maxShards"))]
#[serde(rename_all = "camelCase")]
pub struct DataStreamSpec {
    /// Open shards; in OnDemand mode the starting count, which the autoscaler then moves.
    #[schemars(range(min = 1, max = 10000))]
    pub shards: i32,
    /// How long records stay readable, in hours (24..8760).
    #[serde(default = "default_retention_hours")]
    #[schemars(range(min = 24, max = 8760))]
    pub retention_hours: i32,
    #[serde(default)]
    pub mode: StreamMode,
    /// OnDemand scaling bounds and target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSpec>,
    #[serde(default)]
    pub shard_limits: ShardLimitsSpec,
    #[serde(default)]
    pub brokers: BrokersSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreSpec>,
    #[serde(default)]
    pub durability: Durability,
    /// How shard logs are cut into segments and compressed for the object store.
    #[serde(default)]
    pub segments: SegmentsSpec,
    /// What happens to the stream's data in the object store when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Stop accepting writes (reads go on) until cleared.
    #[serde(default)]
    pub paused: bool,
    /// Require AWS Signature Version 4 on every request, with the access keys of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationSpec>,
    /// Serve the Kinesis API over HTTPS too (port 4443, beside HTTP on 4567).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret of type kubernetes.io/tls in this namespace (`tls.crt`, `tls.key`), such as
    /// a cert-manager Certificate writes; its names should cover `<name>.<namespace>.svc`,
    /// the client Service. A renewed certificate is served without a restart.
    pub secret_ref: SecretRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationSpec {
    /// A Secret in this namespace with one entry per access key: the entry's name is the
    /// access key id, its value the secret access key. These keys may do everything. Changes
    /// reach the brokers without a restart (as the kubelet updates the mounted Secret, within
    /// a minute or two).
    pub credentials_secret_ref: SecretRef,
    /// Secrets (same form) whose keys may only write the stream: PutRecord, PutRecords, and
    /// describing and listing it (what producers ask). The keys of `credentialsSecretRef`
    /// may do everything; a key in none of these Secrets, nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<SecretRef>,
    /// Secrets whose keys may only read the stream: iterators and records, enhanced fan-out
    /// consumers, describing and listing it, and the lease store the KCL keeps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<SecretRef>,
}

fn default_retention_hours() -> i32 {
    24
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StreamMode {
    #[default]
    Provisioned,
    OnDemand,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Durability {
    /// Acknowledged after the local group-commit fsync; sealed data reaches the object store later.
    #[default]
    Local,
    /// Acknowledged only once the write batch is in the object store.
    Object,
}

/// Segments (unset fields keep the broker's defaults: 64 MiB, 1h, zstd).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentsSpec {
    /// Seal a shard's active segment at this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4096))]
    pub max_bytes: Option<i64>,
    /// ... or when its first record is this old (`250ms`, `30s`, `5m`, `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub max_age: Option<String>,
    /// Compression of sealed segments in the object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<SegmentCompression>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SegmentCompression {
    Zstd,
    Lz4,
    None,
}

impl From<SegmentCompression> for crate::settings::Compression {
    fn from(c: SegmentCompression) -> Self {
        match c {
            SegmentCompression::Zstd => crate::settings::Compression::Zstd,
            SegmentCompression::Lz4 => crate::settings::Compression::Lz4,
            SegmentCompression::None => crate::settings::Compression::None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.minShards <= self.maxShards").message("scaling.minShards must not exceed scaling.maxShards"))]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    #[schemars(range(min = 1, max = 10000))]
    pub min_shards: i32,
    #[schemars(range(min = 1, max = 10000))]
    pub max_shards: i32,
    /// Percent of the per-shard write limit the autoscaler aims for.
    #[serde(default = "default_target_utilization")]
    #[schemars(range(min = 1, max = 100))]
    pub target_write_utilization: i32,
    /// How long the write rate must stay low before shards are merged.
    #[serde(default = "default_stabilization")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: i64,
}

fn default_target_utilization() -> i32 {
    70
}

fn default_stabilization() -> i64 {
    300
}

/// Per-shard limits (AWS: 1 MiB/s or 1,000 records/s in; 2 MiB/s and 5 calls/s out).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardLimitsSpec {
    /// Refuse the excess with ProvisionedThroughputExceededException.
    #[serde(default)]
    pub enforce: bool,
    #[serde(default = "default_write_bytes")]
    #[schemars(range(min = 1))]
    pub write_bytes_per_second: i64,
    #[serde(default = "default_write_records")]
    #[schemars(range(min = 1))]
    pub write_records_per_second: i64,
    #[serde(default = "default_read_bytes")]
    #[schemars(range(min = 1))]
    pub read_bytes_per_second: i64,
    #[serde(default = "default_read_calls")]
    #[schemars(range(min = 1))]
    pub read_calls_per_second: i64,
}

impl Default for ShardLimitsSpec {
    fn default() -> Self {
        ShardLimitsSpec {
            enforce: false,
            write_bytes_per_second: default_write_bytes(),
            write_records_per_second: default_write_records(),
            read_bytes_per_second: default_read_bytes(),
            read_calls_per_second: default_read_calls(),
        }
    }
}

fn default_write_bytes() -> i64 {
    1 << 20
}
fn default_write_records() -> i64 {
    1000
}
fn default_read_bytes() -> i64 {
    2 << 20
}
fn default_read_calls() -> i64 {
    5
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.shardsPerBroker))").message("set brokers.replicas or brokers.shardsPerBroker, not both"))]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("brokers.minReplicas must not exceed brokers.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct BrokersSpec {
    /// A fixed number of broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: Option<i32>,
    /// ... or one broker per this many open shards (default 4), within min/max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub shards_per_broker: Option<i32>,
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub storage: StorageSpec,
}

impl Default for BrokersSpec {
    fn default() -> Self {
        BrokersSpec {
            replicas: None,
            shards_per_broker: None,
            min_replicas: one(),
            max_replicas: default_max_replicas(),
            image: default_image(),
            resources: None,
            storage: StorageSpec::default(),
        }
    }
}

fn one() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    10
}
pub const DEFAULT_BROKER_IMAGE: &str = "ghcr.io/streamfabric/broker:0.1.0";
fn default_image() -> String {
    DEFAULT_BROKER_IMAGE.to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each broker's data volume (a Kubernetes quantity such as 10Gi).
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep at most this many bytes of each shard's segments on the volume: older sealed
    /// segments already in the object store are then read from there. Default: the volume
    /// keeps everything for the retention period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub local_retention_bytes: Option<i64>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec { size: default_storage_size(), storage_class_name: None, local_retention_bytes: None }
    }
}

fn default_storage_size() -> String {
    "10Gi".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    /// `s3://bucket/prefix` (or `file://` for a single node).
    #[schemars(regex(pattern = r"^(s3|file)://.+"))]
    pub url: String,
    /// S3 endpoint for MinIO and other S3-compatible stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataStreamStatus {
    /// Ready, Scaling and Degraded.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub open_shards: i32,
    #[serde(default)]
    pub closed_shards: i32,
    #[serde(default)]
    pub ready_brokers: i32,
    /// The Kinesis endpoint clients use (the client Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The same over HTTPS, with `spec.tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_endpoint: Option<String>,
    #[serde(default)]
    pub write_bytes_per_second: i64,
    #[serde(default)]
    pub write_records_per_second: i64,
    /// Brokers serving the stream, as their stats last answered: with `spec.objectStore`
    /// they form one cluster and share its shards; without, one broker serves them all.
    #[serde(default)]
    pub members: i32,
    /// Open shards each broker (by pod name) serves.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub shards_per_broker: std::collections::BTreeMap<String, i32>,
    /// Shards a broker is taking over and does not serve yet (handoffs under way).
    #[serde(default)]
    pub handoffs: i32,
}
