//! Recovery: what `Log::open` does before the writer starts.
//!
//! Every segment is scanned in base order with large buffered reads, checking
//! the header and every frame's length and checksum. At the first problem the
//! log is cut: the bad segment is truncated there (or deleted when its header
//! is bad or its base does not follow on), every later segment is deleted, and
//! the cut is reported in [`Recovery::cut`] and logged as a warning. All that
//! lies before the cut is kept.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::segment::{self, FRAME_HEADER_BYTES, FrameHeader, HEADER_BYTES, SegmentFile};
use crate::shared::sync_dir;
use crate::{LogError, Position};

/// Read buffer for scanning segments.
const SCAN_BUFFER_BYTES: usize = 4 << 20;

/// What `Log::open` found and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Segments kept.
    pub segments: u32,
    /// Records kept.
    pub records: u64,
    /// Bytes kept in segment files, headers included.
    pub bytes: u64,
    /// Where appends continue.
    pub head: Position,
    /// The cut made, if any bytes failed validation.
    pub cut: Option<Cut>,
    /// Time spent scanning and repairing.
    pub elapsed: Duration,
}

/// Where recovery cut the log and what it removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The segment file where the first bad bytes were found.
    pub segment: PathBuf,
    /// Offset of the bad bytes in that file (0 when the whole file went).
    pub offset_in_segment: u64,
    /// Where the kept log now ends: the new head.
    pub position: Position,
    /// Bytes removed from that segment (the whole file when it was deleted).
    pub bytes_cut: u64,
    pub reason: CutReason,
    /// Segments after it that were deleted.
    pub later_segments_removed: u32,
}

/// Why recovery cut the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CutReason {
    /// A frame runs past the end of the file: a write that did not finish.
    TornTail,
    /// A frame's checksum does not match its length and payload.
    ChecksumMismatch,
    /// A frame's length is larger than any record the log writes.
    BadLength,
    /// The segment header is missing or wrong; the segment was deleted.
    BadSegmentHeader,
    /// The segment's base does not follow on from the previous segment; it was deleted.
    Gap,
}

impl fmt::Display for CutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CutReason::TornTail => "torn tail (a record runs past the end of the file)",
            CutReason::ChecksumMismatch => "checksum mismatch",
            CutReason::BadLength => "bad record length",
            CutReason::BadSegmentHeader => "bad segment header",
            CutReason::Gap => "gap (segment does not follow on from the previous one)",
        })
    }
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log cut at position {} ({} offset {}): {}; {} bytes cut, {} later segments removed",
            self.position,
            self.segment.display(),
            self.offset_in_segment,
            self.reason,
            self.bytes_cut,
            self.later_segments_removed
        )
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "recovered {} records, {mib:.1} MiB in {} segments in {:.3}s; head {}",
            self.records,
            self.segments,
            self.elapsed.as_secs_f64(),
            self.head
        )?;
        match &self.cut {
            Some(cut) => write!(f, "; {cut}"),
            None => f.write_str("; no cut"),
        }
    }
}

/// The result of recovery: the kept segments (the last one is active) and
/// the report.
pub(crate) struct Recovered {
    pub segments: Vec<SegmentFile>,
    /// Length of the last (active) segment file.
    pub active_len: u64,
    pub report: Recovery,
}

/// Scans, validates and repairs the segments in `dir` (which must exist).
pub(crate) fn recover(dir: &Path) -> Result<Recovered, LogError> {
    let started = Instant::now();
    let found = list_segments(dir)?;
    let mut kept: Vec<(SegmentFile, u64)> = Vec::with_capacity(found.len());
    let mut records = 0u64;
    let mut cut = None;
    for (index, segment) in found.iter().enumerate() {
        let later = &found[index + 1..];
        let expected_base = kept.last().map(|(s, len)| s.base + len);
        if expected_base.is_some_and(|expected| expected != segment.base) {
            cut = Some(remove_from(segment, later, CutReason::Gap, expected_base)?);
            break;
        }
        match scan_segment(segment)? {
            Scan::BadHeader => {
                let end = expected_base.unwrap_or(segment.base + HEADER_BYTES);
                cut = Some(remove_from(
                    segment,
                    later,
                    CutReason::BadSegmentHeader,
                    Some(end),
                )?);
                break;
            }
            Scan::Frames {
                records: n,
                valid_len,
                file_len,
                bad,
            } => {
                records += n;
                kept.push((segment.clone(), valid_len));
                if let Some(reason) = bad {
                    cut = Some(cut_at(segment, valid_len, file_len, reason, later)?);
                    break;
                }
            }
        }
    }
    if kept.is_empty() {
        // A fresh log, or one whose only segment had a bad header: start a
        // segment at the same base, so that positions are never reused.
        let base = found.first().map_or(0, |s| s.base);
        let (segment, _file) = create_segment(dir, base)?;
        kept.push((segment, HEADER_BYTES));
    }
    let bytes = kept.iter().map(|(_, len)| len).sum();
    let (last, active_len) = kept
        .last()
        .map(|(s, len)| (s.base, *len))
        .unwrap_or_default();
    let report = Recovery {
        segments: kept.len() as u32,
        records,
        bytes,
        head: Position(last + active_len),
        cut,
        elapsed: started.elapsed(),
    };
    if let Some(cut) = &report.cut {
        tracing::warn!(dir = %dir.display(), "write-ahead log recovery: {cut}");
    }
    tracing::info!(dir = %dir.display(), "write-ahead log {report}");
    Ok(Recovered {
        segments: kept.into_iter().map(|(s, _)| s).collect(),
        active_len,
        report,
    })
}

