//! The JSON stats endpoint (its shapes are in `streamfabric_api::stats`).

use crate::broker::Broker;
use streamfabric_api::stats::{BrokerStats, ShardStats, StreamStats};

/// Every shard of every stream; in a cluster, those this broker serves (their counters are
/// its own), so that summing every broker's counts each shard once.
pub fn collect(broker: &Broker) -> BrokerStats {
    let clustered = broker.fabric.is_some();
    let taking = broker.fabric.as_ref().map(|f| f.taking(broker)).unwrap_or_default();
    let streams = broker
        .catalog
        .all()
        .into_iter()
        .map(|stream| {
            let meta = stream.meta();
            let shards = meta
                .shards
                .iter()
                .filter_map(|m| stream.shard(m.index).map(|s| (m, s)))
                .filter(|(_, s)| !clustered || s.is_serving())
                .map(|(m, s)| {
                    let bounds = s.log.bounds();
                    ShardStats {
                        shard_id: s.id.clone(),
                        open: m.closed.is_none(),
                        start_offset: bounds.start_offset,
                        end_offset: bounds.end_offset,
                        incoming_records: s.metrics.incoming_records.get(),
                        incoming_bytes: s.metrics.incoming_bytes.get(),
                        outgoing_records: s.metrics.outgoing_records.get(),
                        outgoing_bytes: s.metrics.outgoing_bytes.get(),
                    }
                })
                .collect();
            let taking = taking.iter().filter(|k| k.stream == meta.name).map(|k| k.shard.clone()).collect();
            StreamStats { name: meta.name, status: meta.status.as_str().to_string(), shards, taking }
        })
        .collect();
    let id = broker.fabric.as_ref().map(|f| f.cluster.broker_id().to_string());
    BrokerStats { broker: id, streams }
}
