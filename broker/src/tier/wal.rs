//! Write-ahead objects of durability `object`: each is one immutable batch of freshly
//! appended records, from any number of streams and shards, written with create-if-absent
//! under `<prefix>/wal/`. A record is acknowledged only once the object holding it exists;
//! the object is deleted once sealed segments in the manifests cover all of its records.
//!
//! Format (little endian), one object:
//!
//! ```text
//! magic        8 bytes  "SFWAL002"
//! chunk_count  u32
//! chunk_count times:
//!   stream_len u16, stream (UTF-8)
//!   incarnation u64          the stream's incarnation (a re-created stream is another one)
//!   shard_len  u16, shard id (UTF-8)
//!   epoch      u64           the writer's ownership epoch of the shard (0: not claimed yet)
//!   first_offset u64         records have offsets first_offset, first_offset + 1, ...
//!   timestamp_ms i64         one timestamp per appended batch, as the log gave it
//!   record_count u32
//!   record_count times: key_len u16, key (UTF-8), data_len u32, data
//! crc32c       u32      over every byte before it
//! ```
//!
//! A chunk is one append to one shard log: its records got contiguous offsets and one
//! timestamp there, so the object holds everything needed to rebuild them exactly. The
//! epoch settles which of two chunks at the same offsets is the shard's: a superseded owner
//! may still write objects it never acknowledges (see `archive::records_past`). Objects of
//! the first format ("SFWAL001", no epoch) read as epoch 0.

use bytes::{Buf, BufMut, Bytes};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutPayload};

use super::{Result, TierError, TierStore};

const MAGIC: &[u8; 8] = b"SFWAL002";
const MAGIC_WITHOUT_EPOCH: &[u8; 8] = b"SFWAL001";
/// Write-ahead objects read at once when replaying.
const PARALLEL_READS: usize = 16;

/// One record of a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    pub partition_key: String,
    pub data: Bytes,
}

/// The records of one append to one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalChunk {
    pub stream: String,
    pub incarnation: u64,
    pub shard: String,
    pub epoch: u64,
    pub first_offset: u64,
    pub timestamp_ms: i64,
    pub records: Vec<WalRecord>,
}

impl WalChunk {
    /// Offset after the chunk's last record.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + self.records.len() as u64
    }

    /// Bytes the chunk takes in an object.
    pub fn encoded_len(&self) -> usize {
        2 + self.stream.len()
            + 8
            + 2
            + self.shard.len()
            + 8
            + 8
            + 8
            + 4
            + self.records.iter().map(|r| 2 + r.partition_key.len() + 4 + r.data.len()).sum::<usize>()
    }
}

/// How far one object reaches into one shard: it may be deleted once the shard's
/// uploaded segments end at or after `end_offset` (or the stream is gone).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalReach {
    pub stream: String,
    pub incarnation: u64,
    pub shard: String,
    pub end_offset: u64,
}

/// Per (stream, incarnation, shard), the largest end offset among `chunks`.
pub fn reach_of(chunks: &[WalChunk]) -> Vec<WalReach> {
    let mut out: Vec<WalReach> = Vec::new();
    for c in chunks {
        match out.iter_mut().find(|r| r.stream == c.stream && r.incarnation == c.incarnation && r.shard == c.shard) {
            Some(r) => r.end_offset = r.end_offset.max(c.end_offset()),
            None => out.push(WalReach {
                stream: c.stream.clone(),
                incarnation: c.incarnation,
                shard: c.shard.clone(),
                end_offset: c.end_offset(),
            }),
        }
    }
    out.sort();
    out
}

/// The bytes of one write-ahead object.
pub fn encode(chunks: &[WalChunk]) -> Bytes {
    let len = MAGIC.len() + 4 + chunks.iter().map(WalChunk::encoded_len).sum::<usize>() + 4;
    let mut buf = Vec::with_capacity(len);
    buf.put_slice(MAGIC);
    buf.put_u32_le(chunks.len() as u32);
    for c in chunks {
        buf.put_u16_le(c.stream.len() as u16);
        buf.put_slice(c.stream.as_bytes());
        buf.put_u64_le(c.incarnation);
        buf.put_u16_le(c.shard.len() as u16);
        buf.put_slice(c.shard.as_bytes());
        buf.put_u64_le(c.epoch);
        buf.put_u64_le(c.first_offset);
        buf.put_i64_le(c.timestamp_ms);
        buf.put_u32_le(c.records.len() as u32);
        for r in &c.records {
            buf.put_u16_le(r.partition_key.len() as u16);
            buf.put_slice(r.partition_key.as_bytes());
            buf.put_u32_le(r.data.len() as u32);
            buf.put_slice(&r.data);
        }
    }
    let crc = crc32c::crc32c(&buf);
    buf.put_u32_le(crc);
    debug_assert_eq!(buf.len(), len);
    Bytes::from(buf)
}

