use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use streamfabric_sidecar::producer::Ack;
use streamfabric_sidecar::{ConsumerSettings, ProducerSettings, SidecarSettings};

/// streamfabric's sidecar: a batching, retrying Kinesis producer on a local endpoint, and
/// (with --consumer-application) a consumer delivering a stream's records to the application.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The application's endpoint: point its AWS SDK here (or POST /v1/streams/{stream}/records).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_LISTEN", default_value = "127.0.0.1:4599")]
    listen: SocketAddr,
    /// Where /metrics (Prometheus) and /healthz are served; "off" for nowhere.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_ADMIN_LISTEN", default_value = "127.0.0.1:4600", value_parser = parse_admin)]
    admin_listen: AdminAddress,
    /// The brokers' Kinesis API, e.g. a DataStream's status.endpoint.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_BROKER_ENDPOINT")]
    broker_endpoint: String,
    /// How long a record waits for others to share its PutRecords (KPL: 100 ms).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_BUFFERED_TIME", default_value = "100ms", value_parser = streamfabric_api::settings::parse_duration)]
    max_buffered_time: Duration,
    /// Records per PutRecords (at most 500).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_BATCH_RECORDS", default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=500))]
    max_batch_records: u16,
    /// How long a record is retried before its last error is its answer (KPL: 30 s).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_RECORD_TTL", default_value = "30s", value_parser = streamfabric_api::settings::parse_duration)]
    record_ttl: Duration,
    /// When puts are answered: `stored` (once the brokers stored each record; the answer
    /// says where) or `buffered` (fire and forget: once buffered, with no shard or sequence
    /// number; failures only counted and logged).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_ACK", default_value = "stored", value_parser = parse_ack)]
    ack: Ack,
    /// Bytes of records waiting for the brokers beyond which puts are refused at once
    /// (LimitExceededException).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_BUFFERED_BYTES", default_value_t = 256 << 20)]
    max_buffered_bytes: usize,
    /// Pack small records of one shard into KPL aggregated records (the consumers must
    /// de-aggregate them, as the KCL does).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_AGGREGATE")]
    aggregate: bool,
    /// Bytes per aggregated record (KPL: 51,200; at most the 1 MiB record limit).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_AGGREGATION_MAX_BYTES", default_value_t = 51_200, value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    aggregation_max_bytes: u32,
    /// Consume for this application (workers of one application share the shards' leases).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_CONSUMER_APPLICATION", requires = "consumer_stream")]
    consumer_application: Option<String>,
    /// The stream the consumer reads.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_CONSUMER_STREAM")]
    consumer_stream: Option<String>,
    /// Where batches of records are POSTed, e.g. http://127.0.0.1:8080/records; without it
    /// the application pulls them (GET /v1/next, POST /v1/checkpoint on --listen).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_DELIVER_TO")]
    deliver_to: Option<String>,
    /// This worker's name in the leases (default: the host name and process id).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_WORKER_ID")]
    worker_id: Option<String>,
    /// Where a shard without a checkpoint starts: TRIM_HORIZON or LATEST.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_INITIAL_POSITION", default_value = "TRIM_HORIZON", value_parser = ["TRIM_HORIZON", "LATEST"])]
    initial_position: String,
    /// A lease not renewed for this long is taken by another worker (KCL: 10 s).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_FAILOVER_TIME", default_value = "10s", value_parser = streamfabric_api::settings::parse_duration)]
    failover_time: Duration,
    /// Deliver this fraction of records (0 to 1; by a hash of their sequence numbers).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_SAMPLE_RECORDS", value_parser = parse_fraction)]
    sample_records: Option<f64>,
    /// Deliver every record of this fraction of partition keys (0 to 1; the same keys at
    /// every consumer and after restarts) and none of the others.
    #[arg(long, env = "STREAMFABRIC_SIDECAR_SAMPLE_KEYS", value_parser = parse_fraction)]
    sample_keys: Option<f64>,
    /// Deliver only records whose JSON data satisfies this expression, e.g.
    /// 'kind == "refund" && amount > 100' (README: the sidecar's filter expressions).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_SAMPLE_FILTER", value_parser = streamfabric_sidecar::consumer::filter::Filter::parse)]
    sample_filter: Option<streamfabric_sidecar::consumer::filter::Filter>,
    /// Records per GetRecords (at most 10,000).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_MAX_RECORDS", default_value_t = 1_000, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    max_records: u16,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREAMFABRIC_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let settings = SidecarSettings {
        listen: args.listen,
        admin_listen: args.admin_listen.0,
        broker_endpoint: args.broker_endpoint.clone(),
        broker_timeout: Duration::from_secs(10),
        consumer: args.consumer_application.as_ref().map(|application| ConsumerSettings {
            initial_position: args.initial_position.clone(),
            failover_time: args.failover_time,
            max_records: args.max_records as usize,
            sampling: streamfabric_sidecar::consumer::sampling::Sampling {
                records: args.sample_records,
                keys: args.sample_keys,
                filter: args.sample_filter.clone(),
            },
            ..ConsumerSettings::new(
                application,
                args.consumer_stream.as_deref().unwrap_or_default(),
                &args.worker_id.clone().unwrap_or_else(default_worker_id),
                args.deliver_to.as_deref(),
            )
        }),
        producer: ProducerSettings {
            max_buffered_time: args.max_buffered_time,
            max_batch_records: args.max_batch_records as usize,
            record_ttl: args.record_ttl,
            aggregate: args.aggregate,
            ack: args.ack,
            max_buffered_bytes: args.max_buffered_bytes,
            aggregation_max_bytes: args.aggregation_max_bytes as usize,
            ..ProducerSettings::default()
        },
    };
    match streamfabric_sidecar::start(settings).await {
        Ok(running) => {
            tracing::info!(
                listen = %running.addr, admin = ?running.admin_addr, brokers = %args.broker_endpoint,
                aggregate = args.aggregate, ack = ?args.ack, consumer = ?args.consumer_application,
                "streamfabric sidecar serving"
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping: no new connections; answering the calls in flight");
            // The records buffered are sent (or refused) before their callers are answered.
            if !running.shutdown(args.record_ttl + Duration::from_secs(1)).await {
                tracing::warn!("calls still in flight at exit");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamfabric-sidecar: cannot start on {}: {e}", args.listen);
            std::process::ExitCode::FAILURE
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
struct AdminAddress(Option<SocketAddr>);

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
        assert!(a.sample_filter.is_some() && a.consumer_stream.as_deref() == Some("s"));
        assert!(parse(&["--broker-endpoint", "x", "--sample-keys", "2"]).is_err());
        assert!(parse(&["--broker-endpoint", "x", "--sample-filter", "kind =="]).is_err());
        assert!(parse(&["--broker-endpoint", "x", "--consumer-application", "app"]).is_err(), "needs a stream");
        assert!(parse(&["--broker-endpoint", "x", "--ack", "maybe"]).is_err());
    }
}
