//! `vatio.v1.Query`: reads what the sinks hold, of this node or, by
//! default in a cluster, of every verified member (see [`super::fanout`]).

mod wire;

use std::sync::Arc;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use vatio_actors::TreeStores;
use vatio_proto::v1;
use vatio_proto::v1::query_client::QueryClient;
use vatio_stores::{
    DeviceId, DeviceKind, EventFilter, EventType, LatestFilter, Metric, MinuteFilter, merge,
    query_limit,
};

use self::wire::{
    event_from_wire, event_to_wire, latest_from_wire, latest_to_wire, minute_from_wire,
    minute_to_wire, reason_counts_to_wire,
};
use super::convert::{kind_filter, store_status};
use super::fanout::{ClusterReads, Gathered, gather, peers_for};
use crate::peer::clients::MAX_PEER_MESSAGE_BYTES;

#[derive(Clone)]
pub struct QueryService {
    stores: TreeStores,
    /// Set on a cluster node: cluster-wide answers ask the peers too.
    cluster: Option<Arc<ClusterReads>>,
}

impl QueryService {
    pub fn new(stores: TreeStores, cluster: Option<Arc<ClusterReads>>) -> Self {
        Self { stores, cluster }
    }

    fn peers(&self, scope: i32) -> Result<Option<&ClusterReads>, Status> {
        peers_for(self.cluster.as_ref(), scope)
    }

    /// The peers a time-series answer asks: none when the store is shared
    /// (it holds every node's share, so reading it once is the whole
    /// answer and a node that is down takes nothing with it).
    fn timeseries_peers(&self, scope: i32) -> Result<Option<&ClusterReads>, Status> {
        let peers = self.peers(scope)?;
        Ok(peers.filter(|_| !self.stores.timeseries.shared()))
    }

    /// The peers an events answer asks: none when the document store is shared.
    fn documents_peers(&self, scope: i32) -> Result<Option<&ClusterReads>, Status> {
        let peers = self.peers(scope)?;
        Ok(peers.filter(|_| !self.stores.documents.shared()))
    }
}

/// A query client on a peer's channel, for peer-sized answers.
fn query_client(channel: Channel) -> QueryClient<Channel> {
    QueryClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
}

fn device_filter(id: &str) -> Option<DeviceId> {
    (!id.is_empty()).then(|| DeviceId::new(id))
}

fn metric_arg(name: &str) -> Result<Metric, Status> {
    Metric::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
        Status::invalid_argument(format!(
            "metric: unknown metric {name:?}; known: {}",
            known.join(", ")
        ))
    })
}

fn range_arg(from: i64, to: i64) -> Result<(i64, i64), Status> {
    let to = if to == 0 { i64::MAX } else { to };
    if from >= to {
        return Err(Status::invalid_argument(format!(
            "from_unix_ms ({from}) must be before to_unix_ms ({to})"
        )));
    }
    Ok((from, to))
}

const NODE: i32 = v1::QueryScope::Node as i32;

#[tonic::async_trait]
impl v1::query_server::Query for QueryService {
    async fn latest(
        &self,
        request: Request<v1::LatestRequest>,
    ) -> Result<Response<v1::LatestResponse>, Status> {
        let req = request.into_inner();
        let peers = self.timeseries_peers(req.scope)?;
        let filter = LatestFilter {
            device: device_filter(&req.device_id),
            kind: kind_filter(req.kind)?,
            limit: req.limit,
        };
        let mine = self
            .stores
            .timeseries
            .latest(&filter)
            .await
            .map_err(store_status)?;
        let ask = v1::LatestRequest {
            scope: NODE,
            ..req.clone()
        };
        let theirs: Gathered<Vec<_>> = gather(peers, "latest", |channel| {
            let ask = ask.clone();
            async move {
                let reply = query_client(channel).latest(ask).await?.into_inner();
                reply.values.into_iter().map(latest_from_wire).collect()
            }
        })
        .await;
        let all = mine.into_iter().chain(theirs.shares.into_iter().flatten());
        let values = merge::latest(all, query_limit(req.limit) as usize);
        Ok(Response::new(v1::LatestResponse {
            values: values.iter().map(latest_to_wire).collect(),
            unanswered_nodes: theirs.unanswered,
        }))
    }

