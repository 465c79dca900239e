//! The DataStream controller: `reconcile` wraps the finalizer and dispatches Apply and
//! Cleanup; children are applied server-side with one field manager; every decision is an
//! Event and a metric.

use crate::autoscale::{self, Decision};
use crate::error::{Error, Result};
use crate::kinesis::{self, KinesisAdmin};
use crate::manifests::{self, Names};
use crate::metrics::Metrics;
use crate::status::{self, Observed};
use crate::throughput::{self, Sample};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use streamfabric_api::crd::StreamMode;
use streamfabric_api::crd::{DataStream, DeletionPolicy};
use streamfabric_api::stats::{BrokerStats, StreamStats};

pub const FIELD_MANAGER: &str = "streamfabric-operator";
pub const FINALIZER: &str = "streamfabric.io/cleanup";
/// Status and autoscaling are refreshed this often even without changes.
const RESYNC: Duration = Duration::from_secs(15);
/// Write rates are measured over at least this long: reconciles that follow each other
/// closely (our own status writes trigger one) reuse the last rate instead of a noisy one.
const MIN_SAMPLE_SECS: f64 = 10.0;

/// Where a DataStream's brokers answer, as templates over `{name}` and `{namespace}`.
#[derive(Debug, Clone)]
pub struct BrokerEndpoints {
    pub api: String,
    pub admin: String,
    /// One broker pod's admin port, over `{pod}`, `{headless}` and `{namespace}`: brokers of
    /// a cluster each report the shards they serve.
    pub pod_admin: String,
}

impl Default for BrokerEndpoints {
    fn default() -> Self {
        BrokerEndpoints {
            api: kinesis::DEFAULT_ENDPOINT_TEMPLATE.into(),
            admin: kinesis::DEFAULT_ADMIN_TEMPLATE.into(),
            pod_admin: kinesis::DEFAULT_POD_ADMIN_TEMPLATE.into(),
        }
    }
}

/// What the autoscaler remembers of a stream between reconciles.
#[derive(Debug, Clone)]
struct Remembered {
    sample: Sample,
    low_since: Option<i64>,
    rate: Option<(i64, i64)>,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub kinesis: KinesisAdmin,
    pub endpoints: BrokerEndpoints,
    /// Two stats samples closer than this give no rate (tests shorten it).
    pub min_sample_secs: f64,
    /// The operator's own key, from which its access key at each DataStream with
    /// authentication is derived (`brokers_client`); None: it could not be read.
    pub operator_key: Option<Vec<u8>>,
    remembered: Mutex<HashMap<String, Remembered>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, endpoints: BrokerEndpoints) -> Context {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            kinesis: KinesisAdmin::default(),
            endpoints,
            min_sample_secs: MIN_SAMPLE_SECS,
            operator_key: None,
            remembered: Mutex::default(),
        }
    }

    async fn decision(&self, ds: &DataStream, type_: EventType, reason: &str, note: String) {
        self.metrics.decisions.with_label_values(&[reason]).inc();
        match type_ {
            EventType::Normal => tracing::info!(datastream = %ds.name_any(), reason, "{note}"),
            EventType::Warning => tracing::warn!(datastream = %ds.name_any(), reason, "{note}"),
        }
        // The recorder folds events with the same type, reason and action into one series
        // that keeps its first note: the action names the decision itself, so that a
        // different decision is an Event of its own and only a repeated one is counted.
        let action = truncated(&note, MAX_EVENT_ACTION_BYTES).to_string();
        let event = Event { type_, reason: reason.into(), note: Some(note), action, secondary: None };
        if let Err(e) = self.recorder.publish(&event, &ds.object_ref(&())).await {
            tracing::warn!(datastream = %ds.name_any(), "publishing event {reason}: {e}");
        }
    }
}

/// In OnDemand mode `spec.shards` is only the starting count: a spec whose count differs
/// from the open shards is not resharded to it, and the user is told so.
fn on_demand_shards_note(ds: &DataStream, open: i32) -> Option<String> {
    let scaling = ds.spec.scaling.as_ref().filter(|_| ds.spec.mode == StreamMode::OnDemand)?;
    (open > 0 && open != ds.spec.shards).then(|| {
        format!(
            "spec.shards {} is only the starting count in mode OnDemand: the autoscaler keeps {open} open, within \
             scaling.minShards..maxShards ({}..{}); change those bounds, or use mode Provisioned, to set the count",
            ds.spec.shards, scaling.min_shards, scaling.max_shards
        )
    })
}

