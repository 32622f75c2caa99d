//! Shared production stores through a failover: four `vatio node`
//! processes (a1, a2 in az-a; b1, b2 in az-b) on loopback share one
//! InfluxDB database, one MongoDB database and the two S3 buckets of the
//! archive (real servers: InfluxDB 1.6, SecantusDB, moto), each node
//! writing its own share under its node id. One `vatio load` sends through
//! a1 and lists every reading it saw acknowledged; b1 is killed with
//! SIGKILL in the middle of a minute and restarted a few seconds later, so
//! minutes of b1's devices are split between b1 and the node that took
//! them over. Then every node is flushed and the servers are read with
//! their own APIs (InfluxQL over HTTP, the MongoDB driver, S3), not
//! through vatio:
//!
//! - every acknowledged reading is archived exactly once over all nodes'
//!   part files in the primary bucket, each file keeps a device's rows in
//!   seq order and has a manifest that describes it, and the replica
//!   bucket holds the same files byte for byte;
//! - per (device, minute), InfluxDB's `count` summed over the nodes'
//!   shares is the number of archived readings, and so is MongoDB's
//!   `metrics.power.count` over the minute documents' shares; each node's
//!   share counts exactly what that node archived, so no share overwrote
//!   another and nothing counted twice; and some minute has shares from
//!   two nodes (else the run did not exercise a split minute);
//! - cluster-wide queries through gRPC on a2 (power flow over the run,
//!   series of every meter, latest) equal what the raw points give with
//!   their shares merged, name no unanswered node, and b2 answers exactly
//!   the same: the shared store is read once, so no node's share is
//!   counted again per node asked.
//!
//! Needs the `vatio` binary (`scripts/test.sh` builds it) and the servers
//! (`tests/servers/install.sh`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use mongodb::bson::Document;
use tokio::time::Instant;
use vatio_proto::v1;
use vatio_stores::{MINUTE_MS, minute_of};
use vatio_tests::audit::{Archived, Findings, ListedLoad, LoadTotals, check_load};
use vatio_tests::process::{
    NodeFiles, NodeProcess, Process, connect, flush, status, vatio_bin, vatio_command,
    write_cluster_configs,
};
use vatio_tests::real_stores::{InfluxKey, RealStores};

const NODES: [(&str, &str); 4] = [
    ("a1", "az-a"),
    ("a2", "az-a"),
    ("b1", "az-b"),
    ("b2", "az-b"),
];
const LOAD_SEED: u64 = 20_261_203;
const DEVICES: u32 = 40;
const RATE_READINGS_PER_S: u32 = 1_000;
const BATCH_READINGS: u32 = 40;
const CONCURRENCY: u32 = 2;
const LOAD_DURATION: Duration = Duration::from_secs(16);

/// When, after the load starts, b1 is killed and started again.
const KILL_B1_AT: Duration = Duration::from_secs(4);
const RESTART_B1_AT: Duration = Duration::from_secs(8);
/// The load starts this far into a wall-clock minute (ms), so that the
/// kill, the take-over of b1's devices and b1's restart fall within one
/// minute: the readings have `ts = now`, so that minute is split.
const LOAD_START_IN_MINUTE_MS: std::ops::Range<i64> = 1_000..36_000;

/// Liveness bounds only; never asserted as performance.
const TEST_DEADLINE: Duration = Duration::from_secs(300);
const NODE_START_MAX: Duration = Duration::from_secs(60);
const CLUSTER_FORM_MAX: Duration = Duration::from_secs(60);
const LOAD_EXIT_AFTER_DURATION_MAX: Duration = Duration::from_secs(90);
const FLUSH_MAX: Duration = Duration::from_secs(90);
const QUERY_MAX: Duration = Duration::from_secs(30);
const NODE_STOP_MAX: Duration = Duration::from_secs(60);