    async fn series(
        &self,
        request: Request<v1::SeriesRequest>,
    ) -> Result<Response<v1::SeriesResponse>, Status> {
        let req = request.into_inner();
        let peers = self.timeseries_peers(req.scope)?;
        let device = device_filter(&req.device_id)
            .ok_or_else(|| Status::invalid_argument("device_id: required"))?;
        let metric = metric_arg(&req.metric)?;
        let (from, to) = range_arg(req.from_unix_ms, req.to_unix_ms)?;
        let window_minutes = req.window_minutes.max(1);
        let Some(peers) = peers else {
            let points = self
                .stores
                .timeseries
                .series(&device, metric, from, to, window_minutes)
                .await
                .map_err(store_status)?;
            return Ok(Response::new(v1::SeriesResponse {
                unit: metric.canonical_unit().into(),
                points: points.iter().map(wire::series_point_to_wire).collect(),
                unanswered_nodes: Vec::new(),
            }));
        };
        let filter = MinuteFilter {
            device: Some(device),
            kind: None,
            metric: Some(metric),
        };
        let minutes = self.minutes_everywhere(peers, &filter, from, to).await?;
        let points = merge::series_windows(
            minutes.shares.into_iter().map(|p| (p.minute_ms, p.stats)),
            window_minutes,
        );
        Ok(Response::new(v1::SeriesResponse {
            unit: metric.canonical_unit().into(),
            points: points.iter().map(wire::series_point_to_wire).collect(),
            unanswered_nodes: minutes.unanswered,
        }))
    }

    async fn power_flow(
        &self,
        request: Request<v1::PowerFlowRequest>,
    ) -> Result<Response<v1::PowerFlowResponse>, Status> {
        let req = request.into_inner();
        let peers = self.timeseries_peers(req.scope)?;
        let (from, to) = range_arg(req.from_unix_ms, req.to_unix_ms)?;
        let (minutes, unanswered) = match peers {
            None => {
                let minutes = self
                    .stores
                    .timeseries
                    .power_flow(from, to)
                    .await
                    .map_err(store_status)?;
                (minutes, Vec::new())
            }
            Some(peers) => {
                let filter = MinuteFilter {
                    device: None,
                    kind: Some(DeviceKind::ElectricityMeter),
                    metric: Some(Metric::Power),
                };
                let gathered = self.minutes_everywhere(peers, &filter, from, to).await?;
                (merge::power_flow(gathered.shares), gathered.unanswered)
            }
        };
        Ok(Response::new(v1::PowerFlowResponse {
            minutes: minutes
                .into_iter()
                .map(|m| v1::PowerFlowMinute {
                    minute_unix_ms: m.minute_ms,
                    total_kw: m.total_kw,
                    meters: m.meters,
                })
                .collect(),
            unanswered_nodes: unanswered,
        }))
    }

