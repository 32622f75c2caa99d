//! `LogError`: everything the log and the position store can fail with.
//!
//! Each message says what was being done and where, so that an operator can
//! act on it without reading the code.

use std::io;
use std::path::PathBuf;

use crate::Position;

/// An error from the write-ahead log or the position store.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file-system operation failed, e.g. "writing log segment
    /// /x/00000000000000000000.wal: No space left on device".
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A payload is larger than the log accepts in one record.
    #[error("record of {bytes} bytes is larger than the log's limit of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    /// The requested position lies in segments that were truncated away.
    #[error("log position {requested} was truncated: the log now starts at {start}")]
    Truncated {
        requested: Position,
        start: Position,
    },
    /// The requested position lies past what readers may see.
    #[error("log position {requested} is past the visible head {head}")]
    BeyondHead { requested: Position, head: Position },
    /// Stored bytes failed validation on read.
    #[error("corrupt data in {} at offset {offset}: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// The log can no longer guarantee what it holds; reopen it.
    #[error("log failed and must be reopened: {0}")]
    Failed(String),
    /// The log was closed.
    #[error("log is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// A copy of an I/O error, for handing one failure to every append of a group
/// (`io::Error` is not `Clone`).
pub(crate) fn copy_io_error(err: &io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(err.kind(), err.to_string()),
    }
}
