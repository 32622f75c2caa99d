//! `vatio-simulations cluster`: whole-cluster runs, one seed after the
//! other, with live progress, a summary table, and for every failing seed
//! its fault schedule, violations and the command that replays it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use vatio_config::LogFsync;
use vatio_simulations::cluster::{
    ClusterOptions, ClusterReport, FaultKind, HEAP_GROWTH_MAX, run_cluster_in,
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
}

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
             --load-seconds {} --invalid-share {} --log-fsync '{}' --keep",
            kinds.join(","),
            self.faults_per_run,
            self.per_az(),
            self.load_seconds,
            self.invalid_share,
            self.log_fsync
        )
    }
}

pub fn main(args: &ClusterArgs) -> ExitCode {
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
                    "  seed {seed}: {} of {} batches acked, {} abandoned, calls sent again {:?}",
                    report.batches_acked, report.batches_sent, report.abandoned, report.retries
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

fn run_one(args: &ClusterArgs, seed: u64) -> anyhow::Result<ClusterReport> {
    let dir = tempfile::tempdir()?;
    let report = run_cluster_in(&args.options(seed), dir.path())?;
    if args.keep || !report.violations.is_empty() {
        let kept = dir.keep();
        println!("  seed {seed}: files kept in {}", kept.display());
    }
    Ok(report)
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
