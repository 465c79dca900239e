//! Segment files and what readers know about each segment.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{self, IndexBuilder, IndexEntry, SealedMeta};
use super::record::SegmentCursor;

pub(crate) fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

pub(crate) fn time_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

/// The base offset of a `{base_offset:020}.{ext}` file name.
pub(crate) fn parse_file_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)
}

/// Removes a segment's files; already-missing files are fine (a deletion may have been cut short).
pub(crate) fn delete_files(dir: &Path, base_offset: u64) -> io::Result<()> {
    for path in [index_path(dir, base_offset), time_index_path(dir, base_offset), log_path(dir, base_offset)] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Makes file creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What readers know about a segment: only its visible (acknowledged) part.
pub(crate) struct Segment {
    pub base_offset: u64,
    pub file: Arc<File>,
    /// Bytes of visible records.
    pub size: u64,
    /// Offset after the last visible record (`base_offset` when empty).
    pub end_offset: u64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub index: Vec<IndexEntry>,
}

impl Segment {
    pub(crate) fn empty(base_offset: u64, file: Arc<File>) -> Self {
        Segment {
            base_offset,
            file,
            size: 0,
            end_offset: base_offset,
            first_ts: None,
            last_ts: None,
            index: Vec::new(),
        }
    }

    /// A sealed segment, its index thinned (`index::SEALED_INTERVAL_BYTES`).
    pub(crate) fn from_sealed(base_offset: u64, file: Arc<File>, meta: SealedMeta, index: &[IndexEntry]) -> Self {
        Segment {
            base_offset,
            file,
            size: meta.size,
            end_offset: meta.end_offset,
            first_ts: meta.first_ts,
            last_ts: meta.last_ts,
            index: index::thinned(index, index::SEALED_INTERVAL_BYTES),
        }
    }

    /// Sealed now: its index thinned, the full one handed back (for its index files).
    pub(crate) fn seal_index(&mut self) -> Vec<IndexEntry> {
        let thin = index::thinned(&self.index, index::SEALED_INTERVAL_BYTES);
        std::mem::replace(&mut self.index, thin)
    }

    pub(crate) fn meta(&self) -> SealedMeta {
        SealedMeta { end_offset: self.end_offset, size: self.size, first_ts: self.first_ts, last_ts: self.last_ts }
    }

    /// A file position at or before the record with `offset` (which must be in this segment).
    pub(crate) fn position_for_offset(&self, offset: u64) -> u64 {
        index::position_for_offset(&self.index, (offset - self.base_offset) as u32)
    }

    pub(crate) fn position_for_time(&self, ts_ms: i64) -> u64 {
        index::position_for_time(&self.index, ts_ms)
    }
}

/// The valid prefix of a segment file, as found by reading every record.
pub(crate) struct Scan {
    pub segment: Segment,
    /// Index state after the last valid record, so the writer can carry on where it stopped.
    pub builder: IndexBuilder,
    /// Why the scan stopped before the end of the file, if it did; `segment.size` is where.
    pub damage: Option<String>,
}

/// Reads and validates every record of a segment file, rebuilding its index. A bad checksum,
/// a cut-off record or an offset out of sequence ends the valid prefix.
pub(crate) fn scan(file: Arc<File>, base_offset: u64, index_interval: u32) -> io::Result<Scan> {
    let file_len = file.metadata()?.len();
    let mut cursor = SegmentCursor::new(file.clone(), 0, file_len, 1 << 20, 1 << 20);
    let mut segment = Segment::empty(base_offset, file);
    let mut builder = IndexBuilder::new(index_interval);
    let damage = loop {
        let position = cursor.position();
        let record = match cursor.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break None,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => break Some(e.to_string()),
            Err(e) => return Err(e),
        };
        if record.offset != segment.end_offset {
            break Some(format!(
                "offset {} where {} was expected at file position {position}",
                record.offset, segment.end_offset
            ));
        }
        if position > u32::MAX as u64 {
            break Some(format!("segment exceeds 4 GiB at file position {position}"));
        }
        if builder.observe(record.encoded_len) {
            segment.index.push(IndexEntry {
                rel_offset: (record.offset - base_offset) as u32,
                position: position as u32,
                timestamp_ms: record.timestamp_ms,
            });
        }
        segment.first_ts.get_or_insert(record.timestamp_ms);
        segment.last_ts = Some(record.timestamp_ms);
        segment.end_offset += 1;
        segment.size = cursor.position();
    };
    Ok(Scan { segment, builder, damage })
}
