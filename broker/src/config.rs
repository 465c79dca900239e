//! Broker configuration: flags with environment fallbacks, one source of defaults.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct BrokerConfig {
    /// Address of the Kinesis API.
    #[arg(long, env = "STREAMFABRIC_LISTEN", default_value = "127.0.0.1:4567")]
    pub listen: SocketAddr,

    /// Address of /metrics, /healthz, /readyz and /stats.
    #[arg(long, env = "STREAMFABRIC_ADMIN_LISTEN", default_value = "127.0.0.1:4568")]
    pub admin_listen: SocketAddr,

    /// Where streams, shard logs and the iterator key live.
    #[arg(long, env = "STREAMFABRIC_DATA_DIR", default_value = "./streamfabric-data")]
    pub data_dir: PathBuf,

    /// When a write is acknowledged: `always` (fdatasync before the answer, shared by
    /// concurrent writers), `interval:<ms>` (sync in the background every <ms>), or
    /// `never` (the OS decides).
    #[arg(long, env = "STREAMFABRIC_FLUSH", default_value = "always", value_parser = parse_flush)]
    pub flush: FlushSetting,

    /// Seal a shard's active segment at this size.
    #[arg(long, env = "STREAMFABRIC_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,

    /// ... or when its first record is this old.
    #[arg(long, env = "STREAMFABRIC_SEGMENT_AGE", default_value = "1h", value_parser = parse_duration)]
    pub segment_age: Duration,

    /// How long a new stream stays CREATING (and a deleted one DELETING).
    #[arg(long, env = "STREAMFABRIC_STATUS_DELAY", default_value = "100ms", value_parser = parse_duration)]
    pub status_delay: Duration,

    /// How often expired records are trimmed.
    #[arg(long, env = "STREAMFABRIC_RETENTION_CHECK", default_value = "60s", value_parser = parse_duration)]
    pub retention_check: Duration,

    /// Largest record data accepted, in bytes (AWS: 1 MiB, up to 10 MiB).
    #[arg(long, env = "STREAMFABRIC_MAX_RECORD_BYTES", default_value_t = streamfabric_api::limits::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: usize,

    /// Open shards allowed across all streams (DescribeLimits' ShardLimit).
    #[arg(long, env = "STREAMFABRIC_SHARD_LIMIT", default_value_t = streamfabric_api::limits::DEFAULT_SHARD_LIMIT)]
    pub shard_limit: i64,

    /// Answer writes and reads beyond the per-shard limits below with
    /// ProvisionedThroughputExceededException, as AWS does.
    #[arg(long, env = "STREAMFABRIC_ENFORCE_SHARD_LIMITS", default_value_t = false)]
    pub enforce_shard_limits: bool,

    #[arg(long, env = "STREAMFABRIC_SHARD_WRITE_BYTES", default_value_t = 1024 * 1024)]
    pub shard_write_bytes_per_sec: u64,

    #[arg(long, env = "STREAMFABRIC_SHARD_WRITE_RECORDS", default_value_t = 1000)]
    pub shard_write_records_per_sec: u64,

    #[arg(long, env = "STREAMFABRIC_SHARD_READ_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub shard_read_bytes_per_sec: u64,

    #[arg(long, env = "STREAMFABRIC_SHARD_READ_CALLS", default_value_t = 5)]
    pub shard_read_calls_per_sec: u64,

    /// Where sealed segments and stream descriptions are kept: `file:///abs/dir`, `memory://`
    /// or `s3://bucket/prefix` (credentials from the standard AWS_* variables). Default:
    /// `file://<data-dir>/objects`.
    #[arg(long, env = "STREAMFABRIC_OBJECT_STORE")]
    pub object_store: Option<String>,

    /// S3 endpoint, for MinIO and other S3-compatible stores (path-style requests).
    #[arg(long, env = "STREAMFABRIC_OBJECT_STORE_ENDPOINT")]
    pub object_store_endpoint: Option<String>,

    #[arg(long, env = "STREAMFABRIC_OBJECT_STORE_REGION")]
    pub object_store_region: Option<String>,

    /// Compression of sealed segments in the object store: zstd, lz4 or none.
    #[arg(long, env = "STREAMFABRIC_SEGMENT_COMPRESSION", default_value = "zstd")]
    pub segment_compression: crate::tier::Compression,

    /// Sealed segments waiting for the object store, in bytes, beyond which writes are
    /// answered with the retryable ServiceUnavailable until the store catches up.
    #[arg(long, env = "STREAMFABRIC_UPLOAD_BACKLOG_LIMIT", default_value_t = 1 << 30)]
    pub upload_backlog_limit: u64,

    /// How often the object store is swept for segment objects no manifest lists (left by an
    /// upload cut short); those younger than an hour are kept.
    #[arg(long, env = "STREAMFABRIC_ORPHAN_SWEEP", default_value = "6h", value_parser = parse_duration)]
    pub orphan_sweep: Duration,

    /// This broker's name in the object store's shard manifests (ownership). Default: a
    /// random name kept in `<data-dir>/broker.id`; on Kubernetes, the pod name.
    #[arg(long, env = "STREAMFABRIC_BROKER_ID")]
    pub broker_id: Option<String>,
    /// When a PutRecord(s) is acknowledged: `local` (after the local group commit) or
    /// `object` (also after a write-ahead object holding its records is in the object
    /// store; needs `--flush always`).
    #[arg(long, env = "STREAMFABRIC_DURABILITY", default_value = "local", value_parser = parse_durability)]
    pub durability: Durability,

    /// Durability `object`: how long the first write of a batch waits for others to join it
    /// before the batch is written as one object.
    #[arg(long, env = "STREAMFABRIC_OBJECT_BATCH_LINGER", default_value = "5ms", value_parser = parse_duration)]
    pub object_batch_linger: Duration,

    /// ... or until the batch holds this many bytes.
    #[arg(long, env = "STREAMFABRIC_OBJECT_BATCH_BYTES", default_value_t = 8 << 20)]
    pub object_batch_bytes: usize,

    /// ... with at most this many batch PUTs in flight (more writes meanwhile join the next batch).
    #[arg(long, env = "STREAMFABRIC_OBJECT_BATCH_INFLIGHT", default_value_t = 4)]
    pub object_batch_inflight: usize,

    /// ... and a batch PUT that takes longer than this fails its writes (retryably).
    #[arg(long, env = "STREAMFABRIC_OBJECT_PUT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub object_put_timeout: Duration,
    /// Local retention, per shard: once a shard's segments on local disk exceed this many
    /// bytes, its oldest sealed segments that the object store already lists are deleted
    /// locally; their records are then read from the object store. Default: local disk
    /// keeps everything for the stream's retention.
    #[arg(long, env = "STREAMFABRIC_LOCAL_RETENTION_BYTES")]
    pub local_retention_bytes: Option<u64>,

    /// How often local retention runs (and the local/remote segment gauges are refreshed).
    #[arg(long, env = "STREAMFABRIC_LOCAL_RETENTION_CHECK", default_value = "5s", value_parser = parse_duration)]
    pub local_retention_check: Duration,

    /// Memory for frames read from the object store (decompressed), least recently used
    /// evicted first.
    #[arg(long, env = "STREAMFABRIC_REMOTE_CACHE_BYTES", default_value_t = 256 << 20)]
    pub remote_cache_bytes: u64,

    /// Region and account shown in stream ARNs.
    #[arg(long, env = "STREAMFABRIC_REGION", default_value = streamfabric_api::names::DEFAULT_REGION)]
    pub region: String,

    #[arg(long, env = "STREAMFABRIC_ACCOUNT", default_value = streamfabric_api::names::DEFAULT_ACCOUNT)]
    pub account: String,
}

