//! The Kinesis Data Streams wire model shared by streamfabric's binaries: operations and
//! their shapes, error codes, the JSON 1.1 / CBOR 1.1 codecs, hash keys and sequence numbers;
//! and the broker's settings, which the broker reads and the operator writes.

pub mod aggregation;
pub mod codec;
#[cfg(feature = "crd")]
pub mod crd;
pub mod error;
pub mod hashkey;
pub mod leases;
pub mod limits;
pub mod model;
pub mod names;
pub mod owners;
pub mod policy;
pub mod put_records_answer;
pub mod records_answer;
pub mod sequence;
pub mod settings;
pub mod sigv4;
pub mod stats;
pub mod types;

pub use codec::Format;
pub use error::{ApiError, ErrorCode, Violations};