/// Relative tolerance of floats computed in another order.
const REL_TOLERANCE: f64 = 1e-6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_stores_hold_each_share_once_through_a_failover() -> anyhow::Result<()> {
    eprintln!(
        "shared stores test: load seed {LOAD_SEED}, {DEVICES} devices at {RATE_READINGS_PER_S}/s \
         through a1 for {LOAD_DURATION:?}; kill -9 b1 at {KILL_B1_AT:?}, restart at \
         {RESTART_B1_AT:?}"
    );
    match tokio::time::timeout(TEST_DEADLINE, run()).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("shared stores test did not finish within {TEST_DEADLINE:?}"),
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
            "shared stores test: kept {} (each node's dir with logs, load logs, acks.txt)",
            kept.display()
        );
    }
    result
}

async fn run_in(bin: &Path, root: &Path) -> anyhow::Result<()> {
    eprintln!("shared stores test: working in {}", root.display());
    // Starting the shared servers (first use in this process) blocks.
    let real = tokio::task::spawn_blocking(RealStores::on_shared_servers).await??;
    eprintln!(
        "shared stores test: InfluxDB {} and MongoDB {} database {}, buckets {} and {} on {}",
        real.influx_url,
        real.mongo_uri,
        real.database,
        real.primary_bucket,
        real.replica_bucket,
        real.s3_url
    );
    let files = write_configs(root, &real)?;
    let mut cluster = Cluster::start(bin, root, &files).await?;
    cluster.wait_formed().await?;
    eprintln!("shared stores test: 4 nodes formed a cluster");

    let acks_path = root.join("acks.txt");
    let totals = load_with_failover(bin, root, &mut cluster, &acks_path).await?;
    cluster.wait_formed().await?;
    for (id, f) in &files {
        tokio::time::timeout(FLUSH_MAX, flush(&f.endpoint()))
            .await
            .with_context(|| format!("Admin.Flush of {id} did not return in time"))?
            .with_context(|| format!("Admin.Flush of {id}"))?;
    }
    let snapshot = Snapshot::read(&real).await?;
    let mut findings = Findings::default();
    let acked = check_load(&totals, &acks_path, &mut findings)?;
    let archived = check_archive(&snapshot, &acked, &mut findings)?;
    let split = check_counts(&snapshot, &archived.shares, &mut findings)?;
    let queried = check_queries(&files, &snapshot, &mut findings).await?;
    cluster.stop().await?;

    let nodes: BTreeMap<&str, u64> = archived.per_node();
    eprintln!(
        "shared stores test: sent {} acked {} archived {} (per node {nodes:?}); {} of {} batches \
         acked replicated; {} errors, {} back-offs; (device, minute)s split, by their nodes: \
         {split:?}, {} of them with a share reopened after the restart; queried {queried}",
        totals.sent,
        acked.len(),
        archived.audit.rows.len(),
        totals.batches_acked_replicated,
        totals.batches_acked,
        totals.errors,
        totals.backoffs,
        archived.reopened(),
    );
    anyhow::ensure!(
        !acked.is_empty(),
        "the load generator saw nothing acknowledged"
    );
    anyhow::ensure!(
        findings.is_empty(),
        "shared stores test found problems (load seed {LOAD_SEED}):\n{}",
        findings.report()
    );
    anyhow::ensure!(
        !split.is_empty(),
        "no (device, minute) has shares from two nodes: the test did not exercise a split minute"
    );
    Ok(())
}

/// Every node's configuration: the cluster, as in the failover test, and
/// the shared stores of `real`. Each is checked against
/// [`RealStores::apply`], so the TOML says what the harness means.
fn write_configs(
    root: &Path,
    real: &RealStores,
) -> anyhow::Result<BTreeMap<&'static str, NodeFiles>> {
    let files = write_cluster_configs(root, &NODES, &shared_stores_toml(real))?;
    for (id, f) in &files {
        let cfg = f.load()?;
        let mut want = cfg.clone();
        real.apply(&mut want);
        anyhow::ensure!(
            cfg == want,
            "{id}'s configuration does not name the shared stores as RealStores::apply does"
        );
    }
    Ok(files)
}

