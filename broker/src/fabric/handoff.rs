//! Moving shards between brokers as the assignment says.
//!
//! The owner hands a shard on cooperatively: it stops appending (under the stream's write
//! gate), seals the active segment, waits until every sealed segment is listed in the
//! manifest, and marks the manifest released at its end. The next owner takes the next
//! epoch (a conditional write: one winner) and continues the same sequence space exactly
//! there, its log rebuilt from the bucket. A shard whose owner stopped renewing its
//! membership for `--member-timeout` is taken over: write-ahead objects (durability
//! `object`) give back its acknowledged records, and numbering continues past a gap.

use crate::broker::Broker;
use crate::catalog::Stream;
use crate::cluster::{Liveness, ShardKey};
use crate::config::Durability;
use crate::shard::Shard;
use crate::tier::{TierError, WalChunk};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a release waits for its sealed segments to reach the bucket before it gives
/// up (the store is down) and serves the shard on; the next round tries again.
const UPLOAD_WAIT: Duration = Duration::from_secs(30);

/// One round: un-serve everything after a lease lapse, take the shards assigned here,
/// hand on those assigned elsewhere.
pub async fn reconcile(broker: &Broker) {
    let Some(fabric) = &broker.fabric else { return };
    if fabric.leaving.load(Ordering::Acquire) {
        return;
    }
    let lapses = fabric.cluster.lease_lapses();
    if lapses != fabric.recovered_lapses.load(Ordering::Acquire) {
        // Peers may have taken any of them meanwhile: each is taken again through its manifest.
        tracing::warn!("this broker's cluster lease ran out; checking every shard it served against the object store");
        for stream in broker.catalog.all() {
            for shard in stream.shards() {
                shard.set_serving(false);
            }
        }
        fabric.recovered_lapses.store(lapses, Ordering::Release);
    }
    if !fabric.cluster.lease_valid() {
        // Peers may be taking this broker's shards: it neither takes nor hands on any (the
        // renewal that ends this counts as a lapse, and the next round starts afresh).
        return;
    }
    let me = fabric.cluster.broker_id().to_string();
    let assignment = fabric.cluster.assignments().borrow().clone();
    // Shards move independently: one waiting for its uploads holds up no other.
    let mut moves = Vec::new();
    for stream in broker.catalog.all() {
        for shard in stream.shards() {
            let assigned = assignment.owner(&ShardKey::new(stream.name.clone(), shard.id.clone()));
            let mine = assigned.is_some_and(|owner| *owner == me);
            let stream = stream.clone();
            if mine && !shard.is_serving() {
                moves.push(futures::future::Either::Left(async move {
                    if let Err(e) = take(broker, &stream, &shard).await {
                        tracing::warn!(stream = %stream.name, shard = %shard.id, "taking the shard: {e}");
                    }
                }));
            } else if !mine && assigned.is_some() && shard.is_serving() {
                moves.push(futures::future::Either::Right(async move {
                    if let Err(e) = release(broker, &stream, &shard).await {
                        tracing::warn!(stream = %stream.name, shard = %shard.id, "handing the shard on: {e}");
                    }
                }));
            }
        }
    }
    futures::future::join_all(moves).await;
}

/// Hand on every shard served here (a clean shutdown).
pub async fn hand_on_all(broker: &Broker) {
    let streams = broker.catalog.all();
    let releases = streams.iter().flat_map(|stream| {
        stream.shards().into_iter().filter(|s| s.is_serving()).map(move |shard| async move {
            if let Err(e) = release(broker, stream, &shard).await {
                tracing::warn!(stream = %stream.name, shard = %shard.id, "handing the shard on at shutdown: {e}");
            }
        })
    });
    futures::future::join_all(releases).await;
}

/// How the next owner's log continues.
enum Continue {
    /// The local log is the shard's (this broker owned it last, on this disk).
    Local,
    /// Rebuilt from the bucket, numbering continuing at the release offset.
    Released(u64),
    /// Rebuilt from the bucket and the write-ahead objects, past a gap.
    TakenOver,
}

