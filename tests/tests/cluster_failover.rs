//! The failover test: a 4-node cluster in two AZs keeps every acknowledged
//! reading through `kill -9` of a node and of a whole AZ.
//!
//! Real processes on loopback: four `vatio node`s (a1, a2 in az-a; b1, b2
//! in az-b) with the default `ack = "replicated"` and `no_other_az =
//! "refuse"`, and one `vatio load` sending everything through a1 and
//! listing every reading it saw acknowledged. During the load, a2 is killed
//! with SIGKILL and restarted; then both az-b nodes are killed together and
//! restarted. Afterwards every node is flushed and stopped, and all four
//! nodes' stores are read from disk:
//!
//! - every acknowledged reading is archived exactly once over all nodes,
//!   and each file keeps a device's readings in seq order;
//! - each (device, minute) is counted exactly as often, summed over the
//!   nodes' time-series points and minute documents, as it has archived
//!   readings;
//! - every ack said `REPLICATED` (the policy refuses rather than degrade),
//!   and readings were refused while az-b was down.
//!
//! Needs the `vatio` binary (`scripts/test.sh` builds it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;
use vatio_tests::audit::{Archived, Findings, ListedLoad, LoadTotals, check_load};
use vatio_tests::process::{
    NodeFiles, NodeProcess, Process, flush, status, vatio_bin, vatio_command, write_cluster_configs,
};

const NODES: [(&str, &str); 4] = [
    ("a1", "az-a"),
    ("a2", "az-a"),
    ("b1", "az-b"),
    ("b2", "az-b"),
];
const LOAD_SEED: u64 = 20_261_127;
const DEVICES: u32 = 40;
const RATE_READINGS_PER_S: u32 = 1_000;
const BATCH_READINGS: u32 = 40;
const CONCURRENCY: u32 = 2;
const LOAD_DURATION: Duration = Duration::from_secs(26);

/// When, after the load starts, each fault happens.
const KILL_A2_AT: Duration = Duration::from_secs(3);
const RESTART_A2_AT: Duration = Duration::from_secs(7);
const KILL_AZ_B_AT: Duration = Duration::from_secs(11);
const RESTART_AZ_B_AT: Duration = Duration::from_secs(15);

/// Liveness bounds only; never asserted as performance.
const TEST_DEADLINE: Duration = Duration::from_secs(300);
const NODE_START_MAX: Duration = Duration::from_secs(60);
const CLUSTER_FORM_MAX: Duration = Duration::from_secs(60);
const LOAD_EXIT_AFTER_DURATION_MAX: Duration = Duration::from_secs(90);
const FLUSH_MAX: Duration = Duration::from_secs(90);
const NODE_STOP_MAX: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_survive_losing_a_node_and_an_az() -> anyhow::Result<()> {
    eprintln!(
        "failover test: load seed {LOAD_SEED}, {DEVICES} devices at {RATE_READINGS_PER_S}/s \
         through a1 for {LOAD_DURATION:?}; kill -9 a2 at {KILL_A2_AT:?}, restart at \
         {RESTART_A2_AT:?}; kill -9 b1+b2 at {KILL_AZ_B_AT:?}, restart at {RESTART_AZ_B_AT:?}"
    );
    match tokio::time::timeout(TEST_DEADLINE, run()).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("failover test did not finish within {TEST_DEADLINE:?}"),
    }
}

async fn run() -> anyhow::Result<()> {
    let bin = vatio_bin()?;
    let dir = tempfile::tempdir()?;
    let result = run_in(&bin, dir.path()).await;
    // VATIO_TEST_KEEP=1 keeps the run's files even when it passes.
    if result.is_err() || std::env::var_os("VATIO_TEST_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!(
            "failover test: kept {} (each node's dir with logs and data, load logs, acks.txt)",
            kept.display()
        );
    }
    result
}

struct Cluster {
    nodes: BTreeMap<&'static str, NodeProcess>,
}

impl Cluster {
    fn node(&mut self, id: &str) -> anyhow::Result<&mut NodeProcess> {
        self.nodes
            .get_mut(id)
            .with_context(|| format!("no node {id}"))
    }