/// The `[archiver]` roots and `[stores]` sections of [`RealStores::apply`].
fn shared_stores_toml(real: &RealStores) -> String {
    let s3 = real.s3_config();
    format!(
        "[archiver]\nprimary_root = \"s3://{}/archive\"\nreplica_root = \"s3://{}/archive\"\n\n\
         [stores]\ntimeseries = \"influxdb\"\ndocuments = \"mongodb\"\n\n\
         [stores.influxdb]\nurl = \"{}\"\ndatabase = \"{}\"\n\n\
         [stores.mongodb]\nuri = \"{}\"\ndatabase = \"{}\"\n\n\
         [stores.s3]\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\n\
         secret_access_key = \"{}\"\nallow_http = {}\n",
        real.primary_bucket,
        real.replica_bucket,
        real.influx_url,
        real.database,
        real.mongo_uri,
        real.database,
        s3.endpoint,
        s3.region,
        s3.access_key_id,
        s3.secret_access_key,
        s3.allow_http
    )
}

struct Cluster {
    nodes: BTreeMap<&'static str, NodeProcess>,
}

impl Cluster {
    async fn start(
        bin: &Path,
        root: &Path,
        files: &BTreeMap<&'static str, NodeFiles>,
    ) -> anyhow::Result<Self> {
        let mut nodes = BTreeMap::new();
        for (id, f) in files {
            let dir = root.join(id);
            nodes.insert(*id, NodeProcess::start(bin, f, &dir, NODE_START_MAX).await?);
        }
        Ok(Self { nodes })
    }

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
                let seen = match status(&node.files().endpoint()).await {
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

    /// Stops every node with SIGTERM; each must exit cleanly.
    async fn stop(&mut self) -> anyhow::Result<()> {
        for (id, node) in &mut self.nodes {
            let stopped = node.process().terminate(NODE_STOP_MAX).await?;
            anyhow::ensure!(
                stopped.success(),
                "{id} did not stop cleanly on SIGTERM ({stopped})\n{}",
                node.process().logs()
            );
        }
        Ok(())
    }
}

fn now_ms() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?)
}

/// How far the wall clock is into its minute, for the log.
fn seconds_into_minute() -> anyhow::Result<f64> {
    Ok(now_ms()?.rem_euclid(MINUTE_MS) as f64 / 1000.0)
}

/// Waits for the next moment in [`LOAD_START_IN_MINUTE_MS`] of a
/// wall-clock minute: a schedule (at most 25 s away), not a wait for a
/// condition.
async fn wait_for_load_start() -> anyhow::Result<()> {
    let into = now_ms()?.rem_euclid(MINUTE_MS);
    let start = LOAD_START_IN_MINUTE_MS.start;
    let wait_ms = if LOAD_START_IN_MINUTE_MS.contains(&into) {
        0
    } else if into < start {
        start - into
    } else {
        MINUTE_MS - into + start
    };
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms)?)).await;
    Ok(())
}

