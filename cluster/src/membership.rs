//! Cluster membership: which nodes are up, in which AZ, where to reach them,
//! and whether they take devices.
//!
//! Every node runs one [`Membership`]. It gossips over UDP with the `chitchat`
//! crate (scuttlebutt anti-entropy with a phi-accrual failure detector) and
//! advertises three keys about itself:
//!
//! | key | value |
//! |---|---|
//! | `az` | the node's [`Az`] label |
//! | `grpc_addr` | where peers reach the node's cluster service |
//! | `ready` | `"true"` when the node takes devices, else `"false"` |
//!
//! From the nodes that the failure detector holds live, membership builds a
//! [`View`], the input of placement, and publishes it on a `watch` channel
//! whenever a node joins, dies, or changes one of those keys. Placement then
//! runs on the view alone ([`View::place`]).
//!
//! # Generations
//!
//! A node is known to gossip by its id, a generation number and its gossip
//! address. The generation tells a restarted node from its previous life: a
//! node must start each life with a higher generation than the one before. It
//! comes from the caller, never from a clock read here, so that simulations
//! replay exactly; the node passes its start time in milliseconds, or a
//! counter it keeps in its data directory and bumps at every start. When two
//! lives of one node are both still held live (the old one until the failure
//! detector drops it), the view keeps the one with the higher generation.
//!
//! # Time and randomness
//!
//! Membership itself reads no clock and draws no random numbers, but the gossip
//! crate does: it measures heartbeats with `tokio::time` (which follows a
//! simulated clock) and picks gossip peers with a thread-local random
//! generator. [`Membership::start`] gossips over real UDP; a simulated network
//! binds its own socket and calls [`Membership::start_on`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport, UdpSocket};
use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
    ProtocolVersion,
};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::placement::{Az, Member, NodeId, View};

/// The gossip key holding a node's AZ label.
pub(crate) const KEY_AZ: &str = "az";
/// The gossip key holding the address of a node's cluster service.
pub(crate) const KEY_GRPC_ADDR: &str = "grpc_addr";
/// The gossip key holding `"true"` or `"false"`: whether a node takes devices.
pub(crate) const KEY_READY: &str = "ready";

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
}

impl MembershipConfig {
    /// A configuration with the defaults: no seeds, cluster id `"vatio"`,
    /// gossip every 200 ms, [`FailureDetection::default`].
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
            failure_detector: FailureDetection::default(),
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
        let fd = &self.failure_detector;
        if !(fd.phi_threshold.is_finite() && fd.phi_threshold > 0.0) {
            return invalid(format!(
                "failure_detector.phi_threshold {} is not a positive number",
                fd.phi_threshold
            ));
        }
        if fd.heartbeat_intervals_len_max == 0 {
            return invalid("failure_detector.heartbeat_intervals_len_max is zero".to_owned());
        }
        if fd.heartbeat_interval_prior.is_zero() {
            return invalid("failure_detector.heartbeat_interval_prior is zero".to_owned());
        }
        if fd.heartbeat_interval_max < self.gossip_interval {
            return invalid(format!(
                "failure_detector.heartbeat_interval_max {:?} is shorter than gossip_interval {:?}",
                fd.heartbeat_interval_max, self.gossip_interval
            ));
        }
        Ok(())
    }
}

/// The failure detector's settings.
///
/// A peer is declared dead once the time since its last heartbeat exceeds
/// `phi_threshold` times its mean heartbeat interval. Heartbeats spread with
/// gossip, so with the default 200 ms gossip interval a crashed node leaves
/// the other nodes' views within a few seconds on one machine.
#[derive(Clone, Debug)]
pub struct FailureDetection {
    /// How many mean heartbeat intervals of silence make a peer dead. Higher
    /// is slower to detect and less prone to false alarms.
    pub phi_threshold: f64,
    /// The mean heartbeat interval assumed before any has been measured; it
    /// weighs on the mean until a few heartbeats have arrived.
    pub heartbeat_interval_prior: Duration,
    /// Gaps between heartbeats longer than this are not measured (a peer
    /// coming back after a pause does not inflate the mean).
    pub heartbeat_interval_max: Duration,
    /// How many recent heartbeat intervals the mean is taken over.
    pub heartbeat_intervals_len_max: usize,
    /// How long a dead peer's state is kept before it is forgotten. Until
    /// then it is not in the view but its old state is still gossiped about;
    /// it bounds the memory held for nodes that never come back.
    pub dead_node_grace: Duration,
}

