//! `vatio.v1.Ingest`: structural checks on each batch (malformed batches are
//! refused whole with the first offending index and field), then the actor
//! tree decides per reading. Batches on one stream are processed with a
//! bounded number in flight and acknowledged in order.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vatio_actors::ActorTree;
use vatio_proto::v1::{self, IngestAck, IngestRequest};

use super::convert::{ingest_status, raw_from_wire};
use crate::routing::{Routing, guarantee_to_wire};

/// Batches of one stream being processed at once.
const STREAM_BATCHES_IN_FLIGHT: usize = 8;

#[derive(Clone)]
pub struct IngestService {
    tree: Arc<ActorTree>,
    /// In a cluster: readings go to their devices' owners.
    routing: Option<Arc<Routing>>,
    max_batch_readings: usize,
    max_device_id_bytes: usize,
}

impl IngestService {
    pub fn new(
        tree: Arc<ActorTree>,
        routing: Option<Arc<Routing>>,
        max_batch_readings: u32,
        max_device_id_bytes: u32,
    ) -> Self {
        Self {
            tree,
            routing,
            max_batch_readings: max_batch_readings as usize,
            max_device_id_bytes: max_device_id_bytes as usize,
        }
    }

    async fn ingest_one(&self, req: IngestRequest, peer: &str) -> Result<IngestAck, Status> {
        self.check_structure(&req)?;
        let source = if req.source.is_empty() {
            peer.to_string()
        } else {
            format!("{} ({peer})", req.source)
        };
        let batch_id = req.batch_id;
        let raws = req.readings.into_iter().map(raw_from_wire).collect();
        let ack = match &self.routing {
            Some(routing) => routing.ingest(raws, &source).await?,
            None => self
                .tree
                .ingest(raws, &source)
                .await
                .map_err(ingest_status)?,
        };
        Ok(IngestAck {
            batch_id,
            accepted: ack.accepted,
            duplicates: ack.duplicates,
            dead_lettered: ack.dead_lettered,
            guarantee: guarantee_to_wire(ack.guarantee) as i32,
        })
    }

    /// What makes a batch unusable as a whole: too big, or a reading that
    /// cannot be attributed to a device. Everything else is per reading.
    fn check_structure(&self, req: &IngestRequest) -> Result<(), Status> {
        if req.readings.len() > self.max_batch_readings {
            return Err(Status::invalid_argument(format!(
                "batch {}: {} readings, more than ingest.max_batch_readings ({})",
                req.batch_id,
                req.readings.len(),
                self.max_batch_readings
            )));
        }
        for (i, r) in req.readings.iter().enumerate() {
            if let Some(problem) = device_id_problem(&r.device_id, self.max_device_id_bytes) {
                return Err(Status::invalid_argument(format!(
                    "batch {}: readings[{i}].device_id: {problem}",
                    req.batch_id
                )));
            }
        }
        Ok(())
    }
}

fn device_id_problem(id: &str, max_bytes: usize) -> Option<String> {
    if id.is_empty() {
        return Some("must not be empty".into());
    }
    if id.len() > max_bytes {
        return Some(format!("{} bytes, more than {max_bytes}", id.len()));
    }
    if let Some(c) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Some(format!("{c:?} is not printable ASCII"));
    }
    None
}

fn peer_of<T>(req: &Request<T>) -> String {
    req.remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown peer".into())
}

type AckStream = Pin<Box<dyn Stream<Item = Result<IngestAck, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl v1::ingest_server::Ingest for IngestService {
    type IngestStream = AckStream;

    async fn ingest(
        &self,
        request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let peer = Arc::<str>::from(peer_of(&request));
        let this = self.clone();
        let acks = request
            .into_inner()
            .map(move |req| {
                let this = this.clone();
                let peer = peer.clone();
                async move {
                    match req {
                        Ok(req) => this.ingest_one(req, &peer).await,
                        Err(status) => Err(status),
                    }
                }
            })
            .buffered(STREAM_BATCHES_IN_FLIGHT);
        Ok(Response::new(Box::pin(acks)))
    }

    async fn ingest_batch(
        &self,
        request: Request<IngestRequest>,
    ) -> Result<Response<IngestAck>, Status> {
        let peer = peer_of(&request);
        self.ingest_one(request.into_inner(), &peer)
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::device_id_problem;

    #[test]
    fn device_ids_are_checked() {
        assert_eq!(
            device_id_problem("", 8).as_deref(),
            Some("must not be empty")
        );
        assert!(device_id_problem("meter-01", 8).is_none());
        assert_eq!(
            device_id_problem("meter-001", 8).as_deref(),
            Some("9 bytes, more than 8")
        );
        assert!(device_id_problem("a b", 8).is_some_and(|p| p.contains("printable")));
    }
}
