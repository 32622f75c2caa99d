//! `vatio.v1.Query`: reads what the sinks hold.

use tonic::{Request, Response, Status};
use vatio_actors::TreeStores;
use vatio_proto::v1;
use vatio_stores::{DeviceId, EventFilter, EventType, LatestFilter, Metric};

use super::convert::{kind_filter, kind_to_wire, store_status};

#[derive(Clone)]
pub struct QueryService {
    stores: TreeStores,
}

impl QueryService {
    pub fn new(stores: TreeStores) -> Self {
        Self { stores }
    }
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

#[tonic::async_trait]
impl v1::query_server::Query for QueryService {
    async fn latest(
        &self,
        request: Request<v1::LatestRequest>,
    ) -> Result<Response<v1::LatestResponse>, Status> {
        let req = request.into_inner();
        let filter = LatestFilter {
            device: device_filter(&req.device_id),
            kind: kind_filter(req.kind)?,
            limit: req.limit,
        };
        let values = self
            .stores
            .timeseries
            .latest(&filter)
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::LatestResponse {
            values: values
                .into_iter()
                .map(|v| v1::LatestValue {
                    device_id: v.device.to_string(),
                    kind: kind_to_wire(v.kind) as i32,
                    metric: v.metric.as_str().into(),
                    value: v.value,
                    unit: v.metric.canonical_unit().into(),
                    ts_unix_ms: v.ts_ms,
                })
                .collect(),
        }))
    }

    async fn series(
        &self,
        request: Request<v1::SeriesRequest>,
    ) -> Result<Response<v1::SeriesResponse>, Status> {
        let req = request.into_inner();
        let device = device_filter(&req.device_id)
            .ok_or_else(|| Status::invalid_argument("device_id: required"))?;
        let metric = metric_arg(&req.metric)?;
        let (from, to) = range_arg(req.from_unix_ms, req.to_unix_ms)?;
        let points = self
            .stores
            .timeseries
            .series(&device, metric, from, to, req.window_minutes.max(1))
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::SeriesResponse {
            unit: metric.canonical_unit().into(),
            points: points
                .into_iter()
                .map(|p| v1::SeriesPoint {
                    window_start_unix_ms: p.window_start_ms,
                    count: p.count,
                    min: p.min,
                    max: p.max,
                    mean: p.mean,
                    last: p.last,
                })
                .collect(),
        }))
    }

    async fn power_flow(
        &self,
        request: Request<v1::PowerFlowRequest>,
    ) -> Result<Response<v1::PowerFlowResponse>, Status> {
        let req = request.into_inner();
        let (from, to) = range_arg(req.from_unix_ms, req.to_unix_ms)?;
        let minutes = self
            .stores
            .timeseries
            .power_flow(from, to)
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::PowerFlowResponse {
            minutes: minutes
                .into_iter()
                .map(|m| v1::PowerFlowMinute {
                    minute_unix_ms: m.minute_ms,
                    total_kw: m.total_kw,
                    meters: m.meters,
                })
                .collect(),
        }))
    }

    async fn events(
        &self,
        request: Request<v1::EventsRequest>,
    ) -> Result<Response<v1::EventsResponse>, Status> {
        let req = request.into_inner();
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
        let events = self
            .stores
            .documents
            .events(&filter)
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::EventsResponse {
            events: events
                .into_iter()
                .map(|e| v1::Event {
                    id: e.id(),
                    device_id: e.device.to_string(),
                    kind: kind_to_wire(e.kind) as i32,
                    event_type: e.event_type.as_str().into(),
                    metric: e.metric.as_str().into(),
                    value: e.value,
                    threshold: e.threshold,
                    ts_unix_ms: e.ts_ms,
                    seq: e.seq,
                })
                .collect(),
        }))
    }

    async fn dead_letter_counts(
        &self,
        _request: Request<v1::DeadLetterCountsRequest>,
    ) -> Result<Response<v1::DeadLetterCountsResponse>, Status> {
        let counts = self
            .stores
            .dead_letters
            .counts()
            .await
            .map_err(store_status)?;
        let total = counts.iter().map(|(_, n)| n).sum();
        Ok(Response::new(v1::DeadLetterCountsResponse {
            counts: counts
                .into_iter()
                .map(|(reason, count)| v1::ReasonCount {
                    reason: reason.as_str().into(),
                    count,
                })
                .collect(),
            total,
        }))
    }
}
