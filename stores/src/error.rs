//! Errors of every store backend, classified so callers can tell a retry
//! from a dead letter.

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend is unreachable or failing; retrying later may succeed.
    #[error("{store} unavailable: {message}")]
    Unavailable {
        store: &'static str,
        message: String,
    },
    /// The backend refused the data as malformed; retrying will not help.
    #[error("{store} rejected the write: {message}")]
    Rejected {
        store: &'static str,
        message: String,
    },
    /// Stored data did not read back as written (checksum, row count, decode).
    #[error("{store} verification failed: {message}")]
    Corrupt {
        store: &'static str,
        message: String,
    },
    #[error("sqlite ({store}): {source}")]
    Sqlite {
        store: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("object store: {0}")]
    Object(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Object(_) => true,
            Error::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    | Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
            ),
            Error::Rejected { .. }
            | Error::Corrupt { .. }
            | Error::Parquet(_)
            | Error::Arrow(_) => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
