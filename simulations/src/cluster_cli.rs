//! `vatio-simulations cluster`: whole-cluster runs, one seed after the
//! other, with live progress, a summary table, and for every failing seed
//! its fault schedule, violations and the command that replays it.
//!
//! Each run gets a process of its own (this program again, with
//! `--run-in DIR`): process-wide state (tokio's task ids, which order a
//! crashed host's tasks are dropped in; the actor ids) starts afresh, so a
//! seed in a long soak runs exactly as its replay command runs it alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use vatio_config::LogFsync;
use vatio_simulations::cluster::{
    ClusterOptions, ClusterReport, FaultKind, HEAP_GROWTH_MAX, default_work_dir, run_cluster_in,
};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed; the others follow it.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Fault kinds to draw from (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// Faults per run, one after the other.
    #[arg(long, default_value_t = 2)]
    faults_per_run: usize,
    /// Nodes in each of the two AZs.
    #[arg(long, default_value_t = 2)]
    nodes_per_az: usize,
    /// Nodes in all, split evenly over the two AZs (an even number, at
    /// least 2); instead of --nodes-per-az.
    #[arg(long, conflicts_with = "nodes_per_az")]
    nodes: Option<usize>,
    /// Simulated seconds of load per run.
    #[arg(long, default_value_t = 20)]
    load_seconds: u64,
    /// Share of readings sent invalid (each must end in dead letters).
    #[arg(long, default_value_t = 0.0)]
    invalid_share: f64,
    /// When the nodes' logs fsync: `always`, `interval(5ms)` or `never`.
    /// Under `never` a power loss may lose acknowledged readings (the
    /// configuration says so); the checks still expect none.
    #[arg(long, default_value = "always", value_parser = LogFsync::parse)]
    log_fsync: LogFsync,
    /// Keep every run's files (only failing runs' otherwise).
    #[arg(long)]
    keep: bool,
    /// Run every seed twice and fail it unless both runs give the same
    /// trace (every call's outcome, with simulated time).
    #[arg(long)]
    twice: bool,
    /// Where runs keep their files (default: /dev/shm where it exists, a
    /// memory file system whose fsyncs cost nothing, else the system's
    /// temporary directory). The simulation models the disk itself (its
    /// power losses), so the real one's durability does not matter.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Run the one seed in this process, in DIR, and leave the report
    /// there (how each run's own process is started).
    #[arg(long, hide = true, value_name = "DIR")]
    run_in: Option<PathBuf>,
}

/// The report a run leaves in its directory.
const REPORT_FILE: &str = "report.json";
/// The trace a run leaves in its directory, one call per line.
const TRACE_FILE: &str = "trace.txt";

impl ClusterArgs {
    /// Nodes per AZ, from --nodes when given.
    fn per_az(&self) -> usize {
        self.nodes.map_or(self.nodes_per_az, |n| n / 2)
    }

    fn kinds(&self) -> Vec<FaultKind> {
        if self.faults.is_empty() {
            FaultKind::ALL.to_vec()
        } else {
            self.faults.clone()
        }
    }

    fn options(&self, seed: u64) -> ClusterOptions {
        ClusterOptions {
            seed,
            nodes_per_az: self.per_az(),
            load_for: Duration::from_secs(self.load_seconds),
            fault_kinds: self.kinds(),
            faults: self.faults_per_run,
            invalid_share: self.invalid_share,
            log_fsync: self.log_fsync,
            ..ClusterOptions::default()
        }
    }

    fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(default_work_dir)
    }

    /// The arguments that run `seed` alone in `dir` (see `--run-in`).
    fn child_args(&self, seed: u64, dir: &Path) -> Vec<String> {
        let mut args = vec![
            "cluster".to_owned(),
            "--seeds".to_owned(),
            "1".to_owned(),
            "--first-seed".to_owned(),
            seed.to_string(),
            "--faults-per-run".to_owned(),
            self.faults_per_run.to_string(),
            "--nodes-per-az".to_owned(),
            self.per_az().to_string(),
            "--load-seconds".to_owned(),
            self.load_seconds.to_string(),
            "--invalid-share".to_owned(),
            self.invalid_share.to_string(),
            "--log-fsync".to_owned(),
            self.log_fsync.to_string(),
            "--run-in".to_owned(),
            dir.display().to_string(),
        ];
        for kind in self.kinds() {
            if let Some(v) = clap::ValueEnum::to_possible_value(&kind) {
                args.push("--faults".to_owned());
                args.push(v.get_name().to_owned());
            }
        }
        args
    }

    fn replay_command(&self, seed: u64) -> String {
        let kinds: Vec<String> = self
            .kinds()
            .iter()
            .map(|k| {
                clap::ValueEnum::to_possible_value(k)
                    .map(|v| v.get_name().to_owned())
                    .unwrap_or_default()
            })
            .collect();
        format!(
            "VATIO_LOG=info cargo run -p vatio-simulations --release -- cluster --seeds 1 \
             --first-seed {seed} --faults {} --faults-per-run {} --nodes-per-az {} \
             --load-seconds {} --invalid-share {} --log-fsync '{}' --keep{}",
            kinds.join(","),
            self.faults_per_run,
            self.per_az(),
            self.load_seconds,
            self.invalid_share,
            self.log_fsync,
            if self.twice { " --twice" } else { "" }
        )
    }
}

pub fn main(args: &ClusterArgs) -> ExitCode {
    if let Some(dir) = &args.run_in {
        return match run_here(args, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "vatio-simulations cluster: the run in {} failed: {e:#}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    if !cfg!(tokio_unstable) {
        eprintln!(
            "vatio-simulations cluster: built without --cfg tokio_unstable (RUSTFLAGS replaces \
             .cargo/config.toml's): tokio's select! order is not seeded, so a seed may not replay \
             exactly"
        );
    }
    if !(0.0..=1.0).contains(&args.invalid_share) {
        eprintln!("vatio-simulations cluster: --invalid-share must be within 0..=1");
        return ExitCode::from(2);
    }
    if args.nodes_per_az == 0 {
        eprintln!("vatio-simulations cluster: --nodes-per-az must be at least 1");
        return ExitCode::from(2);
    }
    if let Some(n) = args.nodes
        && (n < 2 || n % 2 == 1)
    {
        eprintln!(
            "vatio-simulations cluster: --nodes must be an even number of at least 2 \
             (they are split evenly over the two AZs), got {n}"
        );
        return ExitCode::from(2);
    }
    println!(
        "vatio-simulations cluster: {} seed(s) from {}, faults {:?} x{} per run, {} node(s) per AZ",
        args.seeds,
        args.first_seed,
        args.kinds(),
        args.faults_per_run,
        args.per_az()
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut exercised: BTreeMap<String, u64> = BTreeMap::new();
    let (mut acked, mut refused, mut simulated) = (0usize, 0usize, Duration::ZERO);
    let mut heap_peak = 0usize;
    for i in 0..args.seeds {
        let seed = args.first_seed.wrapping_add(i);
        match run_one(args, seed) {
            Ok(report) => {
                acked += report.acked_readings;
                refused += report.refused_readings;
                simulated += report.simulated;
                heap_peak = heap_peak.max(report.heap_peak_growth);
                for (_, action) in &report.schedule {
                    let kind = action.split(' ').next().unwrap_or("").to_owned();
                    *exercised.entry(kind).or_default() += 1;
                }
                // How much load got through: a run that acked little
                // checked little, whatever its verdict.
                println!(
                    "  seed {seed}: {} of {} batches acked, {} abandoned, calls sent again {:?}, trace {}",
                    report.batches_acked,
                    report.batches_sent,
                    report.abandoned,
                    report.retries,
                    &report.trace_hash[..16]
                );
                if !report.violations.is_empty() {
                    failed.push(seed);
                    print_failure(args, &report);
                }
            }
            Err(e) => {
                failed.push(seed);
                println!("\nFAILED seed {seed}: the run did not complete: {e:#}");
                println!("  replay: {}", args.replay_command(seed));
            }
        }
        let done = i + 1;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  {done}/{} runs, {:.2} runs/s, {:.1} simulated s per wall s, {} failed so far",
            args.seeds,
            done as f64 / secs.max(1e-9),
            simulated.as_secs_f64() / secs.max(1e-9),
            failed.len()
        );
    }
    let mut table = String::from("\nfault actions exercised:\n");
    for (kind, n) in &exercised {
        table.push_str(&format!("  {kind:<10} {n:>6}\n"));
    }
    println!(
        "{table}readings acknowledged (each checked: archived exactly once, in seq order, \
         counted once by the sinks, replicated ack): {acked}; refused (each checked: a dead \
         letter with its reason, archived nowhere): {refused}; heap growth at its highest \
         (checked against a bound of {} MiB): {:.1} MiB",
        HEAP_GROWTH_MAX >> 20,
        heap_peak as f64 / f64::from(1u32 << 20)
    );
    println!(
        "{} seed(s) in {:.1} s: {} passed, {} failed",
        args.seeds,
        started.elapsed().as_secs_f64(),
        args.seeds - failed.len() as u64,
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        ExitCode::FAILURE
    }
}

/// Runs `seed` (twice under `--twice`), each run in a process of its own
/// and a temporary directory kept when asked or when something failed.
fn run_one(args: &ClusterArgs, seed: u64) -> anyhow::Result<ClusterReport> {
    let runs = if args.twice { 2 } else { 1 };
    let mut reports = Vec::with_capacity(runs);
    let mut dirs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let dir = tempfile::tempdir_in(args.work_dir())?;
        let report = run_child(args, seed, dir.path());
        dirs.push(dir);
        match report {
            Ok(report) => reports.push(report),
            Err(e) => {
                for dir in dirs {
                    println!("  seed {seed}: files kept in {}", dir.keep().display());
                }
                return Err(e);
            }
        }
    }
    let mut report = reports.remove(0);
    if let Some(again) = reports.first()
        && again.trace_hash != report.trace_hash
    {
        report
            .violations
            .push(replay_difference(&report.trace, &again.trace));
    }
    if args.keep || !report.violations.is_empty() {
        for dir in dirs {
            println!("  seed {seed}: files kept in {}", dir.keep().display());
        }
    }
    Ok(report)
}

