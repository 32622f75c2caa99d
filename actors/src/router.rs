//! The router: owns the node's device table and supervises the device actors.
//!
//! Every device has an entry holding its compact [`DeviceState`]; only busy
//! devices have a live actor. The router splits nothing itself: the ingest
//! path hands it one group per device, it checks the per-device mailbox bound
//! for the whole batch (all or nothing), activates actors as needed and keeps
//! each group until the actor reports it done. When a device actor crashes,
//! the router restarts it with backoff from its last reported state and
//! re-sends the unfinished groups; a group that crashed the actor
//! `poison_attempts` times goes to dead letters as `poison`.
//!
//! In a cluster the router also tracks which devices this node owns
//! (see [`cluster`]): it routes readings only for devices it has claimed,
//! hands devices over to the node that claims them, and folds the steps it
//! keeps as other owners' replica.

mod cluster;
mod confirmed;

pub use cluster::{ClusterMsg, HeldState, Presence, ReplicaVerdict, Role};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;
use vatio_config::SupervisionConfig;
use vatio_stores::{DeadLetterReason, DeviceId, NewDeadLetter};

use crate::device::{
    AdoptionStatus, DeviceActor, DeviceArgs, DeviceBatch, DeviceContext, DeviceMsg, GroupFailure,
    GroupResult, LogFailure, Origin,
};
use crate::journal::StepRecord;
use crate::logic::device::DeviceState;
use crate::logic::voided::VoidedStep;
use crate::stats::NodeStats;
use crate::supervision::{RestartBudget, RestartDecision};
use crate::void::VoidSet;

/// Counts the router can tell about its table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStatus {
    pub devices_known: u64,
    pub devices_active: u64,
    /// Devices this node sequences (on a node of its own: every device).
    pub devices_owned: u64,
    /// Estimated bytes of the device table (keys, entries, states), not
    /// counting live actors.
    pub table_bytes: u64,
}

/// Whether the router took a batch (all or nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// A device's mailbox bound would be exceeded; nothing was sent.
    MailboxFull,
    /// In a cluster: these devices are not (or no longer) this node's to
    /// sequence; nothing was sent. The node claims them first.
    NotOwned(Vec<DeviceId>),
}

pub enum RouterMsg {
    /// One batch, split by device.
    Route {
        groups: Vec<(DeviceId, DeviceBatch)>,
        admitted: oneshot::Sender<Admission>,
    },
    /// A device actor finished group `no`; `state` is its state after it.
    DeviceDone {
        device: DeviceId,
        no: u64,
        state: DeviceState,
        last_end: u64,
        adoption: AdoptionStatus,
    },
    /// A device actor's state changed outside a group (timer release, flush).
    DeviceState {
        device: DeviceId,
        state: DeviceState,
        last_end: u64,
        adoption: AdoptionStatus,
    },
    /// Cluster messages: claims, hand-overs, replica steps; see [`cluster`].
    Cluster(cluster::ClusterMsg),
    /// Restart a crashed device actor (sent after the backoff).
    Respawn(DeviceId),
    /// Passivate devices idle for longer than the configured time.
    IdleScan,
    /// Release every device's held readings; replies, once all are
    /// published, with how many devices could not be flushed (they crashed
    /// meanwhile; the caller asks again).
    FlushDevices(RpcReplyPort<usize>),
    Status(RpcReplyPort<RouterStatus>),
}

pub struct RouterArgs {
    pub ctx: Arc<DeviceContext>,
    pub supervision: SupervisionConfig,
    pub idle_passivate_after: Duration,
    pub mailbox_batches: usize,
    /// Devices' state rebuilt from the log at start-up.
    pub initial: BTreeMap<DeviceId, DeviceState>,
    /// Per device, this node's dropped steps whose readings its next
    /// adoption may have to deliver (see [`crate::logic::voided`]).
    pub voided: BTreeMap<DeviceId, Vec<VoidedStep>>,
    /// In a cluster, per device with own steps its replicas may not have
    /// settled at start-up, its state before them; every other device's
    /// state is settled as rebuilt (see [`confirmed`]).
    pub confirmed_copies: BTreeMap<DeviceId, DeviceState>,
    /// The log's head at start-up: every rebuilt device's steps are before it.
    pub initial_end: u64,
    /// In a cluster, a device is sequenced only once claimed; on its own, a
    /// node owns every device.
    pub clustered: bool,
    /// In a cluster: the log position up to which this node's own steps
    /// are settled with their replicas (see [`crate::replication`]).
    pub confirmed: Option<tokio::sync::watch::Receiver<u64>>,
    /// In a cluster: this node's voided steps (see [`crate::void`]).
    pub void: Option<Arc<VoidSet>>,
}

