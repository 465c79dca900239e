//! Durability `object`: the records of each acknowledged PutRecord(s) are in the object
//! store before the answer. One batcher per broker gathers the freshly appended records
//! of every shard for up to the linger time (or the byte limit) and writes them as one
//! immutable write-ahead object, so that many writers share one PUT; their waiters are
//! released when that PUT succeeds and refused (retryably) when it fails.
//!
//! Write-ahead objects are deleted once the sealed segments in the manifests reach past
//! all of their records (`Broker::clean_write_ahead`); until then, a broker that lost its
//! disk replays them on top of the restored segments (`Archive::restore_missing`).

use crate::metrics::Metrics;
use crate::tier::{TierStore, WalChunk, WalReach, wal};
use object_store::path::Path;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// How batches are formed and how long a write may wait for its PUT.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// The first write of a batch waits this long for others to join it.
    pub linger: Duration,
    /// A batch is written as soon as it holds this many bytes.
    pub max_bytes: usize,
    /// Batch PUTs in flight at once; writes arriving meanwhile join the next batch.
    pub inflight: usize,
    /// A PUT without an answer after this long fails its batch.
    pub put_timeout: Duration,
}

struct Submission {
    chunks: Vec<WalChunk>,
    bytes: usize,
    done: oneshot::Sender<Result<(), String>>,
}

/// Hands appended records to the batch task and waits for their object.
pub struct WalBatcher {
    submissions: mpsc::UnboundedSender<Submission>,
    /// How far each write-ahead object reaches, by path: learnt when it is written (or
    /// first read by the cleaner), so that cleaning does not download what we wrote.
    reach: Arc<Mutex<HashMap<Path, Vec<WalReach>>>>,
    settings: BatchSettings,
}

impl WalBatcher {
    /// Start the batch task on the current runtime.
    pub fn start(tier: TierStore, settings: BatchSettings, metrics: Arc<Metrics>) -> WalBatcher {
        let (submissions, queue) = mpsc::unbounded_channel();
        let reach = Arc::new(Mutex::new(HashMap::new()));
        let writer = BatchWriter { tier, metrics, reach: reach.clone(), put_timeout: settings.put_timeout };
        tokio::spawn(batch_loop(Arc::new(writer), queue, settings));
        WalBatcher { submissions, reach, settings }
    }

    /// Resolves once one write-ahead object holding all of `chunks` is in the store; an
    /// error (the store failed, or did not answer in time) means they are not acknowledged.
    pub async fn write(&self, chunks: Vec<WalChunk>) -> Result<(), String> {
        let bytes = chunks.iter().map(WalChunk::encoded_len).sum();
        let (done, answer) = oneshot::channel();
        self.submissions
            .send(Submission { chunks, bytes, done })
            .map_err(|_| "the write-ahead batcher has stopped".to_string())?;
        // The PUT has its own timeout; this also bounds the wait for a free PUT slot.
        let bound = self.settings.linger + self.settings.put_timeout * 2;
        match tokio::time::timeout(bound, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("the write-ahead batcher dropped the write".into()),
            Err(_) => Err(format!("no write-ahead object written within {bound:?}")),
        }
    }

    /// What `path` reaches, if known.
    pub fn known_reach(&self, path: &Path) -> Option<Vec<WalReach>> {
        self.reach.lock().unwrap().get(path).cloned()
    }

    pub fn remember(&self, path: Path, reach: Vec<WalReach>) {
        self.reach.lock().unwrap().insert(path, reach);
    }

    pub fn forget(&self, path: &Path) {
        self.reach.lock().unwrap().remove(path);
    }
}

struct BatchWriter {
    tier: TierStore,
    metrics: Arc<Metrics>,
    reach: Arc<Mutex<HashMap<Path, Vec<WalReach>>>>,
    put_timeout: Duration,
}

/// Form batches: from the first waiting write, gather for the linger time or up to the
/// byte limit; then wait for a free PUT slot, taking whatever else queued meanwhile.
async fn batch_loop(writer: Arc<BatchWriter>, mut queue: mpsc::UnboundedReceiver<Submission>, s: BatchSettings) {
    let slots = Arc::new(Semaphore::new(s.inflight.max(1)));
    while let Some(first) = queue.recv().await {
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + s.linger;
        while bytes < s.max_bytes {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(next)) => {
                    bytes += next.bytes;
                    batch.push(next);
                }
                _ => break,
            }
        }
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        while bytes < s.max_bytes {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.bytes;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        tokio::spawn(writer.clone().write(batch, slot));
    }
}

impl BatchWriter {
    async fn write(self: Arc<Self>, batch: Vec<Submission>, _slot: OwnedSemaphorePermit) {
        let mut chunks = Vec::new();
        let mut waiters = Vec::with_capacity(batch.len());
        for s in batch {
            chunks.extend(s.chunks);
            waiters.push(s.done);
        }
        let records: usize = chunks.iter().map(|c| c.records.len()).sum();
        let body = wal::encode(&chunks);
        let reach = wal::reach_of(&chunks);
        drop(chunks);
        let size = body.len() as u64;
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.put_timeout, self.tier.put_wal(body)).await {
            Ok(Ok(path)) => Ok(path),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("the object store did not answer a write-ahead PUT within {:?}", self.put_timeout)),
        };
        match outcome {
            Ok(path) => {
                self.metrics.object_batch_puts.inc();
                self.metrics.object_batch_bytes.inc_by(size);
                self.metrics.object_batch_put_seconds.observe(started.elapsed().as_secs_f64());
                self.metrics.object_batch_records.observe(records as f64);
                self.reach.lock().unwrap().insert(path, reach);
                for done in waiters {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                self.metrics.object_batch_failures.inc();
                self.metrics.object_store_errors.inc();
                tracing::warn!(records, bytes = size, "write-ahead batch not written, its writes are refused: {e}");
                for done in waiters {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
