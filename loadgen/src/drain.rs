//! The drain phase: read every shard from TRIM_HORIZON until caught up, shards in parallel
//! (at most `parallelism` at once, one connection each).

use crate::client::{Connection, Endpoint};
use crate::workload::{RecordId, backoff};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamfabric_api::limits::MAX_GET_RECORDS_LIMIT;
use streamfabric_api::model::{
    GetRecordsInput, GetRecordsOutput, GetShardIteratorInput, GetShardIteratorOutput, Operation,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Consecutive retriable failures (5xx, throttles, expired iterators) before a shard's
/// drain gives up.
const MAX_CONSECUTIVE_FAILURES: u32 = 20;

#[derive(Debug, Default)]
pub struct DrainStats {
    pub records: u64,
    pub bytes: u64,
    pub requests: u64,
    pub throttles: u64,
    /// Shards read up to their tip (MillisBehindLatest 0 with nothing left) or their end.
    pub caught_up_shards: usize,
    pub shards: usize,
    pub seconds: f64,
    /// With `collect_ids`: the id of every record read, in no particular order.
    pub ids: Vec<Option<RecordId>>,
}

pub async fn drain(
    endpoint: &Endpoint,
    stream: &str,
    shards: Vec<String>,
    parallelism: usize,
    collect_ids: bool,
    request_timeout: Duration,
    timeout: Duration,
) -> Result<DrainStats, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let permits = Arc::new(Semaphore::new(parallelism.max(1)));
    let mut tasks = JoinSet::new();
    let shard_count = shards.len();
    for shard in shards {
        let (endpoint, stream, permits) = (endpoint.clone(), stream.to_string(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut conn =
                Connection::open(&endpoint, request_timeout).await.map_err(|e| format!("opening connection: {e}"))?;
            drain_shard(&mut conn, &stream, &shard, collect_ids, deadline).await
        });
    }
    let mut total = DrainStats { shards: shard_count, ..Default::default() };
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| format!("drain task failed: {e}"))? {
            Ok(s) => {
                total.records += s.records;
                total.bytes += s.bytes;
                total.requests += s.requests;
                total.throttles += s.throttles;
                total.caught_up_shards += s.caught_up_shards;
                total.ids.extend(s.ids);
            }
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    total.seconds = start.elapsed().as_secs_f64();
    Ok(total)
}

async fn drain_shard(
    conn: &mut Connection,
    stream: &str,
    shard: &str,
    collect_ids: bool,
    deadline: Instant,
) -> Result<DrainStats, String> {
    let mut stats = DrainStats { shards: 1, ..Default::default() };
    let mut last_sequence: Option<String> = None;
    let mut iterator = shard_iterator(conn, stream, shard, None).await?;
    let mut failures = 0;
    while Instant::now() < deadline {
        let input = GetRecordsInput {
            shard_iterator: Some(iterator.clone()),
            limit: Some(MAX_GET_RECORDS_LIMIT),
            stream_arn: None,
        };
        stats.requests += 1;
        let out: GetRecordsOutput = match conn.call(Operation::GetRecords, &input).await {
            Ok(out) => out,
            Err(e) if failures < MAX_CONSECUTIVE_FAILURES && e.code() == Some("ExpiredIteratorException") => {
                failures += 1;
                iterator = shard_iterator(conn, stream, shard, last_sequence.as_deref()).await?;
                continue;
            }
            Err(e) if failures < MAX_CONSECUTIVE_FAILURES && e.is_retriable() => {
                failures += 1;
                stats.throttles += u64::from(e.is_throttle());
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
            Err(e) => return Err(format!("GetRecords {shard}: {e}")),
        };
        failures = 0;
        let empty = out.records.is_empty();
        for record in &out.records {
            // KPL aggregates (the sidecar's --aggregate) count as the user records in them.
            let user_records = match streamfabric_api::aggregation::deaggregate(&record.data.0) {
                Some(subs) => subs.into_iter().map(|s| s.data).collect(),
                None => vec![record.data.0.clone()],
            };
            for data in user_records {
                stats.records += 1;
                stats.bytes += data.len() as u64;
                if collect_ids {
                    stats.ids.push(RecordId::decode(&data));
                }
            }
        }
        if let Some(last) = out.records.last() {
            last_sequence = Some(last.sequence_number.clone());
        }
        match out.next_shard_iterator {
            // Real Kinesis may answer empty while still behind; only empty at the tip ends.
            Some(next) if !(empty && out.millis_behind_latest == 0) => iterator = next,
            // At the tip of an open shard, or past the end of a closed one.
            _ => {
                stats.caught_up_shards = 1;
                break;
            }
        }
    }
    Ok(stats)
}

async fn shard_iterator(
    conn: &mut Connection,
    stream: &str,
    shard: &str,
    after: Option<&str>,
) -> Result<String, String> {
    let input = GetShardIteratorInput {
        stream_name: Some(stream.to_string()),
        shard_id: Some(shard.to_string()),
        shard_iterator_type: Some(if after.is_some() { "AFTER_SEQUENCE_NUMBER" } else { "TRIM_HORIZON" }.to_string()),
        starting_sequence_number: after.map(str::to_string),
        ..Default::default()
    };
    let mut attempt = 0;
    loop {
        match conn.call::<_, GetShardIteratorOutput>(Operation::GetShardIterator, &input).await {
            Ok(out) => return Ok(out.shard_iterator),
            Err(e) if e.is_retriable() && attempt + 1 < MAX_CONSECUTIVE_FAILURES => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(format!("GetShardIterator {shard}: {e}")),
        }
    }
}
