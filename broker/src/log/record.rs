//! The on-disk record format and a cursor that reads records back from a segment file.
//!
//! Layout (little endian), one record after another with no padding:
//!
//! ```text
//! crc32c    u32   over every byte after this field (len .. end of data)
//! len       u32   bytes after this field: 18 + key_len + data_len
//! offset    u64   the record's log offset, so a reader never has to count
//! timestamp i64   wall-clock ms at append
//! key_len   u16
//! key       [u8; key_len]   partition key, UTF-8
//! data      [u8; ...]
//! ```
//!
//! The length prefix lets recovery find where a torn write starts; the CRC covers the length too,
//! so a damaged length is detected rather than trusted.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// crc(4) + len(4) + offset(8) + timestamp(8) + key_len(2).
pub(crate) const HEADER_LEN: usize = 26;
/// Bytes counted by `len` besides key and data: offset, timestamp, key_len.
const LEN_FIXED: usize = HEADER_LEN - 8;
pub(crate) const MAX_KEY_LEN: usize = u16::MAX as usize;
/// `len` is a u32; keep well clear of it so size arithmetic never overflows.
pub(crate) const MAX_DATA_LEN: usize = (u32::MAX / 2) as usize;

/// Bytes one record takes on disk.
pub(crate) fn encoded_len(key_len: usize, data_len: usize) -> usize {
    HEADER_LEN + key_len + data_len
}

/// Appends one encoded record to `buf` (no allocation if `buf` has capacity).
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, timestamp_ms: i64, key: &[u8], data: &[u8]) {
    debug_assert!(key.len() <= MAX_KEY_LEN && data.len() <= MAX_DATA_LEN);
    let start = buf.len();
    let len = (LEN_FIXED + key.len() + data.len()) as u32;
    buf.extend_from_slice(&[0; 4]); // crc, filled in once the rest is in place
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(data);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded record; `key` and `data` share the cursor's read buffer (no copy).
pub(crate) struct RecordView {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Bytes,
    pub data: Bytes,
    /// Bytes the record takes on disk.
    pub encoded_len: usize,
}

/// Checks one whole encoded record (`rec` holds exactly `8 + len` bytes: crc, len, body) and
/// returns its view; `Err` names what is wrong.
fn view(rec: Bytes) -> Result<RecordView, &'static str> {
    let crc = u32::from_le_bytes(rec[0..4].try_into().unwrap());
    if crc32c::crc32c(&rec[4..]) != crc {
        return Err("checksum mismatch");
    }
    let offset = u64::from_le_bytes(rec[8..16].try_into().unwrap());
    let timestamp_ms = i64::from_le_bytes(rec[16..24].try_into().unwrap());
    let key_len = u16::from_le_bytes(rec[24..26].try_into().unwrap()) as usize;
    if HEADER_LEN + key_len > rec.len() {
        return Err("key length exceeds record");
    }
    Ok(RecordView {
        offset,
        timestamp_ms,
        key: rec.slice(HEADER_LEN..HEADER_LEN + key_len),
        data: rec.slice(HEADER_LEN + key_len..),
        encoded_len: rec.len(),
    })
}

/// The records of an in-memory run of whole records (a segment file, or a frame of one read
/// back from the object store), each CRC-checked; anything else is an `InvalidData` error.
pub(crate) struct RecordIter {
    buf: Bytes,
    pos: usize,
}

impl RecordIter {
    pub(crate) fn new(buf: Bytes) -> Self {
        RecordIter { buf, pos: 0 }
    }

    /// Byte position of the next record in the buffer.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn corrupt(&self, what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what} at position {}", self.pos))
    }
}

impl Iterator for RecordIter {
    type Item = io::Result<RecordView>;

    fn next(&mut self) -> Option<io::Result<RecordView>> {
        let remaining = self.buf.len() - self.pos;
        if remaining == 0 {
            return None;
        }
        let result = (|| {
            if remaining < HEADER_LEN {
                return Err(self.corrupt("record header cut off"));
            }
            let len = u32::from_le_bytes(self.buf[self.pos + 4..self.pos + 8].try_into().unwrap()) as usize;
            if len < LEN_FIXED {
                return Err(self.corrupt("record length too small"));
            }
            if 8 + len > remaining {
                return Err(self.corrupt("record cut off"));
            }
            let rec = view(self.buf.slice(self.pos..self.pos + 8 + len)).map_err(|what| self.corrupt(what))?;
            self.pos += rec.encoded_len;
            Ok(rec)
        })();
        if result.is_err() {
            self.pos = self.buf.len(); // stop after the first error
        }
        Some(result)
    }
}

/// Reads records sequentially from `pos` up to `limit` with positioned reads (no shared file
/// cursor, so any number of readers can use the same `File` while the writer appends).
pub(crate) struct SegmentCursor {
    file: Arc<File>,
    pos: u64,
    limit: u64,
    /// Bytes to read at the next refill; doubles up to `max_chunk` so short reads stay cheap
    /// and long scans make few syscalls.
    chunk: usize,
    max_chunk: usize,
    buf: Bytes,
    buf_pos: u64,
}

impl SegmentCursor {
    /// Reads `first_chunk` bytes at first, doubling per refill up to `max_chunk`; a record larger
    /// than that is read whole.
    pub(crate) fn new(file: Arc<File>, pos: u64, limit: u64, first_chunk: usize, max_chunk: usize) -> Self {
        let chunk = first_chunk.max(HEADER_LEN);
        SegmentCursor { file, pos, limit, chunk, max_chunk: max_chunk.max(chunk), buf: Bytes::new(), buf_pos: pos }
    }

    /// File position of the next record.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// The next record, or `None` at `limit`. A record cut off by `limit`, with a bad length or
    /// failing its checksum is an `InvalidData` error and the cursor stays at its start.
    pub(crate) fn next_record(&mut self) -> io::Result<Option<RecordView>> {
        if self.pos >= self.limit {
            return Ok(None);
        }
        let remaining = self.limit - self.pos;
        if remaining < HEADER_LEN as u64 {
            return Err(self.corrupt("record header cut off"));
        }
        let head = self.window(HEADER_LEN)?;
        let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as u64;
        if len < LEN_FIXED as u64 {
            return Err(self.corrupt("record length too small"));
        }
        if 8 + len > remaining {
            return Err(self.corrupt("record cut off"));
        }
        let total = 8 + len as usize;
        let rec = self.window(total)?;
        let rec = view(rec).map_err(|what| self.corrupt(what))?;
        self.pos += total as u64;
        Ok(Some(rec))
    }

    /// `n` bytes starting at `pos`, refilling the buffer from the file when needed.
    fn window(&mut self, n: usize) -> io::Result<Bytes> {
        let skip = (self.pos - self.buf_pos) as usize;
        if skip + n <= self.buf.len() {
            return Ok(self.buf.slice(skip..skip + n));
        }
        let want = (n.max(self.chunk) as u64).min(self.limit - self.pos) as usize;
        self.chunk = (self.chunk * 2).min(self.max_chunk);
        let mut fresh = BytesMut::zeroed(want);
        self.file.read_exact_at(&mut fresh, self.pos)?;
        self.buf = fresh.freeze();
        self.buf_pos = self.pos;
        Ok(self.buf.slice(0..n))
    }

    fn corrupt(&self, what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what} at file position {}", self.pos))
    }
}
