//! Opening a log directory: find the segments, trust sealed ones whose index files check out,
//! scan the rest, and cut a torn or corrupt tail off the last segment.
//!
//! Only the last segment can have a torn tail after a crash (earlier ones were synced when
//! sealed), so it is always scanned; damage found in a sealed segment is also cut off, with a
//! warning, rather than refusing to open.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::index::{self, IndexBuilder};
use super::segment::{self, Segment};

/// The retention start survives restarts in this file (8-byte offset + CRC32C).
const START_OFFSET_FILE: &str = "start_offset";

pub(crate) struct Recovered {
    /// Never empty: the last entry is the active segment.
    pub segments: BTreeMap<u64, Segment>,
    /// Index state of the active segment's last record.
    pub active_builder: IndexBuilder,
    pub start_offset: u64,
}

pub(crate) fn recover(dir: &Path, index_interval: u32) -> io::Result<Recovered> {
    fs::create_dir_all(dir)?;
    let persisted_start = read_start_offset(dir);

    let mut bases = Vec::new();
    let mut index_bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = segment::parse_file_name(name, "log") {
            bases.push(base);
        } else if let Some(base) =
            segment::parse_file_name(name, "index").or_else(|| segment::parse_file_name(name, "timeindex"))
        {
            index_bases.push(base);
        }
    }
    bases.sort_unstable();
    // Index files without a segment are left over from a deletion cut short.
    for base in index_bases.into_iter().filter(|b| bases.binary_search(b).is_err()) {
        segment::delete_files(dir, base)?;
    }

    let mut segments = BTreeMap::new();
    let Some((&last, sealed)) = bases.split_last() else {
        // A new log, or one whose files were all deleted: start where retention left off.
        let base = persisted_start.unwrap_or(0);
        let file = Arc::new(segment::open_rw(&segment::log_path(dir, base), true)?);
        segment::sync_dir(dir)?;
        segments.insert(base, Segment::empty(base, file));
        return Ok(Recovered { segments, active_builder: IndexBuilder::new(index_interval), start_offset: base });
    };

    for &base in sealed {
        let seg = open_sealed(dir, base, index_interval)?;
        if seg.end_offset == seg.base_offset {
            tracing::warn!(dir = %dir.display(), base, "removing sealed segment without valid records");
            segment::delete_files(dir, base)?;
        } else {
            segments.insert(base, seg);
        }
    }

    let file = Arc::new(segment::open_rw(&segment::log_path(dir, last), false)?);
    let scan = scan_and_truncate(dir, file, last, index_interval)?;
    // The active segment's index files are written when it is sealed; stale ones would mislead.
    for path in [segment::index_path(dir, last), segment::time_index_path(dir, last)] {
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(e);
        }
    }
    segments.insert(last, scan.segment);

    let first_base = *segments.keys().next().expect("active segment present");
    let end_offset = segments.values().next_back().expect("active segment present").end_offset;
    // A persisted start below the first segment: the segments before were evicted to the
    // object store (local retention), and their records are still readable from there.
    let start_offset = persisted_start.unwrap_or(first_base).min(end_offset);
    // Sealed segments wholly before the start are left over from a trim cut short.
    let doomed: Vec<u64> =
        segments.iter().filter(|(b, s)| **b != last && s.end_offset <= start_offset).map(|(b, _)| *b).collect();
    for base in doomed {
        segments.remove(&base);
        segment::delete_files(dir, base)?;
    }
    Ok(Recovered { segments, active_builder: scan.builder, start_offset })
}

/// A sealed segment from its index files if they match the file, else by scanning it (and
/// rewriting the index files).
fn open_sealed(dir: &Path, base: u64, index_interval: u32) -> io::Result<Segment> {
    let file = Arc::new(segment::open_rw(&segment::log_path(dir, base), false)?);
    let len = file.metadata()?.len();
    let (ix, tix) = (segment::index_path(dir, base), segment::time_index_path(dir, base));
    if let Some((meta, entries)) = index::load_index_files(&ix, &tix, base, len) {
        return Ok(Segment::from_sealed(base, file, meta, &entries));
    }
    // Expected for segments restored from the object store (indexes are not uploaded).
    tracing::info!(dir = %dir.display(), base, "index of sealed segment missing or damaged; rebuilding");
    let mut seg = scan_and_truncate(dir, file, base, index_interval)?.segment;
    let entries = seg.seal_index();
    if seg.end_offset > seg.base_offset
        && let Err(e) = index::write_index_files(&ix, &tix, base, &seg.meta(), &entries)
    {
        // Not fatal: the next start-up rebuilds it again.
        tracing::warn!(dir = %dir.display(), base, error = %e, "could not write rebuilt index");
    }
    Ok(seg)
}

fn scan_and_truncate(dir: &Path, file: Arc<fs::File>, base: u64, index_interval: u32) -> io::Result<segment::Scan> {
    let scan = segment::scan(file.clone(), base, index_interval)?;
    if let Some(damage) = &scan.damage {
        tracing::warn!(
            dir = %dir.display(),
            base,
            valid_bytes = scan.segment.size,
            valid_end_offset = scan.segment.end_offset,
            %damage,
            "truncating segment to its last valid record"
        );
        file.set_len(scan.segment.size)?;
        file.sync_all()?;
    }
    Ok(scan)
}

fn read_start_offset(dir: &Path) -> Option<u64> {
    let bytes = fs::read(dir.join(START_OFFSET_FILE)).ok()?;
    let (offset, crc) = bytes.split_first_chunk::<8>()?;
    if crc != crc32c::crc32c(offset).to_le_bytes() {
        tracing::warn!(dir = %dir.display(), "ignoring damaged start_offset file");
        return None;
    }
    Some(u64::from_le_bytes(*offset))
}

/// Atomically replaces the persisted start offset (write a temp file, sync, rename).
pub fn write_start_offset(dir: &Path, offset: u64) -> io::Result<()> {
    let mut bytes = offset.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&offset.to_le_bytes()).to_le_bytes());
    let tmp = dir.join(format!("{START_OFFSET_FILE}.tmp"));
    let file = fs::File::create(&tmp)?;
    io::Write::write_all(&mut &file, &bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(START_OFFSET_FILE))?;
    segment::sync_dir(dir)
}

pub(crate) fn remove_start_offset(dir: &Path) -> io::Result<()> {
    for name in [START_OFFSET_FILE, "start_offset.tmp"] {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
