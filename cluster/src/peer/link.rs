//! How the actor tree's replication reaches replicas: placement over the
//! current membership view picks the replica, the peer clients carry the
//! steps.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use vatio_actors::Replicated;
use vatio_actors::replication::{ReplicaLink, ShippedStep};
use vatio_proto::v1::{ReplicateRequest, ReplicatedStep};
use vatio_stores::DeviceId;

use super::PeerClients;
use crate::placement::{Az, NodeId, View};

pub struct ViewLink {
    me: NodeId,
    az: Az,
    /// Verified members (placement's input).
    view: watch::Receiver<View>,
    /// Members as gossip knows them, verified or not.
    gossip: watch::Receiver<View>,
    clients: PeerClients,
}

impl ViewLink {
    pub fn new(
        me: NodeId,
        az: Az,
        view: watch::Receiver<View>,
        gossip: watch::Receiver<View>,
        clients: PeerClients,
    ) -> Self {
        Self {
            me,
            az,
            view,
            gossip,
            clients,
        }
    }
}

impl ReplicaLink for ViewLink {
    /// The best-ranked live member outside this node's AZ: the device's
    /// replica while this node owns it. Steps of a device this node has
    /// just lost still go to a replica of this node's, so they are kept in
    /// the other AZ either way.
    fn replica_of(&self, device: &DeviceId) -> Option<Arc<str>> {
        let view = self.view.borrow();
        view.ranking(device)
            .into_iter()
            .find(|m| m.az != self.az)
            .map(|m| Arc::from(m.id.as_str()))
    }

    fn other_az_live(&self) -> bool {
        self.view.borrow().live().any(|m| m.az != self.az)
    }

    fn view_settled(&self) -> bool {
        let verified = self.view.borrow();
        self.gossip
            .borrow()
            .live()
            .all(|m| verified.member(&m.id).is_some_and(|v| v.addr == m.addr))
    }

    fn ship(
        &self,
        peer: Arc<str>,
        steps: Vec<ShippedStep>,
    ) -> BoxFuture<'static, Result<Replicated, String>> {
        let member = self
            .view
            .borrow()
            .member(&NodeId::new(peer.clone()))
            .cloned();
        let clients = self.clients.clone();
        let me = self.me.to_string();
        async move {
            let member = member.ok_or_else(|| format!("{peer} is not a member any more"))?;
            let mut client = clients.client(&member).map_err(|e| e.to_string())?;
            let request = ReplicateRequest {
                from_node: me,
                steps: steps
                    .into_iter()
                    .map(|s| ReplicatedStep {
                        step: s.step.to_vec(),
                        seed: s.seed.map(|b| b.to_vec()).unwrap_or_default(),
                        end: s.end,
                    })
                    .collect(),
            };
            let reply = client
                .replicate(request)
                .await
                .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
            let reply = reply.into_inner();
            Ok(Replicated {
                orphaned: reply.orphaned_ends,
                fenced: reply
                    .fenced
                    .into_iter()
                    .map(|f| (f.end, Arc::from(f.owner.as_str())))
                    .collect(),
                busy: reply.busy_ends,
            })
        }
        .boxed()
    }
}
