//! One cluster run: real nodes (actor trees, durable logs, embedded stores
//! in a temporary directory, gRPC between them) as turmoil hosts in two
//! AZs, gateways sending readings, and the seed's faults applied on the
//! way. When the load is over and every fault healed, every node is
//! flushed and the guarantees are checked against what the gateways were
//! acknowledged.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use vatio_cluster::node::{Node, NodeOptions};
use vatio_config::{Config, LogFsync};
use vatio_proto::v1;
use vatio_stores::{DeadLetterFilter, DeviceKind, Metric, MinuteFilter, merge};
use vatio_tests::audit::{Archived, Findings};
use vatio_wal::FaultPoint;

use super::buckets::Buckets;
use super::client::{Acks, ClusterAnswer, Gateway, SharedAcks, admin, query};
use super::clock::SimClock;
use super::faults::{self, Action, FaultKind, Scheduled};
use super::net::SimNetwork;
use super::power::{Power, wait_for_writer};
use super::sink::{FaultySink, SinkSwitch};
use crate::heap::HeapWatch;

const GRPC_PORT: u16 = 7400;
const GOSSIP_PORT: u16 = 7500;
const AZS: [&str; 2] = ["az-a", "az-b"];
/// Simulated time the cluster gets to form, and to converge after faults.
const FORM_MAX: Duration = Duration::from_secs(60);
/// Simulated 2026-01-01T00:00:00Z: the runs' epoch (their clocks start here).
const EPOCH_S: u64 = 1_767_225_600;

/// The default bound on a run's heap growth (the Rust heap: SQLite
/// allocates outside it). Every queue on the nodes is bounded (mailboxes,
/// in-flight budgets, log tail caches, the shipper's batches): runs of four
/// nodes peaked 6-8 MiB above their start in measurements (the `cluster`
/// command's summary), so growth far beyond that means something grows
/// without backpressure.
pub const HEAP_GROWTH_MAX: usize = 64 << 20;

/// The knobs of one cluster run.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub seed: u64,
    pub nodes_per_az: usize,
    pub gateways: usize,
    pub devices_per_gateway: usize,
    pub readings_per_batch: usize,
    /// Simulated time the gateways send new batches for.
    pub load_for: Duration,
    pub fault_kinds: Vec<FaultKind>,
    /// How many faults, one after the other, within the load.
    pub faults: usize,
    /// Share of readings sent invalid (each must end in dead letters).
    pub invalid_share: f64,
    /// The most the process's heap may grow over a run (all its nodes).
    pub heap_growth_max: usize,
    /// When the nodes' logs fsync.
    pub log_fsync: LogFsync,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes_per_az: 2,
            gateways: 2,
            devices_per_gateway: 8,
            readings_per_batch: 16,
            load_for: Duration::from_secs(20),
            fault_kinds: FaultKind::ALL.to_vec(),
            faults: 2,
            invalid_share: 0.0,
            heap_growth_max: HEAP_GROWTH_MAX,
            log_fsync: LogFsync::Always,
        }
    }
}

/// What one run did and what its checks found.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ClusterReport {
    pub seed: u64,
    pub schedule: Vec<(Duration, String)>,
    pub acked_readings: usize,
    /// Invalid readings in acknowledged batches (checked as dead letters).
    pub refused_readings: usize,
    pub batches_sent: u64,
    pub batches_acked: u64,
    pub abandoned: u64,
    pub retries: BTreeMap<String, u64>,
    pub archived_readings: usize,
    /// How far the process's heap rose over the run, at its highest.
    pub heap_peak_growth: usize,
    pub simulated: Duration,
    pub wall: Duration,
    /// Broken guarantees, one line each (empty: the run passed).
    pub violations: Vec<String>,
    /// Every call's outcome as the gateways saw it, with simulated time.
    pub trace: Vec<String>,
    /// SHA-256 of the trace: equal for two runs of one seed, unless
    /// something outside the seed steered the run.
    pub trace_hash: String,
}

#[derive(Clone)]
struct NodeSpec {
    id: String,
    az: String,
    dir: PathBuf,
    others: Vec<String>,
    /// Seeds the node's gossip; from the run's seed.
    gossip_seed: u64,
    /// The node's clock skew, set by the fault schedule.
    skew_ms: Arc<AtomicI64>,
    /// The condition of the node's time-series sink, likewise.
    sink: SinkSwitch,
    /// Whether the node's log writes fail, likewise.
    disk_failing: Arc<AtomicBool>,
    /// The power of the node's log disk, likewise.
    power: Arc<Power>,
    log_fsync: LogFsync,
    /// The node's archive buckets, which outlive its restarts.
    buckets: Buckets,
}

