//! The `vatio` command: run a node, the demo, queries, dead-letter tools,
//! the load generator and configuration checks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vatio_cluster::commands::{
    self, TlsArgs, demo::DemoArgs, dlq::DlqCommand, query::QueryCommand,
};
use vatio_cluster::load::{self, LoadSpec};

/// mimalloc instead of glibc's malloc: under ingest load glibc spent about a
/// third of the node's CPU in malloc and free (measured with `perf record`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "vatio",
    version,
    about = "Self-hosted telemetry platform for factories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the production entry point).
    Node {
        /// TOML configuration; VATIO_* environment variables override it.
        #[arg(long, env = "VATIO_CONFIG")]
        config: Option<PathBuf>,
    },
    /// A 4-node, 2-AZ cluster on embedded stores (mutual TLS, dev CA) fed by a
    /// simulated factory, with a live summary per minute, node and AZ.
    Demo(DemoArgs),
    /// Query a node.
    Query {
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        addr: String,
        #[command(flatten)]
        tls: TlsArgs,
        /// Read only the stores of the node asked (default in a cluster:
        /// every member's, merged).
        #[arg(long, global = true)]
        node_only: bool,
        #[command(subcommand)]
        command: QueryCommand,
    },
    /// A node's pipeline counters.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        addr: String,
        #[command(flatten)]
        tls: TlsArgs,
        #[arg(long)]
        json: bool,
    },
    /// Dead letters: list and replay.
    Dlq {
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        addr: String,
        #[command(flatten)]
        tls: TlsArgs,
        /// Only the node asked (default in a cluster: every member).
        #[arg(long, global = true)]
        node_only: bool,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Generate load against a node and report throughput and ack latency.
    Load {
        #[arg(long, default_value = "http://127.0.0.1:7400")]
        addr: String,
        #[command(flatten)]
        tls: TlsArgs,
        /// Distinct devices (electricity meters) to simulate.
        #[arg(long, default_value_t = 1000)]
        devices: u32,
        /// Readings per second in total; omit to go as fast as the node acks.
        #[arg(long)]
        rate: Option<u64>,
        /// Readings per batch.
        #[arg(long, default_value_t = 500)]
        batch: u32,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Parallel ingest streams.
        #[arg(long, default_value_t = 4)]
        concurrency: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// First seq of every device (default: wall-clock milliseconds × 1000,
        /// so repeated runs against one node send new readings).
        #[arg(long)]
        seq_start: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Append `DEVICE_ID SEQ` to this file for every reading the node
        /// acknowledged (created if missing, shared by several runs).
        #[arg(long, value_name = "FILE")]
        acks_out: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Certificates for mutual TLS between nodes and for clients.
    Certs {
        #[command(subcommand)]
        command: commands::certs::CertsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Report every problem in a configuration file (exit code 2 if any).
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VATIO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::Config {
        command: ConfigCommand::Check { file },
    } = &cli.command
    {
        return commands::config_check::run(file);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node { config } => commands::node::run(config).await,
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Query {
            addr,
            tls,
            node_only,
            command,
        } => commands::query::run(&addr, &tls, node_only, command).await,
        Command::Status { addr, tls, json } => commands::status::run(&addr, &tls, json).await,
        Command::Dlq {
            addr,
            tls,
            node_only,
            command,
        } => commands::dlq::run(&addr, &tls, node_only, command).await,
        Command::Load {
            addr,
            tls,
            devices,
            rate,
            batch,
            duration,
            concurrency,
            seed,
            seq_start,
            json,
            acks_out,
        } => {
            let seq_start = seq_start.unwrap_or_else(|| {
                let now_ms = chrono::Utc::now().timestamp_millis();
                u64::try_from(now_ms).unwrap_or(1).saturating_mul(1000)
            });
            let report = load::run(LoadSpec {
                addr,
                tls,
                devices,
                rate,
                batch,
                duration,
                concurrency,
                seed,
                seq_start,
                progress: !json,
                acks_out,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Config { .. } => Ok(()),
        Command::Certs { command } => commands::certs::run(command),
    }
}
