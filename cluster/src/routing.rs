//! Where a batch goes in a cluster: each reading to its device's owner
//! under the current membership view. The readings this node owns go to its
//! actor tree (claiming any device it has not sequenced yet); the rest are
//! forwarded, one call per owner, all at once. The answer sums the parts and
//! carries the weakest guarantee any part got.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tonic::Status;
use vatio_actors::journal::{decode_state, encode_state};
use vatio_actors::router::{HeldState, Presence};
use vatio_actors::{AckCounts, AckGuarantee, ActorTree, IngestError};
use vatio_proto::v1::{self, ClaimRequest, ForwardRequest, IngestRequest};
use vatio_stores::{DeviceId, RawReading};

use crate::peer::PeerClients;

pub mod replay;
use crate::placement::{Member, NodeId, View};
use crate::services::convert::{ingest_status, raw_into_wire};
use crate::trust::ClaimGate;
use tokio::sync::watch;

pub struct Routing {
    me: NodeId,
    /// Verified members only (see [`crate::trust`]).
    views: watch::Receiver<View>,
    /// Whether claims may go ahead (see [`ClaimGate`]).
    gate: watch::Receiver<ClaimGate>,
    clients: PeerClients,
    tree: Arc<ActorTree>,
    timeout: Duration,
}

impl Routing {
    pub fn new(
        me: NodeId,
        views: watch::Receiver<View>,
        gate: watch::Receiver<ClaimGate>,
        clients: PeerClients,
        tree: Arc<ActorTree>,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            views,
            gate,
            clients,
            tree,
            timeout,
        })
    }

    /// The members this node has verified, itself included (told to
    /// claimers: see [`beyond_view`]).
    pub fn verified_members(&self) -> Vec<String> {
        let view = self.views.borrow();
        let mut ids: Vec<String> = view.members().iter().map(|m| m.id.to_string()).collect();
        if view.member(&self.me).is_none() {
            ids.push(self.me.to_string());
        }
        ids
    }

    /// Takes a client's batch: every reading ends at its owner.
    pub async fn ingest(
        &self,
        readings: Vec<RawReading>,
        source: &str,
    ) -> Result<AckCounts, Status> {
        let view = self.views.borrow().clone();
        let mut local = Vec::new();
        let mut remote: BTreeMap<NodeId, Vec<RawReading>> = BTreeMap::new();
        for raw in readings {
            match owner(&view, &raw.device_id) {
                None => return Err(no_live_members()),
                Some(owner) if owner == self.me => local.push(raw),
                Some(owner) => remote.entry(owner).or_default().push(raw),
            }
        }
        let forwards = remote
            .into_iter()
            .map(|(owner, part)| self.forward(&view, owner, part, source));
        let (local, forwarded) = futures::join!(
            async {
                if local.is_empty() {
                    None
                } else {
                    Some(self.ingest_owned(local, source).await)
                }
            },
            join_all(forwards)
        );
        let mut total: Option<AckCounts> = None;
        for part in local.into_iter().chain(forwarded) {
            let part = part?;
            total = Some(match total {
                None => part,
                Some(t) => AckCounts {
                    accepted: t.accepted + part.accepted,
                    duplicates: t.duplicates + part.duplicates,
                    dead_lettered: t.dead_lettered + part.dead_lettered,
                    guarantee: t.guarantee.min(part.guarantee),
                },
            });
        }
        Ok(total.unwrap_or_default())
    }

    /// A batch another node forwarded here as the owner: taken only if this
    /// node's view agrees, so two views never both sequence a device.
    pub async fn ingest_forwarded(
        &self,
        from: &str,
        readings: Vec<RawReading>,
        source: &str,
    ) -> Result<AckCounts, Status> {
        let view = self.views.borrow().clone();
        if let Some(raw) = readings
            .iter()
            .find(|r| owner(&view, &r.device_id).as_ref() != Some(&self.me))
        {
            let owner = owner(&view, &raw.device_id);
            return Err(Status::unavailable(format!(
                "{from} forwarded device {} here, but this node's view places it on {}; \
                 membership is settling, send the batch again",
                raw.device_id,
                owner.as_ref().map_or("no node", |o| o.as_str())
            )));
        }
        self.ingest_owned(readings, source).await
    }

    /// Readings of devices this node owns under its view.
    async fn ingest_owned(
        &self,
        readings: Vec<RawReading>,
        source: &str,
    ) -> Result<AckCounts, Status> {
        let mut devices: Vec<DeviceId> = readings
            .iter()
            .map(|r| DeviceId::new(r.device_id.as_str()))
            .collect();
        devices.sort_unstable();
        devices.dedup();
        if self.tree.refuses_without_replica() {
            return Err(ingest_status(IngestError::NoReplica));
        }
        let unowned = self.tree.unowned(devices).await.map_err(tree_stopped)?;
        if !unowned.is_empty() {
            self.claim(unowned).await?;
        }
        match self.tree.ingest(readings, source).await {
            Ok(ack) => Ok(ack),
            // Taken from this node between the claim and now.
            Err(IngestError::NotOwned(devices)) => Err(Status::unavailable(format!(
                "{} device(s) moved while this batch was routed (e.g. {}); send it again",
                devices.len(),
                devices.first().map_or("", |d| d.as_str())
            ))),
            Err(e) => Err(ingest_status(e)),
        }
    }

    /// Takes devices over: every live peer hands over what it holds for
    /// them (and stops sequencing them); this node adopts the most
    /// advanced state. Every ready peer must answer, or nothing is adopted.
    async fn claim(&self, devices: Vec<DeviceId>) -> Result<(), Status> {
        // This node's own unsettled steps of these devices first (after a
        // restart: its tail), so its copy of their state is either the
        // cluster's or known to be off the line.
        let settled = self
            .tree
            .await_settled(devices.clone(), self.timeout)
            .await
            .map_err(tree_stopped)?;
        if !settled {
            return Err(Status::unavailable(format!(
                "taking over {} device(s): this node's earlier steps for them are not yet \
                 confirmed by a replica; send the batch again",
                devices.len()
            )));
        }
        let attempt = self
            .tree
            .begin_claim(devices.clone())
            .await
            .map_err(tree_stopped)?;
        let result = self.claim_attempt(&devices).await;
        if result.is_err() {
            let _ = self.tree.abandon_claim(attempt, devices);
        }
        result
    }

    /// One claim attempt: every verified peer hands over, then this node adopts.
    async fn claim_attempt(&self, devices: &[DeviceId]) -> Result<(), Status> {
        // A member out of reach may hold the only other copy of a device
        // (its former replica): adopting without it would start the
        // device's line again from an older state.
        let gate = self.gate.borrow().clone();
        if !gate.unverified.is_empty() {
            let names: Vec<String> = gate.unverified.iter().map(ToString::to_string).collect();
            return Err(Status::unavailable(format!(
                "taking over {} device(s): waiting for {} (alive by gossip, not verified \
                 yet) so that every copy of them is in reach; send the batch again",
                devices.len(),
                names.join(", ")
            )));
        }
        if gate.discovering {
            return Err(Status::unavailable(format!(
                "taking over {} device(s): this node started moments ago and is still \
                 learning the cluster's members; send the batch again",
                devices.len()
            )));
        }
        let view = self.views.borrow().clone();
        let peers: Vec<&Member> = view.members().iter().filter(|m| m.id != self.me).collect();
        let request = ClaimRequest {
            by_node: self.me.to_string(),
            devices: devices.iter().map(|d| d.as_str().to_owned()).collect(),
            log_head: self.tree.log_head(),
        };
        let calls = peers.iter().map(|peer| {
            let request = request.clone();
            async move {
                let mut client = self
                    .clients
                    .client(peer)
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                match tokio::time::timeout(self.timeout, client.claim(request)).await {
                    Ok(r) => r.map(tonic::Response::into_inner),
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "no answer within {:?}",
                        self.timeout
                    ))),
                }
            }
        });
        let mut best: BTreeMap<DeviceId, vatio_actors::logic::device::DeviceState> =
            BTreeMap::new();
        // The highest epoch term any peer fenced each device at.
        let mut terms: BTreeMap<DeviceId, u64> = BTreeMap::new();
        // Every copy's held readings end in the adopted one (see `merge_held`).
        let mut others: Vec<(DeviceId, vatio_actors::logic::device::DeviceState)> = Vec::new();
        // Members some peer has verified.
        let mut their_members: BTreeSet<String> = BTreeSet::new();
        for (peer, answer) in peers.iter().zip(join_all(calls).await) {
            let reply = match answer {
                Ok(reply) => reply,
                // A member that is not ready is starting or stopping: what it
                // held was shipped to its replicas before it acknowledged.
                Err(status) if !peer.ready => {
                    tracing::debug!(peer = %peer.id, %status, "claim not answered by a member that is not ready");
                    continue;
                }
                Err(status) => {
                    return Err(Status::unavailable(format!(
                        "taking over {} device(s): {} did not hand them over ({}: {}); send the batch again",
                        devices.len(),
                        peer.id,
                        status.code(),
                        status.message()
                    )));
                }
            };
            their_members.extend(reply.members);
            for held in reply.devices {
                let term = terms
                    .entry(DeviceId::new(held.device_id.as_str()))
                    .or_default();
                *term = (*term).max(held.term);
                if held.state.is_empty() {
                    continue;
                }
                let state = decode_state(&held.state).map_err(|e| {
                    Status::internal(format!(
                        "{} sent an undecodable state for {}: {e}",
                        peer.id, held.device_id
                    ))
                })?;
                let device = DeviceId::new(held.device_id.as_str());
                // The latest line, then the furthest on (`DeviceState::rank`).
                match best.get(&device) {
                    Some(b) if b.rank() >= state.rank() => others.push((device, state)),
                    _ => {
                        if let Some(previous) = best.insert(device.clone(), state) {
                            others.push((device, previous));
                        }
                    }
                }
            }
        }
        let unseen = beyond_view(&view, &self.me, their_members);
        if !unseen.is_empty() {
            return Err(Status::unavailable(format!(
                "taking over {} device(s): waiting for {} (verified by other members, not yet \
                 by this node) so that every copy of them is in reach; send the batch again",
                devices.len(),
                unseen.join(", ")
            )));
        }
        for (device, other) in &others {
            if let Some(b) = best.get_mut(device) {
                b.merge_held(other);
            }
        }
        let states = devices
            .iter()
            .map(|d| HeldState {
                device: d.clone(),
                state: best.remove(d),
                term: terms.get(d).copied().unwrap_or(0),
            })
            .collect();
        let lost = self.tree.adopt(states).await.map_err(tree_stopped)?;
        match lost.first() {
            None => Ok(()),
            Some(d) => Err(Status::unavailable(format!(
                "another node claimed {} device(s) at the same time (e.g. {d}); send the batch again",
                lost.len()
            ))),
        }
    }

    /// A peer client for `owner`, which must still be a member of `view`.
    fn owner_client(
        &self,
        view: &View,
        owner: &NodeId,
    ) -> Result<vatio_proto::v1::peer_client::PeerClient<tonic::transport::Channel>, Status> {
        let member = view
            .member(owner)
            .ok_or_else(|| Status::unavailable(format!("owner {owner} left the cluster")))?;
        self.clients
            .client(member)
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    async fn forward(
        &self,
        view: &View,
        owner: NodeId,
        readings: Vec<RawReading>,
        source: &str,
    ) -> Result<AckCounts, Status> {
        let mut client = self.owner_client(view, &owner)?;
        let request = ForwardRequest {
            from_node: self.me.to_string(),
            batch: Some(IngestRequest {
                batch_id: 0,
                readings: readings.into_iter().map(raw_into_wire).collect(),
                source: source.to_owned(),
            }),
        };
        let ack = match tokio::time::timeout(self.timeout, client.forward(request)).await {
            Ok(Ok(ack)) => ack.into_inner(),
            Ok(Err(status)) => {
                return Err(Status::new(
                    status.code(),
                    format!("owner {owner}: {}", status.message()),
                ));
            }
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "owner {owner} did not answer within {:?}; send the batch again",
                    self.timeout
                )));
            }
        };
        Ok(AckCounts {
            accepted: ack.accepted,
            duplicates: ack.duplicates,
            dead_lettered: ack.dead_lettered,
            guarantee: guarantee_from_wire(ack.guarantee),
        })
    }

    /// Keeps the tree's owned devices in line with placement: each time the
    /// view changes, devices placed elsewhere stop being this node's. Each
    /// time the view or the claim gate changes, the tree learns which nodes
    /// left (see [`presence`]).
    pub fn follow_membership(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut views = self.views.clone();
        let mut gate = self.gate.clone();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    biased;
                    r = views.changed() => r,
                    r = gate.changed() => r,
                };
                if changed.is_err() {
                    return;
                }
                let view = views.borrow_and_update().clone();
                let gate_now = gate.borrow_and_update().clone();
                let me = this.me.clone();
                let members = view.clone();
                let keep = move |d: &DeviceId| view.place(d).is_some_and(|p| p.owner == me);
                let member = move |id: &str| presence(&members, &gate_now, id);
                if this.tree.disown(Box::new(keep), Box::new(member)).is_err() {
                    return;
                }
            }
        })
    }
}

