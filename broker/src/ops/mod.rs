//! One handler per Kinesis operation, as methods of `Broker`, grouped by what they touch.

mod records;
mod reads;
mod shards;
mod streams;
mod tags;
pub mod validate;
