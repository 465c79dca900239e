use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use streamfabric_sidecar::{ProducerSettings, SidecarSettings};

/// streamfabric's sidecar: a batching, retrying Kinesis producer on a local endpoint.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The application's endpoint: point its AWS SDK here (or POST /v1/streams/{stream}/records).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_LISTEN", default_value = "127.0.0.1:4599")]
    listen: SocketAddr,
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
    /// Pack small records of one shard into KPL aggregated records (the consumers must
    /// de-aggregate them, as the KCL does).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_AGGREGATE")]
    aggregate: bool,
    /// Bytes per aggregated record (KPL: 51,200; at most the 1 MiB record limit).
    #[arg(long, env = "STREAMFABRIC_SIDECAR_AGGREGATION_MAX_BYTES", default_value_t = 51_200, value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    aggregation_max_bytes: u32,
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
        broker_endpoint: args.broker_endpoint.clone(),
        broker_timeout: Duration::from_secs(10),
        producer: ProducerSettings {
            max_buffered_time: args.max_buffered_time,
            max_batch_records: args.max_batch_records as usize,
            record_ttl: args.record_ttl,
            aggregate: args.aggregate,
            aggregation_max_bytes: args.aggregation_max_bytes as usize,
            ..ProducerSettings::default()
        },
    };
    match streamfabric_sidecar::start(settings).await {
        Ok(running) => {
            tracing::info!(listen = %running.addr, brokers = %args.broker_endpoint, aggregate = args.aggregate, "streamfabric sidecar serving");
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
            eprintln!("streamfabric-sidecar: cannot listen on {}: {e}", args.listen);
            std::process::ExitCode::FAILURE
        }
    }
}