/// How often a stream being deleted is looked at until it is gone.
const STREAM_DELETION_POLL: Duration = Duration::from_secs(2);

/// The API server's limit on an Event's action.
const MAX_EVENT_ACTION_BYTES: usize = 128;

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub async fn reconcile(ds: Arc<DataStream>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciles.with_label_values(&["DataStream"]).inc();
    let ns = ds.namespace().ok_or_else(|| Error::NotNamespaced(ds.name_any()))?;
    let api: Api<DataStream> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, ds, |event| async {
        match event {
            Finalizer::Apply(ds) => apply(&ds, &ctx).await,
            Finalizer::Cleanup(ds) => cleanup(&ds, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconcile_seconds.with_label_values(&["DataStream"]).observe(started.elapsed().as_secs_f64());
    result
}

pub fn error_policy(ds: Arc<DataStream>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Some(retry) = error.deletion_pending() {
        tracing::info!(datastream = %ds.name_any(), "deletion waits: {error}");
        return Action::requeue(retry);
    }
    tracing::warn!(datastream = %ds.name_any(), "reconcile failed: {error}");
    ctx.metrics.failures.with_label_values(&["DataStream", error.metric_label()]).inc();
    Action::requeue(Duration::from_secs(15))
}

/// Server-side apply of one child with the operator's field manager.
async fn apply_child<K>(client: &Client, ns: &str, child: K) -> Result<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = child.meta().name.clone().expect("children are named");
    Ok(api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&child)).await?)
}

