//! The per-device actor: validates, dedupes and reorders one device's
//! readings. Each step (a batch, a reorder timeout, a flush) is computed on
//! a copy of the state and written to the write-ahead log as one
//! [`StepRecord`]; only once the log has it does the actor keep the new
//! state and answer, so an acknowledged reading is in the log and a failed
//! log write changes nothing. Subscribers read released readings and dead
//! letters from the log. Activated by the router on first use and passivated
//! when idle; its whole state is a [`DeviceState`], which it reports to the
//! router after every step so a restart or a passivation loses nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use vatio_stores::{DeviceId, NewDeadLetter, RawReading, Reading};

use crate::clock::SharedClock;
use crate::journal::StepRecord;
use crate::logic::device::{self as seqlogic, DeviceState, Limits, Offer, Op};
use crate::logic::validate::{self, Refusal, Rules};
use crate::router::{ClusterMsg, RouterMsg};
use crate::stats::NodeStats;

/// How long a timer's release waits before trying a log that refused it.
const LOG_RETRY_MS: i64 = 100;

/// Fault injection for tests and simulations only: a device actor panics on
/// any reading for which the hook returns true. Production nodes run without one.
pub type CrashHook = Arc<dyn Fn(&RawReading) -> bool + Send + Sync>;

/// Everything device actors share.
pub struct DeviceContext {
    pub rules: Rules,
    pub limits: Limits,
    pub clock: SharedClock,
    pub log: vatio_wal::Log,
    pub stats: Arc<NodeStats>,
    pub crash_hook: Option<CrashHook>,
    /// This node's id: each logged step is noted under it in the state.
    pub node: Arc<str>,
}

/// How a batch entered the node.
#[derive(Clone, Debug)]
pub enum Origin {
    /// Through `Ingest`; the label names the sender for dead letters.
    Ingest { source: Arc<str> },
    /// Re-submitted from the dead-letter office: validated again but not
    /// sequenced (its seq was never accepted, so it cannot be a duplicate).
    Replay,
    /// No readings: the node became the device's owner and takes over the
    /// state another node held for it.
    Adopt(Arc<Adoption>),
}

/// How a new owner takes over a device's state.
#[derive(Clone, Debug)]
pub struct Adoption {
    /// The copy taken over.
    pub state: DeviceState,
    /// True: the copy replaces this node's, which a replica reported off
    /// the line ([`Op::Reset`]). False: it is taken if further on than
    /// this node's own ([`Op::Adopt`]).
    pub reset: bool,
    /// Readings of this node's dropped steps that the copy holds: the
    /// line counts them released and no sink has them, so the adoption
    /// step delivers them (see [`crate::logic::voided`]).
    pub deliver: Vec<Reading>,
}

impl Adoption {
    /// The ops of the adoption step.
    fn ops(&self) -> Vec<Op> {
        let take = if self.reset {
            Op::Reset(Box::new(self.state.clone()))
        } else {
            Op::Adopt(Box::new(self.state.clone()))
        };
        std::iter::once(take)
            .chain(self.deliver.iter().cloned().map(Op::Replayed))
            .collect()
    }

    /// This adoption, replacing `earlier` that was never logged: readings
    /// `earlier` was to deliver that this copy has passed are delivered
    /// here (the line still counts them released).
    fn replacing(&self, earlier: &Adoption) -> Adoption {
        let mut next = self.clone();
        for r in &earlier.deliver {
            if self.state.has_passed(r.seq) && !next.deliver.iter().any(|d| d.seq == r.seq) {
                next.deliver.push(r.clone());
            }
        }
        next.deliver.sort_by_key(|r| r.seq);
        next
    }
}

/// Where a device's adoptions of claims stand; kept by the router too,
/// so a restarted device actor carries on from it.
#[derive(Clone, Debug, Default)]
pub struct AdoptionStatus {
    /// A claim's adoption whose write to the log failed: it is logged
    /// before anything else.
    pub unlogged: Option<Arc<Adoption>>,
    /// Log position after the last logged adoption step (0: none).
    pub logged_end: u64,
}

/// What became of one device's part of a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupResult {
    pub accepted: u32,
    pub duplicates: u32,
    pub dead_lettered: u32,
    /// Replays only: per reading, `None` if accepted or the refusal.
    pub refusals: Vec<Option<Refusal>>,
    /// Log position after the device's last logged step once this group
    /// was handled: the group's readings (or, for duplicates, the earlier
    /// step that took them) are in the log before it. A replicated ack
    /// waits until the replica has everything before it.
    pub end: u64,
}

