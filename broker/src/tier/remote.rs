//! Reading records of uploaded segments straight from the object store: the frame index of a
//! segment object is fetched once (one ranged GET of its footer), then each frame with one
//! ranged GET, both through the bounded [`FrameCache`].

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::cache::{CacheKey, Cached, FrameCache};
use super::frames::{self, FrameIndex};
use super::manifest::{Manifest, SegmentRef};
use super::{Result, TierError, TierStore};
use crate::log::StoredRecord;
use crate::log::record::{RecordIter, RecordView};

/// Bytes read from the end of an object to find its footer in one GET (a footer of up to
/// ~2,000 frames, i.e. segments of up to ~500 MiB at the default frame size).
const TAIL_GUESS: u64 = 64 << 10;
/// Frames of one segment fetched ahead, concurrently, during a read.
const FRAMES_AHEAD: usize = 4;

/// What [`RemoteReader::read`] asks for.
#[derive(Debug, Clone, Copy)]
pub struct RemoteReadRequest {
    pub from: u64,
    /// Stop before this offset (where the local log takes over).
    pub until: u64,
    pub max_records: usize,
    /// Key and data bytes; at least one record is returned if any is available.
    pub max_bytes: usize,
    /// Records older than this are skipped (expired by retention, segment not yet removed).
    pub min_timestamp_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct RemoteRead {
    pub records: Vec<StoredRecord>,
    /// Where the next read continues: after the last record returned (or skipped), or `until`
    /// when the manifest holds nothing more below it.
    pub next: u64,
}

#[derive(Clone)]
pub struct RemoteReader {
    tier: TierStore,
    cache: Arc<FrameCache>,
}

impl RemoteReader {
    pub fn new(tier: TierStore, cache: Arc<FrameCache>) -> Self {
        RemoteReader { tier, cache }
    }

    pub fn cache(&self) -> &Arc<FrameCache> {
        &self.cache
    }

    pub fn tier(&self) -> &TierStore {
        &self.tier
    }

    fn corrupt(&self, seg: &SegmentRef, reason: String) -> TierError {
        TierError::Corrupt { path: self.tier.path(&seg.key).to_string(), reason }
    }

    async fn get_range(&self, seg: &SegmentRef, range: std::ops::Range<u64>) -> Result<Bytes> {
        let path = self.tier.path(&seg.key);
        let bytes = self
            .tier
            .store()
            .get_range(&path, range.clone())
            .await
            .map_err(|e| TierError::store("ranged get", &path, e))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(self.corrupt(seg, format!("asked for bytes {range:?}, got {}", bytes.len())));
        }
        self.cache.counters.fetched_bytes.inc_by(bytes.len() as u64);
        Ok(bytes)
    }

    /// The frame index of a segment object (cached). Objects of the earlier whole-file format
    /// read as one frame.
    pub async fn index(&self, seg: &SegmentRef) -> Result<Arc<FrameIndex>> {
        let key = CacheKey::Index(Arc::from(seg.key.as_str()));
        if let Some(Cached::Index(index)) = self.cache.get(&key) {
            return Ok(index);
        }
        let len = seg.stored_bytes;
        let mut tail = self.get_range(seg, len - len.min(TAIL_GUESS)..len).await?;
        let index = if frames::is_framed(&tail) {
            let need = frames::footer_len(&tail).map_err(|e| self.corrupt(seg, e))? as u64;
            if need > tail.len() as u64 && need <= len {
                tail = self.get_range(seg, len - need..len).await?;
            }
            frames::parse_footer(&tail, len).map_err(|e| self.corrupt(seg, e))?
        } else {
            FrameIndex::whole(
                seg.compression,
                seg.base_offset,
                seg.first_ts_ms as i64,
                seg.records,
                seg.raw_bytes,
                seg.stored_bytes,
            )
        };
        let index = Arc::new(index);
        self.cache.insert(key, Cached::Index(index.clone()), index.footer_len().max(64) as u64);
        Ok(index)
    }