impl NodeSpec {
    /// The node's configuration; inside the simulation (addresses are the
    /// hosts' simulated ones).
    fn config(&self) -> Config {
        let mut cfg = Config::default();
        cfg.node.id = self.id.clone();
        cfg.node.az = self.az.clone();
        cfg.node.data_dir = self.dir.clone();
        let me = turmoil::lookup(self.id.as_str());
        cfg.node.listen = SocketAddr::new(me, GRPC_PORT);
        cfg.cluster.gossip_listen = SocketAddr::new(me, GOSSIP_PORT).to_string();
        cfg.cluster.seeds = self
            .others
            .iter()
            .map(|o| SocketAddr::new(turmoil::lookup(o.as_str()), GOSSIP_PORT).to_string())
            .collect();
        cfg.cluster.gossip_interval = Duration::from_millis(100);
        cfg.cluster.peer_timeout = Duration::from_secs(2);
        cfg.log.fsync = self.log_fsync;
        cfg.aggregator.flush_max_delay = Duration::from_millis(200);
        cfg.stream_etl.flush_max_delay = Duration::from_millis(200);
        cfg
    }

    /// Where the node's log keeps its segment files.
    fn segments_dir(&self) -> PathBuf {
        let cfg = self.files_config();
        cfg.data_path(&cfg.log.dir).join("segments")
    }

    /// The configuration as read after the run, outside the simulation
    /// (only the paths matter then).
    fn files_config(&self) -> Config {
        let mut cfg = Config::default();
        cfg.node.data_dir = self.dir.clone();
        cfg
    }
}

async fn run_node(spec: NodeSpec) -> anyhow::Result<()> {
    let cfg = spec.config();
    let mut options = NodeOptions::with_clock(Arc::new(SimClock {
        skew_ms: spec.skew_ms.clone(),
    }));
    options.network = Some(Arc::new(SimNetwork));
    options.gossip_seed = Some(spec.gossip_seed);
    // FAULT INJECTION: the simulation's failing disk under the node's
    // SQLite stores too (the same switch as the log's).
    let store_failing = spec.disk_failing.clone();
    let store_fault: vatio_stores::StoreFault = Arc::new(move || {
        store_failing
            .load(Ordering::Relaxed)
            .then(|| "simulated disk error".to_owned())
    });
    let mut stores = vatio_cluster::stores::open_embedded_with(
        &cfg,
        vatio_stores::Blocking::Inline,
        Some(store_fault),
    )?;
    stores.archive = Arc::new(spec.buckets.archive(&spec.id));
    stores.timeseries = Arc::new(FaultySink {
        inner: stores.timeseries,
        switch: spec.sink.clone(),
    });
    options.stores = Some(stores);
    // FAULT INJECTION: the simulation's power supply under the node's log.
    options.log_durable = Some(spec.power.hook());
    // Interval fsyncs on simulated time, like everything else the node does.
    options.log_interval_clock = vatio_wal::IntervalClock::Owner;
    // One thread runs everything, so the seed alone orders it.
    options.blocking = vatio_wal::Blocking::Inline;
    // FAULT INJECTION: the simulation's failing disk under the node's log.
    let failing = spec.disk_failing.clone();
    options.log_fault = Some(Arc::new(move |_point: FaultPoint| {
        failing
            .load(Ordering::Relaxed)
            .then(|| std::io::Error::other("simulated disk error"))
    }));
    let node = match Node::start(cfg, options).await {
        Ok(node) => node,
        // A node cannot start on a failing disk (its checkpoint is
        // unreadable); like `vatio node` it exits, and the run's service
        // manager starts it again until the disk is back.
        Err(e) if spec.disk_failing.load(Ordering::Relaxed) => {
            tracing::warn!(node = %spec.id, error = %format!("{e:#}"), "the node could not start on its failing disk");
            return Ok(());
        }
        Err(e) => return Err(e.context(format!("starting {}", spec.id))),
    };
    node.failed().await;
    if let Some(reason) = node.tree().log_failure() {
        // As `vatio node` exits; the run's service manager starts it again.
        tracing::warn!(node = %spec.id, %reason, "the node stopped: its log failed");
        return Ok(());
    }
    anyhow::bail!("{}: the actor tree stopped", spec.id)
}

