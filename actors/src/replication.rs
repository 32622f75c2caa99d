//! Replication of this node's device steps to their replicas in the other AZ.
//!
//! The shipper is one more log subscriber. It reads this node's own steps in
//! log order, sends each to the replica of its device (placement decides;
//! the node hands in a [`ReplicaLink`]), and moves its position once every
//! replica has confirmed. Its position is the replication watermark: an
//! ingest call with `ack = replicated` answers once the watermark has passed
//! the steps that took its readings.
//!
//! Because the shipper works from the log, nothing needs to be remembered
//! to "replicate later": while no replica is reachable (or, under
//! `no_other_az = degrade`, while the other AZ is down) the watermark stands
//! still, the log keeps the steps (truncation waits for the shipper), and
//! shipping resumes where it stopped.
//!
//! A replica that does not know a device yet (a new replica after a
//! membership change, or after either node restarted) gets the device's
//! current state as a seed with its first step. Folding is monotone (see
//! [`crate::logic::device::DeviceState::apply`]), so a seed newer than the
//! step it travels with is harmless.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use vatio_config::{AckMode, NoOtherAz};
use vatio_stores::DeviceId;

use crate::feed::{Feed, LogConsumer, Progress};
use crate::journal::encode_state;
use crate::logic::voided::VoidedStep;
use crate::mailbox::Permit;
use crate::pipeline::{LoggedStep, SubscriberMsg};
use crate::router::{ClusterMsg, RouterMsg};
use crate::stats::NodeStats;
use crate::tree::cluster::Replicated;
use crate::void::VoidSet;

/// How often the shipper retries a batch no replica has confirmed yet, and
/// commits its position.
const TICK: Duration = Duration::from_millis(200);
/// Most step bytes one shipment carries when batches are shipped together
/// (well below the peer channel's message limit).
const SHIPMENT_BYTES_MAX: usize = 8 << 20;
/// How many times a step is referred on to the node that claimed its device.
const RESOLVE_HOPS: usize = 3;
/// How often, and how long apart, seeds are asked for again while the
/// router's copy of a device is behind the step being shipped.
const SEED_RETRIES: usize = 10;
const SEED_RETRY_WAIT: Duration = Duration::from_millis(2);

/// The network side of replication, provided by the node.
pub trait ReplicaLink: Send + Sync + 'static {
    /// The node keeping `device`'s replica under the current membership
    /// (None: no live member in the other AZ).
    fn replica_of(&self, device: &DeviceId) -> Option<Arc<str>>;
    /// Whether the other AZ has a live member.
    fn other_az_live(&self) -> bool;
    /// Whether every live member is verified: steps from before this node
    /// started are settled only then, with the replica the whole cluster
    /// would pick.
    fn view_settled(&self) -> bool {
        true
    }
    /// Sends steps to `peer`, which logs them (or, where another node has
    /// claimed their device, says what became of them).
    fn ship(
        &self,
        peer: Arc<str>,
        steps: Vec<ShippedStep>,
    ) -> BoxFuture<'static, Result<Replicated, String>>;
}

/// One step on its way to a replica.
#[derive(Clone, Debug)]
pub struct ShippedStep {
    pub device: DeviceId,
    /// End of the step in this node's log.
    pub end: u64,
    /// The record as this node logged it.
    pub step: Bytes,
    /// The device's encoded state, when the replica may not know it.
    pub seed: Option<Bytes>,
}

/// How the node replicates and acknowledges, from `[cluster]`.
#[derive(Clone)]
pub struct Replication {
    pub link: Arc<dyn ReplicaLink>,
    pub ack: AckMode,
    pub no_other_az: NoOtherAz,
    /// Longest an ack waits for replicas; also the limit of one shipment.
    pub timeout: Duration,
    /// Where the node keeps its voided steps (see [`crate::void`]).
    pub void_path: std::path::PathBuf,
}

/// Why a shipment did not go through.
enum ShipError {
    /// Some step's device has no replica: the other AZ has no live member.
    NoOtherAz,
    Failed(String),
}

