//! `vatio.v1.Admin`: node status, dead letters (list and replay), flush.

use std::sync::Arc;

use crate::membership::Membership;
use crate::placement::View;
use tokio::sync::watch;

use tonic::{Request, Response, Status};
use vatio_actors::ActorTree;
use vatio_actors::stats::NodeStats;
use vatio_proto::v1;
use vatio_stores::{DeadLetterFilter, DeadLetterReason};

use super::convert::{dead_letter_to_wire, store_status};

#[derive(Clone)]
pub struct AdminService {
    tree: Arc<ActorTree>,
    node_id: String,
    az: String,
    started_ms: i64,
    list_limit_max: u32,
    membership: Option<Arc<Membership>>,
    /// The members this node has verified (see [`crate::trust`]).
    trusted: Option<watch::Receiver<View>>,
}

impl AdminService {
    pub fn new(
        tree: Arc<ActorTree>,
        node_id: String,
        az: String,
        started_ms: i64,
        list_limit_max: u32,
        membership: Option<Arc<Membership>>,
        trusted: Option<watch::Receiver<View>>,
    ) -> Self {
        Self {
            tree,
            node_id,
            az,
            started_ms,
            list_limit_max,
            membership,
            trusted,
        }
    }

    /// The cluster as gossip shows it, every known member with its state.
    fn members(&self) -> Vec<v1::ClusterMember> {
        let Some(m) = &self.membership else {
            return Vec::new();
        };
        let trusted = self
            .trusted
            .as_ref()
            .map(|t| t.borrow().clone())
            .unwrap_or_default();
        m.view()
            .members()
            .iter()
            .map(|member| v1::ClusterMember {
                node_id: member.id.to_string(),
                az: member.az.to_string(),
                grpc_addr: member.addr.to_string(),
                ready: member.ready,
                verified: trusted
                    .member(&member.id)
                    .is_some_and(|t| t.addr == member.addr),
            })
            .collect()
    }

