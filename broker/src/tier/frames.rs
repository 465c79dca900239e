//! The framed segment object: a sealed segment file cut at record boundaries into frames of
//! about `frame_bytes` raw bytes, each compressed on its own, followed by a footer that
//! indexes them. A reader fetches the footer once (one ranged GET at the end of the object)
//! and then any frame with one ranged GET. Pure functions, no I/O.
//!
//! ```text
//! frame 0 | frame 1 | ... | frame n-1 | entry 0 | ... | entry n-1 | trailer
//!
//! entry (32 bytes, little endian):
//!   first_offset u64   offset of the frame's first record
//!   first_ts_ms  i64   its timestamp
//!   records      u32
//!   raw_len      u32   bytes of the frame once decompressed (whole records)
//!   stored_len   u32   bytes of the frame in the object
//!   stored_crc   u32   CRC32C of the stored bytes
//! trailer (20 bytes):
//!   frame_count  u32
//!   compression  u8    0 none, 1 zstd, 2 lz4
//!   reserved     [u8; 3]
//!   footer_crc   u32   CRC32C of the entries and the 8 bytes above
//!   magic        "SFSEGFR1"
//! ```
//!
//! The frames decompressed and concatenated are the segment file, byte for byte; each
//! record inside still carries its own CRC. Objects without the trailer are the earlier
//! whole-file format (one compressed stream); [`FrameIndex::whole`] reads them as one frame.

use std::io;
use std::ops::Range;

use bytes::Bytes;

use super::codec::{self, Compression};
use crate::log::record::RecordIter;

pub const MAGIC: &[u8; 8] = b"SFSEGFR1";
pub const ENTRY_LEN: usize = 32;
pub const TRAILER_LEN: usize = 20;
/// Most raw bytes per frame unless one record is larger (default of `TierOptions::frame_bytes`).
pub const DEFAULT_FRAME_BYTES: usize = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    pub first_offset: u64,
    pub first_ts_ms: i64,
    pub records: u32,
    pub raw_len: u32,
    pub stored_len: u32,
    pub stored_crc: u32,
}

/// Where each frame of one object is, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameIndex {
    pub compression: Compression,
    pub frames: Vec<FrameEntry>,
    /// Start of each frame in the object (one more: where the footer starts).
    starts: Vec<u64>,
    /// A whole-file object of the earlier format: one frame, no CRC of its own.
    pub whole: bool,
}

impl FrameIndex {
    fn new(compression: Compression, frames: Vec<FrameEntry>, whole: bool) -> Self {
        let mut starts = Vec::with_capacity(frames.len() + 1);
        let mut at = 0u64;
        starts.push(0);
        for f in &frames {
            at += f.stored_len as u64;
            starts.push(at);
        }
        FrameIndex { compression, frames, starts, whole }
    }

    /// An object of the earlier whole-file format, read as one frame.
    pub fn whole(
        compression: Compression,
        first_offset: u64,
        first_ts_ms: i64,
        records: u64,
        raw: u64,
        stored: u64,
    ) -> Self {
        let frame = FrameEntry {
            first_offset,
            first_ts_ms,
            records: records.min(u32::MAX as u64) as u32,
            raw_len: raw.min(u32::MAX as u64) as u32,
            stored_len: stored.min(u32::MAX as u64) as u32,
            stored_crc: 0,
        };
        FrameIndex::new(compression, vec![frame], true)
    }

    /// Byte range of frame `i` in the object.
    pub fn stored_range(&self, i: usize) -> Range<u64> {
        self.starts[i]..self.starts[i + 1]
    }

    /// Bytes of the footer (entries and trailer); 0 for a whole-file object.
    pub fn footer_len(&self) -> usize {
        if self.whole { 0 } else { self.frames.len() * ENTRY_LEN + TRAILER_LEN }
    }

    /// The frame holding `offset`: the last one starting at or before it (else the first).
    pub fn frame_for_offset(&self, offset: u64) -> usize {
        self.frames.partition_point(|f| f.first_offset <= offset).saturating_sub(1)
    }

