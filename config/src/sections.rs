//! The configuration sections: one struct per component, each with its
//! defaults. The field doc comments are the reference documentation for
//! every setting; `vatio.example.toml` mirrors them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Identity and addresses of this node.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name of this node in the cluster: 1 to 64 characters from `[A-Za-z0-9_-]`.
    pub id: String,
    /// Availability zone this node runs in (same character set as `id`); replicas go to another AZ.
    pub az: String,
    /// Directory for all local state (log, databases, archive); relative paths in other settings resolve against it.
    pub data_dir: PathBuf,
    /// Address the gRPC server (ingest, query, admin, peer) listens on.
    pub listen: SocketAddr,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: "node-1".to_owned(),
            az: "az-a".to_owned(),
            data_dir: PathBuf::from("vatio-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
        }
    }
}

/// Limits on the ingest path (client-streaming `Ingest` calls).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Most readings accepted in one batch (1 to 100000); larger batches are refused.
    pub max_batch_readings: u32,
    /// Most readings accepted but not yet logged on this node; above it clients are told to retry (at least `max_batch_readings`).
    pub max_inflight_readings: u64,
    /// Delay suggested to clients refused for backpressure (> 0).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Longest device id accepted, in bytes (1 to 1024).
    pub max_device_id_bytes: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch_readings: 10_000,
            max_inflight_readings: 500_000,
            retry_after: Duration::from_millis(200),
            max_device_id_bytes: 128,
        }
    }
}

/// Behaviour of the per-device actors.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// A device actor with no readings for this long is passivated (> 0).
    #[serde(with = "humantime_serde")]
    pub idle_passivate_after: Duration,
    /// Readings held per device to put out-of-order arrivals back in order (1 to 65536).
    pub reorder_window: u32,
    /// Longest a reading is held in the reorder window before it is released anyway (> 0).
    #[serde(with = "humantime_serde")]
    pub reorder_max_hold: Duration,
    /// Readings stamped further than this ahead of the node's clock go to dead letters.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Readings older than this go to dead letters (> 0).
    #[serde(with = "humantime_serde")]
    pub max_past_age: Duration,
    /// Most batches queued in one device actor's mailbox (> 0); beyond it the sender waits.
    pub mailbox_batches: u32,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            idle_passivate_after: Duration::from_secs(5 * 60),
            reorder_window: 64,
            reorder_max_hold: Duration::from_secs(2),
            max_future_skew: Duration::from_secs(5 * 60),
            max_past_age: Duration::from_secs(168 * 3600),
            mailbox_batches: 64,
        }
    }
}

/// How supervisors restart failed actors.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Most restarts of one actor within `restart_window` before the supervisor gives up and escalates (> 0).
    pub max_restarts: u32,
    /// Window over which restarts are counted (> 0).
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// Delay before the first restart; doubles on each further restart (> 0).
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest delay between restarts (at least `backoff_initial`).
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Times a message may crash an actor before it is sent to dead letters as poison (>= 1).
    pub poison_attempts: u32,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            poison_attempts: 3,
        }
    }
}

/// The aggregator: windowed aggregates into the time-series store.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Points buffered before a write to the time-series store (> 0).
    pub flush_max_points: u32,
    /// Longest a point waits in the buffer before a write (> 0).
    #[serde(with = "humantime_serde")]
    pub flush_max_delay: Duration,
    /// How long a window stays open after it ends, for late readings.
    #[serde(with = "humantime_serde")]
    pub window_lateness: Duration,
    /// Most readings queued in the aggregator's mailbox (> 0).
    pub mailbox_readings: u32,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            flush_max_points: 5_000,
            flush_max_delay: Duration::from_secs(5),
            window_lateness: Duration::from_secs(2 * 60),
            mailbox_readings: 100_000,
        }
    }
}

/// Stream-ETL: event detection into the document store.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamEtlConfig {
    /// Documents buffered before a write to the document store (> 0).
    pub flush_max_docs: u32,
    /// Longest a document waits in the buffer before a write (> 0).
    #[serde(with = "humantime_serde")]
    pub flush_max_delay: Duration,
    /// Documents older than this are deleted from the document store (> 0).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often expired documents are swept (> 0).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Most readings queued in the stream-ETL mailbox (> 0).
    pub mailbox_readings: u32,
    /// Thresholds that turn readings into events.
    pub thresholds: Thresholds,
}

