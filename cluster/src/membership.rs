//! Cluster membership: which nodes are up, in which AZ, where to reach them,
//! and whether they take devices.
//!
//! Every node runs one [`Membership`]. It gossips over UDP with SWIM (the
//! `foca` crate: probes with indirect probes, suspicion, and dissemination
//! piggybacked on the probes), and advertises itself in its gossip
//! identity: node id, generation, AZ, gRPC address and readiness. A change of
//! readiness is a new version of the identity, which replaces the old one
//! everywhere (see [`identity`]).
//!
//! From the members SWIM holds active (alive or suspected), membership
//! builds a [`View`], the input of placement, and publishes it on a `watch`
//! channel whenever a node joins, dies, or changes what it advertises.
//! Placement then runs on the view alone ([`View::place`]).
//!
//! # Generations
//!
//! A node must start each life with a higher generation than the one before,
//! so that peers tell it from its previous life. It comes from the caller,
//! never from a clock read here: the node keeps a counter in its data
//! directory and bumps it at every start. When two lives of one node are
//! both still held active (the old one until it is declared down), the view
//! keeps the newer.
//!
//! # Time and randomness
//!
//! Membership reads time only through `tokio::time` (which follows a
//! simulated clock) and draws random numbers (whom to probe and gossip to)
//! from a generator seeded by the caller, and it handles datagrams, timers
//! and commands in one task in one fixed order (see [`driver`]). On a
//! simulated network a seed thus replays the same gossip.
//! [`Membership::start`] gossips over real UDP; a simulated network binds its
//! own socket and calls [`Membership::start_on`].
//!
//! Datagrams carry the cluster id ahead of the SWIM message ([`frame`]):
//! nodes of another cluster are never heard.

mod driver;
mod frame;
pub(crate) mod identity;
mod socket;

use std::io;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::driver::{Command, Driver};
use self::identity::Identity;
pub use self::socket::{GossipSocket, UdpGossip};
use crate::placement::{Az, NodeId, View};

/// Commands waiting for the driver: readiness changes and the leave.
const COMMANDS: usize = 8;
/// How many members each periodic gossip reaches.
const GOSSIP_FANOUT: usize = 3;
/// The cluster size the protocol tunes its retransmissions for; a larger
/// cluster still converges, a little slower.
const CLUSTER_SIZE_HINT: u32 = 16;

/// How one node joins the cluster's gossip.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's id: unique in the cluster, the same across restarts.
    pub node: NodeId,
    pub az: Az,
    /// Where peers reach this node's cluster service; advertised, not bound.
    pub grpc_addr: SocketAddr,
    /// The UDP address gossip binds. Port 0 takes a free port (tests).
    pub gossip_listen: SocketAddr,
    /// The UDP address peers send gossip to, when it differs from the bound
    /// one (a wildcard listen address, NAT). `None` advertises the bound
    /// address, which then must not be a wildcard.
    pub gossip_advertise: Option<SocketAddr>,
    /// Gossip addresses of nodes to contact first. One reachable seed is
    /// enough to learn the whole cluster; a node may list itself.
    pub seeds: Vec<SocketAddr>,
    /// Nodes gossip only with nodes of the same cluster id.
    pub cluster_id: String,
    /// This life of the node: higher than any earlier life's (see the module
    /// documentation). The node passes its start time or a persisted counter.
    pub generation: u64,
    /// How often the node gossips with a few peers. Failure detection time
    /// scales with it.
    pub gossip_interval: Duration,
    pub failure_detector: FailureDetection,
    /// Seeds the random choices of the protocol (whom to probe, whom to
    /// gossip to). The node hands in fresh entropy; a simulation its seed.
    pub rng_seed: u64,
}

impl MembershipConfig {
    /// A configuration with the defaults: no seeds, cluster id `"vatio"`,
    /// gossip every 200 ms, [`FailureDetection::for_gossip_interval`] of it,
    /// random seed 0.
    pub fn new(
        node: NodeId,
        az: Az,
        grpc_addr: SocketAddr,
        gossip_listen: SocketAddr,
        generation: u64,
    ) -> Self {
        Self {
            node,
            az,
            grpc_addr,
            gossip_listen,
            gossip_advertise: None,
            seeds: Vec::new(),
            cluster_id: "vatio".to_owned(),
            generation,
            gossip_interval: Duration::from_millis(200),
            failure_detector: FailureDetection::for_gossip_interval(Duration::from_millis(200)),
            rng_seed: 0,
        }
    }

    fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |reason: String| {
            Err(MembershipError::Config {
                node: self.node.clone(),
                reason,
            })
        };
        if self.node.as_str().is_empty() {
            return invalid("the node id is empty".to_owned());
        }
        if self.cluster_id.is_empty() {
            return invalid("the cluster id is empty".to_owned());
        }
        if self.gossip_interval.is_zero() {
            return invalid("gossip_interval is zero".to_owned());
        }
        if self.gossip_advertise.is_none() && self.gossip_listen.ip().is_unspecified() {
            return invalid(format!(
                "gossip_listen {} is a wildcard address: set gossip_advertise to an address peers can reach",
                self.gossip_listen
            ));
        }
        if self.cluster_id.len() > frame::CLUSTER_ID_MAX {
            return invalid(format!(
                "the cluster id is {} bytes long, more than {}",
                self.cluster_id.len(),
                frame::CLUSTER_ID_MAX
            ));
        }
        let fd = &self.failure_detector;
        if fd.probe_period.is_zero() || fd.suspect_to_down_after.is_zero() {
            return invalid(format!(
                "failure detection needs a probe period and a suspicion time above zero, not {:?} and {:?}",
                fd.probe_period, fd.suspect_to_down_after
            ));
        }
        if fd.probe_rtt.is_zero() || fd.probe_rtt >= fd.probe_period {
            return invalid(format!(
                "failure_detector.probe_rtt {:?} must be above zero and shorter than probe_period {:?}",
                fd.probe_rtt, fd.probe_period
            ));
        }
        Ok(())
    }

    /// The protocol's settings.
    fn swim_config(&self) -> foca::Config {
        let fd = &self.failure_detector;
        let every = |frequency: Duration, members: usize| {
            Some(foca::PeriodicParams {
                frequency,
                num_members: NonZeroUsize::new(members).unwrap_or(NonZeroUsize::MIN),
            })
        };
        foca::Config {
            probe_period: fd.probe_period,
            probe_rtt: fd.probe_rtt,
            suspect_to_down_after: fd.suspect_to_down_after,
            remove_down_after: Some(fd.dead_node_grace),
            periodic_gossip: every(self.gossip_interval, GOSSIP_FANOUT),
            // Members declared down are asked now and then whether they
            // are back: how the two sides of a healed partition meet again.
            periodic_announce_to_down_members: every(fd.probe_period * 2, 2),
            periodic_announce: every(fd.probe_period * 30, 1),
            ..foca::Config::new_lan(NonZeroU32::new(CLUSTER_SIZE_HINT).unwrap_or(NonZeroU32::MIN))
        }
    }

    /// How often a node announces itself to seeds that are not members.
    fn announce_interval(&self) -> Duration {
        self.failure_detector.probe_period
    }
}

/// The failure detector's settings (SWIM: each node probes one member per
/// period; a member that answers neither a direct probe nor probes relayed
/// through others is suspected, and declared down unless it refutes the
/// suspicion in time).
#[derive(Clone, Debug)]
pub struct FailureDetection {
    /// How often this node probes one member.
    pub probe_period: Duration,
    /// How long a direct probe waits for its answer before others are asked
    /// to probe too. Shorter than `probe_period`.
    pub probe_rtt: Duration,
    /// How long a suspected member has to refute before it is declared down.
    /// Longer is slower to detect and less prone to false alarms.
    pub suspect_to_down_after: Duration,
    /// How long a down member is remembered (so that its old messages are
    /// recognised); bounds the memory held for nodes that never come back.
    pub dead_node_grace: Duration,
}

impl FailureDetection {
    /// Settings scaled to the gossip interval: a probe every 2 intervals,
    /// answered within 1, down after 4 of suspicion (a suspected member
    /// hears of it within an interval or two and refutes). With the default
    /// 200 ms interval a crashed node leaves the views in about 1.5 s.
    pub fn for_gossip_interval(gossip_interval: Duration) -> Self {
        Self {
            probe_period: gossip_interval * 2,
            probe_rtt: gossip_interval,
            suspect_to_down_after: gossip_interval * 4,
            dead_node_grace: Duration::from_secs(60 * 60),
        }
    }
}

