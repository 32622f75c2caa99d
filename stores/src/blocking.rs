//! Where the stores do their blocking work (SQLite calls, Parquet encoding),
//! and the failing disk a simulation can put under them.

use std::sync::Arc;

/// FAULT INJECTION for simulations only: asked before each SQLite call;
/// `Some(reason)` fails the call as a disk error would, before it touches
/// the database. `None` in production.
pub type StoreFault = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Where a store runs work that blocks its thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Blocking {
    /// On tokio's blocking pool (production): tasks never wait on SQLite.
    #[default]
    Threads,
    /// In the calling task (simulations): nothing runs beside the
    /// simulation's one thread, so its interleavings follow from its seed.
    Inline,
}

impl Blocking {
    /// Runs `work` where this says; a panic inside it is raised again here.
    pub(crate) async fn run<T, F>(self, work: F) -> Result<T, tokio::task::JoinError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Blocking::Inline => Ok(work()),
            Blocking::Threads => tokio::task::spawn_blocking(work).await,
        }
    }
}
