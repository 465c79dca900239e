//! The JSON stats endpoint: per stream and shard, what is stored and what went through.
//! The operator's autoscaler reads the counters and derives rates from two samples.

use crate::broker::Broker;
use serde::Serialize;

#[derive(Serialize)]
pub struct BrokerStats {
    pub streams: Vec<StreamStats>,
}

#[derive(Serialize)]
pub struct StreamStats {
    pub name: String,
    pub status: &'static str,
    pub shards: Vec<ShardStats>,
}

#[derive(Serialize)]
pub struct ShardStats {
    pub shard_id: String,
    pub open: bool,
    pub start_offset: u64,
    pub end_offset: u64,
    pub incoming_records: u64,
    pub incoming_bytes: u64,
    pub outgoing_records: u64,
    pub outgoing_bytes: u64,
}

pub fn collect(broker: &Broker) -> BrokerStats {
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
            StreamStats { name: meta.name, status: meta.status.as_str(), shards }
        })
        .collect();
    BrokerStats { streams }
}
