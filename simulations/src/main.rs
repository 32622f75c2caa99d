//! `vatio-simulations`: runs seeds one after the other (single node; the
//! `cluster` subcommand runs whole clusters), reports progress,
//! and for every failing seed prints its violations and the one command
//! that replays exactly that seed. Exits 1 if any seed failed, 2 on bad options.
//!
//! ```sh
//! cargo run -p vatio-simulations --release -- --seeds 200
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vatio_simulations::{RunReport, SimOptions, run};

mod cluster_cli;

/// Deterministic single-node simulation of vatio with injected faults.
#[derive(Debug, Parser)]
#[command(name = "vatio-simulations")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed; the others follow it.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Devices per run.
    #[arg(long)]
    devices: Option<usize>,
    /// Fresh batches per run.
    #[arg(long)]
    batches: Option<usize>,
    /// Mean readings per batch.
    #[arg(long)]
    batch_readings: Option<usize>,
    /// Concurrent clients (gateways) per run.
    #[arg(long)]
    clients: Option<usize>,
    /// Share of readings whose first arrival crashes their device actor.
    #[arg(long)]
    crash_share: Option<f64>,
    /// Share of readings corrupted so that validation must refuse them.
    #[arg(long)]
    invalid_share: Option<f64>,
    /// Share of readings sent again later.
    #[arg(long)]
    duplicate_share: Option<f64>,
    /// Share of readings swapped with a later one of their device in a batch.
    #[arg(long)]
    reorder_share: Option<f64>,
    /// Share of readings held back to their client's next batch.
    #[arg(long)]
    straggler_share: Option<f64>,
    /// Share of batches re-sent whole.
    #[arg(long)]
    resend_share: Option<f64>,
    /// Print one line of counts per run.
    #[arg(long, short)]
    verbose: bool,
    /// Run every seed twice and fail it if the two trace hashes differ.
    #[arg(long)]
    twice: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Whole-cluster runs on a simulated network, with injected faults.
    Cluster(cluster_cli::ClusterArgs),
}

impl Args {
    fn options(&self) -> SimOptions {
        let d = SimOptions::default();
        SimOptions {
            devices: self.devices.unwrap_or(d.devices),
            batches: self.batches.unwrap_or(d.batches),
            batch_readings: self.batch_readings.unwrap_or(d.batch_readings),
            clients: self.clients.unwrap_or(d.clients),
            crash_share: self.crash_share.unwrap_or(d.crash_share),
            invalid_share: self.invalid_share.unwrap_or(d.invalid_share),
            duplicate_share: self.duplicate_share.unwrap_or(d.duplicate_share),
            reorder_share: self.reorder_share.unwrap_or(d.reorder_share),
            straggler_share: self.straggler_share.unwrap_or(d.straggler_share),
            resend_share: self.resend_share.unwrap_or(d.resend_share),
            ..d
        }
    }

    /// The command that replays exactly `seed` with these options.
    fn replay_command(&self, seed: u64) -> String {
        let o = self.options();
        format!(
            "cargo run -p vatio-simulations --release -- --seeds 1 --first-seed {seed} \
             --devices {} --batches {} --batch-readings {} --clients {} --crash-share {} \
             --invalid-share {} --duplicate-share {} --reorder-share {} --straggler-share {} \
             --resend-share {}{}",
            o.devices,
            o.batches,
            o.batch_readings,
            o.clients,
            o.crash_share,
            o.invalid_share,
            o.duplicate_share,
            o.reorder_share,
            o.straggler_share,
            o.resend_share,
            if self.twice { " --twice" } else { "" }
        )
    }
}

