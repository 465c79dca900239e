//! Broker configuration: the settings type lives in `streamfabric_api::settings`, where the
//! operator writes the same type, so the two sides cannot drift.

pub use streamfabric_api::settings::{BrokerConfig, Durability, FlushSetting};