impl Default for StreamEtlConfig {
    fn default() -> Self {
        Self {
            flush_max_docs: 2_000,
            flush_max_delay: Duration::from_secs(5),
            retention: Duration::from_secs(168 * 3600),
            sweep_interval: Duration::from_secs(10 * 60),
            mailbox_readings: 100_000,
            thresholds: Thresholds::default(),
        }
    }
}

/// Event thresholds used by stream-ETL. Every value must be a finite number.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Ambient temperature above which an over-temperature event is raised, in °C.
    pub over_temperature_c: f64,
    /// Motor temperature above which a motor over-temperature event is raised, in °C.
    pub motor_over_temperature_c: f64,
    /// Relative humidity above which a high-humidity event is raised, in %.
    pub high_humidity_pct: f64,
    /// Vibration velocity above which a vibration fault is raised, in mm/s.
    pub vibration_fault_mm_s: f64,
    /// Torque above which a torque fault is raised, in N·m (> 0).
    pub torque_fault_nm: f64,
    /// A power reading this many times the device's recent average is a spike (> 1).
    pub power_spike_factor: f64,
    /// Power readings below this are never spikes, in kW (>= 0).
    pub power_spike_min_kw: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            over_temperature_c: 40.0,
            motor_over_temperature_c: 90.0,
            high_humidity_pct: 85.0,
            vibration_fault_mm_s: 12.0,
            torque_fault_nm: 400.0,
            power_spike_factor: 1.8,
            power_spike_min_kw: 5.0,
        }
    }
}

/// The archiver: hourly Parquet files in two AZs.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiverConfig {
    /// Root of the archive in this node's AZ: a directory (relative to
    /// `node.data_dir`) or `s3://bucket/prefix` (through `[stores.s3]`).
    pub primary_root: ArchiveRoot,
    /// Root of the archive copy for the other AZ, like `primary_root`
    /// (an `s3://` one through `[stores.s3_replica]`); must differ from `primary_root`.
    pub replica_root: ArchiveRoot,
    /// An hour is sealed (written as Parquet) this long after it ends, to let late readings in.
    #[serde(with = "humantime_serde")]
    pub seal_after: Duration,
    /// How often the archiver looks for hours to seal (> 0).
    #[serde(with = "humantime_serde")]
    pub seal_interval: Duration,
    /// Staged readings are kept this long after their hour is sealed (at least 2h).
    #[serde(with = "humantime_serde")]
    pub staging_retention: Duration,
    /// Most readings queued in the archiver's mailbox (> 0).
    pub mailbox_readings: u32,
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        Self {
            primary_root: ArchiveRoot::Local(PathBuf::from("archive/primary")),
            replica_root: ArchiveRoot::Local(PathBuf::from("archive/replica")),
            seal_after: Duration::from_secs(5 * 60),
            seal_interval: Duration::from_secs(30),
            staging_retention: Duration::from_secs(48 * 3600),
            mailbox_readings: 100_000,
        }
    }
}

/// Where one side of the archive lives: written in the file as a path or
/// as `s3://bucket/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveRoot {
    /// A local directory (relative to `node.data_dir`).
    Local(PathBuf),
    /// A bucket and a key prefix (no leading or trailing `/`; may be empty).
    S3 { bucket: String, prefix: String },
}

impl ArchiveRoot {
    /// Parses `s3://bucket/prefix` or a path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix("s3://") else {
            if text.contains("://") {
                return Err(format!(
                    "expected a path or \"s3://bucket/prefix\", got {text:?}"
                ));
            }
            return Ok(Self::Local(PathBuf::from(text)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !is_bucket_name(bucket) {
            return Err(format!(
                "the bucket of {text:?} must be 3 to 63 characters from [a-z0-9.-], \
                 starting and ending with a letter or digit"
            ));
        }
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// The local directory, if this root is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Self::Local(path) => Some(path),
            Self::S3 { .. } => None,
        }
    }
}

impl fmt::Display for ArchiveRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// S3's bucket naming rule (the part that matters for a URL and a path).
fn is_bucket_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(name.chars().next())
        && edge(name.chars().last())
}

