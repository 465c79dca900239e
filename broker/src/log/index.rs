//! Sparse per-segment indexes: in memory one `IndexEntry` (offset, file position, timestamp) per
//! `index_interval_bytes`; on disk, written when a segment is sealed, as `.index`
//! (relative offset -> position) and `.timeindex` (timestamp -> relative offset).
//!
//! Index files are only a start-up shortcut: each carries a CRC and the segment size it
//! describes, and anything that does not match is ignored and rebuilt by scanning the segment.
//! That is why they are written without fsync.

use std::fs;
use std::io;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset minus the segment's base offset.
    pub rel_offset: u32,
    /// File position of that record.
    pub position: u32,
    pub timestamp_ms: i64,
}

/// Decides which records get an entry, identically for the writer and for recovery's rebuild:
/// the segment's first record, then the first record after at least `interval` bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexBuilder {
    interval: u32,
    /// Bytes since the last entry; `None` until the segment has a record.
    bytes_since_entry: Option<u32>,
}

impl IndexBuilder {
    pub(crate) fn new(interval: u32) -> Self {
        IndexBuilder { interval, bytes_since_entry: None }
    }

    /// Called for every record in order; true if this record gets an index entry.
    pub(crate) fn observe(&mut self, record_len: usize) -> bool {
        let (add, since) = match self.bytes_since_entry {
            None => (true, 0),
            Some(b) if b >= self.interval => (true, 0),
            Some(b) => (false, b),
        };
        self.bytes_since_entry = Some(since.saturating_add(record_len.min(u32::MAX as usize) as u32));
        add
    }
}

/// In memory, a sealed segment keeps one entry per this many bytes (its index files keep
/// every entry): a read then scans at most this much before the record it wants, and the
/// entries of the data on local disk take a sixteenth of the memory (2 MB per 8 GB stored
/// instead of 33 MB: memory that grew with the data, not with the configuration).
pub(crate) const SEALED_INTERVAL_BYTES: u32 = 64 << 10;

/// The entries at least `interval` bytes after the last one kept (the first always), in a
/// Vec of their exact size.
pub(crate) fn thinned(entries: &[IndexEntry], interval: u32) -> Vec<IndexEntry> {
    let mut kept: Vec<IndexEntry> = Vec::new();
    for e in entries {
        if kept.last().is_none_or(|k| e.position - k.position >= interval) {
            kept.push(*e);
        }
    }
    kept.shrink_to_fit();
    kept
}

/// Where to start scanning for `rel_offset`: the last entry at or before it (else the start).
pub(crate) fn position_for_offset(entries: &[IndexEntry], rel_offset: u32) -> u64 {
    let i = entries.partition_point(|e| e.rel_offset <= rel_offset);
    i.checked_sub(1).map_or(0, |i| entries[i].position as u64)
}

/// Where to start scanning for the first record with timestamp >= `ts_ms`: the last entry
/// older than that (every record before it is older too), else the start.
pub(crate) fn position_for_time(entries: &[IndexEntry], ts_ms: i64) -> u64 {
    let i = entries.partition_point(|e| e.timestamp_ms < ts_ms);
    i.checked_sub(1).map_or(0, |i| entries[i].position as u64)
}

/// What a sealed segment's `.index` header records, so start-up need not scan it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SealedMeta {
    pub end_offset: u64,
    pub size: u64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
}

const OFFSET_MAGIC: &[u8; 8] = b"SFLOGIX1";
const TIME_MAGIC: &[u8; 8] = b"SFLOGTI1";
/// Stands for "no timestamp" (an empty segment); wall-clock ms never gets there.
const NO_TS: i64 = i64::MIN;

pub(crate) fn write_index_files(
    index_path: &Path,
    time_index_path: &Path,
    base_offset: u64,
    meta: &SealedMeta,
    entries: &[IndexEntry],
) -> io::Result<()> {
    let mut ix = Vec::with_capacity(56 + entries.len() * 8);
    ix.extend_from_slice(OFFSET_MAGIC);
    ix.extend_from_slice(&base_offset.to_le_bytes());
    ix.extend_from_slice(&meta.end_offset.to_le_bytes());
    ix.extend_from_slice(&meta.size.to_le_bytes());
    ix.extend_from_slice(&meta.first_ts.unwrap_or(NO_TS).to_le_bytes());
    ix.extend_from_slice(&meta.last_ts.unwrap_or(NO_TS).to_le_bytes());
    ix.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        ix.extend_from_slice(&e.rel_offset.to_le_bytes());
        ix.extend_from_slice(&e.position.to_le_bytes());
    }
    ix.extend_from_slice(&crc32c::crc32c(&ix).to_le_bytes());

    let mut tix = Vec::with_capacity(32 + entries.len() * 12);
    tix.extend_from_slice(TIME_MAGIC);
    tix.extend_from_slice(&base_offset.to_le_bytes());
    tix.extend_from_slice(&meta.size.to_le_bytes());
    tix.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        tix.extend_from_slice(&e.timestamp_ms.to_le_bytes());
        tix.extend_from_slice(&e.rel_offset.to_le_bytes());
    }
    tix.extend_from_slice(&crc32c::crc32c(&tix).to_le_bytes());

    fs::write(index_path, ix)?;
    fs::write(time_index_path, tix)
}

/// The entries and metadata from a segment's index files, or `None` if either file is missing,
/// damaged, or describes a different segment size than `segment_len`.
pub(crate) fn load_index_files(
    index_path: &Path,
    time_index_path: &Path,
    base_offset: u64,
    segment_len: u64,
) -> Option<(SealedMeta, Vec<IndexEntry>)> {
    let ix = fs::read(index_path).ok()?;
    let tix = fs::read(time_index_path).ok()?;
    let mut ix = Reader::checked(&ix, OFFSET_MAGIC)?;
    let mut tix = Reader::checked(&tix, TIME_MAGIC)?;

    let ts = |v: i64| (v != NO_TS).then_some(v);
    let (base, end_offset, size) = (ix.u64()?, ix.u64()?, ix.u64()?);
    let (first_ts, last_ts, count) = (ts(ix.i64()?), ts(ix.i64()?), ix.u32()?);
    let (t_base, t_size, t_count) = (tix.u64()?, tix.u64()?, tix.u32()?);
    if base != base_offset || t_base != base_offset || size != segment_len || t_size != size || t_count != count {
        return None;
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (rel_offset, position) = (ix.u32()?, ix.u32()?);
        let (timestamp_ms, t_rel) = (tix.i64()?, tix.u32()?);
        if t_rel != rel_offset || position as u64 >= size {
            return None;
        }
        entries.push(IndexEntry { rel_offset, position, timestamp_ms });
    }
    if !ix.rest.is_empty() || !tix.rest.is_empty() {
        return None;
    }
    Some((SealedMeta { end_offset, size, first_ts, last_ts }, entries))
}

/// Parses an index file body after checking its magic and trailing CRC.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn checked(file: &'a [u8], magic: &[u8; 8]) -> Option<Self> {
        let body_len = file.len().checked_sub(4)?;
        let (body, crc) = file.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc || !body.starts_with(magic) {
            return None;
        }
        Some(Reader { rest: &body[magic.len()..] })
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
}
