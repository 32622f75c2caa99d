//! Builds the node's actor tree and is the one handle the node's services
//! use: ingest, replay, flush, status, shutdown.
//!
//! ```text
//! NodeSupervisor
//! ├── DeadLetterOffice ──▶ dead-letter store      ┐
//! ├── Aggregator ────────▶ time-series store      │ each reads the
//! ├── StreamEtl ─────────▶ document store         │ write-ahead log
//! ├── Archiver ──────────▶ staging ─▶ Parquet     │ from its own
//! ├── Checkpointer ──────▶ device checkpoint      ┘ position
//! └── Router
//!     └── DeviceActor × active devices ──▶ write-ahead log, then ack
//! ```
//!
//! The log is truncated behind the slowest subscriber; when that one lags
//! more than `log.unconsumed_bytes_max`, `Ingest` is told to back off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::logic::validate::Refusal;
use futures::FutureExt;
use ractor::{Actor, ActorRef};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use vatio_config::{Config, LogFsync};
use vatio_stores::archive::ParquetArchive;
use vatio_stores::{
    ArchiveStaging, CheckpointStore, DeadLetter, DeadLetterFilter, DeadLetterId, DeadLetterStore,
    DeviceId, DocumentStore, RawReading, TimeSeriesStore,
};
use vatio_wal::{Log, LogStats, Position, PositionStore};

use crate::aggregator::{Aggregator, AggregatorArgs};
use crate::archiver::{Archiver, ArchiverArgs};
use crate::checkpoint::{CheckpointArgs, Checkpointer};
use crate::clock::SharedClock;
use crate::dead_letters::{DeadLetterArgs, DeadLetterOffice};
use crate::device::{
    CrashHook, DeviceBatch, DeviceContext, GroupFailure, GroupOutcome, Origin, ReplySlot,
};
use crate::feed::{Gate, LogConsumer, Progress};
use crate::logic::device::Limits;
use crate::logic::validate::Rules;
use crate::mailbox::Bounded;
use crate::pipeline::SubscriberMsg;
use crate::recovery::{Rebuilt, RecoveryError, rebuild_devices};
use crate::rejects::Rejects;
use crate::replication::{Replication, ShipWaitError, Shipper, ShipperArgs, Shipping};
use crate::router::{Admission, Router, RouterArgs, RouterMsg, RouterStatus};
use crate::sink_retry::{RetryPolicy, SinkGuard, SinkHealthSnapshot};
use crate::stats::NodeStats;
use crate::stream_etl::{StreamEtl, StreamEtlArgs};
use crate::supervisor::{ChildSpec, NodeSupervisor, SpawnFn, SupervisorArgs, SupervisorMsg};
use crate::void::VoidSet;

/// How often the log is truncated behind the slowest subscriber.
const TRUNCATE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a flush waits for the subscribers to reach the log's head.
const FLUSH_WAIT_MAX: Duration = Duration::from_secs(60);
/// The shipper's name, under which its log position is kept.
const SHIPPER: &str = "replication";

/// The stores the tree writes to.
#[derive(Clone)]
pub struct TreeStores {
    pub timeseries: Arc<dyn TimeSeriesStore>,
    pub documents: Arc<dyn DocumentStore>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
    pub staging: Arc<dyn ArchiveStaging>,
    pub archive: Arc<ParquetArchive>,
    pub checkpoints: Arc<dyn CheckpointStore>,
}

/// The node's write-ahead log as the tree gets it: opened (and recovered)
/// by the node.
#[derive(Clone)]
pub struct TreeLog {
    pub log: Log,
    pub positions: PositionStore,
    /// What opening the log found: records kept, tail cut.
    pub recovery: Arc<vatio_wal::Recovery>,
    /// Only for reporting how long the device-state rebuild took.
    pub now: fn() -> std::time::Instant,
}

/// How an ingest acknowledgement may be relied on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum AckGuarantee {
    /// Written to the local log, fsync pending: survives a process crash.
    LocalLogWritten,
    /// In the local log and fsynced: survives a power loss.
    #[default]
    LocalLogSynced,
    /// In the owner's log and in its replica's log in the other AZ:
    /// survives losing the owner's node or AZ.
    Replicated,
}

/// Optional behaviour of the tree.
#[derive(Clone, Default)]
pub struct TreeOptions {
    /// Fault injection for tests and simulations only (see [`CrashHook`]).
    pub crash_hook: Option<CrashHook>,
    /// In a cluster: how steps reach replicas and acks wait for them. A
    /// tree with replication sequences only the devices it has claimed.
    pub replication: Option<Replication>,
}

