//! `vatio.v1.Peer`, the calls nodes make to each other. Every call is
//! checked by the transport first: over TLS, the caller must present a node
//! certificate from the cluster's CA that the allow-lists admit, and the
//! node id in the request must be the one in that certificate.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vatio_actors::{ActorTree, IncomingStep};
use vatio_proto::v1::{
    self, ClaimReply, ClaimRequest, ClaimedDevice, FencedStep, ForwardRequest, IngestAck,
    ReplicateReply, ReplicateRequest,
};
use vatio_stores::DeviceId;

use crate::routing::replay::{outcome_to_wire, readings_from_wire};
use crate::routing::{Routing, guarantee_to_wire, state_to_wire};
use crate::services::convert::raw_from_wire;
use crate::transport::{AuthorizedPeer, Transport};

#[derive(Clone)]
pub struct PeerService {
    transport: Transport,
    routing: Arc<Routing>,
    tree: Arc<ActorTree>,
}

impl PeerService {
    pub fn new(transport: Transport, routing: Arc<Routing>, tree: Arc<ActorTree>) -> Self {
        Self {
            transport,
            routing,
            tree,
        }
    }

    /// Checks the caller, and that it speaks for the node it says it is.
    fn authorize<T>(&self, req: &Request<T>, claimed: &str) -> Result<(), Status> {
        if claimed.is_empty() {
            return Err(Status::invalid_argument("the calling node's id is empty"));
        }
        match self.transport.authorize_peer(req)? {
            AuthorizedPeer::Node(identity) if identity.node_id != claimed => {
                tracing::warn!(certificate = %identity.node_id, claimed, "peer call refused: node id does not match the certificate");
                Err(Status::permission_denied(format!(
                    "the request says node {claimed:?} but the certificate is node {:?}",
                    identity.node_id
                )))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl v1::peer_server::Peer for PeerService {
    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<IngestAck>, Status> {
        let from = request.get_ref().from_node.clone();
        self.authorize(&request, &from)?;
        let batch = request
            .into_inner()
            .batch
            .ok_or_else(|| Status::invalid_argument("forward: batch is missing"))?;
        let readings = batch.readings.into_iter().map(raw_from_wire).collect();
        let ack = self
            .routing
            .ingest_forwarded(&from, readings, &batch.source)
            .await?;
        Ok(Response::new(IngestAck {
            batch_id: batch.batch_id,
            accepted: ack.accepted,
            duplicates: ack.duplicates,
            dead_lettered: ack.dead_lettered,
            guarantee: guarantee_to_wire(ack.guarantee) as i32,
        }))
    }

    async fn replay(
        &self,
        request: Request<v1::ReplayRequest>,
    ) -> Result<Response<v1::ReplayReply>, Status> {
        let from = request.get_ref().from_node.clone();
        self.authorize(&request, &from)?;
        let readings = readings_from_wire(request.into_inner());
        let outcomes = self.routing.replay_owned(readings).await?;
        Ok(Response::new(v1::ReplayReply {
            outcomes: outcomes.into_iter().map(outcome_to_wire).collect(),
        }))
    }

    async fn replicate(
        &self,
        request: Request<ReplicateRequest>,
    ) -> Result<Response<ReplicateReply>, Status> {
        let from = request.get_ref().from_node.clone();
        self.authorize(&request, &from)?;
        let steps = request
            .into_inner()
            .steps
            .into_iter()
            .map(|s| IncomingStep {
                step: s.step.into(),
                end: s.end,
                seed: (!s.seed.is_empty()).then(|| s.seed.into()),
            })
            .collect();
        // Run to the end even if the caller gives up: steps checked in
        // with the router must be applied or aborted, or claims for their
        // devices would wait forever.
        let tree = self.tree.clone();
        let outcome = tokio::spawn(async move { tree.replicate(&from, steps).await })
            .await
            .map_err(|e| Status::internal(format!("replicating: {e}")))?
            .map_err(|e| match e {
                vatio_actors::TreeError::BadReplica { .. } => {
                    Status::invalid_argument(e.to_string())
                }
                _ => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(ReplicateReply {
            orphaned_ends: outcome.orphaned,
            fenced: outcome
                .fenced
                .into_iter()
                .map(|(end, owner)| FencedStep {
                    end,
                    owner: owner.to_string(),
                })
                .collect(),
            busy_ends: outcome.busy,
        }))
    }

    async fn claim(&self, request: Request<ClaimRequest>) -> Result<Response<ClaimReply>, Status> {
        let by = request.get_ref().by_node.clone();
        let by_head = Some(request.get_ref().log_head).filter(|h| *h > 0);
        self.authorize(&request, &by)?;
        let devices = request
            .into_inner()
            .devices
            .into_iter()
            .map(|d| DeviceId::new(d.as_str()))
            .collect();
        let held = self
            .tree
            .claim(&by, by_head, devices)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut devices = Vec::with_capacity(held.len());
        for h in held {
            devices.push(ClaimedDevice {
                device_id: h.device.as_str().to_owned(),
                state: match h.state {
                    Some(s) => state_to_wire(&s)?,
                    None => Vec::new(),
                },
                term: h.term,
            });
        }
        Ok(Response::new(ClaimReply {
            devices,
            members: self.routing.verified_members(),
        }))
    }
}
