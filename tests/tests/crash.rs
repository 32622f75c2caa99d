//! The crash test: an acknowledged reading survives `kill -9` of the node.
//!
//! Real processes: one `vatio node` on a data directory and a fixed port,
//! and one `vatio load` feeding it for the whole test while the node is
//! killed with SIGKILL and restarted on the same data, a few times, at
//! seeded random moments. The load generator reconnects and re-sends what
//! was not acknowledged by itself, and lists every reading it saw
//! acknowledged (`--acks-out`). Then the node is flushed and stopped
//! cleanly, and its stores are read directly from disk:
//!
//! - every acknowledged reading is in the Parquet archive, exactly once,
//!   and each file keeps a device's readings in seq order;
//! - the replica archive holds byte-identical files;
//! - each (device, minute) of the archive is counted exactly as often in
//!   the time-series point and in the minute document as it has archived
//!   readings: a reading counted twice or lost in a crash shows there.
//!
//! Needs the `vatio` binary: `cargo build -p vatio-cluster --bin vatio`
//! (`scripts/test.sh` does it), or `VATIO_BIN=/path/to/vatio`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::time::Instant;
use vatio_stores::archive::Side;
use vatio_tests::audit::{Archived, Findings, ListedLoad, LoadTotals, check_load};
use vatio_tests::process::{
    NodeFiles, NodeProcess, Process, files_under, flush, free_port, vatio_bin, vatio_command,
};

/// Seed of the kill schedule (how long to wait before each kill).
const KILL_SEED: u64 = 0x7661_7469_6f00_0001;
/// Seed of the load generator's values.
const LOAD_SEED: u64 = 20_261_126;
/// SIGKILLs of the node during the load.
const KILLS: usize = 4;
/// Wait before each kill, drawn uniformly from this range, in ms.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 500..=2_500;

const DEVICES: u32 = 20;
const RATE_READINGS_PER_S: u32 = 2_000;
const BATCH_READINGS: u32 = 50;
const CONCURRENCY: u32 = 4;
/// Long enough to cover every kill and restart, with healthy time after.
const LOAD_DURATION: Duration = Duration::from_secs(20);

/// Liveness bounds only; never asserted as performance.
const TEST_DEADLINE: Duration = Duration::from_secs(240);
const NODE_START_MAX: Duration = Duration::from_secs(60);
const LOAD_EXIT_AFTER_DURATION_MAX: Duration = Duration::from_secs(60);
const FLUSH_MAX: Duration = Duration::from_secs(60);
const NODE_STOP_MAX: Duration = Duration::from_secs(60);

/// Small flush delays so the sinks see readings soon after they arrive.
const NODE_CONFIG_EXTRA: &str = "\
[aggregator]
flush_max_delay = \"200ms\"

[stream_etl]
flush_max_delay = \"200ms\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_survive_kill_9_of_the_node() -> anyhow::Result<()> {
    eprintln!(
        "crash test: kill seed {KILL_SEED}, load seed {LOAD_SEED}, {KILLS} kills, \
         {DEVICES} devices at {RATE_READINGS_PER_S} readings/s for {LOAD_DURATION:?}"
    );
    // Dropping the run (deadline or failure) drops its processes, which
    // kills them.
    match tokio::time::timeout(TEST_DEADLINE, run()).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("crash test did not finish within {TEST_DEADLINE:?}"),
    }
}

async fn run() -> anyhow::Result<()> {
    let bin = vatio_bin()?;
    let dir = tempfile::tempdir()?;
    let result = run_in(&bin, dir.path()).await;
    if result.is_err() {
        // Its processes are gone by now; their logs and data stay behind.
        let kept = dir.keep();
        eprintln!(
            "crash test: kept {} (node-run*/load logs, data/, acks.txt) for inspection",
            kept.display()
        );
    }
    result
}