impl Serialize for ArchiveRoot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ArchiveRoot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Membership of a node cluster: gossip over UDP between the nodes.
/// Empty `gossip_listen` runs the node on its own.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// UDP address gossip binds, e.g. "0.0.0.0:7401"; empty: no cluster.
    pub gossip_listen: String,
    /// UDP address peers send gossip to, when it differs from gossip_listen
    /// (needed when that is a wildcard address); empty: gossip_listen.
    pub gossip_advertise: String,
    /// Gossip addresses of nodes to contact first ("host:port"); one reachable one is enough.
    pub seeds: Vec<String>,
    /// Name of the cluster; nodes only gossip with nodes of the same name.
    pub cluster_id: String,
    /// How often a node gossips with a few peers (> 0). Failure detection
    /// scales with it: each node probes a member every 2 intervals, and a
    /// silent member is declared down 4 intervals after it is suspected.
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// When `Ingest` acknowledges: once the reading is in the owner's log
    /// and a replica's log in the other AZ (`replicated`), or in the
    /// owner's log only (`local`).
    pub ack: AckMode,
    /// What the owner does under `ack = "replicated"` when the other AZ has
    /// no live member: `refuse` (UNAVAILABLE) or `degrade` (local acks,
    /// replicated later).
    pub no_other_az: NoOtherAz,
    /// How long a node waits for a peer (forwarding, replication, hand-over) before giving up (> 0).
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
}

/// When a reading is acknowledged in a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// In the owner's log and in a replica's log in the other AZ.
    #[default]
    Replicated,
    /// In the owner's log.
    Local,
}

/// What a replicated ack does when the other AZ has no live member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoOtherAz {
    /// Answer UNAVAILABLE: nothing is taken that a second AZ does not hold.
    #[default]
    Refuse,
    /// Acknowledge with the local guarantee and replicate once the other AZ is back.
    Degrade,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            gossip_listen: String::new(),
            gossip_advertise: String::new(),
            seeds: Vec::new(),
            cluster_id: "vatio".to_owned(),
            gossip_interval: Duration::from_millis(200),
            ack: AckMode::Replicated,
            no_other_az: NoOtherAz::Refuse,
            peer_timeout: Duration::from_secs(5),
        }
    }
}

impl ClusterConfig {
    /// Whether this node joins a cluster.
    pub fn enabled(&self) -> bool {
        !self.gossip_listen.trim().is_empty()
    }
}

/// Mutual TLS on the node's gRPC server and on its calls to peers. With the
/// three files unset the node talks plain HTTP/2 (development only); with
/// them set, peers must present a node certificate from the CA, and clients
/// of Ingest, Query and Admin one too when `client_auth = "required"`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s), PEM, that peers' and clients' certificates must be issued by (relative to `node.data_dir`); empty: TLS off.
    pub ca_file: PathBuf,
    /// This node's certificate, PEM, naming `node.id` and `node.az` (e.g. from `vatio certs dev`; relative to `node.data_dir`).
    pub cert_file: PathBuf,
    /// This node's private key, PEM (relative to `node.data_dir`).
    pub key_file: PathBuf,
    /// AZs whose nodes may call this node as peers; empty: any AZ.
    pub allowed_azs: Vec<String>,
    /// Node ids that may call this node as peers; empty: any node the CA issued a certificate to.
    pub allowed_peers: Vec<String>,
    /// Whether clients of Ingest, Query and Admin must present a certificate from the CA: `optional` or `required`.
    pub client_auth: ClientAuth,
}

impl TlsConfig {
    /// Whether TLS is configured (all three files set; validation rejects some without the others).
    pub fn enabled(&self) -> bool {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .iter()
            .all(|p| !p.as_os_str().is_empty())
    }
}

/// Whether a client of Ingest, Query and Admin must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A certificate, if presented, must be from the CA; clients without one are served.
    #[default]
    Optional,
    /// Every call to Ingest, Query and Admin needs a certificate from the CA.
    Required,
}

/// When the write-ahead log waits for the disk (`fsync`).
///
/// Written as `"always"`, `"never"` or `"interval(5ms)"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFsync {
    /// Every group commit is fsynced before its batches are acknowledged:
    /// an acknowledged reading survives a power loss.
    #[default]
    Always,
    /// Batches are acknowledged once written; the log is fsynced at this
    /// interval. Survives a process crash; a power loss may lose the last
    /// interval. In a cluster, steps are shipped to replicas (and so reach
    /// the sinks and replicated acks) only once fsynced: a replicated ack
    /// survives a power loss under this mode too.
    Interval(Duration),
    /// Batches are acknowledged once written; the OS decides when to write
    /// back. Survives a process crash only, replicated acks included.
    Never,
}