    /// Frame `i` of a segment object, decompressed: whole, CRC-carrying records (cached).
    pub async fn frame(&self, seg: &SegmentRef, index: &Arc<FrameIndex>, i: usize) -> Result<Bytes> {
        let key = CacheKey::Frame(Arc::from(seg.key.as_str()), i as u32);
        if let Some(Cached::Frame(raw)) = self.cache.get(&key) {
            return Ok(raw);
        }
        let stored = self.get_range(seg, index.stored_range(i)).await?;
        let index2 = index.clone();
        let raw = tokio::task::spawn_blocking(move || index2.decode_frame(i, &stored))
            .await
            .map_err(|e| self.corrupt(seg, format!("decode task failed: {e}")))?
            .map_err(|e| self.corrupt(seg, e))?;
        self.cache.insert(key, Cached::Frame(raw.clone()), raw.len() as u64);
        Ok(raw)
    }

    /// Records of `manifest`'s segments from `req.from`, in offset order, below `req.until`.
    pub async fn read(&self, manifest: &Manifest, req: RemoteReadRequest) -> Result<RemoteRead> {
        let mut out = RemoteRead { records: Vec::new(), next: req.from };
        let mut bytes = 0usize;
        let segs = &manifest.segments;
        let first = segs.partition_point(|s| s.end_offset <= req.from);
        for seg in &segs[first..] {
            if seg.base_offset >= req.until {
                break;
            }
            out.next = out.next.max(seg.base_offset);
            let index = self.index(seg).await?;
            let start = index.frame_for_offset(out.next);
            let mut fetches = futures::stream::iter(start..index.frames.len())
                .map(|i| self.frame(seg, &index, i))
                .buffered(FRAMES_AHEAD);
            while let Some(frame) = fetches.next().await {
                for rec in RecordIter::new(frame?) {
                    let rec = rec.map_err(|e| self.corrupt(seg, e.to_string()))?;
                    if rec.offset < out.next {
                        continue;
                    }
                    if rec.offset >= req.until {
                        out.next = req.until;
                        return Ok(out);
                    }
                    if rec.timestamp_ms < req.min_timestamp_ms {
                        out.next = rec.offset + 1;
                        continue;
                    }
                    let size = rec.key.len() + rec.data.len();
                    if !out.records.is_empty() && bytes + size > req.max_bytes {
                        return Ok(out);
                    }
                    bytes += size;
                    out.next = rec.offset + 1;
                    out.records.push(stored(seg, rec).map_err(|e| self.corrupt(seg, e))?);
                    if out.records.len() >= req.max_records {
                        return Ok(out);
                    }
                }
            }
            out.next = out.next.max(seg.end_offset);
        }
        out.next = out.next.max(req.until);
        Ok(out)
    }

    /// First offset in `from..until` whose record's timestamp is at least `ts_ms`, if the
    /// manifest's segments hold one.
    pub async fn offset_at_timestamp(
        &self,
        manifest: &Manifest,
        ts_ms: i64,
        from: u64,
        until: u64,
    ) -> Result<Option<u64>> {
        for seg in &manifest.segments {
            if seg.end_offset <= from || (seg.last_ts_ms as i64) < ts_ms {
                continue;
            }
            if seg.base_offset >= until {
                break;
            }
            let index = self.index(seg).await?;
            for i in index.frame_for_time(ts_ms)..index.frames.len() {
                for rec in RecordIter::new(self.frame(seg, &index, i).await?) {
                    let rec = rec.map_err(|e| self.corrupt(seg, e.to_string()))?;
                    if rec.offset >= until {
                        return Ok(None);
                    }
                    if rec.offset >= from && rec.timestamp_ms >= ts_ms {
                        return Ok(Some(rec.offset));
                    }
                }
            }
        }
        Ok(None)
    }
}

fn stored(seg: &SegmentRef, rec: RecordView) -> std::result::Result<StoredRecord, String> {
    if !seg.contains_offset(rec.offset) {
        return Err(format!(
            "record {} lies outside the segment's {}..{}",
            rec.offset, seg.base_offset, seg.end_offset
        ));
    }
    let partition_key = String::from_utf8(rec.key.to_vec())
        .map_err(|_| format!("record {}: partition key is not UTF-8", rec.offset))?;
    Ok(StoredRecord { offset: rec.offset, timestamp_ms: rec.timestamp_ms, partition_key, data: rec.data })
}
