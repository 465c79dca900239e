//! Command line: `run` (put, optionally drain/verify, report), `probe` (outage windows per
//! shard), `pull` (consume through a sidecar) and `null-server`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use streamfabric_api::limits::{DEFAULT_MAX_RECORD_BYTES, MAX_PUT_RECORDS_BYTES, MAX_PUT_RECORDS_ENTRIES};

/// Size of the generated partition keys, counted against PutRecords' 5 MiB request limit.
pub const PARTITION_KEY_LEN: usize = 16;

#[derive(Debug, Parser)]
#[command(
    name = "streamfabric-loadgen",
    version,
    about = "Load generator for any Kinesis Data Streams endpoint speaking JSON 1.1 or CBOR 1.1 (streamfabric, kinesalite, ...)"
)]
pub struct Cli {
    /// Runtime worker threads (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put records (optionally drain and verify them) and report throughput and latency.
    ///
    /// Report lines are `<section> key=value ...` (sections: params, stream, put, drain,
    /// verify, server). Exit status: 0 success, 1 error, 3 verification failed (missing or
    /// duplicated records).
    Run(RunArgs),
    /// A do-nothing Kinesis endpoint (stores nothing) for measuring the generator's ceiling.
    ///
    /// It STORES NOTHING: it parses each PutRecords body into the API model (so its cost is HTTP + JSON
    /// parsing only) and answers with fake shard ids and sequence numbers. CreateStream,
    /// DescribeStreamSummary (always ACTIVE), ListShards, DeleteStream and PutRecord are
    /// answered minimally; GetShardIterator/GetRecords are refused, so use `run` against it
    /// without --drain/--verify.
    NullServer(NullServerArgs),
    /// Put one small record to every open shard each interval and report how long each shard
    /// was unwritable (outage windows, p50/p99/max), e.g. while brokers hand shards over.
    Probe(ProbeArgs),
    /// Consume through a streamfabric sidecar's pull API (GET /v1/next, then POST
    /// /v1/checkpoint of each shard's last record), as an application beside it does, until
    /// `--min-records` distinct records came. Report: `pull records=.. distinct=.. shards=..`;
    /// exit status 1 when fewer came within `--timeout-secs`.
    Pull(PullArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// The sidecar's endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4599")]
    pub endpoint: String,
    /// Stop once this many distinct records (shard, sequence and sub-sequence number) came.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_records: u64,
    /// Give up after this long.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Endpoint URL (plain http only).
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    pub endpoint: String,
    /// Stream to probe; created if absent and waited ACTIVE.
    #[arg(long, default_value = "probe")]
    pub stream: String,
    /// Shard count used when the stream has to be created.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub shards: u32,
    /// How long to probe.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_secs: u64,
    /// Milliseconds between puts to one shard.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub interval_ms: u64,
    /// A success slower than this also counts as an outage window.
    #[arg(long, default_value_t = 200)]
    pub slow_ms: u64,
    /// Per-request timeout in milliseconds (a timeout is a failed attempt).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Endpoint URL: `http://...`, or `https://...` with `--ca-file`.
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    pub endpoint: String,
    /// Body encoding: `json` (JSON 1.1, most SDKs) or `cbor` (CBOR 1.1, the Java SDK's and
    /// the KCL's).
    #[arg(long, default_value = "json", value_parser = ["json", "cbor"])]
    pub encoding: String,
    /// Stream to write to; created if absent and waited ACTIVE.
    #[arg(long, default_value = "loadgen")]
    pub stream: String,
    /// Shard count used when the stream has to be created.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shards: u32,
    /// Concurrent HTTP/1.1 keep-alive connections, one per worker task.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub connections: u16,
    /// Records to put (the run ends at whichever of --records / --duration-secs comes first).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
    /// Put phase time bound in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_secs: u64,
    /// Data bytes per record; the first 8 are the record's unique id.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per request; 1 means PutRecord instead of PutRecords.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Target records per second over all connections (default: unlimited). Requests are
    /// paced on a fixed schedule per worker, the workers' schedules staggered so that requests
    /// arrive evenly spaced; latency is also reported from the schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// After putting, read every shard from TRIM_HORIZON until caught up and report.
    #[arg(long)]
    pub drain: bool,
    /// Check every acknowledged record is read back exactly once (implies --drain).
    #[arg(long)]
    pub verify: bool,
    /// Delete the stream at the end.
    #[arg(long)]
    pub delete: bool,
    /// Report this server process's CPU time and RSS (from /proc) around each phase.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Per-request timeout in seconds; a timeout aborts the run.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// Bound on waiting for the stream to become ACTIVE.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub create_timeout_secs: u64,
    /// Bound on the drain phase.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub drain_timeout_secs: u64,
    /// Sign every request with this access key (SigV4, computed per request as the SDKs
    /// do), for brokers with --credentials; with --secret-access-key. Without it the
    /// requests carry a well-formed but unchecked signature.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", requires = "secret_access_key")]
    pub access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// For an https:// --endpoint: the CA certificate(s) (PEM) its certificate must chain to.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl RunArgs {
    /// Checks clap cannot express; also folds --verify into --drain.
    pub fn validate(mut self) -> Result<Self, String> {
        if self.record_size < crate::workload::ID_BYTES || self.record_size > DEFAULT_MAX_RECORD_BYTES {
            return Err(format!(
                "--record-size must be between {} (the record id) and {DEFAULT_MAX_RECORD_BYTES}",
                crate::workload::ID_BYTES
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_PUT_RECORDS_ENTRIES {
            return Err(format!("--batch-size must be between 1 and {MAX_PUT_RECORDS_ENTRIES}"));
        }
        let request_bytes = self.batch_size * (self.record_size + PARTITION_KEY_LEN);
        if self.batch_size > 1 && request_bytes > MAX_PUT_RECORDS_BYTES {
            return Err(format!(
                "--batch-size x (--record-size + {PARTITION_KEY_LEN}-byte key) = {request_bytes} exceeds \
                 the PutRecords limit of {MAX_PUT_RECORDS_BYTES} bytes"
            ));
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("--rate must be a positive number of records per second".into());
        }
        self.drain |= self.verify;
        Ok(self)
    }
}

#[derive(Debug, Clone, Args)]
pub struct NullServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4590")]
    pub listen: SocketAddr,
    /// Shards reported by DescribeStreamSummary and ListShards.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shards: u32,
    /// Exit after this many seconds (default: run until Ctrl-C / SIGTERM).
    #[arg(long)]
    pub exit_after_secs: Option<u64>,
    /// Fault injection for exercising `run`'s retry paths: fail this percentage of
    /// PutRecords entries with ProvisionedThroughputExceededException.
    #[arg(long, default_value_t = 0.0)]
    pub entry_failure_percent: f64,
    /// Fault injection: answer this percentage of puts with HTTP 503 ServiceUnavailable.
    #[arg(long, default_value_t = 0.0)]
    pub request_failure_percent: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> RunArgs {
        let mut all = vec!["streamfabric-loadgen", "run"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Run(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let a = parse(&[]).validate().unwrap();
        assert_eq!(a.endpoint, "http://127.0.0.1:4567");
        assert_eq!((a.shards, a.connections, a.records, a.duration_secs), (4, 8, 1_000_000, 60));
        assert_eq!((a.record_size, a.batch_size, a.rate), (100, 500, None));
        assert!(!a.drain && !a.verify && !a.delete);
    }

    #[test]
    fn verify_implies_drain_and_limits_are_checked() {
        assert!(parse(&["--verify"]).validate().unwrap().drain);
        assert!(parse(&["--record-size", "7"]).validate().is_err());
        assert!(parse(&["--batch-size", "501"]).validate().is_err());
        assert!(parse(&["--batch-size", "500", "--record-size", "20000"]).validate().is_err());
        assert!(parse(&["--batch-size", "1", "--record-size", "1048576"]).validate().is_ok());
        assert!(parse(&["--rate", "0"]).validate().is_err());
    }

    #[test]
    fn the_encoding_is_json_or_cbor() {
        assert_eq!(parse(&[]).encoding, "json");
        assert_eq!(parse(&["--encoding", "cbor"]).encoding, "cbor");
        let xml = ["streamfabric-loadgen", "run", "--encoding", "xml"];
        assert!(Cli::try_parse_from(xml).is_err());
    }
}
