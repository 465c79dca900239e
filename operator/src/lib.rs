//! streamfabric's operator: reconciles DataStream resources into brokers, reports status,
//! and scales shards with write throughput.

pub mod access;
pub mod admin;
pub mod autoscale;
pub mod conditions;
pub mod controller;
pub mod error;
pub mod kinesis;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod status;
pub mod throughput;
pub mod webhook;

#[cfg(test)]
mod fixtures;
