//! The router's part in a cluster: which devices this node sequences, and
//! how a device moves between nodes without losing its dedupe state.
//!
//! - A node sequences a device only as its [`Role::Owner`]. It becomes owner
//!   by claiming the device from every live peer (the node layer does the
//!   calls) and adopting the state of the latest line any of them held
//!   (the most advanced on it; see `DeviceState::rank`), at an
//!   ownership [`Epoch`] above every one they knew.
//! - A claimed node marks the device [`Role::ClaimedBy`] the claimer, lets
//!   its device actor finish every group it already took, then raises the
//!   device's epoch to the claimer's next one (logged as a fence), answers
//!   with the final state and stops the actor. From then on it refuses
//!   readings for the device.
//! - Every step carries its owner's epoch. A step from an epoch below the
//!   latest one a node knows comes from an owner the device has since been
//!   taken from: only that later epoch's claimer can tell whether its line
//!   holds the step, so the step is referred to it (see [`ReplicaVerdict`]).
//! - Replica steps are checked in (`ReplicaBegin`), logged by the caller,
//!   then folded (`ReplicaApply`); a claim waits for checked-in steps, so
//!   its answer includes every step this node confirmed to an owner.
//!
//! The whole protocol, with a table of verdicts, is in `docs/cluster.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use vatio_stores::DeviceId;

use super::{Activity, Entry, RouterMsg, RouterState};
use crate::device::{Adoption, DeviceBatch, DeviceMsg, GroupFailure, Origin, ReplySlot};
use crate::journal::{FenceRecord, ReplicaStep};
use crate::logic::device::DeviceState;
use crate::logic::epoch::Epoch;
use crate::logic::voided::{self, VoidedStep};
use crate::stats::NodeStats;

/// What this node may do with a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// This node sequences the device.
    Owner,
    /// Not claimed by this node: any state it holds is a replica's or a
    /// former owner's; steps are judged by their epoch.
    Unclaimed,
    /// Another node claimed the device from this one: steps of earlier
    /// epochs are referred to it.
    ClaimedBy(Arc<str>),
    /// This node is claiming the device (attempt number given); it becomes
    /// owner only if no other node's claim got in meanwhile.
    Claiming(u64),
}

impl Role {
    /// A device the router has not seen yet.
    pub fn initial(clustered: bool) -> Self {
        if clustered {
            Self::Unclaimed
        } else {
            Self::Owner
        }
    }
}

/// A device's state as one node holds it (None: it holds nothing), with
/// the term of the claim's epoch there: a claimed node answers with the
/// term it fenced the device at, and the claimer adopts at a term no lower
/// than any answer's.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldState {
    pub device: DeviceId,
    pub state: Option<DeviceState>,
    pub term: u64,
}

