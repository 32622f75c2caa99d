//! `vatio demo`: a four-node cluster in one process (two nodes in each of
//! two AZs, each on its own embedded stores) fed by a simulated factory
//! through the real gRPC Ingest path, with a live summary per minute, per
//! node and per AZ. Ctrl-C or `--duration` stops the factory; then every
//! node drains what it acknowledged into its stores and shuts down.
//!
//! - [`cluster`]: each node's configuration; starting the nodes and waiting
//!   until they see each other.
//! - [`feed`]: the factory, its devices spread over the nodes.
//! - [`snapshot`]: every node's counters at one moment.
//! - [`summary`]: the snapshots as rates and tables, with the plant's power flow.
//!
//! [`run_until`] is the demo without a terminal, for tests.

mod cluster;
mod feed;
mod snapshot;
mod summary;

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use vatio_actors::Clock;
use vatio_config::Config;

pub use self::cluster::{SEATS, Seat, node_config};
pub use self::feed::{Tally, node_for};
pub use self::snapshot::{NodeState, Snapshot};

use self::cluster::DemoCluster;
use self::feed::Feed;
use crate::SystemClock;
use crate::factory::FactorySpec;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo nodes keep their state, one directory per node.
    #[arg(long, default_value = "vatio-data/demo")]
    pub data_dir: PathBuf,
    /// gRPC address of the first demo node; the others take the next ports
    /// (port 0: every node takes a free port).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Humidity/temperature sensors.
    #[arg(long, default_value_t = 20)]
    pub climate: u32,
    /// Robot arms.
    #[arg(long, default_value_t = 10)]
    pub arms: u32,
    /// Electricity meters.
    #[arg(long, default_value_t = 6)]
    pub meters: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How often the summary is redrawn.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// A node configuration every demo node starts from, e.g. one that
    /// points the stores at InfluxDB, MongoDB and S3 (`VATIO_*` variables
    /// apply too). The demo sets each node's id, AZ, data directory,
    /// addresses and TLS itself.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Where the live summary goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redraw {
    /// Cleared and redrawn in place.
    Terminal,
    /// Appended, for output into a file or a pipe.
    Lines,
    /// Nowhere: nothing is printed.
    Off,
}

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// What every node's configuration starts from.
    pub base: Config,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub factory: FactorySpec,
    /// Stop after this long; `None`: only when the stop signal comes.
    pub duration: Option<Duration>,
    pub refresh: Duration,
    pub redraw: Redraw,
}

impl DemoOptions {
    fn say(&self, text: &str) {
        if self.redraw != Redraw::Off {
            println!("{text}");
        }
    }
}

/// What a finished demo saw: every node's counters just after the factory
/// started and just before the nodes shut down, and the factory's totals.
#[derive(Debug)]
pub struct DemoReport {
    pub start: Snapshot,
    pub end: Snapshot,
    pub factory: Tally,
}

impl DemoReport {
    /// One line per node and per AZ over the whole run, and the factory's.
    pub fn final_lines(&self) -> String {
        summary::final_lines(&self.start, &self.end, &self.factory)
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let redraw = if std::io::stdout().is_terminal() {
        Redraw::Terminal
    } else {
        Redraw::Lines
    };
    let base = Config::load(args.config.as_deref(), std::env::vars()).map_err(|e| {
        let file = args
            .config
            .as_ref()
            .map_or("the environment".into(), |p| p.display().to_string());
        anyhow::anyhow!("{file}: {} problem(s)\n{e}", e.problems.len())
    })?;
    let options = DemoOptions {
        base,
        data_dir: args.data_dir,
        listen: args.listen,
        factory: FactorySpec {
            climate_sensors: args.climate,
            robot_arms: args.arms,
            meters: args.meters,
            seed: args.seed,
            // From the wall clock, as `vatio load` does: a rerun on the same
            // data directory sends seqs above those the nodes already took.
            seq_start: u64::try_from(SystemClock.now_ms())
                .unwrap_or(1)
                .saturating_mul(1000)
                .max(1),
            ..FactorySpec::default()
        },
        duration: args.duration,
        refresh: args.refresh,
        redraw,
    };
    let report = run_until(options, super::node::wait_for_stop_signal()).await?;
    print!("{}", report.final_lines());
    Ok(())
}

/// Starts the cluster, runs the factory until `stop` completes or the
/// duration is over, then shuts every node down. An error from `stop` ends
/// the demo the same way and is returned once the nodes are down.
pub async fn run_until(
    options: DemoOptions,
    stop: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<DemoReport> {
    anyhow::ensure!(
        !options.refresh.is_zero(),
        "--refresh must be longer than 0"
    );
    let clock = Arc::new(SystemClock);
    let cluster = DemoCluster::start(
        &options.base,
        &options.data_dir,
        options.listen,
        clock.clone(),
    )
    .await
    .context("starting the demo cluster")?;
    let endpoints: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("{} ({}) {}", n.seat.id, n.seat.az, n.node.endpoint()))
        .collect();
    options.say(&format!(
        "vatio demo: nodes {}; data in {}; {} climate sensors, {} robot arms, {} meters. Ctrl-C stops.",
        endpoints.join(", "),
        options.data_dir.display(),
        options.factory.climate_sensors,
        options.factory.robot_arms,
        options.factory.meters,
    ));
    let outcome = drive(&cluster, &options, stop, clock.as_ref()).await;
    options.say("stopping: each node drains everything it acknowledged into its stores…");
    let stopped = cluster.shutdown().await;
    let report = outcome?;
    stopped?;
    options.say("stopped cleanly.");
    Ok(report)
}

/// The factory loop: a tick a second, a summary every refresh.
async fn drive(
    cluster: &DemoCluster,
    options: &DemoOptions,
    stop: impl Future<Output = anyhow::Result<()>>,
    clock: &dyn Clock,
) -> anyhow::Result<DemoReport> {
    let mut feed = Feed::new(options.factory.clone(), cluster.nodes())?;
    let start = Snapshot::take(cluster).await;
    let mut last = start.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redraw = tokio::time::interval(options.refresh);
    redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first redraw tick completes at once; there is nothing to show yet.
    redraw.tick().await;
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let failed = cluster.failed();
    tokio::pin!(stop, failed);
    let mut stopped = Ok(());
    loop {
        tokio::select! {
            r = &mut stop => { stopped = r; break; }
            _ = sleep_until(deadline) => break,
            id = &mut failed => {
                stopped = Err(anyhow::anyhow!(
                    "demo node {id}'s actor tree stopped after a failure beyond its restart budget"
                ));
                break;
            }
            _ = tick.tick() => feed.tick(clock.now_ms()).await,
            _ = redraw.tick(), if options.redraw != Redraw::Off => {
                let now = Snapshot::take(cluster).await;
                let text =
                    summary::live(cluster, feed.minutes(), &last, &now, clock.now_ms()).await;
                if options.redraw == Redraw::Terminal {
                    print!("\x1b[2J\x1b[H{text}");
                } else {
                    println!("{text}");
                }
                last = now;
            }
        }
    }
    let end = Snapshot::take(cluster).await;
    stopped?;
    Ok(DemoReport {
        start,
        end,
        factory: feed.total(),
    })
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
