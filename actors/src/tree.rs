//! Builds the node's actor tree and is the one handle the node's services
//! use: ingest, replay, flush, status, shutdown.
//!
//! ```text
//! NodeSupervisor
//! ├── DeadLetterOffice ──▶ dead-letter store
//! ├── Aggregator ────────▶ time-series store
//! ├── StreamEtl ─────────▶ document store
//! ├── Archiver ──────────▶ staging ─▶ Parquet (primary + replica)
//! └── Router
//!     └── DeviceActor × active devices ──▶ subscribers, dead letters
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ractor::{Actor, ActorRef};
use tokio::sync::{Semaphore, oneshot};
use vatio_config::Config;
use vatio_stores::archive::ParquetArchive;
use vatio_stores::{
    ArchiveStaging, DeadLetterFilter, DeadLetterId, DeadLetterStore, DeviceId, DocumentStore,
    RawReading, TimeSeriesStore,
};

use crate::aggregator::{Aggregator, AggregatorArgs};
use crate::archiver::{Archiver, ArchiverArgs};
use crate::clock::SharedClock;
use crate::dead_letters::{DeadLetterArgs, DeadLetterMsg, DeadLetterOffice};
use crate::device::{CrashHook, DeviceBatch, DeviceContext, GroupResult, Origin, ReplySlot};
use crate::logic::device::Limits;
use crate::logic::validate::Rules;
use crate::mailbox::Bounded;
use crate::pipeline::{SubscriberMsg, Subscribers};
use crate::router::{Router, RouterArgs, RouterMsg, RouterStatus};
use crate::stats::NodeStats;
use crate::stream_etl::{StreamEtl, StreamEtlArgs};
use crate::supervisor::{ChildSpec, NodeSupervisor, SpawnFn, SupervisorArgs, SupervisorMsg};

/// The stores the tree writes to.
#[derive(Clone)]
pub struct TreeStores {
    pub timeseries: Arc<dyn TimeSeriesStore>,
    pub documents: Arc<dyn DocumentStore>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
    pub staging: Arc<dyn ArchiveStaging>,
    pub archive: Arc<ParquetArchive>,
}

/// Optional behaviour of the tree.
#[derive(Clone, Default)]
pub struct TreeOptions {
    /// Fault injection for tests and simulations only (see [`CrashHook`]).
    pub crash_hook: Option<CrashHook>,
}

/// What an ingest call did with its readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckCounts {
    pub accepted: u32,
    pub duplicates: u32,
    pub dead_lettered: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The pipeline is full; nothing of the batch was taken.
    #[error("node is at capacity ({reason}); retry after {retry_after:?}")]
    Overloaded {
        reason: &'static str,
        retry_after: Duration,
    },
    #[error("node is stopping")]
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("starting the actor tree: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("store: {0}")]
    Store(#[from] vatio_stores::Error),
    #[error("node is stopping")]
    Stopped,
}

/// Outcome of a dead-letter replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub attempted: u32,
    pub accepted: u32,
    pub refused_again: u32,
}

/// Counters and gauges of the whole tree.
#[derive(Clone, Debug, Default)]
pub struct TreeStatus {
    pub router: RouterStatus,
    pub inflight_readings: u64,
}

/// The running actor tree.
pub struct ActorTree {
    supervisor: ActorRef<SupervisorMsg>,
    router: ActorRef<RouterMsg>,
    dead_letters: Bounded<DeadLetterMsg>,
    subscribers: Subscribers,
    inflight: Arc<Semaphore>,
    max_inflight: u64,
    retry_after: Duration,
    stats: Arc<NodeStats>,
    stores: TreeStores,
    clock: SharedClock,
    /// Device flush rounds before giving up on a device that keeps crashing.
    flush_rounds: u32,
}