struct InFlight {
    batch: DeviceBatch,
    crashes: u32,
}

enum Activity {
    /// Passivated: only the compact state remains.
    Passive,
    /// A live actor is handling the device.
    Live(ActorRef<DeviceMsg>),
    /// The actor crashed; a restart is scheduled.
    Restarting,
}

struct Entry {
    state: DeviceState,
    activity: Activity,
    inflight: VecDeque<InFlight>,
    next_no: u64,
    last_active_ms: i64,
    restarts: RestartBudget,
    /// Log position after the device's last logged step (own or replica).
    last_end: u64,
    role: cluster::Role,
    /// Replica steps checked in but not yet folded.
    replicating: u32,
    /// Claims waiting for this device's hand-over.
    claim: Vec<u64>,
    /// A replica reported this node's copy of the state off the cluster's
    /// line (it includes dropped steps): a claim takes the peers' copy.
    diverged: bool,
    /// A task waits for replicas to confirm this device's own steps.
    confirming: bool,
    /// This node's steps of the device dropped as orphaned since its last
    /// adoption: the next adoption delivers the readings of those the
    /// adopted copy holds (see [`crate::logic::voided`]).
    voided: Vec<VoidedStep>,
    /// Dropped steps whose readings an adoption took in, and the log end
    /// of the adoption logged before it: once the device actor reports a
    /// later one logged, the void set forgets their readings.
    settling: Option<(u64, Vec<u64>)>,
    /// In a cluster: the state as of the device's last own step replicas
    /// confirmed, for a claim after a replica dropped later ones.
    confirmed_copy: confirmed::ConfirmedCopy,
    /// The device actor's adoptions, for its next start.
    adoption: AdoptionStatus,
}

impl Entry {
    fn new(
        state: DeviceState,
        now_ms: i64,
        last_end: u64,
        role: cluster::Role,
        supervision: &SupervisionConfig,
    ) -> Self {
        Self {
            state,
            activity: Activity::Passive,
            inflight: VecDeque::new(),
            next_no: 0,
            last_active_ms: now_ms,
            restarts: RestartBudget::new(supervision),
            last_end,
            role,
            replicating: 0,
            claim: Vec::new(),
            diverged: false,
            confirming: false,
            voided: Vec::new(),
            settling: None,
            confirmed_copy: confirmed::ConfirmedCopy::default(),
            adoption: AdoptionStatus::default(),
        }
    }

    /// Stops the device actor if nothing is left for it: no group in flight
    /// (only the router sends groups, so none can reach it after the stop)
    /// and no claim waiting for its hand-over. Otherwise it stops later,
    /// when its last group is done or it has handed over.
    fn stop_actor_if_idle(&mut self, reason: &str) -> bool {
        if !self.inflight.is_empty() || !self.claim.is_empty() {
            return false;
        }
        let Activity::Live(actor) = &self.activity else {
            return false;
        };
        actor.stop(Some(reason.to_owned()));
        self.activity = Activity::Passive;
        true
    }
}

pub struct RouterState {
    ctx: Arc<DeviceContext>,
    supervision: SupervisionConfig,
    idle_ms: i64,
    mailbox_batches: usize,
    devices: BTreeMap<DeviceId, Entry>,
    by_actor: BTreeMap<ActorId, DeviceId>,
    /// Role of a device the router has not seen: `Owner` on a node of its own.
    new_role: cluster::Role,
    claims: cluster::Claims,
    confirmed: Option<tokio::sync::watch::Receiver<u64>>,
    void: Option<Arc<VoidSet>>,
    /// The log's head at start-up: steps before it are from before.
    initial_end: u64,
    /// What this node knows of another under the latest view (nothing
    /// until the first view arrives): a step is referred only to a member.
    member: Box<dyn Fn(&str) -> cluster::Presence + Send>,
    myself: ActorRef<RouterMsg>,
}