    /// Where to look for the first record at or after `ts_ms`: the last frame whose first
    /// record is older (every record before it is older too), else the first.
    pub fn frame_for_time(&self, ts_ms: i64) -> usize {
        self.frames.partition_point(|f| f.first_ts_ms < ts_ms).saturating_sub(1)
    }

    /// Checks stored frame `i` and decompresses it into whole records.
    pub fn decode_frame(&self, i: usize, stored: &[u8]) -> Result<Bytes, String> {
        let f = &self.frames[i];
        if stored.len() != f.stored_len as usize {
            return Err(format!("frame {i} has {} bytes, the index says {}", stored.len(), f.stored_len));
        }
        if !self.whole && crc32c::crc32c(stored) != f.stored_crc {
            return Err(format!("frame {i} fails its checksum"));
        }
        let raw = codec::decompress(stored, self.compression, f.raw_len as usize)
            .map_err(|e| format!("frame {i} does not decompress ({}): {e}", self.compression))?;
        if raw.len() != f.raw_len as usize {
            return Err(format!("frame {i} decompressed to {} bytes, the index says {}", raw.len(), f.raw_len));
        }
        Ok(raw.into())
    }
}

fn compression_code(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Zstd => 1,
        Compression::Lz4 => 2,
    }
}

/// True when `object` (or its tail) ends with the framed format's trailer magic.
pub fn is_framed(tail: &[u8]) -> bool {
    tail.len() >= TRAILER_LEN && tail.ends_with(MAGIC)
}

/// Cuts `raw` (a segment file: whole, CRC-valid records) into frames and encodes the object.
/// Refuses a file that is not a run of valid records: nothing corrupt goes to the bucket.
pub fn encode(
    raw: &Bytes,
    compression: Compression,
    zstd_level: i32,
    frame_bytes: usize,
) -> io::Result<(Vec<u8>, FrameIndex)> {
    let frame_bytes = frame_bytes.max(1);
    // Frame boundaries: (start, end, first offset, first ts, records).
    let mut cuts: Vec<(usize, usize, u64, i64, u32)> = Vec::new();
    let mut records = RecordIter::new(raw.clone());
    loop {
        let at = records.position();
        let Some(rec) = records.next() else { break };
        let rec = rec?;
        match cuts.last_mut() {
            // A frame grows to `frame_bytes` at most, unless one record alone is larger.
            Some(open) if open.1 - open.0 + rec.encoded_len <= frame_bytes => {
                open.1 = at + rec.encoded_len;
                open.4 += 1;
            }
            _ => cuts.push((at, at + rec.encoded_len, rec.offset, rec.timestamp_ms, 1)),
        }
    }
    let mut object = Vec::with_capacity(raw.len() / 2 + cuts.len() * ENTRY_LEN + TRAILER_LEN);
    let mut frames = Vec::with_capacity(cuts.len());
    let mut compressor = codec::Compressor::new(compression, zstd_level)?;
    for (start, end, first_offset, first_ts_ms, n) in cuts {
        let stored = compressor.compress(&raw[start..end])?;
        let too_big = |what| io::Error::new(io::ErrorKind::InvalidInput, format!("frame {what} exceeds 4 GiB"));
        frames.push(FrameEntry {
            first_offset,
            first_ts_ms,
            records: n,
            raw_len: u32::try_from(end - start).map_err(|_| too_big("raw size"))?,
            stored_len: u32::try_from(stored.len()).map_err(|_| too_big("stored size"))?,
            stored_crc: crc32c::crc32c(&stored),
        });
        object.extend_from_slice(&stored);
    }
    let footer_start = object.len();
    for f in &frames {
        object.extend_from_slice(&f.first_offset.to_le_bytes());
        object.extend_from_slice(&f.first_ts_ms.to_le_bytes());
        object.extend_from_slice(&f.records.to_le_bytes());
        object.extend_from_slice(&f.raw_len.to_le_bytes());
        object.extend_from_slice(&f.stored_len.to_le_bytes());
        object.extend_from_slice(&f.stored_crc.to_le_bytes());
    }
    object.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    object.extend_from_slice(&[compression_code(compression), 0, 0, 0]);
    let crc = crc32c::crc32c(&object[footer_start..]);
    object.extend_from_slice(&crc.to_le_bytes());
    object.extend_from_slice(MAGIC);
    Ok((object, FrameIndex::new(compression, frames, false)))
}

