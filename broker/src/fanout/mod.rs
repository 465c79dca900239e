//! Enhanced fan-out: SubscribeToShard streams. Each subscription is a task that pushes the
//! shard's records to one consumer as they become durable (woken by the shard's
//! acknowledgement point, not by a poll), framed as AWS's event stream: `initial-response`
//! first, then `SubscribeToShardEvent`s, with a heartbeat event when idle. It ends after the
//! subscription lifetime (AWS: 5 minutes), at a closed shard's end (with its children), when
//! the shard leaves this broker or the broker stops (the consumer subscribes again from its
//! ContinuationSequenceNumber), or when a later subscription takes it over.

pub mod events;

use crate::broker::Broker;
use crate::catalog::Stream;
use crate::http::Body;
use crate::shard::Shard;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamfabric_api::model::{SubscribeToShardEvent, SubscribeToShardInput};
use streamfabric_api::names::parse_consumer_arn;
use streamfabric_api::sequence::{Place, SequenceNumber};
use streamfabric_api::types::Timestamp;
use streamfabric_api::{ApiError, ErrorCode, Format};
use tokio::sync::{mpsc, watch};

/// A second subscription of a consumer to a shard within this time of the first is refused
/// (ResourceInUseException); later, it takes the first one over.
const TAKEOVER_AFTER: Duration = Duration::from_secs(5);

/// An idle subscription still gets an event this often (no records, where to go on from).
const HEARTBEAT: Duration = Duration::from_secs(5);

/// How often an idle subscription checks that its shard is still served here and open.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Records of one event: at most this many bytes of data and keys (AWS pushes up to
/// 2 MiB/s per consumer and shard), and at most this many records.
const EVENT_BYTES: usize = 1 << 20;
const EVENT_RECORDS: usize = 10_000;

/// What a subscription reads: checked by the SubscribeToShard handler.
pub struct Target {
    pub stream: Arc<Stream>,
    pub shard: Arc<Shard>,
    pub consumer_arn: String,
    pub consumer_name: String,
    /// The offset of the first record to push.
    pub start: u64,
}

struct Active {
    id: u64,
    started: Instant,
    /// Set when a later subscription took this one over.
    taken_over: watch::Sender<bool>,
}

/// This broker's subscriptions, one per consumer and shard.
pub struct Subscriptions {
    active: Mutex<HashMap<(String, u64), Active>>,
    next_id: AtomicU64,
    /// The broker is stopping: every subscription ends.
    closing: watch::Sender<bool>,
    lifetime: Duration,
    metrics: FanoutMetrics,
}

struct FanoutMetrics {
    active: IntGaugeVec,
    subscribe_calls: IntCounterVec,
    events: IntCounterVec,
    records: IntCounterVec,
    bytes: IntCounterVec,
    /// From a record's arrival to its event's hand-over to the connection.
    push_seconds: Histogram,
}

impl FanoutMetrics {
    fn new(registry: &Registry) -> FanoutMetrics {
        let labels = &["stream", "consumer"];
        let register = |c: Box<dyn prometheus::core::Collector>| registry.register(c).expect("metric registered once");
        let active = IntGaugeVec::new(
            Opts::new("streamfabric_subscriptions", "SubscribeToShard streams open, per consumer"),
            labels,
        )
        .expect("valid metric");
        register(Box::new(active.clone()));
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let subscribe_calls = counter(
            "streamfabric_subscribe_calls_total",
            "SubscribeToShard calls by outcome: started, in_use (within 5 s of another), took_over",
            &["stream", "consumer", "outcome"],
        );
        let events = counter("streamfabric_subscription_events_total", "SubscribeToShardEvents sent", labels);
        let records = counter("streamfabric_subscription_records_total", "Records pushed to consumers", labels);
        let bytes = counter("streamfabric_subscription_bytes_total", "Data and key bytes pushed to consumers", labels);
        let push_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "streamfabric_subscription_push_seconds",
                "Time from a record's arrival to its SubscribeToShardEvent being sent",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
        )
        .expect("valid metric");
        register(Box::new(push_seconds.clone()));
        FanoutMetrics { active, subscribe_calls, events, records, bytes, push_seconds }
    }
}

impl Subscriptions {
    pub fn new(registry: &Registry, lifetime: Duration) -> Subscriptions {
        Subscriptions {
            active: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closing: watch::Sender::new(false),
            lifetime,
            metrics: FanoutMetrics::new(registry),
        }
    }