    /// Waits until every node lists all four as ready, verified members.
    async fn wait_formed(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + CLUSTER_FORM_MAX;
        for (id, node) in &mut self.nodes {
            loop {
                let endpoint = node.files().endpoint();
                let seen = match status(&endpoint).await {
                    Ok(s) => s.members.iter().filter(|m| m.ready && m.verified).count(),
                    Err(_) => 0,
                };
                if seen == NODES.len() {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{id} sees {seen} of {} members ready after {CLUSTER_FORM_MAX:?}\n{}",
                    NODES.len(),
                    node.process().logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

async fn run_in(bin: &Path, root: &Path) -> anyhow::Result<()> {
    eprintln!("failover test: working in {}", root.display());
    let files = write_cluster_configs(root, &NODES, "")?;
    let mut cluster = Cluster {
        nodes: BTreeMap::new(),
    };
    for (id, f) in &files {
        let dir = root.join(id);
        cluster
            .nodes
            .insert(id, NodeProcess::start(bin, f, &dir, NODE_START_MAX).await?);
    }
    cluster.wait_formed().await?;
    eprintln!("failover test: 4 nodes formed a cluster");

    let acks_path = root.join("acks.txt");
    let entry = files.get("a1").context("a1")?.endpoint();
    let load_args = ListedLoad {
        addr: entry.clone(),
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

    let at = |t: Duration| tokio::time::sleep_until(started + t);
    at(KILL_A2_AT).await;
    cluster.node("a2")?.kill()?;
    let killed = Instant::now();
    eprintln!(
        "failover test: killed a2 at {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let served = served_again(&entry).await?;
    eprintln!(
        "failover test: a batch over {PROBE_DEVICES} devices (some owned by a2) acknowledged again \
         {:.2}s after kill -9 of a2 (failure detection, then claims)",
        served.duration_since(killed).as_secs_f64()
    );
    at(RESTART_A2_AT).await;
    cluster.node("a2")?.restart(NODE_START_MAX).await?;
    eprintln!(
        "failover test: a2 serving again at {:.2}s",
        started.elapsed().as_secs_f64()
    );
    at(KILL_AZ_B_AT).await;
    cluster.node("b1")?.kill()?;
    cluster.node("b2")?.kill()?;
    eprintln!(
        "failover test: killed az-b (b1, b2) at {:.2}s",
        started.elapsed().as_secs_f64()
    );
    at(RESTART_AZ_B_AT).await;
    cluster.node("b1")?.restart(NODE_START_MAX).await?;
    cluster.node("b2")?.restart(NODE_START_MAX).await?;
    eprintln!(
        "failover test: az-b serving again at {:.2}s",
        started.elapsed().as_secs_f64()
    );

    let load_left = LOAD_DURATION.saturating_sub(started.elapsed());
    let exited = load.wait(load_left + LOAD_EXIT_AFTER_DURATION_MAX).await?;
    anyhow::ensure!(
        exited.success(),
        "the load generator failed ({exited})\n{}",
        load.logs()
    );
    let report_json = std::fs::read_to_string(load.stdout_path())?;
    let totals = LoadTotals::parse(&report_json)?;
    eprintln!("failover test: load report {report_json}");

    cluster.wait_formed().await?;
    for (id, f) in &files {
        tokio::time::timeout(FLUSH_MAX, flush(&f.endpoint()))
            .await
            .with_context(|| format!("Admin.Flush of {id} did not return in time"))?
            .with_context(|| format!("Admin.Flush of {id}"))?;
    }
    for (id, node) in &mut cluster.nodes {
        let stopped = node.process().terminate(NODE_STOP_MAX).await?;
        anyhow::ensure!(
            stopped.success(),
            "{id} did not stop cleanly on SIGTERM ({stopped})\n{}",
            node.process().logs()
        );
    }
    verify(&files, &acks_path, &totals).await
}

/// Devices of the failover probe: enough that some belong to every node.
const PROBE_DEVICES: usize = 40;

/// Sends one batch over the probe devices through `entry` until it is
/// acknowledged whole; returns when. Measures how long a killed node's
/// devices stay unserved.
async fn served_again(entry: &str) -> anyhow::Result<Instant> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let readings: Vec<_> = (0..PROBE_DEVICES)
        .map(|i| vatio_tests::power(&format!("probe-{i:02}"), 1, ts, 1.0))
        .collect();
    let deadline = Instant::now() + CLUSTER_FORM_MAX;
    loop {
        let attempt = async {
            let channel = vatio_tests::process::connect(entry).await?;
            let mut client = vatio_proto::v1::ingest_client::IngestClient::new(channel);
            let ack = client
                .ingest_batch(vatio_tests::batch(1, readings.clone()))
                .await?
                .into_inner();
            anyhow::Ok(ack.accepted + ack.duplicates == PROBE_DEVICES as u32)
        };
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(3), attempt).await {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the probe batch was never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn verify(
    files: &BTreeMap<&'static str, NodeFiles>,
    acks_path: &Path,
    totals: &LoadTotals,
) -> anyhow::Result<()> {
    let mut findings = Findings::default();
    let acked = check_load(totals, acks_path, &mut findings)?;
    if totals.batches_acked_replicated != totals.batches_acked {
        findings.add(
            "acks without the replicated guarantee under no_other_az = refuse",
            || {
                format!(
                    "{} of {} batches",
                    totals.batches_acked - totals.batches_acked_replicated,
                    totals.batches_acked
                )
            },
        );
    }
    // Every node's archive, time series and documents, summed over the nodes.
    let mut archived = Archived::default();
    let mut stores = Vec::new();
    for (id, f) in files {
        let cfg = f.load()?;
        archived.add_root(
            id,
            &cfg.archive_dir(&cfg.archiver.primary_root)
                .expect("a local archive root"),
            &mut findings,
        )?;
        stores.push(vatio_cluster::stores::open_embedded(&cfg)?);
    }
    archived.check_exactly_once(&acked, &mut findings);
    archived.check_minutes(&stores, &mut findings).await?;
    let per_node: BTreeSet<&str> = archived
        .rows
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    let mut voided = BTreeMap::new();
    for (id, f) in files {
        let cfg = f.load()?;
        let path = cfg.data_path(&cfg.log.dir).join("void");
        let n = std::fs::read_to_string(&path).map_or(0, |t| t.lines().count());
        voided.insert(*id, n);
    }
    eprintln!(
        "failover test: sent {} acked {} archived {} on nodes {per_node:?}; {} of {} batches acked \
         replicated; told to back off {} times, {} errors (refusals while az-b was down, reconnects); \
         steps dropped as orphaned per node {voided:?}",
        totals.sent,
        acked.len(),
        archived.rows.len(),
        totals.batches_acked_replicated,
        totals.batches_acked,
        totals.backoffs,
        totals.errors
    );
    anyhow::ensure!(
        !acked.is_empty(),
        "the load generator saw nothing acknowledged"
    );
    anyhow::ensure!(
        totals.errors > 0,
        "no batch was refused or failed while az-b was down: the faults did not bite"
    );
    anyhow::ensure!(
        findings.is_empty(),
        "failover test found problems (load seed {LOAD_SEED}):\n{}",
        findings.report()
    );
    Ok(())
}
