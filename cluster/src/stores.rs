//! Opens the stores a node's configuration names. Only the embedded
//! backends exist so far: SQLite files under `stores.sqlite_dir` and one
//! local directory per AZ for the archive.

use std::sync::Arc;

use anyhow::Context;
use vatio_actors::TreeStores;
use vatio_config::{Config, SqliteSync};
use vatio_stores::archive::ParquetArchive;
use vatio_stores::embedded::{
    SqliteCheckpoints, SqliteDeadLetters, SqliteDocuments, SqliteStaging, SqliteTimeSeries,
    Synchronous, local_object_store,
};
use vatio_stores::{Blocking, StoreFault};

pub fn open_embedded(cfg: &Config) -> anyhow::Result<TreeStores> {
    open_embedded_with(cfg, Blocking::Threads, None)
}

/// [`open_embedded`], with the stores' blocking work run where `blocking`
/// says (inline in simulations) and, for simulations only, the SQLite
/// stores on a disk that fails while `fault` says so.
pub fn open_embedded_with(
    cfg: &Config,
    blocking: Blocking,
    fault: Option<StoreFault>,
) -> anyhow::Result<TreeStores> {
    let db_dir = cfg.data_path(&cfg.stores.sqlite_dir);
    std::fs::create_dir_all(&db_dir)
        .with_context(|| format!("creating the database directory {}", db_dir.display()))?;
    let sync = match cfg.stores.synchronous {
        SqliteSync::Off => Synchronous::Off,
        SqliteSync::Normal => Synchronous::Normal,
        SqliteSync::Full => Synchronous::Full,
    };
    let path = |name: &str| db_dir.join(name);
    let timeseries = SqliteTimeSeries::open(&path("timeseries.sqlite"), sync)
        .context("opening the embedded time-series store")?
        .with_blocking(blocking);
    let timeseries = with_fault(timeseries, &fault, SqliteTimeSeries::with_fault);
    let documents = SqliteDocuments::open(&path("documents.sqlite"), sync)
        .context("opening the embedded document store")?
        .with_blocking(blocking);
    let documents = with_fault(documents, &fault, SqliteDocuments::with_fault);
    let dead_letters = SqliteDeadLetters::open(&path("dead_letters.sqlite"), sync)
        .context("opening the dead-letter store")?
        .with_blocking(blocking);
    let dead_letters = with_fault(dead_letters, &fault, SqliteDeadLetters::with_fault);
    let staging = SqliteStaging::open(&path("archive_staging.sqlite"), sync)
        .context("opening the archive staging store")?
        .with_blocking(blocking);
    let staging = with_fault(staging, &fault, SqliteStaging::with_fault);
    // The checkpoint decides where a restart replays the log from, so it
    // always waits for the disk, whatever the sinks do.
    let checkpoints = SqliteCheckpoints::open(&path("device_checkpoint.sqlite"), Synchronous::Full)
        .context("opening the device checkpoint store")?
        .with_blocking(blocking);
    let checkpoints = with_fault(checkpoints, &fault, SqliteCheckpoints::with_fault);
    let primary_root = cfg.data_path(&cfg.archiver.primary_root);
    let replica_root = cfg.data_path(&cfg.archiver.replica_root);
    let primary = local_object_store(&primary_root)
        .with_context(|| format!("opening the primary archive at {}", primary_root.display()))?;
    let replica = local_object_store(&replica_root)
        .with_context(|| format!("opening the replica archive at {}", replica_root.display()))?;
    Ok(TreeStores {
        timeseries: Arc::new(timeseries),
        documents: Arc::new(documents),
        dead_letters: Arc::new(dead_letters),
        staging: Arc::new(staging),
        archive: Arc::new(ParquetArchive::new(primary, replica).with_blocking(blocking)),
        checkpoints: Arc::new(checkpoints),
    })
}

/// `store` on the failing disk, when there is one.
fn with_fault<S>(store: S, fault: &Option<StoreFault>, apply: fn(S, StoreFault) -> S) -> S {
    match fault {
        Some(fault) => apply(store, fault.clone()),
        None => store,
    }
}