/// Bytes of footer that the trailer at the end of `tail` announces (entries and trailer).
pub fn footer_len(tail: &[u8]) -> Result<usize, String> {
    if !is_framed(tail) {
        return Err("no framed-segment trailer".into());
    }
    let t = &tail[tail.len() - TRAILER_LEN..];
    let n = u32::from_le_bytes(t[0..4].try_into().unwrap()) as usize;
    Ok(n * ENTRY_LEN + TRAILER_LEN)
}

/// The index from the object's last bytes (`tail` must hold at least the whole footer) of an
/// object of `object_len` bytes.
pub fn parse_footer(tail: &[u8], object_len: u64) -> Result<FrameIndex, String> {
    let len = footer_len(tail)?;
    if tail.len() < len || (len as u64) > object_len {
        return Err(format!(
            "footer of {len} bytes does not fit in {} fetched of a {object_len}-byte object",
            tail.len()
        ));
    }
    let footer = &tail[tail.len() - len..];
    let (entries, trailer) = footer.split_at(len - TRAILER_LEN);
    let crc = u32::from_le_bytes(trailer[8..12].try_into().unwrap());
    if crc32c::crc32c(&footer[..len - 12]) != crc {
        return Err("footer fails its checksum".into());
    }
    let compression = match trailer[4] {
        0 => Compression::None,
        1 => Compression::Zstd,
        2 => Compression::Lz4,
        other => return Err(format!("unknown compression code {other}")),
    };
    let u32_at = |e: &[u8], at: usize| u32::from_le_bytes(e[at..at + 4].try_into().unwrap());
    let frames: Vec<FrameEntry> = entries
        .chunks_exact(ENTRY_LEN)
        .map(|e| FrameEntry {
            first_offset: u64::from_le_bytes(e[0..8].try_into().unwrap()),
            first_ts_ms: i64::from_le_bytes(e[8..16].try_into().unwrap()),
            records: u32_at(e, 16),
            raw_len: u32_at(e, 20),
            stored_len: u32_at(e, 24),
            stored_crc: u32_at(e, 28),
        })
        .collect();
    let index = FrameIndex::new(compression, frames, false);
    let frames_end = *index.starts.last().unwrap();
    if frames_end + len as u64 != object_len {
        return Err(format!(
            "frames ({frames_end} bytes) and footer ({len}) do not make up the {object_len}-byte object"
        ));
    }
    Ok(index)
}

