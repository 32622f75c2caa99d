//! One simulation run: a seed's workload driven through a real actor tree on
//! embedded stores in a temporary directory, on a single-threaded tokio
//! runtime, with a [`ManualClock`] that only the schedule moves. Then
//! everything is flushed, the stores are read back and the guarantees are
//! checked.
//!
//! Several clients (gateways) send concurrently, each owning its own devices
//! and sending its batches one at a time in schedule order; that is what
//! fills the node's in-flight budget and makes it answer with backpressure.
//! A client may run at most `lag_batches` ahead of the oldest unacknowledged
//! batch, which bounds how far the clock runs ahead of any batch in flight
//! (see `workload`).
//!
//! The rules read time from the manual clock; the tree's timers (reorder
//! ticks, sink flush and seal ticks, restart backoff) and the clients'
//! overload backoff run on tokio's real timer, so when they fire varies from
//! run to run. The workload is built so that no outcome depends on it, and
//! the trace hash is how two runs of one seed confirm that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::watch;
use vatio_actors::device::CrashHook;
use vatio_actors::stats::NodeStats;
use vatio_actors::{
    AckCounts, ActorTree, Clock, IngestError, ManualClock, SharedClock, TreeLog, TreeOptions,
    TreeStores,
};
use vatio_config::Config;
use vatio_stores::RawReading;
use vatio_stores::archive::ParquetArchive;
use vatio_stores::embedded::{
    SqliteCheckpoints, SqliteDeadLetters, SqliteDocuments, SqliteStaging, SqliteTimeSeries,
    Synchronous, local_object_store,
};
use vatio_wal::{Log, LogConfig, PositionStore};

use crate::check::{self, Violation};
use crate::model;
use crate::observe;
use crate::recording::RecordingStaging;
use crate::trace;
use crate::workload::{self, Bounds, FaultCounts, Workload};

/// Longest a single ingest call, or the final flush, may take in real time
/// before the run is declared wedged: a lost reply must fail the seed, not
/// hang it.
const WEDGED_AFTER: Duration = Duration::from_secs(60);

/// Most overload refusals one batch may get before the run gives up on it.
const OVERLOAD_RETRIES_MAX: u32 = 100_000;

/// The knobs of a run. Shares are probabilities per reading (per batch for
/// `resend_share`).
#[derive(Clone, Debug, PartialEq)]
pub struct SimOptions {
    pub devices: usize,
    /// Concurrent senders; each owns `devices / clients` devices.
    pub clients: usize,
    /// Fresh batches (whole-batch re-sends come on top).
    pub batches: usize,
    /// Mean readings per batch (each batch has 0.5× to 1.5× this).
    pub batch_readings: usize,
    /// Most simulated time between two consecutive batches.
    pub step_ms_max: i64,
    /// Readings corrupted so that validation must refuse them.
    pub invalid_share: f64,
    /// Readings sent again later (same seq, same content).
    pub duplicate_share: f64,
    /// Readings swapped with a later reading of the same device in a batch.
    pub reorder_share: f64,
    /// Readings held back to the client's next batch.
    pub straggler_share: f64,
    /// Batches re-sent whole right after their ack.
    pub resend_share: f64,
    /// Readings whose first arrival crashes their device actor.
    pub crash_share: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            devices: 48,
            clients: 4,
            batches: 150,
            batch_readings: 40,
            step_ms_max: 200,
            invalid_share: 0.04,
            duplicate_share: 0.03,
            reorder_share: 0.05,
            straggler_share: 0.03,
            resend_share: 0.05,
            crash_share: 0.0,
        }
    }
}

impl SimOptions {
    /// Refuses options no run can use (shares outside `[0, 1]`, empty runs).
    pub fn validate(&self) -> anyhow::Result<()> {
        let shares = [
            ("invalid_share", self.invalid_share),
            ("duplicate_share", self.duplicate_share),
            ("reorder_share", self.reorder_share),
            ("straggler_share", self.straggler_share),
            ("resend_share", self.resend_share),
            ("crash_share", self.crash_share),
        ];
        for (name, p) in shares {
            if !(0.0..=1.0).contains(&p) {
                bail!("{name} must be between 0 and 1, got {p}");
            }
        }
        if self.devices == 0 || self.batches == 0 || self.batch_readings < 2 {
            bail!("devices and batches must be > 0 and batch_readings >= 2");
        }
        if self.step_ms_max < 0 {
            bail!("step_ms_max must be >= 0, got {}", self.step_ms_max);
        }
        Ok(())
    }
}