/// Create the cluster key Secret once (the brokers mount it); one that exists is kept as it is.
async fn ensure_cluster_key(client: &Client, ns: &str, ds: &DataStream) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.create(&PostParams::default(), &manifests::cluster_key_secret(ds, rand::random())).await {
        Ok(_) => {
            tracing::info!(datastream = %ds.name_any(), "created the cluster key Secret");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The client of a DataStream's Kinesis API. With `spec.authentication` its calls are signed
/// with the operator's access key at these brokers: derived from the operator's own key (the
/// same after every restart), in a Secret created here and mounted beside the user's keys.
async fn brokers_client(ds: &DataStream, ns: &str, ctx: &Context) -> Result<KinesisAdmin> {
    if ds.spec.authentication.is_none() {
        return Ok(ctx.kinesis.clone());
    }
    let master = ctx.operator_key.as_deref().ok_or_else(|| Error::NoOperatorKey(ds.name_any()))?;
    let secret = streamfabric_api::sigv4::derive_secret(master, &format!("{ns}/{}", ds.name_any()));
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &manifests::operator_key_secret(ds, &secret)).await {
        Ok(_) => tracing::info!(datastream = %ds.name_any(), "created the operator's access key Secret"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(ctx.kinesis.signed_by(streamfabric_api::sigv4::Signer {
        access_key_id: manifests::OPERATOR_ACCESS_KEY_ID.into(),
        secret_access_key: secret,
        region: streamfabric_api::names::DEFAULT_REGION.into(),
        service: "kinesis".into(),
    }))
}

async fn apply(ds: &DataStream, ctx: &Context) -> Result<Action> {
    let ns = ds.namespace().ok_or_else(|| Error::NotNamespaced(ds.name_any()))?;
    let client = &ctx.client;
    ensure_cluster_key(client, &ns, ds).await?;
    let kinesis = brokers_client(ds, &ns, ctx).await?;
    apply_child(client, &ns, manifests::config_map(ds)).await?;
    if let Some(auth) = &ds.spec.authentication {
        apply_child(client, &ns, crate::access::policy_config_map(ds, auth)).await?;
    }
    apply_child(client, &ns, manifests::headless_service(ds)).await?;
    apply_child(client, &ns, manifests::client_service(ds)).await?;
    let sts = apply_child(client, &ns, manifests::statefulset(ds)).await?;
    apply_child(client, &ns, manifests::pod_disruption_budget(ds)).await?;

    // The stream itself, through its brokers' Kinesis API.
    let endpoint = kinesis::endpoint_for(&ctx.endpoints.api, &ds.name_any(), &ns);
    let stream = match kinesis.ensure_stream(&endpoint, &ds.name_any(), &kinesis::WantedStream::of(ds)).await {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::debug!(datastream = %ds.name_any(), "{e}");
            None
        }
    };
    if stream.is_some_and(|s| s.created) {
        ctx.decision(
            ds,
            EventType::Normal,
            "StreamCreated",
            format!("CreateStream with {} shards at {endpoint}", ds.spec.shards),
        )
        .await;
    }
    if stream.is_some_and(|s| s.active) {
        match kinesis.ensure_paused(&endpoint, &ds.name_any(), ds.spec.paused).await {
            Ok(true) => {
                let (reason, note) = if ds.spec.paused {
                    ("Paused", "spec.paused: the brokers refuse writes to the stream; reads go on")
                } else {
                    ("Resumed", "spec.paused cleared: the brokers take writes again")
                };
                ctx.decision(ds, EventType::Normal, reason, note.into()).await;
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(datastream = %ds.name_any(), "pausing: {e}"),
        }
    }
    let stats = broker_stats(ds, &ns, ctx).await;
    let (write_rate, resharding_to) = match stream {
        Some(state) if state.active && !stats.is_empty() => {
            let (rate, autoscale) = observe_writes(ds, &ns, state.open_shards, ctx, &merged(&stats)).await;
            (rate, reshard(ds, ctx, &kinesis, &endpoint, state.open_shards, autoscale).await)
        }
        _ => (None, None),
    };
    let desired_brokers = manifests::serving_brokers(ds);
    let ready_brokers = sts.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let pending_claims = if ready_brokers < desired_brokers { pending_claims(ds, &ns, ctx).await? } else { Vec::new() };
    let seen = Observed { desired_brokers, ready_brokers, stream, write_rate, resharding_to, pending_claims };
    let before = ds.status.clone().unwrap_or_default();
    let mut next = status::next(ds, seen.clone(), Time(k8s_openapi::jiff::Timestamp::now()));
    if !stats.is_empty() {
        next.members = stats.len() as i32;
        next.shards_per_broker = shards_per_broker(&stats, &ds.name_any());
        next.handoffs = handoffs(&stats, &ds.name_any());
    }
    if next != before {
        let api: Api<DataStream> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": "streamfabric.io/v1alpha1",
            "kind": "DataStream",
            "status": next,
        });
        api.patch_status(&ds.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    if before.observed_generation != ds.metadata.generation {
        ctx.decision(
            ds,
            EventType::Normal,
            "Applied",
            format!(
                "generation {}: {} shards, {} broker(s) in StatefulSet {}",
                ds.metadata.generation.unwrap_or(0),
                ds.spec.shards,
                seen.desired_brokers,
                Names::of(ds).brokers
            ),
        )
        .await;
        if let Some(note) = on_demand_shards_note(ds, next.open_shards) {
            ctx.decision(ds, EventType::Warning, "ShardsSetByAutoscaler", note).await;
        }
    }
    let was_ready = crate::conditions::is_true(&before.conditions, crate::conditions::READY);
    let is_ready = crate::conditions::is_true(&next.conditions, crate::conditions::READY);
    if was_ready != is_ready {
        let (type_, reason) = if is_ready { (EventType::Normal, "Ready") } else { (EventType::Warning, "NotReady") };
        ctx.decision(ds, type_, reason, format!("{}/{} brokers ready", seen.ready_brokers, seen.desired_brokers)).await;
    }
    let ready_reason = |s: &streamfabric_api::crd::DataStreamStatus| {
        s.conditions.iter().find(|c| c.type_ == crate::conditions::READY).map(|c| c.reason.clone())
    };
    if ready_reason(&next).as_deref() == Some(status::VOLUME_PENDING) && ready_reason(&before) != ready_reason(&next) {
        let note = format!(
            "broker volume claim {} Pending: the brokers cannot start until it is bound (kubectl describe pvc)",
            seen.pending_claims.join(", ")
        );
        ctx.decision(ds, EventType::Warning, status::VOLUME_PENDING, note).await;
    }
    // The stream turns ACTIVE, and a reshard ends, with no Kubernetes event to wake us: look
    // again soon rather than a resync later.
    let settled = is_ready && !crate::conditions::is_true(&next.conditions, crate::conditions::SCALING);
    Ok(Action::requeue(if settled || ds.spec.paused { RESYNC } else { UNSETTLED_RESYNC }))
}

/// How soon a DataStream not yet Ready, or scaling, is looked at again.
const UNSETTLED_RESYNC: Duration = Duration::from_secs(3);

/// A Pending claim younger than this is a volume being provisioned, not a problem.
const CLAIM_PENDING_FOR: Duration = Duration::from_secs(30);

/// The brokers' volume claims Pending for longer than `CLAIM_PENDING_FOR`, each with its
/// StorageClass (or the lack of one, which needs a default StorageClass in the cluster).
async fn pending_claims(ds: &DataStream, ns: &str, ctx: &Context) -> Result<Vec<String>> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let selector = manifests::selector_labels(ds).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let now = k8s_openapi::jiff::Timestamp::now();
    let old_enough = |pvc: &PersistentVolumeClaim| {
        pvc.metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| now.duration_since(t.0).as_secs() >= CLAIM_PENDING_FOR.as_secs() as i64)
    };
    Ok(pvcs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|pvc| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending") && old_enough(pvc))
        .map(|pvc| {
            let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
            let why = class.map_or("no storageClassName, and no default StorageClass took it".into(), |c| {
                format!("StorageClass {c}")
            });
            format!("{} ({why})", pvc.name_any())
        })
        .collect())
}

/// Sample the brokers' write counters; with a previous sample, report the rate and, in
/// Every broker's stats, by pod name: from each pod when several serve the stream (each
/// reports the shards it serves), else from the client Service. Brokers that do not answer
/// are left out.
async fn broker_stats(ds: &DataStream, ns: &str, ctx: &Context) -> Vec<(String, BrokerStats)> {
    let names = Names::of(ds);
    let brokers = manifests::serving_brokers(ds);
    let ask = |pod: String, url: String| async move {
        match ctx.kinesis.stats(&url).await {
            Ok(stats) => Some((pod, stats)),
            Err(e) => {
                tracing::debug!(datastream = %ds.name_any(), "{e}");
                None
            }
        }
    };
    let asks: Vec<_> = if brokers <= 1 {
        let url = kinesis::endpoint_for(&ctx.endpoints.admin, &ds.name_any(), ns);
        vec![ask(format!("{}-0", names.brokers), url)]
    } else {
        (0..brokers)
            .map(|i| {
                let pod = format!("{}-{i}", names.brokers);
                let url = kinesis::pod_endpoint_for(&ctx.endpoints.pod_admin, &pod, &names.headless, ns);
                ask(pod, url)
            })
            .collect()
    };
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

/// One view of every broker's stats: each shard once (a shard that moved is counted where
/// it has written most, its current owner's counters being the ones that grow).
fn merged(stats: &[(String, BrokerStats)]) -> BrokerStats {
    let mut streams: BTreeMap<String, StreamStats> = BTreeMap::new();
    for (_, broker) in stats {
        for stream in &broker.streams {
            let merged = streams.entry(stream.name.clone()).or_insert_with(|| StreamStats {
                shards: Vec::new(),
                taking: Vec::new(),
                ..stream.clone()
            });
            for shard in &stream.shards {
                match merged.shards.iter_mut().find(|s| s.shard_id == shard.shard_id) {
                    Some(known) if known.incoming_records >= shard.incoming_records => {}
                    Some(known) => *known = shard.clone(),
                    None => merged.shards.push(shard.clone()),
                }
            }
        }
    }
    BrokerStats { broker: None, streams: streams.into_values().collect() }
}

/// Open shards of `stream` each broker reported serving.
fn shards_per_broker(stats: &[(String, BrokerStats)], stream: &str) -> BTreeMap<String, i32> {
    stats
        .iter()
        .map(|(pod, broker)| {
            let open = broker.streams.iter().filter(|s| s.name == stream).flat_map(|s| &s.shards).filter(|s| s.open);
            (pod.clone(), open.count() as i32)
        })
        .collect()
}

/// Shards of `stream` some broker is taking over (assigned to it, not served yet).
fn handoffs(stats: &[(String, BrokerStats)], stream: &str) -> i32 {
    let taking: std::collections::BTreeSet<&str> = stats
        .iter()
        .flat_map(|(_, broker)| broker.streams.iter().filter(|s| s.name == stream))
        .flat_map(|s| s.taking.iter().map(String::as_str))
        .collect();
    taking.len() as i32
}

/// OnDemand mode, the autoscaler's decision (not Hold) with what it was based on.
async fn observe_writes(
    ds: &DataStream,
    ns: &str,
    open_shards: i32,
    ctx: &Context,
    stats: &BrokerStats,
) -> (Option<(i64, i64)>, Option<(Decision, String)>) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let Some(sample) = Sample::of(stats, &ds.name_any(), now.as_millisecond() as f64 / 1000.0) else {
        return (None, None);
    };
    let key = format!("{ns}/{}", ds.name_any());
    let previous = ctx.remembered.lock().unwrap().get(&key).cloned();
    let Some(previous) = previous else {
        ctx.remembered.lock().unwrap().insert(key, Remembered { sample, low_since: None, rate: None });
        return (None, None);
    };
    if sample.at_secs - previous.sample.at_secs < ctx.min_sample_secs {
        return (previous.rate, None);
    }
    let Some(loads) = throughput::loads(&previous.sample, &sample) else {
        return (previous.rate, None);
    };
    let (bytes, records) = loads.iter().fold((0.0, 0.0), |(b, r), l| (b + l.bytes_per_sec, r + l.records_per_sec));
    let mut low_since = previous.low_since;
    let mut decision = None;
    if let (StreamMode::OnDemand, Some(scaling)) = (ds.spec.mode, ds.spec.scaling.as_ref()) {
        let limits = &ds.spec.shard_limits;
        let policy = autoscale::Policy {
            min_shards: scaling.min_shards,
            max_shards: scaling.max_shards,
            target_utilization: scaling.target_write_utilization as f64 / 100.0,
            shard_write_bytes_per_sec: limits.write_bytes_per_second as f64,
            shard_write_records_per_sec: limits.write_records_per_second as f64,
            scale_down_stabilization_secs: scaling.scale_down_stabilization_seconds,
        };
        let (decided, next_low) = autoscale::decide(open_shards, &loads, &policy, low_since, now.as_second());
        low_since = next_low;
        if decided != Decision::Hold {
            decision = Some((decided, format!("{bytes:.0} B/s and {records:.0} records/s over {open_shards} shards")));
        }
    }
    let rate = Some((bytes.round() as i64, records.round() as i64));
    ctx.remembered.lock().unwrap().insert(key, Remembered { sample, low_since, rate });
    (rate, decision)
}

/// Change the stream's shard count through its brokers' Kinesis API: in Provisioned mode one
/// UpdateShardCount step towards spec.shards; in OnDemand mode the autoscaler's decision.
/// Every action is an Event and a metric; returns the open shard count it is heading for.
async fn reshard(
    ds: &DataStream,
    ctx: &Context,
    kinesis: &KinesisAdmin,
    endpoint: &str,
    open: i32,
    autoscale: Option<(Decision, String)>,
) -> Option<i32> {
    let (decision, reason, why) = match (ds.spec.mode, autoscale) {
        (StreamMode::Provisioned, _) => {
            let to = autoscale::provisioned_step(open, ds.spec.shards)?;
            (Decision::Scale { to }, "Resharding", format!("spec.shards is {}", ds.spec.shards))
        }
        (StreamMode::OnDemand, Some((decision, why))) => (decision, "AutoscaleDecision", why),
        (StreamMode::OnDemand, None) => return None,
    };
    let name = ds.name_any();
    let (action, outcome) = match &decision {
        Decision::Scale { to } => (
            format!("UpdateShardCount {open} -> {to}"),
            kinesis.update_shard_count(endpoint, &name, *to).await.map(|_| *to),
        ),
        Decision::SplitHot { shard_id } => (
            format!("SplitShard {shard_id} (above its write limit)"),
            kinesis.split_in_half(endpoint, &name, shard_id).await.map(|_| open + 1),
        ),
        Decision::Hold => return None,
    };
    match outcome {
        Ok(to) => {
            ctx.decision(ds, EventType::Normal, reason, format!("{action}: {why}")).await;
            Some(to)
        }
        Err(e) => {
            ctx.decision(ds, EventType::Warning, "ReshardFailed", format!("{action}: {e}")).await;
            None
        }
    }
}

/// On deletion: children go with their owner. With deletionPolicy Delete the stream is
/// deleted first through its brokers (which delete its objects in the object store), then
/// the data volumes; Retain keeps both.
async fn cleanup(ds: &DataStream, ctx: &Context) -> Result<Action> {
    let ns = ds.namespace().ok_or_else(|| Error::NotNamespaced(ds.name_any()))?;
    if ds.spec.deletion_policy == DeletionPolicy::Delete {
        let endpoint = kinesis::endpoint_for(&ctx.endpoints.api, &ds.name_any(), &ns);
        match brokers_client(ds, &ns, ctx).await?.delete_stream(&endpoint, &ds.name_any()).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::DeletionPending {
                    reason: "the brokers are deleting the stream".into(),
                    retry: STREAM_DELETION_POLL,
                });
            }
            Err(e) => {
                ctx.decision(
                    ds,
                    EventType::Warning,
                    "DeletionBlocked",
                    format!(
                        "deletionPolicy Delete: cannot delete the stream's data through its brokers ({e}); \
                         retrying. To keep the data instead, set spec.deletionPolicy to Retain"
                    ),
                )
                .await;
                return Err(Error::DeletionPending { reason: e.to_string(), retry: Duration::from_secs(10) });
            }
        }
    }
    match ds.spec.deletion_policy {
        DeletionPolicy::Retain => {
            ctx.decision(
                ds,
                EventType::Normal,
                "DataRetained",
                "deletionPolicy Retain: the broker volumes and the stream's objects in the object store are kept"
                    .into(),
            )
            .await;
        }
        DeletionPolicy::Delete => {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
            let selector =
                manifests::selector_labels(ds).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let mut deleted = 0;
            for pvc in pvcs.list(&ListParams::default().labels(&selector)).await?.items {
                match pvcs.delete(&pvc.name_any(), &DeleteParams::default()).await {
                    Ok(_) => deleted += 1,
                    // Already gone: cleanup is idempotent.
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            ctx.decision(
                ds,
                EventType::Normal,
                "DataDeleted",
                format!(
                    "deletionPolicy Delete: the stream and its objects in the object store deleted, \
                     {deleted} broker volume claim(s) deleted"
                ),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

/// Run the controller until a shutdown signal.
pub async fn run(client: Client, metrics: Arc<Metrics>, endpoints: BrokerEndpoints, operator_key: Option<Vec<u8>>) {
    let ctx = Arc::new(Context { operator_key, ..Context::new(client.clone(), metrics, endpoints) });
    let config = watcher::Config::default().any_semantic();
    Controller::new(Api::<DataStream>::all(client.clone()), config.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), config.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| async move {
            if let Err(e) = outcome {
                tracing::debug!("reconcile: {e}");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_changed_spec_shards_in_on_demand_mode_is_answered() {
        use crate::fixtures::DataStreamExt;
        let mut ds = streamfabric_api::crd::DataStream::test().with_shards(8);
        assert_eq!(super::on_demand_shards_note(&ds, 4), None, "Provisioned: the reshard follows spec.shards");
        ds.spec.mode = streamfabric_api::crd::StreamMode::OnDemand;
        ds.spec.scaling = serde_json::from_value(serde_json::json!({"minShards": 2, "maxShards": 16})).unwrap();
        let note = super::on_demand_shards_note(&ds, 4).unwrap();
        assert!(note.contains("spec.shards 8") && note.contains("keeps 4 open") && note.contains("(2..16)"), "{note}");
        assert_eq!(super::on_demand_shards_note(&ds, 8), None);
    }

    #[test]
    fn a_shard_two_brokers_report_taking_is_one_handoff() {
        use streamfabric_api::stats::{BrokerStats, StreamStats};
        let broker = |stream: &str, taking: &[&str]| BrokerStats {
            broker: None,
            streams: vec![StreamStats {
                name: stream.into(),
                status: "ACTIVE".into(),
                shards: Vec::new(),
                taking: taking.iter().map(|s| s.to_string()).collect(),
            }],
        };
        let stats = vec![
            ("b-0".to_string(), broker("orders", &["shardId-000000000001", "shardId-000000000002"])),
            ("b-1".to_string(), broker("orders", &["shardId-000000000002"])),
            ("b-2".to_string(), broker("other", &["shardId-000000000003"])),
        ];
        assert_eq!(super::handoffs(&stats, "orders"), 2);
        assert_eq!(super::handoffs(&stats, "quiet"), 0);
    }

    #[test]
    fn event_actions_are_cut_at_a_character_boundary() {
        assert_eq!(super::truncated("UpdateShardCount 6 -> 3", 128), "UpdateShardCount 6 -> 3");
        assert_eq!(super::truncated("ab\u{e9}", 3), "ab", "é is two bytes");
    }
}
