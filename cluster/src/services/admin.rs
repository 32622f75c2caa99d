//! `vatio.v1.Admin`: node status, dead letters (list and replay), flush.

use std::sync::Arc;

use crate::membership::Membership;
use crate::placement::View;
use crate::routing::Routing;
use crate::stores::SinkBackends;
use tokio::sync::watch;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use vatio_actors::ActorTree;
use vatio_actors::stats::NodeStats;
use vatio_proto::v1;
use vatio_proto::v1::admin_client::AdminClient;
use vatio_stores::{DeadLetterFilter, DeadLetterReason};

use super::convert::{dead_letter_to_wire, store_status};
use super::fanout::{ClusterReads, gather, peers_for};
use crate::peer::clients::MAX_PEER_MESSAGE_BYTES;

#[derive(Clone)]
pub struct AdminService {
    tree: Arc<ActorTree>,
    node_id: String,
    az: String,
    started_ms: i64,
    list_limit_max: u32,
    /// Which backend each sink writes to, for the status.
    backends: SinkBackends,
    /// Set on a cluster node.
    cluster: Option<AdminCluster>,
}

/// What a cluster node's admin service knows of the cluster.
#[derive(Clone)]
pub struct AdminCluster {
    pub membership: Arc<Membership>,
    /// The members this node has verified (see [`crate::trust`]).
    pub trusted: watch::Receiver<View>,
    /// Dead-letter lists and replays reach every member through it.
    pub reads: Arc<ClusterReads>,
    /// Replays this node's letters of devices other nodes own through them.
    pub routing: Arc<Routing>,
}

impl AdminService {
    pub fn new(
        tree: Arc<ActorTree>,
        node_id: String,
        az: String,
        started_ms: i64,
        list_limit_max: u32,
        backends: SinkBackends,
        cluster: Option<AdminCluster>,
    ) -> Self {
        Self {
            tree,
            node_id,
            az,
            started_ms,
            list_limit_max,
            backends,
            cluster,
        }
    }

    fn reads(&self) -> Option<&Arc<ClusterReads>> {
        self.cluster.as_ref().map(|c| &c.reads)
    }

    /// The cluster as gossip shows it, every known member with its state.
    fn members(&self) -> Vec<v1::ClusterMember> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let trusted = cluster.trusted.borrow().clone();
        cluster
            .membership
            .view()
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
            sink_write_failures: tree.sinks.iter().map(|s| s.health.transient_failures).sum(),
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
                dropped_readings_delivered: NodeStats::get(&s.dropped_readings_delivered),
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
                .map(|sink| v1::SinkStatus {
                    name: sink.name.to_owned(),
                    breaker: breaker_name(sink.health.breaker).to_owned(),
                    transient_failures: sink.health.transient_failures,
                    rejections: sink.health.rejections,
                    breaker_opens: sink.health.breaker_opens,
                    last_error: sink.last_error.clone().unwrap_or_default(),
                    backend: self.backends.backend(sink.name).to_owned(),
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
        let peers = peers_for(self.reads(), req.scope)?;
        let filter = self.filter(&req.reason, &req.device_id, req.limit, req.include_replayed)?;
        let letters = self
            .tree
            .stores()
            .dead_letters
            .list(&filter)
            .await
            .map_err(store_status)?;
        let mut all: Vec<v1::DeadLetter> = letters
            .iter()
            .map(|l| dead_letter_to_wire(l, &self.node_id))
            .collect();
        let ask = v1::ListDeadLettersRequest {
            scope: v1::QueryScope::Node as i32,
            ..req
        };
        let theirs = gather(peers, "dead-letter list", |channel| {
            let ask = ask.clone();
            async move {
                let reply = admin_client(channel).list_dead_letters(ask).await?;
                Ok(reply.into_inner().dead_letters)
            }
        })
        .await;
        all.extend(theirs.shares.into_iter().flatten());
        // Newest first over all nodes, as each node lists its own.
        all.sort_by(|a, b| {
            (b.received_unix_ms, &b.node_id, b.id).cmp(&(a.received_unix_ms, &a.node_id, a.id))
        });
        all.truncate(filter.limit as usize);
        Ok(Response::new(v1::ListDeadLettersResponse {
            dead_letters: all,
            unanswered_nodes: theirs.unanswered,
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<v1::ReplayDeadLettersRequest>,
    ) -> Result<Response<v1::ReplayDeadLettersResponse>, Status> {
        let req = request.into_inner();
        let peers = peers_for(self.reads(), req.scope)?;
        let filter = self.filter(&req.reason, &req.device_id, req.limit, false)?;
        let tree_status = |e| match e {
            vatio_actors::TreeError::Store(e) => store_status(e),
            other => Status::unavailable(other.to_string()),
        };
        let mut mine = self.tree.replay(&filter).await.map_err(tree_status)?;
        // Letters of devices other nodes own now go to those owners.
        if let Some(cluster) = &self.cluster
            && mine.not_owned > 0
        {
            let letters = self
                .tree
                .letters_not_owned(&filter)
                .await
                .map_err(tree_status)?;
            let outcomes = cluster.routing.replay_elsewhere(letters).await;
            let elsewhere = self
                .tree
                .settle_replayed(outcomes)
                .await
                .map_err(tree_status)?;
            mine.add_replayed_elsewhere(elsewhere);
        }
        let ask = v1::ReplayDeadLettersRequest {
            scope: v1::QueryScope::Node as i32,
            ..req
        };
        let theirs = gather(peers, "dead-letter replay", |channel| {
            let ask = ask.clone();
            async move {
                let reply = admin_client(channel).replay_dead_letters(ask).await?;
                Ok(reply.into_inner())
            }
        })
        .await;
        let mut total = v1::ReplayDeadLettersResponse {
            attempted: mine.attempted,
            accepted: mine.accepted,
            refused_again: mine.refused_again,
            not_owned: mine.not_owned,
            unanswered_nodes: theirs.unanswered,
        };
        for share in theirs.shares {
            total.attempted = total.attempted.saturating_add(share.attempted);
            total.accepted = total.accepted.saturating_add(share.accepted);
            total.refused_again = total.refused_again.saturating_add(share.refused_again);
            total.not_owned = total.not_owned.saturating_add(share.not_owned);
        }
        Ok(Response::new(total))
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

/// An admin client on a peer's channel, for peer-sized answers.
fn admin_client(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
}

fn breaker_name(state: vatio_actors::sink_retry::BreakerState) -> &'static str {
    use vatio_actors::sink_retry::BreakerState;
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open { .. } => "open",
        BreakerState::HalfOpen => "half_open",
    }
}
