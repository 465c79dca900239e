//! The sidecar's flags (each also an environment variable, as the operator's injection sets
//! them) and the settings they make.

use crate::producer::Ack;
use crate::{ConsumerSettings, ProducerSettings, SidecarSettings};
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

/// streamfabric's sidecar: a batching, retrying Kinesis producer on a local endpoint, and
/// (with --consumer-application) a consumer delivering a stream's records to the application.
#[derive(Parser)]
#[command(version)]
pub struct Args {
    /// The application's endpoint: point its AWS SDK here (or POST /v1/streams/{stream}/records).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_LISTEN", default_value = "127.0.0.1:4599")]
    pub listen: SocketAddr,
    /// Where /metrics (Prometheus) and /healthz are served; "off" for nowhere.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_ADMIN_LISTEN", default_value = "127.0.0.1:4600", value_parser = parse_admin)]
    pub admin_listen: AdminAddress,
    /// The brokers' Kinesis API, e.g. a DataStream's status.endpoint.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_BROKER_ENDPOINT")]
    pub broker_endpoint: String,
    /// How long a record waits for others to share its PutRecords (KPL: 100 ms).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_BUFFERED_TIME", default_value = "100ms", value_parser = streamfabric_api::settings::parse_duration)]
    pub max_buffered_time: Duration,
    /// Records per PutRecords (at most 500).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_BATCH_RECORDS", default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub max_batch_records: u16,
    /// How long a record is retried before its last error is its answer (KPL: 30 s).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_RECORD_TTL", default_value = "30s", value_parser = streamfabric_api::settings::parse_duration)]
    pub record_ttl: Duration,
    /// When puts are answered: `stored` (once the brokers stored each record; the answer
    /// says where) or `buffered` (fire and forget: once buffered, with no shard or sequence
    /// number; failures only counted and logged).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_ACK", default_value = "stored", value_parser = parse_ack)]
    pub ack: Ack,
    /// Bytes of records waiting for the brokers beyond which puts are refused at once
    /// (LimitExceededException).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_BUFFERED_BYTES", default_value_t = 256 << 20)]
    pub max_buffered_bytes: usize,
    /// Pack small records of one shard into KPL aggregated records (the consumers must
    /// de-aggregate them, as the KCL does).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_AGGREGATE")]
    pub aggregate: bool,
    /// Bytes per aggregated record (KPL: 51,200; at most the 1 MiB record limit).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_AGGREGATION_MAX_BYTES", default_value_t = 51_200, value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub aggregation_max_bytes: u32,
    /// Consume for this application (workers of one application share the shards' leases).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_CONSUMER_APPLICATION", requires = "consumer_stream")]
    pub consumer_application: Option<String>,
    /// The stream the consumer reads.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_CONSUMER_STREAM")]
    pub consumer_stream: Option<String>,
    /// Where batches of records are POSTed, e.g. http://127.0.0.1:8080/records; without it
    /// the application pulls them (GET /v1/next, POST /v1/checkpoint on --listen).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_DELIVER_TO")]
    pub deliver_to: Option<String>,
    /// This worker's name in the leases (default: the host name and process id).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Where a shard without a checkpoint starts: TRIM_HORIZON or LATEST.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_INITIAL_POSITION", default_value = "TRIM_HORIZON", value_parser = ["TRIM_HORIZON", "LATEST"])]
    pub initial_position: String,
    /// A lease not renewed for this long is taken by another worker (KCL: 10 s).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_FAILOVER_TIME", default_value = "10s", value_parser = streamfabric_api::settings::parse_duration)]
    pub failover_time: Duration,
    /// Deliver this fraction of records (0 to 1; by a hash of their sequence numbers).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_SAMPLE_RECORDS", value_parser = parse_fraction)]
    pub sample_records: Option<f64>,
    /// Deliver every record of this fraction of partition keys (0 to 1; the same keys at
    /// every consumer and after restarts) and none of the others.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_SAMPLE_KEYS", value_parser = parse_fraction)]
    pub sample_keys: Option<f64>,
    /// Deliver only records whose JSON data satisfies this expression, e.g.
    /// 'kind == "refund" && amount > 100' (README: the sidecar's filter expressions).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_SAMPLE_FILTER", value_parser = crate::consumer::filter::Filter::parse)]
    pub sample_filter: Option<crate::consumer::filter::Filter>,
    /// Batches of one shard POSTed to --deliver-to at once: each page read is split by
    /// partition key into that many (order kept per key); 1: one batch at a time, in order.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_BATCHES_IN_FLIGHT", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_batches_in_flight: u16,
    /// The access key the calls to the brokers are signed with (SigV4), when the brokers
    /// require one (`--credentials`); with --secret-access-key.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", requires = "secret_access_key")]
    pub access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// The region the brokers are configured for (their --region).
    #[arg(long, env = "AWS_REGION", default_value = streamfabric_api::names::DEFAULT_REGION)]
    pub region: String,
    /// Records per GetRecords (at most 10,000).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_RECORDS", default_value_t = 1_000, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub max_records: u16,
}