/// Why a replicated ack could not be given.
#[derive(Debug, thiserror::Error)]
pub enum ShipWaitError {
    #[error("no replica confirmed the batch within {0:?}")]
    Timeout(Duration),
    #[error("the replica refused device {0}: another node has claimed it")]
    Refused(DeviceId),
}

/// The replication watermark and what replicas refused, shared by the
/// shipper, the ingest path, the router and the gated subscribers.
pub struct Shipping {
    pub progress: Arc<Progress>,
    /// Everything before it may reach the sinks: confirmed by replicas (or
    /// dropped as orphaned), or logged while the other AZ had no live
    /// member (`degrade`: nothing else could take those devices over there).
    deliverable: watch::Sender<u64>,
    /// Per device, the end of the last step a replica refused.
    refused: Mutex<BTreeMap<DeviceId, u64>>,
    pub void: Arc<VoidSet>,
}

impl Shipping {
    pub fn new(progress: Arc<Progress>, void: Arc<VoidSet>) -> Arc<Self> {
        Arc::new(Self {
            progress,
            deliverable: watch::Sender::new(0),
            refused: Mutex::new(BTreeMap::new()),
            void,
        })
    }

    pub fn deliverable(&self) -> watch::Receiver<u64> {
        self.deliverable.subscribe()
    }

    fn set_deliverable(&self, end: u64) {
        self.deliverable.send_if_modified(|d| {
            let moved = end > *d;
            if moved {
                *d = end;
            }
            moved
        });
    }

    /// Waits until every `(device, end)` step is on its replica.
    pub async fn wait(
        &self,
        ends: &[(DeviceId, u64)],
        limit: Duration,
    ) -> Result<(), ShipWaitError> {
        let Some(target) = ends.iter().map(|(_, end)| *end).max() else {
            return Ok(());
        };
        if tokio::time::timeout(limit, self.progress.wait_folded(target))
            .await
            .is_err()
        {
            return Err(ShipWaitError::Timeout(limit));
        }
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        for (device, end) in ends {
            if refused.get(device).is_some_and(|r| r >= end) {
                return Err(ShipWaitError::Refused(device.clone()));
            }
        }
        Ok(())
    }

    fn record_refusal(&self, device: DeviceId, end: u64) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let e = refused.entry(device).or_insert(0);
        *e = (*e).max(end);
    }
}

#[derive(Clone, Copy)]
pub struct Shipper;

#[derive(Clone)]
pub struct ShipperArgs {
    pub link: Arc<dyn ReplicaLink>,
    pub shipping: Arc<Shipping>,
    pub consumer: LogConsumer,
    /// Filled once the router runs (it starts after the subscribers).
    pub router: Arc<Mutex<Option<ActorRef<RouterMsg>>>>,
    pub timeout: Duration,
    pub stats: Arc<NodeStats>,
    /// The log's head when the node started.
    pub start_head: u64,
    /// Whether steps may reach the sinks unreplicated while the other AZ is down.
    pub no_other_az: NoOtherAz,
    /// This node's id (its steps are noted under it in device states).
    pub node: Arc<str>,
}

pub struct ShipperState {
    args: ShipperArgs,
    /// Batches read from the log, not yet confirmed, oldest first.
    queue: VecDeque<(Vec<LoggedStep>, Permit)>,
    /// The replica each device's last step went to.
    sent_to: BTreeMap<DeviceId, Arc<str>>,
    /// Ends of the oldest batch's steps already taken or held: a retry of
    /// the batch sends only the rest (and never an orphan, which is in the
    /// void set), so within this node's life no step is judged twice,
    /// perhaps differently by a node whose view moved on meanwhile. After a
    /// restart the unconfirmed tail is asked about again.
    settled: BTreeSet<u64>,
    /// The last shipment failed (warned once per streak).
    failing: bool,
    /// A `Drain` is on its way in the mailbox.
    drain_due: bool,
    _feed: Feed,
}

