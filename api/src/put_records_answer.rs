//! A PutRecords answer as the broker encodes it: the shape of `PutRecordsOutput`, each entry
//! serialised from its shard and offset. Built as `PutRecordsOutput`, an answer took two
//! Strings per record (the sequence number and a copy of the shard id), allocated and freed
//! once per record of every PutRecords; here the sequence number is rendered on the stack and
//! the shard id is borrowed. `Format::encode` of either is the same bytes, and so is `encode`,
//! which writes JSON and CBOR directly.

use crate::codec::Format;
use crate::error::ApiError;
use crate::model::{PutRecordsOutput, PutRecordsResultEntry};
use crate::sequence::{self, SequenceNumber};
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

/// A shard a write went to: its index (for sequence numbers) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenShard {
    pub index: u64,
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct PutRecordsAnswer {
    pub shards: Vec<WrittenShard>,
    /// Per record, in request order: its shard (a position in `shards`) and offset, or why it
    /// was not stored.
    pub records: Vec<Result<(usize, u64), ApiError>>,
    pub encryption_type: String,
}

impl PutRecordsAnswer {
    pub fn failed_record_count(&self) -> i64 {
        self.records.iter().filter(|r| r.is_err()).count() as i64
    }

    /// The same answer as the model type (to merge the parts of a split request).
    pub fn into_output(self) -> PutRecordsOutput {
        let failed_record_count = self.failed_record_count();
        let shards = self.shards;
        let records = self
            .records
            .into_iter()
            .map(|record| match record {
                Ok((s, offset)) => PutRecordsResultEntry {
                    sequence_number: Some(SequenceNumber::new(shards[s].index, offset).text()),
                    shard_id: Some(shards[s].id.clone()),
                    ..Default::default()
                },
                Err(e) => PutRecordsResultEntry {
                    error_code: Some(e.code.as_entry_code().as_str().into()),
                    error_message: Some(e.message),
                    ..Default::default()
                },
            })
            .collect();
        PutRecordsOutput { failed_record_count, records, encryption_type: self.encryption_type }
    }

    /// The answer's body: the same bytes as `format.encode(self)`, written directly.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => self.encode_json(),
            Format::Cbor => self.encode_cbor(),
        }
    }

    /// CBOR written directly, as ciborium writes the model type (definite lengths, shortest
    /// heads): each shard's part of a success entry is written once, as in `encode_json`.
    fn encode_cbor(&self) -> Vec<u8> {
        let endings: Vec<Vec<u8>> = self
            .shards
            .iter()
            .map(|shard| {
                let mut ending = Vec::new();
                cbor_text(&mut ending, "ShardId");
                cbor_text(&mut ending, &shard.id);
                ending
            })
            .collect();
        let longest = endings.iter().map(Vec::len).max().unwrap_or(0);
        let mut out = Vec::with_capacity(64 + self.records.len() * (20 + sequence::LEN + longest));
        cbor_head(&mut out, CBOR_MAP, 3);
        cbor_text(&mut out, "FailedRecordCount");
        cbor_head(&mut out, CBOR_UNSIGNED, self.failed_record_count() as u64);
        cbor_text(&mut out, "Records");
        cbor_head(&mut out, CBOR_ARRAY, self.records.len() as u64);
        for record in &self.records {
            cbor_head(&mut out, CBOR_MAP, 2);
            match record {
                Ok((s, offset)) => {
                    cbor_text(&mut out, "SequenceNumber");
                    cbor_head(&mut out, CBOR_TEXT, sequence::LEN as u64);
                    out.extend_from_slice(&SequenceNumber::new(self.shards[*s].index, *offset).digits());
                    out.extend_from_slice(&endings[*s]);
                }
                Err(e) => {
                    cbor_text(&mut out, "ErrorCode");
                    cbor_text(&mut out, e.code.as_entry_code().as_str());
                    cbor_text(&mut out, "ErrorMessage");
                    cbor_text(&mut out, &e.message);
                }
            }
        }
        cbor_text(&mut out, "EncryptionType");
        cbor_text(&mut out, &self.encryption_type);
        out
    }

    /// serde_json checks every byte of every string it writes for characters to escape (3% of
    /// a broker's CPU under 100 B PutRecords). A success entry is digits and its shard's id, so
    /// each shard's part of the entry is escaped once and the digits are copied as they are.
    fn encode_json(&self) -> Vec<u8> {
        let json = |out: &mut Vec<u8>, text: &str| serde_json::to_writer(out, text).expect("a string encodes");
        // `","ShardId":"shardId-000000000001"}`, which ends each success entry of that shard.
        let endings: Vec<Vec<u8>> = self
            .shards
            .iter()
            .map(|shard| {
                let mut ending = b"\",\"ShardId\":".to_vec();
                json(&mut ending, &shard.id);
                ending.push(b'}');
                ending
            })
            .collect();
        let longest = endings.iter().map(Vec::len).max().unwrap_or(0);
        let mut out = Vec::with_capacity(64 + self.records.len() * (20 + sequence::LEN + longest));
        out.extend_from_slice(
            format!("{{\"FailedRecordCount\":{},\"Records\":[", self.failed_record_count()).as_bytes(),
        );
        for (i, record) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match record {
                Ok((s, offset)) => {
                    out.extend_from_slice(b"{\"SequenceNumber\":\"");
                    out.extend_from_slice(&SequenceNumber::new(self.shards[*s].index, *offset).digits());
                    out.extend_from_slice(&endings[*s]);
                }
                Err(e) => {
                    out.extend_from_slice(b"{\"ErrorCode\":");
                    json(&mut out, e.code.as_entry_code().as_str());
                    out.extend_from_slice(b",\"ErrorMessage\":");
                    json(&mut out, &e.message);
                    out.push(b'}');
                }
            }
        }
        out.extend_from_slice(b"],\"EncryptionType\":");
        json(&mut out, &self.encryption_type);
        out.push(b'}');
        out
    }
}

