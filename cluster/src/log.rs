//! Opens the node's write-ahead log from its configuration: segment files
//! and subscriber positions under `log.dir`. Opening scans the log, cuts a
//! torn or corrupt tail (and says so), and hands the result to the tree.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use vatio_actors::TreeLog;
use vatio_config::{Config, LogFsync};
use vatio_wal::{
    Blocking, DurableHook, FaultHook, FsyncMode, IntervalClock, Log, LogConfig, PositionStore,
    WeakLog,
};

/// `fault` and `durable` are fault injection for tests and simulations
/// (`None` in production). With [`IntervalClock::Owner`] the interval
/// fsyncs are timed by this runtime's clock (a simulation's) instead of the
/// writer thread's; with [`Blocking::Inline`] the log does its file work in
/// the calling task.
pub async fn open(
    cfg: &Config,
    fault: Option<FaultHook>,
    durable: Option<DurableHook>,
    interval_clock: IntervalClock,
    blocking: Blocking,
) -> anyhow::Result<TreeLog> {
    let dir = cfg.data_path(&cfg.log.dir);
    let mut log_cfg = LogConfig::new(dir.join("segments"));
    log_cfg.fsync = match cfg.log.fsync {
        LogFsync::Always => FsyncMode::Always,
        LogFsync::Interval(d) => FsyncMode::Interval(d),
        LogFsync::Never => FsyncMode::Never,
    };
    log_cfg.segment_bytes_max = cfg.log.segment_bytes_max;
    log_cfg.group_bytes_max = usize::try_from(cfg.log.group_bytes_max).unwrap_or(usize::MAX);
    log_cfg.tail_cache_bytes_max =
        usize::try_from(cfg.log.tail_cache_bytes_max).unwrap_or(usize::MAX);
    log_cfg.fault = fault;
    log_cfg.durable = durable;
    log_cfg.interval_clock = interval_clock;
    log_cfg.blocking = blocking;
    let owner_interval = match log_cfg.fsync {
        FsyncMode::Interval(every) if interval_clock == IntervalClock::Owner => Some(every),
        _ => None,
    };
    let opened = match blocking {
        Blocking::Inline => Log::open(log_cfg),
        Blocking::Threads => tokio::task::spawn_blocking(move || Log::open(log_cfg))
            .await
            .context("opening the write-ahead log (task)")?,
    };
    let (log, recovery) =
        opened.with_context(|| format!("opening the write-ahead log in {}", dir.display()))?;
    if let Some(every) = owner_interval {
        tokio::spawn(tick_intervals(log.downgrade(), every));
    }
    if let Some(cut) = &recovery.cut {
        tracing::warn!(%cut, "the write-ahead log had a torn or corrupt tail; it was cut");
    }
    tracing::info!(%recovery, "write-ahead log opened");
    let positions = PositionStore::open(dir.join("positions"))
        .context("opening the log subscribers' positions")?
        .with_blocking(blocking);
    Ok(TreeLog {
        log,
        positions,
        recovery: Arc::new(recovery),
        now: Instant::now,
    })
}

/// Tells `log` every `every` that an interval passed, until its writer
/// stops or every other handle is gone (a node that failed to start drops
/// its log, which must then close and release its directory).
async fn tick_intervals(log: WeakLog, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(log) = log.upgrade() else {
            return;
        };
        if !log.interval_tick() {
            return;
        }
    }
}
