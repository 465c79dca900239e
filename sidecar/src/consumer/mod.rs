//! The consumer half, after the Kinesis Client Library: for one application, this worker
//! takes and renews leases through the brokers' lease operations (SyncLeases: the KCL's
//! rules, leases kept in the object store), reads each leased shard in order, splits KPL
//! aggregates, delivers batches to the application over HTTP and checkpoints after each 2xx
//! (`reader`). A closed shard is read to its end and checkpointed at SHARD_END, after which
//! the brokers hand out its children's leases. On shutdown every reader finishes the batch
//! it is delivering, checkpoints, and the leases are released for others to take at once.

mod delivery;
pub mod filter;
pub mod pull;
mod reader;
pub mod sampling;

use crate::broker::Brokers;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use streamfabric_api::leases::client::LeasesClient;
use streamfabric_api::leases::{LeaseOperation, SyncLeasesInput, SyncLeasesOutput};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The consumer application: workers of one application share its leases.
    pub application: String,
    pub stream: String,
    /// This worker's name in the leases (unique among the application's workers).
    pub worker_id: String,
    /// Where batches are POSTed (the application, on localhost); None: the application
    /// pulls them (`pull`).
    pub deliver_to: Option<String>,
    /// Where a shard without a checkpoint starts: `TRIM_HORIZON` or `LATEST`.
    pub initial_position: String,
    /// A lease not renewed for this long is taken by another worker (KCL: 10 s).
    pub failover_time: Duration,
    /// Records per GetRecords, so at most per batch before de-aggregation.
    pub max_records: usize,
    /// Wait before reading again a shard that had nothing new.
    pub idle_poll: Duration,
    /// Bound on one delivery to the application.
    pub delivery_timeout: Duration,
    /// Batches of one shard POSTed at once: its records split by partition key (order kept
    /// per key), as Lambda's ParallelizationFactor does; 1 (the KCL's way): one at a time.
    pub batches_in_flight: usize,
    /// Which records are delivered (all by default).
    pub sampling: sampling::Sampling,
}

impl ConsumerSettings {
    pub fn new(application: &str, stream: &str, worker_id: &str, deliver_to: Option<&str>) -> ConsumerSettings {
        ConsumerSettings {
            application: application.into(),
            stream: stream.into(),
            worker_id: worker_id.into(),
            deliver_to: deliver_to.map(String::from),
            initial_position: streamfabric_api::leases::TRIM_HORIZON.into(),
            failover_time: Duration::from_millis(streamfabric_api::leases::DEFAULT_FAILOVER_TIME_MILLIS),
            max_records: 1_000,
            idle_poll: Duration::from_millis(250),
            delivery_timeout: Duration::from_secs(30),
            batches_in_flight: 1,
            sampling: sampling::Sampling::default(),
        }
    }
}

/// State shared by the worker loop and its readers.
struct Shared {
    settings: ConsumerSettings,
    brokers: Brokers,
    leases: LeasesClient,
    http: delivery::Delivery,
    /// The counter of each held lease as last answered: changes are conditional on it.
    counters: Mutex<HashMap<String, u64>>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn counter(&self, shard: &str) -> Option<u64> {
        self.counters.lock().unwrap().get(shard).copied()
    }
    fn set_counter(&self, shard: &str, counter: u64) {
        self.counters.lock().unwrap().insert(shard.to_string(), counter);
    }
}

/// How the worker stops: `Stop` finishes batches, checkpoints and releases the leases;
/// `Kill` drops everything at once (as a crash would; for tests of failover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    Run,
    Stop,
    Kill,
}

pub struct Consumer {
    halt: watch::Sender<Halt>,
    worker: JoinHandle<()>,
    /// The pull API's queue, when the application pulls.
    pub pull: Option<Arc<pull::PullQueue>>,
}

impl Consumer {
    pub fn start(
        brokers: Brokers,
        broker_endpoint: &str,
        settings: ConsumerSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Consumer> {
        let leases = LeasesClient::new(broker_endpoint).map_err(|e| std::io::Error::other(e.to_string()))?;
        let shared = Arc::new(Shared {
            http: delivery::Delivery::new(settings.deliver_to.as_deref(), settings.delivery_timeout)?,
            settings,
            brokers,
            leases,
            counters: Mutex::new(HashMap::new()),
            metrics,
        });
        let pull = match &shared.http {
            delivery::Delivery::Pull(queue) => Some(queue.clone()),
            delivery::Delivery::Push(_) => None,
        };
        let (halt, halted) = watch::channel(Halt::Run);
        let worker = tokio::spawn(work(shared, halted));
        Ok(Consumer { halt, worker, pull })
    }

    /// Stop: readers finish the batch under way and checkpoint, leases are released.
    /// False if that did not end within `grace`.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.halt.send(Halt::Stop);
        tokio::time::timeout(grace, self.worker).await.is_ok()
    }