/// Runs the load through a1, kills b1 and starts it again during it, and
/// returns the load's report once it exited.
async fn load_with_failover(
    bin: &Path,
    root: &Path,
    cluster: &mut Cluster,
    acks_path: &Path,
) -> anyhow::Result<LoadTotals> {
    let entry = cluster.node("a1")?.files().endpoint();
    let load_args = ListedLoad {
        addr: entry,
        devices: DEVICES,
        rate: RATE_READINGS_PER_S,
        batch: BATCH_READINGS,
        concurrency: CONCURRENCY,
        duration: LOAD_DURATION,
        seed: LOAD_SEED,
        acks_out: acks_path.to_path_buf(),
    }
    .args();
    let load_args: Vec<&str> = load_args.iter().map(String::as_str).collect();
    wait_for_load_start().await?;
    let started = Instant::now();
    let mut load = Process::spawn("load", vatio_command(bin, &load_args), root)?;
    eprintln!(
        "shared stores test: load started {:.2}s into a minute",
        seconds_into_minute()?
    );
    tokio::time::sleep_until(started + KILL_B1_AT).await;
    cluster.node("b1")?.kill()?;
    let killed = Instant::now();
    eprintln!(
        "shared stores test: killed b1 at {:.2}s ({:.2}s into the minute)",
        killed.duration_since(started).as_secs_f64(),
        seconds_into_minute()?
    );
    tokio::time::sleep_until(started + RESTART_B1_AT).await;
    cluster.node("b1")?.restart(NODE_START_MAX).await?;
    eprintln!(
        "shared stores test: b1 serving again at {:.2}s",
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
    eprintln!("shared stores test: load report {report_json}");
    LoadTotals::parse(&report_json)
}

/// A point's fields by name, as InfluxDB answers them.
type Fields = BTreeMap<String, f64>;

/// Each node's power point, by (device, minute) and node.
type PowerPoints<'a> = BTreeMap<(String, i64), BTreeMap<String, &'a Fields>>;

/// What the servers hold after the flush, read with their own APIs.
struct Snapshot {
    influx: BTreeMap<InfluxKey, Fields>,
    minute_docs: BTreeMap<String, Document>,
    primary: BTreeMap<String, Vec<u8>>,
    replica: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    async fn read(real: &RealStores) -> anyhow::Result<Self> {
        let r = real.clone();
        let influx = tokio::task::spawn_blocking(move || r.influx_rows()).await??;
        Ok(Self {
            influx,
            minute_docs: real.mongo_documents("minute_docs").await?,
            primary: real.bucket_objects(&real.primary_bucket).await?,
            replica: real.bucket_objects(&real.replica_bucket).await?,
        })
    }

    /// The power points in InfluxDB, by (device, minute) and node.
    fn influx_power(&self) -> PowerPoints<'_> {
        let mut out: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
        for (key, fields) in &self.influx {
            if key.metric == "power" {
                out.entry((key.device.clone(), key.minute_ms))
                    .or_default()
                    .insert(key.node.clone(), fields);
            }
        }
        out
    }
}

/// Per (device, minute), how many readings each node's share holds.
type Shares = BTreeMap<(String, i64), BTreeMap<String, u64>>;

/// What the primary bucket's part files hold.
struct ArchivedShares {
    audit: Archived,
    shares: Shares,
    /// Per (device, minute) and node, the first and last reading's time.
    spans: BTreeMap<(String, i64), BTreeMap<String, (i64, i64)>>,
}

impl ArchivedShares {
    fn per_node(&self) -> BTreeMap<&str, u64> {
        let mut out = BTreeMap::new();
        for nodes in self.shares.values() {
            for (node, n) in nodes {
                *out.entry(node.as_str()).or_default() += n;
            }
        }
        out
    }

    /// How many (device, minute)s have one node's share on both sides of
    /// another's: the node took its devices back within the minute and
    /// added to the share it wrote before it was killed.
    fn reopened(&self) -> usize {
        let around = |(a0, a1): (i64, i64), (b0, b1): (i64, i64)| a0 < b0 && b1 < a1;
        self.spans
            .values()
            .filter(|nodes| {
                nodes
                    .values()
                    .any(|a| nodes.values().any(|b| around(*a, *b)))
            })
            .count()
    }
}

/// The writer of a part file (`…/part-{node}.parquet`), None for other objects.
fn part_writer(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    name.strip_prefix("part-")?.strip_suffix(".parquet")
}

