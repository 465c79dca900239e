//! Stream lifecycle around a run: create if absent and wait ACTIVE, list shards, delete.

use crate::answers::SummaryAnswer;
use crate::client::{CallError, Connection};
use crate::workload::backoff;
use std::time::{Duration, Instant};
use streamfabric_api::model::{
    CreateStreamInput, DeleteStreamInput, Empty, ListShardsInput, ListShardsOutput, Operation, StreamRef,
};

const POLL: Duration = Duration::from_millis(100);
/// ListShards pages followed at most (10,000 shards at the default page size of 1,000).
const MAX_SHARD_PAGES: usize = 10;
/// Attempts of a control-plane call answered with a 5xx or a throttle.
const MAX_ATTEMPTS: u32 = 10;

pub struct StreamState {
    pub created: bool,
    pub open_shards: Option<i64>,
}

/// Make sure `name` exists and is ACTIVE, creating it with `shards` shards if absent.
pub async fn ensure_active(
    conn: &mut Connection,
    name: &str,
    shards: u32,
    wait: Duration,
) -> Result<StreamState, String> {
    let deadline = Instant::now() + wait;
    let mut created = false;
    loop {
        match describe(conn, name).await {
            Ok(summary) if summary.stream_status == "ACTIVE" => {
                return Ok(StreamState { created, open_shards: summary.open_shard_count });
            }
            // CREATING, UPDATING, or DELETING (then it will vanish and be recreated).
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                let input = CreateStreamInput {
                    stream_name: Some(name.to_string()),
                    shard_count: Some(i64::from(shards)),
                    ..Default::default()
                };
                match call::<_, Empty>(conn, Operation::CreateStream, &input).await {
                    Ok(_) => created = true,
                    // Someone else created it meanwhile, or the old one is still deleting.
                    Err(e) if e.code() == Some("ResourceInUseException") => {}
                    Err(e) => return Err(format!("CreateStream {name}: {e}")),
                }
            }
            Err(e) => return Err(format!("DescribeStreamSummary {name}: {e}")),
        }
        if Instant::now() >= deadline {
            return Err(format!("stream {name} not ACTIVE within {wait:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn describe(conn: &mut Connection, name: &str) -> Result<crate::answers::StreamSummaryView, CallError> {
    let input = StreamRef { stream_name: Some(name.to_string()), stream_arn: None };
    let answer: SummaryAnswer = call(conn, Operation::DescribeStreamSummary, &input).await?;
    Ok(answer.stream_description_summary)
}

/// Every shard id of the stream, following NextToken (bounded).
pub async fn list_shards(conn: &mut Connection, name: &str) -> Result<Vec<String>, String> {
    let mut shards = Vec::new();
    let mut input = ListShardsInput { stream_name: Some(name.to_string()), ..Default::default() };
    for _ in 0..MAX_SHARD_PAGES {
        let page: ListShardsOutput =
            call(conn, Operation::ListShards, &input).await.map_err(|e| format!("ListShards {name}: {e}"))?;
        shards.extend(page.shards.into_iter().map(|s| s.shard_id));
        match page.next_token {
            // A NextToken replaces the stream name in the follow-up request.
            Some(token) => input = ListShardsInput { next_token: Some(token), ..Default::default() },
            None => return Ok(shards),
        }
    }
    Err(format!("ListShards {name}: more than {MAX_SHARD_PAGES} pages"))
}

pub async fn delete(conn: &mut Connection, name: &str) -> Result<(), String> {
    let input = DeleteStreamInput { stream_name: Some(name.to_string()), ..Default::default() };
    call::<_, Empty>(conn, Operation::DeleteStream, &input)
        .await
        .map(|_| ())
        .map_err(|e| format!("DeleteStream {name}: {e}"))
}

/// A control-plane call, retried (bounded) on 5xx and throttles.
async fn call<I: serde::Serialize, O: serde::de::DeserializeOwned>(
    conn: &mut Connection,
    op: Operation,
    input: &I,
) -> Result<O, CallError> {
    let mut attempt = 0;
    loop {
        match conn.call(op, input).await {
            Err(e) if e.is_retriable() && attempt + 1 < MAX_ATTEMPTS => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