    /// Stop at once without checkpointing or releasing (a crash, for failover tests).
    pub async fn kill(self) {
        let _ = self.halt.send(Halt::Kill);
        let _ = self.worker.await;
    }
}

/// The worker loop: every third of the failover time, run the lease rules and start or stop
/// readers to match the leases held.
async fn work(shared: Arc<Shared>, mut halt: watch::Receiver<Halt>) {
    let s = &shared.settings;
    let mut readers: HashMap<String, JoinHandle<()>> = HashMap::new();
    let every = s.failover_time / 3;
    loop {
        readers.retain(|_, reader| !reader.is_finished());
        match sync(&shared).await {
            Ok(out) => {
                for lease in &out.leases {
                    shared.set_counter(&lease.lease_key, lease.lease_counter);
                }
                // A renewal can lose to this worker's own checkpoint; only a lease another
                // worker owns (or one finished) is given up.
                let held: Vec<&str> = out.leases.iter().map(|l| l.lease_key.as_str()).collect();
                if readers.keys().any(|k| !held.contains(&k.as_str())) {
                    stop_readers_of_leases_lost(&shared, &mut readers).await;
                }
                for lease in out.leases {
                    if !readers.contains_key(&lease.lease_key) && !lease.is_finished() {
                        tracing::info!(worker = %s.worker_id, shard = %lease.lease_key, checkpoint = ?lease.checkpoint, "reading the shard");
                        let key = lease.lease_key.clone();
                        readers.insert(key, tokio::spawn(reader::read(shared.clone(), lease, halt.clone())));
                    }
                }
            }
            Err(e) => tracing::warn!(worker = %s.worker_id, "syncing leases failed (retried): {e}"),
        }
        shared.metrics.leases_held.set(readers.len() as i64);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = halt.wait_for(|h| *h != Halt::Run) => break,
        }
    }
    let kill = *halt.borrow() == Halt::Kill;
    for (_, reader) in readers.drain() {
        if kill {
            reader.abort();
        }
        let _ = reader.await;
    }
    shared.metrics.leases_held.set(0);
    if kill {
        return;
    }
    let held: Vec<(String, u64)> = shared.counters.lock().unwrap().drain().collect();
    for (shard, counter) in held {
        match shared.leases.release_lease(&s.application, &s.stream, &shard, &s.worker_id, counter).await {
            Ok(_) => tracing::info!(worker = %s.worker_id, %shard, "lease released"),
            Err(e) => {
                tracing::info!(worker = %s.worker_id, %shard, "lease not released (another worker may hold it): {e}")
            }
        }
    }
}

async fn sync(shared: &Shared) -> Result<SyncLeasesOutput, streamfabric_api::leases::client::ClientError> {
    let s = &shared.settings;
    let input = SyncLeasesInput {
        application_name: Some(s.application.clone()),
        stream_name: Some(s.stream.clone()),
        worker_id: Some(s.worker_id.clone()),
        failover_time_millis: Some(s.failover_time.as_millis() as i64),
        initial_position: Some(s.initial_position.clone()),
    };
    shared.leases.call(LeaseOperation::SyncLeases, &input).await
}

/// Stop the readers of leases now owned by another worker (or gone); keep the others'
/// counters current.
async fn stop_readers_of_leases_lost(shared: &Shared, readers: &mut HashMap<String, JoinHandle<()>>) {
    let s = &shared.settings;
    let Ok(all) = shared.leases.list_leases(&s.application, &s.stream).await else { return };
    readers.retain(|shard, reader| {
        let lease = all.iter().find(|l| &l.lease_key == shard);
        let mine = lease.is_some_and(|l| l.lease_owner.as_deref() == Some(s.worker_id.as_str()));
        match lease {
            Some(l) if mine => {
                shared.set_counter(shard, l.lease_counter);
                true
            }
            _ => {
                tracing::info!(worker = %s.worker_id, %shard, "lease taken by another worker: reading stops");
                reader.abort();
                shared.counters.lock().unwrap().remove(shard);
                false
            }
        }
    });
}
