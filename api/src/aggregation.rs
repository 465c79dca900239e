//! The KPL's aggregated record format (aggregation-format.md in the KPL repository): many
//! small user records in one Kinesis record, which KPL-aware consumers (the KCL, the
//! sidecar's consumer, the load generator's verification) split again.
//!
//! ```text
//! magic  F3 89 9A C2
//! body   protobuf AggregatedRecord {
//!          repeated string partition_key_table     = 1;
//!          repeated string explicit_hash_key_table = 2;
//!          repeated Record records                 = 3;   // Record {
//!        }                                                //   required uint64 partition_key_index     = 1;
//!                                                         //   optional uint64 explicit_hash_key_index = 2;
//!                                                         //   required bytes  data                    = 3;
//!                                                         //   repeated Tag    tags                    = 4; }
//! md5    16 bytes, MD5 of the body
//! ```
//!
//! The body is written as protobuf serialises it (fields in number order, tables in order
//! of first use), so an aggregate is byte for byte what the KPL writes for the same records.

use bytes::{Buf, Bytes};
use md5::{Digest, Md5};
use std::collections::HashMap;

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;
/// The KPL's default `AggregationMaxSize`: an aggregate stays at most this many bytes.
pub const DEFAULT_MAX_BYTES: usize = 51_200;

/// One user record inside an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
}

/// An aggregate being filled; `encoded_len` is exact at every step, so a caller can stop
/// before a record would take it past a size.
#[derive(Debug, Default)]
pub struct Aggregate {
    partition_keys: KeyTable,
    explicit_hash_keys: KeyTable,
    /// Per record: partition key index, explicit hash key index, data.
    records: Vec<(u64, Option<u64>, Bytes)>,
    body_len: usize,
}

impl Aggregate {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Bytes of the whole aggregate as it stands (magic, body, digest).
    pub fn encoded_len(&self) -> usize {
        MAGIC.len() + self.body_len + DIGEST_LEN
    }

    /// Bytes of the whole aggregate once `record` is added.
    pub fn encoded_len_with(&self, record: &SubRecord) -> usize {
        self.encoded_len() + self.growth(record)
    }

    pub fn push(&mut self, record: SubRecord) {
        self.body_len += self.growth(&record);
        let pk = self.partition_keys.index_of(record.partition_key);
        let ehk = record.explicit_hash_key.map(|k| self.explicit_hash_keys.index_of(k));
        self.records.push((pk, ehk, record.data));
    }

    /// Body bytes `record` adds: new table entries and its Record message.
    fn growth(&self, record: &SubRecord) -> usize {
        let mut grows = 0;
        let pk = self.partition_keys.potential_index(&record.partition_key, &mut grows);
        let ehk = record.explicit_hash_key.as_deref().map(|k| self.explicit_hash_keys.potential_index(k, &mut grows));
        grows + field_len(record_len(pk, ehk, record.data.len()))
    }

    pub fn encode(&self) -> Bytes {
        let mut body = Vec::with_capacity(self.body_len);
        for key in &self.partition_keys.keys {
            put_bytes(&mut body, 1, key.as_bytes());
        }
        for key in &self.explicit_hash_keys.keys {
            put_bytes(&mut body, 2, key.as_bytes());
        }
        for (pk, ehk, data) in &self.records {
            put_tag(&mut body, 3, WIRE_LEN);
            put_varint(&mut body, record_len(*pk, *ehk, data.len()) as u64);
            put_tag(&mut body, 1, WIRE_VARINT);
            put_varint(&mut body, *pk);
            if let Some(ehk) = ehk {
                put_tag(&mut body, 2, WIRE_VARINT);
                put_varint(&mut body, *ehk);
            }
            put_bytes(&mut body, 3, data);
        }
        debug_assert_eq!(body.len(), self.body_len);
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        Bytes::from(out)
    }
}

/// Strings in order of first use, each with its index.
#[derive(Debug, Default)]
struct KeyTable {
    keys: Vec<String>,
    index: HashMap<String, u64>,
}

impl KeyTable {
    /// The index `key` has or would get; a new key's table entry counts into `grows`.
    fn potential_index(&self, key: &str, grows: &mut usize) -> u64 {
        match self.index.get(key) {
            Some(&i) => i,
            None => {
                *grows += field_len(key.len());
                self.keys.len() as u64
            }
        }
    }

    fn index_of(&mut self, key: String) -> u64 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.keys.len() as u64;
        self.index.insert(key.clone(), i);
        self.keys.push(key);
        i
    }
}