pub struct Router;

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RouterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let idle_ms = i64::try_from(args.idle_passivate_after.as_millis()).unwrap_or(i64::MAX);
        let scan = (args.idle_passivate_after / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(30));
        myself.send_interval(scan, || RouterMsg::IdleScan);
        let now = args.ctx.clock.now_ms();
        let new_role = cluster::Role::initial(args.clustered);
        let mut voided = args.voided;
        let mut confirmed_copies = args.confirmed_copies;
        let clustered = args.clustered;
        let mut devices: BTreeMap<DeviceId, Entry> = args
            .initial
            .into_iter()
            .map(|(device, state)| {
                let mut entry = Entry::new(
                    state,
                    now,
                    args.initial_end,
                    new_role.clone(),
                    &args.supervision,
                );
                entry.voided = voided.remove(&device).unwrap_or_default();
                if clustered {
                    entry.confirmed_copy = match confirmed_copies.remove(&device) {
                        Some(copy) => confirmed::ConfirmedCopy::known(copy),
                        None => confirmed::ConfirmedCopy::settled_at_start(),
                    };
                }
                (device, entry)
            })
            .collect();
        // A device whose only steps here were dropped has no state yet.
        for (device, steps) in voided {
            let mut entry = Entry::new(
                DeviceState::new(),
                now,
                args.initial_end,
                new_role.clone(),
                &args.supervision,
            );
            entry.voided = steps;
            devices.insert(device, entry);
        }
        Ok(RouterState {
            ctx: args.ctx,
            supervision: args.supervision,
            idle_ms,
            mailbox_batches: args.mailbox_batches.max(1),
            devices,
            by_actor: BTreeMap::new(),
            new_role,
            claims: cluster::Claims::default(),
            confirmed: args.confirmed,
            void: args.void,
            initial_end: args.initial_end,
            member: Box::new(|_| cluster::Presence::Unknown),
            myself: myself.clone(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Route { groups, admitted } => st.route(&myself, groups, admitted).await?,
            RouterMsg::DeviceDone {
                device,
                no,
                state,
                last_end,
                adoption,
            } => st.device_done(device, no, state, last_end, adoption),
            RouterMsg::DeviceState {
                device,
                state,
                last_end,
                adoption,
            } => {
                let end = last_end.max(adoption.logged_end);
                let mut before = None;
                if let Some(e) = st.devices.get_mut(&device) {
                    before = Some(std::mem::replace(&mut e.state, state));
                    e.adoption = adoption;
                    e.last_end = e.last_end.max(last_end);
                    e.last_active_ms = st.ctx.clock.now_ms();
                }
                if let Some(before) = before {
                    st.note_own_step(&device, end, &before);
                }
                st.settle_voided(&device);
            }
            RouterMsg::Cluster(msg) => st.on_cluster(&myself, msg).await?,
            RouterMsg::Respawn(device) => st.respawn(&myself, device).await?,
            RouterMsg::IdleScan => st.idle_scan(),
            RouterMsg::FlushDevices(reply) => {
                // A device waiting out its restart backoff may hold accepted
                // readings: bring it back now rather than skip it.
                let restarting: Vec<DeviceId> = st
                    .devices
                    .iter()
                    .filter(|(_, e)| matches!(e.activity, Activity::Restarting))
                    .map(|(d, _)| d.clone())
                    .collect();
                for device in restarting {
                    if let Some(e) = st.devices.get_mut(&device) {
                        e.activity = Activity::Passive;
                    }
                    st.activate(&myself, device).await?;
                }
                let live: Vec<ActorRef<DeviceMsg>> = st
                    .devices
                    .values()
                    .filter_map(|e| match &e.activity {
                        // Only the owner takes steps: a flush elsewhere would
                        // be a step off the device's line.
                        Activity::Live(a)
                            if e.role == cluster::Role::Owner
                                && (!e.state.is_idle() || !e.inflight.is_empty()) =>
                        {
                            Some(a.clone())
                        }
                        _ => None,
                    })
                    .collect();
                // Waiting for the devices happens off the router, which must
                // keep taking their DeviceDone reports meanwhile.
                tokio::spawn(async move {
                    let mut failed = 0;
                    for actor in live {
                        match actor.call(DeviceMsg::Flush, None).await {
                            Ok(ractor::rpc::CallResult::Success(())) => {}
                            _ => failed += 1,
                        }
                    }
                    let _ = reply.send(failed);
                });
            }
            RouterMsg::Status(reply) => {
                let active = st
                    .devices
                    .values()
                    .filter(|e| !matches!(e.activity, Activity::Passive))
                    .count();
                let owned = st
                    .devices
                    .values()
                    .filter(|e| e.role == Role::Owner)
                    .count();
                let _ = reply.send(RouterStatus {
                    devices_known: st.devices.len() as u64,
                    devices_active: active as u64,
                    devices_owned: owned as u64,
                    table_bytes: st.table_bytes() as u64,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                // A clean stop is a passivation the router asked for.
                st.by_actor.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(device) = st.by_actor.remove(&cell.get_id()) {
                    st.device_failed(&myself, device, err.to_string()).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl RouterState {
    /// Estimated size of the device table: each slot holds the key and the
    /// entry inline (B-tree nodes are about two-thirds full), plus the id's
    /// shared string and whatever the state keeps on the heap.
    fn table_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(DeviceId, Entry)>();
        let slots = |len: usize| len + len / 2;
        let heap: usize = self
            .devices
            .iter()
            .map(|(id, e)| {
                // Arc<str>: two counters and the bytes.
                2 * std::mem::size_of::<usize>()
                    + id.as_str().len()
                    + e.state
                        .approx_bytes()
                        .saturating_sub(std::mem::size_of::<DeviceState>())
                    + e.inflight.capacity() * std::mem::size_of::<InFlight>()
            })
            .sum();
        slots(self.devices.len()) * slot
            + slots(self.by_actor.len()) * std::mem::size_of::<(ActorId, DeviceId)>()
            + heap
    }

    async fn route(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        groups: Vec<(DeviceId, DeviceBatch)>,
        admitted: oneshot::Sender<Admission>,
    ) -> Result<(), ActorProcessingErr> {
        let over_bound = groups.iter().any(|(device, _)| {
            self.devices
                .get(device)
                .is_some_and(|e| e.inflight.len() >= self.mailbox_batches)
        });
        if over_bound {
            let _ = admitted.send(Admission::MailboxFull);
            return Ok(());
        }
        let not_owned = self.not_owned(&groups);
        if !not_owned.is_empty() {
            let _ = admitted.send(Admission::NotOwned(not_owned));
            return Ok(());
        }
        let _ = admitted.send(Admission::Admitted);
        for (device, batch) in groups {
            self.enqueue(myself, device, batch).await?;
        }
        Ok(())
    }

    /// Queues one group for its device, starting the actor if needed.
    async fn enqueue(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        device: DeviceId,
        mut batch: DeviceBatch,
    ) -> Result<(), ActorProcessingErr> {
        let now = self.ctx.clock.now_ms();
        {
            let supervision = &self.supervision;
            let new_role = &self.new_role;
            let entry = self.devices.entry(device.clone()).or_insert_with(|| {
                Entry::new(DeviceState::new(), now, 0, new_role.clone(), supervision)
            });
            entry.next_no += 1;
            batch.no = entry.next_no;
            entry.last_active_ms = now;
            entry.inflight.push_back(InFlight {
                batch: batch.clone(),
                crashes: 0,
            });
            match &entry.activity {
                Activity::Live(actor) => {
                    if actor.cast(DeviceMsg::Batch(batch)).is_err() {
                        // Stopped under us; its failure event will resend the queue.
                        tracing::debug!(%device, "device actor gone while routing");
                    }
                }
                Activity::Restarting => {}
                Activity::Passive => self.activate(myself, device).await?,
            }
        }
        Ok(())
    }

    /// Starts a device's actor from its stored state and sends it every
    /// unfinished group.
    async fn activate(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        device: DeviceId,
    ) -> Result<(), ActorProcessingErr> {
        let Some(entry) = self.devices.get_mut(&device) else {
            return Ok(());
        };
        let (actor, _) = Actor::spawn_linked(
            None,
            DeviceActor,
            DeviceArgs {
                device: device.clone(),
                state: entry.state.clone(),
                ctx: self.ctx.clone(),
                router: myself.clone(),
                last_end: entry.last_end,
                adoption: entry.adoption.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        for f in &entry.inflight {
            let _ = actor.cast(DeviceMsg::Batch(f.batch.clone()));
        }
        self.by_actor.insert(actor.get_id(), device);
        entry.activity = Activity::Live(actor);
        NodeStats::add(&self.ctx.stats.devices_activated, 1);
        Ok(())
    }

    fn device_done(
        &mut self,
        device: DeviceId,
        no: u64,
        state: DeviceState,
        last_end: u64,
        adoption: AdoptionStatus,
    ) {
        let now = self.ctx.clock.now_ms();
        let end = last_end.max(adoption.logged_end);
        let mut before = None;
        if let Some(e) = self.devices.get_mut(&device) {
            before = Some(std::mem::replace(&mut e.state, state));
            e.adoption = adoption;
            e.last_end = e.last_end.max(last_end);
            e.last_active_ms = now;
            if e.inflight.front().is_some_and(|f| f.batch.no == no) {
                e.inflight.pop_front();
            }
            e.restarts.on_success();
            // A device placed elsewhere while this batch ran stops now, so
            // the steps of its next owner are taken without waiting for
            // the idle scan.
            if e.role != Role::Owner {
                e.stop_actor_if_idle("placed elsewhere");
            }
        }
        if let Some(before) = before {
            self.note_own_step(&device, end, &before);
        }
        self.settle_voided(&device);
    }

    /// In a cluster, keeps the state after the device's own step ending
    /// at `end` (as its actor reported it; `before` is the state the router
    /// held before the report) until replicas confirm it (see
    /// [`confirmed`]). Steps from before this node started are not known
    /// one by one: the state rebuilt at start-up includes them all.
    fn note_own_step(&mut self, device: &DeviceId, end: u64, before: &DeviceState) {
        let Some(deliverable) = self.confirmed.as_ref().map(|c| *c.borrow()) else {
            return;
        };
        let void = self.void.as_deref();
        if let Some(e) = self.devices.get_mut(device) {
            if end > self.initial_end {
                e.confirmed_copy.logged(end, before, &e.state);
            }
            e.confirmed_copy.settle(deliverable, void);
        }
    }

    /// Once the adoption that took in dropped steps' readings is logged,
    /// the void set need not keep them for a later one.
    fn settle_voided(&mut self, device: &DeviceId) {
        let Some(e) = self.devices.get_mut(device) else {
            return;
        };
        // Logged, and not an earlier adoption's report: none is on its way.
        let logged = e.adoption.unlogged.is_none()
            && !e
                .inflight
                .iter()
                .any(|f| matches!(f.batch.origin, Origin::Adopt(_)));
        let Some((before, ends)) = e
            .settling
            .take_if(|(before, _)| logged && e.adoption.logged_end > *before)
        else {
            return;
        };
        if let Some(void) = &self.void
            && let Err(err) = void.settle(&ends)
        {
            // Kept for the next report; at worst the next start settles them.
            tracing::warn!(%device, error = %err, "could not forget dropped steps' readings");
            e.settling = Some((before, ends));
        }
    }

    async fn device_failed(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        device: DeviceId,
        error: String,
    ) -> Result<(), ActorProcessingErr> {
        NodeStats::add(&self.ctx.stats.actor_restarts, 1);
        let now = self.ctx.clock.now_ms();
        let poison_attempts = self.supervision.poison_attempts;
        let Some(entry) = self.devices.get_mut(&device) else {
            return Ok(());
        };
        tracing::warn!(%device, %error, "device actor failed");
        if !entry.claim.is_empty() {
            // Claimed by another node: no restart here; the claim gets the
            // last reported state and the unfinished groups are refused.
            entry.activity = Activity::Passive;
            self.refuse_unfinished(&device);
            self.answer_claims(&device);
            return Ok(());
        }
        entry.activity = Activity::Restarting;
        // Groups are handled in order, so the first unfinished one is the
        // group the actor was working on when it crashed.
        let mut poison = None;
        if let Some(front) = entry.inflight.front_mut() {
            front.crashes += 1;
            if front.crashes >= poison_attempts {
                poison = entry.inflight.pop_front();
            }
        }
        let decision = entry.restarts.on_failure(now);
        let delay = match decision {
            RestartDecision::RestartAfter(d) => d,
            // Out of budget for this device: keep it down for the longest
            // backoff; its queued groups wait (bounded by the mailbox bound).
            RestartDecision::GiveUp => self.supervision.backoff_max,
        };
        let respawn = device.clone();
        myself.send_after(delay, move || RouterMsg::Respawn(respawn));
        if let Some(poison) = poison {
            self.dead_letter_poison(device, poison.batch, &error, now);
        }
        Ok(())
    }

    /// Sends a batch that keeps crashing its device actor to dead letters,
    /// through the log like every other refusal.
    fn dead_letter_poison(&self, device: DeviceId, batch: DeviceBatch, error: &str, now_ms: i64) {
        let source = match &batch.origin {
            Origin::Ingest { source } => source.to_string(),
            Origin::Replay => "replay".to_string(),
            Origin::Adopt(_) => "hand-over".to_string(),
        };
        let detail = format!(
            "crashed the device actor {} times: {error}",
            self.supervision.poison_attempts
        );
        let letters: Vec<NewDeadLetter> = batch
            .readings
            .iter()
            .map(|raw| NewDeadLetter {
                reading: raw.clone(),
                reason: DeadLetterReason::Poison,
                detail: detail.clone(),
                source: source.clone(),
                received_ms: now_ms,
                key: None,
            })
            .collect();
        let n = u32::try_from(letters.len()).unwrap_or(u32::MAX);
        let refusals = match batch.origin {
            Origin::Replay => vec![
                Some(crate::logic::validate::Refusal {
                    reason: DeadLetterReason::Poison,
                    detail,
                });
                letters.len()
            ],
            Origin::Ingest { .. } | Origin::Adopt(_) => Vec::new(),
        };
        // Logged as the device's owner would log a step of its own.
        let term = self
            .devices
            .get(&device)
            .map_or(0, |e| e.state.epoch().term_for(&self.ctx.node));
        let step = StepRecord {
            device,
            term,
            ops: Vec::new(),
            letters,
        };
        let log = self.ctx.log.clone();
        let stats = self.ctx.stats.clone();
        // Logged off the router's loop: the router must keep routing while
        // the log syncs. The client's ack waits for it.
        tokio::spawn(async move {
            let logged = match step.encode() {
                Ok(bytes) => log
                    .append(bytes)
                    .await
                    .map_err(|e| LogFailure(e.to_string())),
                Err(e) => Err(LogFailure(e.to_string())),
            };
            let outcome = logged.map(|appended| {
                for _ in 0..n {
                    stats.dead_lettered(DeadLetterReason::Poison);
                }
                GroupResult {
                    accepted: 0,
                    duplicates: 0,
                    dead_lettered: n,
                    refusals,
                    end: appended.end.0,
                }
            });
            batch.reply.send(outcome.map_err(GroupFailure::from));
        });
    }

    async fn respawn(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        device: DeviceId,
    ) -> Result<(), ActorProcessingErr> {
        let restart = self
            .devices
            .get(&device)
            .is_some_and(|e| matches!(e.activity, Activity::Restarting));
        if !restart {
            return Ok(());
        }
        if let Some(e) = self.devices.get_mut(&device) {
            e.activity = Activity::Passive;
        }
        self.activate(myself, device).await
    }

    fn idle_scan(&mut self) {
        let now = self.ctx.clock.now_ms();
        let idle_ms = self.idle_ms;
        let mut passivated = 0u64;
        for e in self.devices.values_mut() {
            // A device this node no longer sequences stops at once.
            let placed_elsewhere = e.role != Role::Owner;
            if (placed_elsewhere
                || (e.state.is_idle() && now.saturating_sub(e.last_active_ms) >= idle_ms))
                && e.stop_actor_if_idle("passivated")
            {
                passivated += 1;
            }
        }
        NodeStats::add(&self.ctx.stats.devices_passivated, passivated);
    }
}
