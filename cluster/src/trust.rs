//! Which gossip members this node works with. Gossip itself is not
//! authenticated, so a member enters the view placement uses only once this
//! node has called it over the peer transport: with TLS, that call succeeds
//! only if the member holds a certificate for its node id from the
//! cluster's CA (and its own checks admit this node). A node with a
//! certificate from another CA can gossip, but it is never placed on and
//! never forwarded to.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vatio_proto::v1::ClaimRequest;

use crate::membership::Membership;
use crate::peer::PeerClients;
use crate::placement::{Member, NodeId, View};

/// How often members that failed verification are tried again.
const RETRY: Duration = Duration::from_millis(500);
/// For how many probe timeouts after start every live member counts as
/// one to wait for before claiming: a node that starts has verified no one
/// yet, and its first view may lack the members holding copies. A member
/// never verified (another CA) holds claims back only this long.
const START_GRACE_PROBES: u32 = 3;

/// Whether this node may take devices over, as far as its view of the
/// members goes: every copy of a device must be in reach of its claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimGate {
    /// Members alive by gossip and not verified (again) yet: ones verified
    /// before (a partition that just healed, lost messages) and, while
    /// this node starts, any.
    pub unverified: Vec<NodeId>,
    /// This node started moments ago and may not know every member yet:
    /// after a restart (its log holds steps from before) while its view of
    /// the members changed within the last probe timeout, as the node that
    /// took its devices over while it was down may be missing from it; and
    /// with peers to join (`cluster.seeds`) while it sees none of them yet.
    /// (A node that starts with an empty log and sees a peer may claim at
    /// once: the peers' answers name the members it lacks.)
    pub discovering: bool,
}

/// How this node started, as far as claiming goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartedAs {
    /// Its log holds steps from before this start.
    pub restarted: bool,
    /// It has peers to join (`cluster.seeds` is not empty).
    pub expects_peers: bool,
}

/// The verified view, kept current by a background task.
pub struct TrustedView {
    rx: watch::Receiver<View>,
    gate: watch::Receiver<ClaimGate>,
    task: JoinHandle<()>,
}

impl TrustedView {
    /// Starts verifying `membership`'s members (this node is trusted as is).
    pub fn start(
        membership: Arc<Membership>,
        clients: PeerClients,
        timeout: Duration,
        started: StartedAs,
    ) -> Self {
        let me = membership.node().clone();
        let initial = filtered(&membership.view(), &me, &BTreeSet::new());
        let (tx, rx) = watch::channel(initial);
        // Closed until the node has looked at its members.
        let (gate_tx, gate) = watch::channel(ClaimGate {
            unverified: Vec::new(),
            discovering: started.restarted || started.expects_peers,
        });
        let task = tokio::spawn(verify(
            membership, clients, timeout, me, started, tx, gate_tx,
        ));
        Self { rx, gate, task }
    }

    pub fn watch(&self) -> watch::Receiver<View> {
        self.rx.clone()
    }

    /// Whether claims may go ahead (see [`ClaimGate`]).
    pub fn gate_watch(&self) -> watch::Receiver<ClaimGate> {
        self.gate.clone()
    }

    pub fn view(&self) -> View {
        self.rx.borrow().clone()
    }
}

impl Drop for TrustedView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn filtered(view: &View, me: &NodeId, trusted: &BTreeSet<(NodeId, SocketAddr)>) -> View {
    View::new(
        view.members()
            .iter()
            .filter(|m| m.id == *me || trusted.contains(&(m.id.clone(), m.addr)))
            .cloned(),
    )
}

async fn verify(
    membership: Arc<Membership>,
    clients: PeerClients,
    timeout: Duration,
    me: NodeId,
    started: StartedAs,
    tx: watch::Sender<View>,
    gate_tx: watch::Sender<ClaimGate>,
) {
    let mut changes = membership.watch();
    // A member is verified at one address; a restart elsewhere is checked again.
    let mut trusted: BTreeSet<(NodeId, SocketAddr)> = BTreeSet::new();
    // Every member verified once, at any address.
    let mut known: BTreeSet<NodeId> = BTreeSet::new();
    let grace_until = tokio::time::Instant::now() + timeout * START_GRACE_PROBES;
    // The member ids last seen, and since when.
    let mut ids: Vec<NodeId> = Vec::new();
    let mut ids_since = tokio::time::Instant::now();
    let mut refused_logged: BTreeSet<(NodeId, SocketAddr)> = BTreeSet::new();
    loop {
        let view = changes.borrow_and_update().clone();
        let unverified: Vec<&Member> = view
            .members()
            .iter()
            .filter(|m| m.id != me && !trusted.contains(&(m.id.clone(), m.addr)))
            .collect();
        let probes = unverified.iter().map(|m| probe(&clients, &me, m, timeout));
        for (m, result) in unverified.iter().zip(join_all(probes).await) {
            let key = (m.id.clone(), m.addr);
            match result {
                Ok(()) => {
                    tracing::info!(peer = %m.id, az = %m.az, addr = %m.addr, "peer verified");
                    refused_logged.remove(&key);
                    known.insert(key.0.clone());
                    trusted.insert(key);
                }
                Err(e) => {
                    if refused_logged.insert(key) {
                        tracing::warn!(peer = %m.id, addr = %m.addr, error = %e, "gossip member not verified; not placing devices on it");
                    }
                }
            }
        }
        trusted.retain(|(id, addr)| view.member(id).is_some_and(|m| m.addr == *addr));
        let next = filtered(&view, &me, &trusted);
        tx.send_if_modified(|current| {
            let changed = *current != next;
            if changed {
                *current = next;
            }
            changed
        });
        let now = tokio::time::Instant::now();
        let starting = now < grace_until;
        let mut seen: Vec<NodeId> = view.members().iter().map(|m| m.id.clone()).collect();
        seen.sort();
        if seen != ids {
            ids = seen;
            ids_since = now;
        }
        let unverified: Vec<NodeId> = view
            .members()
            .iter()
            .filter(|m| {
                m.id != me
                    && (starting || known.contains(&m.id))
                    && !trusted.contains(&(m.id.clone(), m.addr))
            })
            .map(|m| m.id.clone())
            .collect();
        let alone = view.members().iter().all(|m| m.id == me);
        let gate = ClaimGate {
            unverified,
            discovering: starting
                && ((started.restarted && now.saturating_duration_since(ids_since) < timeout)
                    || (started.expects_peers && alone)),
        };
        gate_tx.send_if_modified(|current| {
            let changed = *current != gate;
            if changed {
                *current = gate;
            }
            changed
        });
        let everyone_verified = view.members().len() == tx.borrow().members().len();
        let wait_for_change = changes.changed();
        // While starting, look again soon: the gate opens with time.
        if everyone_verified && !starting {
            if wait_for_change.await.is_err() {
                return;
            }
        } else {
            // Retry the unverified ones soon, or at the next change.
            let _ = tokio::time::timeout(RETRY, wait_for_change).await;
        }
    }
}

/// A no-op peer call (a claim of nothing): it succeeds only if each side's
/// transport accepts the other.
async fn probe(
    clients: &PeerClients,
    me: &NodeId,
    member: &Member,
    timeout: Duration,
) -> Result<(), String> {
    let mut client = clients.client(member).map_err(|e| e.to_string())?;
    let request = ClaimRequest {
        by_node: me.to_string(),
        devices: Vec::new(),
        log_head: 0,
    };
    match tokio::time::timeout(timeout, client.claim(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