    fn filter(
        &self,
        reason: &str,
        device: &str,
        limit: u32,
        include_replayed: bool,
    ) -> Result<DeadLetterFilter, Status> {
        let reason = if reason.is_empty() {
            None
        } else {
            Some(DeadLetterReason::parse(reason).ok_or_else(|| {
                let known: Vec<&str> = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
                Status::invalid_argument(format!(
                    "reason: unknown reason {reason:?}; known: {}",
                    known.join(", ")
                ))
            })?)
        };
        Ok(DeadLetterFilter {
            reason,
            device: (!device.is_empty()).then(|| device.to_string()),
            include_replayed,
            limit: if limit == 0 {
                1000.min(self.list_limit_max)
            } else {
                limit.min(self.list_limit_max)
            },
        })
    }
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let s = self.tree.stats();
        let tree = self.tree.status().await;
        Ok(Response::new(v1::StatusResponse {
            node_id: self.node_id.clone(),
            az: self.az.clone(),
            readings_accepted: NodeStats::get(&s.readings_accepted),
            readings_duplicate: NodeStats::get(&s.readings_duplicate),
            readings_dead_lettered: NodeStats::get(&s.readings_dead_lettered),
            devices_known: tree.router.devices_known,
            devices_active: tree.router.devices_active,
            batches_refused_overload: NodeStats::get(&s.batches_refused_overload),
            actor_restarts: NodeStats::get(&s.actor_restarts),
            points_written: NodeStats::get(&s.points_written),
            documents_written: NodeStats::get(&s.documents_written),
            archive_files_written: NodeStats::get(&s.archive_files_written),
            started_unix_ms: self.started_ms,
            inflight_readings: tree.inflight_readings,
            device_table_bytes: tree.router.table_bytes,
            events_written: NodeStats::get(&s.events_written),
            sink_write_failures: tree.sinks.iter().map(|(_, h)| h.transient_failures).sum(),
            sink_writes_rejected: NodeStats::get(&s.sink_writes_rejected),
            devices_activated: NodeStats::get(&s.devices_activated),
            devices_passivated: NodeStats::get(&s.devices_passivated),
            cluster: Some(v1::ClusterStatus {
                devices_owned: tree.router.devices_owned,
                devices_claimed: NodeStats::get(&s.devices_claimed),
                devices_handed_over: NodeStats::get(&s.devices_handed_over),
                replica_steps_logged: NodeStats::get(&s.replica_steps_logged),
                replication_failures: NodeStats::get(&s.replication_failures),
                steps_voided: NodeStats::get(&s.steps_voided),
                batches_refused_no_replica: NodeStats::get(&s.batches_refused_no_replica),
                batches_acked_degraded: NodeStats::get(&s.batches_acked_degraded),
                batches_refused_not_owner: NodeStats::get(&s.batches_refused_not_owner),
            }),
            log: Some(v1::LogStatus {
                start: tree.log.start.0,
                head: tree.log.head.0,
                durable_head: tree.log.durable_head.0,
                size_bytes: tree.log.size_bytes,
                segments: tree.log.segments,
                appends: tree.log.appends,
                groups: tree.log.groups,
                fsyncs: tree.log.fsyncs,
                fsync_micros_p50: tree.log.fsync_micros_p50,
                fsync_micros_p99: tree.log.fsync_micros_p99,
                fsync_micros_max: tree.log.fsync_micros_max,
                write_errors: tree.log.write_errors,
                append_failures: NodeStats::get(&s.log_append_failures),
                recovered_records: tree.recovery.log_records,
                recovered_bytes_cut: tree.recovery.log_bytes_cut,
                recovered_cut: tree.recovery.log_cut.clone().unwrap_or_default(),
                recovery_scan_ms: tree.recovery.log_scan_ms,
                devices_records_replayed: tree.recovery.device_records_replayed,
                devices_rebuild_ms: tree.recovery.device_rebuild_ms,
                records_undecodable: NodeStats::get(&s.log_records_undecodable),
                positions_past_head: NodeStats::get(&s.log_positions_past_head),
            }),
            subscribers: tree
                .subscribers
                .iter()
                .map(|sub| v1::SubscriberStatus {
                    name: sub.name.to_owned(),
                    committed: sub.committed,
                    lag_bytes: sub.lag_bytes,
                    unread_bytes: sub.unread_bytes,
                })
                .collect(),
            sinks: tree
                .sinks
                .iter()
                .map(|(name, h)| v1::SinkStatus {
                    name: (*name).to_owned(),
                    breaker: breaker_name(h.breaker).to_owned(),
                    transient_failures: h.transient_failures,
                    rejections: h.rejections,
                    breaker_opens: h.breaker_opens,
                })
                .collect(),
            members: self.members(),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<v1::ListDeadLettersRequest>,
    ) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        let req = request.into_inner();
        let filter = self.filter(&req.reason, &req.device_id, req.limit, req.include_replayed)?;
        let letters = self
            .tree
            .stores()
            .dead_letters
            .list(&filter)
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::ListDeadLettersResponse {
            dead_letters: letters.iter().map(dead_letter_to_wire).collect(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<v1::ReplayDeadLettersRequest>,
    ) -> Result<Response<v1::ReplayDeadLettersResponse>, Status> {
        let req = request.into_inner();
        let filter = self.filter(&req.reason, &req.device_id, req.limit, false)?;
        let summary = self.tree.replay(&filter).await.map_err(|e| match e {
            vatio_actors::TreeError::Store(e) => store_status(e),
            other => Status::unavailable(other.to_string()),
        })?;
        Ok(Response::new(v1::ReplayDeadLettersResponse {
            attempted: summary.attempted,
            accepted: summary.accepted,
            refused_again: summary.refused_again,
        }))
    }

    async fn flush(
        &self,
        _request: Request<v1::FlushRequest>,
    ) -> Result<Response<v1::FlushResponse>, Status> {
        self.tree
            .flush()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(v1::FlushResponse {}))
    }
}

fn breaker_name(state: vatio_actors::sink_retry::BreakerState) -> &'static str {
    use vatio_actors::sink_retry::BreakerState;
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open { .. } => "open",
        BreakerState::HalfOpen => "half_open",
    }
}
