//! A stream's open shards and their hash key ranges (from ListShards), so the producer
//! knows which records share a shard: only those may share an aggregate, since consumers
//! drop the sub-records of an aggregate that fall outside the shard it landed on; and the
//! broker serving each (DescribeShardOwners), so records go straight to it.

use crate::broker::{Brokers, CallError};
use std::collections::HashMap;
use std::time::Duration;
use streamfabric_api::hashkey::{HashRange, hash_of_partition_key};
use streamfabric_api::model::{ListShardsInput, ListShardsOutput};
use streamfabric_api::owners::{
    CLUSTER_TARGET_PREFIX, DESCRIBE_SHARD_OWNERS, DescribeShardOwnersInput, DescribeShardOwnersOutput,
};
use tokio::time::Instant;

/// A map older than this is read again before use (a reshard elsewhere is noticed within it,
/// and at once when a record lands on a shard other than the one predicted).
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// ListShards pages followed at most.
const MAX_PAGES: usize = 20;

#[derive(Debug, Clone)]
pub struct ShardMap {
    /// Open shards, by starting hash key.
    shards: Vec<(HashRange, String)>,
    /// Each shard's broker (`host:port`), where the brokers form a cluster.
    owners: HashMap<String, String>,
    pub loaded: Instant,
    max_age: Duration,
}

impl ShardMap {
    pub fn new(mut shards: Vec<(HashRange, String)>) -> ShardMap {
        shards.sort_by_key(|(range, _)| range.start);
        ShardMap { shards, owners: HashMap::new(), loaded: Instant::now(), max_age: MAX_AGE }
    }

    /// No shards known (ListShards failed): records go unaggregated to the endpoint, and
    /// the map is read again after a second.
    pub fn unknown() -> ShardMap {
        ShardMap { max_age: Duration::from_secs(1), ..ShardMap::new(Vec::new()) }
    }

    /// The broker serving `shard`, if known.
    pub fn owner_of(&self, shard: &str) -> Option<&str> {
        self.owners.get(shard).map(String::as_str)
    }

    /// The open shards of `stream`.
    pub async fn load(brokers: &Brokers, stream: &str) -> Result<ShardMap, CallError> {
        let mut input = ListShardsInput { stream_name: Some(stream.to_string()), ..Default::default() };
        let mut shards = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: ListShardsOutput = brokers.call("ListShards", &input).await?;
            for shard in page.shards.into_iter().filter(|s| s.sequence_number_range.ending_sequence_number.is_none()) {
                let range = &shard.hash_key_range;
                if let (Ok(start), Ok(end)) = (range.starting_hash_key.parse(), range.ending_hash_key.parse()) {
                    shards.push((HashRange { start, end }, shard.shard_id));
                }
            }
            match page.next_token {
                Some(token) => input = ListShardsInput { next_token: Some(token), ..Default::default() },
                None => break,
            }
        }
        let mut map = ShardMap::new(shards);
        // Brokers that are not streamfabric's (or not a cluster) name no owners: everything
        // then goes to the endpoint.
        let input = DescribeShardOwnersInput { stream_name: Some(stream.to_string()), stream_arn: None };
        let target = format!("{CLUSTER_TARGET_PREFIX}{DESCRIBE_SHARD_OWNERS}");
        if let Ok(out) = brokers.call_target::<_, DescribeShardOwnersOutput>(&target, &input).await {
            map.owners = out.shards.into_iter().map(|o| (o.shard_id, o.address)).collect();
        }
        Ok(map)
    }

    pub fn is_fresh(&self) -> bool {
        self.loaded.elapsed() < self.max_age
    }

    /// The shard a record goes to, as the brokers route it.
    pub fn shard_of(&self, hash_key: u128) -> Option<&str> {
        let at = self.shards.partition_point(|(range, _)| range.start <= hash_key);
        let (range, id) = self.shards.get(at.checked_sub(1)?)?;
        range.contains(hash_key).then_some(id.as_str())
    }
}

/// A record's hash key: its explicit hash key, else the MD5 of its partition key.
pub fn hash_key_of(partition_key: &str, explicit_hash_key: Option<&str>) -> u128 {
    explicit_hash_key.and_then(|k| k.parse().ok()).unwrap_or_else(|| hash_of_partition_key(partition_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_map_to_the_open_shard_holding_their_hash_key() {
        let ranges = HashRange::uniform(3);
        let map = ShardMap::new(ranges.iter().enumerate().rev().map(|(i, r)| (*r, format!("shard-{i}"))).collect());
        assert_eq!(map.shard_of(0), Some("shard-0"));
        assert_eq!(map.shard_of(ranges[1].start), Some("shard-1"));
        assert_eq!(map.shard_of(ranges[1].start - 1), Some("shard-0"));
        assert_eq!(map.shard_of(u128::MAX), Some("shard-2"));
        // A hole (a map read mid-reshard) maps to no shard rather than a wrong one.
        let holed = ShardMap::new(vec![(ranges[0], "a".into()), (ranges[2], "c".into())]);
        assert_eq!(holed.shard_of(ranges[1].start), None);
        assert_eq!(hash_key_of("k", Some("42")), 42);
        assert_eq!(hash_key_of("k", None), hash_of_partition_key("k"));
    }
}