/// The whole segment file back from a framed object.
pub fn decode(object: &[u8]) -> Result<Vec<u8>, String> {
    let index = parse_footer(object, object.len() as u64)?;
    let raw_len: usize = index.frames.iter().map(|f| f.raw_len as usize).sum();
    let mut raw = Vec::with_capacity(raw_len);
    for i in 0..index.frames.len() {
        let r = index.stored_range(i);
        raw.extend_from_slice(&index.decode_frame(i, &object[r.start as usize..r.end as usize])?);
    }
    Ok(raw)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::log::record;
    use proptest::prelude::*;

    /// A segment file of `sizes.len()` records from `base`, record i carrying `sizes[i]` data bytes.
    pub(crate) fn segment(base: u64, sizes: &[usize]) -> Bytes {
        let mut buf = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|j| (j as u8).wrapping_mul(7) ^ (i as u8)).collect();
            record::encode(&mut buf, base + i as u64, 1_000 + i as i64, format!("k{i}").as_bytes(), &data);
        }
        buf.into()
    }

    #[test]
    fn frames_cut_at_record_boundaries() {
        let raw = segment(100, &[1000; 50]);
        for c in [Compression::Zstd, Compression::Lz4, Compression::None] {
            let (object, index) = encode(&raw, c, 3, 4096).unwrap();
            assert!(is_framed(&object));
            assert!(index.frames.len() > 5, "{} frames", index.frames.len());
            assert_eq!(parse_footer(&object, object.len() as u64).unwrap(), index);
            let tail = &object[object.len() - index.footer_len()..];
            assert_eq!(parse_footer(tail, object.len() as u64).unwrap(), index);
            assert_eq!(decode(&object).unwrap(), raw[..]);
            let mut next = 100;
            for i in 0..index.frames.len() {
                let r = index.stored_range(i);
                let frame = index.decode_frame(i, &object[r.start as usize..r.end as usize]).unwrap();
                let recs: Vec<_> = RecordIter::new(frame).map(|r| r.unwrap()).collect();
                assert_eq!(recs.len() as u32, index.frames[i].records);
                assert_eq!(recs[0].offset, index.frames[i].first_offset);
                assert_eq!(recs[0].timestamp_ms, index.frames[i].first_ts_ms);
                for r in recs {
                    assert_eq!(r.offset, next);
                    next += 1;
                }
            }
            assert_eq!(next, 150);
            assert_eq!(index.frame_for_offset(100), 0);
            assert_eq!(index.frame_for_offset(149), index.frames.len() - 1);
            let mid = index.frames[3].first_offset;
            assert_eq!(index.frame_for_offset(mid), 3);
            assert_eq!(index.frame_for_offset(mid - 1), 2);
            assert_eq!(index.frame_for_time(index.frames[3].first_ts_ms), 2);
        }
    }

    #[test]
    fn a_record_larger_than_a_frame_is_a_frame_alone() {
        let raw = segment(0, &[10, 100_000, 10, 10]);
        let (object, index) = encode(&raw, Compression::Zstd, 3, 1024).unwrap();
        assert_eq!(index.frames.iter().map(|f| f.records).collect::<Vec<_>>(), vec![1, 1, 2]);
        assert_eq!(decode(&object).unwrap(), raw[..]);
    }

    #[test]
    fn damage_is_detected() {
        let raw = segment(0, &[500; 20]);
        let (object, index) = encode(&raw, Compression::None, 3, 2048).unwrap();
        let mut bad = object.clone();
        bad[10] ^= 1; // inside frame 0
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        let mut bad = object.clone();
        let at = object.len() - TRAILER_LEN - 3; // inside the last index entry
        bad[at] ^= 1;
        assert!(parse_footer(&bad, bad.len() as u64).is_err());
        assert!(parse_footer(&object[..object.len() - 1], object.len() as u64 - 1).is_err());
        assert!(parse_footer(&object, object.len() as u64 + 1).is_err(), "length must add up");
        assert!(index.decode_frame(0, &object[..5]).is_err());
        // a file that is not whole records is refused at upload
        assert!(encode(&raw.slice(..raw.len() - 1), Compression::Zstd, 3, 2048).is_err());
        assert!(encode(&Bytes::from_static(b"not records at all, no"), Compression::Zstd, 3, 2048).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any run of records, any frame size, any compression: the object decodes to the same
        /// bytes, and the frames together hold every record exactly once, in order.
        #[test]
        fn prop_frames_round_trip(
            base in 0u64..1 << 40,
            sizes in prop::collection::vec(0usize..3000, 1..120),
            frame_bytes in 1usize..20_000,
            c in prop_oneof![Just(Compression::Zstd), Just(Compression::Lz4), Just(Compression::None)],
        ) {
            let raw = segment(base, &sizes);
            let (object, index) = encode(&raw, c, 1, frame_bytes).unwrap();
            prop_assert_eq!(decode(&object).unwrap(), raw.to_vec());
            let mut offsets = Vec::new();
            for i in 0..index.frames.len() {
                let r = index.stored_range(i);
                let frame = index.decode_frame(i, &object[r.start as usize..r.end as usize]).unwrap();
                offsets.extend(RecordIter::new(frame).map(|r| r.unwrap().offset));
            }
            prop_assert_eq!(offsets, (base..base + sizes.len() as u64).collect::<Vec<_>>());
        }
    }
}
