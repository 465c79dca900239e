//! The fabric: the brokers of one object-store prefix serve its streams together.
//!
//! * The coordinator (`cluster`) is the one writer of stream descriptions: control
//!   operations received elsewhere are forwarded to it, and the other brokers adopt what it
//!   mirrored to the bucket (`sync`).
//! * Each shard is served by the broker the assignment names; a shard moves by a
//!   cooperative handoff (seal, upload, release in the manifest, next epoch), or is taken
//!   from a broker dead for `--member-timeout` (`handoff`).
//! * Any broker answers any request: data operations for a shard it does not serve go to
//!   the owner in one hop (`routes`, `peers`).
//! * A broker acknowledges a write only while its membership lease holds and it has seen
//!   no lapse it has not yet recovered from: peers take a broker's shards only after its
//!   lease has run out, so an acknowledged write is never one the next owner lacks.

mod handoff;
mod load;
pub mod peers;
pub mod routes;
pub(crate) mod sync;

use crate::broker::Broker;
use crate::catalog::Catalog;
use crate::cluster::{Cluster, ClusterSettings, ShardKey, ShardSource, ShardWeights};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use streamfabric_api::{ApiError, ErrorCode};

pub use peers::FORWARDED_HEADER;

pub struct Fabric {
    pub cluster: Cluster,
    pub peers: peers::Peers,
    /// Parents of reshards this broker (as coordinator) is applying.
    pub pins: Pins,
    /// Lease lapses already recovered from: every shard served before a lapse is taken
    /// again through its manifest (another broker may own it now).
    recovered_lapses: AtomicU64,
    /// Shutting down: shards are handed on, none taken.
    leaving: AtomicBool,
}

/// Shards the coordinator keeps for itself while it applies a reshard of them.
pub type Pins = Arc<Mutex<BTreeSet<ShardKey>>>;

/// Every shard of every stream, closed ones too (their owner keeps serving their reads).
struct CatalogShards {
    catalog: Weak<Catalog>,
    pins: Pins,
    load: load::LoadMeter,
}

impl ShardSource for CatalogShards {
    fn pinned_to_coordinator(&self) -> Vec<ShardKey> {
        self.pins.lock().unwrap().iter().cloned().collect()
    }

    fn served_load(&self) -> ShardWeights {
        let Some(catalog) = self.catalog.upgrade() else { return ShardWeights::new() };
        let counters = catalog.all().into_iter().flat_map(|stream| {
            let served = stream.shards().into_iter().filter(|s| s.is_serving());
            served
                .map(|s| (ShardKey::new(stream.name.clone(), s.id.clone()), s.metrics.incoming_bytes.get()))
                .collect::<Vec<_>>()
        });
        self.load.weights(counters, std::time::Instant::now())
    }

    fn shards(&self) -> Vec<ShardKey> {
        let Some(catalog) = self.catalog.upgrade() else { return Vec::new() };
        catalog
            .all()
            .into_iter()
            .flat_map(|stream| {
                stream.shards().into_iter().map(move |shard| ShardKey::new(stream.name.clone(), shard.id.clone()))
            })
            .collect()
    }