/// What an ingest call did with its readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckCounts {
    pub accepted: u32,
    pub duplicates: u32,
    pub dead_lettered: u32,
    pub guarantee: AckGuarantee,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The pipeline is full; nothing of the batch was taken.
    #[error("node is at capacity ({reason}); retry after {retry_after:?}")]
    Overloaded {
        reason: String,
        retry_after: Duration,
    },
    /// The write-ahead log did not take the batch (disk full, I/O error);
    /// nothing of what it refused was applied.
    #[error("{0}")]
    Log(String),
    /// In a cluster: these devices are not this node's to sequence (yet);
    /// nothing of the batch was taken. The node claims them and retries.
    #[error("{} device(s) not owned by this node, e.g. {}", .0.len(), .0.first().map(|d| d.as_str()).unwrap_or(""))]
    NotOwned(Vec<DeviceId>),
    /// Another node took a device over while its group waited; nothing of
    /// that group was applied.
    #[error("device {0} was taken over by another node; send it again")]
    Moved(DeviceId),
    /// `ack = replicated`, `no_other_az = refuse`, and the other AZ has no
    /// live member; nothing was taken.
    #[error("no live node in another AZ to keep a replica (cluster.no_other_az = refuse)")]
    NoReplica,
    /// The readings are in this node's log but no replica confirmed them;
    /// sending them again is safe (they count as duplicates).
    #[error("the readings are in this node's log but not yet on a replica: {0}")]
    Replication(String),
    #[error("node is stopping")]
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("starting the actor tree: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("store: {0}")]
    Store(#[from] vatio_stores::Error),
    #[error("rebuilding device state: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("{subscriber} did not reach the log's head within {waited:?} (is its sink down?)")]
    FlushTimeout {
        subscriber: &'static str,
        waited: Duration,
    },
    #[error("node is stopping")]
    Stopped,
    /// A peer sent replica steps this node cannot decode.
    #[error("replica step from {from}: {detail}")]
    BadReplica { from: String, detail: String },
    #[error("write-ahead log: {0}")]
    Log(#[from] vatio_wal::LogError),
    #[error("voided steps: {0}")]
    Void(String),
}

/// Outcome of a dead-letter replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub attempted: u32,
    pub accepted: u32,
    pub refused_again: u32,
    /// Pending letters not replayed here: their devices are sequenced by
    /// another node now (the cluster sends them to that owner).
    pub not_owned: u32,
}

impl ReplaySummary {
    /// Adds the outcome of letters this node held but sent to their
    /// devices' owners: those attempted there are no longer left alone.
    pub fn add_replayed_elsewhere(&mut self, elsewhere: ReplaySummary) {
        self.attempted += elsewhere.attempted;
        self.accepted += elsewhere.accepted;
        self.refused_again += elsewhere.refused_again;
        self.not_owned = self.not_owned.saturating_sub(elsewhere.attempted);
    }
}

/// What became of one reading replayed from a dead letter.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplayOutcome {
    /// Valid now: on its way to every sink.
    Accepted,
    /// Refused again, for this reason.
    Refused(Refusal),
    /// This node does not sequence its device (any more).
    NotOwned,
    /// Not replayed this time (the log refused its group, the node is
    /// overloaded or stopping): the letter stays pending.
    NotDone,
}

/// One log subscriber's place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberStatus {
    pub name: &'static str,
    /// Durable position: everything before it is in the sink.
    pub committed: u64,
    /// Log bytes between the committed position and the head.
    pub lag_bytes: u64,
    /// Log bytes not yet taken in (what backpressure bounds).
    pub unread_bytes: u64,
}

/// What start-up recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryStatus {
    /// Records found intact in the log at start-up.
    pub log_records: u64,
    /// Bytes cut from a torn or corrupt tail (0 when none).
    pub log_bytes_cut: u64,
    /// Why and where, when something was cut.
    pub log_cut: Option<String>,
    pub log_scan_ms: u64,
    /// Log records replayed to rebuild device state.
    pub device_records_replayed: u64,
    pub device_rebuild_ms: u64,
}

/// Counters and gauges of the whole tree.
#[derive(Clone, Debug, Default)]
pub struct TreeStatus {
    pub router: RouterStatus,
    pub inflight_readings: u64,
    pub log: LogStats,
    pub subscribers: Vec<SubscriberStatus>,
    pub sinks: Vec<SinkStatus>,
    pub recovery: RecoveryStatus,
}

/// One sink's retry state, as `Admin.Status` shows it.
#[derive(Clone, Debug)]
pub struct SinkStatus {
    pub name: &'static str,
    pub health: SinkHealthSnapshot,
    /// Why it is failing, if it failed since it last answered.
    pub last_error: Option<String>,
}

/// The running actor tree.
pub struct ActorTree {
    supervisor: ActorRef<SupervisorMsg>,
    router: ActorRef<RouterMsg>,
    subscribers: Vec<Bounded<SubscriberMsg>>,
    progress: Vec<Arc<Progress>>,
    guards: Vec<SinkGuard>,
    log: Log,
    unconsumed_bytes_max: u64,
    guarantee: AckGuarantee,
    recovery: RecoveryStatus,
    truncator: JoinHandle<()>,
    /// Stops the tree when the log fails (see [`stop_when_the_log_fails`]).
    log_watch: JoinHandle<()>,
    inflight: Arc<Semaphore>,
    max_inflight: u64,
    retry_after: Duration,
    stats: Arc<NodeStats>,
    stores: TreeStores,
    clock: SharedClock,
    /// Device flush rounds before giving up on a device that keeps crashing.
    flush_rounds: u32,
    /// In a cluster: replication settings and watermark.
    replication: Option<(Replication, Arc<Shipping>)>,
}

pub mod cluster;