/// Where runs keep their files unless told otherwise: /dev/shm where it
/// exists (a memory file system, whose fsyncs cost nothing), else the
/// system's temporary directory. The simulation models the disk's power
/// itself, so the real disk's durability does not matter to it.
pub fn default_work_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Runs one seed in `root` (a fresh directory).
pub fn run_cluster_in(opts: &ClusterOptions, root: &Path) -> anyhow::Result<ClusterReport> {
    let wall = Instant::now();
    let mut heap = HeapWatch::start();
    let azs: Vec<Vec<String>> = AZS
        .iter()
        .map(|az| {
            (1..=opts.nodes_per_az)
                .map(|i| format!("{}{i}", &az[3..]))
                .collect()
        })
        .collect();
    let all: Vec<String> = azs.iter().flatten().cloned().collect();
    let mut specs = Vec::new();
    for (az, nodes) in AZS.iter().zip(&azs) {
        for id in nodes {
            specs.push(NodeSpec {
                id: id.clone(),
                az: (*az).to_owned(),
                dir: root.join(id),
                others: all.iter().filter(|o| *o != id).cloned().collect(),
                gossip_seed: opts
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(specs.len() as u64),
                skew_ms: Arc::default(),
                sink: SinkSwitch::default(),
                disk_failing: Arc::default(),
                power: Arc::default(),
                log_fsync: opts.log_fsync,
                buckets: Buckets::default(),
            });
        }
    }
    // Formation, load, a quiet spell to converge, the final checks' calls.
    let warmup = Duration::from_secs(5);
    let schedule: Vec<Scheduled> = faults::plan(
        opts.seed,
        &opts.fault_kinds,
        opts.faults,
        &azs,
        warmup + Duration::from_secs(2),
        warmup + opts.load_for.saturating_sub(Duration::from_secs(2)),
    );
    let sim_limit = warmup + opts.load_for + FORM_MAX * 3;

    let mut sim = turmoil::Builder::new()
        .rng_seed(opts.seed)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_S))
        .simulation_duration(sim_limit)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(faults::LINK_MAX)
        .build();
    for spec in &specs {
        let spec = spec.clone();
        sim.host(spec.id.clone(), move || {
            let spec = spec.clone();
            async move { run_node(spec).await.map_err(boxed) }
        });
    }
    let acks: SharedAcks = Arc::new(Mutex::new(Acks::default()));
    let formed_again: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let acks = acks.clone();
        let all = all.clone();
        let formed_again = formed_again.clone();
        let opts = opts.clone();
        sim.client("gateways", async move {
            drive(opts, all, warmup, acks, formed_again)
                .await
                .map_err(boxed)
        });
    }

    let mut pending = schedule.iter().peekable();
    let mut sim_error = None;
    // Nodes the schedule has crashed; any other node that stopped is
    // started again, as a service manager would.
    let mut down: HashSet<String> = HashSet::new();
    loop {
        while let Some(s) = pending.peek()
            && sim.elapsed() >= s.at
        {
            match &s.action {
                Action::Crash(hosts) | Action::PowerLoss(hosts) => {
                    down.extend(hosts.iter().cloned())
                }
                Action::Restart(hosts) => hosts.iter().for_each(|h| {
                    down.remove(h);
                }),
                _ => {}
            }
            if let Err(e) = apply(&mut sim, &specs, &s.action) {
                sim_error = Some(format!("{e:#}"));
            }
            pending.next();
        }
        if sim_error.is_some() {
            break;
        }
        // Every simulated 100 ms: cheap, and no queue fills up unseen.
        if sim.elapsed().as_millis() % 100 == 0 {
            heap.sample();
            if let Err(e) = restart_stopped(&mut sim, &specs, &down) {
                sim_error = Some(format!("{e:#}"));
                break;
            }
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                sim_error = Some(e.to_string());
                break;
            }
        }
    }
    let simulated = sim.elapsed();
    heap.sample();
    drop(sim);

    let mut violations = Vec::new();
    if let Some(e) = sim_error {
        violations.push(format!("the simulation failed: {e}"));
    }
    if heap.peak_growth() > opts.heap_growth_max {
        violations.push(format!(
            "memory not bounded: the heap grew by {} MiB over the run, more than {} MiB",
            heap.peak_growth() >> 20,
            opts.heap_growth_max >> 20
        ));
    }
    let not_converged: Vec<String> = formed_again
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let acks = std::mem::take(&mut *acks.lock().unwrap_or_else(PoisonError::into_inner));
    // Without convergence nothing was flushed: the archive audit would only
    // bury the real failure under readings still in the logs.
    let archived_readings = if not_converged.is_empty() && violations.is_empty() {
        let (archived, findings) = audit(&specs, &acks)?;
        if !findings.is_empty() {
            violations.push(findings.report());
        }
        archived
    } else {
        violations.extend(not_converged);
        violations.push("archive not audited: the nodes were not flushed".to_owned());
        0
    };
    let trace_hash = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for line in &acks.trace {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        format!("{:x}", h.finalize())
    };
    Ok(ClusterReport {
        trace_hash,
        trace: acks.trace.clone(),
        seed: opts.seed,
        schedule: schedule
            .iter()
            .map(|s| (s.at, s.action.to_string()))
            .collect(),
        acked_readings: acks.readings.len(),
        refused_readings: acks.refused.len(),
        batches_sent: acks.batches_sent,
        batches_acked: acks.batches_acked,
        abandoned: acks.abandoned,
        retries: acks.retries,
        archived_readings,
        heap_peak_growth: heap.peak_growth(),
        simulated,
        wall: wall.elapsed(),
        violations,
    })
}