impl LogFsync {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => {
                let inner = s
                    .strip_prefix("interval(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .ok_or_else(|| {
                        format!(
                            "expected \"always\", \"never\" or \"interval(DURATION)\", got {s:?}"
                        )
                    })?;
                let d = humantime::parse_duration(inner.trim())
                    .map_err(|e| format!("bad interval {inner:?} in {s:?}: {e}"))?;
                Ok(Self::Interval(d))
            }
        }
    }
}

impl std::fmt::Display for LogFsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
            Self::Interval(d) => write!(f, "interval({})", humantime::format_duration(*d)),
        }
    }
}

impl Serialize for LogFsync {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogFsync {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The node's write-ahead log: an ingest batch is acknowledged once its
/// readings are in it, and every subscriber reads it from its own position.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Directory of the log's segment files and subscriber positions (relative to `node.data_dir`).
    pub dir: PathBuf,
    /// When acknowledged batches are fsynced: `always`, `interval(5ms)` or `never`.
    pub fsync: LogFsync,
    /// A segment file is closed and a new one started past this size (1 MiB to 4 GiB).
    pub segment_bytes_max: u64,
    /// Most bytes written by one group commit (64 KiB to 256 MiB).
    pub group_bytes_max: u64,
    /// Recent records kept in memory so subscribers that keep up never read the disk (> 0).
    pub tail_cache_bytes_max: u64,
    /// Log not yet consumed by every subscriber (the slowest sink's lag);
    /// above it `Ingest` answers RESOURCE_EXHAUSTED instead of growing the log (>= 1 MiB).
    pub unconsumed_bytes_max: u64,
    /// How often the devices' sequencing state is checkpointed, so a restart
    /// replays only the log after it (> 0).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("log"),
            fsync: LogFsync::Always,
            segment_bytes_max: 64 << 20,
            group_bytes_max: 8 << 20,
            tail_cache_bytes_max: 64 << 20,
            unconsumed_bytes_max: 1 << 30,
            checkpoint_interval: Duration::from_secs(5),
        }
    }
}

/// The dead-letter office.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Most dead letters returned by one list request (> 0).
    pub list_limit_max: u32,
    /// Most readings queued in the dead-letter office's mailbox (> 0).
    pub mailbox_readings: u32,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            list_limit_max: 10_000,
            mailbox_readings: 100_000,
        }
    }
}

/// Which store backends to use, where the embedded ones keep their files
/// and how to reach the servers of the others.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoresConfig {
    /// Backend for the time-series store.
    pub timeseries: TimeSeriesBackend,
    /// Backend for the document store.
    pub documents: DocumentsBackend,
    /// Directory of the embedded SQLite databases (relative to `node.data_dir`).
    pub sqlite_dir: PathBuf,
    /// SQLite `synchronous` pragma for the embedded stores: `off`, `normal` or `full`.
    pub synchronous: SqliteSync,
    /// The InfluxDB server, when `timeseries = "influxdb"`.
    pub influxdb: InfluxDbConfig,
    /// The MongoDB server, when `documents = "mongodb"`.
    pub mongodb: MongoDbConfig,
    /// The S3 service of `s3://` archive roots.
    pub s3: S3Config,
    /// The S3 service of an `s3://` replica root, when it differs from `s3`
    /// (the other AZ's endpoint or account): each empty key takes the value
    /// of `[stores.s3]`, and `allow_http` of either allows it.
    pub s3_replica: S3Config,
}

impl Default for StoresConfig {
    fn default() -> Self {
        Self {
            timeseries: TimeSeriesBackend::Embedded,
            documents: DocumentsBackend::Embedded,
            sqlite_dir: PathBuf::from("db"),
            synchronous: SqliteSync::Full,
            influxdb: InfluxDbConfig::default(),
            mongodb: MongoDbConfig::default(),
            s3: S3Config::default(),
            s3_replica: S3Config {
                region: String::new(),
                request_timeout: Duration::ZERO,
                ..S3Config::default()
            },
        }
    }
}

/// Backend of the time-series store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeSeriesBackend {
    /// SQLite files under `stores.sqlite_dir`, inside the node process.
    #[default]
    Embedded,
    /// An InfluxDB server (`[stores.influxdb]`), shared by every node.
    Influxdb,
}

/// Backend of the document store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentsBackend {
    /// SQLite files under `stores.sqlite_dir`, inside the node process.
    #[default]
    Embedded,
    /// A MongoDB (or MongoDB-compatible) server (`[stores.mongodb]`), shared by every node.
    Mongodb,
}