impl ActorTree {
    pub async fn start(
        cfg: &Config,
        stores: TreeStores,
        tlog: TreeLog,
        clock: SharedClock,
        options: TreeOptions,
    ) -> Result<Self, TreeError> {
        let stats = Arc::new(NodeStats::default());
        let log = tlog.log.clone();

        // Devices first: the router must know every device's state as of the
        // log's head before it takes a reading.
        let void = match &options.replication {
            Some(rep) => Some(Arc::new(
                VoidSet::open(&rep.void_path).map_err(|e| TreeError::Void(e.to_string()))?,
            )),
            None => None,
        };
        // The shipper's position: its own steps before it are settled.
        let settled = match &options.replication {
            Some(_) => tlog.positions.load(SHIPPER)?.map(|p| p.0).or(Some(0)),
            None => None,
        };
        let rebuilt: Rebuilt = rebuild_devices(
            &log,
            &cfg.node.id,
            void.as_deref(),
            settled,
            stores.checkpoints.as_ref(),
            tlog.now,
        )
        .await?;
        let voided = match &void {
            Some(void) => void
                .to_deliver(&rebuilt.adopted)
                .map_err(|e| TreeError::Void(e.to_string()))?,
            None => BTreeMap::new(),
        };
        let recovery = RecoveryStatus {
            log_records: tlog.recovery.records,
            log_bytes_cut: tlog.recovery.cut.as_ref().map_or(0, |c| c.bytes_cut),
            log_cut: tlog.recovery.cut.as_ref().map(|c| c.to_string()),
            log_scan_ms: tlog.recovery.elapsed.as_millis() as u64,
            device_records_replayed: rebuilt.records_replayed,
            device_rebuild_ms: rebuilt.elapsed.as_millis() as u64,
        };
        NodeStats::add(&stats.log_records_undecodable, rebuilt.records_undecodable);
        NodeStats::add(
            &stats.log_positions_past_head,
            u64::from(rebuilt.checkpoint_past_head),
        );

        // Each node jitters its retries differently (so nodes sharing a
        // store do not retry in step), yet the same node replays the same.
        let policy = RetryPolicy {
            jitter_seed: cfg.node.id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            }),
            ..RetryPolicy::default()
        };
        let guard = |name: &'static str| SinkGuard::new(name, policy.clone(), clock.clone());
        let g_timeseries = guard("timeseries");
        let g_documents = guard("documents");
        let g_dead_letters = guard("dead-letters");
        let g_staging = guard("archive-staging");
        let g_archive = guard("archive");
        let g_checkpoints = guard("device-checkpoint");
        let guards = vec![
            g_timeseries.clone(),
            g_documents.clone(),
            g_dead_letters.clone(),
            g_staging.clone(),
            g_archive.clone(),
            g_checkpoints.clone(),
        ];
        let rejects = Rejects {
            store: stores.dead_letters.clone(),
            guard: g_dead_letters.clone(),
            stats: stats.clone(),
        };
        let ungated = |name: &'static str, mailbox_readings: u32| LogConsumer {
            log: log.clone(),
            positions: tlog.positions.clone(),
            progress: Progress::new(name),
            mailbox_readings: mailbox_readings as usize,
            stats: stats.clone(),
            gate: None,
            durable_only: false,
        };
        // In a cluster the shipper reads every own step first; the others
        // read only what it has settled with the replicas.
        let shipper = match (&options.replication, &void) {
            (Some(rep), Some(void)) => {
                let c = LogConsumer {
                    durable_only: true,
                    ..ungated(SHIPPER, cfg.aggregator.mailbox_readings)
                };
                let shipping = Shipping::new(c.progress.clone(), void.clone());
                Some((rep.clone(), c, shipping))
            }
            _ => None,
        };
        let gate = shipper.as_ref().map(|(_, _, shipping)| Gate {
            deliverable: shipping.deliverable(),
            void: shipping.void.clone(),
        });
        let consumer = |name: &'static str, mailbox_readings: u32| LogConsumer {
            gate: gate.clone(),
            ..ungated(name, mailbox_readings)
        };
        let c_dead_letters = consumer("dead-letters", cfg.dead_letters.mailbox_readings);
        let c_aggregator = consumer("aggregator", cfg.aggregator.mailbox_readings);
        let c_stream_etl = consumer("stream-etl", cfg.stream_etl.mailbox_readings);
        let c_archiver = consumer("archiver", cfg.archiver.mailbox_readings);
        let c_checkpoint = consumer("device-checkpoint", cfg.aggregator.mailbox_readings);
        let progress: Vec<Arc<Progress>> = [
            &c_dead_letters,
            &c_aggregator,
            &c_stream_etl,
            &c_archiver,
            &c_checkpoint,
        ]
        .iter()
        .map(|c| c.progress.clone())
        .collect();
        let mut progress = progress;
        let router_slot: Arc<std::sync::Mutex<Option<ActorRef<RouterMsg>>>> = Default::default();

        // The supervisor spawns every child; each SpawnFn fills (or, on a
        // restart, re-points) the child's mailbox slot, which this handle
        // reads to flush.
        let slots: Vec<Slot<SubscriberMsg>> = (0..5).map(|_| Slot::default()).collect();
        let mut children: Vec<ChildSpec> = vec![
            restartable_child(
                "dead-letter-office",
                slots[0].clone(),
                cfg.dead_letters.mailbox_readings,
                DeadLetterOffice,
                DeadLetterArgs {
                    store: stores.dead_letters.clone(),
                    guard: g_dead_letters,
                    consumer: c_dead_letters,
                    stats: stats.clone(),
                },
            ),
            restartable_child(
                "aggregator",
                slots[1].clone(),
                cfg.aggregator.mailbox_readings,
                Aggregator,
                AggregatorArgs {
                    store: stores.timeseries.clone(),
                    guard: g_timeseries,
                    rejects: rejects.clone(),
                    consumer: c_aggregator,
                    cfg: cfg.aggregator.clone(),
                    clock: clock.clone(),
                    stats: stats.clone(),
                },
            ),
            restartable_child(
                "stream-etl",
                slots[2].clone(),
                cfg.stream_etl.mailbox_readings,
                StreamEtl,
                StreamEtlArgs {
                    store: stores.documents.clone(),
                    guard: g_documents,
                    rejects,
                    consumer: c_stream_etl,
                    cfg: cfg.stream_etl.clone(),
                    clock: clock.clone(),
                    stats: stats.clone(),
                    window_lateness: cfg.aggregator.window_lateness,
                },
            ),
            restartable_child(
                "archiver",
                slots[3].clone(),
                cfg.archiver.mailbox_readings,
                Archiver,
                ArchiverArgs {
                    staging: stores.staging.clone(),
                    archive: stores.archive.clone(),
                    staging_guard: g_staging,
                    archive_guard: g_archive,
                    consumer: c_archiver,
                    cfg: cfg.archiver.clone(),
                    clock: clock.clone(),
                    stats: stats.clone(),
                },
            ),
            restartable_child(
                "device-checkpoint",
                slots[4].clone(),
                cfg.aggregator.mailbox_readings,
                Checkpointer,
                CheckpointArgs {
                    store: stores.checkpoints.clone(),
                    guard: g_checkpoints,
                    consumer: c_checkpoint,
                    interval: cfg.log.checkpoint_interval,
                    node: Arc::from(cfg.node.id.as_str()),
                },
            ),
        ];
        let shipping = match shipper {
            Some((replication, c_replication, shipping)) => {
                progress.push(c_replication.progress.clone());
                let slot: Slot<SubscriberMsg> = Slot::default();
                children.push(restartable_child(
                    "replication",
                    slot,
                    cfg.aggregator.mailbox_readings,
                    Shipper,
                    ShipperArgs {
                        link: replication.link.clone(),
                        shipping: shipping.clone(),
                        consumer: c_replication,
                        router: router_slot.clone(),
                        timeout: replication.timeout,
                        stats: stats.clone(),
                        start_head: rebuilt.position,
                        no_other_az: replication.no_other_az,
                        node: Arc::from(cfg.node.id.as_str()),
                    },
                ));
                Some((replication, shipping))
            }
            None => None,
        };
        {
            let router_slot = router_slot.clone();
            let rules = Rules {
                max_future_skew_ms: millis(cfg.device.max_future_skew),
                max_past_age_ms: millis(cfg.device.max_past_age),
            };
            let limits = Limits {
                reorder_window: cfg.device.reorder_window,
                reorder_max_hold_ms: millis(cfg.device.reorder_max_hold),
            };
            let ctx = Arc::new(DeviceContext {
                rules,
                limits,
                clock: clock.clone(),
                log: log.clone(),
                stats: stats.clone(),
                crash_hook: options.crash_hook.clone(),
                node: Arc::from(cfg.node.id.as_str()),
            });
            let supervision = cfg.supervision.clone();
            let idle = cfg.device.idle_passivate_after;
            let mailbox_batches = cfg.device.mailbox_batches as usize;
            let initial = Arc::new(std::sync::Mutex::new(Some((
                rebuilt.devices,
                voided,
                rebuilt.confirmed,
            ))));
            let initial_end = rebuilt.position;
            let clustered = options.replication.is_some();
            let confirmed = shipping.as_ref().map(|(_, s)| s.deliverable());
            let router_void = void.clone();
            let spawn: SpawnFn = Arc::new(move |parent| {
                let router_slot = router_slot.clone();
                let ctx = ctx.clone();
                let supervision = supervision.clone();
                let confirmed = confirmed.clone();
                let router_void = router_void.clone();
                let (initial, voided, confirmed_copies) = initial
                    .lock()
                    .ok()
                    .and_then(|mut g| g.take())
                    .unwrap_or_default();
                async move {
                    let (router, _) = Actor::spawn_linked(
                        None,
                        Router,
                        RouterArgs {
                            ctx,
                            supervision,
                            idle_passivate_after: idle,
                            mailbox_batches,
                            initial,
                            voided,
                            confirmed_copies,
                            initial_end,
                            clustered,
                            confirmed,
                            void: router_void,
                        },
                        parent,
                    )
                    .await?;
                    if let Ok(mut g) = router_slot.lock() {
                        *g = Some(router.clone());
                    }
                    Ok(router.get_cell())
                }
                .boxed()
            });
            children.push(ChildSpec {
                name: "router",
                // The device table is rebuilt from the log only at start-up:
                // a router failure stops the node, which a restart recovers.
                restartable: false,
                spawn,
            });
        }

        let (supervisor, _) = Actor::spawn(
            None,
            NodeSupervisor,
            SupervisorArgs {
                children,
                supervision: cfg.supervision.clone(),
                clock: clock.clone(),
                stats: stats.clone(),
            },
        )
        .await?;
        let router = router_slot
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .ok_or(TreeError::Stopped)?;
        let subscribers = slots
            .iter()
            .map(|s| s.lock().ok().and_then(|g| g.clone()))
            .collect::<Option<Vec<_>>>()
            .ok_or(TreeError::Stopped)?;
        let void = shipping.as_ref().map(|(_, s)| s.void.clone());
        let truncator = tokio::spawn(truncate_behind_slowest(log.clone(), progress.clone(), void));
        let log_watch = tokio::spawn(stop_when_the_log_fails(log.clone(), supervisor.clone()));
        let max_inflight = cfg.ingest.max_inflight_readings;
        Ok(Self {
            supervisor,
            router,
            subscribers,
            progress,
            guards,
            log,
            unconsumed_bytes_max: cfg.log.unconsumed_bytes_max,
            guarantee: match cfg.log.fsync {
                LogFsync::Always => AckGuarantee::LocalLogSynced,
                LogFsync::Interval(_) | LogFsync::Never => AckGuarantee::LocalLogWritten,
            },
            recovery,
            truncator,
            log_watch,
            inflight: Arc::new(Semaphore::new(
                usize::try_from(max_inflight)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
            max_inflight,
            retry_after: cfg.ingest.retry_after,
            stats,
            stores,
            clock,
            flush_rounds: cfg.supervision.poison_attempts + 1,
            replication: shipping,
        })
    }

    /// What an acknowledgement from this node means.
    pub fn guarantee(&self) -> AckGuarantee {
        self.guarantee
    }

    /// The slowest subscriber and how many log bytes it has not taken in.
    /// (Not its committed position: that moves only at flushes and
    /// checkpoints, so it lags by design; a stalled sink stops taking in.)
    fn slowest(&self) -> Option<(&'static str, u64)> {
        let head = self.log.visible_head().0;
        self.progress
            .iter()
            .map(|p| (p.name, head.saturating_sub(p.folded())))
            .max_by_key(|(_, lag)| *lag)
    }

    /// Takes one batch: every reading is accepted, a duplicate, or a dead
    /// letter when this returns. All or nothing on overload. In a cluster
    /// the answer waits for the replica as `cluster.ack` says.
    pub async fn ingest(
        &self,
        readings: Vec<RawReading>,
        source: &str,
    ) -> Result<AckCounts, IngestError> {
        let local_only = self.refuse_without_replica()?;
        let origin = Origin::Ingest {
            source: Arc::from(source),
        };
        let results = self.route(readings, origin).await?;
        let mut ack = AckCounts::default();
        let mut ends = Vec::with_capacity(results.len());
        for (device, _, r) in results {
            // Any group the log refused fails the call: the client sends the
            // batch again, and the groups that were logged count as duplicates.
            let r = r.map_err(|e| match e {
                GroupFailure::Log(e) => IngestError::Log(e.to_string()),
                GroupFailure::Moved(d) => IngestError::Moved(d),
            })?;
            ack.accepted += r.accepted;
            ack.duplicates += r.duplicates;
            ack.dead_lettered += r.dead_lettered;
            ends.push((device, r.end));
        }
        ack.guarantee = self.confirm(&ends, local_only).await?;
        Ok(ack)
    }

    /// Whether a batch is refused now for want of a replica (see
    /// [`ActorTree::ingest`]; counted as refused when it is). A node asks
    /// before it claims devices: taking a device over when nothing may be
    /// taken only moves the device's line for nothing (and a node that
    /// sees no other AZ may not see the device's owner either).
    pub fn refuses_without_replica(&self) -> bool {
        let refuses = self.replica_missing() == Some(vatio_config::NoOtherAz::Refuse);
        if refuses {
            NodeStats::add(&self.stats.batches_refused_no_replica, 1);
        }
        refuses
    }

    /// When `ack = replicated` needs a replica and no live node in the other
    /// AZ could keep one: what `no_other_az` says to do then.
    fn replica_missing(&self) -> Option<vatio_config::NoOtherAz> {
        let (rep, _) = self.replication.as_ref()?;
        (rep.ack == vatio_config::AckMode::Replicated && !rep.link.other_az_live())
            .then_some(rep.no_other_az)
    }

    /// Before taking a batch: refuses it when `ack = replicated` needs a
    /// replica and none can exist. Returns whether acks are local only.
    fn refuse_without_replica(&self) -> Result<bool, IngestError> {
        let replicated = self
            .replication
            .as_ref()
            .is_some_and(|(rep, _)| rep.ack == vatio_config::AckMode::Replicated);
        match self.replica_missing() {
            None => Ok(!replicated),
            Some(vatio_config::NoOtherAz::Refuse) => {
                NodeStats::add(&self.stats.batches_refused_no_replica, 1);
                Err(IngestError::NoReplica)
            }
            Some(vatio_config::NoOtherAz::Degrade) => {
                NodeStats::add(&self.stats.batches_acked_degraded, 1);
                Ok(true)
            }
        }
    }

    /// The guarantee of an ack whose readings are in the log before the
    /// given per-device ends: local, or replicated once the replica has them.
    async fn confirm(
        &self,
        ends: &[(DeviceId, u64)],
        local_only: bool,
    ) -> Result<AckGuarantee, IngestError> {
        match &self.replication {
            Some((rep, shipping)) if !local_only => {
                shipping
                    .wait(ends, rep.timeout)
                    .await
                    .map_err(|e| IngestError::Replication(e.to_string()))?;
                Ok(AckGuarantee::Replicated)
            }
            _ => Ok(self.guarantee),
        }
    }

    /// Splits readings by device and waits for every device's result, in
    /// the order the devices first appear in `readings`.
    async fn route(
        &self,
        readings: Vec<RawReading>,
        origin: Origin,
    ) -> Result<Vec<(DeviceId, Vec<usize>, GroupOutcome)>, IngestError> {
        if readings.is_empty() {
            return Ok(Vec::new());
        }
        if let Some((slowest, lag)) = self.slowest()
            && lag > self.unconsumed_bytes_max
        {
            NodeStats::add(&self.stats.batches_refused_overload, 1);
            return Err(IngestError::Overloaded {
                reason: format!(
                    "{slowest} has {lag} log bytes unread, over log.unconsumed_bytes_max"
                ),
                retry_after: self.retry_after,
            });
        }
        let n = u32::try_from(readings.len()).unwrap_or(u32::MAX);
        let permit = match self.inflight.clone().try_acquire_many_owned(n) {
            Ok(p) => Arc::new(p),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                NodeStats::add(&self.stats.batches_refused_overload, 1);
                return Err(IngestError::Overloaded {
                    reason: "in-flight readings at ingest.max_inflight_readings".to_owned(),
                    retry_after: self.retry_after,
                });
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(IngestError::Stopped),
        };
        // Group by device, keeping each device's readings in arrival order.
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut groups: Vec<(DeviceId, Vec<RawReading>, Vec<usize>)> = Vec::new();
        for (i, raw) in readings.into_iter().enumerate() {
            let g = match index.get(&raw.device_id) {
                Some(g) => *g,
                None => {
                    index.insert(raw.device_id.clone(), groups.len());
                    groups.push((
                        DeviceId::new(raw.device_id.as_str()),
                        Vec::new(),
                        Vec::new(),
                    ));
                    groups.len() - 1
                }
            };
            groups[g].1.push(raw);
            groups[g].2.push(i);
        }
        let mut routed = Vec::with_capacity(groups.len());
        let mut waits = Vec::with_capacity(groups.len());
        for (device, raws, positions) in groups {
            let (tx, rx) = oneshot::channel();
            waits.push((device.clone(), positions, rx));
            routed.push((
                device,
                DeviceBatch {
                    no: 0,
                    readings: Arc::new(raws),
                    origin: origin.clone(),
                    reply: ReplySlot::new(tx),
                    inflight: Some(permit.clone()),
                },
            ));
        }
        drop(permit);
        let (atx, arx) = oneshot::channel();
        self.router
            .cast(RouterMsg::Route {
                groups: routed,
                admitted: atx,
            })
            .map_err(|_| IngestError::Stopped)?;
        match arx.await.map_err(|_| IngestError::Stopped)? {
            Admission::Admitted => {}
            Admission::MailboxFull => {
                NodeStats::add(&self.stats.batches_refused_overload, 1);
                return Err(IngestError::Overloaded {
                    reason: "a device's mailbox is full".to_owned(),
                    retry_after: self.retry_after,
                });
            }
            Admission::NotOwned(devices) => {
                NodeStats::add(&self.stats.batches_refused_not_owner, 1);
                return Err(IngestError::NotOwned(devices));
            }
        }
        let mut out = Vec::with_capacity(waits.len());
        for (device, positions, rx) in waits {
            out.push((
                device,
                positions,
                rx.await.map_err(|_| IngestError::Stopped)?,
            ));
        }
        Ok(out)
    }

    /// Re-submits pending dead letters through the normal validation path.
    /// Each letter is replayed at most once successfully: it leaves the
    /// pending set when accepted. In a cluster only letters of devices this
    /// node owns; the others are counted (`not_owned`) for the cluster to
    /// send to their owners ([`ActorTree::letters_not_owned`]).
    pub async fn replay(&self, filter: &DeadLetterFilter) -> Result<ReplaySummary, TreeError> {
        let (letters, unowned) = self.pending_letters(filter).await?;
        let ids: Vec<DeadLetterId> = letters.iter().map(|l| l.id).collect();
        let raws: Vec<RawReading> = letters.into_iter().map(|l| l.letter.reading).collect();
        let outcomes = self.replay_readings(raws).await?;
        let mut summary = self
            .settle_replayed(ids.into_iter().zip(outcomes).collect())
            .await?;
        summary.not_owned += u32::try_from(unowned.len()).unwrap_or(u32::MAX);
        Ok(summary)
    }

    /// The pending letters `filter` picks, oldest first (so that a device's
    /// readings go back in their order): those of devices this node
    /// sequences, and (in a cluster) those whose devices another node does.
    async fn pending_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<(Vec<DeadLetter>, Vec<DeadLetter>), TreeError> {
        let filter = DeadLetterFilter {
            include_replayed: false,
            ..filter.clone()
        };
        let letters = self.stores.dead_letters.list(&filter).await?;
        let letters: Vec<DeadLetter> = letters.into_iter().rev().collect();
        if !self.clustered() {
            return Ok((letters, Vec::new()));
        }
        let devices: Vec<DeviceId> = letters
            .iter()
            .map(|l| DeviceId::new(l.letter.reading.device_id.as_str()))
            .collect();
        let unowned = self.unowned(devices).await?;
        Ok(letters.into_iter().partition(|l| {
            !unowned
                .iter()
                .any(|d| d.as_str() == l.letter.reading.device_id)
        }))
    }

    /// The pending letters `filter` picks whose devices another node
    /// sequences now, oldest first: for that node to replay (see
    /// [`ActorTree::replay_readings`] and [`ActorTree::settle_replayed`]).
    pub async fn letters_not_owned(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, TreeError> {
        let (_, unowned) = self.pending_letters(filter).await?;
        Ok(unowned)
    }

    /// Records what became of replayed letters: accepted ones leave the
    /// pending set, refused ones keep their new reason; the rest stay.
    pub async fn settle_replayed(
        &self,
        outcomes: Vec<(DeadLetterId, ReplayOutcome)>,
    ) -> Result<ReplaySummary, TreeError> {
        let mut summary = ReplaySummary::default();
        let mut accepted_ids = Vec::new();
        for (id, outcome) in outcomes {
            match outcome {
                ReplayOutcome::Accepted => {
                    summary.attempted += 1;
                    accepted_ids.push(id);
                }
                ReplayOutcome::Refused(r) => {
                    summary.attempted += 1;
                    summary.refused_again += 1;
                    self.stores
                        .dead_letters
                        .mark_refused_again(id, r.reason, &r.detail)
                        .await?;
                }
                ReplayOutcome::NotOwned => summary.not_owned += 1,
                ReplayOutcome::NotDone => {}
            }
        }
        summary.accepted = u32::try_from(accepted_ids.len()).unwrap_or(u32::MAX);
        self.stores
            .dead_letters
            .mark_replayed(&accepted_ids, self.clock.now_ms())
            .await?;
        Ok(summary)
    }

    /// Validates `readings` (from dead letters, here or on another node)
    /// again and takes the valid ones as new steps; one outcome per reading,
    /// in order. Files no dead letter: the caller holds the letters.
    pub async fn replay_readings(
        &self,
        readings: Vec<RawReading>,
    ) -> Result<Vec<ReplayOutcome>, TreeError> {
        let mut outcomes = vec![ReplayOutcome::NotDone; readings.len()];
        let devices: Vec<String> = readings.iter().map(|r| r.device_id.clone()).collect();
        let results = match self.route(readings, Origin::Replay).await {
            Ok(r) => r,
            Err(IngestError::Stopped) => return Err(TreeError::Stopped),
            Err(IngestError::NotOwned(unowned)) => {
                // The whole call is refused: the unowned devices' readings
                // are named, the others are left for another try.
                for (outcome, device) in outcomes.iter_mut().zip(&devices) {
                    if unowned.iter().any(|d| d.as_str() == device) {
                        *outcome = ReplayOutcome::NotOwned;
                    }
                }
                return Ok(outcomes);
            }
            Err(_) => return Ok(outcomes),
        };
        for (device, positions, result) in results {
            // A group the log refused stays pending, to be replayed again.
            let Ok(result) = result else { continue };
            // In a cluster a replica must have the step too: a step dropped
            // as orphaned takes its replayed readings with it (it never
            // reaches the sinks), and their letters stay pending. A step
            // not confirmed in time is most likely confirmed later: its
            // letters count as replayed, not replayed twice.
            if let Some((rep, shipping)) = &self.replication
                && self.replica_missing().is_none()
                && result.accepted > 0
                && let Err(ShipWaitError::Refused(_)) =
                    shipping.wait(&[(device, result.end)], rep.timeout).await
            {
                continue;
            }
            for (pos, refusal) in positions.into_iter().zip(result.refusals) {
                outcomes[pos] = match refusal {
                    None => ReplayOutcome::Accepted,
                    Some(r) => ReplayOutcome::Refused(r),
                };
            }
        }
        Ok(outcomes)
    }

    /// Pushes everything held through to the sinks: device reorder buffers
    /// into the log, then every subscriber up to the log's head, then their
    /// open windows, staged archive hours and positions.
    pub async fn flush(&self) -> Result<(), TreeError> {
        // A device that crashes while flushing is restarted by the router
        // and flushed in the next round; a poison group ends that within
        // `poison_attempts` rounds.
        for _ in 0..=self.flush_rounds {
            match self.router.call(RouterMsg::FlushDevices, None).await {
                Ok(ractor::rpc::CallResult::Success(0)) => break,
                Ok(ractor::rpc::CallResult::Success(_)) => continue,
                _ => return Err(TreeError::Stopped),
            }
        }
        let mut head = self.log.visible_head().0;
        // In a cluster the sinks take only settled steps: give the replicas
        // a while to settle the rest; what they have not settled by then
        // reaches the sinks once they do (it is in the log).
        if let Some((rep, shipping)) = &self.replication {
            let mut settled = shipping.deliverable();
            let reached = tokio::time::timeout(rep.timeout, settled.wait_for(|d| *d >= head))
                .await
                .is_ok_and(|r| r.is_ok());
            if !reached {
                let at = *settled.borrow();
                tracing::warn!(
                    unsettled_bytes = head.saturating_sub(at),
                    "flushing up to what replicas have settled; the rest follows when they do"
                );
                head = at.min(head);
            }
        }
        // Flushing is about the sinks; replication has its own watermark
        // (and may wait for another AZ for as long as it is down).
        let shipper = self.replication.as_ref().map(|(_, s)| &s.progress);
        for p in &self.progress {
            if shipper.is_some_and(|s| Arc::ptr_eq(s, p)) {
                continue;
            }
            if tokio::time::timeout(FLUSH_WAIT_MAX, p.wait_folded(head))
                .await
                .is_err()
            {
                return Err(TreeError::FlushTimeout {
                    subscriber: p.name,
                    waited: FLUSH_WAIT_MAX,
                });
            }
        }
        for sub in &self.subscribers {
            match sub
                .current()
                .call(SubscriberMsg::Flush, Some(FLUSH_WAIT_MAX))
                .await
            {
                Ok(ractor::rpc::CallResult::Success(())) => {}
                Ok(ractor::rpc::CallResult::Timeout) => {
                    return Err(TreeError::FlushTimeout {
                        subscriber: sub.name(),
                        waited: FLUSH_WAIT_MAX,
                    });
                }
                _ => return Err(TreeError::Stopped),
            }
        }
        Ok(())
    }

    pub async fn status(&self) -> TreeStatus {
        let router = match self.router.call(RouterMsg::Status, None).await {
            Ok(ractor::rpc::CallResult::Success(s)) => s,
            _ => RouterStatus::default(),
        };
        let head = self.log.visible_head().0;
        TreeStatus {
            router,
            inflight_readings: self
                .max_inflight
                .saturating_sub(self.inflight.available_permits() as u64),
            log: self.log.stats(),
            subscribers: self
                .progress
                .iter()
                .map(|p| SubscriberStatus {
                    name: p.name,
                    committed: p.committed(),
                    lag_bytes: head.saturating_sub(p.committed()),
                    unread_bytes: head.saturating_sub(p.folded()),
                })
                .collect(),
            sinks: self
                .guards
                .iter()
                .map(|g| SinkStatus {
                    name: g.name(),
                    health: g.health().snapshot(),
                    last_error: g.health().last_error(),
                })
                .collect(),
            recovery: self.recovery.clone(),
        }
    }

    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    pub fn stores(&self) -> &TreeStores {
        &self.stores
    }

    /// Where the write-ahead log ends now: every step logged from here on
    /// ends past it.
    pub fn log_head(&self) -> u64 {
        self.log.visible_head().0
    }

    /// Why the write-ahead log failed, if it has (then the tree stops).
    pub fn log_failure(&self) -> Option<String> {
        self.log.failure()
    }

    /// Completes when the node supervisor has stopped: after a shutdown, or
    /// when a child failed beyond its restart budget, or the log failed
    /// (each fatal for the node).
    pub async fn stopped(&self) {
        let _ = self.supervisor.get_cell().wait(None).await;
    }

    /// Stops taking readings, flushes everything to the sinks, stops the
    /// tree and closes the log.
    pub async fn shutdown(&self) -> Result<(), TreeError> {
        self.inflight.close();
        let flushed = self.flush().await;
        let _ = self.supervisor.call(SupervisorMsg::Shutdown, None).await;
        let _ = self.supervisor.stop_and_wait(None, None).await;
        self.truncator.abort();
        self.log_watch.abort();
        if let Err(e) = self.log.close().await {
            tracing::error!(error = %e, "closing the write-ahead log");
        }
        flushed
    }
}

/// A failed log takes no appends until it is reopened, and records it
/// acknowledged may be lost with a failed fsync: the node cannot go on.
/// Closes the log (its writer thread lets the directory go, so a restart
/// can open it at once), then stops the tree: the node exits, and its
/// service manager starts it again, when recovery cuts the log back to
/// what is on disk.
async fn stop_when_the_log_fails(log: Log, supervisor: ActorRef<SupervisorMsg>) {
    let reason = log.failed().await;
    tracing::error!(%reason, "the write-ahead log failed; stopping the node so that it restarts and recovers the log");
    if let Err(e) = log.close().await {
        tracing::debug!(error = %e, "closing the failed write-ahead log");
    }
    supervisor.stop(Some(format!("the write-ahead log failed: {reason}")));
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The mailbox of a singleton, filled as the supervisor starts it and
/// re-pointed when it restarts it.
type Slot<M> = Arc<std::sync::Mutex<Option<Bounded<M>>>>;

/// Deletes log segments every subscriber has committed past.
async fn truncate_behind_slowest(
    log: Log,
    progress: Vec<Arc<Progress>>,
    void: Option<Arc<VoidSet>>,
) {
    let mut tick = tokio::time::interval(TRUNCATE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(min) = progress.iter().map(|p| p.committed()).min() else {
            return;
        };
        match log.truncate_before(Position(min)) {
            Ok(t) if t.segments_removed > 0 => {
                tracing::debug!(
                    segments = t.segments_removed,
                    bytes = t.bytes_removed,
                    "log truncated"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "truncating the write-ahead log failed"),
        }
        // Voided steps the log no longer holds need no remembering.
        if let Some(void) = &void
            && let Err(e) = void.prune_below(log.start().0)
        {
            tracing::warn!(error = %e, "pruning voided steps failed");
        }
    }
}

/// A singleton child that the supervisor restarts with fresh `args`; each
/// start creates (first time) or re-points (restart) its bounded mailbox.
fn restartable_child<A>(
    name: &'static str,
    slot: Slot<A::Msg>,
    capacity: u32,
    actor: A,
    args: A::Arguments,
) -> ChildSpec
where
    A: Actor + Clone,
    A::Arguments: Clone + Send + Sync,
{
    let spawn: SpawnFn = Arc::new(move |parent| {
        let slot = slot.clone();
        let actor = actor.clone();
        let args = args.clone();
        async move {
            let (actor, _) = Actor::spawn_linked(None, actor, args, parent).await?;
            if let Ok(mut g) = slot.lock() {
                match g.as_ref() {
                    Some(mailbox) => mailbox.replace(actor.clone()),
                    None => *g = Some(Bounded::new(name, actor.clone(), capacity as usize)),
                }
            }
            Ok(actor.get_cell())
        }
        .boxed()
    });
    ChildSpec {
        name,
        spawn,
        restartable: true,
    }
}
