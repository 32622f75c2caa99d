//! Opens the node's write-ahead log from its configuration: segment files
//! and subscriber positions under `log.dir`. Opening scans the log, cuts a
//! torn or corrupt tail (and says so), and hands the result to the tree.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use vatio_actors::TreeLog;
use vatio_config::{Config, LogFsync};
use vatio_wal::{DurableHook, FaultHook, FsyncMode, Log, LogConfig, PositionStore};

/// `fault` and `durable` are fault injection for tests and simulations
/// (`None` in production).
pub async fn open(
    cfg: &Config,
    fault: Option<FaultHook>,
    durable: Option<DurableHook>,
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
    let (log, recovery) = tokio::task::spawn_blocking(move || Log::open(log_cfg))
        .await
        .context("opening the write-ahead log (task)")?
        .with_context(|| format!("opening the write-ahead log in {}", dir.display()))?;
    if let Some(cut) = &recovery.cut {
        tracing::warn!(%cut, "the write-ahead log had a torn or corrupt tail; it was cut");
    }
    tracing::info!(%recovery, "write-ahead log opened");
    let positions = PositionStore::open(dir.join("positions"))
        .context("opening the log subscribers' positions")?;
    Ok(TreeLog {
        log,
        positions,
        recovery: Arc::new(recovery),
        now: Instant::now,
    })
}