    /// End every subscription (the broker is stopping; consumers subscribe again elsewhere).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Register a subscription of `consumer_arn` to the shard: refused within
    /// `TAKEOVER_AFTER` of another one, else taking the other one over.
    fn claim(&self, target: &Target) -> Result<(u64, watch::Receiver<bool>), ApiError> {
        let labels = [target.stream.name.as_str(), target.consumer_name.as_str()];
        let mut active = self.active.lock().expect("subscriptions lock");
        let key = (target.consumer_arn.clone(), target.shard.index);
        if let Some(other) = active.get(&key) {
            if other.started.elapsed() < TAKEOVER_AFTER {
                self.metrics.subscribe_calls.with_label_values(&[labels[0], labels[1], "in_use"]).inc();
                return Err(ApiError::in_use(format!(
                    "Another active subscription exists for consumer {} and shard {}; a new one may take it over {} s after it started.",
                    target.consumer_arn,
                    target.shard.id,
                    TAKEOVER_AFTER.as_secs()
                )));
            }
            other.taken_over.send_replace(true);
            self.metrics.subscribe_calls.with_label_values(&[labels[0], labels[1], "took_over"]).inc();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (taken_over, watched) = watch::channel(false);
        active.insert(key, Active { id, started: Instant::now(), taken_over });
        self.metrics.subscribe_calls.with_label_values(&[labels[0], labels[1], "started"]).inc();
        self.metrics.active.with_label_values(&labels).inc();
        Ok((id, watched))
    }

    fn release(&self, target: &Target, id: u64) {
        let mut active = self.active.lock().expect("subscriptions lock");
        let key = (target.consumer_arn.clone(), target.shard.index);
        if active.get(&key).is_some_and(|a| a.id == id) {
            active.remove(&key);
        }
        self.metrics.active.with_label_values(&[&target.stream.name, &target.consumer_name]).dec();
    }
}

/// The answer to a SubscribeToShard that was taken.
pub enum Subscribed {
    /// Served here: the event stream.
    Here(Body),
    /// Served by the shard's owner: its answer as it comes.
    Relayed(http::Response<Body>),
}

/// Answer a SubscribeToShard (its `X-Amz-Target` and body): an error before the stream, or
/// the stream, from here or relayed from the broker that owns the shard.
pub async fn subscribe(
    broker: &Arc<Broker>,
    format: Format,
    target_header: &str,
    body: Bytes,
    forwarded: bool,
) -> Result<Subscribed, ApiError> {
    let input: SubscribeToShardInput = format.decode(&body)?;
    let target = match broker.subscription_target(&input) {
        // In a cluster the consumer may have been registered, or turned ACTIVE, at the
        // coordinator since this broker last read the stream's description.
        Err(e)
            if matches!(e.code, ErrorCode::ResourceNotFound | ErrorCode::ResourceInUse) && broker.fabric.is_some() =>
        {
            let arn = input.consumer_arn.as_deref().unwrap_or_default();
            if let Ok((stream, _, _)) = parse_consumer_arn(arn) {
                broker.sync_stream_now(stream).await;
            }
            broker.subscription_target(&input)?
        }
        found => found?,
    };
    if let Some(address) = broker.shard_owner_elsewhere(&target.stream.name, &target.shard, forwarded)? {
        let fabric = broker.fabric.as_ref().expect("a cluster has peers");
        let answer = fabric.peers.forward_streaming(&address, target_header, format, body).await?;
        return Ok(Subscribed::Relayed(
            answer.map(|relayed| relayed.map_err(crate::http::BoxError::from).boxed_unsync()),
        ));
    }
    let target = broker.subscription_start(&input, target).await?;
    Ok(Subscribed::Here(open(broker, target, format)?))
}

/// Start a subscription: the body of the answer, its events written by a task of its own.
fn open(broker: &Arc<Broker>, target: Target, format: Format) -> Result<Body, ApiError> {
    let (id, taken_over) = broker.subscriptions.claim(&target)?;
    // Two events in the pipe: a slow consumer holds the reads back rather than memory.
    let (events, pipe) = mpsc::channel::<Bytes>(2);
    let broker = broker.clone();
    tokio::spawn(async move {
        let pace = Pace::new(&broker.config);
        let run = Run { broker: &broker, target: &target, format, events, taken_over, pace };
        run.push().await;
        broker.subscriptions.release(&target, id);
    });
    let frames = futures::stream::unfold(pipe, |mut pipe| async move {
        let bytes = pipe.recv().await?;
        Some((Ok::<_, crate::http::BoxError>(Frame::data(bytes)), pipe))
    });
    Ok(StreamBody::new(frames).boxed_unsync())
}

/// The continuation of a subscription whose next record is at `next`: AFTER_SEQUENCE_NUMBER
/// with it goes on from there (the shard's start marker before its first record).
fn continuation(shard_index: u64, next: u64) -> String {
    match next.checked_sub(1) {
        Some(last) => SequenceNumber::new(shard_index, last).text(),
        None => Place::shard_start(shard_index),
    }
}

/// One subscription's task.
struct Run<'a> {
    broker: &'a Arc<Broker>,
    target: &'a Target,
    format: Format,
    events: mpsc::Sender<Bytes>,
    taken_over: watch::Receiver<bool>,
    pace: Pace,
}

/// AWS's read limit of a subscription (2 MiB/s per consumer and shard), kept when
/// `--enforce-shard-limits` is set: the next event waits until the bytes pushed so far fit
/// the rate, with one second's worth of burst.
struct Pace {
    bytes_per_sec: f64,
    ready_at: Instant,
}

impl Pace {
    fn new(config: &crate::config::BrokerConfig) -> Pace {
        let rate = if config.enforce_shard_limits { config.shard_read_bytes_per_sec as f64 } else { 0.0 };
        Pace { bytes_per_sec: rate, ready_at: Instant::now() }
    }

