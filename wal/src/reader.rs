//! `LogReader`: reads records in order from a position, waiting at the head.
//!
//! A batch comes from the tail cache when the cache still holds the reader's
//! position, else from the segment files on tokio's blocking pool, where every
//! frame is checked again (length and checksum) as it is read back.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::Blocking;
use crate::segment::{
    FRAME_HEADER_BYTES, FrameHeader, HEADER_BYTES, PAYLOAD_BYTES_MAX, SegmentFile,
};
use crate::shared::{Shared, lock};
use crate::{LogError, Position};

/// Most bytes read from a segment file in one read.
const READ_BUFFER_BYTES_MAX: usize = 4 << 20;
const READ_BUFFER_BYTES_MIN: usize = 64 << 10;

/// One record as read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Address of the record's frame.
    pub position: Position,
    /// Address just after it; a reader continuing from here gets the next record.
    pub end: Position,
    pub payload: Bytes,
}

/// Reads records in order, from a position on. Each reader keeps its own
/// position; many readers can follow one log.
pub struct LogReader {
    shared: Arc<Shared>,
    position: Position,
    head: watch::Receiver<Position>,
}

/// How far a reader may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Up to the visible head: every acknowledged record.
    Visible,
    /// Up to the durable head: records on disk (see [`crate::Log::durable_reader`]).
    Durable,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, position: Position, reach: Reach) -> Self {
        let head = match reach {
            Reach::Visible => shared.watch_head(),
            Reach::Durable => shared.watch_durable(),
        };
        let position = shared.skip_header(position);
        LogReader {
            shared,
            position,
            head,
        }
    }

    /// Where the next record starts: the end of the last record returned,
    /// moved past a segment header when that end is also a segment's start
    /// (so that a reader that has everything is at the visible head).
    pub fn position(&self) -> Position {
        self.position
    }

    /// Waits until at least one record past the reader is visible, then returns
    /// whole records in order (at most about `max_bytes` of payload; a bigger
    /// record comes alone). Served from the tail cache when it still holds the
    /// reader's position, else read from segment files on tokio's blocking pool.
    ///
    /// Fails with [`LogError::Truncated`] when the reader's position was
    /// truncated away, and with [`LogError::Closed`] when the log has stopped
    /// and the reader has everything.
    pub async fn next_batch(&mut self, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        loop {
            let head = *self.head.borrow_and_update();
            let start = self.shared.start();
            let from = self.shared.skip_header(self.position);
            if from < start {
                return Err(LogError::Truncated {
                    requested: self.position,
                    start,
                });
            }
            if from < head {
                let cached = lock(&self.shared.cache).read(from, head, max_bytes);
                let batch = match cached {
                    Some(batch) => batch,
                    None => self.read_files(from, head, max_bytes).await?,
                };
                if let Some(last) = batch.last() {
                    self.position = self.shared.skip_header(last.end);
                    return Ok(batch);
                }
            }
            if self.shared.is_stopped() && *self.head.borrow() <= from {
                return Err(LogError::Closed);
            }
            // The sender lives in `Shared`, which this reader holds: `changed`
            // cannot fail, and the writer wakes it when it stops.
            if self.head.changed().await.is_err() {
                return Err(LogError::Closed);
            }
        }
    }

    async fn read_files(
        &self,
        from: Position,
        head: Position,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let shared = Arc::clone(&self.shared);
        let read = match shared.blocking {
            Blocking::Inline => read_segment(&shared, from, head, max_bytes),
            Blocking::Threads => {
                tokio::task::spawn_blocking(move || read_segment(&shared, from, head, max_bytes))
                    .await
                    .map_err(|e| LogError::Failed(format!("log reader task failed: {e}")))?
            }
        };
        match read {
            // The segment may have been truncated away while it was being opened.
            Err(LogError::Io { .. }) if from < self.shared.start() => Err(LogError::Truncated {
                requested: from,
                start: self.shared.start(),
            }),
            other => other,
        }
    }
}

/// Reads whole records from the segment holding `from`, up to `head`.
fn read_segment(
    shared: &Shared,
    from: Position,
    head: Position,
    max_bytes: usize,
) -> Result<Vec<Record>, LogError> {
    let Some((segment, end)) = shared.locate(from, head) else {
        return Ok(Vec::new());
    };
    let SegmentFile { base, path } = segment;
    let offset = from.0 - base;
    if offset < HEADER_BYTES {
        return Err(LogError::Corrupt {
            path,
            offset,
            detail: format!("position {from} lies inside the segment header, not at a record"),
        });
    }
    let read_error = |path: &std::path::Path, e| LogError::io("reading log segment", path, e);
    let mut file = File::open(&path).map_err(|e| read_error(&path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| read_error(&path, e))?;
    let capacity = max_bytes.clamp(READ_BUFFER_BYTES_MIN, READ_BUFFER_BYTES_MAX);
    let mut reader = BufReader::with_capacity(capacity, file);
    let mut records = Vec::new();
    let mut payload_bytes = 0usize;
    let mut at = from;
    while at.0 + FRAME_HEADER_BYTES <= end.0 {
        let corrupt = |detail: String| LogError::Corrupt {
            path: path.clone(),
            offset: at.0 - base,
            detail,
        };
        let mut head_bytes = [0u8; FRAME_HEADER_BYTES as usize];
        reader
            .read_exact(&mut head_bytes)
            .map_err(|e| read_error(&path, e))?;
        let frame = FrameHeader::decode(&head_bytes);
        if !frame.len_ok() {
            return Err(corrupt(format!(
                "record length {} is over the limit of {PAYLOAD_BYTES_MAX}",
                frame.len
            )));
        }
        let len = frame.len as usize;
        let record_end = at.add(FRAME_HEADER_BYTES + len as u64);
        if record_end > end {
            return Err(corrupt(format!(
                "record of {len} bytes runs past the readable end {end}"
            )));
        }
        if !records.is_empty() && payload_bytes + len > max_bytes {
            break;
        }
        let mut payload = vec![0u8; len];
        reader
            .read_exact(&mut payload)
            .map_err(|e| read_error(&path, e))?;
        if crc32c::crc32c_append(frame.crc_seed(), &payload) != frame.crc {
            return Err(corrupt("record checksum mismatch".to_string()));
        }
        payload_bytes += len;
        records.push(Record {
            position: at,
            end: record_end,
            payload: Bytes::from(payload),
        });
        at = record_end;
        if payload_bytes >= max_bytes {
            break;
        }
    }
    Ok(records)
}