/// Decodes every part file of the primary bucket: acknowledged readings
/// archived exactly once, in seq order per file, each file as its
/// manifest says; the replica bucket the same byte for byte.
fn check_archive(
    snap: &Snapshot,
    acked: &HashSet<(String, u64)>,
    findings: &mut Findings,
) -> anyhow::Result<ArchivedShares> {
    check_replica(snap, findings);
    let mut audit = Archived::default();
    let mut shares = Shares::new();
    let mut spans: BTreeMap<_, BTreeMap<String, (i64, i64)>> = BTreeMap::new();
    for (path, bytes) in &snap.primary {
        let Some(node) = part_writer(path) else {
            continue;
        };
        let rows = vatio_stores::archive::decode(bytes.clone().into())
            .with_context(|| format!("decoding {path}"))?;
        check_manifest(snap, path, node, bytes, rows.len(), findings)?;
        audit.add_file(node, path, &rows, findings);
        for row in &rows {
            let key = (row.device.to_string(), minute_of(row.ts_ms));
            let span = spans
                .entry(key.clone())
                .or_default()
                .entry(node.to_owned())
                .or_insert((row.ts_ms, row.ts_ms));
            *span = (span.0.min(row.ts_ms), span.1.max(row.ts_ms));
            *shares
                .entry(key)
                .or_default()
                .entry(node.to_owned())
                .or_default() += 1;
        }
    }
    audit.check_exactly_once(acked, findings);
    Ok(ArchivedShares {
        audit,
        shares,
        spans,
    })
}

/// The replica bucket holds the primary's objects, byte for byte.
fn check_replica(snap: &Snapshot, findings: &mut Findings) {
    let paths: BTreeSet<&String> = snap.primary.keys().chain(snap.replica.keys()).collect();
    for path in paths {
        if snap.primary.get(path) != snap.replica.get(path) {
            findings.add(
                "objects differing between the primary and replica bucket",
                || {
                    let side = |o: Option<&Vec<u8>>| {
                        o.map_or("missing".to_owned(), |b| b.len().to_string())
                    };
                    format!(
                        "{path}: primary {} bytes, replica {}",
                        side(snap.primary.get(path)),
                        side(snap.replica.get(path))
                    )
                },
            );
        }
    }
}

/// The part file's manifest beside it names its path, rows, size, hash and writer.
fn check_manifest(
    snap: &Snapshot,
    path: &str,
    node: &str,
    bytes: &[u8],
    rows: usize,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let manifest_path = format!("{dir}/manifest-{node}.json");
    let Some(text) = snap.primary.get(&manifest_path) else {
        findings.add("part files without a manifest", || path.to_owned());
        return Ok(());
    };
    let m: vatio_stores::archive::Manifest =
        serde_json::from_slice(text).with_context(|| format!("reading {manifest_path}"))?;
    let sha256 = vatio_stores::archive::sha256_hex(bytes);
    if !path.ends_with(&m.path)
        || m.rows != rows as u64
        || m.bytes != bytes.len() as u64
        || m.sha256 != sha256
        || m.source != node
    {
        findings.add("manifests not describing their part file", || {
            format!(
                "{path}: {rows} rows, {} bytes, sha256 {sha256}; manifest {m:?}",
                bytes.len()
            )
        });
    }
    Ok(())
}

/// InfluxDB's and MongoDB's shares against the archive's; returns, by the
/// nodes sharing it ("a2+b1"), how many (device, minute)s InfluxDB holds
/// shares of two or more nodes for.
fn check_counts(
    snap: &Snapshot,
    archived: &Shares,
    findings: &mut Findings,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut influx = Shares::new();
    for (key, nodes) in snap.influx_power() {
        let counts = influx.entry(key).or_default();
        for (node, fields) in nodes {
            counts.insert(node, Merged::of(fields)?.count);
        }
    }
    compare_shares(
        archived,
        &influx,
        (
            "InfluxDB minutes miscounted (summed over the nodes' shares)",
            "InfluxDB shares differing from what their node archived",
        ),
        findings,
    );
    let docs = mongo_shares(&snap.minute_docs, findings)?;
    compare_shares(
        archived,
        &docs,
        (
            "MongoDB minute documents miscounted (summed over the nodes' shares)",
            "MongoDB shares differing from what their node archived",
        ),
        findings,
    );
    let mut split = BTreeMap::new();
    for nodes in influx.values().filter(|nodes| nodes.len() > 1) {
        let names: Vec<&str> = nodes.keys().map(String::as_str).collect();
        *split.entry(names.join("+")).or_default() += 1;
    }
    Ok(split)
}