/// What this node knows of node `id`: a verified member, one it cannot
/// rule out yet (gossip reports it unverified, or this node is still
/// discovering its peers), or one that left.
fn presence(view: &View, gate: &ClaimGate, id: &str) -> Presence {
    let id = NodeId::new(id);
    if view.member(&id).is_some() {
        Presence::Member
    } else if gate.discovering || gate.unverified.contains(&id) {
        Presence::Unknown
    } else {
        Presence::Left
    }
}

fn owner(view: &View, device_id: &str) -> Option<NodeId> {
    view.place(&DeviceId::new(device_id)).map(|p| p.owner)
}

fn no_live_members() -> Status {
    Status::unavailable("no node of the cluster is ready to take readings yet")
}

fn tree_stopped(e: vatio_actors::TreeError) -> Status {
    Status::unavailable(e.to_string())
}

/// The ack guarantee as the wire says it.
pub fn guarantee_to_wire(g: AckGuarantee) -> v1::AckGuarantee {
    match g {
        AckGuarantee::LocalLogSynced => v1::AckGuarantee::LocalLog,
        AckGuarantee::LocalLogWritten => v1::AckGuarantee::LocalLogWritten,
        AckGuarantee::Replicated => v1::AckGuarantee::Replicated,
    }
}

/// The weakest reading of a guarantee from the wire (unknown: written only).
pub fn guarantee_from_wire(g: i32) -> AckGuarantee {
    match v1::AckGuarantee::try_from(g) {
        Ok(v1::AckGuarantee::Replicated) => AckGuarantee::Replicated,
        Ok(v1::AckGuarantee::LocalLog) => AckGuarantee::LocalLogSynced,
        _ => AckGuarantee::LocalLogWritten,
    }
}

