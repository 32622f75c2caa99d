//! Regression tests for actor-tree bugs the simulation found. Each asserts
//! the correct behaviour; the doc comment of each says what was wrong.
//!
//! FAULT INJECTION: a crash hook makes the device actor panic on chosen
//! readings.

use std::sync::Arc;
use std::time::Duration;

use vatio_actors::{ActorTree, ManualClock, SharedClock, TreeLog, TreeOptions, TreeStores};
use vatio_config::Config;
use vatio_stores::archive::ParquetArchive;
use vatio_stores::embedded::{
    SqliteCheckpoints, SqliteDeadLetters, SqliteDocuments, SqliteStaging, SqliteTimeSeries,
    Synchronous, local_object_store,
};
use vatio_stores::{DeviceId, MINUTE_MS, Metric, RawReading};
use vatio_wal::{Log, LogConfig, PositionStore};

const T0: i64 = 1_795_687_200_000;

fn meter(seq: u64, kw: f64) -> RawReading {
    RawReading {
        device_id: "meter-1".into(),
        seq,
        ts_ms: T0 - 10 * MINUTE_MS + seq as i64,
        metric: "power".into(),
        value: kw,
        unit: "kW".into(),
        kind: 3,
    }
}

/// `ActorTree::flush` (and so `shutdown`) must push out the readings a
/// device holds in its reorder buffer even while that device's actor waits
/// to be restarted. The router's `FlushDevices` used to ask `Live` actors
/// only, so a device in `Restarting` (here after a poison group, which is
/// acknowledged before the restart) kept its acknowledged, held reading out
/// of every sink, and a shutdown in that window lost it. The router now
/// restarts such devices at once and flushes them.
#[tokio::test(flavor = "current_thread")]
async fn flush_reaches_held_readings_of_a_device_whose_actor_is_restarting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.node.data_dir = dir.path().to_path_buf();
    // Nothing may release seq 3 except the flush: no hold timeout, and the
    // restart comes long after the flush.
    cfg.device.reorder_max_hold = Duration::from_secs(600);
    cfg.supervision.poison_attempts = 1;
    cfg.supervision.backoff_initial = Duration::from_secs(30);
    cfg.supervision.backoff_max = Duration::from_secs(30);
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db)?;
    let s = Synchronous::Off;
    let stores = TreeStores {
        timeseries: Arc::new(SqliteTimeSeries::open(&db.join("ts"), s)?),
        documents: Arc::new(SqliteDocuments::open(&db.join("docs"), s)?),
        dead_letters: Arc::new(SqliteDeadLetters::open(&db.join("dl"), s)?),
        staging: Arc::new(SqliteStaging::open(&db.join("st"), s)?),
        archive: Arc::new(ParquetArchive::new(
            local_object_store(&dir.path().join("p"))?,
            local_object_store(&dir.path().join("r"))?,
            "node-1",
        )),
        checkpoints: Arc::new(SqliteCheckpoints::open(&db.join("cp"), s)?),
    };
    let (log, recovery) = Log::open(LogConfig::new(dir.path().join("log")))?;
    let tlog = TreeLog {
        log,
        positions: PositionStore::open(dir.path().join("positions"))?,
        recovery: Arc::new(recovery),
        now: std::time::Instant::now,
    };
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let tree = ActorTree::start(
        &cfg,
        stores,
        tlog,
        clock,
        TreeOptions {
            crash_hook: Some(Arc::new(|r: &RawReading| r.value == 666.0)),
            replication: None,
        },
    )
    .await?;
    // seq 3 is accepted and held behind the gap at 2.
    let ack = tree.ingest(vec![meter(1, 1.0), meter(3, 3.0)], "t").await?;
    assert_eq!(ack.accepted, 2);
    // A poison group: the actor crashes, the group is dead-lettered and
    // acknowledged, the actor waits 30 s to restart.
    let ack = tree.ingest(vec![meter(4, 666.0)], "t").await?;
    assert_eq!(ack.dead_lettered, 1);
    tree.flush().await?;
    let p = tree
        .stores()
        .timeseries
        .point(
            &DeviceId::new("meter-1"),
            Metric::Power,
            T0 - 10 * MINUTE_MS,
        )
        .await?
        .map(|p| p.stats.count);
    assert_eq!(
        p,
        Some(2),
        "both acknowledged readings in the time series after flush"
    );
    Ok(())
}
