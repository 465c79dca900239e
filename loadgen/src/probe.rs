//! The `probe` subcommand: how long each shard stays unwritable while brokers hand shards
//! over, join, leave or die. One task per open shard puts one small record to it (by its
//! starting hash key) every interval, on its own connection, for the whole run, and records
//! every outage window: from the send time of the first attempt that failed (or of a success
//! slower than `--slow-ms`) to the answer of the next success.
//!
//! Report lines: `window shard=.. start_s=.. ms=.. failures=.. last_error=..` per window
//! (start relative to the probe's start, printed first as `probe-start ... unix_ms=..`, so a
//! script can tell which event caused it), then
//! `probe shards=.. puts=.. failures=.. windows=.. p50_ms=.. p99_ms=.. max_ms=..`.

use crate::cli::ProbeArgs;
use crate::client::{Connection, Endpoint};
use crate::stats::nearest_rank;
use crate::stream;
use bytes::Bytes;
use std::time::{Duration, Instant};
use streamfabric_api::model::{ListShardsInput, ListShardsOutput, Operation, PutRecordInput, PutRecordOutput};
use streamfabric_api::types::Blob;

/// One shard's unwritable stretch.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub start: Duration,
    pub length: Duration,
    pub failures: u32,
    pub last_error: String,
}

/// Follows one shard's attempts and cuts them into outage windows.
#[derive(Debug, Default)]
pub struct Outages {
    open: Option<(Duration, u32, String)>,
    pub closed: Vec<Window>,
    pub puts: u64,
    pub failures: u64,
}

impl Outages {
    /// An attempt sent at `sent` (since the probe's start) was answered at `answered`.
    pub fn attempt(&mut self, sent: Duration, answered: Duration, result: Result<(), String>, slow: Duration) {
        self.puts += 1;
        match result {
            Err(e) => {
                self.failures += 1;
                let (_, failures, last) = self.open.get_or_insert((sent, 0, String::new()));
                *failures += 1;
                *last = e;
            }
            Ok(()) => {
                let window = match self.open.take() {
                    Some((start, failures, last_error)) => {
                        Some(Window { start, length: answered - start, failures, last_error })
                    }
                    None if answered - sent > slow => {
                        Some(Window { start: sent, length: answered - sent, failures: 0, last_error: "slow".into() })
                    }
                    None => None,
                };
                self.closed.extend(window);
            }
        }
    }

    /// At the end of the run: a window still open lasted until `now`.
    pub fn finish(&mut self, now: Duration) {
        if let Some((start, failures, last_error)) = self.open.take() {
            self.closed.push(Window {
                start,
                length: now - start,
                failures,
                last_error: format!("unended: {last_error}"),
            });
        }
    }
}

