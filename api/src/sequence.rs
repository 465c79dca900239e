//! Sequence numbers: decimal strings, strictly increasing within a shard, that carry the
//! shard they belong to so that a number from another shard is recognised and refused.
//!
//! Layout: `49` (format marker) + shard index (12 digits) + 22 zeros + record offset (20
//! digits): 56 digits in all, AWS's length (clients and tools check it), sorting correctly
//! as strings. The 34-digit form of earlier versions (no zeros) is still read: checkpoints
//! stored by them stay valid. A shard's start marker (`48` + shard index + zeros) comes
//! before all of its records (`Place`).

use crate::error::ApiError;
use std::fmt;

const MARKER: &str = "49";
const START_MARKER: &str = "48";
const SHARD_DIGITS: usize = 12;
const PADDING: usize = 22;
const OFFSET_DIGITS: usize = 20;
pub(crate) const LEN: usize = MARKER.len() + SHARD_DIGITS + PADDING + OFFSET_DIGITS;
const LEGACY_LEN: usize = LEN - PADDING;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber {
    pub shard_index: u64,
    pub offset: u64,
}

impl SequenceNumber {
    pub fn new(shard_index: u64, offset: u64) -> Self {
        SequenceNumber { shard_index, offset }
    }

    /// Parse a client-supplied sequence number for `field`. A string that breaks AWS's
    /// pattern is a ValidationException; one that fits it but was not issued by us is an
    /// InvalidArgumentException.
    pub fn parse(field: &str, value: &str) -> Result<SequenceNumber, ApiError> {
        let well_formed = value == "0"
            || (!value.is_empty()
                && value.len() <= 129
                && !value.starts_with('0')
                && value.bytes().all(|b| b.is_ascii_digit()));
        if !well_formed {
            return Err(ApiError::validation(
                field,
                value,
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
            ));
        }
        let shard_end = MARKER.len() + SHARD_DIGITS;
        let ours = value.starts_with(MARKER)
            && match value.len() {
                LEN => value[shard_end..shard_end + PADDING].bytes().all(|b| b == b'0'),
                LEGACY_LEN => true,
                _ => false,
            };
        if !ours {
            return Err(ApiError::invalid(format!("{field} {value} is not a sequence number issued by this stream")));
        }
        let shard_index = value[MARKER.len()..shard_end].parse().unwrap_or(0);
        let offset = value[value.len() - OFFSET_DIGITS..].parse().unwrap_or(0);
        Ok(SequenceNumber { shard_index, offset })
    }
}

impl SequenceNumber {
    /// The digits, rendered by hand: the put path renders one per record, and the general
    /// formatting machinery (padding, width) was a tenth of its CPU.
    pub fn digits(&self) -> [u8; LEN] {
        let mut out = [b'0'; LEN];
        out[..MARKER.len()].copy_from_slice(MARKER.as_bytes());
        let mut put = |mut value: u64, end: usize, width: usize| {
            // Leading zeros are already in place: stop at the value's last digit.
            for slot in out[end - width..end].iter_mut().rev() {
                if value == 0 {
                    break;
                }
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(self.shard_index, MARKER.len() + SHARD_DIGITS, SHARD_DIGITS);
        put(self.offset, LEN, OFFSET_DIGITS);
        out
    }

    /// As a String, in one allocation of its exact size: `to_string` would go through the
    /// formatting machinery, once per record of every PutRecords and GetRecords answer.
    pub fn text(&self) -> String {
        String::from_utf8(self.digits().to_vec()).expect("ASCII digits")
    }
}

/// A place in a shard as a reader names it by a sequence number: a record's, or the shard's
/// start, before all of its records. SubscribeToShard gives the start marker as
/// ContinuationSequenceNumber while nothing of the shard has been read, so that
/// AFTER_SEQUENCE_NUMBER with it starts at the first record instead of after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Record(SequenceNumber),
    ShardStart { shard_index: u64 },
}

impl Place {
    pub fn parse(field: &str, value: &str) -> Result<Place, ApiError> {
        let shard_end = START_MARKER.len() + SHARD_DIGITS;
        if value.len() == LEN && value.starts_with(START_MARKER) && value[shard_end..].bytes().all(|b| b == b'0') {
            let digits = &value[START_MARKER.len()..shard_end];
            if let Ok(shard_index) = digits.parse() {
                return Ok(Place::ShardStart { shard_index });
            }
        }
        SequenceNumber::parse(field, value).map(Place::Record)
    }

