//! One handler per Kinesis operation, as methods of `Broker`, grouped by what they touch.

mod consumers;
mod leases;
mod monitoring;
mod policies;
mod reads;
mod records;
mod reshard;
mod settings;
mod shards;
mod streams;
mod subscribe;
mod tags;
pub mod validate;