/// Which InfluxDB write API the time-series store speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// `/write` with `db` and `rp`: InfluxDB 1.x, and the 1.x compatibility API of 2.x and 3.x.
    #[default]
    V1,
    /// `/api/v2/write` with `org` and `bucket`: InfluxDB 2.x, 3.x, Timestream for InfluxDB.
    V2,
}

/// An InfluxDB server. Reads always use InfluxQL on `/query` (served by
/// 1.x, by 2.x through a DBRP mapping of `database`/`retention_policy` to
/// the bucket, and by 3.x).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxDbConfig {
    /// Base URL, `http://` or `https://` (TLS with the system's roots, or `ca_file`).
    pub url: String,
    /// Write API: `v1` or `v2`.
    pub api: InfluxApi,
    /// Database written (v1) and queried (both).
    pub database: String,
    /// Retention policy written and queried; empty: the database's default.
    pub retention_policy: String,
    /// Organisation (v2 writes).
    pub org: String,
    /// Bucket (v2 writes).
    pub bucket: String,
    /// API token (`Authorization: Token …`); not with `username`.
    pub token: String,
    /// User for basic authentication (1.x); not with `token`.
    pub username: String,
    /// Password of `username`.
    pub password: String,
    /// CA certificate (PEM, relative to `node.data_dir`) trusted for an
    /// `https://` URL besides the system's roots; empty: the system's only.
    pub ca_file: PathBuf,
    /// Compress write bodies with gzip.
    pub gzip: bool,
    /// Most points in one write request (1 to 100000); larger flushes are split.
    pub batch_points_max: u32,
    /// How long one request may take before it counts as failed (> 0).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for InfluxDbConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            api: InfluxApi::V1,
            database: "vatio".to_owned(),
            retention_policy: String::new(),
            org: String::new(),
            bucket: String::new(),
            token: String::new(),
            username: String::new(),
            password: String::new(),
            ca_file: PathBuf::new(),
            gzip: true,
            batch_points_max: 5000,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A MongoDB or MongoDB-compatible server.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoDbConfig {
    /// Connection string (`mongodb://` or `mongodb+srv://`), with
    /// credentials, `tls=true`, `tlsCAFile=…` and other options as MongoDB
    /// documents them.
    pub uri: String,
    /// Database holding vatio's collections.
    pub database: String,
}

impl Default for MongoDbConfig {
    fn default() -> Self {
        Self {
            uri: String::new(),
            database: "vatio".to_owned(),
        }
    }
}

/// An S3 (or S3-compatible) service. Empty credentials come from the usual
/// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`, …).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible service; empty: AWS's own for `region`.
    pub endpoint: String,
    /// Region of the buckets.
    pub region: String,
    /// Access key id; empty: from the environment.
    pub access_key_id: String,
    /// Secret access key; empty: from the environment.
    pub secret_access_key: String,
    /// Allow a plain `http://` endpoint (test servers only).
    pub allow_http: bool,
    /// How long one request (one part of a large file) may take before it
    /// counts as failed and the archiver retries it (> 0; `0s` in
    /// `[stores.s3_replica]`: the value of `[stores.s3]`).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl S3Config {
    /// This replica service's settings with every empty key taken from `primary`.
    pub fn or_from(&self, primary: &S3Config) -> S3Config {
        let pick =
            |mine: &String, theirs: &String| if mine.is_empty() { theirs } else { mine }.clone();
        S3Config {
            endpoint: pick(&self.endpoint, &primary.endpoint),
            region: pick(&self.region, &primary.region),
            access_key_id: pick(&self.access_key_id, &primary.access_key_id),
            secret_access_key: pick(&self.secret_access_key, &primary.secret_access_key),
            allow_http: self.allow_http || primary.allow_http,
            request_timeout: if self.request_timeout.is_zero() {
                primary.request_timeout
            } else {
                self.request_timeout
            },
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// SQLite's `synchronous` pragma: how often SQLite waits for the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// Never wait for the disk (fastest; a power loss may corrupt the database).
    Off,
    /// Wait at critical moments: a process crash loses nothing, but a power
    /// loss may lose the last commits, after the sinks have moved their log
    /// positions past them, so acknowledged readings can go missing from
    /// the stores and the archive.
    Normal,
    /// Wait on every commit: what a sink has committed survives a power
    /// loss. Sinks commit once per flush, so this costs little.
    #[default]
    Full,
}
