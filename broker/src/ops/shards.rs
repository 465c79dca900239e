//! ListShards and the shard descriptions shared with DescribeStream.

use super::validate::{self, bounded};
use crate::broker::Broker;
use crate::catalog::meta::ShardMeta;
use crate::tokens::PageKind;
use streamfabric_api::ApiError;
use streamfabric_api::limits::MAX_LIST_SHARDS_RESULTS;
use streamfabric_api::model::*;
use streamfabric_api::names::{parse_shard_id, shard_id};
use streamfabric_api::sequence::SequenceNumber;

/// A shard id given as an argument; an id of the right form that does not exist is fine
/// for paging (it orders like its index).
pub(crate) fn shard_index_arg(field: &str, id: &str) -> Result<u64, ApiError> {
    parse_shard_id(id).ok_or_else(|| {
        ApiError::validation(
            field,
            id,
            "Member must satisfy regular expression pattern: shardId-[0-9]{12} (or a bare index)",
        )
    })
}

pub(crate) fn shard_model(s: &ShardMeta) -> Shard {
    Shard {
        shard_id: shard_id(s.index),
        parent_shard_id: s.parent.map(shard_id),
        adjacent_parent_shard_id: s.adjacent_parent.map(shard_id),
        hash_key_range: HashKeyRange {
            starting_hash_key: s.range.start.to_string(),
            ending_hash_key: s.range.end.to_string(),
        },
        sequence_number_range: SequenceNumberRange {
            // Fixed at the shard's first number, as AWS keeps it after trimming.
            starting_sequence_number: SequenceNumber::new(s.index, 0).text(),
            ending_sequence_number: s
                .closed
                .map(|c| SequenceNumber::new(s.index, c.end_offset.saturating_sub(1)).text()),
        },
    }
}

/// Which shards a ListShards ShardFilter keeps.
type ShardPredicate = Box<dyn Fn(&ShardMeta) -> bool>;

const FILTER_TYPES: &[&str] =
    &["AFTER_SHARD_ID", "AT_TRIM_HORIZON", "FROM_TRIM_HORIZON", "AT_LATEST", "AT_TIMESTAMP", "FROM_TIMESTAMP"];

impl Broker {
    /// DescribeShardOwners: the broker serving each shard, as this broker sees the cluster's
    /// assignment (none outside a cluster: this broker serves them all).
    pub fn describe_shard_owners(
        &self,
        input: streamfabric_api::owners::DescribeShardOwnersInput,
    ) -> Result<streamfabric_api::owners::DescribeShardOwnersOutput, ApiError> {
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        let shards = match &self.fabric {
            None => Vec::new(),
            Some(fabric) => stream
                .shards()
                .iter()
                .filter_map(|shard| {
                    let (broker_id, address) = fabric.cluster.owner_of(&stream.name, &shard.id)?;
                    Some(streamfabric_api::owners::ShardOwner { shard_id: shard.id.clone(), broker_id, address })
                })
                .collect(),
        };
        Ok(streamfabric_api::owners::DescribeShardOwnersOutput { shards })
    }

    pub(crate) async fn list_shards(&self, input: ListShardsInput) -> Result<ListShardsOutput, ApiError> {
        let max = bounded("maxResults", input.max_results, 1, MAX_LIST_SHARDS_RESULTS, 1000)? as usize;
        let (stream, after) = match &input.next_token {
            Some(token) => {
                if input.stream_name.is_some() || input.stream_arn.is_some() {
                    return Err(ApiError::invalid("NextToken and StreamName cannot be provided together."));
                }
                let page = self.signer.parse_page(token, PageKind::Shards)?;
                let (name, incarnation) = page.scope.rsplit_once('/').unwrap_or((&page.scope, ""));
                let stream = self.catalog.get(name).ok_or_else(|| self.not_found(name))?;
                if stream.incarnation.to_string() != incarnation {
                    return Err(ApiError::invalid("Invalid NextToken: its stream was deleted."));
                }
                (stream, page.after.parse::<u64>().ok())
            }
            None => {
                let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
                let after = match &input.exclusive_start_shard_id {
                    Some(id) => Some(shard_index_arg("exclusiveStartShardId", id)?),
                    None => None,
                };
                (stream, after)
            }
        };
        let meta = stream.meta();
        let keep = self.shard_filter(input.shard_filter.as_ref(), &meta.shards)?;
        let mut shards: Vec<&ShardMeta> =
            meta.shards.iter().filter(|s| after.is_none_or(|a| s.index > a)).filter(|s| keep(s)).collect();
        let more = shards.len() > max;
        shards.truncate(max);
        let next_token = more.then(|| {
            let scope = format!("{}/{}", stream.name, stream.incarnation);
            self.signer.page(PageKind::Shards, &scope, &shards.last().unwrap().index.to_string())
        });
        Ok(ListShardsOutput { shards: shards.into_iter().map(shard_model).collect(), next_token })
    }

    /// The predicate of a ShardFilter.
    fn shard_filter(&self, filter: Option<&ShardFilter>, shards: &[ShardMeta]) -> Result<ShardPredicate, ApiError> {
        let Some(filter) = filter else { return Ok(Box::new(|_| true)) };
        let kind = validate::one_of(
            "shardFilter.type",
            validate::required(&filter.r#type, "shardFilter.type")?,
            FILTER_TYPES,
        )?;
        Ok(match kind {
            "AFTER_SHARD_ID" => {
                let id = filter
                    .shard_id
                    .as_deref()
                    .ok_or_else(|| ApiError::invalid("ShardFilter type AFTER_SHARD_ID requires ShardId."))?;
                let after = shard_index_arg("shardFilter.shardId", id)?;
                Box::new(move |s| s.index > after)
            }
            "AT_LATEST" => Box::new(|s| s.closed.is_none()),
            "AT_TIMESTAMP" | "FROM_TIMESTAMP" => {
                let at = filter
                    .timestamp
                    .ok_or_else(|| ApiError::invalid(format!("ShardFilter type {kind} requires Timestamp.")))?
                    .millis();
                // As AWS documents them: started at or before, ended at or after (or open).
                if kind == "AT_TIMESTAMP" {
                    Box::new(move |s| s.created_ms <= at && s.closed.is_none_or(|c| c.at_ms >= at))
                } else {
                    Box::new(move |s| s.closed.is_none_or(|c| c.at_ms >= at))
                }
            }
            // The shards open at the trim horizon: those whose parents are past retention
            // (no longer listed), or that have none. The KCL builds its lease tree from them.
            "AT_TRIM_HORIZON" => {
                let listed: std::collections::HashSet<u64> = shards.iter().map(|s| s.index).collect();
                Box::new(move |s| [s.parent, s.adjacent_parent].iter().flatten().all(|p| !listed.contains(p)))
            }
            // FROM_TRIM_HORIZON: every shard that still holds data.
            _ => Box::new(|_| true),
        })
    }
}
