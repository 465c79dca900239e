//! streamfabric's operator: reconciles DataStream resources into brokers, reports status,
//! and scales shards with write throughput.

pub mod autoscale;
pub mod conditions;
pub mod manifests;

#[cfg(test)]
mod fixtures;
