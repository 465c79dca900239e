//! AWS's documented limits, one source for validation and for defaults.

pub const MAX_PARTITION_KEY_CHARS: usize = 256;
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
pub const MAX_PUT_RECORDS_ENTRIES: usize = 500;
pub const MAX_PUT_RECORDS_BYTES: usize = 5 * 1024 * 1024;
/// PutRecords' limit for a stream whose MaxRecordSizeInKiB is above 1 MiB.
pub const MAX_LARGE_PUT_RECORDS_BYTES: usize = 10 * 1024 * 1024;
/// The largest MaxRecordSizeInKiB, in bytes.
pub const MAX_LARGE_RECORD_BYTES: usize = 10 * 1024 * 1024;
pub const MIN_RETENTION_HOURS: i64 = 24;
pub const MAX_RETENTION_HOURS: i64 = 8760;
pub const DEFAULT_RETENTION_HOURS: i64 = 24;
pub const MAX_GET_RECORDS_LIMIT: i64 = 10_000;
pub const MAX_GET_RECORDS_BYTES: usize = 10 * 1024 * 1024;
pub const MAX_LIST_SHARDS_RESULTS: i64 = 10_000;
/// UpdateShardCount's TargetShardCount upper bound.
pub const MAX_UPDATE_SHARD_COUNT_TARGET: i64 = 100_000;
pub const MAX_LIST_STREAMS_LIMIT: i64 = 10_000;
pub const MAX_DESCRIBE_STREAM_LIMIT: i64 = 10_000;
pub const MAX_TAGS_PER_STREAM: usize = 50;
/// Enhanced fan-out consumers registered per stream.
pub const MAX_CONSUMERS_PER_STREAM: usize = 20;
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 256;
pub const SHARD_ITERATOR_TTL_SECS: i64 = 300;
pub const DEFAULT_SHARD_LIMIT: i64 = 500;
pub const DEFAULT_ON_DEMAND_SHARDS: u32 = 4;
pub const ON_DEMAND_STREAM_LIMIT: i64 = 50;
