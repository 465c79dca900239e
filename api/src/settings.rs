//! Broker settings: one typed definition that the broker's flags read and the operator
//! writes (as the environment of broker pods), so that no setting is dropped or misspelled
//! on one side. Each setting is a flag with an environment variable; `to_env` renders a
//! value of this type as exactly the environment that `streamfabric-broker serve` reads
//! back into the same value, and `from_env` reads it with the broker's own parsers.

use clap::{Args, CommandFactory, Parser};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Defines the settings struct and, from the same field list, `values()`: every field
/// rendered as its flag's value. A field added to the struct is rendered without more code.
macro_rules! settings {
    ($(#[$struct_meta:meta])* pub struct $name:ident { $( $(#[$meta:meta])* pub $field:ident: $ty:ty, )* }) => {
        $(#[$struct_meta])*
        pub struct $name { $( $(#[$meta])* pub $field: $ty, )* }

        impl $name {
            /// Every setting by field name, as its flag's value (None: unset).
            fn values(&self) -> Vec<(&'static str, Option<String>)> {
                vec![$( (stringify!($field), FlagValue::flag_value(&self.$field)), )*]
            }
        }
    };
}

settings! {
#[derive(Debug, Clone, PartialEq, Args)]
pub struct BrokerConfig {
    /// Address of the Kinesis API.
    #[arg(long, env = "STREAMFABRIC_LISTEN", default_value = "127.0.0.1:4567")]
    pub listen: SocketAddr,

    /// Address of /metrics, /healthz, /readyz, /stats and /config.
    #[arg(long, env = "STREAMFABRIC_ADMIN_LISTEN", default_value = "127.0.0.1:4568")]
    pub admin_listen: SocketAddr,

    /// Where streams, shard logs and the cached iterator key live.
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
    #[arg(long, env = "STREAMFABRIC_MAX_RECORD_BYTES", default_value_t = crate::limits::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: usize,

    /// Open shards allowed across all streams (DescribeLimits' ShardLimit).
    #[arg(long, env = "STREAMFABRIC_SHARD_LIMIT", default_value_t = crate::limits::DEFAULT_SHARD_LIMIT)]
    pub shard_limit: i64,

    /// Answer writes and reads beyond the per-shard limits below with
    /// ProvisionedThroughputExceededException, as AWS does.
    #[arg(long, env = "STREAMFABRIC_ENFORCE_SHARD_LIMITS", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
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
    pub segment_compression: Compression,

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

    /// `HOST:PORT` of this broker's Kinesis API as peers and clients reach it (on Kubernetes
    /// the pod's name under the headless Service). Set, the broker joins the cluster of
    /// every broker on the same object store and prefix: the streams are shared, each shard
    /// is owned by one broker, and any broker answers any request (forwarding it to the
    /// shard's owner). Unset, the broker serves its streams alone.
    #[arg(long, env = "STREAMFABRIC_ADVERTISE")]
    pub advertise: Option<String>,

    /// A file holding the key that signs shard iterators and paging tokens, the same at every
    /// broker of a cluster (32 bytes, or 64 hex digits; on Kubernetes a Secret the operator
    /// creates). Tokens signed with the object store's key (`cluster/token.key`, the default
    /// when this is unset) are still accepted, so a cluster moves to it without failing them.
    #[arg(long, env = "STREAMFABRIC_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,

    /// Cluster: how often this broker renews its membership and reads the cluster's
    /// members, assignment and stream descriptions.
    #[arg(long, env = "STREAMFABRIC_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Cluster: a broker not seen renewing for this long is dead and its shards are taken
    /// by others (a restarted pod with its disk comes back within it and keeps them).
    #[arg(long, env = "STREAMFABRIC_MEMBER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub member_timeout: Duration,

    /// When a PutRecord(s) is acknowledged: `local` (after the local group commit) or
    /// `object` (also after a write-ahead object holding its records is in the object
    /// store; needs `--flush always`).
    #[arg(long, env = "STREAMFABRIC_DURABILITY", default_value = "local", value_parser = parse_durability)]
    pub durability: Durability,

    /// Durability `object`: how long the first write of a batch waits for others to join it
    /// before the batch is written as one object. Longer means fewer PUTs and slower writes;
    /// under load, writes also gather while the PUTs in flight take every slot.
    #[arg(long, env = "STREAMFABRIC_OBJECT_BATCH_LINGER", default_value = "1ms", value_parser = parse_duration)]
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

    /// How long a SubscribeToShard stream lasts before it ends and the consumer subscribes
    /// again from its ContinuationSequenceNumber (AWS: 5 minutes).
    #[arg(long, env = "STREAMFABRIC_SUBSCRIPTION_LIFETIME", default_value = "5m", value_parser = parse_duration)]
    pub subscription_lifetime: Duration,

    /// Region and account shown in stream ARNs.
    #[arg(long, env = "STREAMFABRIC_REGION", default_value = crate::names::DEFAULT_REGION)]
    pub region: String,

    #[arg(long, env = "STREAMFABRIC_ACCOUNT", default_value = crate::names::DEFAULT_ACCOUNT)]
    pub account: String,

    /// Access keys whose AWS Signature Version 4 requests are served: a file of
    /// `<access key id> <secret access key>` lines (`#` comments), or a directory with a file
    /// per key named by its id and holding its secret (a mounted Kubernetes Secret); re-read
    /// when it changes. Unset: requests are not authenticated (any credentials work).
    #[arg(long, env = "STREAMFABRIC_CREDENTIALS")]
    pub credentials: Option<PathBuf>,

    /// An access policy (IAM's JSON: statements allowing or denying access key ids and
    /// groups actions on streams), re-read when it changes. Unset: every authenticated key
    /// may do everything that no resource policy denies.
    #[arg(long, env = "STREAMFABRIC_ACCESS_POLICY")]
    pub access_policy: Option<PathBuf>,

    /// Address of the Kinesis API over HTTPS (beside `--listen`'s HTTP, e.g. during a
    /// migration), with `--tls-cert` and `--tls-key`.
    #[arg(long, env = "STREAMFABRIC_TLS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    pub tls_listen: Option<SocketAddr>,

    /// The HTTPS certificate chain (PEM, the server's first), re-read when it changes.
    #[arg(long, env = "STREAMFABRIC_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The HTTPS private key (PEM: PKCS#8, PKCS#1 or SEC1), re-read with the certificate.
    #[arg(long, env = "STREAMFABRIC_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}
}

/// Settings whose values are secrets: never shown by `/config`, never written into a
/// ConfigMap (the operator passes them from a Secret).
const SECRET_SETTINGS: &[&str] = &[];

/// The settings as a command line, so tests and `from_env` parse with clap's own parsers.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: BrokerConfig,
}

impl Default for BrokerConfig {
    /// Every setting at its default.
    fn default() -> Self {
        Flags::parse_from(["broker"]).config
    }
}

impl BrokerConfig {
    /// Defaults for tests and embedding: ephemeral ports on loopback, data under `dir`.
    pub fn for_dir(dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            data_dir: dir.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            status_delay: Duration::from_millis(20),
            ..BrokerConfig::default()
        }
    }

    /// The environment variable that carries the setting `field` (a field name).
    pub fn env_name(field: &str) -> String {
        let command = Flags::command();
        let arg = command.get_arguments().find(|a| a.get_id() == field);
        let env = arg.and_then(|a| a.get_env()).unwrap_or_else(|| panic!("{field} is not a broker setting"));
        env.to_string_lossy().into_owned()
    }

    /// The environment that makes `streamfabric-broker serve` run with exactly these
    /// settings; unset options and secrets are left out.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        self.values()
            .into_iter()
            .filter(|(field, _)| !SECRET_SETTINGS.contains(field))
            .filter_map(|(field, value)| Some((BrokerConfig::env_name(field), value?)))
            .collect()
    }

    /// Settings from environment variables, as the broker reads them; a `STREAMFABRIC_`
    /// variable that is no setting is an error (a misspelling would otherwise be ignored).
    pub fn from_env(vars: &BTreeMap<String, String>) -> Result<BrokerConfig, String> {
        let command = Flags::command();
        let mut args = vec!["broker".to_string()];
        for (name, value) in vars {
            let arg = command.get_arguments().find(|a| a.get_env().is_some_and(|e| e == name.as_str()));
            match arg.and_then(|a| a.get_long()) {
                Some(long) => args.push(format!("--{long}={value}")),
                None if name.starts_with("STREAMFABRIC_") => return Err(format!("{name} is not a broker setting")),
                None => {}
            }
        }
        Flags::try_parse_from(args).map(|f| f.config).map_err(|e| e.to_string())
    }

    /// The settings as shown on the admin port's `/config`: every setting by field name, as
    /// its flag's value (null when unset), secrets replaced by `"(set)"`.
    pub fn shown(&self) -> BTreeMap<&'static str, Option<String>> {
        self.values()
            .into_iter()
            .map(|(field, value)| match value {
                Some(_) if SECRET_SETTINGS.contains(&field) => (field, Some("(set)".to_string())),
                value => (field, value),
            })
            .collect()
    }
}

/// A setting's value as its flag is written; the inverse of the flag's parser.
trait FlagValue {
    fn flag_value(&self) -> Option<String>;
}

macro_rules! displayed {
    ($($ty:ty),*) => { $(impl FlagValue for $ty {
        fn flag_value(&self) -> Option<String> { Some(self.to_string()) }
    })* };
}
displayed!(u64, usize, i64, bool, String, SocketAddr, Compression);

impl FlagValue for PathBuf {
    fn flag_value(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

impl FlagValue for Duration {
    fn flag_value(&self) -> Option<String> {
        Some(format_duration(*self))
    }
}

impl FlagValue for FlushSetting {
    fn flag_value(&self) -> Option<String> {
        Some(match self {
            FlushSetting::Always => "always".into(),
            FlushSetting::Never => "never".into(),
            FlushSetting::Interval(d) => format!("interval:{}", d.as_millis()),
        })
    }
}

impl FlagValue for Durability {
    fn flag_value(&self) -> Option<String> {
        Some(self.as_str().into())
    }
}

impl<T: FlagValue> FlagValue for Option<T> {
    fn flag_value(&self) -> Option<String> {
        self.as_ref().and_then(T::flag_value)
    }
}

/// When a write is acknowledged, beyond the local flush policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the local group commit; sealed segments reach the object store later.
    Local,
    /// After the local group commit and a write-ahead object PUT holding the records.
    Object,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Local => "local",
            Durability::Object => "object",
        }
    }
}

pub fn parse_durability(s: &str) -> Result<Durability, String> {
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

pub fn parse_flush(s: &str) -> Result<FlushSetting, String> {
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

/// The inverse of `parse_duration`, in the largest unit that is exact (sub-millisecond
/// parts are dropped: no setting is finer).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Compression of a segment object, as recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Lz4,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }

    /// Guesses the compression of an object from its magic number (zstd frame
    /// `28 B5 2F FD`, LZ4 frame `04 22 4D 18`); `None` when neither matches.
    pub fn sniff(data: &[u8]) -> Option<Compression> {
        match data.get(..4) {
            Some([0x28, 0xB5, 0x2F, 0xFD]) => Some(Compression::Zstd),
            Some([0x04, 0x22, 0x4D, 0x18]) => Some(Compression::Lz4),
            _ => None,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" => Ok(Compression::Zstd),
            "lz4" => Ok(Compression::Lz4),
            "none" => Ok(Compression::None),
            other => Err(format!("unknown compression {other:?} (expected zstd, lz4 or none)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting away from its default (so a field `to_env` forgot would read back as
    /// the default and fail the comparison).
    fn all_changed() -> BrokerConfig {
        BrokerConfig {
            listen: "0.0.0.0:1".parse().unwrap(),
            admin_listen: "0.0.0.0:2".parse().unwrap(),
            data_dir: "/elsewhere".into(),
            flush: FlushSetting::Interval(Duration::from_millis(7)),
            segment_bytes: 3,
            segment_age: Duration::from_secs(90),
            status_delay: Duration::from_millis(1500),
            retention_check: Duration::from_secs(7),
            max_record_bytes: 11,
            shard_limit: 12,
            enforce_shard_limits: true,
            shard_write_bytes_per_sec: 13,
            shard_write_records_per_sec: 14,
            shard_read_bytes_per_sec: 15,
            shard_read_calls_per_sec: 16,
            object_store: Some("s3://bucket/prefix".into()),
            object_store_endpoint: Some("http://minio:9000".into()),
            object_store_region: Some("eu-west-3".into()),
            segment_compression: Compression::Lz4,
            upload_backlog_limit: 17,
            orphan_sweep: Duration::from_secs(3600 * 2),
            broker_id: Some("b-7".into()),
            advertise: Some("b-7.brokers:4567".into()),
            cluster_key_file: Some("/etc/key".into()),
            heartbeat_interval: Duration::from_millis(500),
            member_timeout: Duration::from_secs(30),
            durability: Durability::Object,
            object_batch_linger: Duration::from_millis(9),
            object_batch_bytes: 18,
            object_batch_inflight: 19,
            object_put_timeout: Duration::from_secs(2),
            local_retention_bytes: Some(20),
            local_retention_check: Duration::from_secs(21),
            remote_cache_bytes: 22,
            subscription_lifetime: Duration::from_secs(45),
            region: "ap-south-1".into(),
            account: "123456789012".into(),
            credentials: Some("/etc/streamfabric/credentials".into()),
            access_policy: Some("/etc/streamfabric/policy/policy.json".into()),
            tls_listen: Some("0.0.0.0:4443".parse().unwrap()),
            tls_cert: Some("/etc/streamfabric/tls/tls.crt".into()),
            tls_key: Some("/etc/streamfabric/tls/tls.key".into()),
        }
    }

    #[test]
    fn every_setting_round_trips_through_the_environment() {
        let changed = all_changed();
        let defaults = BrokerConfig::default();
        for ((field, a), (_, b)) in changed.values().into_iter().zip(defaults.values()) {
            assert_ne!(a, b, "the fixture must change {field}");
        }
        let env = changed.to_env();
        assert_eq!(BrokerConfig::from_env(&env).unwrap(), changed);
        assert_eq!(BrokerConfig::from_env(&BTreeMap::new()).unwrap(), defaults);
        assert_eq!(env["STREAMFABRIC_SEGMENT_AGE"], "90s");
        assert_eq!(env["STREAMFABRIC_ENFORCE_SHARD_LIMITS"], "true");
    }

    #[test]
    fn unknown_and_invalid_variables_are_refused() {
        let typo = BTreeMap::from([("STREAMFABRIC_DURABLITY".to_string(), "object".to_string())]);
        assert!(BrokerConfig::from_env(&typo).unwrap_err().contains("STREAMFABRIC_DURABLITY is not a broker setting"));
        let other = BTreeMap::from([("HOME".to_string(), "/root".to_string())]);
        assert_eq!(BrokerConfig::from_env(&other).unwrap(), BrokerConfig::default());
        let bad = BTreeMap::from([("STREAMFABRIC_DURABILITY".to_string(), "remote".to_string())]);
        assert!(BrokerConfig::from_env(&bad).unwrap_err().contains("expected local or object"));
    }

    #[test]
    fn durations_and_flush_settings() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("soon").is_err());
        for d in [0, 1, 999, 1000, 61_000, 120_000, 7_200_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(parse_flush("interval:5").unwrap(), FlushSetting::Interval(Duration::from_millis(5)));
        assert!(parse_flush("sometimes").is_err());
        assert_eq!(parse_durability("object").unwrap(), Durability::Object);
        assert_eq!(BrokerConfig::for_dir("/x").durability, Durability::Local, "local is the default");
    }
}