/// A host's error as turmoil takes it, with its whole chain of causes.
fn boxed(e: anyhow::Error) -> Box<dyn std::error::Error> {
    format!("{e:#}").into()
}

/// Starts again every node that stopped on its own (its log failed), as
/// its service manager would; `down` are the ones the schedule crashed.
fn restart_stopped(
    sim: &mut turmoil::Sim<'_>,
    specs: &[NodeSpec],
    down: &HashSet<String>,
) -> anyhow::Result<()> {
    for spec in specs {
        if down.contains(&spec.id) || sim.is_host_running(spec.id.as_str()) {
            continue;
        }
        // The stopped node closed its log; its writer thread may still be
        // on its way out.
        drop(wait_for_writer(&spec.segments_dir())?);
        tracing::info!(node = %spec.id, "restarting a node that stopped");
        sim.bounce(spec.id.as_str());
    }
    Ok(())
}

fn apply(sim: &mut turmoil::Sim<'_>, specs: &[NodeSpec], action: &Action) -> anyhow::Result<()> {
    tracing::info!(%action, "fault schedule");
    let spec_of = |node: &str| specs.iter().find(|s| s.id == node);
    match action {
        Action::Crash(hosts) => {
            for h in hosts {
                sim.crash(h.as_str());
            }
        }
        Action::PowerLoss(hosts) => {
            for h in hosts {
                if let Some(spec) = spec_of(h) {
                    spec.power.cut();
                }
                sim.crash(h.as_str());
            }
        }
        Action::Restart(hosts) => {
            for h in hosts {
                if let Some(spec) = spec_of(h)
                    && spec.power.is_off()
                {
                    let segments = spec.segments_dir();
                    let lost = spec
                        .power
                        .restore(&segments)
                        .with_context(|| format!("restoring {h}'s power"))?;
                    tracing::info!(node = %h, lost_bytes = lost, "power back; unsynced log writes lost");
                }
                sim.bounce(h.as_str());
            }
        }
        Action::Partition { from, to, one_way } => {
            for a in from {
                for b in to {
                    if *one_way {
                        sim.partition_oneway(a.as_str(), b.as_str());
                    } else {
                        sim.partition(a.as_str(), b.as_str());
                    }
                }
            }
        }
        Action::Repair { from, to, one_way } => {
            for a in from {
                for b in to {
                    if *one_way {
                        sim.repair_oneway(a.as_str(), b.as_str());
                    } else {
                        sim.repair(a.as_str(), b.as_str());
                    }
                }
            }
        }
        Action::Disk { node, failing } => {
            if let Some(spec) = specs.iter().find(|s| s.id == *node) {
                spec.disk_failing.store(*failing, Ordering::Relaxed);
            }
        }
        Action::Sink { node, state } => {
            if let Some(spec) = specs.iter().find(|s| s.id == *node) {
                spec.sink.set(*state);
            }
        }
        Action::Skew { node, ms } => {
            if let Some(spec) = specs.iter().find(|s| s.id == *node) {
                spec.skew_ms.store(*ms, Ordering::Relaxed);
            }
        }
        // Links given their own latency keep the global loss rate.
        Action::Loss { per_mille } => sim.set_fail_rate(f64::from(*per_mille) / 1000.0),
        Action::Latency { a, b, max } => {
            for x in a {
                for y in b {
                    sim.set_link_max_message_latency(x.as_str(), y.as_str(), *max);
                }
            }
        }
    }
    Ok(())
}

