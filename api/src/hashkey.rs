//! Routing: a partition key's MD5 as a 128-bit hash key, explicit hash keys, and ranges.

use crate::error::ApiError;
use md5::{Digest, Md5};

/// The hash key of a partition key: MD5 of its UTF-8 bytes, big-endian.
pub fn hash_of_partition_key(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

/// Parse an ExplicitHashKey: a decimal `0|[1-9]\d{0,38}` no greater than 2^128-1.
pub fn parse_explicit_hash_key(field: impl std::fmt::Display, value: &str) -> Result<u128, ApiError> {
    let well_formed = value == "0"
        || (!value.is_empty()
            && value.len() <= 39
            && !value.starts_with('0')
            && value.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(ApiError::validation(
            field,
            value,
            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
        ));
    }
    value.parse::<u128>().map_err(|_| {
        ApiError::invalid(format!(
            "Invalid {field}. {field} must be in the range: [0, 2^128-1]. Specified value was {value}"
        ))
    })
}

/// An inclusive range of hash keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashRange {
    pub start: u128,
    pub end: u128,
}

impl HashRange {
    pub const FULL: HashRange = HashRange { start: 0, end: u128::MAX };

    pub fn contains(&self, key: u128) -> bool {
        self.start <= key && key <= self.end
    }

    /// Split the full key space into `n` contiguous ranges as AWS does for a new stream:
    /// range i starts at i * floor(2^128 / n); the last range ends at 2^128 - 1.
    pub fn uniform(n: u32) -> Vec<HashRange> {
        assert!(n > 0, "a stream has at least one shard");
        let n = n as u128;
        if n == 1 {
            return vec![HashRange::FULL];
        }
        // floor(2^128 / n) without overflowing: 2^128 = u128::MAX + 1.
        let step = u128::MAX / n + u128::from(u128::MAX % n == n - 1);
        (0..n)
            .map(|i| HashRange { start: i * step, end: if i + 1 == n { u128::MAX } else { (i + 1) * step - 1 } })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn md5_matches_known_vectors() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_of_partition_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_of_partition_key("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn explicit_hash_key_bounds() {
        assert_eq!(parse_explicit_hash_key("k", "0").unwrap(), 0);
        assert_eq!(parse_explicit_hash_key("k", "340282366920938463463374607431768211455").unwrap(), u128::MAX);
        let over = parse_explicit_hash_key("k", "340282366920938463463374607431768211456").unwrap_err();
        assert_eq!(over.code, crate::ErrorCode::InvalidArgument);
        for bad in ["", "01", "-1", "1a", "1234567890123456789012345678901234567890"] {
            let e = parse_explicit_hash_key("explicitHashKey", bad).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::Validation, "{bad}");
            assert!(e.message.contains("explicitHashKey"));
        }
    }

    #[test]
    fn uniform_ranges_match_aws() {
        let three = HashRange::uniform(3);
        assert_eq!(three[0].end, 113427455640312821154458202477256070484);
        assert_eq!(three[1].start, 113427455640312821154458202477256070485);
        assert_eq!(three[1].end, 226854911280625642308916404954512140969);
        let four = HashRange::uniform(4);
        assert_eq!(four[0].end, (1u128 << 126) - 1);
        assert_eq!(four[3].start, 3u128 << 126);
    }

    proptest! {
        #[test]
        fn uniform_ranges_tile_the_key_space(n in 1u32..2000) {
            let ranges = HashRange::uniform(n);
            prop_assert_eq!(ranges.len(), n as usize);
            prop_assert_eq!(ranges[0].start, 0);
            prop_assert_eq!(ranges.last().unwrap().end, u128::MAX);
            for w in ranges.windows(2) {
                prop_assert!(w[0].start <= w[0].end);
                prop_assert_eq!(w[0].end + 1, w[1].start);
            }
        }
    }
}