    /// The start marker of a shard.
    pub fn shard_start(shard_index: u64) -> String {
        format!("{START_MARKER}{shard_index:0w$}{}", "0".repeat(PADDING + OFFSET_DIGITS), w = SHARD_DIGITS)
    }

    pub fn shard_index(&self) -> u64 {
        match self {
            Place::Record(seq) => seq.shard_index,
            Place::ShardStart { shard_index } => *shard_index,
        }
    }

    /// The offset a reader starts from: at this record or after it; at a shard's start, its
    /// first record either way.
    pub fn start_offset(&self, after: bool) -> u64 {
        match self {
            Place::Record(seq) if after => seq.offset + 1,
            Place::Record(seq) => seq.offset,
            Place::ShardStart { .. } => 0,
        }
    }

    /// The record it names, if it names one (a shard's start was issued with the shard).
    pub fn record(&self) -> Option<SequenceNumber> {
        match self {
            Place::Record(seq) => Some(*seq),
            Place::ShardStart { .. } => None,
        }
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.digits()).expect("ASCII digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_and_orders_like_its_string(a in 0u64..1_000_000_000_000, o in any::<u64>(),
                                                  b in 0u64..1_000_000_000_000, p in any::<u64>()) {
            let x = SequenceNumber::new(a, o);
            let y = SequenceNumber::new(b, p);
            prop_assert_eq!(SequenceNumber::parse("s", &x.to_string()).unwrap(), x);
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
            // as integers too (clients such as the KCL compare them as big integers)
            prop_assert_eq!(x.to_string().len(), LEN);
            prop_assert_eq!(x.to_string(), format!("49{a:012}{:022}{o:020}", 0));
            prop_assert_eq!(x.text(), x.to_string());
        }
    }

    #[test]
    fn refuses_malformed_and_foreign_numbers() {
        assert_eq!(SequenceNumber::parse("s", "abc").unwrap_err().code, ErrorCode::Validation);
        assert_eq!(SequenceNumber::parse("s", "007").unwrap_err().code, ErrorCode::Validation);
        let foreign = SequenceNumber::parse("startingSequenceNumber", "123456789").unwrap_err();
        assert_eq!(foreign.code, ErrorCode::InvalidArgument);
        assert!(foreign.message.contains("startingSequenceNumber"));
        // 56 digits whose padding is not zeros: not ours.
        let padded = format!("49{:012}{}{:020}", 3, "1".repeat(PADDING), 7);
        assert_eq!(SequenceNumber::parse("s", &padded).unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn a_shards_start_comes_before_its_records_and_reads_from_the_first() {
        let start = Place::shard_start(7);
        assert_eq!(start.len(), LEN);
        assert!(start < SequenceNumber::new(7, 0).to_string(), "before the first record, as a string and a number");
        let place = Place::parse("s", &start).unwrap();
        assert_eq!(place, Place::ShardStart { shard_index: 7 });
        assert_eq!((place.start_offset(false), place.start_offset(true)), (0, 0));
        let record = Place::parse("s", &SequenceNumber::new(7, 41).to_string()).unwrap();
        assert_eq!((record.start_offset(false), record.start_offset(true)), (41, 42));
        assert_eq!(record.record(), Some(SequenceNumber::new(7, 41)));
        // A marker with anything but zeros after the shard is not ours.
        let bent = format!("48{:012}{:021}1", 7, 0);
        assert_eq!(Place::parse("s", &bent).unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn numbers_of_earlier_versions_still_read() {
        let legacy = format!("49{:012}{:020}", 3, 12_345);
        assert_eq!(SequenceNumber::parse("s", &legacy).unwrap(), SequenceNumber::new(3, 12_345));
        assert_eq!(SequenceNumber::new(3, 12_345).to_string().len(), 56, "AWS's length");
    }
}