    fn closed_shards(&self) -> BTreeSet<ShardKey> {
        let Some(catalog) = self.catalog.upgrade() else { return BTreeSet::new() };
        catalog
            .all()
            .into_iter()
            .flat_map(|stream| {
                let meta = stream.meta();
                meta.shards
                    .iter()
                    .filter(|m| m.closed.is_some())
                    .filter_map(|m| stream.shard(m.index))
                    .map(|shard| ShardKey::new(stream.name.clone(), shard.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Fabric {
    /// Join the cluster of the broker's object store as `id`, reachable at `advertise`.
    pub async fn join(
        tier: &crate::tier::TierStore,
        id: &str,
        advertise: &str,
        settings: ClusterSettings,
        catalog: &Arc<Catalog>,
        proof: Option<crate::auth::PeerProof>,
    ) -> std::io::Result<Fabric> {
        let pins = Pins::default();
        let shards = Arc::new(CatalogShards {
            catalog: Arc::downgrade(catalog),
            pins: pins.clone(),
            load: load::LoadMeter::new(),
        });
        let cluster = Cluster::start(tier.clone(), id, advertise, settings, shards)
            .await
            .map_err(|e| std::io::Error::other(format!("joining the cluster: {e}")))?;
        Ok(Fabric {
            pins,
            peers: peers::Peers::new(id, proof),
            recovered_lapses: AtomicU64::new(cluster.lease_lapses()),
            leaving: AtomicBool::new(false),
            cluster,
        })
    }

    /// A write begins: refused while the lease does not hold or a lapse is not yet
    /// recovered from (shards served before it are being checked); else the mark that
    /// `check_may_acknowledge` compares with.
    pub fn begin_write(&self) -> Result<u64, ApiError> {
        // Recovery un-serves every shard before it counts the lapse as recovered: a write
        // that reads the new count finds those shards not served.
        let recovered = self.recovered_lapses.load(Ordering::Acquire);
        if self.cluster.lease_valid() && self.cluster.lease_lapses() == recovered {
            return Ok(recovered);
        }
        Err(self.lease_lapsed())
    }

    /// Refuse to acknowledge a write when the lease does not hold, or lapsed since the
    /// write began (`mark`): a paused broker's shards may have been taken meanwhile, and
    /// the new owner may lack this write. The records stay in the log unacknowledged, as
    /// after a failed write; a client retry may store them twice, as with Kinesis.
    pub fn check_may_acknowledge(&self, mark: u64) -> Result<(), ApiError> {
        if self.cluster.lease_valid() && self.cluster.lease_lapses() == mark {
            return Ok(());
        }
        Err(self.lease_lapsed())
    }

    fn lease_lapsed(&self) -> ApiError {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!(
                "Broker {} could not renew its cluster membership in the object store in time, so it acknowledges no writes now. Retry later.",
                self.cluster.broker_id()
            ),
        )
    }

    /// Ready: every shard the assignment gives this broker is served here (a broker taking
    /// shards, or handing them on at shutdown, is not). Else what is missing.
    pub fn readiness(&self, broker: &Broker) -> Result<(), String> {
        if self.leaving.load(Ordering::Acquire) {
            return Err("leaving the cluster".into());
        }
        let waiting: Vec<String> = self.taking(broker).iter().map(ShardKey::to_string).collect();
        if waiting.is_empty() { Ok(()) } else { Err(format!("taking shards: {}", waiting.join(", "))) }
    }

    /// Shards the assignment gives this broker that it does not serve yet: handoffs (or
    /// takeovers) under way towards it.
    pub fn taking(&self, broker: &Broker) -> Vec<ShardKey> {
        let me = self.cluster.broker_id();
        let assignment = self.cluster.assignments().borrow().clone();
        broker
            .catalog
            .all()
            .iter()
            .flat_map(|stream| {
                let assignment = &assignment;
                stream.shards().into_iter().filter_map(move |shard| {
                    let key = ShardKey::new(stream.name.clone(), shard.id.clone());
                    let mine = assignment.owner(&key).is_some_and(|owner| owner == me);
                    (mine && !shard.is_serving()).then_some(key)
                })
            })
            .collect()
    }

    /// The `/cluster` admin view: the control plane's, and the shards this broker serves.
    pub fn admin_view(&self, broker: &Broker) -> serde_json::Value {
        let mut view = self.cluster.admin_view();
        let serving: Vec<String> = broker
            .catalog
            .all()
            .iter()
            .flat_map(|s| s.shards().into_iter().filter(|sh| sh.is_serving()).map(|sh| format!("{}/{}", s.name, sh.id)))
            .collect();
        view["serving"] = serde_json::json!(serving);
        view
    }
}

/// Wait (up to `limit`) until every one of `shards` of `stream` has an owner in its
/// manifest: a new stream turns ACTIVE once its shards can be written.
pub async fn wait_until_owned(
    tier: &crate::tier::TierStore,
    stream: &str,
    shards: &[String],
    limit: std::time::Duration,
) {
    let started = tokio::time::Instant::now();
    for shard in shards {
        loop {
            let owned = match tier.manifest(stream, shard) {
                Ok(manifest) => manifest.load().await.ok().flatten().is_some_and(|(m, _)| m.owner.is_some()),
                Err(_) => true,
            };
            if owned || started.elapsed() > limit {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Keep the catalog and the shards this broker serves in step with the cluster: at every
/// heartbeat and at every new assignment, while the broker lives.
pub fn spawn(broker: &Arc<Broker>) {
    let Some(fabric) = &broker.fabric else { return };
    let period = fabric.cluster.settings().heartbeat_interval;
    let mut assignments = fabric.cluster.assignments();
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                changed = assignments.changed() => if changed.is_err() { return },
            }
            let Some(broker) = weak.upgrade() else { return };
            if let Err(e) = sync::sync_catalog(&broker).await {
                tracing::warn!("reading the cluster's stream descriptions: {e}");
            }
            handoff::reconcile(&broker).await;
        }
    });
}

/// Hand on every shard this broker serves (a clean shutdown), then leave the cluster.
pub async fn leave(broker: &Broker) {
    let Some(fabric) = &broker.fabric else { return };
    fabric.leaving.store(true, Ordering::Release);
    handoff::hand_on_all(broker).await;
    if let Err(e) = fabric.cluster.leave().await {
        tracing::warn!("leaving the cluster: {e}");
    }
}