/// Segment files in `dir`, in base order. Other files are left alone.
fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, LogError> {
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("listing log directory", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("listing log directory", dir, e))?;
        let name = entry.file_name();
        if let Some(base) = name.to_str().and_then(segment::parse_file_name) {
            segments.push(SegmentFile {
                base,
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|s| s.base);
    Ok(segments)
}

/// Creates an empty segment (header only), makes it durable and returns it
/// open for appending after the header. On failure the file is removed again.
pub(crate) fn create_segment(dir: &Path, base: u64) -> Result<(SegmentFile, File), LogError> {
    let segment = SegmentFile::new(dir, base);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&segment.path)
        .map_err(|e| LogError::io("creating log segment", &segment.path, e))?;
    let written = file
        .write_all(&segment::encode_header())
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io("writing log segment header", &segment.path, e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(&segment.path);
        return Err(e);
    }
    Ok((segment, file))
}

enum Scan {
    BadHeader,
    /// `valid_len`: bytes up to the end of the last good frame; `bad`: why the
    /// bytes after it (if any) are not kept.
    Frames {
        records: u64,
        valid_len: u64,
        file_len: u64,
        bad: Option<CutReason>,
    },
}

fn scan_segment(segment: &SegmentFile) -> Result<Scan, LogError> {
    let path = &segment.path;
    let read_error = |e| LogError::io("reading log segment", path, e);
    let file = File::open(path).map_err(read_error)?;
    let file_len = file.metadata().map_err(read_error)?.len();
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    let mut header = [0u8; HEADER_BYTES as usize];
    if file_len < HEADER_BYTES {
        return Ok(Scan::BadHeader);
    }
    reader.read_exact(&mut header).map_err(read_error)?;
    if let Err(detail) = segment::check_header(&header) {
        tracing::warn!(segment = %path.display(), "log segment header: {detail}");
        return Ok(Scan::BadHeader);
    }
    let mut offset = HEADER_BYTES;
    let mut records = 0u64;
    let bad = loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break None;
        }
        if remaining < FRAME_HEADER_BYTES {
            break Some(CutReason::TornTail);
        }
        let mut head = [0u8; FRAME_HEADER_BYTES as usize];
        reader.read_exact(&mut head).map_err(read_error)?;
        let frame = FrameHeader::decode(&head);
        if !frame.len_ok() {
            break Some(CutReason::BadLength);
        }
        if remaining < FRAME_HEADER_BYTES + u64::from(frame.len) {
            break Some(CutReason::TornTail);
        }
        let crc = match checksum_payload(&mut reader, frame.crc_seed(), frame.len) {
            Ok(crc) => crc,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Some(CutReason::TornTail),
            Err(e) => return Err(read_error(e)),
        };
        if crc != frame.crc {
            break Some(CutReason::ChecksumMismatch);
        }
        offset += FRAME_HEADER_BYTES + u64::from(frame.len);
        records += 1;
    };
    Ok(Scan::Frames {
        records,
        valid_len: offset,
        file_len,
        bad,
    })
}

/// Continues `crc` over the next `len` bytes without copying them.
fn checksum_payload(reader: &mut impl BufRead, mut crc: u32, len: u32) -> io::Result<u32> {
    let mut left = len as usize;
    while left > 0 {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = left.min(chunk.len());
        crc = crc32c::crc32c_append(crc, &chunk[..n]);
        reader.consume(n);
        left -= n;
    }
    Ok(crc)
}

/// Truncates `segment` to `valid_len` and deletes every later segment.
fn cut_at(
    segment: &SegmentFile,
    valid_len: u64,
    file_len: u64,
    reason: CutReason,
    later: &[SegmentFile],
) -> Result<Cut, LogError> {
    let path = &segment.path;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("opening log segment to cut it", path, e))?;
    file.set_len(valid_len)
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io("cutting log segment", path, e))?;
    let later_segments_removed = remove_segments(later)?;
    Ok(Cut {
        segment: path.clone(),
        offset_in_segment: valid_len,
        position: Position(segment.base + valid_len),
        bytes_cut: file_len - valid_len,
        reason,
        later_segments_removed,
    })
}

/// Deletes `segment` and every later one; the log now ends at `end`.
fn remove_from(
    segment: &SegmentFile,
    later: &[SegmentFile],
    reason: CutReason,
    end: Option<u64>,
) -> Result<Cut, LogError> {
    let bytes_cut = fs::metadata(&segment.path)
        .map(|m| m.len())
        .map_err(|e| LogError::io("reading log segment", &segment.path, e))?;
    remove_segments(std::slice::from_ref(segment))?;
    let later_segments_removed = remove_segments(later)?;
    Ok(Cut {
        segment: segment.path.clone(),
        offset_in_segment: 0,
        position: Position(end.unwrap_or(segment.base + HEADER_BYTES)),
        bytes_cut,
        reason,
        later_segments_removed,
    })
}

fn remove_segments(segments: &[SegmentFile]) -> Result<u32, LogError> {
    let Some(first) = segments.first() else {
        return Ok(0);
    };
    for segment in segments {
        fs::remove_file(&segment.path)
            .map_err(|e| LogError::io("removing log segment", &segment.path, e))?;
    }
    if let Some(dir) = first.path.parent() {
        sync_dir(dir)?;
    }
    Ok(segments.len() as u32)
}

/// Opens the active segment for appending at `len`.
pub(crate) fn open_active(segment: &SegmentFile, len: u64) -> Result<File, LogError> {
    let path = &segment.path;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("opening log segment", path, e))?;
    file.seek(SeekFrom::Start(len))
        .map_err(|e| LogError::io("seeking in log segment", path, e))?;
    Ok(file)
}