/// The injected crashes panic on purpose; printing each one would bury the
/// progress lines. Every other panic is reported as usual.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !message.starts_with("fault injection") {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Cluster(cluster)) = &args.command {
        init_tracing();
        return cluster_cli::main(cluster);
    }
    quiet_injected_panics();
    let opts = args.options();
    if let Err(e) = opts.validate() {
        eprintln!("vatio-simulations: {e}");
        return ExitCode::from(2);
    }
    println!(
        "vatio-simulations: {} seed(s) from {}, {opts:?}",
        args.seeds, args.first_seed
    );
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut failed: Vec<u64> = Vec::new();
    let mut totals = Totals::default();
    for i in 0..args.seeds {
        let seed = args.first_seed.wrapping_add(i);
        let outcome = run_seed(seed, &opts, args.twice);
        if args.verbose
            && let Ok(r) = &outcome
        {
            println!(
                "  seed {seed}: {:.2} s, {:?}",
                r.elapsed.as_secs_f64(),
                r.stats
            );
        }
        match outcome {
            Ok(report) if report.passed() => totals.add(&report),
            Ok(report) => {
                totals.add(&report);
                failed.push(seed);
                println!(
                    "\nFAILED seed {seed}: {} violation(s)",
                    report.violations.len()
                );
                for v in &report.violations {
                    println!("  {v}");
                }
                println!("  replay: {}", args.replay_command(seed));
            }
            Err(e) => {
                failed.push(seed);
                println!("\nFAILED seed {seed}: the run did not complete: {e:#}");
                println!("  replay: {}", args.replay_command(seed));
            }
        }
        let done = i + 1;
        if last_progress.elapsed() >= Duration::from_secs(2) || done == args.seeds {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  {done}/{} runs, {:.2} runs/s, {} failed so far",
                args.seeds,
                done as f64 / secs.max(1e-9),
                failed.len()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\n{} seed(s) in {secs:.1} s ({:.2} s per seed): {} passed, {} failed",
        args.seeds,
        secs / args.seeds.max(1) as f64,
        args.seeds - failed.len() as u64,
        failed.len()
    );
    println!(
        "readings sent {}, accepted {}, duplicates {}, dead-lettered {}; \
         overload backoffs {}, actor restarts {}, passivations {}, archive files {}",
        totals.sent,
        totals.accepted,
        totals.duplicates,
        totals.dead_lettered,
        totals.backoffs,
        totals.restarts,
        totals.passivated,
        totals.files
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        ExitCode::FAILURE
    }
}

/// One seed, or two runs of it compared by trace hash (`--twice`).
fn run_seed(seed: u64, opts: &SimOptions, twice: bool) -> anyhow::Result<RunReport> {
    let mut first = run(seed, opts)?;
    if twice {
        let second = run(seed, opts)?;
        if second.trace_hash != first.trace_hash {
            first.violations.push(vatio_simulations::Violation {
                check: "determinism",
                detail: format!("trace hash {} then {}", first.trace_hash, second.trace_hash),
            });
        }
        first.violations.extend(second.violations);
    }
    Ok(first)
}

#[derive(Default)]
struct Totals {
    sent: u64,
    accepted: u64,
    duplicates: u64,
    dead_lettered: u64,
    backoffs: u64,
    restarts: u64,
    passivated: u64,
    files: usize,
}

impl Totals {
    fn add(&mut self, r: &RunReport) {
        let s = &r.stats;
        self.sent += s.readings_sent;
        self.accepted += s.accepted;
        self.duplicates += s.duplicates;
        self.dead_lettered += s.dead_lettered;
        self.backoffs += s.overload_backoffs;
        self.restarts += s.actor_restarts;
        self.passivated += s.devices_passivated;
        self.files += s.archive_files;
    }
}

/// Log lines of the cluster runs' nodes, when `VATIO_LOG` asks for them
/// (as for `vatio`), stamped with simulated time: two runs of one seed
/// log alike, so a diff of their logs shows where they part.
fn init_tracing() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("VATIO_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_timer(SimulatedTime)
            .try_init();
    }
}

/// The simulation's elapsed time, or nothing outside a simulation.
struct SimulatedTime;

impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>10.6}s", t.as_secs_f64()),
            None => write!(w, "{:>11}", "-"),
        }
    }
}
