//! Opens the stores a node's configuration names. Only the embedded
//! backends exist so far: SQLite files under `stores.sqlite_dir` and one
//! local directory per AZ for the archive.

use std::sync::Arc;

use anyhow::Context;
use vatio_actors::TreeStores;
use vatio_config::{Config, SqliteSync};
use vatio_stores::Blocking;
use vatio_stores::archive::ParquetArchive;
use vatio_stores::embedded::{
    SqliteCheckpoints, SqliteDeadLetters, SqliteDocuments, SqliteStaging, SqliteTimeSeries,
    Synchronous, local_object_store,
};

pub fn open_embedded(cfg: &Config) -> anyhow::Result<TreeStores> {
    open_embedded_with(cfg, Blocking::Threads)
}

/// [`open_embedded`], with the stores' blocking work run where `blocking`
/// says (inline in simulations).
pub fn open_embedded_with(cfg: &Config, blocking: Blocking) -> anyhow::Result<TreeStores> {
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
    let documents = SqliteDocuments::open(&path("documents.sqlite"), sync)
        .context("opening the embedded document store")?
        .with_blocking(blocking);
    let dead_letters = SqliteDeadLetters::open(&path("dead_letters.sqlite"), sync)
        .context("opening the dead-letter store")?
        .with_blocking(blocking);
    let staging = SqliteStaging::open(&path("archive_staging.sqlite"), sync)
        .context("opening the archive staging store")?
        .with_blocking(blocking);
    // The checkpoint decides where a restart replays the log from, so it
    // always waits for the disk, whatever the sinks do.
    let checkpoints = SqliteCheckpoints::open(&path("device_checkpoint.sqlite"), Synchronous::Full)
        .context("opening the device checkpoint store")?
        .with_blocking(blocking);
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
