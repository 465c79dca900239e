//! The pull API, for applications that prefer to poll rather than take POSTs:
//!
//! - `GET /v1/next?max=N&waitMs=W` answers up to N records (default 100) not yet handed
//!   out, from the shards' current batches (waiting up to W ms, default 1,000, when there
//!   are none): `{"records": [{"shardId", "sequenceNumber", "subSequenceNumber",
//!   "partitionKey", "approximateArrivalTimestamp", "data"}]}`;
//! - `POST /v1/checkpoint` with `{"shardId", "sequenceNumber", "subSequenceNumber"}` marks
//!   that record and every earlier one of its shard processed. Once a shard's batch is
//!   processed to its end, the reader checkpoints it at the brokers and reads on.
//!
//! Records handed out and not checkpointed within the visibility timeout are handed out
//! again (the application may have died between the two calls).

use super::delivery::UserRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// A handed-out record not checkpointed for this long is handed out again.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

/// One shard's batch waiting for the application.
struct Offered {
    records: Vec<UserRecord>,
    /// When each record was last handed out.
    handed: Vec<Option<Instant>>,
    /// Records processed, from the first.
    processed: usize,
    done: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
pub struct PullQueue {
    batches: Mutex<BTreeMap<String, Offered>>,
    offered: Notify,
}

/// A record as `GET /v1/next` answers it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pulled {
    shard_id: String,
    #[serde(flatten)]
    record: UserRecord,
}

impl PullQueue {
    /// Offer a shard's batch; resolves once the application processed all of it.
    pub fn offer(&self, shard: &str, records: Vec<UserRecord>) -> oneshot::Receiver<()> {
        let (done, processed) = oneshot::channel();
        let handed = vec![None; records.len()];
        let batch = Offered { records, handed, processed: 0, done: Some(done) };
        self.batches.lock().unwrap().insert(shard.to_string(), batch);
        self.offered.notify_waiters();
        processed
    }

    /// The shard's reader stopped (its lease lost, the worker halting): its batch goes.
    pub fn withdraw(&self, shard: &str) {
        self.batches.lock().unwrap().remove(shard);
    }

    /// Up to `max` records not handed out (or handed out longer than the visibility timeout
    /// ago), waiting up to `wait` for some.
    pub async fn next(&self, max: usize, wait: Duration) -> Vec<Pulled> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.offered.notified();
            let got = self.take(max);
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    fn take(&self, max: usize) -> Vec<Pulled> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut batches = self.batches.lock().unwrap();
        for (shard, batch) in batches.iter_mut() {
            for i in batch.processed..batch.records.len() {
                if out.len() >= max {
                    return out;
                }
                if batch.handed[i].is_some_and(|at| now.duration_since(at) < VISIBILITY_TIMEOUT) {
                    continue;
                }
                batch.handed[i] = Some(now);
                out.push(Pulled { shard_id: shard.clone(), record: batch.records[i].clone() });
            }
        }
        out
    }

    /// The record at (`sequence`, `sub`) of `shard` and those before it are processed.
    pub fn checkpoint(&self, shard: &str, sequence: &str, sub: u64) -> Result<(), String> {
        let mut batches = self.batches.lock().unwrap();
        let Some(batch) = batches.get_mut(shard) else {
            return Err(format!("no batch of {shard} is waiting here (not leased by this worker, or checkpointed)"));
        };
        let Some(at) = batch.records.iter().position(|r| r.sequence_number == sequence && r.sub_sequence_number == sub)
        else {
            return Err(format!("record {sequence}/{sub} is not in the batch of {shard} being processed"));
        };
        if batch.handed[at].is_none() {
            return Err(format!("record {sequence}/{sub} of {shard} was not handed out yet"));
        }
        batch.processed = batch.processed.max(at + 1);
        if batch.processed == batch.records.len() {
            let batch = batches.remove(shard).expect("present");
            if let Some(done) = batch.done {
                let _ = done.send(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(seq: u64) -> UserRecord {
        UserRecord {
            sequence_number: seq.to_string(),
            sub_sequence_number: 0,
            partition_key: "k".into(),
            explicit_hash_key: None,
            arrival_ms: 0,
            data: Bytes::from_static(b"x"),
        }
    }

    #[tokio::test]
    async fn records_are_handed_out_once_and_a_batch_completes_at_its_last_checkpoint() {
        let q = PullQueue::default();
        let mut a = q.offer("shard-a", vec![rec(1), rec(2), rec(3)]);
        let _b = q.offer("shard-b", vec![rec(10)]);
        let first = q.next(2, Duration::ZERO).await;
        assert_eq!(
            first.iter().map(|p| (p.shard_id.as_str(), p.record.sequence_number.as_str())).collect::<Vec<_>>(),
            [("shard-a", "1"), ("shard-a", "2")]
        );
        let rest = q.next(10, Duration::ZERO).await;
        assert_eq!(rest.len(), 2, "what was handed out is not handed out again");
        assert!(q.next(10, Duration::from_millis(20)).await.is_empty());
        assert!(q.checkpoint("shard-a", "9", 0).is_err(), "an unknown record");
        q.checkpoint("shard-a", "2", 0).unwrap();
        assert!(a.try_recv().is_err(), "not processed to its end yet");
        q.checkpoint("shard-a", "3", 0).unwrap();
        assert!(a.try_recv().is_ok(), "processed: the reader reads on");
        assert!(q.checkpoint("shard-a", "3", 0).is_err(), "nothing waits for shard-a now");
    }

    #[tokio::test]
    async fn a_waiting_pull_gets_a_batch_offered_meanwhile() {
        let q = std::sync::Arc::new(PullQueue::default());
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.next(5, Duration::from_secs(5)).await.len() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _done = q.offer("s", vec![rec(1)]);
        assert_eq!(waiting.await.unwrap(), 1);
    }
}
