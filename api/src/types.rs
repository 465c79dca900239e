//! Value types whose encoding depends on the wire format: blobs are base64 strings in
//! JSON and byte strings in CBOR; timestamps are epoch seconds in JSON and epoch
//! milliseconds in CBOR (what the Java SDK writes and expects).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// Opaque record data.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Bytes);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&BASE64.encode(&self.0)) } else { s.serialize_bytes(&self.0) }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BlobVisitor;
        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a base64 string or a byte string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
                BASE64.decode(v).map(|b| Blob(Bytes::from(b))).map_err(|_| E::custom("Data is not valid base64"))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(Bytes::from(v)))
            }
        }
        d.deserialize_any(BlobVisitor)
    }
}

/// A point in time, kept as epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }
    pub fn millis(self) -> i64 {
        self.0
    }
}

/// Integers above this in CBOR are milliseconds (10^11 s is the year 5138; 10^11 ms is 1973).
const CBOR_MILLIS_THRESHOLD: i64 = 100_000_000_000;

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_f64(self.0 as f64 / 1000.0) } else { s.serialize_i64(self.0) }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Clone, Copy)]
        struct TsVisitor {
            human: bool,
        }
        impl<'de> de::DeserializeSeed<'de> for TsVisitor {
            type Value = Timestamp;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Timestamp, D::Error> {
                d.deserialize_any(self)
            }
        }
        impl<'de> Visitor<'de> for TsVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an epoch timestamp")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                if !v.is_finite() || v < 0.0 {
                    return Err(E::custom("timestamp must be a non-negative epoch number"));
                }
                Ok(Timestamp((v * 1000.0).round() as i64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                if v < 0 {
                    return Err(E::custom("timestamp must be a non-negative epoch number"));
                }
                if !self.human && v > CBOR_MILLIS_THRESHOLD {
                    Ok(Timestamp(v))
                } else {
                    Ok(Timestamp(v.saturating_mul(1000)))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                self.visit_i64(i64::try_from(v).map_err(|_| E::custom("timestamp out of range"))?)
            }
            // CBOR's tag 1 (epoch date-time) reaches us as a one-variant enum.
            fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Timestamp, A::Error> {
                use de::VariantAccess;
                let (_tag, value) = data.variant::<de::IgnoredAny>()?;
                value.newtype_variant_seed(self)
            }
        }
        let human = d.is_human_readable();
        d.deserialize_any(TsVisitor { human })
    }
}