/// The chunks of one object; record data are slices of `bytes` (no copy).
pub fn decode(path: &str, bytes: &Bytes) -> Result<Vec<WalChunk>> {
    let corrupt = |reason: &str| TierError::Corrupt { path: path.to_string(), reason: reason.to_string() };
    if bytes.len() < MAGIC.len() + 8 {
        return Err(corrupt("not a write-ahead object (too short)"));
    }
    let with_epoch = match &bytes[..MAGIC.len()] {
        m if m == MAGIC => true,
        m if m == MAGIC_WITHOUT_EPOCH => false,
        _ => return Err(corrupt("not a write-ahead object (bad magic)")),
    };
    let body_len = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[body_len..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..body_len]) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    let body = bytes.slice(MAGIC.len()..body_len);
    let mut cur = Cursor { buf: body.clone(), at: 0, with_epoch };
    let count = cur.u32().ok_or_else(|| corrupt("chunk count cut off"))?;
    let mut chunks = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let chunk = cur.chunk().ok_or_else(|| corrupt("chunk cut off or not UTF-8"))?;
        chunks.push(chunk);
    }
    if cur.at != body.len() {
        return Err(corrupt("bytes after the last chunk"));
    }
    Ok(chunks)
}

/// Reads fields off a `Bytes` without copying the large ones.
struct Cursor {
    buf: Bytes,
    at: usize,
    with_epoch: bool,
}

impl Cursor {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let out = self.buf.slice(self.at..end);
        self.at = end;
        Some(out)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|mut b| b.get_u16_le())
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|mut b| b.get_u32_le())
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|mut b| b.get_u64_le())
    }
    fn string(&mut self, len: usize) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn chunk(&mut self) -> Option<WalChunk> {
        let stream_len = self.u16()? as usize;
        let stream = self.string(stream_len)?;
        let incarnation = self.u64()?;
        let shard_len = self.u16()? as usize;
        let shard = self.string(shard_len)?;
        let epoch = if self.with_epoch { self.u64()? } else { 0 };
        let first_offset = self.u64()?;
        let timestamp_ms = self.u64()? as i64;
        let count = self.u32()?;
        // Each record takes at least 6 bytes: a count beyond that is damage, not a reason to allocate.
        if count as usize > (self.buf.len() - self.at) / 6 {
            return None;
        }
        let mut records = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let key_len = self.u16()? as usize;
            let partition_key = self.string(key_len)?;
            let data_len = self.u32()? as usize;
            let data = self.take(data_len)?;
            records.push(WalRecord { partition_key, data });
        }
        Some(WalChunk { stream, incarnation, shard, epoch, first_offset, timestamp_ms, records })
    }
}

impl TierStore {
    fn wal_dir(&self) -> Path {
        self.path(super::layout::wal_dir())
    }

    /// Write one batch as a new object (create-if-absent; the name is fresh, so a
    /// collision is a conflict, never an overwrite). Returns the object's path.
    pub async fn put_wal(&self, body: Bytes) -> Result<Path> {
        let name = format!(
            "{:013}-{:016x}.wal",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()),
            rand::random::<u64>()
        );
        let path = self.path(&format!("{}/{name}", super::layout::wal_dir()));
        match self.store().put_opts(&path, PutPayload::from_bytes(body), PutMode::Create.into()).await {
            Ok(_) => Ok(path),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(TierError::Conflict { path: path.to_string(), reason: "write-ahead object already exists".into() })
            }
            Err(e) => Err(TierError::store("put", &path, e)),
        }
    }

    /// Every write-ahead object, oldest name first.
    pub async fn list_wal(&self) -> Result<Vec<Path>> {
        let dir = self.wal_dir();
        let mut paths: Vec<Path> = match self.store().list(Some(&dir)).map_ok(|m| m.location).try_collect().await {
            Ok(p) => p,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(TierError::store("list", &dir, e)),
        };
        paths.retain(|p| p.extension() == Some("wal"));
        paths.sort();
        Ok(paths)
    }

    /// The chunks of one write-ahead object.
    pub async fn read_wal(&self, path: &Path) -> Result<Vec<WalChunk>> {
        let got = self.store().get(path).await.map_err(|e| TierError::store("get", path, e))?;
        let bytes = got.bytes().await.map_err(|e| TierError::store("get", path, e))?;
        decode(path.as_ref(), &bytes)
    }

    /// Every chunk of every write-ahead object.
    pub async fn read_all_wal(&self) -> Result<Vec<WalChunk>> {
        let paths = self.list_wal().await?;
        Ok(self.read_wal_objects(paths).await?.into_iter().flat_map(|(_, chunks)| chunks).collect())
    }

    /// The chunks of each of `paths`, in their order, read a few at a time; objects deleted
    /// meanwhile (their records are in uploaded segments) are left out.
    pub async fn read_wal_objects(&self, paths: Vec<Path>) -> Result<Vec<(Path, Vec<WalChunk>)>> {
        futures::stream::iter(paths)
            .map(|path| async move {
                match self.read_wal(&path).await {
                    Ok(chunks) => Ok(Some((path, chunks))),
                    Err(TierError::Store { source: object_store::Error::NotFound { .. }, .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(PARALLEL_READS)
            .try_filter_map(|read| async move { Ok(read) })
            .try_collect()
            .await
    }

    /// Delete one write-ahead object (a missing one is fine).
    pub async fn delete_wal(&self, path: &Path) -> Result<()> {
        match self.store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(TierError::store("delete", path, e)),
        }
    }
}
