//! Batches to the application: pulled by it (`pull`), or `POST`ed as one JSON document per
//! batch to the configured URL,
//!
//! ```json
//! {"application": "billing", "stream": "orders", "shardId": "shardId-000000000001",
//!  "millisBehindLatest": 0,
//!  "records": [{"sequenceNumber": "4959...", "subSequenceNumber": 0, "partitionKey": "k1",
//!               "approximateArrivalTimestamp": 1796400000123, "data": "<base64>"}]}
//! ```
//!
//! (`explicitHashKey` too for sub-records of an aggregate that carry one). A 2xx answer
//! means the batch is processed and is checkpointed; anything else, or no answer within the
//! delivery timeout, is retried with backoff for as long as the lease is held. With several
//! batches in flight per shard, each page read is split by partition key into that many
//! batches POSTed at once (each key's records in one, in order), and checkpointed once all
//! were taken.

use super::pull::PullQueue;
use super::{Halt, Shared};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One user record as the application gets it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub sequence_number: String,
    pub sub_sequence_number: u64,
    pub partition_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explicit_hash_key: Option<String>,
    #[serde(rename = "approximateArrivalTimestamp")]
    pub arrival_ms: i64,
    #[serde(serialize_with = "base64_data")]
    pub data: Bytes,
}

fn base64_data<S: serde::Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Batch<'a> {
    application: &'a str,
    stream: &'a str,
    shard_id: &'a str,
    millis_behind_latest: i64,
    records: &'a [UserRecord],
}

/// How batches reach the application.
pub enum Delivery {
    /// POSTed to its URL.
    Push(Box<Push>),
    /// Waiting for it to pull them (`pull`).
    Pull(Arc<PullQueue>),
}

pub struct Push {
    url: http::Uri,
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Delivery {
    /// POSTs to `url`, or the pull API when None.
    pub fn new(url: Option<&str>, timeout: Duration) -> std::io::Result<Delivery> {
        let Some(url) = url else { return Ok(Delivery::Pull(Arc::default())) };
        let url: http::Uri = url.parse().map_err(|e| std::io::Error::other(format!("--deliver-to {url:?}: {e}")))?;
        if url.scheme_str() != Some("http") {
            return Err(std::io::Error::other(format!("--deliver-to {url}: must be an http:// URL")));
        }
        Ok(Delivery::Push(Box::new(Push { url, http: Client::builder(TokioExecutor::new()).build_http(), timeout })))
    }

    /// Deliver one batch until the application processed it: true then; false if the
    /// worker was told to halt meanwhile (the batch is not checkpointed and will be read
    /// again).
    pub async fn deliver(
        &self,
        shared: &Shared,
        shard: &str,
        millis_behind_latest: i64,
        records: &[UserRecord],
        halt: &watch::Receiver<Halt>,
    ) -> bool {
        let mut batches = 1;
        let delivered = match self {
            Delivery::Push(push) if shared.settings.batches_in_flight > 1 => {
                let lanes = by_key(records, shared.settings.batches_in_flight);
                batches = lanes.len() as u64;
                let sent = lanes.iter().map(|lane| push.deliver(shared, shard, millis_behind_latest, lane, halt));
                // All or nothing for the checkpoint: a lane cut short by a halt is read again,
                // with the others (at least once).
                futures::future::join_all(sent).await.into_iter().all(|delivered| delivered)
            }
            Delivery::Push(push) => push.deliver(shared, shard, millis_behind_latest, records, halt).await,
            Delivery::Pull(queue) => {
                // Withdrawn however this ends: a halt, or the reader aborted (lease lost).
                struct Withdraw<'a>(&'a PullQueue, &'a str);
                impl Drop for Withdraw<'_> {
                    fn drop(&mut self) {
                        self.0.withdraw(self.1);
                    }
                }
                let processed = queue.offer(shard, records.to_vec());
                let _withdraw = Withdraw(queue, shard);
                let mut halt = halt.clone();
                tokio::select! {
                    done = processed => done.is_ok(),
                    _ = halt.wait_for(|h| *h != Halt::Run) => false,
                }
            }
        };
        if delivered {
            let m = &shared.metrics;
            m.delivered_records.inc_by(records.len() as u64);
            m.delivery_batches.inc_by(batches);
            let now = streamfabric_api::types::Timestamp::now().millis();
            for r in records {
                m.delivery_latency_seconds.observe((now - r.arrival_ms).max(0) as f64 / 1000.0);
            }
        }
        delivered
    }
}

/// A page's records in up to `lanes` batches, each key's records in one of them, in order.
fn by_key(records: &[UserRecord], lanes: usize) -> Vec<Vec<UserRecord>> {
    let mut out = vec![Vec::new(); lanes];
    for r in records {
        out[(super::sampling::key_hash(&r.partition_key) % lanes as u64) as usize].push(r.clone());
    }
    out.retain(|lane| !lane.is_empty());
    out
}

impl Push {
    async fn deliver(
        &self,
        shared: &Shared,
        shard: &str,
        millis_behind_latest: i64,
        records: &[UserRecord],
        halt: &watch::Receiver<Halt>,
    ) -> bool {
        let s = &shared.settings;
        let body = Bytes::from(
            serde_json::to_vec(&Batch {
                application: &s.application,
                stream: &s.stream,
                shard_id: shard,
                millis_behind_latest,
                records,
            })
            .expect("batches serialise"),
        );
        let mut failures = 0;
        loop {
            match self.post(body.clone()).await {
                Ok(()) => return true,
                Err(why) => {
                    failures += 1;
                    shared.metrics.delivery_retries.inc();
                    if failures == 1 || failures % 20 == 0 {
                        tracing::warn!(%shard, failures, "the application did not take a batch (retried): {why}");
                    }
                }
            }
            let mut halt = halt.clone();
            let wait = super::reader::backoff(failures);
            if tokio::time::timeout(wait, halt.wait_for(|h| *h != Halt::Run)).await.is_ok() {
                return false;
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), String> {
        let request = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            // Read the answer whole so the connection is reused.
            let _ = response.into_body().collect().await;
            if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }
}