/// A replica step or claim answer as the wire carries a state.
pub fn state_to_wire(state: &vatio_actors::logic::device::DeviceState) -> Result<Vec<u8>, Status> {
    encode_state(state).map_err(|e| Status::internal(format!("encoding a device state: {e}")))
}

/// The members the claim's peers have verified that `view` (the claimer's)
/// lacks. The claimer asked only the members in its view; one it lacks may
/// hold a copy of the device (its former owner or replica), so adopting
/// without it could start the device's line again from an older state.
fn beyond_view(view: &View, me: &NodeId, theirs: BTreeSet<String>) -> Vec<String> {
    theirs
        .into_iter()
        .filter(|id| {
            id.as_str() != me.as_str() && view.member(&NodeId::from(id.as_str())).is_none()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::placement::Az;

    fn view(ids: &[&str]) -> View {
        View::new(ids.iter().enumerate().map(|(i, id)| Member {
            id: NodeId::from(*id),
            az: Az::from(if i % 2 == 0 { "az-a" } else { "az-b" }),
            addr: SocketAddr::from(([127, 0, 0, 1], 7400 + i as u16)),
            ready: true,
        }))
    }

    fn ids(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn members_only_peers_have_verified_hold_a_claim_back() {
        let me = NodeId::from("c1");
        // c1 joined moments ago: it knows a1, which already knows b1 too.
        let mine = view(&["a1", "c1"]);
        assert_eq!(beyond_view(&mine, &me, ids(&["a1", "b1", "c1"])), ["b1"]);
    }

    #[test]
    fn peers_agreeing_with_the_view_let_a_claim_go_ahead() {
        let me = NodeId::from("c1");
        let mine = view(&["a1", "b1", "c1"]);
        assert!(beyond_view(&mine, &me, ids(&["a1", "b1", "c1"])).is_empty());
        // A peer that has not verified every member yet holds nothing back.
        assert!(beyond_view(&mine, &me, ids(&["a1"])).is_empty());
        // Nor does this node itself, whether or not its view lists it.
        assert!(beyond_view(&view(&["a1"]), &me, ids(&["a1", "c1"])).is_empty());
    }
}