const CBOR_UNSIGNED: u8 = 0;
const CBOR_TEXT: u8 = 3;
const CBOR_ARRAY: u8 = 4;
const CBOR_MAP: u8 = 5;

/// A CBOR item's head: its major type and the shortest encoding of `n`.
fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    match n {
        0..24 => out.push(major | n as u8),
        24..0x100 => out.extend_from_slice(&[major | 24, n as u8]),
        0x100..0x1_0000 => {
            out.push(major | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..0x1_0000_0000 => {
            out.push(major | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn cbor_text(out: &mut Vec<u8>, text: &str) {
    cbor_head(out, CBOR_TEXT, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

impl Serialize for PutRecordsAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("PutRecordsOutput", 3)?;
        out.serialize_field("FailedRecordCount", &self.failed_record_count())?;
        out.serialize_field("Records", &Entries(self))?;
        out.serialize_field("EncryptionType", &self.encryption_type)?;
        out.end()
    }
}

struct Entries<'a>(&'a PutRecordsAnswer);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.records.len()))?;
        for record in &self.0.records {
            seq.serialize_element(&Entry { answer: self.0, record })?;
        }
        seq.end()
    }
}

struct Entry<'a> {
    answer: &'a PutRecordsAnswer,
    record: &'a Result<(usize, u64), ApiError>,
}

impl Serialize for Entry<'_> {
    /// The fields `PutRecordsResultEntry` serialises, in its order, the absent ones skipped.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entry = serializer.serialize_struct("PutRecordsResultEntry", 2)?;
        match self.record {
            Ok((s, offset)) => {
                let shard = &self.answer.shards[*s];
                let digits = SequenceNumber::new(shard.index, *offset).digits();
                let text = std::str::from_utf8(&digits).expect("ASCII digits");
                entry.serialize_field("SequenceNumber", text)?;
                entry.serialize_field("ShardId", &shard.id)?;
            }
            Err(e) => {
                entry.serialize_field("ErrorCode", e.code.as_entry_code().as_str())?;
                entry.serialize_field("ErrorMessage", &e.message)?;
            }
        }
        entry.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    fn answer(records: Vec<Result<(usize, u64), ApiError>>) -> PutRecordsAnswer {
        PutRecordsAnswer {
            shards: vec![
                WrittenShard { index: 0, id: "shardId-000000000000".into() },
                WrittenShard { index: 17, id: "shardId-000000000017".into() },
            ],
            records,
            encryption_type: "NONE".into(),
        }
    }

    fn assert_same_bytes(a: PutRecordsAnswer) {
        for format in [Format::Json, Format::Cbor] {
            let model = format.encode(&a.clone().into_output());
            assert_eq!(format.encode(&a), model, "{format:?}");
            assert_eq!(a.encode(format), model, "{format:?}");
        }
    }

    #[test]
    fn encodes_as_the_model_type_does() {
        let throttled = ApiError::new(ErrorCode::ProvisionedThroughputExceeded, "Rate exceeded for shard \"x\".");
        let failed = ApiError::internal("The records could not be stored.");
        let a = answer(vec![Ok((0, 0)), Err(throttled), Ok((1, u64::MAX)), Err(failed), Ok((1, 42))]);
        assert_eq!(a.failed_record_count(), 2);
        let json: serde_json::Value = serde_json::from_slice(&a.encode(Format::Json)).unwrap();
        assert_eq!(json["Records"][2]["SequenceNumber"], SequenceNumber::new(17, u64::MAX).text());
        assert_eq!(json["Records"][1]["ErrorCode"], "ProvisionedThroughputExceededException");
        assert_eq!(json["Records"][3]["ErrorCode"], "InternalFailure");
        assert_eq!(json["FailedRecordCount"], 2);
        assert_same_bytes(a);
        assert_same_bytes(answer(Vec::new()));
    }

    #[test]
    fn cbor_heads_are_ciboriums_at_every_width() {
        for n in [0, 23, 24, 255, 256, 65_535, 65_536, u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX] {
            let mut ours = Vec::new();
            cbor_head(&mut ours, CBOR_UNSIGNED, n);
            let mut theirs = Vec::new();
            ciborium::into_writer(&n, &mut theirs).unwrap();
            assert_eq!(ours, theirs, "{n}");
        }
        let long = "x".repeat(70_000);
        let mut ours = Vec::new();
        cbor_text(&mut ours, &long);
        assert_eq!(ours, Format::Cbor.encode(&long));
    }

    proptest! {
        #[test]
        fn random_answers_encode_as_the_model_type_does(
            records in proptest::collection::vec(
                prop_oneof![
                    (0usize..2, any::<u64>()).prop_map(Ok),
                    ".{0,40}".prop_map(|m| Err(ApiError::new(ErrorCode::ProvisionedThroughputExceeded, m))),
                ],
                0..600,
            )
        ) {
            assert_same_bytes(answer(records));
        }
    }
}