impl Args {
    pub fn settings(&self) -> SidecarSettings {
        SidecarSettings {
            listen: self.listen,
            admin_listen: self.admin_listen.0,
            broker_endpoint: self.broker_endpoint.clone(),
            broker_timeout: Duration::from_secs(10),
            credentials: self.access_key_id.as_ref().map(|id| streamfabric_api::sigv4::Signer {
                access_key_id: id.clone(),
                secret_access_key: self.secret_access_key.clone().unwrap_or_default(),
                region: self.region.clone(),
                service: "kinesis".into(),
            }),
            consumer: self.consumer_application.as_ref().map(|application| ConsumerSettings {
                initial_position: self.initial_position.clone(),
                failover_time: self.failover_time,
                max_records: self.max_records as usize,
                batches_in_flight: self.max_batches_in_flight as usize,
                sampling: crate::consumer::sampling::Sampling {
                    records: self.sample_records,
                    keys: self.sample_keys,
                    filter: self.sample_filter.clone(),
                },
                ..ConsumerSettings::new(
                    application,
                    self.consumer_stream.as_deref().unwrap_or_default(),
                    &self.worker_id.clone().unwrap_or_else(default_worker_id),
                    self.deliver_to.as_deref(),
                )
            }),
            producer: ProducerSettings {
                max_buffered_time: self.max_buffered_time,
                max_batch_records: self.max_batch_records as usize,
                record_ttl: self.record_ttl,
                aggregate: self.aggregate,
                ack: self.ack,
                max_buffered_bytes: self.max_buffered_bytes,
                aggregation_max_bytes: self.aggregation_max_bytes as usize,
                ..ProducerSettings::default()
            },
        }
    }
}

/// The pod's (or machine's) name and this process: unique among an application's workers.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sidecar".into());
    format!("{host}-{}", std::process::id())
}

fn parse_ack(s: &str) -> Result<Ack, String> {
    match s {
        "stored" => Ok(Ack::Stored),
        "buffered" => Ok(Ack::Buffered),
        other => Err(format!("{other:?}: expected stored or buffered")),
    }
}

/// `--admin-listen`: an address, or none ("off").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAddress(pub Option<SocketAddr>);

fn parse_admin(s: &str) -> Result<AdminAddress, String> {
    if s == "off" {
        return Ok(AdminAddress(None));
    }
    s.parse()
        .map(|a| AdminAddress(Some(a)))
        .map_err(|e| format!("{s:?}: {e} (an address such as 127.0.0.1:4600, or off)"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?}: expected a fraction between 0 and 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("streamfabric-sidecar").chain(args.iter().copied()))
    }

    /// Every flag parses into the field that reads it (a mismatch between a flag's parser
    /// and its field only shows when the arguments are read).
    #[test]
    fn every_flag_parses() {
        let a = parse(&["--broker-endpoint", "http://b:4567"]).unwrap();
        assert_eq!(a.admin_listen, AdminAddress(Some("127.0.0.1:4600".parse().unwrap())));
        assert_eq!((a.ack, a.aggregate, a.consumer_application), (Ack::Stored, false, None));
        let a = parse(&[
            "--broker-endpoint",
            "http://b:4567",
            "--listen",
            "127.0.0.1:5000",
            "--admin-listen",
            "off",
            "--max-buffered-time",
            "20ms",
            "--max-batch-records",
            "100",
            "--record-ttl",
            "5s",
            "--ack",
            "buffered",
            "--max-buffered-bytes",
            "1000",
            "--aggregate",
            "--aggregation-max-bytes",
            "4096",
            "--consumer-application",
            "app",
            "--consumer-stream",
            "s",
            "--deliver-to",
            "http://127.0.0.1:8080/",
            "--worker-id",
            "w",
            "--initial-position",
            "LATEST",
            "--failover-time",
            "3s",
            "--max-records",
            "50",
            "--max-batches-in-flight",
            "4",
            "--sample-records",
            "0.5",
            "--sample-keys",
            "0.25",
            "--sample-filter",
            "kind == \"a\"",
        ])
        .unwrap();
        assert_eq!(a.admin_listen, AdminAddress(None));
        assert_eq!((a.ack, a.max_buffered_bytes, a.aggregation_max_bytes), (Ack::Buffered, 1000, 4096));
        assert_eq!((a.sample_records, a.sample_keys), (Some(0.5), Some(0.25)));
        assert_eq!(a.settings().consumer.unwrap().batches_in_flight, 4);
        assert!(a.sample_filter.is_some() && a.consumer_stream.as_deref() == Some("s"));
        assert!(parse(&["--broker-endpoint", "x", "--sample-keys", "2"]).is_err());
        assert!(parse(&["--broker-endpoint", "x", "--sample-filter", "kind =="]).is_err());
        assert!(parse(&["--broker-endpoint", "x", "--consumer-application", "app"]).is_err(), "needs a stream");
        assert!(parse(&["--broker-endpoint", "x", "--ack", "maybe"]).is_err());
    }
}
