//! Several nodes in one process forming a cluster over loopback gossip,
//! each with its own data directory, log and stores.

use std::collections::BTreeMap;
use std::time::Duration;

use vatio_actors::{TreeOptions, TreeStores};
use vatio_config::Config;
use vatio_proto::v1;
use vatio_stores::{DeviceId, Metric};

use crate::{TestNode, test_config};

/// The usual shape: two nodes in each of two AZs.
pub const FOUR: [(&str, &str); 4] = [
    ("a1", "az-a"),
    ("a2", "az-a"),
    ("b1", "az-b"),
    ("b2", "az-b"),
];

/// A cluster under test. Stopped nodes keep their stores readable.
pub struct TestCluster {
    pub nodes: BTreeMap<String, TestNode>,
    pub stopped: BTreeMap<String, TreeStores>,
}

impl TestCluster {
    /// Starts one node per `(id, az)`, the first one seeding the others'
    /// gossip, `tweak` applied to every config; returns once every node
    /// sees every other as a ready member.
    pub async fn start(spec: &[(&str, &str)], tweak: impl Fn(&mut Config)) -> anyhow::Result<Self> {
        let mut nodes = BTreeMap::new();
        let mut seed: Option<String> = None;
        for (id, az) in spec {
            let dir = tempfile::tempdir()?;
            let mut cfg = test_config(&dir);
            cfg.node.id = (*id).into();
            cfg.node.az = (*az).into();
            cfg.cluster.gossip_listen = "127.0.0.1:0".into();
            cfg.cluster.gossip_interval = Duration::from_millis(50);
            cfg.cluster.seeds = seed.iter().cloned().collect();
            tweak(&mut cfg);
            let node = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
            if seed.is_none() {
                seed = node.node.gossip_addr().map(|a| a.to_string());
            }
            nodes.insert((*id).to_owned(), node);
        }
        let cluster = Self {
            nodes,
            stopped: BTreeMap::new(),
        };
        let all: Vec<String> = spec.iter().map(|(id, _)| (*id).to_owned()).collect();
        cluster.wait_until_ready(&all).await?;
        Ok(cluster)
    }

    pub fn node(&self, id: &str) -> anyhow::Result<&TestNode> {
        self.nodes
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("no running node {id}"))
    }

    /// Waits until every running node sees exactly `ready` as its ready members.
    pub async fn wait_until_ready(&self, ready: &[String]) -> anyhow::Result<()> {
        let mut want: Vec<String> = ready.to_vec();
        want.sort();
        for node in self.nodes.values() {
            node.wait_for_status(&format!("ready, verified members are {want:?}"), |s| {
                let mut seen: Vec<String> = s
                    .members
                    .iter()
                    .filter(|m| m.ready && m.verified)
                    .map(|m| m.node_id.clone())
                    .collect();
                seen.sort();
                seen == want
            })
            .await?;
        }
        Ok(())
    }

    /// Shuts a node down cleanly and waits until the others no longer
    /// count on it.
    pub async fn stop(&mut self, id: &str) -> anyhow::Result<()> {
        let node = self
            .nodes
            .remove(id)
            .ok_or_else(|| anyhow::anyhow!("no running node {id}"))?;
        self.stopped.insert(id.to_owned(), node.stores().clone());
        node.node.shutdown().await?;
        let ready: Vec<String> = self.nodes.keys().cloned().collect();
        self.wait_until_ready(&ready).await
    }

    /// Every node's stores, running or stopped.
    pub fn all_stores(&self) -> Vec<(String, TreeStores)> {
        self.nodes
            .iter()
            .map(|(id, n)| (id.clone(), n.stores().clone()))
            .chain(self.stopped.iter().map(|(id, s)| (id.clone(), s.clone())))
            .collect()
    }

    /// Flushes every running node.
    pub async fn flush(&self) -> anyhow::Result<()> {
        for node in self.nodes.values() {
            node.flush().await?;
        }
        Ok(())
    }

    /// How many readings of `device`'s power in the minute at `minute_ms`
    /// the nodes' time-series stores count, per node that has a point.
    pub async fn power_counts(
        &self,
        device: &str,
        minute_ms: i64,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for (id, stores) in self.all_stores() {
            if let Some(p) = stores
                .timeseries
                .point(&DeviceId::new(device), Metric::Power, minute_ms)
                .await?
            {
                out.insert(id, p.stats.count);
            }
        }
        Ok(out)
    }

    /// The Admin.Status of every running node.
    pub async fn statuses(&self) -> anyhow::Result<BTreeMap<String, v1::StatusResponse>> {
        let mut out = BTreeMap::new();
        for (id, node) in &self.nodes {
            out.insert(id.clone(), node.status().await?);
        }
        Ok(out)
    }
}
