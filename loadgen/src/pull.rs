//! The `pull` subcommand: an application consuming through a streamfabric sidecar's pull
//! API. Each `GET /v1/next` hands out up to a thousand records; once they are counted, the
//! last record of each shard is checkpointed (`POST /v1/checkpoint`), which lets the sidecar
//! read on. Records are counted once by (shard, sequence number, sub-sequence number): a
//! record handed out again (after a lease moved, or a visibility timeout) is a duplicate.

use crate::cli::PullArgs;
use crate::client::{Connection, Endpoint};
use http::Method;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Next {
    records: Vec<Pulled>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pulled {
    shard_id: String,
    sequence_number: String,
    #[serde(default)]
    sub_sequence_number: u64,
}

pub async fn pull(args: PullArgs) -> Result<(), String> {
    let endpoint = Endpoint::parse(&args.endpoint)?;
    let mut conn = Connection::open(&endpoint, Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut seen: HashSet<(String, String, u64)> = HashSet::new();
    let mut pulled = 0u64;
    while (seen.len() as u64) < args.min_records && Instant::now() < deadline {
        let body = match conn.http(Method::GET, "/v1/next?max=1000&waitMs=1000", Vec::new()).await {
            Ok(body) => body,
            Err(e) => {
                // The sidecar restarting, or not ready yet: try again until the deadline.
                eprintln!("pull: GET /v1/next: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let next: Next = serde_json::from_slice(&body).map_err(|e| format!("GET /v1/next answered: {e}"))?;
        let mut last: BTreeMap<String, Pulled> = BTreeMap::new();
        for r in next.records {
            pulled += 1;
            seen.insert((r.shard_id.clone(), r.sequence_number.clone(), r.sub_sequence_number));
            last.insert(r.shard_id.clone(), r);
        }
        for (shard, r) in last {
            let checkpoint = serde_json::json!({
                "shardId": shard, "sequenceNumber": r.sequence_number, "subSequenceNumber": r.sub_sequence_number
            });
            if let Err(e) = conn.http(Method::POST, "/v1/checkpoint", checkpoint.to_string().into_bytes()).await {
                // A lease that moved meanwhile: its records come again elsewhere.
                eprintln!("pull: checkpoint of {shard}: {e}");
            }
        }
    }
    let shards: HashSet<&str> = seen.iter().map(|(s, _, _)| s.as_str()).collect();
    println!("pull records={pulled} distinct={} shards={}", seen.len(), shards.len());
    if (seen.len() as u64) < args.min_records {
        return Err(format!(
            "{} distinct records came within {} s, {} were wanted",
            seen.len(),
            args.timeout_secs,
            args.min_records
        ));
    }
    Ok(())
}
