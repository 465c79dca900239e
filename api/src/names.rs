//! Stream names, ARNs and shard ids.

use crate::error::ApiError;

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ACCOUNT: &str = "000000000000";

/// A stream name: 1..128 chars of `[a-zA-Z0-9_.-]`.
/// A stream tagged with this key and the value `true` refuses writes (reads go on): how
/// the operator carries a DataStream's `spec.paused` to its brokers.
pub const PAUSED_TAG: &str = "streamfabric.io/paused";

/// A stream tagged with this key keeps its sealed segments in the object store compressed
/// with the value (`zstd`, `lz4` or `none`) instead of the broker's `--segment-compression`.
pub const COMPRESSION_TAG: &str = "streamfabric.io/compression";

pub fn validate_stream_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::validation(field, name, "Member must have length between 1 and 128"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-') {
        return Err(ApiError::validation(
            field,
            name,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
        ));
    }
    Ok(())
}

pub fn stream_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:kinesis:{region}:{account}:stream/{name}")
}

/// The stream name inside a stream ARN `arn:aws:kinesis:<region>:<account>:stream/<name>`.
pub fn stream_name_from_arn(arn: &str) -> Result<&str, ApiError> {
    let bad = || {
        ApiError::validation(
            "streamARN",
            arn,
            "Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+",
        )
    };
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("kinesis"), Some(_region), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !partition.starts_with("aws") || account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let name = resource.strip_prefix("stream/").ok_or_else(bad)?;
    validate_stream_name("streamARN", name)?;
    Ok(name)
}

/// An enhanced fan-out consumer's ARN, as AWS forms it: its stream's ARN, `/consumer/`, its
/// name, `:` and its creation time in epoch seconds.
pub fn consumer_arn(stream_arn: &str, consumer: &str, created_ms: i64) -> String {
    format!("{stream_arn}/consumer/{consumer}:{}", created_ms / 1000)
}

/// (stream name, consumer name, creation seconds) of a consumer ARN.
pub fn parse_consumer_arn(arn: &str) -> Result<(&str, &str, i64), ApiError> {
    let bad = || {
        ApiError::validation(
            "consumerARN",
            arn,
            "Member must satisfy regular expression pattern: ^(arn):aws.*:kinesis:.*:\\d{12}:.*stream\\/[a-zA-Z0-9_.-]+\\/consumer\\/[a-zA-Z0-9_.-]+:[0-9]+",
        )
    };
    let (stream_part, rest) = arn.split_once("/consumer/").ok_or_else(bad)?;
    let (consumer, seconds) = rest.rsplit_once(':').ok_or_else(bad)?;
    let stream = stream_name_from_arn(stream_part).map_err(|_| bad())?;
    validate_consumer_name("consumerARN", consumer).map_err(|_| bad())?;
    let seconds = seconds.parse().map_err(|_| bad())?;
    Ok((stream, consumer, seconds))
}

/// A consumer name: 1..128 chars of `[a-zA-Z0-9_.-]`, as a stream name.
pub fn validate_consumer_name(field: &str, name: &str) -> Result<(), ApiError> {
    validate_stream_name(field, name)
}

/// `shardId-` + a 12-digit zero-padded index.
pub fn shard_id(index: u64) -> String {
    format!("shardId-{index:012}")
}

/// The index of a shard id; accepts AWS's form and a bare number, as AWS does.
pub fn parse_shard_id(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("shardId-").unwrap_or(id);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_round_trip() {
        let arn = stream_arn(DEFAULT_REGION, DEFAULT_ACCOUNT, "orders.v1");
        assert_eq!(arn, "arn:aws:kinesis:us-east-1:000000000000:stream/orders.v1");
        assert_eq!(stream_name_from_arn(&arn).unwrap(), "orders.v1");
        for bad in [
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:kinesis:us-east-1:12:stream/x",
            "arn:aws:kinesis:r:000000000000:table/x",
        ] {
            assert!(stream_name_from_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("streamName", "a-b_c.1").is_ok());
        let e = validate_stream_name("streamName", "no spaces").unwrap_err();
        assert!(e.message.contains("streamName"));
        assert!(validate_stream_name("streamName", &"x".repeat(129)).is_err());
        assert!(validate_stream_name("streamName", "").is_err());
    }

    #[test]
    fn consumer_arns_round_trip() {
        let stream = stream_arn(DEFAULT_REGION, DEFAULT_ACCOUNT, "orders");
        let arn = consumer_arn(&stream, "billing", 1_616_044_553_123);
        assert_eq!(arn, "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/billing:1616044553");
        assert_eq!(parse_consumer_arn(&arn).unwrap(), ("orders", "billing", 1_616_044_553));
        for bad in [&stream, "arn:aws:kinesis:r:000000000000:stream/o/consumer/b", "x/consumer/b:1"] {
            assert!(parse_consumer_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shard_ids() {
        assert_eq!(shard_id(3), "shardId-000000000003");
        assert_eq!(parse_shard_id("shardId-000000000003"), Some(3));
        assert_eq!(parse_shard_id("3"), Some(3));
        assert_eq!(parse_shard_id("shardId-x"), None);
    }
}
