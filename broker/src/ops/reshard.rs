//! SplitShard, MergeShards, UpdateShardCount and UpdateStreamMode.
//!
//! As in Kinesis, a call checks its arguments, turns the stream UPDATING and returns; the
//! change is applied in the background (after `--status-delay`), and the stream is ACTIVE
//! again once it is. The accepted plan is persisted with the UPDATING status, so a broker
//! restarted in between applies it at start.

use super::shards::shard_index_arg;
use super::validate::{self, bounded, required};
use crate::broker::Broker;
use crate::catalog::meta::{StreamMeta, StreamMode, StreamStatus};
use crate::catalog::reshard::{self, Change};
use crate::catalog::{Catalog, Stream};
use crate::cluster::ShardKey;
use crate::fabric::Pins;
use std::sync::Arc;
use std::time::Duration;
use streamfabric_api::ApiError;
use streamfabric_api::hashkey::parse_explicit_hash_key;
use streamfabric_api::limits::MAX_UPDATE_SHARD_COUNT_TARGET;
use streamfabric_api::model::*;
use streamfabric_api::names::shard_id;
use streamfabric_api::types::Timestamp;

impl Broker {
    pub(crate) async fn split_shard(&self, input: SplitShardInput) -> Result<Empty, ApiError> {
        let shard = shard_index_arg("shardToSplit", required(&input.shard_to_split, "shardToSplit")?)?;
        let key = required(&input.new_starting_hash_key, "newStartingHashKey")?;
        let at = parse_explicit_hash_key("newStartingHashKey", key)?;
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        self.begin_reshard(&stream, |_| Ok(vec![Change::Split { shard, at }]))?;
        Ok(Empty {})
    }

    pub(crate) async fn merge_shards(&self, input: MergeShardsInput) -> Result<Empty, ApiError> {
        let shard = shard_index_arg("shardToMerge", required(&input.shard_to_merge, "shardToMerge")?)?;
        let adjacent = required(&input.adjacent_shard_to_merge, "adjacentShardToMerge")?;
        let adjacent = shard_index_arg("adjacentShardToMerge", adjacent)?;
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        self.begin_reshard(&stream, |_| Ok(vec![Change::Merge { shard, adjacent }]))?;
        Ok(Empty {})
    }

    pub(crate) async fn update_shard_count(
        &self,
        input: UpdateShardCountInput,
    ) -> Result<UpdateShardCountOutput, ApiError> {
        let target = required(&input.target_shard_count, "targetShardCount")?;
        let target = bounded("targetShardCount", Some(*target), 1, MAX_UPDATE_SHARD_COUNT_TARGET, 1)?;
        validate::one_of("scalingType", required(&input.scaling_type, "scalingType")?, &["UNIFORM_SCALING"])?;
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        let current = stream.meta().open_shard_count() as i64;
        self.begin_reshard(&stream, |meta| {
            let open = meta.open_shard_count() as i64;
            if target > open * 2 || target * 2 < open {
                return Err(ApiError::limit(format!(
                    "UpdateShardCount from {open} to {target} open shards is out of bounds: one call may at most \
                     double or halve the open shards of stream {} (to between {} and {}).",
                    meta.name,
                    (open + 1) / 2,
                    open * 2
                )));
            }
            Ok(reshard::uniform_plan(meta, target as u32))
        })?;
        Ok(UpdateShardCountOutput {
            stream_arn: self.arn(&stream.name),
            stream_name: stream.name.clone(),
            current_shard_count: current,
            target_shard_count: target,
        })
    }

