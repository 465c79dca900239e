//! A GetRecords answer encoded piece by piece while it is sent. Whole, a 10 MiB answer of
//! records is about 13.7 MB of JSON (base64 data) beside the records themselves, for as long
//! as the client takes to read it; in pieces, only one piece is encoded at a time, and each
//! record's memory is freed once it is encoded. The pieces together are byte for byte what
//! `Format::encode` makes of the whole answer.

use crate::codec::Format;
use crate::model::{GetRecordsOutput, Record};

/// About how large a piece grows before it is handed out.
pub const PIECE_BYTES: usize = 256 << 10;

/// The pieces of one GetRecords answer, in order (an `Iterator` of byte buffers).
pub struct RecordsAnswer {
    format: Format,
    /// The answer up to the first record (the opening of the Records array), until handed out.
    head: Option<Vec<u8>>,
    records: std::vec::IntoIter<Record>,
    encoded_any: bool,
    /// The answer after the last record, until handed out.
    tail: Option<Vec<u8>>,
}

/// `"Records"` as a CBOR text string (major type 3, length 7).
const CBOR_RECORDS_KEY: &[u8] = b"\x67Records";

impl RecordsAnswer {
    pub fn new(format: Format, mut out: GetRecordsOutput) -> RecordsAnswer {
        let records = std::mem::take(&mut out.records);
        let count = records.len();
        // The answer without records, cut where they go: Records is the first field.
        let empty = format.encode(&out);
        let (head, tail) = match format {
            Format::Json => {
                const OPEN: &[u8] = b"{\"Records\":[";
                assert!(empty.starts_with(OPEN), "GetRecordsOutput encodes Records first");
                (OPEN.to_vec(), empty[OPEN.len()..].to_vec())
            }
            Format::Cbor => {
                // A map header (one byte: at most four fields), the key, an empty array (0x80).
                let at = 1 + CBOR_RECORDS_KEY.len();
                assert!(
                    empty[1..].starts_with(CBOR_RECORDS_KEY) && empty[at] == 0x80,
                    "GetRecordsOutput encodes Records first"
                );
                let mut head = empty[..at].to_vec();
                cbor_array_header(&mut head, count);
                (head, empty[at + 1..].to_vec())
            }
        };
        RecordsAnswer { format, head: Some(head), records: records.into_iter(), encoded_any: false, tail: Some(tail) }
    }

    /// The whole answer in one buffer (for a caller that needs it at once).
    pub fn into_whole(self) -> Vec<u8> {
        self.flatten().collect()
    }
}

impl Iterator for RecordsAnswer {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut piece = self.head.take().unwrap_or_default();
        if self.records.len() > 0 {
            // Room for a piece of records (an empty answer, a tailing reader's, needs none).
            piece.reserve(PIECE_BYTES);
        }
        for record in self.records.by_ref() {
            // Encoding into memory cannot fail.
            match self.format {
                Format::Json => {
                    if self.encoded_any {
                        piece.push(b',');
                    }
                    serde_json::to_writer(&mut piece, &record).expect("JSON encoding of a record");
                }
                Format::Cbor => ciborium::into_writer(&record, &mut piece).expect("CBOR encoding of a record"),
            }
            self.encoded_any = true;
            if piece.len() >= PIECE_BYTES {
                return Some(piece);
            }
        }
        if let Some(tail) = self.tail.take() {
            piece.extend_from_slice(&tail);
        }
        (!piece.is_empty()).then_some(piece)
    }
}

/// A CBOR array header (major type 4) for `len` items, in its shortest form as ciborium
/// writes it.
fn cbor_array_header(out: &mut Vec<u8>, len: usize) {
    match len {
        0..24 => out.push(0x80 | len as u8),
        24..0x100 => out.extend([0x98, len as u8]),
        0x100..0x1_0000 => {
            out.push(0x99);
            out.extend((len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x9a);
            out.extend((len as u32).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChildShard, HashKeyRange};
    use crate::types::{Blob, Timestamp};
    use proptest::prelude::*;

    fn record(i: usize, size: usize, key: &str) -> Record {
        Record {
            sequence_number: format!("4959{i:052}"),
            approximate_arrival_timestamp: Timestamp(1_765_000_000_000 + i as i64 * 7),
            data: Blob(bytes::Bytes::from(vec![(i % 251) as u8; size])),
            partition_key: key.to_string(),
            encryption_type: i.is_multiple_of(5).then(|| "NONE".to_string()),
        }
    }

    fn answer(count: usize, size: usize, key: &str, next: bool, children: bool) -> GetRecordsOutput {
        GetRecordsOutput {
            records: (0..count).map(|i| record(i, size, key)).collect(),
            next_shard_iterator: next.then(|| "AAAAAAAAAAGzV1oLZp7Ktw==".to_string()),
            millis_behind_latest: 1234,
            child_shards: children.then(|| {
                vec![ChildShard {
                    shard_id: "shardId-000000000002".into(),
                    parent_shards: vec!["shardId-000000000000".into(), "shardId-000000000001".into()],
                    hash_key_range: HashKeyRange { starting_hash_key: "0".into(), ending_hash_key: "42".into() },
                }]
            }),
        }
    }

    fn pieces_match_the_whole_encoding(out: GetRecordsOutput) {
        for format in [Format::Json, Format::Cbor] {
            let whole = format.encode(&out);
            let pieces: Vec<Vec<u8>> = RecordsAnswer::new(format, out.clone()).collect();
            assert!(pieces.iter().all(|p| !p.is_empty()), "{format:?}: no empty piece");
            // Every piece but the last stops once it reaches the size (one record may overshoot).
            let largest_record = out.records.iter().map(|r| r.data.0.len() * 2 + 256).max().unwrap_or(0);
            for p in &pieces[..pieces.len() - 1] {
                assert!(p.len() >= PIECE_BYTES && p.len() < PIECE_BYTES + largest_record, "{format:?}: {}", p.len());
            }
            assert_eq!(pieces.concat(), whole, "{format:?}: {} records", out.records.len());
            let decoded: GetRecordsOutput = format.decode(&pieces.concat()).expect("decodes");
            assert_eq!(decoded.records.len(), out.records.len());
        }
    }

    #[test]
    fn pieces_are_the_whole_encoding_at_every_array_header_size() {
        // CBOR array headers change form at 24, 256 and 65536 items.
        for count in [0, 1, 23, 24, 255, 256, 65_535, 65_536] {
            pieces_match_the_whole_encoding(answer(count, 3, "k", true, false));
        }
    }

    #[test]
    fn ten_mib_of_records_go_out_in_many_pieces() {
        let out = answer(10_000, 1000, "partition-key-\u{e9}\"\\", true, false);
        assert!(RecordsAnswer::new(Format::Json, out.clone()).count() > 40);
        pieces_match_the_whole_encoding(out);
    }

    #[test]
    fn a_closed_shards_last_answer_keeps_its_children() {
        pieces_match_the_whole_encoding(answer(0, 0, "k", false, true));
        pieces_match_the_whole_encoding(answer(3, 10, "k", false, true));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn pieces_are_the_whole_encoding(
            count in 0usize..600,
            size in 0usize..3000,
            key in "\\PC{1,20}",
            next: bool,
            children: bool,
        ) {
            pieces_match_the_whole_encoding(answer(count, size, &key, next, children));
        }
    }
}