impl Actor for Shipper {
    type Msg = SubscriberMsg;
    type State = ShipperState;
    type Arguments = ShipperArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ShipperArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(TICK, || SubscriberMsg::Tick);
        let feed = args.consumer.resume(myself)?;
        // Everything before the committed position was settled before.
        args.shipping
            .set_deliverable(args.consumer.progress.committed());
        Ok(ShipperState {
            args,
            queue: VecDeque::new(),
            sent_to: BTreeMap::new(),
            settled: Default::default(),
            failing: false,
            drain_due: false,
            _feed: feed,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SubscriberMsg::Steps { steps, permit } => {
                st.queue.push_back((steps, permit));
                // Shipped once the batches already in the mailbox are
                // queued too, so one shipment carries them all rather than
                // one round trip each. A queue that was not empty waits for
                // the next tick: its replica is failing, and is not retried
                // in a tight loop.
                if st.queue.len() == 1 && !std::mem::replace(&mut st.drain_due, true) {
                    myself.cast(SubscriberMsg::Drain)?;
                }
            }
            SubscriberMsg::Drain => {
                st.drain_due = false;
                st.drain().await;
            }
            SubscriberMsg::Tick => {
                st.drain().await;
                st.args.consumer.commit_folded().await?;
            }
            SubscriberMsg::Flush(reply) => {
                st.args.consumer.commit_folded().await?;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

impl ShipperState {
    /// Ships queued batches in order, the oldest ones together up to a
    /// shipment's worth, until a shipment fails.
    async fn drain(&mut self) {
        while !self.queue.is_empty() {
            let (steps, batches) = self.next_shipment();
            match self.ship(&steps).await {
                Ok(()) => {
                    self.args.consumer.folded(&steps);
                    if let Some(last) = steps.last() {
                        self.args.shipping.set_deliverable(last.end);
                    }
                    self.queue.drain(..batches);
                    self.settled.clear();
                    if std::mem::take(&mut self.failing) {
                        tracing::info!("replication caught up with its replicas");
                    }
                }
                Err(ShipError::NoOtherAz) => {
                    // Kept for later replication; meanwhile nothing in the
                    // other AZ can take these devices over, so the sinks
                    // may have them. Not so for steps from before this
                    // node started: the other AZ may have gone on without
                    // them while it was down (and a node just started has
                    // not verified its peers yet), so those wait to be
                    // settled with a replica.
                    let first = steps.first().map_or(0, |s| s.end);
                    if self.args.no_other_az == NoOtherAz::Degrade && first > self.args.start_head {
                        // What is on disk: sinks never get what a power
                        // loss could take back from the log.
                        let head = self.args.consumer.log.durable_head().0;
                        self.args.shipping.set_deliverable(head);
                    }
                    return;
                }
                Err(ShipError::Failed(e)) => {
                    NodeStats::add(&self.args.stats.replication_failures, 1);
                    if std::mem::replace(&mut self.failing, true) {
                        tracing::debug!(error = %e, "replication still behind; retrying");
                    } else {
                        tracing::warn!(error = %e, "replication is behind; retrying");
                    }
                    return;
                }
            }
        }
    }

    /// The steps of the oldest queued batches, as many as fit in one
    /// shipment (at least one batch), and how many batches they are.
    fn next_shipment(&self) -> (Vec<LoggedStep>, usize) {
        let mut steps = Vec::new();
        let mut bytes = 0;
        let mut batches = 0;
        for (batch, _) in &self.queue {
            let size: usize = batch.iter().map(|s| s.payload.len()).sum();
            if batches > 0 && bytes + size > SHIPMENT_BYTES_MAX {
                break;
            }
            steps.extend(batch.iter().cloned());
            bytes += size;
            batches += 1;
        }
        (steps, batches)
    }

    /// One attempt at getting every own step of `steps` to its replica.
    async fn ship(&mut self, steps: &[LoggedStep]) -> Result<(), ShipError> {
        let link = self.args.link.clone();
        let from_before_start = steps.first().is_some_and(|s| s.end <= self.args.start_head);
        if from_before_start && !link.view_settled() {
            return Err(ShipError::Failed(
                "waiting for every cluster member to be verified before settling the steps \
                 from before this node started"
                    .to_owned(),
            ));
        }
        let mut by_peer: BTreeMap<Arc<str>, Vec<(u64, ShippedStep)>> = BTreeMap::new();
        let mut seed_needed: Vec<DeviceId> = Vec::new();
        for logged in steps {
            if logged.replica.is_some() || logged.step.is_empty() {
                continue;
            }
            // A step once dropped as orphaned stays dropped: sent again (the
            // batch failed elsewhere and is retried), a node whose view
            // moved on could take it, putting its readings on the line
            // while the sinks here skip it.
            if self.settled.contains(&logged.end) || self.args.shipping.void.contains(logged.end) {
                continue;
            }
            let device = logged.step.device.clone();
            let Some(peer) = link.replica_of(&device) else {
                return Err(ShipError::NoOtherAz);
            };
            let batch = by_peer.entry(peer.clone()).or_default();
            if self.sent_to.get(&device) != Some(&peer)
                && !batch.iter().any(|(_, s)| s.device == device)
            {
                seed_needed.push(device.clone());
            }
            batch.push((
                logged.end,
                ShippedStep {
                    device,
                    end: logged.end,
                    step: logged.payload.clone(),
                    seed: None,
                },
            ));
        }
        if by_peer.is_empty() {
            return Ok(());
        }
        // The router's copy lags the device actor a little: a seed must
        // include the device's last step shipped here, or the replica could
        // miss a step between the seed and the steps that follow it. The
        // router catches up within moments; ask again a few times.
        let mut seeds = BTreeMap::new();
        for attempt in 0..=SEED_RETRIES {
            seeds = self
                .seeds(seed_needed.clone())
                .await
                .map_err(ShipError::Failed)?;
            let lagging = by_peer
                .values()
                .flatten()
                .find(|(end, s)| seeds.get(&s.device).is_some_and(|(_, held)| held < end));
            match lagging {
                None => break,
                Some((end, s)) if attempt == SEED_RETRIES => {
                    return Err(ShipError::Failed(format!(
                        "the state of {} to seed a replica with is not yet past its step at {end}",
                        s.device
                    )));
                }
                Some(_) => tokio::time::sleep(SEED_RETRY_WAIT).await,
            }
        }
        let mut round: Vec<(Arc<str>, Vec<ShippedStep>)> = Vec::with_capacity(by_peer.len());
        for (peer, items) in by_peer {
            let mut seeded: std::collections::BTreeSet<DeviceId> = Default::default();
            let shipped = items
                .into_iter()
                .map(|(_, mut s)| {
                    if let Some((seed, _)) = seeds.get(&s.device)
                        && seeded.insert(s.device.clone())
                    {
                        s.seed = Some(seed.clone());
                    }
                    s
                })
                .collect();
            round.push((peer, shipped));
        }
        let mut failed = Vec::new();
        let mut orphans: Vec<(DeviceId, VoidedStep)> = Vec::new();
        // Steps a fenced replica refers elsewhere go to the node that
        // claimed their device, which alone knows whether its line holds
        // them; that may refer further, a few times at most.
        for hop in 0..=RESOLVE_HOPS {
            if round.is_empty() {
                break;
            }
            let mut next: BTreeMap<Arc<str>, Vec<ShippedStep>> = BTreeMap::new();
            for (peer, sent, result) in self.send(&link, round).await {
                let outcome = match result {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        // It may have lost what it had: seed it again next time.
                        self.sent_to.retain(|_, p| *p != peer);
                        failed.push(format!("{peer}: {e}"));
                        continue;
                    }
                };
                if hop == 0 {
                    // Remember the replica only for steps it kept: one it
                    // refused or deferred must be seeded again.
                    for s in &sent {
                        let kept = !outcome.busy.contains(&s.end)
                            && !outcome.orphaned.contains(&s.end)
                            && !outcome.fenced.iter().any(|(e, _)| *e == s.end);
                        if kept {
                            self.sent_to.insert(s.device.clone(), peer.clone());
                        } else {
                            self.sent_to.remove(&s.device);
                        }
                    }
                }
                // Taken or held. (An orphan is settled by the void set, once
                // it is durably there.)
                for s in &sent {
                    let open = outcome.busy.contains(&s.end)
                        || outcome.orphaned.contains(&s.end)
                        || outcome.fenced.iter().any(|(e, _)| *e == s.end);
                    if !open {
                        self.settled.insert(s.end);
                    }
                }
                let by_end = |end: u64| sent.iter().find(|s| s.end == end);
                for end in outcome.orphaned {
                    if let Some(s) = by_end(end) {
                        // Sequenced readings only: a dead letter replayed in
                        // the step stays pending (its replay failed with
                        // the step) and is replayed again from its letter.
                        let released = steps
                            .iter()
                            .find(|l| l.end == end)
                            .map(|l| l.step.emitted().cloned().collect())
                            .unwrap_or_default();
                        orphans.push((s.device.clone(), VoidedStep { end, released }));
                    }
                }
                if !outcome.busy.is_empty() {
                    failed.push(format!(
                        "{peer}: still sequencing {} of these devices",
                        outcome.busy.len()
                    ));
                }
                for (end, owner) in outcome.fenced {
                    if let Some(s) = by_end(end) {
                        next.entry(owner).or_default().push(ShippedStep {
                            seed: None,
                            ..s.clone()
                        });
                    }
                }
            }
            round = next.into_iter().collect();
        }
        if !round.is_empty() {
            failed.push(format!(
                "{} step(s) still referred elsewhere after {RESOLVE_HOPS} hops",
                round.iter().map(|(_, s)| s.len()).sum::<usize>()
            ));
        }
        if !orphans.is_empty() {
            self.drop_orphans(orphans)?;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ShipError::Failed(format!(
                "shipping to {}",
                failed.join("; ")
            )))
        }
    }

    /// Sends each peer its steps, all at once, each call bounded by the timeout.
    async fn send(
        &self,
        link: &Arc<dyn ReplicaLink>,
        round: Vec<(Arc<str>, Vec<ShippedStep>)>,
    ) -> Vec<(Arc<str>, Vec<ShippedStep>, Result<Replicated, String>)> {
        let limit = self.args.timeout;
        let calls = round.into_iter().map(|(peer, steps)| {
            let call = link.ship(peer.clone(), steps.clone());
            async move {
                let result = match tokio::time::timeout(limit, call).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {limit:?}")),
                };
                (peer, steps, result)
            }
        });
        futures::future::join_all(calls).await
    }

    /// Steps no replica confirmed and another owner went on without: void
    /// them (durably, before the sinks may read past them), fail any ack
    /// still waiting for them, and stop trusting this node's copy of
    /// their devices' state.
    fn drop_orphans(&self, orphans: Vec<(DeviceId, VoidedStep)>) -> Result<(), ShipError> {
        self.args
            .shipping
            .void
            .add_steps(&orphans)
            .map_err(|e| ShipError::Failed(format!("recording voided steps: {e}")))?;
        NodeStats::add(&self.args.stats.steps_voided, orphans.len() as u64);
        let router = self
            .args
            .router
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (device, step) in orphans {
            let end = step.end;
            tracing::warn!(node = %self.args.node, %device, end, "dropping a step no replica confirmed: another node took the device over without it");
            self.args.shipping.record_refusal(device.clone(), end);
            if let Some(router) = &router {
                // Its readings go along: should a copy hold the step after
                // all, this node's next adoption of the device delivers them.
                let _ = router.cast(RouterMsg::Cluster(ClusterMsg::Diverged {
                    device,
                    voided: vec![step],
                }));
            }
        }
        Ok(())
    }

    /// Encoded current states of `devices`, from the router, with the end
    /// of this node's last step each includes.
    async fn seeds(
        &self,
        devices: Vec<DeviceId>,
    ) -> Result<BTreeMap<DeviceId, (Bytes, u64)>, String> {
        if devices.is_empty() {
            return Ok(BTreeMap::new());
        }
        let router = self
            .args
            .router
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("the router is not running")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        router
            .cast(RouterMsg::Cluster(ClusterMsg::Snapshot {
                devices: devices.clone(),
                reply: tx,
            }))
            .map_err(|_| "the router stopped".to_owned())?;
        let states = rx.await.map_err(|_| "the router stopped".to_owned())?;
        let mut out = BTreeMap::new();
        for (device, state) in devices.into_iter().zip(states) {
            if let Some(state) = state {
                let held = state.held_from(&self.args.node);
                let bytes = encode_state(&state).map_err(|e| format!("encoding {device}: {e}"))?;
                out.insert(device, (Bytes::from(bytes), held));
            }
        }
        Ok(out)
    }
}