/// The gateways' side: wait for the cluster, send the load, wait for it to
/// converge after the faults, flush every node.
async fn drive(
    opts: ClusterOptions,
    nodes: Vec<String>,
    warmup: Duration,
    acks: SharedAcks,
    problems: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    if let Err(e) = wait_formed(&nodes).await {
        anyhow::bail!("the cluster did not form: {e}");
    }
    // The load starts when the warm-up ends, whatever formation took, so
    // the schedule's faults hit the load where the seed put them.
    let formed_at = turmoil::elapsed();
    if formed_at < warmup {
        tokio::time::sleep(warmup - formed_at).await;
    }
    let mut tasks = Vec::new();
    for g in 0..opts.gateways {
        let gateway = Gateway {
            seed: opts.seed.wrapping_mul(31).wrapping_add(g as u64),
            name: format!("gateway-{g}"),
            devices: (0..opts.devices_per_gateway)
                .map(|d| format!("meter-{g}-{d:02}"))
                .collect(),
            readings_per_batch: opts.readings_per_batch,
            pace: Duration::from_millis(20),
            nodes: nodes.clone(),
            grpc_port: GRPC_PORT,
            load_for: opts.load_for,
            retry_after: Duration::from_millis(100),
            give_up_after: FORM_MAX,
            invalid_share: opts.invalid_share,
        };
        let acks = acks.clone();
        tasks.push(tokio::task::spawn_local(gateway.run(acks)));
    }
    for t in tasks {
        t.await??;
    }
    // Every fault has healed by now: the cluster must converge.
    if let Err(e) = wait_formed(&nodes).await {
        problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!(
                "the cluster did not converge after the faults: {e}"
            ));
        return Ok(());
    }
    for node in &nodes {
        let mut admin = admin(node, GRPC_PORT, true)?;
        admin
            .flush(v1::FlushRequest {})
            .await
            .with_context(|| format!("Admin.Flush of {node}"))?;
    }
    // One node, picked by the seed, answers for the whole cluster.
    let asked = nodes[(opts.seed % nodes.len() as u64) as usize].clone();
    let mut client = query(&asked, GRPC_PORT)?;
    let scope = v1::QueryScope::Cluster as i32;
    let power_flow = client
        .power_flow(v1::PowerFlowRequest {
            from_unix_ms: 0,
            to_unix_ms: 0,
            scope,
        })
        .await
        .with_context(|| format!("cluster-wide Query.PowerFlow of {asked}"))?
        .into_inner();
    let dead_letters = client
        .dead_letter_counts(v1::DeadLetterCountsRequest { scope })
        .await
        .with_context(|| format!("cluster-wide Query.DeadLetterCounts of {asked}"))?
        .into_inner();
    acks.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .cluster_answer = Some(ClusterAnswer {
        node: asked,
        power_flow,
        dead_letters,
    });
    Ok(())
}