/// Take the shard assigned here; Ok(false) while its owner may still be alive.
async fn take(broker: &Broker, stream: &Arc<Stream>, shard: &Arc<Shard>) -> Result<bool, TierError> {
    let fabric = broker.fabric.as_ref().expect("cluster mode");
    let me = fabric.cluster.broker_id();
    let manifests = broker.archive.tier().manifest(&stream.name, &shard.id)?;
    let manifest = manifests.load().await?.map(|(m, _)| m);
    let (epoch, owner, released) =
        manifest.as_ref().map_or((0, None, None), |m| (m.epoch, m.owner.clone(), m.released_at));
    let local_end = shard.log.bounds().end_offset;
    let listed_end = manifest.as_ref().map_or(0, |m| m.end_offset());
    let how = match (owner.as_deref(), released) {
        // A shard nobody has written yet.
        (None, _) => Continue::Local,
        (Some(o), None) if o == me && local_end > 0 && local_end >= listed_end => Continue::Local,
        (Some(o), Some(at)) if o == me && local_end == at => Continue::Local,
        (Some(_), Some(at)) => Continue::Released(at),
        // This broker's own shard without its data (a lost disk): as from a dead owner.
        (Some(o), None) if o == me => Continue::TakenOver,
        (Some(o), None) => match fabric.cluster.liveness_of(o) {
            Some(Liveness::Dead) => Continue::TakenOver,
            // No record: it left (without handing on) or was never seen; sure only after
            // watching the members for as long as a broker may go unseen.
            None if fabric.cluster.watched_for() > fabric.cluster.settings().member_timeout => Continue::TakenOver,
            _ => return Ok(false),
        },
    };
    // Keeping one's own unreleased shard keeps its epoch; every other take moves it on.
    let epoch = match (&how, owner.as_deref(), released) {
        (Continue::Local | Continue::TakenOver, Some(o), None) if o == me => epoch,
        _ => manifests.take_ownership(me, epoch).await?,
    };
    let kind = match how {
        Continue::Local if owner.is_none() => "fresh",
        Continue::Local => "kept",
        Continue::Released(_) => "released",
        Continue::TakenOver => "taken_over",
    };
    let serving = match how {
        Continue::Local => shard.clone(),
        Continue::Released(at) => rebuild(broker, stream, shard, &[], Some(at)).await?,
        Continue::TakenOver => {
            let replay = match broker.config.durability {
                Durability::Object => {
                    broker.write_ahead_of(&stream.name, stream.incarnation, &shard.id, listed_end).await?
                }
                Durability::Local => Vec::new(),
            };
            rebuild(broker, stream, shard, &replay, None).await?
        }
    };
    serving.bucket.owned(epoch);
    // Manifests cached while another broker owned the shard list less than it has now.
    broker.tiers.invalidate();
    broker.archive.catch_up(&serving.bucket, serving.log.sealed_segments()).await?;
    serving.set_serving(true);
    broker.metrics.handoffs.with_label_values(&[kind]).inc();
    let from = owner.as_deref().unwrap_or("-");
    let end = serving.log.bounds().end_offset;
    tracing::info!(broker = %me, stream = %stream.name, shard = %shard.id, epoch, how = kind, from, listed_end, end, "serving the shard");
    Ok(true)
}

/// Replace the local log of `shard` by one rebuilt from the bucket.
async fn rebuild(
    broker: &Broker,
    stream: &Arc<Stream>,
    shard: &Arc<Shard>,
    replay: &[WalChunk],
    continue_at: Option<u64>,
) -> Result<Arc<Shard>, TierError> {
    let dir = broker.catalog.shard_dir(&stream.name, shard.index);
    let io = |op: &'static str| {
        let path = dir.display().to_string();
        move |source| TierError::Io { op, path, source }
    };
    shard.log.clone().destroy().map_err(io("remove"))?;
    let next = broker
        .archive
        .rebuild_shard_dir(&stream.name, stream.incarnation, shard.index, &dir, replay, continue_at)
        .await?;
    tracing::info!(stream = %stream.name, shard = %shard.id, next, "shard log rebuilt from the object store");
    broker.catalog.reopen_shard(stream, shard.index).map_err(io("open"))
}

/// Stop serving the shard and hand it on: no append in flight, everything sealed and
/// listed, the manifest marked released at the log's end.
async fn release(broker: &Broker, stream: &Stream, shard: &Shard) -> Result<(), TierError> {
    let started = std::time::Instant::now();
    shard.set_serving(false);
    // Appends check `serving` under the gate: once it is taken, none is in flight.
    drop(stream.write_gate.write().await);
    let bucket = &shard.bucket;
    let Some(epoch) = bucket.owned_epoch() else { return Ok(()) };
    let failed = |op: &'static str| {
        let path = format!("shard {} of {}", shard.id, stream.name);
        move |source| TierError::Io { op, path, source }
    };
    shard.log.roll().map_err(failed("seal"))?;
    let end = shard.log.bounds().end_offset;
    let sealed_end = shard.log.sealed_segments().last().map_or(0, |s| s.end_offset);
    while broker.archive.uploaded_end(bucket).await? < sealed_end {
        if bucket.owned_epoch() != Some(epoch) {
            // Fenced meanwhile: another broker took the shard, nothing to hand on.
            return Ok(());
        }
        if started.elapsed() > UPLOAD_WAIT {
            shard.set_serving(true);
            return Err(TierError::Rejected {
                reason: format!("its segments did not reach the object store within {UPLOAD_WAIT:?}; serving it on"),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match broker.archive.tier().manifest(&stream.name, &shard.id)?.release(epoch, end).await {
        Ok(()) => {}
        Err(TierError::StaleEpoch { current, .. }) => {
            bucket.fence(&format!("epoch {current} was taken by another broker"));
            return Ok(());
        }
        Err(e) => {
            shard.set_serving(true);
            return Err(e);
        }
    }
    bucket.release();
    broker.metrics.handoffs.with_label_values(&["released"]).inc();
    tracing::info!(broker = %broker.archive.ownership.broker_id(), stream = %stream.name, shard = %shard.id, end, took_ms = started.elapsed().as_millis() as u64, "handed the shard on");
    Ok(())
}
