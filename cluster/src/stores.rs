//! Opens the stores a node's configuration names: the time series in
//! SQLite or InfluxDB, the documents in SQLite or MongoDB, the archive's
//! two sides each in a local directory or an S3 bucket. The dead letters,
//! the archive staging and the device checkpoint are always the node's own
//! SQLite files under `stores.sqlite_dir`.
//!
//! Opening a server-backed store sends nothing: a server that is down at
//! start-up shows at the first write, which the sink retries behind its
//! breaker while the log holds the data.

use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStore;
use vatio_actors::TreeStores;
use vatio_config::{
    ArchiveRoot, Config, DocumentsBackend, S3Config, SqliteSync, TimeSeriesBackend,
};
use vatio_stores::archive::ParquetArchive;
use vatio_stores::embedded::{
    SqliteCheckpoints, SqliteDeadLetters, SqliteDocuments, SqliteStaging, SqliteTimeSeries,
    Synchronous, local_object_store,
};
use vatio_stores::influxdb::InfluxTimeSeries;
use vatio_stores::mongodb::MongoDocuments;
use vatio_stores::s3::s3_object_store;
use vatio_stores::{Blocking, DocumentStore, StoreFault, TimeSeriesStore};

/// Every store the configuration names.
pub async fn open(cfg: &Config) -> anyhow::Result<TreeStores> {
    let node = cfg.node.id.as_str();
    let timeseries: Option<Arc<dyn TimeSeriesStore>> = match cfg.stores.timeseries {
        TimeSeriesBackend::Embedded => None,
        TimeSeriesBackend::Influxdb => {
            let mut influx = cfg.stores.influxdb.clone();
            if !influx.ca_file.as_os_str().is_empty() {
                influx.ca_file = cfg.data_path(&influx.ca_file);
            }
            let store = InfluxTimeSeries::connect(&influx, node)
                .with_context(|| format!("opening the InfluxDB time series at {}", influx.url))?;
            Some(Arc::new(store))
        }
    };
    let documents: Option<Arc<dyn DocumentStore>> = match cfg.stores.documents {
        DocumentsBackend::Embedded => None,
        DocumentsBackend::Mongodb => {
            let store =
                MongoDocuments::connect(&cfg.stores.mongodb, node, cfg.stream_etl.retention)
                    .await
                    .context("opening the MongoDB document store")?;
            Some(Arc::new(store))
        }
    };
    open_local(cfg, Blocking::Threads, None, timeseries, documents)
}

/// The embedded stores only, whatever the configuration names (for tools
/// that read a stopped node's files).
pub fn open_embedded(cfg: &Config) -> anyhow::Result<TreeStores> {
    open_embedded_with(cfg, Blocking::Threads, None)
}

/// Which backend each sink of the tree writes to, by sink name.
#[derive(Clone, Debug)]
pub struct SinkBackends {
    timeseries: &'static str,
    documents: &'static str,
    archive: &'static str,
}

impl SinkBackends {
    pub fn of(cfg: &Config) -> Self {
        let side = |root: &ArchiveRoot| match root {
            ArchiveRoot::Local(_) => "local",
            ArchiveRoot::S3 { .. } => "s3",
        };
        let archive = match (
            side(&cfg.archiver.primary_root),
            side(&cfg.archiver.replica_root),
        ) {
            (a, b) if a == b => a,
            _ => "local + s3",
        };
        Self {
            timeseries: match cfg.stores.timeseries {
                TimeSeriesBackend::Embedded => "embedded",
                TimeSeriesBackend::Influxdb => "influxdb",
            },
            documents: match cfg.stores.documents {
                DocumentsBackend::Embedded => "embedded",
                DocumentsBackend::Mongodb => "mongodb",
            },
            archive,
        }
    }

    /// The backend of the sink named `sink` (as the tree's guards name them).
    pub fn backend(&self, sink: &str) -> &'static str {
        match sink {
            "timeseries" => self.timeseries,
            "documents" => self.documents,
            "archive" => self.archive,
            _ => "embedded",
        }
    }
}

/// One side of the archive: its local directory or its bucket.
fn archive_side(
    cfg: &Config,
    root: &ArchiveRoot,
    s3: &S3Config,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    match root {
        ArchiveRoot::Local(dir) => {
            let dir = cfg.data_path(dir);
            local_object_store(&dir)
                .with_context(|| format!("opening the archive directory {}", dir.display()))
        }
        ArchiveRoot::S3 { bucket, prefix } => s3_object_store(bucket, prefix, s3)
            .with_context(|| format!("opening the archive at {root}")),
    }
}

/// [`open_embedded`], with the stores' blocking work run where `blocking`
/// says (inline in simulations) and, for simulations only, the SQLite
/// stores on a disk that fails while `fault` says so.
pub fn open_embedded_with(
    cfg: &Config,
    blocking: Blocking,
    fault: Option<StoreFault>,
) -> anyhow::Result<TreeStores> {
    open_local(cfg, blocking, fault, None, None)
}

/// The stores, with the time series and the documents given (servers) or,
/// where None, the embedded ones; everything else is the node's own files.
fn open_local(
    cfg: &Config,
    blocking: Blocking,
    fault: Option<StoreFault>,
    timeseries: Option<Arc<dyn TimeSeriesStore>>,
    documents: Option<Arc<dyn DocumentStore>>,
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
    let timeseries = match timeseries {
        Some(store) => store,
        None => {
            let store = SqliteTimeSeries::open(&path("timeseries.sqlite"), sync)
                .context("opening the embedded time-series store")?
                .with_blocking(blocking);
            Arc::new(with_fault(store, &fault, SqliteTimeSeries::with_fault))
        }
    };
    let documents = match documents {
        Some(store) => store,
        None => {
            let store = SqliteDocuments::open(&path("documents.sqlite"), sync)
                .context("opening the embedded document store")?
                .with_blocking(blocking);
            Arc::new(with_fault(store, &fault, SqliteDocuments::with_fault))
        }
    };
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
    let s3_replica = cfg.stores.s3_replica.or_from(&cfg.stores.s3);
    let primary = archive_side(cfg, &cfg.archiver.primary_root, &cfg.stores.s3)
        .context("the primary archive (archiver.primary_root)")?;
    let replica = archive_side(cfg, &cfg.archiver.replica_root, &s3_replica)
        .context("the replica archive (archiver.replica_root)")?;
    Ok(TreeStores {
        timeseries,
        documents,
        dead_letters: Arc::new(dead_letters),
        staging: Arc::new(staging),
        archive: Arc::new(
            ParquetArchive::new(primary, replica, cfg.node.id.as_str()).with_blocking(blocking),
        ),
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