/// Why membership could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("membership config of node {node}: {reason}")]
    Config { node: NodeId, reason: String },
    #[error("binding gossip socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("stopping gossip of node {node} on {addr}: {reason}")]
    Shutdown {
        node: NodeId,
        addr: SocketAddr,
        reason: String,
    },
}

/// This node's membership in the cluster: its gossip, its advertised state
/// and the resulting [`View`].
///
/// Dropping it stops gossip too, without telling the cluster;
/// [`Membership::shutdown`] tells a few members first and waits until the
/// gossip socket is closed.
#[derive(Debug)]
pub struct Membership {
    node: NodeId,
    gossip_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    view_rx: watch::Receiver<View>,
    driver: JoinHandle<()>,
}

impl Membership {
    /// Binds the gossip socket, starts gossiping (not ready: see
    /// [`Membership::set_ready`]) and contacts the seeds.
    pub async fn start(cfg: MembershipConfig) -> Result<Self, MembershipError> {
        cfg.validate()?;
        let socket =
            UdpGossip::bind(cfg.gossip_listen)
                .await
                .map_err(|source| MembershipError::Bind {
                    addr: cfg.gossip_listen,
                    source,
                })?;
        Self::start_on(cfg, Arc::new(socket)).await
    }

    /// [`Membership::start`] on a gossip socket already bound (by a
    /// simulated network, say).
    pub async fn start_on(
        cfg: MembershipConfig,
        socket: Arc<dyn GossipSocket>,
    ) -> Result<Self, MembershipError> {
        cfg.validate()?;
        let bound = socket
            .local_addr()
            .map_err(|source| MembershipError::Bind {
                addr: cfg.gossip_listen,
                source,
            })?;
        let gossip_addr = cfg.gossip_advertise.unwrap_or(bound);
        let identity = Identity {
            node: cfg.node.as_str().to_owned(),
            generation: cfg.generation,
            version: 0,
            gossip_addr,
            az: cfg.az.as_str().to_owned(),
            grpc_addr: cfg.grpc_addr,
            ready: false,
        };
        let (view_tx, view_rx) = watch::channel(View::default());
        let (commands, commands_rx) = mpsc::channel(COMMANDS);
        let driver = Driver::new(&cfg, identity, socket, view_tx);
        let driver = tokio::spawn(driver.run(commands_rx));
        tracing::info!(node = %cfg.node, az = %cfg.az, %gossip_addr, generation = cfg.generation, "membership started");
        Ok(Self {
            node: cfg.node,
            gossip_addr,
            commands,
            view_rx,
            driver,
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The gossip address peers use for this node: a seed for others.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// Announces whether this node takes devices. This node's own view shows
    /// the change when this returns; the others' views within a few gossip
    /// rounds.
    pub async fn set_ready(&self, ready: bool) {
        let (done, applied) = oneshot::channel();
        if self
            .commands
            .send(Command::SetReady(ready, done))
            .await
            .is_ok()
        {
            // Gossip has stopped if this fails: nothing left to announce.
            let _ = applied.await;
        }
    }

    /// The live members as of now, this node included.
    pub fn view(&self) -> View {
        self.view_rx.borrow().clone()
    }

    /// A receiver of the view, marked changed each time the view changes
    /// (a member joins, dies, or changes its AZ, address or readiness).
    pub fn watch(&self) -> watch::Receiver<View> {
        self.view_rx.clone()
    }

    /// Tells a few members this node leaves (they drop it at once instead of
    /// detecting its silence), then stops gossiping and closes the socket.
    pub async fn shutdown(mut self) -> Result<(), MembershipError> {
        let (done, left) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).await.is_ok() {
            let _ = left.await;
        }
        let stopped = (&mut self.driver).await;
        tracing::info!(node = %self.node, gossip_addr = %self.gossip_addr, "membership stopped");
        stopped.map_err(|e| MembershipError::Shutdown {
            node: self.node.clone(),
            addr: self.gossip_addr,
            reason: e.to_string(),
        })
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests;
