//! The task that runs SWIM for one node: it feeds the protocol (`foca`,
//! which does no I/O of its own) the datagrams, timer events and commands,
//! carries out what the protocol asks (send, schedule, notify), and
//! republishes the [`View`] after each step.
//!
//! Everything the protocol sees comes from here in one order: datagrams in
//! arrival order, timers by due time then by the order they were set, and
//! random numbers from a generator seeded by the caller. On a simulated
//! network and clock a seed therefore replays the same gossip.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand_foca::SeedableRng as _;
use rand_foca::rngs::SmallRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::MembershipConfig;
use super::frame;
use super::identity::Identity;
use super::socket::GossipSocket;
use crate::placement::{NodeId, View};

/// What the [`super::Membership`] handle asks of the driver.
pub(crate) enum Command {
    /// Advertise readiness; answered once this node's view shows it.
    SetReady(bool, oneshot::Sender<()>),
    /// Tell a few members this node leaves, then stop.
    Leave(oneshot::Sender<()>),
}

/// The largest datagram received; SWIM messages stay below the configured
/// packet size, well under this.
const DATAGRAM_MAX: usize = 64 * 1024;
/// Datagrams received but not yet handled. When full, the receiver waits and
/// the socket's own buffer fills, then drops: gossip tolerates loss.
const INBOX: usize = 64;

pub(crate) struct Driver {
    foca: Foca<Identity, PostcardCodec, SmallRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<Identity>,
    socket: Arc<dyn GossipSocket>,
    cluster_id: String,
    /// Gossip addresses to announce to while they are not live members.
    seeds: Vec<SocketAddr>,
    announce_every: Duration,
    views: watch::Sender<View>,
    /// Timer events due, by due time and then by the order they were set.
    timers: BTreeMap<(Instant, u64), Timer<Identity>>,
    timers_set: u64,
    datagram: Vec<u8>,
}