pub enum ClusterMsg {
    /// Another node takes these devices over; answered with the state held
    /// here for each, once no step for them is in progress here.
    Claim {
        by: Arc<str>,
        /// Where the claimer's log ends (None: not told).
        by_head: Option<u64>,
        devices: Vec<DeviceId>,
        reply: oneshot::Sender<Vec<HeldState>>,
    },
    /// A device actor finished its groups for claim `claim` and stopped.
    HandedOver {
        claim: u64,
        device: DeviceId,
        state: DeviceState,
        last_end: u64,
    },
    /// This node starts claiming these devices (those it does not own);
    /// answered with the attempt number.
    BeginClaim {
        devices: Vec<DeviceId>,
        reply: oneshot::Sender<u64>,
    },
    /// A claim attempt failed: its devices are unclaimed again.
    AbandonClaim {
        attempt: u64,
        devices: Vec<DeviceId>,
    },
    /// This node is now the devices' owner; `states` are the best ranked
    /// states its peers held, and the highest term any peer fenced each
    /// device at (the adoption is logged through the device actor).
    /// Answered with the devices another node's claim took meanwhile (this
    /// node does not own those).
    Adopt {
        states: Vec<HeldState>,
        reply: oneshot::Sender<Vec<DeviceId>>,
    },
    /// May these steps (device, end in the owner's log) from owner `from`
    /// be kept here? One verdict per step; each `Take` must be followed by
    /// an apply or abort.
    ReplicaBegin {
        from: Arc<str>,
        /// Device, end in the owner's log, and the term it logged it at.
        steps: Vec<(DeviceId, u64, u64)>,
        reply: oneshot::Sender<Vec<ReplicaVerdict>>,
    },
    /// Checked-in replica steps are in the log (record end given): fold them.
    ReplicaApply {
        steps: Vec<ReplicaStep>,
        reply: oneshot::Sender<()>,
    },
    /// Checked-in replica steps could not be logged.
    ReplicaAbort { devices: Vec<DeviceId> },
    /// The current states of these devices, where this node owns them
    /// (seeds for a new replica).
    Snapshot {
        devices: Vec<DeviceId>,
        reply: oneshot::Sender<Vec<Option<DeviceState>>>,
    },
    /// Replicas confirmed this device's own steps up to its last one.
    Confirmed { device: DeviceId },
    /// A replica reported this node's copy of the device's state off the
    /// cluster's line: stop sequencing it; a claim takes the peers' copy.
    /// `voided` are the steps dropped for it.
    Diverged {
        device: DeviceId,
        voided: Vec<VoidedStep>,
    },
    /// The log end of the last own step of any of these devices.
    OwnEnd {
        devices: Vec<DeviceId>,
        reply: oneshot::Sender<u64>,
    },
    /// Which of these devices this node does not own (yet).
    Unowned {
        devices: Vec<DeviceId>,
        reply: oneshot::Sender<Vec<DeviceId>>,
    },
    /// Membership changed: owned devices for which `keep` is false are no
    /// longer this node's; it claims them again before taking readings.
    Disown {
        keep: Box<dyn Fn(&DeviceId) -> bool + Send>,
        /// What this node knows of another node: a fence towards one that
        /// left is lifted (the epoch in the device's state remains, but a
        /// step is no longer referred to a claimer that left).
        member: Box<dyn Fn(&str) -> Presence + Send>,
    },
}

/// What this node knows of another node, as far as judging the steps its
/// claims fenced goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// A verified member under this node's latest view.
    Member,
    /// Not verified here, but maybe alive: gossip reports it and it is not
    /// verified (again) yet, or this node started moments ago and may not
    /// have heard of every member. Nothing final is decided on it.
    Unknown,
    /// Gone from a view this node trusts to be complete.
    Left,
}

/// What a node does with a step an owner sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaVerdict {
    /// Logged and folded here.
    Take,
    /// This node now owns the device, and its state includes the step:
    /// the step stands.
    Held,
    /// The device's line (this node's own, as the latest claimer it knows
    /// of) went on without the step: the sender must drop it.
    Orphaned,
    /// Another node claimed the device after the step's owner; only it can
    /// tell whether its line includes the step.
    Fenced(Arc<str>),
    /// This node still sequences the device itself, or just learned that
    /// it no longer may; try again later.
    Busy,
}

/// Claims waiting for hand-overs.
#[derive(Default)]
pub struct Claims {
    next_id: u64,
    pending: BTreeMap<u64, PendingClaim>,
}

struct PendingClaim {
    by: Arc<str>,
    by_head: Option<u64>,
    reply: oneshot::Sender<Vec<HeldState>>,
    answers: Vec<HeldState>,
    waiting: usize,
}

impl RouterState {
    /// Devices of ingest groups this node may not sequence.
    pub(super) fn not_owned(&self, groups: &[(DeviceId, DeviceBatch)]) -> Vec<DeviceId> {
        groups
            .iter()
            // Replays too: a replayed reading is delivered by the owner's line.
            .filter(|(_, batch)| matches!(batch.origin, Origin::Ingest { .. } | Origin::Replay))
            .filter(|(device, _)| {
                let role = self.devices.get(device).map_or(&self.new_role, |e| &e.role);
                *role != Role::Owner
            })
            .map(|(device, _)| device.clone())
            .collect()
    }