/// The write-ahead log did not take a step: nothing of it was applied, and
/// the client may send the batch again.
#[derive(Clone, Debug, thiserror::Error)]
#[error("write-ahead log: {0}")]
pub struct LogFailure(pub String);

/// Why a group was not handled; nothing of it was applied either way.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GroupFailure {
    #[error(transparent)]
    Log(#[from] LogFailure),
    /// Another node claimed the device before its actor got to the group.
    #[error("device {0} was taken over by another node")]
    Moved(DeviceId),
}

/// A group's result, or why it was not handled.
pub type GroupOutcome = Result<GroupResult, GroupFailure>;

/// Where a group's result goes; answered exactly once, by the device actor
/// or, for a poison batch, by the router.
#[derive(Debug)]
pub struct ReplySlot(Mutex<Option<oneshot::Sender<GroupOutcome>>>);

impl ReplySlot {
    pub fn new(tx: oneshot::Sender<GroupOutcome>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(Some(tx))))
    }

    pub fn send(&self, result: GroupOutcome) {
        let tx = match self.0.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(tx) = tx {
            // The caller may have gone (client disconnected); the work is done anyway.
            let _ = tx.send(result);
        }
    }
}

/// One device's share of an ingest (or replay) batch.
#[derive(Clone, Debug)]
pub struct DeviceBatch {
    /// Per-device batch number, assigned by the router.
    pub no: u64,
    pub readings: Arc<Vec<RawReading>>,
    pub origin: Origin,
    pub reply: Arc<ReplySlot>,
    /// The ingest call's share of the node's in-flight budget; returned when
    /// every group of the call is done.
    pub inflight: Option<Arc<OwnedSemaphorePermit>>,
}

pub enum DeviceMsg {
    Batch(DeviceBatch),
    /// A held reading may have timed out of the reorder window.
    Tick,
    /// Release everything pending (admin flush, shutdown), then reply.
    Flush(RpcReplyPort<()>),
    /// Another node claimed the device: report the final state to the
    /// router (after every group queued before this) and stop, so no timer
    /// releases anything here any more.
    Handover {
        claim: u64,
    },
}

pub struct DeviceActor;

pub struct DeviceArgs {
    pub device: DeviceId,
    pub state: DeviceState,
    pub ctx: Arc<DeviceContext>,
    pub router: ActorRef<RouterMsg>,
    /// Log position after the device's last logged step that carried
    /// readings or letters (or a position at or after it). Steps that only
    /// adopt a claimed device do not count: nothing waits for a replica to
    /// confirm them (the claimer of the device gets their state directly).
    pub last_end: u64,
    /// Where the device's adoptions of claims stand.
    pub adoption: AdoptionStatus,
}

pub struct DeviceActorState {
    device: DeviceId,
    state: DeviceState,
    ctx: Arc<DeviceContext>,
    router: ActorRef<RouterMsg>,
    tick_at_ms: Option<i64>,
    last_end: u64,
    adoption: AdoptionStatus,
    /// After a timer's release failed to reach the log: when to try again.
    log_retry_at_ms: Option<i64>,
}

impl Actor for DeviceActor {
    type Msg = DeviceMsg;
    type State = DeviceActorState;
    type Arguments = DeviceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DeviceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DeviceActorState {
            device: args.device,
            state: args.state,
            ctx: args.ctx,
            router: args.router,
            tick_at_ms: None,
            last_end: args.last_end,
            adoption: args.adoption,
            log_retry_at_ms: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A restarted device may hold readings from before the crash.
        st.schedule_tick(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeviceMsg::Batch(batch) => st.on_batch(batch).await?,
            DeviceMsg::Tick => {
                st.tick_at_ms = None;
                // A claim's adoption the log refused comes first: nothing
                // is released on the copy the claim set aside.
                if st.log_adoption().await.is_ok() {
                    let mut next = st.state.clone();
                    let mut ops = Vec::new();
                    seqlogic::release(&mut next, &st.ctx.limits, st.ctx.clock.now_ms(), &mut ops);
                    // A failed write leaves the readings held; a tick
                    // retries once the log has had a moment (not at once:
                    // a failing disk would have the actor spin).
                    st.log_retry_at_ms = match st.commit(next, ops, Vec::new()).await {
                        Ok(()) => None,
                        Err(_) => Some(st.ctx.clock.now_ms() + LOG_RETRY_MS),
                    };
                    // Either way: the adoption may have just been logged.
                    st.report_state();
                }
            }
            DeviceMsg::Flush(reply) => {
                if st.log_adoption().await.is_ok() {
                    let mut next = st.state.clone();
                    let mut ops = Vec::new();
                    seqlogic::flush(&mut next, &mut ops);
                    if st.commit(next, ops, Vec::new()).await.is_ok() {
                        st.report_state();
                    }
                }
                let _ = reply.send(());
            }
            DeviceMsg::Handover { claim } => {
                // Casts from one actor arrive in order, so the router has
                // every DeviceDone of this actor before this.
                let _ = st.router.cast(RouterMsg::Cluster(ClusterMsg::HandedOver {
                    claim,
                    device: st.device.clone(),
                    state: st.state.clone(),
                    last_end: st.last_end,
                }));
                myself.stop(Some("handed over".into()));
                return Ok(());
            }
        }
        st.schedule_tick(&myself);
        Ok(())
    }
}