/// Waits until every node lists every node as a ready, verified member.
async fn wait_formed(nodes: &[String]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + FORM_MAX;
    for node in nodes {
        loop {
            let seen = match admin(node, GRPC_PORT, false)?
                .status(v1::StatusRequest {})
                .await
            {
                Ok(s) => s
                    .into_inner()
                    .members
                    .iter()
                    .filter(|m| m.ready && m.verified)
                    .count(),
                Err(_) => 0,
            };
            if seen == nodes.len() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{node} sees {seen} of {} members ready after {FORM_MAX:?}",
                nodes.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Reads every node's archive back and checks it against the acks.
fn audit(specs: &[NodeSpec], acks: &Acks) -> anyhow::Result<(usize, Findings)> {
    let mut findings = Findings::default();
    for ((device, seq), guarantee) in &acks.readings {
        if *guarantee != v1::AckGuarantee::Replicated {
            findings.add("acks weaker than the replicated guarantee", || {
                format!("{device} {seq}: {guarantee:?}")
            });
        }
    }
    let acked: HashSet<(String, u64)> = acks.readings.keys().cloned().collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut archived = Archived::default();
    for spec in specs {
        let cfg = spec.files_config();
        runtime.block_on(spec.buckets.export(
            &local_archive(&cfg, &cfg.archiver.primary_root)?,
            &local_archive(&cfg, &cfg.archiver.replica_root)?,
        ))?;
        archived.add_root(
            &spec.id,
            &local_archive(&cfg, &cfg.archiver.primary_root)?,
            &mut findings,
        )?;
    }
    archived.check_exactly_once(&acked, &mut findings);
    // The time-series and document sinks count each archived reading once.
    let mut stores = Vec::with_capacity(specs.len());
    for spec in specs {
        stores.push(vatio_cluster::stores::open_embedded(&spec.files_config())?);
    }
    runtime.block_on(archived.check_minutes(&stores, &mut findings))?;
    // Every refused reading is a dead letter, with its reason, and archived nowhere.
    let mut letters: HashSet<(String, u64)> = HashSet::new();
    for s in &stores {
        let filter = DeadLetterFilter {
            include_replayed: true,
            limit: u32::MAX,
            ..DeadLetterFilter::default()
        };
        for l in runtime.block_on(s.dead_letters.list(&filter))? {
            if !l.letter.detail.is_empty() {
                letters.insert((l.letter.reading.device_id.clone(), l.letter.reading.seq));
            }
        }
    }
    check_cluster_answer(
        acks.cluster_answer.as_ref(),
        &stores,
        &runtime,
        &mut findings,
    )?;
    for key in &acks.refused {
        if !letters.contains(key) {
            findings.add("refused readings not in dead letters", || {
                format!("{} {}", key.0, key.1)
            });
        }
        if archived.rows.contains_key(key) {
            findings.add("refused readings archived", || {
                format!("{} {}", key.0, key.1)
            });
        }
    }
    Ok((archived.rows.len(), findings))
}

/// The cluster-wide answers one node gave after the flush must equal what
/// every node's stores hold together: no share missing, none twice.
fn check_cluster_answer(
    answer: Option<&ClusterAnswer>,
    stores: &[vatio_actors::TreeStores],
    runtime: &tokio::runtime::Runtime,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let Some(answer) = answer else {
        findings.add("no cluster-wide answer", || {
            "the gateways got no cluster-wide query answer after the flush".to_owned()
        });
        return Ok(());
    };
    let node = &answer.node;
    for missing in answer
        .power_flow
        .unanswered_nodes
        .iter()
        .chain(&answer.dead_letters.unanswered_nodes)
    {
        findings.add("cluster-wide answers missing a member", || {
            format!("{node} got no share from {missing}")
        });
    }
    let meters = MinuteFilter {
        device: None,
        kind: Some(DeviceKind::ElectricityMeter),
        metric: Some(Metric::Power),
    };
    let mut minutes = Vec::new();
    let mut dead_letters = 0;
    for s in stores {
        minutes.extend(runtime.block_on(s.timeseries.minutes(&meters, 0, i64::MAX))?);
        dead_letters += runtime
            .block_on(s.dead_letters.counts())?
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>();
    }
    let expected = merge::power_flow(minutes);
    let got = &answer.power_flow.minutes;
    let same = expected.len() == got.len()
        && expected.iter().zip(got).all(|(e, g)| {
            e.minute_ms == g.minute_unix_ms
                && e.meters == g.meters
                && (e.total_kw - g.total_kw).abs() <= 1e-9 * e.total_kw.abs().max(1.0)
        });
    if !same {
        findings.add("cluster-wide power flow differs from the stores", || {
            format!(
                "{node} answered {} minutes, the stores hold {}; first answered {:?}, first held {:?}",
                got.len(),
                expected.len(),
                got.first(),
                expected.first()
            )
        });
    }
    if answer.dead_letters.total != dead_letters {
        findings.add(
            "cluster-wide dead-letter count differs from the stores",
            || {
                format!(
                    "{node} answered {}, the stores hold {dead_letters}",
                    answer.dead_letters.total
                )
            },
        );
    }
    Ok(())
}

/// The directory of a node's local archive root (a simulation never uses S3).
fn local_archive(
    cfg: &Config,
    root: &vatio_config::ArchiveRoot,
) -> anyhow::Result<std::path::PathBuf> {
    cfg.archive_dir(root)
        .with_context(|| format!("the simulation's archive root {root} is not a directory"))
}
