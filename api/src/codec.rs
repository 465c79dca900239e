//! The two body encodings of the Kinesis API: JSON 1.1 and CBOR 1.1. Answers go out in
//! the encoding the request came in.

use crate::error::{ApiError, ErrorCode};
use crate::types::SharedBody;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
pub const CBOR_CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Cbor,
}

impl Format {
    /// CBOR only when asked for; anything else (JSON 1.0/1.1, missing) is JSON.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(ct) if ct.trim().starts_with("application/x-amz-cbor") => Format::Cbor,
            _ => Format::Json,
        }
    }

    /// The encoding a Kinesis request declares; None for a missing or other content type,
    /// which AWS refuses (`UnknownOperationException`, HTTP 404).
    pub fn of_request(content_type: Option<&str>) -> Option<Format> {
        let media = content_type?.split(';').next().unwrap_or("").trim();
        [Format::Json, Format::Cbor].into_iter().find(|f| media.eq_ignore_ascii_case(f.content_type()))
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => JSON_CONTENT_TYPE,
            Format::Cbor => CBOR_CONTENT_TYPE,
        }
    }

    /// `decode`, with CBOR byte strings (record data) kept as slices of `body`, not copied.
    pub fn decode_shared<T: DeserializeOwned>(self, body: &Bytes) -> Result<T, ApiError> {
        let _shared = SharedBody::enter(body);
        self.decode(body)
    }

    /// Decode a request body; an empty body is an empty structure.
    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, ApiError> {
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            match self {
                Format::Json => b"{}",
                Format::Cbor => &[0xa0], // an empty CBOR map
            }
        } else {
            body
        };
        match self {
            Format::Json => serde_json::from_slice(body).map_err(|e| serialization(&e)),
            // cbor4ii first: a third of ciborium's time for a PutRecords of the Java SDK. Its
            // serde support refuses CBOR tags (the Java SDK tags its timestamps), so what it
            // refuses goes to ciborium, whose answer (and error message) is then the one.
            Format::Cbor => {
                cbor4ii::serde::from_slice(body).or_else(|_| ciborium::from_reader(body)).map_err(|e| serialization(&e))
            }
        }
    }

    pub fn encode<T: Serialize>(self, value: &T) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        // Serializing our own model types into memory cannot fail.
        match self {
            Format::Json => serde_json::to_writer(&mut out, value).expect("JSON encoding of a model value"),
            Format::Cbor => ciborium::into_writer(value, &mut out).expect("CBOR encoding of a model value"),
        }
        out
    }

    /// The body of an error answer: `{"__type": ..., "message": ...}`.
    pub fn encode_error(self, err: &ApiError) -> Vec<u8> {
        self.encode(&ErrorBody { r#type: err.code.as_str(), message: &err.message })
    }

    /// An error answer read back (a client's side): its code (a `namespace#` prefix
    /// dropped; an unknown one is an InternalFailure) and message.
    pub fn decode_error(self, body: &[u8]) -> ApiError {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "__type")]
            code: String,
            #[serde(default)]
            message: String,
        }
        match self.decode::<Answer>(body) {
            Ok(a) => ApiError::new(ErrorCode::parse(&a.code).unwrap_or(ErrorCode::InternalFailure), a.message),
            Err(e) => ApiError::internal(format!("an unreadable error answer: {}", e.message)),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "__type")]
    r#type: &'a str,
    message: &'a str,
}

