//! Embedded backends: SQLite (rusqlite, bundled) and the local filesystem.
//!
//! Each SQLite store is its own database file with one connection, opened in
//! WAL mode; queries run on tokio's blocking pool so they never stall the
//! actors' runtime. The archive's object stores are plain local directories,
//! one root per AZ, behind the same `object_store` trait the S3 backend uses.

mod checkpoints;
mod dead_letters;
mod documents;
mod sqlite;
mod staging;
mod timeseries;

use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

use crate::{Error, Result};

pub use checkpoints::SqliteCheckpoints;
pub use dead_letters::SqliteDeadLetters;
pub use documents::SqliteDocuments;
pub use staging::SqliteStaging;
pub use timeseries::SqliteTimeSeries;

/// SQLite's `synchronous` pragma: how often SQLite waits for the disk.
///
/// Under WAL, `Normal` survives a process crash but may lose the last
/// commits on power loss. vatio's log cannot replay those: a sink commits its
/// log position once its writes are committed, and the position is durable
/// at once. `Full` also survives power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Synchronous {
    Off,
    Normal,
    #[default]
    Full,
}

impl Synchronous {
    /// The pragma's numeric value (0, 1, 2), which needs no quoting.
    pub(crate) fn pragma_value(self) -> i64 {
        match self {
            Self::Off => 0,
            Self::Normal => 1,
            Self::Full => 2,
        }
    }
}

/// An object store over the local directory `root` (created if missing):
/// the embedded stand-in for one AZ's bucket.
pub fn local_object_store(root: &Path) -> Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(root).map_err(|e| Error::Unavailable {
        store: "local object store",
        message: format!("creating {}: {e}", root.display()),
    })?;
    Ok(Arc::new(LocalFileSystem::new_with_prefix(root)?))
}