pub async fn probe(args: ProbeArgs) -> Result<(), String> {
    let endpoint = Endpoint::parse(&args.endpoint)?;
    let timeout = Duration::from_millis(args.request_timeout_ms);
    let mut control = Connection::open(&endpoint, Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
    stream::ensure_active(&mut control, &args.stream, args.shards, Duration::from_secs(60)).await?;
    let input = ListShardsInput { stream_name: Some(args.stream.clone()), ..Default::default() };
    let listed: ListShardsOutput =
        control.call(Operation::ListShards, &input).await.map_err(|e| format!("ListShards: {e}"))?;
    let open: Vec<(String, String)> = listed
        .shards
        .into_iter()
        .filter(|s| s.sequence_number_range.ending_sequence_number.is_none())
        .map(|s| (s.shard_id, s.hash_key_range.starting_hash_key))
        .collect();
    let started = Instant::now();
    let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    println!(
        "probe-start shards={} interval_ms={} seconds={} unix_ms={unix_ms}",
        open.len(),
        args.interval_ms,
        args.duration_secs
    );
    let until = started + Duration::from_secs(args.duration_secs);
    let tasks: Vec<_> = open
        .iter()
        .cloned()
        .map(|(shard, hash_key)| {
            let (endpoint, stream) = (endpoint.clone(), args.stream.clone());
            let (interval, slow) = (Duration::from_millis(args.interval_ms), Duration::from_millis(args.slow_ms));
            tokio::spawn(async move {
                let mut outages = Outages::default();
                let mut conn = None;
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < until {
                    tick.tick().await;
                    let sent = started.elapsed();
                    let result = put_one(&mut conn, &endpoint, timeout, &stream, &hash_key).await;
                    outages.attempt(sent, started.elapsed(), result, slow);
                }
                outages.finish(started.elapsed());
                (shard, outages)
            })
        })
        .collect();

    let (mut puts, mut failures, mut lengths) = (0, 0, Vec::new());
    for task in tasks {
        let (shard, outages) = task.await.map_err(|e| format!("probe task: {e}"))?;
        puts += outages.puts;
        failures += outages.failures;
        for w in &outages.closed {
            println!(
                "window shard={shard} start_s={:.3} ms={:.1} failures={} last_error={:?}",
                w.start.as_secs_f64(),
                w.length.as_secs_f64() * 1000.0,
                w.failures,
                w.last_error
            );
            lengths.push(w.length.as_micros().min(u32::MAX as u128) as u32);
        }
    }
    lengths.sort_unstable();
    let ms = |q: f64| nearest_rank(&lengths, q).map_or("n/a".into(), |us| format!("{:.1}", f64::from(us) / 1000.0));
    println!(
        "probe shards={} puts={puts} failures={failures} windows={} p50_ms={} p99_ms={} max_ms={}",
        open.len(),
        lengths.len(),
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
    Ok(())
}

/// One PutRecord to the shard holding `hash_key`, on a connection kept across calls.
async fn put_one(
    conn: &mut Option<Connection>,
    endpoint: &Endpoint,
    timeout: Duration,
    stream: &str,
    hash_key: &str,
) -> Result<(), String> {
    if conn.is_none() {
        *conn = Some(Connection::open(endpoint, timeout).await.map_err(|e| e.to_string())?);
    }
    let input = PutRecordInput {
        stream_name: Some(stream.to_string()),
        data: Some(Blob(Bytes::from_static(b"probe"))),
        partition_key: Some("probe".into()),
        explicit_hash_key: Some(hash_key.to_string()),
        ..Default::default()
    };
    let answer = conn.as_mut().expect("opened").call::<_, PutRecordOutput>(Operation::PutRecord, &input).await;
    answer.map(|_| ()).map_err(|e| {
        let text = e.to_string();
        text.chars().take(120).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn failures_until_a_success_make_one_window_from_the_first_failed_send() {
        let mut o = Outages::default();
        o.attempt(ms(0), ms(2), Ok(()), SLOW);
        o.attempt(ms(10), ms(12), Err("busy".into()), SLOW);
        o.attempt(ms(20), ms(25), Err("moved".into()), SLOW);
        o.attempt(ms(30), ms(33), Ok(()), SLOW);
        o.attempt(ms(40), ms(42), Ok(()), SLOW);
        assert_eq!(o.closed, vec![Window { start: ms(10), length: ms(23), failures: 2, last_error: "moved".into() }]);
        assert_eq!((o.puts, o.failures), (5, 2));
    }

    #[test]
    fn a_slow_success_is_a_window_and_an_unended_outage_is_reported() {
        let mut o = Outages::default();
        o.attempt(ms(0), ms(250), Ok(()), SLOW);
        o.attempt(ms(300), ms(301), Err("down".into()), SLOW);
        o.finish(ms(900));
        assert_eq!(o.closed.len(), 2);
        assert_eq!((o.closed[0].start, o.closed[0].length, o.closed[0].failures), (ms(0), ms(250), 0));
        assert_eq!((o.closed[1].start, o.closed[1].length), (ms(300), ms(600)));
        assert!(o.closed[1].last_error.starts_with("unended"));
    }
}