/// Runs `seed` in a new process of this program, in `dir`, and reads back
/// its report.
fn run_child(args: &ClusterArgs, seed: u64, dir: &Path) -> anyhow::Result<ClusterReport> {
    let exe = std::env::current_exe().context("finding this program to run a seed in")?;
    let status = Command::new(&exe)
        .args(args.child_args(seed, dir))
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    anyhow::ensure!(status.success(), "the run's process ended with {status}");
    let path = dir.join(REPORT_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the run's report {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("decoding {}", path.display()))
}

/// The one run of a child process: runs the seed in `dir` and writes the
/// report and the trace there.
fn run_here(args: &ClusterArgs, dir: &Path) -> anyhow::Result<()> {
    let report = run_cluster_in(&args.options(args.first_seed), dir)?;
    std::fs::write(dir.join(TRACE_FILE), report.trace.join("\n"))?;
    std::fs::write(dir.join(REPORT_FILE), serde_json::to_vec(&report)?)?;
    Ok(())
}

/// Where two traces of one seed part.
fn replay_difference(first: &[String], second: &[String]) -> String {
    let at = first
        .iter()
        .zip(second)
        .position(|(a, b)| a != b)
        .unwrap_or(first.len().min(second.len()));
    let line = |trace: &[String]| trace.get(at).cloned().unwrap_or_else(|| "(end)".to_owned());
    format!(
        "the seed did not replay: its two runs part at trace line {} of {} and {}:\n    first:  {}\n    second: {}",
        at + 1,
        first.len(),
        second.len(),
        line(first),
        line(second)
    )
}

fn print_failure(args: &ClusterArgs, report: &ClusterReport) {
    println!("\nFAILED seed {}:", report.seed);
    println!("  fault schedule:");
    for (at, action) in &report.schedule {
        println!("    {:>7.3} s  {action}", at.as_secs_f64());
    }
    for v in &report.violations {
        println!("  {v}");
    }
    println!("  replay: {}", args.replay_command(report.seed));
}
