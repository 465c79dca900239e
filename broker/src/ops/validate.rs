//! Checks shared by the handlers; each error names the member and the constraint it broke,
//! in AWS's wording, with AWS's member paths (`records.3.member.partitionKey`).

use streamfabric_api::ApiError;
#[cfg(test)]
use streamfabric_api::ErrorCode;
use streamfabric_api::limits::*;
use streamfabric_api::names::{stream_name_from_arn, validate_stream_name};

pub fn required<'a, T>(value: &'a Option<T>, field: &str) -> Result<&'a T, ApiError> {
    value.as_ref().ok_or_else(|| ApiError::missing(field))
}

/// The stream an input names by StreamName or StreamARN.
pub fn stream_name(name: &Option<String>, arn: &Option<String>) -> Result<String, ApiError> {
    match (name, arn) {
        (None, None) => Err(ApiError::invalid("Either StreamName or StreamARN must be provided.")),
        (Some(name), None) => {
            validate_stream_name("streamName", name)?;
            Ok(name.clone())
        }
        (name, Some(arn)) => {
            let from_arn = stream_name_from_arn(arn)?;
            if let Some(name) = name.as_deref().filter(|n| *n != from_arn) {
                return Err(ApiError::invalid(format!(
                    "StreamName {name} and StreamARN {arn} name different streams."
                )));
            }
            Ok(from_arn.to_string())
        }
    }
}

/// `field` is formatted only if the key is refused: PutRecords checks every record's key.
pub fn partition_key(field: impl std::fmt::Display, key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::validation(field, key, "Member must have length greater than or equal to 1"));
    }
    // No more bytes than the limit, no more characters: only longer keys are counted.
    if key.len() > MAX_PARTITION_KEY_CHARS && key.chars().count() > MAX_PARTITION_KEY_CHARS {
        return Err(ApiError::validation(
            field,
            key,
            &format!("Member must have length less than or equal to {MAX_PARTITION_KEY_CHARS}"),
        ));
    }
    Ok(())
}

pub fn record_data(field: impl std::fmt::Display, len: usize, max: usize) -> Result<(), ApiError> {
    if len > max {
        return Err(ApiError::validation(
            field,
            format!("<{len} bytes>"),
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// An optional integer member within [min, max]; `default` when absent.
pub fn bounded(field: &str, value: Option<i64>, min: i64, max: i64, default: i64) -> Result<i64, ApiError> {
    let v = value.unwrap_or(default);
    if v < min {
        return Err(ApiError::validation(field, v, &format!("Member must have value greater than or equal to {min}")));
    }
    if v > max {
        return Err(ApiError::validation(field, v, &format!("Member must have value less than or equal to {max}")));
    }
    Ok(v)
}

pub fn retention_hours(value: Option<i64>) -> Result<i64, ApiError> {
    let hours = *required(&value, "retentionPeriodHours")?;
    if hours < 1 {
        return Err(ApiError::validation(
            "retentionPeriodHours",
            hours,
            "Member must have value greater than or equal to 1",
        ));
    }
    if hours < MIN_RETENTION_HOURS {
        return Err(ApiError::invalid(format!(
            "Minimum allowed retention period is {MIN_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is too short."
        )));
    }
    if hours > MAX_RETENTION_HOURS {
        return Err(ApiError::invalid(format!(
            "Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is too long."
        )));
    }
    Ok(hours)
}

/// One tag as AddTagsToStream and CreateStream take it.
pub fn tag(key: &str, value: &str) -> Result<(), ApiError> {
    let key_chars = key.chars().count();
    if key_chars == 0 || key_chars > MAX_TAG_KEY_CHARS {
        return Err(ApiError::validation(
            "tags",
            key,
            &format!("Tag keys must have length between 1 and {MAX_TAG_KEY_CHARS}"),
        ));
    }
    if value.chars().count() > MAX_TAG_VALUE_CHARS {
        return Err(ApiError::validation(
            "tags",
            value,
            &format!("Tag values must have length less than or equal to {MAX_TAG_VALUE_CHARS}"),
        ));
    }
    if key.starts_with("aws:") {
        return Err(ApiError::invalid(format!("Tag key {key} uses the reserved prefix aws:")));
    }
    if key == streamfabric_api::names::COMPRESSION_TAG && value.parse::<crate::tier::Compression>().is_err() {
        return Err(ApiError::invalid(format!("Tag {key} must be zstd, lz4 or none, not {value:?}.")));
    }
    Ok(())
}

pub fn one_of<'a>(field: &str, value: &'a str, allowed: &[&str]) -> Result<&'a str, ApiError> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::validation(
            field,
            value,
            &format!("Member must satisfy enum value set: [{}]", allowed.join(", ")),
        ))
    }
}

/// A change that waits for the stream to be ACTIVE: ResourceInUseException otherwise, naming
/// what was asked (`what`: "delete it", "reshard it", ...).
pub fn active(m: &crate::catalog::meta::StreamMeta, what: &str) -> Result<(), ApiError> {
    if m.status != crate::catalog::meta::StreamStatus::Active {
        return Err(ApiError::in_use(format!("Stream {} is {}; {what} once it is ACTIVE.", m.name, m.status.as_str())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_member_and_the_limit() {
        let e = partition_key("records.3.member.partitionKey", &"k".repeat(257)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Validation);
        assert!(e.message.contains("records.3.member.partitionKey") && e.message.contains("256"), "{}", e.message);
        // 256 multi-byte characters are allowed: the limit counts characters.
        assert!(partition_key("partitionKey", &"é".repeat(256)).is_ok());
        assert!(partition_key("partitionKey", &"é".repeat(257)).unwrap_err().message.contains("256"));
        assert!(partition_key("partitionKey", "").unwrap_err().message.contains("greater than or equal to 1"));
        let e = record_data("data", 1_048_577, 1_048_576).unwrap_err();
        assert!(e.message.contains("data") && e.message.contains("1048576"), "{}", e.message);
        let e = retention_hours(Some(23)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("24"));
        assert_eq!(retention_hours(Some(8761)).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(retention_hours(None).unwrap_err().code, ErrorCode::Validation);
        assert_eq!(bounded("limit", Some(10_001), 1, 10_000, 1).unwrap_err().code, ErrorCode::Validation);
    }

    #[test]
    fn stream_names_and_arns_must_agree() {
        let arn = Some("arn:aws:kinesis:us-east-1:000000000000:stream/a".to_string());
        assert_eq!(stream_name(&None, &arn).unwrap(), "a");
        assert_eq!(stream_name(&Some("a".into()), &arn).unwrap(), "a");
        assert_eq!(stream_name(&Some("b".into()), &arn).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(stream_name(&None, &None).unwrap_err().code, ErrorCode::InvalidArgument);
    }
}