/// When a write is acknowledged, beyond the local flush policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the local group commit; sealed segments reach the object store later.
    Local,
    /// After the local group commit and a write-ahead object PUT holding the records.
    Object,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "local" => Ok(Durability::Local),
        "object" => Ok(Durability::Object),
        _ => Err(format!("expected local or object, got {s:?}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushSetting {
    Always,
    Interval(Duration),
    Never,
}

fn parse_flush(s: &str) -> Result<FlushSetting, String> {
    match s {
        "always" => Ok(FlushSetting::Always),
        "never" => Ok(FlushSetting::Never),
        _ => match s.strip_prefix("interval:") {
            Some(ms) => ms
                .parse::<u64>()
                .map(|ms| FlushSetting::Interval(Duration::from_millis(ms)))
                .map_err(|_| format!("interval:<ms> expects milliseconds, got {ms:?}")),
            None => Err(format!("expected always, never or interval:<ms>, got {s:?}")),
        },
    }
}

/// `250ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("expected a duration such as 250ms, 30s, 5m or 1h, got {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    }
}

impl BrokerConfig {
    /// Defaults for tests and embedding: ephemeral ports on loopback, data under `dir`.
    pub fn for_dir(dir: impl Into<PathBuf>) -> BrokerConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: BrokerConfig,
        }
        let mut config = Wrapper::parse_from(["broker"]).config;
        config.data_dir = dir.into();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_listen = "127.0.0.1:0".parse().unwrap();
        config.status_delay = Duration::from_millis(20);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_flush_settings() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_flush("interval:5").unwrap(), FlushSetting::Interval(Duration::from_millis(5)));
        assert!(parse_flush("sometimes").is_err());
        assert_eq!(parse_durability("object").unwrap(), Durability::Object);
        assert!(parse_durability("remote").is_err());
        assert_eq!(BrokerConfig::for_dir("/x").durability, Durability::Local, "local is the default");
    }
}