fn serialization(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Serialization, format!("Request body could not be parsed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Blob, Timestamp};
    use proptest::prelude::*;
    use serde::Deserialize;

    #[test]
    fn an_error_answer_reads_back_as_it_was_written() {
        for format in [Format::Json, Format::Cbor] {
            let err = ApiError::validation("partitionKey", "k", "Member must have length between 1 and 256");
            assert_eq!(format.decode_error(&format.encode_error(&err)), err);
        }
        let namespaced = br#"{"__type": "com.amazonaws.kinesis#ResourceNotFoundException", "message": "no"}"#;
        assert_eq!(Format::Json.decode_error(namespaced), ApiError::not_found("no"));
        assert_eq!(Format::Json.decode_error(br#"{"__type": "Nope"}"#).code, ErrorCode::InternalFailure);
        assert_eq!(Format::Json.decode_error(b"<html>").code, ErrorCode::InternalFailure);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Sample {
        data: Blob,
        at: Timestamp,
        key: String,
    }

    proptest! {
        #[test]
        fn both_formats_round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048),
                                   ms in 100_000_000_001i64..4_000_000_000_000, key in "\\PC{1,64}") {
            let v = Sample { data: Blob(data.into()), at: Timestamp(ms), key };
            for f in [Format::Json, Format::Cbor] {
                let back: Sample = f.decode(&f.encode(&v)).unwrap();
                prop_assert_eq!(&back, &v);
            }
        }

        #[test]
        fn garbage_is_a_serialization_error(body in proptest::collection::vec(any::<u8>(), 1..256)) {
            for f in [Format::Json, Format::Cbor] {
                if let Err(e) = f.decode::<Sample>(&body) {
                    prop_assert!(matches!(e.code, ErrorCode::Serialization | ErrorCode::Validation));
                }
            }
        }
    }

    #[test]
    fn json_blob_is_base64_and_timestamp_is_seconds() {
        let v = Sample { data: Blob(b"hi".as_slice().into()), at: Timestamp(1500), key: "k".into() };
        let text = String::from_utf8(Format::Json.encode(&v)).unwrap();
        assert_eq!(text, r#"{"Data":"aGk=","At":1.5,"Key":"k"}"#);
    }

    #[test]
    fn cbor_timestamps_accept_seconds_millis_and_tag_1() {
        #[derive(Deserialize)]
        struct T {
            t: Timestamp,
        }
        let enc = |v: ciborium::Value| {
            let mut out = Vec::new();
            ciborium::into_writer(&ciborium::Value::Map(vec![("t".into(), v)]), &mut out).unwrap();
            out
        };
        let millis = 1_700_000_000_123i64;
        let seconds: T = Format::Cbor.decode(&enc(ciborium::Value::Integer(1_700_000_000.into()))).unwrap();
        assert_eq!(seconds.t, Timestamp(1_700_000_000_000));
        let ms: T = Format::Cbor.decode(&enc(ciborium::Value::Integer(millis.into()))).unwrap();
        assert_eq!(ms.t, Timestamp(millis));
        let tagged = ciborium::Value::Tag(1, Box::new(ciborium::Value::Float(1_700_000_000.5)));
        let tagged: T = Format::Cbor.decode(&enc(tagged)).unwrap();
        assert_eq!(tagged.t, Timestamp(1_700_000_000_500));
    }

    #[test]
    fn bad_base64_is_a_serialization_error() {
        let err = Format::Json.decode::<Sample>(br#"{"Data":"!!","At":1,"Key":"k"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::Serialization);
        assert!(err.message.contains("base64"), "{}", err.message);
    }

    #[test]
    fn empty_body_is_an_empty_structure() {
        #[derive(Deserialize)]
        struct Opt {
            #[allow(dead_code)]
            x: Option<u32>,
        }
        assert!(Format::Json.decode::<Opt>(b"").is_ok());
        assert!(Format::Cbor.decode::<Opt>(b"").is_ok());
    }

    /// CBOR request bodies like the broker's inputs, with values of any CBOR type where the
    /// right type belongs, tags, and fields it does not know.
    fn cbor_value() -> impl Strategy<Value = ciborium::Value> {
        use ciborium::Value as V;
        let leaf = prop_oneof![
            any::<i64>().prop_map(|i| V::Integer(i.into())),
            any::<u64>().prop_map(|i| V::Integer(i.into())),
            any::<f64>().prop_map(V::Float),
            "\\PC{0,12}".prop_map(V::Text),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(V::Bytes),
            any::<bool>().prop_map(V::Bool),
            Just(V::Null),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(V::Array),
                proptest::collection::vec(("\\PC{0,6}".prop_map(V::Text), inner.clone()), 0..5).prop_map(V::Map),
                (0u64..6, inner).prop_map(|(tag, v)| V::Tag(tag, Box::new(v))),
            ]
        })
    }

    fn cbor_field(names: &'static [&'static str]) -> impl Strategy<Value = (ciborium::Value, ciborium::Value)> {
        (proptest::sample::select(names), cbor_value()).prop_map(|(k, v)| (ciborium::Value::Text(k.into()), v))
    }

    fn cbor_put_records() -> impl Strategy<Value = Vec<u8>> {
        use ciborium::Value as V;
        let entry = proptest::collection::vec(cbor_field(&["Data", "PartitionKey", "ExplicitHashKey", "Other"]), 0..4)
            .prop_map(V::Map);
        let typed_entry = (proptest::collection::vec(any::<u8>(), 0..64), "\\PC{1,16}").prop_map(|(data, key)| {
            V::Map(vec![("Data".into(), V::Bytes(data)), ("PartitionKey".into(), V::Text(key))])
        });
        let records = proptest::collection::vec(prop_oneof![3 => typed_entry, 1 => entry], 0..6).prop_map(V::Array);
        (proptest::collection::vec(cbor_field(&["StreamName", "StreamARN", "Records"]), 0..2), records).prop_map(
            |(mut fields, records)| {
                fields.push((V::Text("Records".into()), records));
                let mut out = Vec::new();
                ciborium::into_writer(&V::Map(fields), &mut out).unwrap();
                out
            },
        )
    }

    fn cbor_get_shard_iterator() -> impl Strategy<Value = Vec<u8>> {
        use ciborium::Value as V;
        let fields = &["StreamName", "ShardId", "ShardIteratorType", "StartingSequenceNumber", "Timestamp", "X"];
        proptest::collection::vec(cbor_field(fields), 0..5).prop_map(|fields| {
            let mut out = Vec::new();
            ciborium::into_writer(&V::Map(fields), &mut out).unwrap();
            out
        })
    }

    /// What cbor4ii decodes, ciborium decodes the same (JSON of the result compared, data included).
    fn decoders_agree<T: DeserializeOwned + Serialize>(body: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(fast) = cbor4ii::serde::from_slice::<T>(body) {
            let slow: T = ciborium::from_reader(body)
                .map_err(|e| TestCaseError::fail(format!("only cbor4ii decodes {body:02x?}: {e}")))?;
            prop_assert_eq!(serde_json::to_string(&fast).unwrap(), serde_json::to_string(&slow).unwrap());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_fast_cbor_decoder_agrees_with_ciborium(put in cbor_put_records(), it in cbor_get_shard_iterator(),
                                                      garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
            use crate::model::{GetShardIteratorInput, PutRecordsInput};
            decoders_agree::<PutRecordsInput>(&put)?;
            decoders_agree::<GetShardIteratorInput>(&it)?;
            decoders_agree::<PutRecordsInput>(&garbage)?;
        }
    }

    fn put_records_of(data: Vec<Vec<u8>>) -> crate::model::PutRecordsInput {
        let records = data.into_iter().enumerate().map(|(i, data)| crate::model::PutRecordsRequestEntry {
            data: Some(Blob(Bytes::from(data))),
            partition_key: Some(format!("k{i}")),
            explicit_hash_key: None,
        });
        crate::model::PutRecordsInput {
            stream_name: Some("s".into()),
            stream_arn: None,
            records: Some(records.collect()),
        }
    }

    fn data_of(input: &crate::model::PutRecordsInput) -> Vec<Bytes> {
        input.records.iter().flatten().map(|r| r.data.clone().unwrap_or_default().0).collect()
    }

    /// Decoded with `decode` and with `decode_shared`.
    fn both_ways(format: Format, body: &Bytes) -> [crate::model::PutRecordsInput; 2] {
        [format.decode(body).unwrap(), format.decode_shared(body).unwrap()]
    }

    fn inside(body: &Bytes, blob: &Bytes) -> bool {
        let range = body.as_ptr_range();
        range.start <= blob.as_ptr() && blob.as_ptr_range().end <= range.end
    }

    #[test]
    fn cbor_record_data_decoded_from_a_shared_body_is_not_copied() {
        let input = put_records_of((1..40).map(|i| vec![i as u8; i * 13]).collect());
        let body = Bytes::from(Format::Cbor.encode(&input));
        let [copied, shared] = both_ways(Format::Cbor, &body);
        assert_eq!(data_of(&shared), data_of(&input));
        assert!(data_of(&shared).iter().all(|data| inside(&body, data)));
        assert!(!data_of(&copied).iter().any(|data| inside(&body, data)));
        // Once `decode_shared` returned, even with an error, blobs are copies again: a byte
        // string (0x43: 3 bytes) inside a body that was shared and refused.
        let bad = Bytes::from_static(&[0x43, 1, 2, 3, 0xff]);
        let err = Format::Cbor.decode_shared::<crate::model::PutRecordsInput>(&bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::Serialization);
        let blob: Blob = cbor4ii::serde::from_slice(&bad[..4]).unwrap();
        assert_eq!(blob.0.as_ref(), &[1, 2, 3]);
        assert!(!inside(&bad, &blob.0));
    }

    proptest! {
        /// Whatever the records (empty data included), both decoders of both formats give them back.
        #[test]
        fn put_records_decode_as_they_were_encoded(data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..40)) {
            let input = put_records_of(data);
            for format in [Format::Json, Format::Cbor] {
                let body = Bytes::from(format.encode(&input));
                for decoded in both_ways(format, &body) {
                    prop_assert_eq!(data_of(&decoded), data_of(&input));
                }
            }
        }
    }

    #[test]
    fn put_records_as_the_java_sdk_writes_them_take_the_fast_decoder() {
        // Jackson writes objects and arrays with indefinite lengths (0xbf, 0x9f ... 0xff).
        let mut body = vec![0xbf];
        ciborium::into_writer(&"StreamName", &mut body).unwrap();
        ciborium::into_writer(&"s", &mut body).unwrap();
        ciborium::into_writer(&"Records", &mut body).unwrap();
        body.extend([0x9f, 0xbf]);
        ciborium::into_writer(&"Data", &mut body).unwrap();
        ciborium::into_writer(&ciborium::Value::Bytes(vec![1, 2, 3]), &mut body).unwrap();
        ciborium::into_writer(&"PartitionKey", &mut body).unwrap();
        ciborium::into_writer(&"k", &mut body).unwrap();
        body.extend([0xff, 0xff, 0xff]);
        let fast: crate::model::PutRecordsInput = cbor4ii::serde::from_slice(&body).unwrap();
        let records = fast.records.unwrap();
        assert_eq!(records[0].data.as_ref().unwrap().0.as_ref(), &[1, 2, 3]);
        assert_eq!(records[0].partition_key.as_deref(), Some("k"));
    }
}