    async fn events(
        &self,
        request: Request<v1::EventsRequest>,
    ) -> Result<Response<v1::EventsResponse>, Status> {
        let req = request.into_inner();
        let peers = self.documents_peers(req.scope)?;
        let event_type = if req.event_type.is_empty() {
            None
        } else {
            Some(EventType::parse(&req.event_type).ok_or_else(|| {
                Status::invalid_argument(format!("event_type: unknown type {:?}", req.event_type))
            })?)
        };
        let filter = EventFilter {
            device: device_filter(&req.device_id),
            kind: kind_filter(req.kind)?,
            event_type,
            from_ms: (req.from_unix_ms != 0).then_some(req.from_unix_ms),
            to_ms: (req.to_unix_ms != 0).then_some(req.to_unix_ms),
            limit: req.limit,
        };
        let mine = self
            .stores
            .documents
            .events(&filter)
            .await
            .map_err(store_status)?;
        let ask = v1::EventsRequest {
            scope: NODE,
            ..req.clone()
        };
        let theirs: Gathered<Vec<_>> = gather(peers, "events", |channel| {
            let ask = ask.clone();
            async move {
                let reply = query_client(channel).events(ask).await?.into_inner();
                reply.events.into_iter().map(event_from_wire).collect()
            }
        })
        .await;
        let all = mine.into_iter().chain(theirs.shares.into_iter().flatten());
        let events = merge::events(all, query_limit(req.limit) as usize);
        Ok(Response::new(v1::EventsResponse {
            events: events.iter().map(event_to_wire).collect(),
            unanswered_nodes: theirs.unanswered,
        }))
    }

    async fn dead_letter_counts(
        &self,
        request: Request<v1::DeadLetterCountsRequest>,
    ) -> Result<Response<v1::DeadLetterCountsResponse>, Status> {
        let req = request.into_inner();
        let peers = self.peers(req.scope)?;
        let mine = self
            .stores
            .dead_letters
            .counts()
            .await
            .map_err(store_status)?;
        let theirs = gather(peers, "dead-letter counts", |channel| async move {
            let reply = query_client(channel)
                .dead_letter_counts(v1::DeadLetterCountsRequest { scope: NODE })
                .await?
                .into_inner();
            wire::reason_counts_from_wire(reply.counts)
        })
        .await;
        let counts =
            merge::dead_letter_counts(mine.into_iter().chain(theirs.shares.into_iter().flatten()));
        let mut response = reason_counts_to_wire(counts);
        response.unanswered_nodes = theirs.unanswered;
        Ok(Response::new(response))
    }

    async fn minutes(
        &self,
        request: Request<v1::MinutesRequest>,
    ) -> Result<Response<v1::MinutesResponse>, Status> {
        let req = request.into_inner();
        let filter = MinuteFilter {
            device: device_filter(&req.device_id),
            kind: kind_filter(req.kind)?,
            metric: if req.metric.is_empty() {
                None
            } else {
                Some(metric_arg(&req.metric)?)
            },
        };
        let (from, to) = range_arg(req.from_unix_ms, req.to_unix_ms)?;
        let minutes = self
            .stores
            .timeseries
            .minutes(&filter, from, to)
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::MinutesResponse {
            minutes: minutes.iter().map(minute_to_wire).collect(),
        }))
    }
}

impl QueryService {
    /// This node's minutes matching `filter` and every peer's, as shares
    /// to merge.
    async fn minutes_everywhere(
        &self,
        peers: &ClusterReads,
        filter: &MinuteFilter,
        from: i64,
        to: i64,
    ) -> Result<Gathered<vatio_stores::MinutePoint>, Status> {
        let mine = self
            .stores
            .timeseries
            .minutes(filter, from, to)
            .await
            .map_err(store_status)?;
        let ask = v1::MinutesRequest {
            device_id: filter
                .device
                .as_ref()
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
            kind: filter
                .kind
                .map_or(v1::DeviceKind::Unspecified, super::convert::kind_to_wire)
                as i32,
            metric: filter
                .metric
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
            from_unix_ms: from,
            to_unix_ms: if to == i64::MAX { 0 } else { to },
        };
        let theirs = peers
            .gather("minutes", |channel| {
                let ask = ask.clone();
                async move {
                    let reply = query_client(channel).minutes(ask).await?.into_inner();
                    reply
                        .minutes
                        .into_iter()
                        .map(minute_from_wire)
                        .collect::<Result<Vec<_>, _>>()
                }
            })
            .await;
        Ok(Gathered {
            shares: mine
                .into_iter()
                .chain(theirs.shares.into_iter().flatten())
                .collect(),
            unanswered: theirs.unanswered,
        })
    }
}