impl Default for FailureDetection {
    fn default() -> Self {
        Self {
            phi_threshold: 8.0,
            heartbeat_interval_prior: Duration::from_millis(200),
            heartbeat_interval_max: Duration::from_secs(2),
            heartbeat_intervals_len_max: 100,
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
    #[error("starting gossip of node {node} on {addr}: {reason}")]
    Start {
        node: NodeId,
        addr: SocketAddr,
        reason: String,
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
/// Dropping it stops gossip too, without waiting; [`Membership::shutdown`]
/// also waits until the gossip socket is closed.
pub struct Membership {
    node: NodeId,
    gossip_addr: SocketAddr,
    gossip: ChitchatHandle,
    views: Arc<Views>,
    view_rx: watch::Receiver<View>,
    /// Republishes the view when the gossip's live nodes change.
    follower: JoinHandle<()>,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("node", &self.node)
            .field("gossip_addr", &self.gossip_addr)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Binds the gossip socket, starts gossiping (not ready: see
    /// [`Membership::set_ready`]) and contacts the seeds.
    pub async fn start(cfg: MembershipConfig) -> Result<Self, MembershipError> {
        cfg.validate()?;
        let socket =
            UdpSocket::open(cfg.gossip_listen)
                .await
                .map_err(|e| MembershipError::Bind {
                    addr: cfg.gossip_listen,
                    source: into_io_error(e),
                })?;
        Self::start_on(cfg, Box::new(socket)).await
    }

    /// [`Membership::start`] on a gossip socket already bound (by a
    /// simulated network, say).
    pub async fn start_on(
        cfg: MembershipConfig,
        socket: Box<dyn Socket>,
    ) -> Result<Self, MembershipError> {
        cfg.validate()?;
        let bound = socket.local_addr().map_err(|e| MembershipError::Bind {
            addr: cfg.gossip_listen,
            source: into_io_error(e),
        })?;
        let gossip_addr = cfg.gossip_advertise.unwrap_or(bound);

        let fd = &cfg.failure_detector;
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(cfg.node.as_str(), cfg.generation, gossip_addr),
            cluster_id: cfg.cluster_id.clone(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: bound,
            seed_nodes: cfg.seeds.iter().map(SocketAddr::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: fd.phi_threshold,
                sampling_window_size: fd.heartbeat_intervals_len_max,
                max_interval: fd.heartbeat_interval_max,
                initial_interval: fd.heartbeat_interval_prior,
                dead_node_grace_period: fd.dead_node_grace,
            },
            // Membership never deletes keys; this only bounds tombstones.
            marked_for_deletion_grace_period: fd.dead_node_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // The wire format every chitchat release decodes.
            protocol_version: ProtocolVersion::V0,
        };
        let initial_keys = vec![
            (KEY_AZ.to_owned(), cfg.az.to_string()),
            (KEY_GRPC_ADDR.to_owned(), cfg.grpc_addr.to_string()),
            (KEY_READY.to_owned(), false.to_string()),
        ];
        let transport = BoundSocket(StdMutex::new(Some(socket)));
        let gossip = chitchat::spawn_chitchat(chitchat_config, initial_keys, &transport)
            .await
            .map_err(|e| MembershipError::Start {
                node: cfg.node.clone(),
                addr: bound,
                reason: format!("{e:#}"),
            })?;

        let chitchat = gossip.chitchat();
        let (live_rx, views, view_rx) = {
            let guard = chitchat.lock().await;
            let (view_tx, view_rx) = watch::channel(View::default());
            let views = Arc::new(Views {
                tx: view_tx,
                warned: StdMutex::new(HashSet::new()),
            });
            views.publish(&guard);
            (guard.live_nodes_watcher(), views, view_rx)
        };
        let follower = tokio::spawn(follow(
            Arc::downgrade(&chitchat),
            live_rx,
            Arc::clone(&views),
        ));
        tracing::info!(node = %cfg.node, az = %cfg.az, %gossip_addr, generation = cfg.generation, "membership started");
        Ok(Self {
            node: cfg.node,
            gossip_addr,
            gossip,
            views,
            view_rx,
            follower,
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
        let chitchat = self.gossip.chitchat();
        let mut guard = chitchat.lock().await;
        guard.self_node_state().set(KEY_READY, ready);
        self.views.publish(&guard);
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

    /// Stops gossiping and waits until the gossip socket is closed. Peers
    /// drop this node once their failure detectors notice its silence.
    pub async fn shutdown(self) -> Result<(), MembershipError> {
        let Self {
            node,
            gossip_addr,
            gossip,
            follower,
            ..
        } = self;
        follower.abort();
        let stopped = gossip.shutdown().await;
        tracing::info!(%node, %gossip_addr, "membership stopped");
        stopped.map_err(|e| MembershipError::Shutdown {
            node,
            addr: gossip_addr,
            reason: format!("{e:#}"),
        })
    }
}

/// Waits for changes of the gossip's live nodes and republishes the view.
///
/// Holds the gossip state weakly: when gossip stops, the state and its live
/// nodes channel are dropped, and this ends.
async fn follow(
    chitchat: Weak<Mutex<Chitchat>>,
    mut live_rx: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    views: Arc<Views>,
) {
    while live_rx.changed().await.is_ok() {
        let Some(chitchat) = chitchat.upgrade() else {
            return;
        };
        let guard = chitchat.lock().await;
        views.publish(&guard);
    }
}

/// The publishing side of the view.
struct Views {
    tx: watch::Sender<View>,
    /// Live gossip members that lack a usable key, already logged. Kept to
    /// the members currently live, so it is bounded by the cluster's size.
    warned: StdMutex<HashSet<ChitchatId>>,
}

impl Views {
    /// Rebuilds the view from the gossip state and publishes it if it
    /// changed. Called with the gossip state locked, so that publications
    /// follow the order of the state's changes.
    fn publish(&self, chitchat: &Chitchat) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let live: Vec<&ChitchatId> = chitchat.live_nodes().collect();
        warned.retain(|id| live.contains(&id));
        // The highest generation of each node id wins: a restarted node
        // replaces its previous life before the detector has dropped it.
        let mut newest: BTreeMap<NodeId, (u64, Member)> = BTreeMap::new();
        for id in live {
            let member = match chitchat.node_state(id).map(member_of) {
                Some(Ok(member)) => member,
                Some(Err(reason)) => {
                    if warned.insert(id.clone()) {
                        tracing::warn!(node = %id.node_id, generation = id.generation_id, gossip_addr = %id.gossip_advertise_addr, reason, "live node left out of the view");
                    }
                    continue;
                }
                // Known live before any of its state arrived.
                None => continue,
            };
            match newest.get(&member.id) {
                Some((generation, _)) if *generation >= id.generation_id => {}
                _ => {
                    newest.insert(member.id.clone(), (id.generation_id, member));
                }
            }
        }
        let view = View::new(newest.into_values().map(|(_, member)| member));
        self.tx.send_if_modified(|current| {
            if *current == view {
                return false;
            }
            *current = view;
            true
        });
    }
}

/// The member a node's gossiped state describes, or what is missing.
fn member_of(state: &NodeState) -> Result<Member, String> {
    let get = |key: &str| {
        state
            .get(key)
            .ok_or_else(|| format!("it advertises no `{key}`"))
    };
    let az = get(KEY_AZ)?;
    let addr = get(KEY_GRPC_ADDR)?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("its `{KEY_GRPC_ADDR}` {addr:?} is not a socket address: {e}"))?;
    let ready = match get(KEY_READY)? {
        "true" => true,
        "false" => false,
        other => {
            return Err(format!(
                "its `{KEY_READY}` {other:?} is neither true nor false"
            ));
        }
    };
    Ok(Member {
        id: NodeId::new(state.chitchat_id().node_id.clone()),
        az: Az::new(az),
        addr,
        ready,
    })
}

/// A transport that hands gossip the socket bound in [`Membership::start`],
/// so the advertised address is known (port 0 included) before gossip starts.
struct BoundSocket(StdMutex<Option<Box<dyn Socket>>>);

#[async_trait]
impl Transport for BoundSocket {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| anyhow::anyhow!("the gossip socket for {listen_addr} was already taken"))
    }
}

/// The I/O error behind a gossip transport error, for a precise message.
fn into_io_error(error: anyhow::Error) -> io::Error {
    error
        .downcast::<io::Error>()
        .unwrap_or_else(|other| io::Error::other(format!("{other:#}")))
}

#[cfg(test)]
mod tests;
