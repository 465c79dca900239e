//! The `run` subcommand: set up the stream, put, optionally drain/verify, report, clean up.
//! Every report line is `<section> key=value ...` so scripts can grep a section and split.

use crate::cli::RunArgs;
use crate::client::{Connection, Endpoint};
use crate::procstat::{self, ProcSample};
use crate::stats::{latency_line, per_sec};
use crate::verify::Verifier;
use crate::workload::{PutConfig, put_phase};
use crate::{drain, stream};
use std::time::Duration;
use streamfabric_api::Format;

pub enum Outcome {
    Success,
    VerifyFailed,
}

pub async fn run(args: RunArgs) -> Result<Outcome, String> {
    let args = args.validate()?;
    let endpoint = Endpoint::parse(&args.endpoint)?
        .with_ca_file(args.ca_file.as_deref())?
        .signed_by(args.access_key_id.as_deref(), args.secret_access_key.as_deref())
        .speaking(if args.encoding == "cbor" { Format::Cbor } else { Format::Json });
    let request_timeout = Duration::from_secs(args.request_timeout_secs);
    let run_tag: u16 = rand::random();
    print_params(&args, run_tag);

    let mut control = Connection::open(&endpoint, request_timeout).await.map_err(|e| e.to_string())?;
    let state =
        stream::ensure_active(&mut control, &args.stream, args.shards, Duration::from_secs(args.create_timeout_secs))
            .await?;
    let open_shards = state.open_shards.map_or("unknown".into(), |n| n.to_string());
    println!("stream name={} created={} open_shards={open_shards}", args.stream, state.created);
    if !state.created && args.drain {
        println!("note the stream existed before this run; records of earlier runs are reported as foreign");
    }

    let server = ServerProbe::new(args.server_pid)?;
    let before_put = server.sample()?;
    let put = put_phase(
        &endpoint,
        PutConfig {
            stream: args.stream.clone(),
            run_tag,
            connections: args.connections,
            records: args.records,
            duration: Duration::from_secs(args.duration_secs),
            record_size: args.record_size,
            batch_size: args.batch_size,
            rate: args.rate,
            request_timeout,
        },
    )
    .await?;
    let after_put = server.sample()?;
    let mut s = put.stats;
    let secs = put.seconds;
    println!(
        "put records={} bytes={} seconds={secs:.3} records_per_sec={:.0} mb_per_sec={:.2} requests={} requests_per_sec={:.0} wire_mb_per_sec={:.2}",
        s.acked_records,
        s.acked_bytes,
        per_sec(s.acked_records as f64, secs),
        per_sec(s.acked_bytes as f64, secs) / 1e6,
        s.requests,
        per_sec(s.requests as f64, secs),
        per_sec(s.wire_bytes as f64, secs) / 1e6,
    );
    println!("put latency_ms {}", latency_line(&mut s.latencies_us));
    if args.rate.is_some() {
        println!("put latency_from_schedule_ms {}", latency_line(&mut s.scheduled_latencies_us));
    }
    println!(
        "put retries retried_requests={} throttled_requests={} retried_records={} throttled_records={} failed_records={}",
        s.retried_requests, s.throttled_requests, s.retried_records, s.throttled_records, s.failed_records
    );

    let mut outcome = Outcome::Success;
    let mut after_drain = None;
    if args.drain {
        // The control connection may have been idle for the whole put phase: start afresh.
        control = Connection::open(&endpoint, request_timeout).await.map_err(|e| e.to_string())?;
        let shards = stream::list_shards(&mut control, &args.stream).await?;
        let d = drain::drain(
            &endpoint,
            &args.stream,
            shards,
            args.connections as usize,
            args.verify,
            request_timeout,
            Duration::from_secs(args.drain_timeout_secs),
        )
        .await?;
        after_drain = Some(server.sample()?);
        println!(
            "drain records={} bytes={} seconds={:.3} records_per_sec={:.0} mb_per_sec={:.2} requests={} throttles={} caught_up_shards={}/{}",
            d.records,
            d.bytes,
            d.seconds,
            per_sec(d.records as f64, d.seconds),
            per_sec(d.bytes as f64, d.seconds) / 1e6,
            d.requests,
            d.throttles,
            d.caught_up_shards,
            d.shards,
        );
        if args.verify {
            let mut verifier = Verifier::new(run_tag, put.acks);
            d.ids.into_iter().for_each(|id| verifier.observe(id));
            let r = verifier.finish();
            println!(
                "verify result={} acked={} read={} exactly_once={} missing={} duplicated={} resent_duplicated={} unacked_extra={} foreign={}",
                if r.ok() { "OK" } else { "FAILED" },
                r.acked,
                r.read,
                r.exactly_once,
                r.missing,
                r.duplicated,
                r.resent_duplicated,
                r.unacked_extra,
                r.foreign
            );
            if !r.ok() {
                outcome = Outcome::VerifyFailed;
            }
        }
    }

    if let (Some(before), Some(after)) = (before_put, after_put) {
        server.report("put", &before, &after, s.acked_records);
        if let Some(Some(drained)) = after_drain {
            server.report("drain", &after, &drained, 0);
        }
    }

    if args.delete {
        control = Connection::open(&endpoint, request_timeout).await.map_err(|e| e.to_string())?;
        stream::delete(&mut control, &args.stream).await?;
        println!("stream deleted name={}", args.stream);
    }
    Ok(outcome)
}

fn print_params(a: &RunArgs, run_tag: u16) {
    let rate = a.rate.map_or("unlimited".into(), |r| format!("{r}"));
    let api = if a.batch_size == 1 { "PutRecord" } else { "PutRecords" };
    println!(
        "params endpoint={} encoding={} stream={} shards={} connections={} records={} duration_secs={} record_size={} batch_size={} api={api} rate={rate} drain={} verify={} delete={} run_tag={run_tag:04x}",
        a.endpoint,
        a.encoding,
        a.stream,
        a.shards,
        a.connections,
        a.records,
        a.duration_secs,
        a.record_size,
        a.batch_size,
        a.drain,
        a.verify,
        a.delete
    );
}

/// Samples --server-pid, if given.
struct ServerProbe {
    pid: Option<u32>,
    ticks_per_sec: u64,
}

impl ServerProbe {
    fn new(pid: Option<u32>) -> Result<ServerProbe, String> {
        let probe = ServerProbe { pid, ticks_per_sec: procstat::clock_ticks_per_sec() };
        probe.sample()?; // fail before the run, not after it
        Ok(probe)
    }

    fn sample(&self) -> Result<Option<ProcSample>, String> {
        self.pid.map(procstat::sample).transpose()
    }

    /// `server phase=put cpu_seconds=... system_seconds=... cpu_us_per_record=... rss_before_kb=... ...`
    fn report(&self, phase: &str, before: &ProcSample, after: &ProcSample, records: u64) {
        let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / self.ticks_per_sec as f64;
        let system = after.system_ticks.saturating_sub(before.system_ticks) as f64 / self.ticks_per_sec as f64;
        let kb = |v: Option<u64>| v.map_or("unknown".into(), |v| v.to_string());
        let per_record =
            if records > 0 { format!(" cpu_us_per_record={:.2}", cpu * 1e6 / records as f64) } else { String::new() };
        println!(
            "server phase={phase} pid={} cpu_seconds={cpu:.2} system_seconds={system:.2}{per_record} rss_before_kb={} rss_after_kb={} hwm_after_kb={}",
            self.pid.unwrap_or(0),
            kb(before.rss_kb),
            kb(after.rss_kb),
            kb(after.hwm_kb)
        );
    }
}