/// Counts describing what a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Ingest calls acknowledged (fresh batches plus whole re-sends).
    pub batches: usize,
    pub readings_sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    /// Calls refused with `Overloaded` and retried.
    pub overload_backoffs: u64,
    pub actor_restarts: u64,
    pub devices_passivated: u64,
    pub archive_rows: usize,
    pub archive_files: usize,
    pub faults: FaultCounts,
    /// Simulated time the schedule spanned.
    pub simulated_ms: i64,
}

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    /// SHA-256 (hex) over the acks in schedule order and the sorted contents
    /// of the archive and the dead letters: equal for two runs of one seed.
    pub trace_hash: String,
    /// Empty when every guarantee held.
    pub violations: Vec<Violation>,
    pub stats: RunStats,
    /// Real time the run took.
    pub elapsed: Duration,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs one seed and checks the guarantees. `Err` means the harness could
/// not run the seed at all (or the node wedged or stopped): a failure too.
pub fn run(seed: u64, opts: &SimOptions) -> anyhow::Result<RunReport> {
    opts.validate()?;
    let started = Instant::now();
    let bounds = Bounds::default();
    let workload = Arc::new(workload::generate(seed, opts, &bounds));
    let expected = model::expect(&workload);
    let dir = tempfile::Builder::new()
        .prefix("vatio-sim-")
        .tempdir()
        .context("creating the run's data directory")?;
    let cfg = config(dir.path(), &workload)?;
    // One thread for every actor and client: the only concurrency left is
    // the blocking pool the embedded stores use, and the workload is built
    // so that no outcome depends on it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let (observed, stats) = runtime.block_on(simulate(&cfg, workload.clone()))?;
    let violations = check::all(&workload, &expected, &observed);
    let trace_hash = trace::hash(&observed);
    let stats = RunStats {
        batches: observed.acks.iter().flatten().count(),
        readings_sent: workload.readings_sent() as u64,
        accepted: sum(&observed.acks, |a| a.accepted),
        duplicates: sum(&observed.acks, |a| a.duplicates),
        dead_lettered: sum(&observed.acks, |a| a.dead_lettered),
        archive_rows: observed.archive.primary.values().map(Vec::len).sum(),
        archive_files: observed.archive.primary.len(),
        faults: workload.faults.clone(),
        simulated_ms: workload.batches.last().map_or(0, |b| b.at_ms) - workload.start_ms,
        ..stats
    };
    drop(runtime);
    Ok(RunReport {
        seed,
        trace_hash,
        violations,
        stats,
        elapsed: started.elapsed(),
    })
}

fn sum(acks: &[Option<AckCounts>], f: impl Fn(&AckCounts) -> u32) -> u64 {
    acks.iter().flatten().map(|a| u64::from(f(a))).sum()
}

/// Small bounds everywhere, so that mailboxes fill, the in-flight budget
/// runs out, the reorder buffer gives gaps up by size and by time, minute
/// windows are evicted and reloaded, and hours are sealed again and again.
/// Timer intervals (real time) are short so their paths run in a short run.
fn config(data_dir: &Path, w: &Workload) -> anyhow::Result<Config> {
    let b = &w.bounds;
    let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    let mut cfg = Config::default();
    cfg.node.id = "sim-node-1".to_owned();
    cfg.node.data_dir = data_dir.to_path_buf();

    let max_batch = u32::try_from(w.max_batch_len()).unwrap_or(u32::MAX);
    cfg.ingest.max_batch_readings = max_batch;
    // Room for about two batches: a third concurrent client is refused.
    cfg.ingest.max_inflight_readings = u64::from(max_batch) * 2;
    cfg.ingest.retry_after = Duration::from_millis(1);

    cfg.device.reorder_window = b.reorder_window;
    cfg.device.reorder_max_hold = ms(b.reorder_max_hold_ms);
    cfg.device.max_future_skew = ms(b.max_future_skew_ms);
    cfg.device.max_past_age = ms(b.max_past_age_ms);
    cfg.device.mailbox_batches = 2;
    // Short, so devices between batches are passivated and brought back
    // from their saved state (the router scans every quarter of this, in
    // real time).
    cfg.device.idle_passivate_after = Duration::from_millis(400);

    cfg.supervision.max_restarts = 4;
    cfg.supervision.restart_window = Duration::from_secs(30);
    cfg.supervision.backoff_initial = Duration::from_millis(1);
    cfg.supervision.backoff_max = Duration::from_millis(8);
    cfg.supervision.poison_attempts = 3;

    cfg.aggregator.flush_max_points = 48;
    cfg.aggregator.flush_max_delay = Duration::from_millis(400);
    cfg.aggregator.window_lateness = Duration::from_secs(20);
    cfg.aggregator.mailbox_readings = 48;

    cfg.stream_etl.flush_max_docs = 48;
    cfg.stream_etl.flush_max_delay = Duration::from_millis(400);
    cfg.stream_etl.mailbox_readings = 48;

    cfg.archiver.seal_after = Duration::from_secs(30);
    cfg.archiver.seal_interval = Duration::from_millis(40);
    cfg.archiver.mailbox_readings = 48;

    cfg.dead_letters.mailbox_readings = 16;
    // The directory is thrown away after the run: durability is not checked.
    cfg.stores.synchronous = vatio_config::SqliteSync::Off;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("simulation config is invalid:\n{e}"))?;
    Ok(cfg)
}

