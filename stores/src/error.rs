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
    /// The server asked for a pause (HTTP 429, or 503 with `Retry-After`):
    /// retry no sooner than `retry_after`.
    #[error("{store} asks to retry after {retry_after:?}: {message}")]
    Throttled {
        store: &'static str,
        message: String,
        retry_after: std::time::Duration,
    },
    /// An HTTP request to a server failed before it answered (connection
    /// refused or reset, timeout, TLS handshake); retrying later may succeed.
    #[error("{store}: request to {url} failed: {source}")]
    Request {
        store: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A MongoDB operation failed; [`Error::is_transient`] asks the driver
    /// whether it was a network or server-state problem.
    #[error("{store}: {source}")]
    Mongo {
        store: &'static str,
        #[source]
        source: Box<mongodb::error::Error>,
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
            Error::Unavailable { .. }
            | Error::Object(_)
            | Error::Throttled { .. }
            | Error::Request { .. } => true,
            // A refused document (a write error, a validation failure) is
            // the data's fault; everything else (network, election, auth,
            // a missing database) is retried while the log holds the data.
            Error::Mongo { source, .. } => !crate::mongodb::is_data_error(source),
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

impl Error {
    /// The pause a server asked for before the next attempt, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