    pub(super) async fn on_cluster(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        msg: ClusterMsg,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Claim {
                by,
                by_head,
                devices,
                reply,
            } => self.claim(by, by_head, devices, reply),
            ClusterMsg::HandedOver {
                claim,
                device,
                state,
                last_end,
            } => {
                if let Some(e) = self.devices.get_mut(&device) {
                    e.state = state;
                    e.last_end = e.last_end.max(last_end);
                    e.activity = Activity::Passive;
                }
                tracing::debug!(%device, claim, "device handed over");
                self.answer_claims(&device);
            }
            ClusterMsg::BeginClaim { devices, reply } => {
                let attempt = self.claims.next_id;
                self.claims.next_id += 1;
                for device in devices {
                    let e = self.entry(device);
                    if !matches!(e.role, Role::Owner | Role::Claiming(_)) {
                        e.role = Role::Claiming(attempt);
                    }
                }
                let _ = reply.send(attempt);
            }
            ClusterMsg::AbandonClaim { attempt, devices } => {
                for device in devices {
                    if let Some(e) = self.devices.get_mut(&device)
                        && e.role == Role::Claiming(attempt)
                    {
                        e.role = Role::Unclaimed;
                    }
                }
            }
            ClusterMsg::Adopt { states, reply } => {
                let mut lost = Vec::new();
                for held in states {
                    let role = self.devices.get(&held.device).map(|e| e.role.clone());
                    match role {
                        // This node's claims (concurrent calls may each
                        // claim a device): no other node's got in between.
                        Some(Role::Claiming(_)) => self.adopt(myself, held).await?,
                        Some(Role::Owner) => {}
                        _ => lost.push(held.device),
                    }
                }
                let _ = reply.send(lost);
            }
            ClusterMsg::ReplicaBegin { from, steps, reply } => {
                let verdicts = steps
                    .into_iter()
                    .map(|(device, end, term)| self.judge(&from, device, end, term))
                    .collect();
                let _ = reply.send(verdicts);
            }
            ClusterMsg::ReplicaApply { steps, reply } => {
                for replica in steps {
                    let device = replica.step.device.clone();
                    if let Some(e) = self.devices.get_mut(&device) {
                        let passed = replica.fold_into(&mut e.state);
                        if passed > 0 {
                            // Its owner shipped the steps between to
                            // another replica; this copy follows the line
                            // again from here.
                            tracing::info!(
                                node = %self.ctx.node,
                                %device,
                                from = %replica.from,
                                end = replica.end,
                                passed,
                                "a replica copy missed steps of its owner; \
                                 dropped the held readings the owner's line has passed"
                            );
                        }
                        e.replicating = e.replicating.saturating_sub(1);
                    }
                    self.answer_claims(&device);
                }
                let _ = reply.send(());
            }
            ClusterMsg::ReplicaAbort { devices } => {
                for device in devices {
                    if let Some(e) = self.devices.get_mut(&device) {
                        e.replicating = e.replicating.saturating_sub(1);
                    }
                    self.answer_claims(&device);
                }
            }
            ClusterMsg::Snapshot { devices, reply } => {
                // Only an owner's copy is a seed: a node that lost a device
                // must not push its stale line onto a replica.
                let states = devices
                    .iter()
                    .map(|d| {
                        self.devices
                            .get(d)
                            .filter(|e| e.role == Role::Owner)
                            .map(|e| e.state.clone())
                    })
                    .collect();
                let _ = reply.send(states);
            }
            ClusterMsg::Confirmed { device } => {
                if let Some(e) = self.devices.get_mut(&device) {
                    e.confirming = false;
                }
                self.answer_claims(&device);
            }
            ClusterMsg::Diverged { device, voided } => {
                let e = self.entry(device);
                e.diverged = true;
                e.voided.extend(voided);
                if e.role == Role::Owner {
                    e.role = Role::Unclaimed;
                }
                e.stop_actor_if_idle("off the cluster's line");
            }
            ClusterMsg::OwnEnd { devices, reply } => {
                let end = devices
                    .iter()
                    .filter_map(|d| self.devices.get(d))
                    .map(|e| e.last_end)
                    .max()
                    .unwrap_or(0);
                let _ = reply.send(end);
            }
            ClusterMsg::Unowned { devices, reply } => {
                let unowned = devices
                    .into_iter()
                    .filter(|d| {
                        let role = self.devices.get(d).map_or(&self.new_role, |e| &e.role);
                        *role != Role::Owner
                    })
                    .collect();
                let _ = reply.send(unowned);
            }
            ClusterMsg::Disown { keep, member } => {
                let mut disowned = 0u64;
                for (device, e) in &mut self.devices {
                    match &e.role {
                        Role::Owner if !keep(device) => {
                            e.role = Role::Unclaimed;
                            disowned += 1;
                            // No timer may release anything here any more;
                            // the state stays for the next owner's claim.
                            e.stop_actor_if_idle("placed elsewhere");
                        }
                        Role::ClaimedBy(by) if member(by) == Presence::Left => {
                            e.role = Role::Unclaimed
                        }
                        _ => {}
                    }
                }
                self.member = member;
                if disowned > 0 {
                    tracing::info!(
                        devices = disowned,
                        "membership changed: devices placed elsewhere"
                    );
                }
            }
        }
        Ok(())
    }

    /// What to do with the step that owner `from` logged at `term`, ending
    /// at `end` in its log.
    fn judge(&mut self, from: &Arc<str>, device: DeviceId, end: u64, term: u64) -> ReplicaVerdict {
        let me = self.ctx.node.clone();
        let now = self.ctx.clock.now_ms();
        let member = &self.member;
        let supervision = &self.supervision;
        let e = self.devices.entry(device.clone()).or_insert_with(|| {
            Entry::new(DeviceState::new(), now, 0, Role::Unclaimed, supervision)
        });
        let step = Epoch::of(term, from);
        let known = e.state.epoch().clone();
        // A live actor here means this node still sequences the device (it
        // was its owner a moment ago).
        let idle = matches!(e.activity, Activity::Passive) && e.inflight.is_empty();
        let held = e.state.held_from(from) >= end;
        let verdict = match &e.role {
            // A claim this node did not hear of came after its own: it is
            // no longer the device's owner. Its own steps since are judged
            // by that claim's line like any other owner's.
            Role::Owner if step > known => {
                e.role = Role::Unclaimed;
                e.stop_actor_if_idle("claimed by a later owner");
                ReplicaVerdict::Busy
            }
            // The device's line runs here: this node decides.
            Role::Owner if held => ReplicaVerdict::Held,
            Role::Owner => ReplicaVerdict::Orphaned,
            _ if !idle => ReplicaVerdict::Busy,
            // From the latest owner known here, or a later one.
            _ if step >= known => ReplicaVerdict::Take,
            _ if held => ReplicaVerdict::Held,
            // A later claim than the step's owner: its claimer's line
            // decides. If that is this node, its copy is that line as far
            // as this node took it; if the claimer left the cluster (a
            // claim on this node is lifted when its claimer leaves), this
            // copy is the best knowledge left of it.
            //
            // "Left" must come from a complete view: a node that has just
            // started may not have heard of a claimer that is alive, whose
            // line may well hold the step. Dropping it then would void
            // readings a copy elsewhere counts as taken (simulation seed
            // 712), so an unknown claimer only defers the step.
            role => match known.claimer() {
                Some(c) if *c != *me => match (role, member(c)) {
                    (Role::ClaimedBy(_), _) | (_, Presence::Member) => {
                        ReplicaVerdict::Fenced(Arc::from(c))
                    }
                    (_, Presence::Unknown) => ReplicaVerdict::Busy,
                    (_, Presence::Left) => ReplicaVerdict::Orphaned,
                },
                _ => ReplicaVerdict::Orphaned,
            },
        };
        if verdict == ReplicaVerdict::Take {
            e.replicating += 1;
        }
        tracing::debug!(
            node = %me, %device, %from, end, %step, %known, role = ?e.role,
            held_from = e.state.held_from(from),
            ?verdict, "replica step checked in"
        );
        verdict
    }

    fn entry(&mut self, device: DeviceId) -> &mut Entry {
        let now = self.ctx.clock.now_ms();
        let supervision = &self.supervision;
        self.devices
            .entry(device)
            .or_insert_with(|| Entry::new(DeviceState::new(), now, 0, Role::Unclaimed, supervision))
    }

    fn claim(
        &mut self,
        by: Arc<str>,
        by_head: Option<u64>,
        devices: Vec<DeviceId>,
        reply: oneshot::Sender<Vec<HeldState>>,
    ) {
        let id = self.claims.next_id;
        self.claims.next_id += 1;
        self.claims.pending.insert(
            id,
            PendingClaim {
                by: by.clone(),
                by_head,
                reply,
                answers: Vec::with_capacity(devices.len()),
                waiting: devices.len(),
            },
        );
        let me = self.ctx.node.clone();
        for device in &devices {
            // Two nodes claiming one device at once: the lower node id wins,
            // the other's claim fails here (it tries again later).
            if let Some(Role::Claiming(_)) = self.devices.get(device).map(|e| &e.role)
                && *me < *by
            {
                tracing::debug!(%device, claimer = %by, "refusing a claim: this node is claiming the device too");
                if let Some(p) = self.claims.pending.remove(&id) {
                    drop(p.reply);
                }
                return;
            }
        }
        for device in devices {
            let e = self.entry(device.clone());
            e.role = Role::ClaimedBy(by.clone());
            e.claim.push(id);
            if let Activity::Live(actor) = &e.activity {
                // The first claim asks the actor; later ones ride along.
                if e.claim.len() == 1 && actor.cast(DeviceMsg::Handover { claim: id }).is_err() {
                    // Stopping under us: its failure or stop event follows.
                    tracing::debug!(%device, "device actor gone while claimed");
                }
                continue;
            }
            // Passive, or waiting out a restart that will not happen now.
            e.activity = Activity::Passive;
            self.refuse_unfinished(&device);
            self.answer_claims(&device);
        }
        self.finish_claim(id);
    }

    /// Groups admitted but never handled (the actor crashed or was never
    /// started) are refused: the claimer sequences them now.
    pub(super) fn refuse_unfinished(&mut self, device: &DeviceId) {
        if let Some(e) = self.devices.get_mut(device) {
            for f in e.inflight.drain(..) {
                f.batch.reply.send(Err(GroupFailure::Moved(device.clone())));
            }
        }
    }

    /// Answers the claims waiting for `device` if nothing of it is in
    /// progress here any more and replicas have confirmed its own steps
    /// (so the state handed over is the one they hold too).
    pub(super) fn answer_claims(&mut self, device: &DeviceId) {
        let router = self.myself.clone();
        let Some(e) = self.devices.get_mut(device) else {
            return;
        };
        if e.claim.is_empty() || e.replicating > 0 || !matches!(e.activity, Activity::Passive) {
            return;
        }
        if let Some(confirmed) = &self.confirmed
            && *confirmed.borrow() < e.last_end
        {
            if !e.confirming {
                e.confirming = true;
                let mut confirmed = confirmed.clone();
                let end = e.last_end;
                let device = device.clone();
                tokio::spawn(async move {
                    // Ends only when confirmed or when the node stops.
                    if confirmed.wait_for(|c| *c >= end).await.is_ok() {
                        let _ = router.cast(RouterMsg::Cluster(ClusterMsg::Confirmed { device }));
                    }
                });
            }
            return;
        }
        let ids: Vec<u64> = e.claim.drain(..).collect();
        for id in ids {
            if let Some(p) = self.claims.pending.get_mut(&id)
                && let Some(e) = self.devices.get_mut(device)
            {
                // From here on the device's line runs through the claimer,
                // at an epoch above every one this node knew (claims
                // answered together are ordered as they came). A claimer
                // that is the latest one already (two of its claims at
                // once, or a claim after its restart) keeps its epoch: its
                // steps at it are its line, not an old owner's.
                let epoch = match e.state.epoch().claimer() {
                    Some(c) if *c == *p.by => e.state.epoch().clone(),
                    _ => e.state.epoch().next_for(&p.by),
                };
                e.state.fence(&epoch, p.by_head);
                // A copy known to be off the line (it holds dropped steps)
                // is no copy: the claimer must not adopt it.
                p.answers.push(HeldState {
                    device: device.clone(),
                    state: (!e.diverged).then(|| e.state.clone()),
                    term: epoch.term(),
                });
                p.waiting = p.waiting.saturating_sub(1);
            }
            self.finish_claim(id);
        }
    }

    fn finish_claim(&mut self, id: u64) {
        if self.claims.pending.get(&id).is_some_and(|p| p.waiting == 0)
            && let Some(p) = self.claims.pending.remove(&id)
        {
            // The fences are logged before the answer leaves, so a restart
            // of this node cannot forget whom it handed the devices to.
            let log = self.ctx.log.clone();
            tokio::spawn(async move {
                let appends = p.answers.iter().map(|held| {
                    log_fence(
                        log.clone(),
                        FenceRecord {
                            device: held.device.clone(),
                            epoch: Epoch::of(held.term, &p.by),
                            claimer_head: p.by_head,
                        },
                    )
                });
                for result in futures::future::join_all(appends).await {
                    if let Err(e) = result {
                        // The claimer gets no answer and retries the claim.
                        tracing::warn!(error = %e, claimer = %p.by, "could not log a hand-over");
                        return;
                    }
                }
                let _ = p.reply.send(p.answers);
            });
        }
    }

    async fn adopt(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        held: HeldState,
    ) -> Result<(), ActorProcessingErr> {
        NodeStats::add(&self.ctx.stats.devices_claimed, 1);
        let node = self.ctx.node.clone();
        let stats = self.ctx.stats.clone();
        let HeldState {
            device,
            state,
            term,
        } = held;
        let deliverable = self.confirmed.as_ref().map_or(0, |c| *c.borrow());
        let void = self.void.clone();
        let e = self.entry(device.clone());
        let confirmed = e
            .confirmed_copy
            .take(deliverable, void.as_deref(), &e.state);
        e.role = Role::Owner;
        // Above every epoch this node and its peers knew for the device.
        let epoch = e.state.epoch().next_for(&node).max(Epoch::of(term, &node));
        tracing::debug!(
            %node,
            %device,
            %epoch,
            diverged = e.diverged,
            own = ?e.state.rank(),
            own_confirmed = ?confirmed.as_ref().map(DeviceState::rank),
            peers = ?state.as_ref().map(DeviceState::rank),
            "adopting a claimed device"
        );
        // This node's copy counts unless a replica said it is off the line.
        let reset = std::mem::take(&mut e.diverged);
        let mut s = match state {
            // This node's copy is off the line, but readings it holds may
            // have been acknowledged (confirmed before the step that went
            // astray): they stay held.
            //
            // The part of it replicas confirmed is on the line, though: it
            // stands in for the peers' copy when theirs ranks lower (the
            // replica that holds it is out of reach).
            peer if reset => {
                let mut s = match (peer, confirmed) {
                    (Some(p), Some(c)) if c.rank() > p.rank() => c,
                    (Some(p), _) => p,
                    (None, c) => c.unwrap_or_default(),
                };
                s.merge_held(&e.state);
                s
            }
            // A later line, or further on the same line.
            Some(mut s) if s.rank() > e.state.rank() => {
                s.merge_held(&e.state);
                s
            }
            peer => {
                // This node's copy is the line, plus what a peer's copy
                // holds that it lacks.
                let mut own = e.state.clone();
                if let Some(peer) = &peer {
                    own.merge_held(peer);
                }
                own
            }
        };
        // This node's dropped steps that the adopted copy holds after all
        // (a replica took one before another answered `orphaned`): their
        // readings reach no sink unless this adoption delivers them.
        let dropped = std::mem::take(&mut e.voided);
        let deliver = voided::held_by_line(&s, &node, &dropped);
        if !dropped.is_empty() {
            let (before, ends) = e
                .settling
                .get_or_insert_with(|| (e.adoption.logged_end, Vec::new()));
            *before = (*before).min(e.adoption.logged_end);
            ends.extend(dropped.iter().map(|d| d.end));
        }
        if !deliver.is_empty() {
            NodeStats::add(&stats.dropped_readings_delivered, deliver.len() as u64);
            tracing::info!(
                %node,
                %device,
                readings = deliver.len(),
                "the adopted copy holds steps this node dropped; delivering their readings"
            );
        }
        s.fence(&epoch, None);
        let adopt = Adoption {
            state: s,
            reset,
            deliver,
        };
        // Steps are judged by the epoch from now on, also before the
        // device actor has logged the adoption.
        e.state.fence(&epoch, None);
        // Logged by the device actor like any step (so the log explains
        // the state and keeps the epoch) and shipped to the replica.
        let (tx, _rx) = oneshot::channel();
        let batch = DeviceBatch {
            no: 0,
            readings: Arc::new(Vec::new()),
            origin: Origin::Adopt(Arc::new(adopt)),
            reply: ReplySlot::new(tx),
            inflight: None,
        };
        self.enqueue(myself, device, batch).await
    }
}

/// Appends a fence record to the log.
async fn log_fence(log: vatio_wal::Log, fence: FenceRecord) -> Result<(), String> {
    let bytes = fence.encode().map_err(|e| e.to_string())?;
    log.append(bytes)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