/// The minute documents' power counts by (device, minute) and node; an
/// `_id` other than `device/minute_ms/node` is a finding.
fn mongo_shares(
    docs: &BTreeMap<String, Document>,
    findings: &mut Findings,
) -> anyhow::Result<Shares> {
    let mut shares = Shares::new();
    for (id, doc) in docs {
        let device = doc
            .get_str("device")
            .with_context(|| format!("{id}: device"))?;
        let minute_ms = doc
            .get_i64("minute_ms")
            .with_context(|| format!("{id}: minute_ms"))?;
        let node = doc.get_str("node").with_context(|| format!("{id}: node"))?;
        if *id != format!("{device}/{minute_ms}/{node}") {
            findings.add(
                "minute documents with an _id other than device/minute_ms/node",
                || format!("{id}: device {device}, minute_ms {minute_ms}, node {node}"),
            );
        }
        let count = doc
            .get_document("metrics")
            .and_then(|m| m.get_document("power"))
            .and_then(|p| p.get_i64("count"))
            .with_context(|| format!("{id}: metrics.power.count"))?;
        let counts = shares.entry((device.to_owned(), minute_ms)).or_default();
        if counts
            .insert(node.to_owned(), u64::try_from(count)?)
            .is_some()
        {
            findings.add("minute documents with two shares of one node", || {
                id.clone()
            });
        }
    }
    Ok(shares)
}

/// Per (device, minute) of either: the stored shares sum to the archived
/// readings (`kinds.0`), and each node's share is what it archived (`kinds.1`).
fn compare_shares(
    archived: &Shares,
    stored: &Shares,
    kinds: (&'static str, &'static str),
    findings: &mut Findings,
) {
    let empty = BTreeMap::new();
    let keys: BTreeSet<&(String, i64)> = archived.keys().chain(stored.keys()).collect();
    for key in keys {
        let want = archived.get(key).unwrap_or(&empty);
        let got = stored.get(key).unwrap_or(&empty);
        let (device, minute_ms) = key;
        let (want_sum, got_sum) = (want.values().sum::<u64>(), got.values().sum::<u64>());
        if want_sum != got_sum {
            findings.add(kinds.0, || {
                format!("{device} minute {minute_ms}: {want_sum} archived {want:?}, stored {got_sum} {got:?}")
            });
        } else if want != got {
            findings.add(kinds.1, || {
                format!("{device} minute {minute_ms}: archived {want:?}, stored {got:?}")
            });
        }
    }
}

/// One (device, minute) of the raw power points, its nodes' shares merged.
#[derive(Clone, Copy, Debug)]
struct Merged {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    last_ts_ms: i64,
}

impl Merged {
    fn of(fields: &Fields) -> anyhow::Result<Self> {
        let f = |name: &str| {
            fields
                .get(name)
                .copied()
                .with_context(|| format!("a point without {name}: {fields:?}"))
        };
        Ok(Self {
            count: f("count")? as u64,
            sum: f("sum")?,
            min: f("min")?,
            max: f("max")?,
            last: f("last")?,
            last_ts_ms: f("last_ts_ms")? as i64,
        })
    }

    fn merge(self, other: Self) -> Self {
        let newer = if other.last_ts_ms > self.last_ts_ms {
            other
        } else {
            self
        };
        Self {
            count: self.count + other.count,
            sum: self.sum + other.sum,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            ..newer
        }
    }

    fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// The raw power points with their shares merged, by (device, minute).
fn merged_points(snap: &Snapshot) -> anyhow::Result<BTreeMap<(String, i64), Merged>> {
    let mut out = BTreeMap::new();
    for (key, nodes) in snap.influx_power() {
        let mut merged: Option<Merged> = None;
        for fields in nodes.values() {
            let share = Merged::of(fields)?;
            merged = Some(merged.map_or(share, |m| m.merge(share)));
        }
        if let Some(m) = merged.filter(|m| m.count > 0) {
            out.insert(key, m);
        }
    }
    Ok(out)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= REL_TOLERANCE * a.abs().max(b.abs())
}

/// One node's cluster-wide answers.
#[derive(Debug, PartialEq)]
struct Answers {
    flow: v1::PowerFlowResponse,
    series: BTreeMap<String, v1::SeriesResponse>,
    latest: v1::LatestResponse,
}

const CLUSTER: i32 = v1::QueryScope::Cluster as i32;

/// Power flow over `[from, to)`, each device's power series over it by
/// minute, and the latest values, all cluster-wide, from `endpoint`.
async fn ask(
    endpoint: &str,
    devices: &BTreeSet<&str>,
    from: i64,
    to: i64,
) -> anyhow::Result<Answers> {
    let mut query = v1::query_client::QueryClient::new(connect(endpoint).await?);
    let flow = query
        .power_flow(v1::PowerFlowRequest {
            from_unix_ms: from,
            to_unix_ms: to,
            scope: CLUSTER,
        })
        .await?
        .into_inner();
    let mut series = BTreeMap::new();
    for device in devices {
        let answer = query
            .series(v1::SeriesRequest {
                device_id: (*device).to_owned(),
                metric: "power".into(),
                from_unix_ms: from,
                to_unix_ms: to,
                window_minutes: 1,
                scope: CLUSTER,
            })
            .await?
            .into_inner();
        series.insert((*device).to_owned(), answer);
    }
    let latest = query
        .latest(v1::LatestRequest {
            scope: CLUSTER,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Answers {
        flow,
        series,
        latest,
    })
}

/// Cluster-wide queries on a2 and b2 against the raw points; returns a summary.
async fn check_queries(
    files: &BTreeMap<&'static str, NodeFiles>,
    snap: &Snapshot,
    findings: &mut Findings,
) -> anyhow::Result<String> {
    let merged = merged_points(snap)?;
    let minutes: BTreeSet<i64> = merged.keys().map(|(_, m)| *m).collect();
    let (Some(first), Some(last)) = (minutes.first(), minutes.last()) else {
        anyhow::bail!("InfluxDB holds no power points");
    };
    let (from, to) = (*first, *last + MINUTE_MS);
    let devices: BTreeSet<&str> = merged.keys().map(|(d, _)| d.as_str()).collect();
    let mut answers = BTreeMap::new();
    for id in ["a2", "b2"] {
        let endpoint = files
            .get(id)
            .with_context(|| format!("no node {id}"))?
            .endpoint();
        let answer = tokio::time::timeout(QUERY_MAX, ask(&endpoint, &devices, from, to))
            .await
            .with_context(|| format!("{id}'s queries did not answer in time"))?
            .with_context(|| format!("querying {id}"))?;
        answers.insert(id, answer);
    }
    let (a2, b2) = (&answers["a2"], &answers["b2"]);
    check_unanswered(a2, findings);
    check_flow(&a2.flow, &merged, findings);
    check_series(&a2.series, &merged, findings);
    check_latest(&a2.latest, &merged, findings);
    if a2 != b2 {
        findings.add(
            "nodes answering the same cluster-wide query differently",
            || {
                format!(
                    "power flow the same: {}, series: {}, latest: {}",
                    a2.flow == b2.flow,
                    a2.series == b2.series,
                    a2.latest == b2.latest
                )
            },
        );
    }
    Ok(format!(
        "{} minutes from {from} of {} meters on a2 and b2",
        minutes.len(),
        devices.len()
    ))
}

fn check_unanswered(answers: &Answers, findings: &mut Findings) {
    let lists = [
        ("power flow", &answers.flow.unanswered_nodes),
        ("latest", &answers.latest.unanswered_nodes),
    ]
    .into_iter()
    .chain(
        answers
            .series
            .values()
            .map(|s| ("series", &s.unanswered_nodes)),
    );
    for (query, unanswered) in lists {
        if !unanswered.is_empty() {
            findings.add("cluster-wide answers listing unanswered nodes", || {
                format!("{query}: {unanswered:?}")
            });
        }
    }
}

/// Per minute, the sum over meters of each meter's mean, and how many meters.
fn check_flow(
    flow: &v1::PowerFlowResponse,
    merged: &BTreeMap<(String, i64), Merged>,
    findings: &mut Findings,
) {
    let mut want: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
    for ((_, minute_ms), m) in merged {
        let minute = want.entry(*minute_ms).or_default();
        minute.0 += m.mean();
        minute.1 += 1;
    }
    let got: BTreeMap<i64, (f64, u32)> = flow
        .minutes
        .iter()
        .map(|m| (m.minute_unix_ms, (m.total_kw, m.meters)))
        .collect();
    let minutes: BTreeSet<&i64> = want.keys().chain(got.keys()).collect();
    for minute in minutes {
        let (w, g) = (want.get(minute), got.get(minute));
        let same = match (w, g) {
            (Some(w), Some(g)) => w.1 == g.1 && close(w.0, g.0),
            _ => false,
        };
        if !same {
            findings.add("power flow minutes differing from the raw points", || {
                format!("minute {minute}: raw (kW, meters) {w:?}, queried {g:?}")
            });
        }
    }
}

/// Each device's one-minute windows: count, min, max, mean and last.
fn check_series(
    series: &BTreeMap<String, v1::SeriesResponse>,
    merged: &BTreeMap<(String, i64), Merged>,
    findings: &mut Findings,
) {
    for (device, answer) in series {
        let want: Vec<(i64, Merged)> = merged
            .iter()
            .filter(|((d, _), _)| d == device)
            .map(|((_, minute), m)| (*minute, *m))
            .collect();
        let same = want.len() == answer.points.len()
            && want.iter().zip(&answer.points).all(|((minute, m), p)| {
                p.window_start_unix_ms == *minute
                    && p.count == m.count
                    && close(p.min, m.min)
                    && close(p.max, m.max)
                    && close(p.mean, m.mean())
                    && close(p.last, m.last)
            });
        if !same {
            findings.add("series differing from the raw points", || {
                format!("{device}: raw {want:?}, queried {:?}", answer.points)
            });
        }
    }
}

/// One value per meter: the last reading of its newest share.
fn check_latest(
    latest: &v1::LatestResponse,
    merged: &BTreeMap<(String, i64), Merged>,
    findings: &mut Findings,
) {
    let mut want: BTreeMap<&str, (f64, i64)> = BTreeMap::new();
    for ((device, _), m) in merged {
        let newest = want
            .entry(device.as_str())
            .or_insert((m.last, m.last_ts_ms));
        if m.last_ts_ms > newest.1 {
            *newest = (m.last, m.last_ts_ms);
        }
    }
    let got: BTreeMap<&str, (f64, i64)> = latest
        .values
        .iter()
        .filter(|v| v.metric == "power")
        .map(|v| (v.device_id.as_str(), (v.value, v.ts_unix_ms)))
        .collect();
    if got != want || latest.values.len() != want.len() {
        findings.add("latest values differing from the raw points", || {
            format!("raw {want:?}, queried {:?}", latest.values)
        });
    }
}