impl ActorTree {
    pub async fn start(
        cfg: &Config,
        stores: TreeStores,
        clock: SharedClock,
        options: TreeOptions,
    ) -> Result<Self, TreeError> {
        let stats = Arc::new(NodeStats::default());
        // The supervisor spawns every child; each SpawnFn fills (or, on a
        // restart, re-points) the child's mailbox slot, which the router and
        // this handle read.
        let slots = Slots::default();

        let mut children: Vec<ChildSpec> = vec![
            restartable_child(
                "dead-letter-office",
                slots.dead_letters.clone(),
                cfg.dead_letters.mailbox_readings,
                DeadLetterOffice,
                DeadLetterArgs {
                    store: stores.dead_letters.clone(),
                    stats: stats.clone(),
                },
            ),
            restartable_child(
                "aggregator",
                slots.aggregator.clone(),
                cfg.aggregator.mailbox_readings,
                Aggregator,
                AggregatorArgs {
                    store: stores.timeseries.clone(),
                    cfg: cfg.aggregator.clone(),
                    clock: clock.clone(),
                    stats: stats.clone(),
                },
            ),
            restartable_child(
                "stream-etl",
                slots.stream_etl.clone(),
                cfg.stream_etl.mailbox_readings,
                StreamEtl,
                StreamEtlArgs {
                    store: stores.documents.clone(),
                    cfg: cfg.stream_etl.clone(),
                    clock: clock.clone(),
                    stats: stats.clone(),
                    window_lateness: cfg.aggregator.window_lateness,
                },
            ),
            restartable_child(
                "archiver",
                slots.archiver.clone(),
                cfg.archiver.mailbox_readings,
                Archiver,
                ArchiverArgs {
                    staging: stores.staging.clone(),
                    archive: stores.archive.clone(),
                    cfg: cfg.archiver.clone(),
                    clock: clock.clone(),
                    stats: stats.clone(),
                    source: cfg.node.id.clone(),
                },
            ),
        ];
        // The router comes last: it needs the others' mailboxes, which the
        // spawns above have filled by the time the supervisor calls this one.
        let router_slot: Arc<std::sync::Mutex<Option<ActorRef<RouterMsg>>>> = Default::default();
        {
            let slots = slots.clone();
            let router_slot = router_slot.clone();
            let rules = Rules {
                max_future_skew_ms: millis(cfg.device.max_future_skew),
                max_past_age_ms: millis(cfg.device.max_past_age),
            };
            let limits = Limits {
                reorder_window: cfg.device.reorder_window,
                reorder_max_hold_ms: millis(cfg.device.reorder_max_hold),
            };
            let supervision = cfg.supervision.clone();
            let idle = cfg.device.idle_passivate_after;
            let mailbox_batches = cfg.device.mailbox_batches as usize;
            let clock = clock.clone();
            let stats = stats.clone();
            let crash_hook = options.crash_hook.clone();
            let spawn: SpawnFn = Arc::new(move |parent| {
                let slots = slots.clone();
                let router_slot = router_slot.clone();
                let rules = rules.clone();
                let limits = limits.clone();
                let supervision = supervision.clone();
                let clock = clock.clone();
                let stats = stats.clone();
                let crash_hook = crash_hook.clone();
                async move {
                    let (subscribers, dead_letters) = slots.wired().ok_or_else(|| {
                        ractor::SpawnErr::StartupFailed("subscribers not started".into())
                    })?;
                    let ctx = Arc::new(DeviceContext {
                        rules,
                        limits,
                        clock,
                        subscribers,
                        dead_letters,
                        stats,
                        crash_hook,
                    });
                    let (router, _) = Actor::spawn_linked(
                        None,
                        Router,
                        RouterArgs {
                            ctx,
                            supervision,
                            idle_passivate_after: idle,
                            mailbox_batches,
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
                // The device table lives only in the router until the
                // write-ahead log can rebuild it: a router failure is fatal.
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
        let (subscribers, dead_letters) = slots.wired().ok_or(TreeError::Stopped)?;
        let max_inflight = cfg.ingest.max_inflight_readings;
        Ok(Self {
            supervisor,
            router,
            dead_letters,
            subscribers,
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
        })
    }

    /// Takes one batch: every reading is accepted, a duplicate, or a dead
    /// letter when this returns. All or nothing on overload.
    pub async fn ingest(
        &self,
        readings: Vec<RawReading>,
        source: &str,
    ) -> Result<AckCounts, IngestError> {
        let origin = Origin::Ingest {
            source: Arc::from(source),
        };
        let results = self.route(readings, origin).await?;
        let mut ack = AckCounts::default();
        for (_, r) in results {
            ack.accepted += r.accepted;
            ack.duplicates += r.duplicates;
            ack.dead_lettered += r.dead_lettered;
        }
        Ok(ack)
    }

    /// Splits readings by device and waits for every device's result, in
    /// the order the devices first appear in `readings`.
    async fn route(
        &self,
        readings: Vec<RawReading>,
        origin: Origin,
    ) -> Result<Vec<(Vec<usize>, GroupResult)>, IngestError> {
        if readings.is_empty() {
            return Ok(Vec::new());
        }
        let n = u32::try_from(readings.len()).unwrap_or(u32::MAX);
        let permit = match self.inflight.clone().try_acquire_many_owned(n) {
            Ok(p) => Arc::new(p),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                NodeStats::add(&self.stats.batches_refused_overload, 1);
                return Err(IngestError::Overloaded {
                    reason: "in-flight readings at max_inflight_readings",
                    retry_after: self.retry_after,
                });
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(IngestError::Stopped),
        };
        // Group by device, keeping each device's readings in arrival order.
        let mut index: HashMap<String, usize> = HashMap::new();
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
            waits.push((positions, rx));
        }
        drop(permit);
        let (atx, arx) = oneshot::channel();
        self.router
            .cast(RouterMsg::Route {
                groups: routed,
                admitted: atx,
            })
            .map_err(|_| IngestError::Stopped)?;
        if !arx.await.map_err(|_| IngestError::Stopped)? {
            NodeStats::add(&self.stats.batches_refused_overload, 1);
            return Err(IngestError::Overloaded {
                reason: "a device's mailbox is full",
                retry_after: self.retry_after,
            });
        }
        let mut out = Vec::with_capacity(waits.len());
        for (positions, rx) in waits {
            out.push((positions, rx.await.map_err(|_| IngestError::Stopped)?));
        }
        Ok(out)
    }

    /// Re-submits pending dead letters through the normal validation path.
    /// Each letter is replayed at most once successfully: it leaves the
    /// pending set when accepted.
    pub async fn replay(&self, filter: &DeadLetterFilter) -> Result<ReplaySummary, TreeError> {
        let filter = DeadLetterFilter {
            include_replayed: false,
            ..filter.clone()
        };
        let letters = self.stores.dead_letters.list(&filter).await?;
        // Replay oldest first so a device's readings go back in their order.
        let letters: Vec<_> = letters.into_iter().rev().collect();
        let ids: Vec<DeadLetterId> = letters.iter().map(|l| l.id).collect();
        let raws: Vec<RawReading> = letters.iter().map(|l| l.letter.reading.clone()).collect();
        let mut summary = ReplaySummary {
            attempted: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        let results = match self.route(raws, Origin::Replay).await {
            Ok(r) => r,
            Err(IngestError::Stopped) => return Err(TreeError::Stopped),
            Err(IngestError::Overloaded { .. }) => return Ok(ReplaySummary::default()),
        };
        let mut accepted_ids = Vec::new();
        for (positions, result) in results {
            for (pos, refusal) in positions.into_iter().zip(result.refusals) {
                let id = ids[pos];
                match refusal {
                    None => accepted_ids.push(id),
                    Some(r) => {
                        summary.refused_again += 1;
                        self.stores
                            .dead_letters
                            .mark_refused_again(id, r.reason, &r.detail)
                            .await?;
                    }
                }
            }
        }
        summary.accepted = u32::try_from(accepted_ids.len()).unwrap_or(u32::MAX);
        let now = self.clock.now_ms();
        self.stores
            .dead_letters
            .mark_replayed(&accepted_ids, now)
            .await?;
        Ok(summary)
    }

    /// Pushes everything held through to the sinks: device reorder buffers,
    /// subscribers' open windows and staged archive hours, dead letters.
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
        self.subscribers
            .flush()
            .await
            .map_err(|_| TreeError::Stopped)?;
        self.dead_letters
            .current()
            .call(DeadLetterMsg::Flush, None)
            .await
            .map_err(|_| TreeError::Stopped)?;
        Ok(())
    }

    pub async fn status(&self) -> TreeStatus {
        let router = match self.router.call(RouterMsg::Status, None).await {
            Ok(ractor::rpc::CallResult::Success(s)) => s,
            _ => RouterStatus::default(),
        };
        TreeStatus {
            router,
            inflight_readings: self
                .max_inflight
                .saturating_sub(self.inflight.available_permits() as u64),
        }
    }

    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    pub fn stores(&self) -> &TreeStores {
        &self.stores
    }

    /// Completes when the node supervisor has stopped: after a shutdown, or
    /// when a child failed beyond its restart budget (fatal for the node).
    pub async fn stopped(&self) {
        let _ = self.supervisor.get_cell().wait(None).await;
    }

    /// Stops taking readings, flushes everything to the sinks, stops the tree.
    pub async fn shutdown(&self) -> Result<(), TreeError> {
        self.inflight.close();
        let flushed = self.flush().await;
        let _ = self.supervisor.call(SupervisorMsg::Shutdown, None).await;
        let _ = self.supervisor.stop_and_wait(None, None).await;
        flushed
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Mailboxes of the singletons, filled as the supervisor starts them and
/// re-pointed when it restarts them.
#[derive(Clone, Default)]
struct Slots {
    dead_letters: Slot<DeadLetterMsg>,
    aggregator: Slot<SubscriberMsg>,
    stream_etl: Slot<SubscriberMsg>,
    archiver: Slot<SubscriberMsg>,
}

type Slot<M> = Arc<std::sync::Mutex<Option<Bounded<M>>>>;

impl Slots {
    fn wired(&self) -> Option<(Subscribers, Bounded<DeadLetterMsg>)> {
        let get = |s: &Slot<SubscriberMsg>| s.lock().ok().and_then(|g| g.clone());
        let subs = vec![
            get(&self.aggregator)?,
            get(&self.stream_etl)?,
            get(&self.archiver)?,
        ];
        let dl = self.dead_letters.lock().ok().and_then(|g| g.clone())?;
        Some((Subscribers::new(subs), dl))
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
