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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;
use vatio_config::SupervisionConfig;
use vatio_stores::{DeadLetterReason, DeviceId, NewDeadLetter};

use crate::device::{
    DeviceActor, DeviceArgs, DeviceBatch, DeviceContext, DeviceMsg, GroupResult, LogFailure, Origin,
};
use crate::journal::StepRecord;
use crate::logic::device::DeviceState;
use crate::stats::NodeStats;
use crate::supervision::{RestartBudget, RestartDecision};

/// Counts the router can tell about its table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStatus {
    pub devices_known: u64,
    pub devices_active: u64,
    /// Estimated bytes of the device table (keys, entries, states), not
    /// counting live actors.
    pub table_bytes: u64,
}

pub enum RouterMsg {
    /// One batch, split by device. `admitted` says whether it was taken
    /// (false: a device's mailbox bound would be exceeded; nothing was sent).
    Route {
        groups: Vec<(DeviceId, DeviceBatch)>,
        admitted: oneshot::Sender<bool>,
    },
    /// A device actor finished group `no`; `state` is its state after it.
    DeviceDone {
        device: DeviceId,
        no: u64,
        state: DeviceState,
    },
    /// A device actor's state changed outside a group (timer release, flush).
    DeviceState {
        device: DeviceId,
        state: DeviceState,
    },
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
    pub initial: HashMap<DeviceId, DeviceState>,
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
}

pub struct RouterState {
    ctx: Arc<DeviceContext>,
    supervision: SupervisionConfig,
    idle_ms: i64,
    mailbox_batches: usize,
    devices: HashMap<DeviceId, Entry>,
    by_actor: HashMap<ActorId, DeviceId>,
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
        let devices = args
            .initial
            .into_iter()
            .map(|(device, state)| {
                let entry = Entry {
                    state,
                    activity: Activity::Passive,
                    inflight: VecDeque::new(),
                    next_no: 0,
                    last_active_ms: now,
                    restarts: RestartBudget::new(&args.supervision),
                };
                (device, entry)
            })
            .collect();
        Ok(RouterState {
            ctx: args.ctx,
            supervision: args.supervision,
            idle_ms,
            mailbox_batches: args.mailbox_batches.max(1),
            devices,
            by_actor: HashMap::new(),
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
            RouterMsg::DeviceDone { device, no, state } => st.device_done(device, no, state),
            RouterMsg::DeviceState { device, state } => {
                if let Some(e) = st.devices.get_mut(&device) {
                    e.state = state;
                    e.last_active_ms = st.ctx.clock.now_ms();
                }
            }
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
                        Activity::Live(a) if !e.state.is_idle() || !e.inflight.is_empty() => {
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
                let _ = reply.send(RouterStatus {
                    devices_known: st.devices.len() as u64,
                    devices_active: active as u64,
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
    /// entry inline (hash tables keep about 1/8 of their slots free), plus
    /// the id's shared string and whatever the state keeps on the heap.
    fn table_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(DeviceId, Entry)>() + 1;
        let slots = self.devices.capacity().max(self.devices.len());
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
        slots * slot + self.by_actor.capacity() * std::mem::size_of::<(ActorId, DeviceId)>() + heap
    }

    async fn route(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        groups: Vec<(DeviceId, DeviceBatch)>,
        admitted: oneshot::Sender<bool>,
    ) -> Result<(), ActorProcessingErr> {
        let over_bound = groups.iter().any(|(device, _)| {
            self.devices
                .get(device)
                .is_some_and(|e| e.inflight.len() >= self.mailbox_batches)
        });
        if over_bound {
            let _ = admitted.send(false);
            return Ok(());
        }
        let _ = admitted.send(true);
        let now = self.ctx.clock.now_ms();
        for (device, mut batch) in groups {
            let supervision = &self.supervision;
            let entry = self.devices.entry(device.clone()).or_insert_with(|| Entry {
                state: DeviceState::new(),
                activity: Activity::Passive,
                inflight: VecDeque::new(),
                next_no: 0,
                last_active_ms: now,
                restarts: RestartBudget::new(supervision),
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

    fn device_done(&mut self, device: DeviceId, no: u64, state: DeviceState) {
        let now = self.ctx.clock.now_ms();
        if let Some(e) = self.devices.get_mut(&device) {
            e.state = state;
            e.last_active_ms = now;
            if e.inflight.front().is_some_and(|f| f.batch.no == no) {
                e.inflight.pop_front();
            }
            e.restarts.on_success();
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
            Origin::Ingest { .. } => Vec::new(),
        };
        let step = StepRecord {
            device,
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
            let outcome = logged.map(|_| {
                for _ in 0..n {
                    stats.dead_lettered(DeadLetterReason::Poison);
                }
                GroupResult {
                    accepted: 0,
                    duplicates: 0,
                    dead_lettered: n,
                    refusals,
                }
            });
            batch.reply.send(outcome);
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
            let Activity::Live(actor) = &e.activity else {
                continue;
            };
            // Only the router sends groups, so with nothing in flight nothing
            // can reach the actor after this stop: passivation is race-free.
            if e.inflight.is_empty()
                && e.state.is_idle()
                && now.saturating_sub(e.last_active_ms) >= idle_ms
            {
                actor.stop(Some("passivated".into()));
                e.activity = Activity::Passive;
                passivated += 1;
            }
        }
        NodeStats::add(&self.ctx.stats.devices_passivated, passivated);
    }
}