async fn run_in(bin: &Path, root: &Path) -> anyhow::Result<()> {
    let port = free_port()?;
    let files = NodeFiles::write(root, port, NODE_CONFIG_EXTRA)?;
    let acks_path = root.join("acks.txt");
    eprintln!("crash test: working in {}", root.display());

    let mut node = NodeProcess::start(bin, &files, root, NODE_START_MAX).await?;
    let load_args = ListedLoad {
        addr: files.endpoint(),
        devices: DEVICES,
        rate: RATE_READINGS_PER_S,
        batch: BATCH_READINGS,
        concurrency: CONCURRENCY,
        duration: LOAD_DURATION,
        seed: LOAD_SEED,
        acks_out: acks_path.clone(),
    }
    .args();
    let load_args: Vec<&str> = load_args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut load = Process::spawn("load", vatio_command(bin, &load_args), root)?;

    let mut rng = SmallRng::seed_from_u64(KILL_SEED);
    for round in 1..=KILLS {
        let wait = Duration::from_millis(rng.random_range(KILL_AFTER_MS));
        tokio::time::sleep(wait).await;
        if let Some(status) = load.try_exit()? {
            anyhow::bail!(
                "the load generator exited ({status}) before kill {round}\n{}",
                load.logs()
            );
        }
        let at = started.elapsed();
        node.kill_and_restart(NODE_START_MAX).await?;
        eprintln!(
            "crash test: kill {round}/{KILLS} at {:.2}s (after {wait:?}); serving again after {:.2}s",
            at.as_secs_f64(),
            (started.elapsed() - at).as_secs_f64()
        );
    }

    let load_left = LOAD_DURATION.saturating_sub(started.elapsed());
    let status = load.wait(load_left + LOAD_EXIT_AFTER_DURATION_MAX).await?;
    anyhow::ensure!(
        status.success(),
        "the load generator failed ({status})\n{}",
        load.logs()
    );
    let report_json = std::fs::read_to_string(load.stdout_path())?;
    let totals = LoadTotals::parse(&report_json)?;
    eprintln!("crash test: load report {report_json}");

    tokio::time::timeout(FLUSH_MAX, flush(&files.endpoint()))
        .await
        .context("Admin.Flush did not return in time")?
        .context("Admin.Flush")?;
    let stopped = node.process().terminate(NODE_STOP_MAX).await?;
    anyhow::ensure!(
        stopped.success(),
        "the node did not stop cleanly on SIGTERM ({stopped})\n{}",
        node.process().logs()
    );

    verify(&files, &acks_path, &totals).await
}

async fn verify(files: &NodeFiles, acks_path: &Path, totals: &LoadTotals) -> anyhow::Result<()> {
    let cfg = files.load()?;
    let mut findings = Findings::default();

    let acked = check_load(totals, acks_path, &mut findings)?;

    // The archive: every row of every hour file of the primary root.
    let primary_root = cfg
        .archive_dir(&cfg.archiver.primary_root)
        .expect("a local archive root");
    let replica_root = cfg
        .archive_dir(&cfg.archiver.replica_root)
        .expect("a local archive root");
    let mut archived = Archived::default();
    archived.add_root(&cfg.node.id, &primary_root, &mut findings)?;
    archived.check_exactly_once(&acked, &mut findings);

    // The replica: the same files, byte for byte, manifests included.
    let primary_files = files_under(&primary_root)?;
    let replica_files = files_under(&replica_root)?;
    for file in primary_files.iter().chain(&replica_files) {
        let a = std::fs::read(primary_root.join(file)).ok();
        let b = std::fs::read(replica_root.join(file)).ok();
        if a != b {
            findings.add(
                "archive files differing between primary and replica",
                || {
                    let side = match (&a, &b) {
                        (None, _) => "missing from the primary",
                        (_, None) => "missing from the replica",
                        _ => "different bytes",
                    };
                    format!("{}: {side}", file.display())
                },
            );
        }
    }

    // Stores, read directly: the node is stopped.
    let stores = vatio_cluster::stores::open_embedded(&cfg)?;
    for side in Side::BOTH {
        for hour in &archived.hours {
            if let Err(e) = stores.archive.verify(side, *hour).await {
                findings.add("hour files not matching their manifest", || {
                    format!("{} {hour:?}: {e}", side.as_str())
                });
            }
        }
    }
    archived
        .check_minutes(std::slice::from_ref(&stores), &mut findings)
        .await?;

    eprintln!(
        "crash test: sent {} acked {} archived {} over {KILLS} kills \
         (kill seed {KILL_SEED}, load seed {LOAD_SEED}); told to back off {} times, {} stream errors (reconnects)",
        totals.sent,
        acked.len(),
        archived.rows.len(),
        totals.backoffs,
        totals.errors
    );
    eprintln!(
        "crash test: {} of {} acknowledged readings missing from the archive",
        findings.count("acknowledged readings missing from the archive"),
        acked.len()
    );
    anyhow::ensure!(
        !acked.is_empty(),
        "the load generator saw nothing acknowledged"
    );
    anyhow::ensure!(
        findings.is_empty(),
        "crash test found problems (kill seed {KILL_SEED}, load seed {LOAD_SEED}):\n{}",
        findings.report()
    );
    Ok(())
}
