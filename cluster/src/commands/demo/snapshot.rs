//! Every demo node's Admin.Status at one moment. Status counters are
//! cumulative since the node started, so a rate is the difference between
//! two snapshots over the time between them.

use std::path::PathBuf;

use futures::future::join_all;
use vatio_proto::v1;

use super::cluster::{DemoCluster, SEATS, Seat, lists_ready};

/// One node's Admin.Status at one moment, or why it did not answer.
#[derive(Clone, Debug)]
pub struct NodeState {
    pub seat: Seat,
    pub data_dir: PathBuf,
    pub status: Result<v1::StatusResponse, String>,
}

/// Every node's state at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken: tokio::time::Instant,
    pub nodes: Vec<NodeState>,
}

impl Snapshot {
    /// Asks every node at once.
    pub async fn take(cluster: &DemoCluster) -> Self {
        let asks = cluster.nodes().iter().map(|n| async move {
            NodeState {
                seat: n.seat,
                data_dir: n.data_dir.clone(),
                status: n.status().await.map_err(|e| format!("{e:#}")),
            }
        });
        let nodes = join_all(asks).await;
        Self {
            taken: tokio::time::Instant::now(),
            nodes,
        }
    }

    pub(super) fn status(&self, id: &str) -> Option<&v1::StatusResponse> {
        self.nodes
            .iter()
            .find(|n| n.seat.id == id)
            .and_then(|n| n.status.as_ref().ok())
    }

    /// How many answering nodes list `seat` as a ready member, out of how
    /// many answered.
    pub(super) fn ready_views(&self, seat: Seat) -> (usize, usize) {
        let views: Vec<&v1::StatusResponse> = self
            .nodes
            .iter()
            .filter_map(|n| n.status.as_ref().ok())
            .collect();
        let ready = views.iter().filter(|s| lists_ready(s, seat)).count();
        (ready, views.len())
    }
}

/// How many of the demo's nodes `status` lists as ready members.
pub(super) fn sees_ready(status: &v1::StatusResponse) -> usize {
    SEATS
        .iter()
        .filter(|seat| lists_ready(status, **seat))
        .count()
}

/// A node's or an AZ's counters, with the accepted rate between two snapshots.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counts {
    pub accepted: u64,
    pub accepted_per_s: f64,
    pub duplicates: u64,
    pub dead_lettered: u64,
}

impl Counts {
    /// The counters in `after`, and the accepted rate since `before` (none:
    /// since the node started) over `secs` seconds.
    pub fn between(
        before: Option<&v1::StatusResponse>,
        after: &v1::StatusResponse,
        secs: f64,
    ) -> Self {
        let base = before.map_or(0, |b| b.readings_accepted);
        let delta = after.readings_accepted.saturating_sub(base);
        Self {
            accepted: after.readings_accepted,
            accepted_per_s: if secs > 0.0 { delta as f64 / secs } else { 0.0 },
            duplicates: after.readings_duplicate,
            dead_lettered: after.readings_dead_lettered,
        }
    }

    pub fn add(&mut self, other: Counts) {
        self.accepted += other.accepted;
        self.accepted_per_s += other.accepted_per_s;
        self.duplicates += other.duplicates;
        self.dead_lettered += other.dead_lettered;
    }
}