/// The user records of `data` if it is an aggregate whose digest matches; otherwise None
/// (a plain record, as the KCL also treats a damaged aggregate).
pub fn deaggregate(data: &Bytes) -> Option<Vec<SubRecord>> {
    if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let body = data.slice(MAGIC.len()..data.len() - DIGEST_LEN);
    if Md5::digest(&body)[..] != data[data.len() - DIGEST_LEN..] {
        return None;
    }
    let (mut partition_keys, mut explicit_hash_keys, mut records) = (Vec::new(), Vec::new(), Vec::new());
    let mut fields = Fields(body);
    while let Some(field) = fields.next_field()? {
        match field {
            (1, Value::Bytes(b)) => partition_keys.push(String::from_utf8(b.to_vec()).ok()?),
            (2, Value::Bytes(b)) => explicit_hash_keys.push(String::from_utf8(b.to_vec()).ok()?),
            (3, Value::Bytes(b)) => records.push(b),
            (1..=3, _) => return None,
            _ => {} // unknown fields are skipped, as protobuf readers do
        }
    }
    records
        .into_iter()
        .map(|record| {
            let (mut pk, mut ehk, mut data) = (None, None, None);
            let mut fields = Fields(record);
            while let Some(field) = fields.next_field()? {
                match field {
                    (1, Value::Varint(i)) => pk = Some(i),
                    (2, Value::Varint(i)) => ehk = Some(i),
                    (3, Value::Bytes(b)) => data = Some(b),
                    (1..=3, _) => return None,
                    _ => {} // tags (4) and unknown fields
                }
            }
            Some(SubRecord {
                partition_key: partition_keys.get(usize::try_from(pk?).ok()?)?.clone(),
                explicit_hash_key: match ehk {
                    Some(i) => Some(explicit_hash_keys.get(usize::try_from(i).ok()?)?.clone()),
                    None => None,
                },
                data: data?,
            })
        })
        .collect()
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// A length-delimited field (one-byte tag) with `len` bytes of content.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// The content length of one Record message.
fn record_len(pk: u64, ehk: Option<u64>, data_len: usize) -> usize {
    1 + varint_len(pk) + ehk.map_or(0, |i| 1 + varint_len(i)) + field_len(data_len)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push(field << 3 | wire);
}

fn put_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    put_tag(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

enum Value {
    Varint(u64),
    Bytes(Bytes),
    Fixed,
}

/// Protobuf fields off a buffer; `Some(None)` at its end, `None` when it is malformed.
struct Fields(Bytes);

impl Fields {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            if !self.0.has_remaining() {
                return None;
            }
            let b = self.0.get_u8();
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn next_field(&mut self) -> Option<Option<(u64, Value)>> {
        if !self.0.has_remaining() {
            return Some(None);
        }
        let key = self.varint()?;
        let value = match (key & 7) as u8 {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_LEN => {
                let len = usize::try_from(self.varint()?).ok().filter(|&l| l <= self.0.len())?;
                Value::Bytes(self.0.split_to(len))
            }
            WIRE_FIXED64 if self.0.len() >= 8 => {
                self.0.advance(8);
                Value::Fixed
            }
            WIRE_FIXED32 if self.0.len() >= 4 => {
                self.0.advance(4);
                Value::Fixed
            }
            _ => return None,
        };
        Some(Some((key >> 3, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EHK: &str = "170141183460469231731687303715884105728";

    fn sub(pk: &str, ehk: Option<&str>, data: &[u8]) -> SubRecord {
        SubRecord {
            partition_key: pk.into(),
            explicit_hash_key: ehk.map(String::from),
            data: Bytes::copy_from_slice(data),
        }
    }

    fn example() -> Vec<SubRecord> {
        let counting: Vec<u8> = (0..20).collect();
        vec![
            sub("alpha", None, b"first record"),
            sub("beta", Some(EHK), b"second"),
            sub("alpha", None, &counting),
            sub("gamma", Some(EHK), b""),
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes awslabs' aws-kinesis-agg 1.2.3 (PyPI; protobuf 7.36) produces for the same
    /// four records added in the same order, as the KPL would: the partition keys alpha,
    /// beta, gamma and one explicit hash key in the tables, then the records, then the MD5.
    #[test]
    fn an_aggregate_is_byte_for_byte_the_kpl_format() {
        let expected = "f3899ac20a05616c7068610a04626574610a0567616d6d61122731373031343131383334363034363932333137333136383733303337313538383431303537\
                        32381a1008001a0c6669727374207265636f72641a0c080110001a067365636f6e641a1808001a14000102030405060708090a0b0c0d0e0f10111213\
                        1a06080210001a00898cd974cb8cb4c3a864832021f92462";
        let mut aggregate = Aggregate::default();
        for r in example() {
            let expected_len = aggregate.encoded_len_with(&r);
            aggregate.push(r);
            assert_eq!(aggregate.encoded_len(), expected_len, "the size is known before adding");
            assert_eq!(aggregate.encode().len(), expected_len, "and is exact");
        }
        assert_eq!(hex(&aggregate.encode()), expected);
    }

    #[test]
    fn deaggregation_gives_back_every_record_in_order() {
        let mut aggregate = Aggregate::default();
        example().into_iter().for_each(|r| aggregate.push(r));
        assert_eq!(deaggregate(&aggregate.encode()), Some(example()));
        // Many records, keys past one-byte indexes.
        let many: Vec<SubRecord> = (0..300).map(|i| sub(&format!("k{}", i % 150), None, &[i as u8; 3])).collect();
        let mut aggregate = Aggregate::default();
        many.iter().cloned().for_each(|r| aggregate.push(r));
        let encoded = aggregate.encode();
        assert_eq!(encoded.len(), aggregate.encoded_len());
        assert_eq!(deaggregate(&encoded), Some(many));
    }

    #[test]
    fn plain_and_damaged_records_are_not_aggregates() {
        assert_eq!(deaggregate(&Bytes::from_static(b"just a record")), None);
        let mut aggregate = Aggregate::default();
        example().into_iter().for_each(|r| aggregate.push(r));
        let mut damaged = aggregate.encode().to_vec();
        damaged[10] ^= 1;
        assert_eq!(deaggregate(&Bytes::from(damaged)), None, "the digest no longer matches");
        // A well-formed digest over a body that indexes past its table.
        let body = [0x1a, 0x04, 0x08, 0x05, 0x1a, 0x00];
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&body);
        forged.extend_from_slice(&Md5::digest(body));
        assert_eq!(deaggregate(&Bytes::from(forged)), None);
    }
}
