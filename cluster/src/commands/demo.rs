//! `vatio demo`: a node on embedded stores fed by a simulated factory, with
//! a live per-minute summary in the terminal. Everything goes through the
//! real gRPC path. Ctrl-C stops the factory, drains the node and exits.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use vatio_actors::Clock;
use vatio_config::Config;
use vatio_proto::v1::{
    self, admin_client::AdminClient, ingest_client::IngestClient, query_client::QueryClient,
};

use crate::factory::{Factory, FactorySpec};
use crate::{Node, NodeOptions, SystemClock, table};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo node keeps its stores and archive.
    #[arg(long, default_value = "vatio-data/demo")]
    pub data_dir: PathBuf,
    /// gRPC address of the demo node (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: std::net::SocketAddr,
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
}

#[derive(Default, Clone, Copy)]
struct MinuteTally {
    sent: u64,
    accepted: u64,
    duplicates: u64,
    dead_lettered: u64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut cfg = Config::default();
    cfg.node.id = "demo-1".into();
    cfg.node.data_dir = args.data_dir.clone();
    cfg.node.listen = args.listen;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("demo configuration:\n{e}"))?;
    let clock = Arc::new(SystemClock);
    let node = Node::start(cfg.clone(), NodeOptions::with_clock(clock.clone()))
        .await
        .context("starting the demo node (if the address is taken, pass --listen 127.0.0.1:0)")?;
    let endpoint = node.endpoint();
    let channel = super::connect(&endpoint).await?;
    let mut ingest = IngestClient::new(channel.clone());
    let mut query = QueryClient::new(channel.clone());
    let mut admin = AdminClient::new(channel);

    let spec = FactorySpec {
        climate_sensors: args.climate,
        robot_arms: args.arms,
        meters: args.meters,
        seed: args.seed,
        ..FactorySpec::default()
    };
    let mut factory = Factory::new(spec).context("demo factory")?;
    let tty = std::io::stdout().is_terminal();
    println!(
        "vatio demo: node at {endpoint}, data in {}; {} climate sensors, {} robot arms, {} meters. Ctrl-C stops.",
        args.data_dir.display(),
        args.climate,
        args.arms,
        args.meters
    );

    let mut tally: BTreeMap<i64, MinuteTally> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redraw = tokio::time::interval(args.refresh);
    let stop = super::node::wait_for_stop_signal();
    tokio::pin!(stop);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut batch_id = 0u64;
    let max_batch = cfg.ingest.max_batch_readings as usize;
    loop {
        tokio::select! {
            r = &mut stop => { r?; break; }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => break,
            _ = tick.tick() => {
                let now = clock.now_ms();
                let readings = factory.tick(now);
                let minute = now - now.rem_euclid(60_000);
                for chunk in readings.chunks(max_batch.max(1)) {
                    batch_id += 1;
                    let t = tally.entry(minute).or_default();
                    t.sent += chunk.len() as u64;
                    let ack = ingest
                        .ingest_batch(v1::IngestRequest {
                            batch_id,
                            readings: chunk.to_vec(),
                            source: "demo-factory".into(),
                        })
                        .await;
                    match ack {
                        Ok(ack) => {
                            let ack = ack.into_inner();
                            t.accepted += u64::from(ack.accepted);
                            t.duplicates += u64::from(ack.duplicates);
                            t.dead_lettered += u64::from(ack.dead_lettered);
                        }
                        Err(status) => eprintln!("ingest refused a batch: {status}"),
                    }
                }
                while tally.len() > 10 {
                    tally.pop_first();
                }
            }
            _ = redraw.tick() => {
                let summary = render(&tally, &mut query, &mut admin, clock.now_ms()).await;
                match summary {
                    Ok(text) if tty => print!("\x1b[2J\x1b[H{text}"),
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("summary unavailable: {e:#}"),
                }
            }
        }
    }
    println!("stopping: draining everything acknowledged into the stores…");
    node.shutdown().await?;
    println!(
        "stopped cleanly. Stores: {}; archive: {} and {}.",
        cfg.data_path(&cfg.stores.sqlite_dir).display(),
        cfg.data_path(&cfg.archiver.primary_root).display(),
        cfg.data_path(&cfg.archiver.replica_root).display()
    );
    Ok(())
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

async fn render(
    tally: &BTreeMap<i64, MinuteTally>,
    query: &mut QueryClient<tonic::transport::Channel>,
    admin: &mut AdminClient<tonic::transport::Channel>,
    now_ms: i64,
) -> anyhow::Result<String> {
    let power = query
        .power_flow(v1::PowerFlowRequest {
            from_unix_ms: now_ms - 10 * 60_000,
            to_unix_ms: 0,
        })
        .await?
        .into_inner();
    let power: BTreeMap<i64, (f64, u32)> = power
        .minutes
        .into_iter()
        .map(|m| (m.minute_unix_ms, (m.total_kw, m.meters)))
        .collect();
    let dead = query
        .dead_letter_counts(v1::DeadLetterCountsRequest {})
        .await?
        .into_inner();
    let status = admin.status(v1::StatusRequest {}).await?.into_inner();

    let mut t = table::new(&[
        "minute (UTC)",
        "readings in",
        "accepted",
        "duplicates",
        "dead letters",
        "power flow kW",
        "meters",
    ]);
    for (minute, m) in tally.iter().rev() {
        let (kw, meters) = power
            .get(minute)
            .map(|(kw, n)| (table::num(*kw, 1), n.to_string()))
            .unwrap_or_else(|| ("…".into(), "…".into()));
        t.add_row(vec![
            table::minute(*minute),
            m.sent.to_string(),
            m.accepted.to_string(),
            m.duplicates.to_string(),
            m.dead_lettered.to_string(),
            kw,
            meters,
        ]);
    }
    let reasons: Vec<String> = dead
        .counts
        .iter()
        .map(|c| format!("{} {}", c.reason, c.count))
        .collect();
    Ok(format!(
        "vatio demo — {}\n{t}\nnode {} ({}): {} accepted, {} duplicates, {} dead letters; {} devices ({} active); {} points, {} documents, {} archive files written\ndead letters by reason: {}\n",
        table::time(now_ms),
        status.node_id,
        status.az,
        status.readings_accepted,
        status.readings_duplicate,
        status.readings_dead_lettered,
        status.devices_known,
        status.devices_active,
        status.points_written,
        status.documents_written,
        status.archive_files_written,
        if reasons.is_empty() {
            "none".to_string()
        } else {
            reasons.join(", ")
        },
    ))
}