    fn charge(&mut self, bytes: u64) {
        if self.bytes_per_sec > 0.0 {
            let now = Instant::now();
            let burst_floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            self.ready_at = self.ready_at.max(burst_floor) + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        }
    }

    /// When the next event may be read, if not now.
    fn waiting(&self) -> Option<Instant> {
        (self.ready_at > Instant::now()).then_some(self.ready_at)
    }
}

/// Why a subscription stops pushing.
enum End {
    /// Complete: the consumer subscribes again from its continuation.
    Done,
    /// An exception event first.
    Failed(ApiError),
}

impl Run<'_> {
    async fn push(mut self) {
        let Target { stream, shard, .. } = self.target;
        let lifetime = tokio::time::sleep(self.broker.subscriptions.lifetime);
        tokio::pin!(lifetime);
        let mut closing = self.broker.subscriptions.closing.subscribe();
        let mut durable = shard.watch_durable();
        let mut position = self.target.start;
        let mut last_event: Option<Instant> = None;
        if !self.send(events::initial_response(self.format)).await {
            return;
        }
        let end = loop {
            if *closing.borrow_and_update() {
                break End::Done;
            }
            if *self.taken_over.borrow_and_update() {
                break End::Failed(ApiError::in_use(format!(
                    "This subscription of consumer {} to shard {} was taken over by a later one.",
                    self.target.consumer_arn, shard.id
                )));
            }
            // The shard moved to another broker, or the stream was deleted or recreated.
            let current = self.broker.catalog.get(&stream.name).and_then(|s| s.shard(shard.index));
            if !shard.is_serving() || !current.is_some_and(|c| Arc::ptr_eq(&c, shard)) {
                break End::Done;
            }
            let durable_end = *durable.borrow_and_update();
            let due = last_event.is_none_or(|at| at.elapsed() >= HEARTBEAT);
            let paced = self.pace.waiting();
            if paced.is_none() && (position < durable_end || due || shard_closed(stream, shard.index)) {
                match self.read_and_send(position).await {
                    Ok(Some((next, ended, bytes))) => {
                        self.pace.charge(bytes);
                        let progressed = next > position;
                        position = next;
                        last_event = Some(Instant::now());
                        if ended {
                            break End::Done;
                        }
                        // More is durable already: read on at once (not after an empty read).
                        if progressed && position < *durable.borrow() && self.pace.waiting().is_none() {
                            continue;
                        }
                    }
                    Ok(None) => break End::Done,
                    Err(e) => break End::Failed(e),
                }
            }
            tokio::select! {
                _ = durable.changed() => {}
                _ = self.taken_over.changed() => {}
                _ = closing.changed() => {}
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = tokio::time::sleep_until(paced.unwrap_or_else(Instant::now).into()), if paced.is_some() => {}
                _ = self.events.closed() => break End::Done,
                _ = &mut lifetime => break End::Done,
            }
        };
        if let End::Failed(e) = end {
            self.send(events::exception(self.format, &e)).await;
        }
    }

    /// Read from `position` and send one event (records, or none as a heartbeat): where
    /// the next read starts, whether the shard ended and the bytes of records sent. None:
    /// the consumer went away.
    async fn read_and_send(&self, position: u64) -> Result<Option<(u64, bool, u64)>, ApiError> {
        let Target { stream, shard, .. } = self.target;
        let now = Timestamp::now().millis();
        let (event, next, ended, bytes) = {
            let _permit = self.broker.read_slots.acquire().await.expect("the semaphore is never closed");
            let batch = self.broker.read_batch(stream, shard, position, EVENT_RECORDS, EVENT_BYTES, now).await?;
            let ended = batch.child_shards.is_some();
            for record in &batch.records {
                let age = (now - record.approximate_arrival_timestamp.millis()).max(0);
                self.broker.subscriptions.metrics.push_seconds.observe(age as f64 / 1000.0);
            }
            let event = SubscribeToShardEvent {
                continuation_sequence_number: (!ended).then(|| continuation(shard.index, batch.next)),
                millis_behind_latest: batch.millis_behind,
                child_shards: batch.child_shards,
                records: batch.records,
            };
            let count = event.records.len() as u64;
            (events::records(self.format, &event), batch.next, ended, (count, batch.bytes as u64))
        };
        let metrics = &self.broker.subscriptions.metrics;
        let labels = [stream.name.as_str(), self.target.consumer_name.as_str()];
        metrics.events.with_label_values(&labels).inc();
        metrics.records.with_label_values(&labels).inc_by(bytes.0);
        metrics.bytes.with_label_values(&labels).inc_by(bytes.1);
        Ok(self.send(event).await.then_some((next, ended, bytes.1)))
    }

    /// False once the consumer is gone.
    async fn send(&self, frame: Bytes) -> bool {
        self.events.send(frame).await.is_ok()
    }
}

fn shard_closed(stream: &Stream, index: u64) -> bool {
    stream.with_meta(|m| m.shards.iter().any(|s| s.index == index && s.closed.is_some()))
}