impl DeviceActorState {
    async fn on_batch(&mut self, batch: DeviceBatch) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx.clone();
        let now_ms = ctx.clock.now_ms();
        if let Some(hook) = &ctx.crash_hook
            && let Some(raw) = batch.readings.iter().find(|r| hook(r))
        {
            panic!(
                "fault injection: crash hook matched {}/{}",
                raw.device_id, raw.seq
            );
        }
        if let Origin::Adopt(adopted) = &batch.origin {
            // A later claim's adoption replaces one still waiting.
            let next = match &self.adoption.unlogged {
                Some(earlier) => Arc::new(adopted.replacing(earlier)),
                None => adopted.clone(),
            };
            self.adoption.unlogged = Some(next);
        }
        let outcome = match self.log_adoption().await {
            Ok(()) => self.sequence(&batch, now_ms).await,
            Err(e) => Err(e.into()),
        };
        // Reported either way: the router takes the batch off its list, and
        // the state is the one the log explains.
        self.router
            .cast(RouterMsg::DeviceDone {
                device: self.device.clone(),
                no: batch.no,
                state: self.state.clone(),
                last_end: self.last_end,
                adoption: self.adoption.clone(),
            })
            .map_err(|_| ActorProcessingErr::from("router stopped"))?;
        batch.reply.send(outcome);
        Ok(())
    }

    /// Logs the adoption of a claim that is not in the log yet (its first
    /// write failed). Nothing else is logged for the device before it: a
    /// step sequenced on the copy the claim set aside could accept
    /// readings the cluster's line already delivered.
    async fn log_adoption(&mut self) -> Result<(), LogFailure> {
        let Some(adopted) = self.adoption.unlogged.clone() else {
            return Ok(());
        };
        let ops = adopted.ops();
        let mut next = self.state.clone();
        for op in &ops {
            next.apply(op);
        }
        // Logged even when it changes nothing here: the step keeps the
        // claim's epoch in this node's log and its replica's.
        if let Err(e) = self.commit(next, ops, Vec::new()).await {
            // A timer tries again, even if no group comes.
            self.log_retry_at_ms = Some(self.ctx.clock.now_ms() + LOG_RETRY_MS);
            return Err(e);
        }
        self.adoption.unlogged = None;
        Ok(())
    }

    /// Validates and sequences one group, and logs the step it makes.
    async fn sequence(&mut self, batch: &DeviceBatch, now_ms: i64) -> GroupOutcome {
        let ctx = self.ctx.clone();
        let mut result = GroupResult::default();
        let mut letters = Vec::new();
        let mut ops = Vec::new();
        let mut next = self.state.clone();
        match &batch.origin {
            Origin::Ingest { source } => {
                for raw in batch.readings.iter() {
                    match seqlogic::offer(
                        &mut next,
                        &self.device,
                        raw,
                        &ctx.rules,
                        &ctx.limits,
                        now_ms,
                        &mut ops,
                    ) {
                        Offer::Accepted => result.accepted += 1,
                        Offer::Duplicate => result.duplicates += 1,
                        Offer::Refused(refusal) => {
                            result.dead_lettered += 1;
                            letters.push(NewDeadLetter {
                                reading: raw.clone(),
                                reason: refusal.reason,
                                detail: refusal.detail,
                                source: source.to_string(),
                                received_ms: now_ms,
                                key: None,
                            });
                        }
                    }
                }
                seqlogic::release(&mut next, &ctx.limits, now_ms, &mut ops);
            }
            Origin::Replay => {
                for raw in batch.readings.iter() {
                    match self.revalidate(raw, now_ms) {
                        Ok(reading) => {
                            ops.push(Op::Replayed(reading));
                            result.accepted += 1;
                            result.refusals.push(None);
                        }
                        Err(refusal) => result.refusals.push(Some(refusal)),
                    }
                }
            }
            // Logged already (`log_adoption`).
            Origin::Adopt(_) => {}
        }
        let letter_reasons: Vec<_> = letters.iter().map(|l| l.reason).collect();
        self.commit(next, ops, letters).await?;
        // Duplicates of readings the adopted state holds were taken by
        // the line the claim adopted (or, held by this node's copy, are in
        // the adoption step): they are settled once the adoption step is.
        // Not by this node's last own step before it, which the claim may
        // have set aside as dropped.
        result.end = self.last_end.max(self.adoption.logged_end);
        NodeStats::add(&ctx.stats.readings_accepted, u64::from(result.accepted));
        NodeStats::add(&ctx.stats.readings_duplicate, u64::from(result.duplicates));
        for reason in letter_reasons {
            ctx.stats.dead_lettered(reason);
        }
        Ok(result)
    }

    /// Writes one step to the log and, once it is there, makes `next` the
    /// device's state. A step that changed nothing is not written.
    async fn commit(
        &mut self,
        mut next: DeviceState,
        ops: Vec<Op>,
        letters: Vec<NewDeadLetter>,
    ) -> Result<(), LogFailure> {
        let step = StepRecord {
            device: self.device.clone(),
            term: next.epoch().term_for(&self.ctx.node),
            ops,
            letters,
        };
        if !step.is_empty() {
            let bytes = step
                .encode()
                .map_err(|e| LogFailure(format!("encoding a step of {}: {e}", self.device)))?;
            match self.ctx.log.append(bytes).await {
                Ok(appended) => {
                    if step.only_adopts() {
                        self.adoption.logged_end = appended.end.0;
                    } else {
                        self.last_end = appended.end.0;
                    }
                    next.took_step(&self.ctx.node, appended.end.0, step.term);
                }
                Err(e) => {
                    NodeStats::add(&self.ctx.stats.log_append_failures, 1);
                    tracing::warn!(device = %self.device, error = %e, "write-ahead log refused a step");
                    return Err(LogFailure(e.to_string()));
                }
            }
        }
        self.state = next;
        Ok(())
    }

    /// A replayed reading goes through validation again with today's rules.
    fn revalidate(&self, raw: &RawReading, now_ms: i64) -> Result<Reading, Refusal> {
        let kind = validate::kind_from_wire(raw.kind)?;
        if let Some(known) = self.state.kind()
            && known != kind
        {
            return Err(Refusal {
                reason: vatio_stores::DeadLetterReason::KindMismatch,
                detail: format!("device {} is a {known}, reading says {kind}", self.device),
            });
        }
        validate::validate(&self.device, kind, raw, &self.ctx.rules, now_ms)
    }

    fn report_state(&self) {
        // The router is the device's supervisor; if it is gone the node is stopping.
        let _ = self.router.cast(RouterMsg::DeviceState {
            device: self.device.clone(),
            state: self.state.clone(),
            last_end: self.last_end,
            adoption: self.adoption.clone(),
        });
    }

    fn schedule_tick(&mut self, myself: &ActorRef<DeviceMsg>) {
        let due = seqlogic::next_deadline(&self.state, &self.ctx.limits);
        // An adoption still to be logged needs a tick even with nothing due.
        let retry = self.adoption.unlogged.as_ref().and(self.log_retry_at_ms);
        let Some(deadline) = due.or(retry) else {
            return;
        };
        let deadline = deadline.max(self.log_retry_at_ms.unwrap_or(i64::MIN));
        if self.tick_at_ms.is_some_and(|t| t <= deadline) {
            return;
        }
        let now = self.ctx.clock.now_ms();
        let wait = u64::try_from(deadline.saturating_sub(now))
            .unwrap_or(0)
            .max(1);
        self.tick_at_ms = Some(deadline);
        myself.send_after(Duration::from_millis(wait), || DeviceMsg::Tick);
    }
}