impl Driver {
    /// A driver for `identity`, gossiping on `socket` as `cfg` says and
    /// publishing views on `views`.
    pub fn new(
        cfg: &MembershipConfig,
        identity: Identity,
        socket: Arc<dyn GossipSocket>,
        views: watch::Sender<View>,
    ) -> Self {
        let foca = Foca::new(
            identity,
            cfg.swim_config(),
            SmallRng::seed_from_u64(cfg.rng_seed),
            PostcardCodec,
        );
        let driver = Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket,
            cluster_id: cfg.cluster_id.clone(),
            seeds: cfg.seeds.clone(),
            announce_every: cfg.announce_interval(),
            views,
            timers: BTreeMap::new(),
            timers_set: 0,
            datagram: Vec::new(),
        };
        driver.publish();
        driver
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let (inbox_tx, mut inbox) = mpsc::channel(INBOX);
        let receiver = tokio::spawn(receive(self.socket.clone(), inbox_tx));
        let mut announce = tokio::time::interval(self.announce_every);
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.first_key_value().map(|((at, _), _)| *at);
            // Biased: one fixed order of the sources, for replays.
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::SetReady(ready, done)) => {
                        self.set_ready(ready);
                        self.step().await;
                        let _ = done.send(());
                    }
                    Some(Command::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        break;
                    }
                    // The handle was dropped without a word: leave anyway.
                    None => {
                        self.leave().await;
                        break;
                    }
                },
                _ = sleep_until(next_timer), if next_timer.is_some() => {
                    self.fire_due_timers();
                    self.step().await;
                }
                Some((datagram, from)) = inbox.recv() => {
                    self.receive(&datagram, from);
                    self.step().await;
                }
                _ = announce.tick() => {
                    self.announce_to_seeds();
                    self.step().await;
                }
            }
        }
        receiver.abort();
    }

    fn set_ready(&mut self, ready: bool) {
        let current = self.foca.identity().clone();
        if current.ready == ready {
            return;
        }
        if let Err(e) = self
            .foca
            .change_identity(current.next(ready), &mut self.runtime)
        {
            tracing::warn!(error = %e, ready, "gossip could not advertise readiness");
        }
    }

    async fn leave(&mut self) {
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "gossip could not announce leaving");
        }
        self.step().await;
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %e, "gossip timer");
            }
        }
    }

    fn receive(&mut self, datagram: &[u8], from: SocketAddr) {
        match frame::decode(&self.cluster_id, datagram) {
            Ok(message) => {
                if let Err(e) = self.foca.handle_data(message, &mut self.runtime) {
                    tracing::debug!(error = %e, %from, "gossip message dropped");
                }
            }
            Err(e) => tracing::debug!(error = %e, %from, "gossip datagram dropped"),
        }
    }

    /// Announces this node to every seed that is not a live member: how a
    /// starting node finds the cluster, and how two sides of a healed
    /// partition find each other again.
    fn announce_to_seeds(&mut self) {
        let me = self.foca.identity().gossip_addr;
        let seeds: Vec<SocketAddr> = self
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != me && !self.foca.iter_members().any(|m| m.id().gossip_addr == *s))
            .collect();
        for seed in seeds {
            if let Err(e) = self.foca.announce(Identity::seed(seed), &mut self.runtime) {
                tracing::debug!(error = %e, %seed, "gossip announce");
            }
        }
    }

    /// Carries out what the protocol asked for, then republishes the view.
    async fn step(&mut self) {
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.insert((now + after, self.timers_set), timer);
            self.timers_set += 1;
        }
        while let Some(notification) = self.runtime.to_notify() {
            log(&notification);
        }
        while let Some((to, message)) = self.runtime.to_send() {
            frame::encode(&self.cluster_id, &message, &mut self.datagram);
            // Lost like any datagram: SWIM probes and gossips again.
            if let Err(e) = self.socket.send_to(&self.datagram, to.gossip_addr).await {
                tracing::debug!(error = %e, to = %to.gossip_addr, "gossip send failed");
            }
        }
        self.publish();
    }

    /// Publishes the view if it changed: this node and every active member
    /// (alive or suspected), the newest life of each node id.
    fn publish(&self) {
        let mut newest: BTreeMap<NodeId, &Identity> = BTreeMap::new();
        let me = self.foca.identity();
        let members = self.foca.iter_members().map(|m| m.id());
        for id in std::iter::once(me).chain(members) {
            let node = NodeId::new(id.node.as_str());
            match newest.get(&node) {
                Some(kept) if kept.rank() >= id.rank() => {}
                _ => {
                    newest.insert(node, id);
                }
            }
        }
        let view = View::new(newest.values().map(|id| id.member()));
        self.views.send_if_modified(|current| {
            if *current == view {
                return false;
            }
            *current = view;
            true
        });
    }
}

fn log(notification: &OwnedNotification<Identity>) {
    match notification {
        OwnedNotification::MemberUp(id) => {
            tracing::info!(node = %id.node, generation = id.generation, version = id.version, ready = id.ready, "gossip: member up")
        }
        OwnedNotification::MemberDown(id) => {
            tracing::info!(node = %id.node, generation = id.generation, version = id.version, "gossip: member down")
        }
        OwnedNotification::Rename(old, new) => {
            tracing::debug!(node = %new.node, from = old.version, to = new.version, ready = new.ready, "gossip: member changed")
        }
        OwnedNotification::Active => tracing::debug!("gossip: this node is known to the cluster"),
        OwnedNotification::Idle => tracing::info!("gossip: no other member is active"),
        OwnedNotification::Defunct => {
            tracing::warn!("gossip: this node was declared down and cannot rejoin")
        }
        OwnedNotification::Rejoin(id) => {
            tracing::info!(
                version = id.version,
                "gossip: rejoined after being declared down"
            )
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads datagrams into the inbox until the socket fails or the driver
/// stops.
async fn receive(socket: Arc<dyn GossipSocket>, inbox: mpsc::Sender<(Vec<u8>, SocketAddr)>) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => {
                if inbox.send((buf[..len].to_vec(), from)).await.is_err() {
                    return;
                }
            }
            // An ICMP error of an earlier send, or a full buffer: UDP as usual.
            Err(e) if is_transient(&e) => {
                tracing::debug!(error = %e, "gossip receive");
            }
            Err(e) => {
                tracing::error!(error = %e, "the gossip socket failed; this node no longer hears the cluster");
                return;
            }
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, Interrupted, WouldBlock};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    )
}