    pub(crate) async fn update_stream_mode(&self, input: UpdateStreamModeInput) -> Result<Empty, ApiError> {
        let arn = required(&input.stream_arn, "streamARN")?;
        let details = required(&input.stream_mode_details, "streamModeDetails")?;
        let mode = required(&details.stream_mode, "streamModeDetails.streamMode")?;
        let mode = match validate::one_of("streamModeDetails.streamMode", mode, &["PROVISIONED", "ON_DEMAND"])? {
            "ON_DEMAND" => StreamMode::OnDemand,
            _ => StreamMode::Provisioned,
        };
        let stream = self.resolve(&None, &Some(arn.clone()))?;
        stream.update_meta(|m| {
            super::validate::active(m, "reshard it")?;
            if m.mode == mode {
                return Err(ApiError::invalid(format!("Stream {} is already in {} mode.", m.name, mode.as_str())));
            }
            m.mode = mode;
            m.status = StreamStatus::Updating;
            Ok(())
        })?;
        let delay = self.config.status_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = stream.update_meta(|m| {
                if m.status == StreamStatus::Updating && m.pending_reshard.is_empty() {
                    m.status = StreamStatus::Active;
                }
                Ok(())
            });
        });
        Ok(Empty {})
    }

    /// Validate the changes `plan` makes of the stream's description, against the account's
    /// shard limit too; persist them as pending with the stream UPDATING; apply them later.
    fn begin_reshard(
        &self,
        stream: &Arc<Stream>,
        plan: impl FnOnce(&StreamMeta) -> Result<Vec<Change>, ApiError>,
    ) -> Result<(), ApiError> {
        let open_elsewhere = self.catalog.open_shard_count() as i64 - stream.meta().open_shard_count() as i64;
        let limit = self.config.shard_limit;
        let accepted = stream.update_meta(|m| {
            super::validate::active(m, "reshard it")?;
            let changes = plan(m)?;
            let mut after = m.clone();
            reshard::apply(&mut after, &changes, |_| 0, 0)?;
            let open_after = after.open_shard_count() as i64;
            if open_elsewhere + open_after > limit {
                return Err(ApiError::limit(format!(
                    "This reshard would leave {} open shards in the account and the limit is {limit}.",
                    open_elsewhere + open_after
                )));
            }
            if !changes.is_empty() {
                m.status = StreamStatus::Updating;
                m.pending_reshard = changes;
            }
            Ok(!m.pending_reshard.is_empty())
        })?;
        if accepted {
            // In a cluster a shard closes at the broker serving it: the coordinator (this
            // broker) takes the parents first.
            let parents = self.fabric.as_ref().map(|fabric| {
                let parents = stream.with_meta(|m| reshard::closes_open(m, &m.pending_reshard));
                let mut pins = fabric.pins.lock().unwrap();
                pins.extend(parents.iter().map(|&i| ShardKey::new(stream.name.clone(), shard_id(i))));
                (fabric.pins.clone(), parents)
            });
            tokio::spawn(apply_later(self.catalog.clone(), stream.clone(), self.config.status_delay, parents));
        }
        Ok(())
    }
}

/// How long a coordinator waits to serve the parents of a reshard (handed on to it by
/// their owners) before the reshard fails.
const PARENTS_WAIT: Duration = Duration::from_secs(60);

/// Apply the stream's pending reshard after `delay`, with no append in flight; in a cluster
/// once this broker serves every parent (`pinned`, unpinned when done).
async fn apply_later(catalog: Arc<Catalog>, stream: Arc<Stream>, delay: Duration, pinned: Option<(Pins, Vec<u64>)>) {
    tokio::time::sleep(delay).await;
    if let Some((pins, parents)) = pinned {
        let started = std::time::Instant::now();
        let served = |i: &u64| stream.shard(*i).is_some_and(|s| s.is_serving());
        while !parents.iter().all(served) && started.elapsed() < PARENTS_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready = parents.iter().all(served);
        if ready {
            let _no_appends = stream.write_gate.write().await;
            apply_now(&catalog, &stream).await;
        } else {
            tracing::error!(stream = %stream.name, "reshard dropped: its shards were not handed on within {PARENTS_WAIT:?}");
            let _ = stream.update_meta(|m| {
                m.status = StreamStatus::Active;
                m.pending_reshard.clear();
                Ok(())
            });
        }
        let mut pins = pins.lock().unwrap();
        for i in parents {
            pins.remove(&ShardKey::new(stream.name.clone(), shard_id(i)));
        }
        return;
    }
    let _no_appends = stream.write_gate.write().await;
    apply_now(&catalog, &stream).await;
}

async fn apply_now(catalog: &Arc<Catalog>, stream: &Arc<Stream>) {
    let (catalog, stream_ref) = (catalog.clone(), stream.clone());
    let applied =
        tokio::task::spawn_blocking(move || catalog.apply_pending_reshard(&stream_ref, Timestamp::now().millis()))
            .await;
    match applied {
        Ok(Ok(())) => tracing::info!(stream = %stream.name, "reshard applied"),
        Ok(Err(e)) => tracing::error!(stream = %stream.name, "reshard failed: {}", e.message),
        Err(e) => tracing::error!(stream = %stream.name, "reshard task failed: {e}"),
    }
}