/// The embedded stores, opened as a node opens them (see the cluster crate),
/// with the staging store wrapped to record arrival order.
fn open_stores(cfg: &Config) -> anyhow::Result<(TreeStores, Arc<RecordingStaging>)> {
    let db = cfg.data_path(&cfg.stores.sqlite_dir);
    std::fs::create_dir_all(&db).with_context(|| format!("creating {}", db.display()))?;
    let sync = Synchronous::Off;
    let staging = Arc::new(RecordingStaging::new(Arc::new(SqliteStaging::open(
        &db.join("archive_staging.sqlite"),
        sync,
    )?)));
    let local = |root| {
        cfg.archive_dir(root)
            .with_context(|| format!("the simulation's archive root {root} is not a directory"))
    };
    let primary = local_object_store(&local(&cfg.archiver.primary_root)?)?;
    let replica = local_object_store(&local(&cfg.archiver.replica_root)?)?;
    let stores = TreeStores {
        timeseries: Arc::new(SqliteTimeSeries::open(&db.join("timeseries.sqlite"), sync)?),
        documents: Arc::new(SqliteDocuments::open(&db.join("documents.sqlite"), sync)?),
        dead_letters: Arc::new(SqliteDeadLetters::open(
            &db.join("dead_letters.sqlite"),
            sync,
        )?),
        staging: staging.clone(),
        archive: Arc::new(ParquetArchive::new(primary, replica, cfg.node.id.as_str())),
        checkpoints: Arc::new(SqliteCheckpoints::open(
            &db.join("checkpoint.sqlite"),
            sync,
        )?),
    };
    Ok((stores, staging))
}

/// The node's write-ahead log in the run's data directory.
pub(crate) fn open_log(cfg: &Config) -> anyhow::Result<TreeLog> {
    let dir = cfg.data_path(&cfg.log.dir);
    let (log, recovery) = Log::open(LogConfig::new(dir.join("segments")))
        .with_context(|| format!("opening the log in {}", dir.display()))?;
    Ok(TreeLog {
        log,
        positions: PositionStore::open(dir.join("positions"))?,
        recovery: Arc::new(recovery),
        now: std::time::Instant::now,
    })
}

/// FAULT INJECTION: a device actor panics the first time it is handed one
/// of `points`; the router restarts it and re-sends the group, which then
/// goes through.
fn crash_hook(points: &BTreeSet<(String, u64)>) -> Option<CrashHook> {
    if points.is_empty() {
        return None;
    }
    let mut by_device: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (device, seq) in points {
        by_device.entry(device.clone()).or_default().insert(*seq);
    }
    let remaining = Mutex::new(by_device);
    Some(Arc::new(move |r: &RawReading| {
        let mut g = match remaining.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.get_mut(&r.device_id)
            .is_some_and(|seqs| seqs.remove(&r.seq))
    }))
}

/// Starts the tree, drives the workload, flushes, reads the stores back.
async fn simulate(cfg: &Config, w: Arc<Workload>) -> anyhow::Result<(observe::Observed, RunStats)> {
    let clock = Arc::new(ManualClock::new(w.start_ms));
    let (stores, recorder) = open_stores(cfg)?;
    let shared: SharedClock = clock.clone();
    let tree = Arc::new(
        ActorTree::start(
            cfg,
            stores,
            open_log(cfg)?,
            shared,
            TreeOptions {
                crash_hook: crash_hook(&w.crash_points),
                replication: None,
            },
        )
        .await
        .context("starting the actor tree")?,
    );

    let driven = drive(tree.clone(), clock.clone(), w.clone()).await;
    let (acks, refusals) = match driven {
        Ok(d) => d,
        Err(e) => {
            let _ = tokio::time::timeout(WEDGED_AFTER, tree.shutdown()).await;
            return Err(e);
        }
    };
    tokio::time::timeout(WEDGED_AFTER, tree.flush())
        .await
        .context("the final flush did not finish")?
        .context("flushing the tree")?;

    let mut observed = observe::read(cfg, &w, &tree, &recorder, acks).await?;
    let node: &NodeStats = tree.stats();
    observed.overload_refusals_seen = refusals;
    observed.overload_refusals_counted = NodeStats::get(&node.batches_refused_overload);
    let stats = RunStats {
        overload_backoffs: refusals,
        actor_restarts: NodeStats::get(&node.actor_restarts),
        devices_passivated: NodeStats::get(&node.devices_passivated),
        ..RunStats::default()
    };
    tokio::time::timeout(WEDGED_AFTER, tree.shutdown())
        .await
        .context("shutdown did not finish")?
        .context("shutting the tree down")?;
    Ok((observed, stats))
}

