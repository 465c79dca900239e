//! Value types whose encoding depends on the wire format: blobs are base64 strings in
//! JSON and byte strings in CBOR; timestamps are epoch seconds in JSON and epoch
//! milliseconds in CBOR (what the Java SDK writes and expects).

use base64_simd::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::cell::RefCell;
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
        if s.is_human_readable() {
            s.serialize_str(&BASE64.encode_to_string(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// `text`: bytes handed over are base64 text (a JSON string taken as bytes), not data.
        struct BlobVisitor {
            text: bool,
        }
        fn decode<E: de::Error>(text: &[u8]) -> Result<Blob, E> {
            // Vectorised (base64-simd): record data is most of a JSON PutRecords body.
            let decoded = BASE64.decode_to_vec(text).map_err(|_| E::custom("Data is not valid base64"))?;
            Ok(Blob(Bytes::from(decoded)))
        }
        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a base64 string or a byte string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
                decode(v.as_bytes())
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                if self.text {
                    decode(v)
                } else {
                    Ok(Blob(SharedBody::slice(v).unwrap_or_else(|| Bytes::copy_from_slice(v))))
                }
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                if self.text { decode(&v) } else { Ok(Blob(Bytes::from(v))) }
            }
        }
        if d.is_human_readable() {
            // A JSON string as bytes skips its UTF-8 check: base64 decoding refuses anything
            // but its 65 ASCII characters anyway.
            d.deserialize_bytes(BlobVisitor { text: true })
        } else {
            d.deserialize_any(BlobVisitor { text: false })
        }
    }
}

thread_local! {
    /// The body `Format::decode_shared` is reading on this thread, if any.
    static SHARED_BODY: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// While this lives, CBOR byte strings (record data) that lie in the body are kept as slices
/// of it instead of copies: a CBOR PutRecords then allocates and copies no record data (a
/// sixth to a third of its decoding time). The records keep the whole body alive together,
/// until the last of them is dropped (once appended). Base64 text is decoded as before: into
/// one buffer for all the records it cost more than it saved on small records.
pub(crate) struct SharedBody(());

impl SharedBody {
    pub(crate) fn enter(body: &Bytes) -> SharedBody {
        SHARED_BODY.with_borrow_mut(|current| *current = Some(body.clone()));
        SharedBody(())
    }

    /// `bytes` as a slice of the shared body, if they lie in it.
    fn slice(bytes: &[u8]) -> Option<Bytes> {
        SHARED_BODY.with_borrow(|body| {
            let body = body.as_ref()?;
            let range = body.as_ptr_range();
            let inside = range.start <= bytes.as_ptr() && bytes.as_ptr_range().end <= range.end;
            inside.then(|| body.slice_ref(bytes))
        })
    }
}

impl Drop for SharedBody {
    fn drop(&mut self) {
        SHARED_BODY.with_borrow_mut(|current| *current = None);
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as SCALAR;
    use proptest::prelude::*;

    fn decode(text: &str) -> Option<Vec<u8>> {
        let json = serde_json::to_string(text).unwrap();
        serde_json::from_str::<Blob>(&json).ok().map(|b| b.0.to_vec())
    }

    #[test]
    fn blob_refuses_what_is_not_a_base64_string() {
        for json in ["[104, 105]", "12", "null", "{}", "\"\\u00e9\""] {
            assert!(serde_json::from_str::<Blob>(json).is_err(), "{json}");
        }
        assert!(serde_json::from_slice::<Blob>(b"\"aGk\xff\"").is_err());
        // Escaped characters are unescaped first, as before.
        assert_eq!(serde_json::from_str::<Blob>("\"aG\\u0073=\"").unwrap().0.as_ref(), b"hk");
        // From a serde_json::Value as from text.
        let value = serde_json::json!("aGk=");
        assert_eq!(serde_json::from_value::<Blob>(value).unwrap().0.as_ref(), b"hi");
    }

    #[test]
    fn blob_base64_is_strict_as_before() {
        for (text, expected) in [
            ("", Some(vec![])),
            ("aGk=", Some(b"hi".to_vec())),
            ("aGk", None),   // padding required
            ("aGl=", None),  // non-zero trailing bits
            ("aG k=", None), // no whitespace inside
            ("a-_=", None),  // not the URL-safe alphabet
            ("aGk==", None), // too much padding
            ("====", None),
        ] {
            assert_eq!(decode(text), expected, "{text:?}");
            assert_eq!(SCALAR.decode(text).ok(), expected, "the scalar decoder on {text:?}");
        }
    }

    proptest! {
        /// Whatever the text, the vectorised decoder agrees with the scalar one it replaced.
        #[test]
        fn blob_decoding_agrees_with_the_scalar_decoder(text in "[A-Za-z0-9+/=_ -]{0,80}") {
            prop_assert_eq!(decode(&text), SCALAR.decode(&text).ok());
        }

        /// Near misses: a valid encoding with one character replaced (trailing bits, padding).
        #[test]
        fn blob_near_misses_agree(data in proptest::collection::vec(any::<u8>(), 1..100), at in any::<prop::sample::Index>(), c in "[A-Za-z0-9+/=]") {
            let mut text: Vec<char> = SCALAR.encode(&data).chars().collect();
            let i = at.index(text.len());
            text[i] = c.chars().next().unwrap();
            let text: String = text.into_iter().collect();
            prop_assert_eq!(decode(&text), SCALAR.decode(&text).ok());
        }

        #[test]
        fn blob_round_trips(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let json = serde_json::to_string(&Blob(Bytes::from(data.clone()))).unwrap();
            prop_assert_eq!(&json[1..json.len() - 1], SCALAR.encode(&data));
            prop_assert_eq!(decode(&SCALAR.encode(&data)), Some(data));
        }
    }
}