/// Where the clients are: the lowest batch not yet acknowledged, or `None`
/// once a client failed and everyone should stop.
type Gate = Option<usize>;

/// Runs every client concurrently until the whole schedule is acknowledged.
/// Returns the ack of every planned batch, by batch id, and how many times
/// the clients were refused for overload.
async fn drive(
    tree: Arc<ActorTree>,
    clock: Arc<ManualClock>,
    w: Arc<Workload>,
) -> anyhow::Result<(Vec<Option<AckCounts>>, u64)> {
    let (gate_tx, gate_rx) = watch::channel::<Gate>(Some(0));
    let gate_tx = Arc::new(gate_tx);
    let acks: Arc<Mutex<Vec<Option<AckCounts>>>> =
        Arc::new(Mutex::new(vec![None; w.batches.len()]));
    let mut clients = Vec::with_capacity(w.clients);
    for c in 0..w.clients {
        let client = Client {
            id: c,
            tree: tree.clone(),
            clock: clock.clone(),
            w: w.clone(),
            gate_rx: gate_rx.clone(),
            gate_tx: gate_tx.clone(),
            acks: acks.clone(),
        };
        clients.push(tokio::spawn(async move {
            let result = client.run().await;
            if result.is_err() {
                client.gate_tx.send_replace(None);
            }
            result
        }));
    }
    let mut first_error = None;
    let mut refusals = 0;
    for handle in clients {
        let result = handle
            .await
            .map_err(|e| anyhow::anyhow!("client task failed: {e}"))
            .and_then(|r| r);
        match result {
            Ok(n) => refusals += n,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let acks = match acks.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    Ok((acks, refusals))
}

/// One gateway: sends its batches in schedule order, one at a time.
struct Client {
    id: usize,
    tree: Arc<ActorTree>,
    clock: Arc<ManualClock>,
    w: Arc<Workload>,
    gate_rx: watch::Receiver<Gate>,
    gate_tx: Arc<watch::Sender<Gate>>,
    acks: Arc<Mutex<Vec<Option<AckCounts>>>>,
}

impl Client {
    /// Sends every batch of this client; returns how many times it was
    /// refused for overload.
    async fn run(&self) -> anyhow::Result<u64> {
        let mut refused_total = 0u64;
        let source = format!("sim-client-{}", self.id);
        let lag = self.w.bounds.lag_batches;
        let mut gate = self.gate_rx.clone();
        for batch in self.w.batches.iter().filter(|b| b.client == self.id) {
            let open = *gate
                .wait_for(|g| g.is_none_or(|lowest| batch.id <= lowest + lag))
                .await
                .context("the gate closed")?;
            if open.is_none() {
                // Another client failed; its error is the one reported.
                return Ok(refused_total);
            }
            // Clients interleave on one thread, so this read-then-set cannot
            // race; the clock only moves forward.
            self.clock.set(self.clock.now_ms().max(batch.at_ms));
            let raws: Vec<RawReading> = batch.readings.iter().map(|s| s.raw.clone()).collect();
            let mut refusals = 0u32;
            let ack = loop {
                let call = self.tree.ingest(raws.clone(), &source);
                let result = tokio::time::timeout(WEDGED_AFTER, call)
                    .await
                    .with_context(|| {
                        format!("batch {} was never acknowledged (wedged)", batch.id)
                    })?;
                match result {
                    Ok(ack) => break ack,
                    Err(IngestError::Overloaded { retry_after, .. }) => {
                        refusals += 1;
                        refused_total += 1;
                        if refusals > OVERLOAD_RETRIES_MAX {
                            bail!("batch {} refused for overload {refusals} times", batch.id);
                        }
                        // Backoff on the runtime's timer, not the simulated
                        // clock: the schedule alone moves simulated time.
                        tokio::time::sleep(retry_after).await;
                    }
                    Err(IngestError::Log(e)) => {
                        bail!("the log refused batch {}: {e}", batch.id)
                    }
                    Err(IngestError::Stopped) => {
                        bail!("the node stopped while batch {} was sent", batch.id)
                    }
                    // This simulation runs one node on its own.
                    Err(e) => bail!("batch {}: {e}", batch.id),
                }
            };
            self.ack(batch.id, ack);
        }
        Ok(refused_total)
    }

    fn ack(&self, id: usize, ack: AckCounts) {
        let mut acks = match self.acks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        acks[id] = Some(ack);
        let lowest = acks.iter().position(Option::is_none).unwrap_or(acks.len());
        self.gate_tx.send_modify(|g| {
            if let Some(l) = g {
                *l = lowest;
            }
        });
    }
}
