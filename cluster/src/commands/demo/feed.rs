//! The simulated factory, spread over the demo's nodes through their gRPC
//! Ingest endpoints. Any node takes any reading; each device still sends to
//! one node only (its id's hash modulo the number of nodes), so that one
//! node holds a device's sequence and dedupe state and its power per minute,
//! and the per-node numbers stay meaningful.

use std::collections::BTreeMap;

use anyhow::Context;
use futures::future::join_all;
use tonic::transport::Channel;
use twox_hash::XxHash64;
use vatio_proto::v1::{self, ingest_client::IngestClient};

use super::cluster::DemoNode;
use crate::factory::{Factory, FactorySpec};

/// Minutes of tallies kept for the summary; older ones are dropped.
const MINUTES_KEPT_MAX: usize = 10;

/// What the factory sent and what the nodes answered, over some span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    /// Readings in batches a node refused as a whole (an error status).
    pub refused: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.dead_lettered += other.dead_lettered;
        self.refused += other.refused;
    }

    fn add_ack(&mut self, ack: &v1::IngestAck) {
        self.accepted += u64::from(ack.accepted);
        self.duplicates += u64::from(ack.duplicates);
        self.dead_lettered += u64::from(ack.dead_lettered);
    }
}

/// The index of the node that `device_id`'s readings go to, out of `nodes`.
pub fn node_for(device_id: &str, nodes: usize) -> usize {
    let nodes = nodes.max(1) as u64;
    // The remainder is below `nodes`, which came from a usize.
    (XxHash64::oneshot(0, device_id.as_bytes()) % nodes) as usize
}

/// One node's Ingest endpoint.
struct Target {
    id: &'static str,
    client: IngestClient<Channel>,
    batch_readings_max: usize,
}

/// The factory and where its readings go.
pub struct Feed {
    factory: Factory,
    targets: Vec<Target>,
    batch_id: u64,
    minutes: BTreeMap<i64, Tally>,
    total: Tally,
}

impl Feed {
    /// A factory built from `spec` sending to `nodes`.
    pub fn new(spec: FactorySpec, nodes: &[DemoNode]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !nodes.is_empty(),
            "the demo factory needs a node to send to"
        );
        let targets = nodes
            .iter()
            .map(|n| Target {
                id: n.seat.id,
                client: IngestClient::new(n.channel.clone()),
                batch_readings_max: usize::try_from(n.batch_readings_max.max(1))
                    .unwrap_or(usize::MAX),
            })
            .collect();
        Ok(Self {
            factory: Factory::new(spec).context("demo factory")?,
            targets,
            batch_id: 0,
            minutes: BTreeMap::new(),
            total: Tally::default(),
        })
    }

    /// Sends what the factory produced up to `now_ms`: each node's share in
    /// its own batches, the nodes in parallel. Answers are tallied under the
    /// minute of `now_ms`; a refused batch is reported and counted, not retried.
    pub async fn tick(&mut self, now_ms: i64) {
        let mut shares: Vec<Vec<v1::Reading>> = vec![Vec::new(); self.targets.len()];
        for reading in self.factory.tick(now_ms) {
            let node = node_for(&reading.device_id, shares.len());
            if let Some(share) = shares.get_mut(node) {
                share.push(reading);
            }
        }
        let mut sends = Vec::with_capacity(self.targets.len());
        for (target, share) in self.targets.iter().zip(shares) {
            let mut batches = Vec::new();
            for chunk in share.chunks(target.batch_readings_max) {
                self.batch_id += 1;
                batches.push(v1::IngestRequest {
                    batch_id: self.batch_id,
                    readings: chunk.to_vec(),
                    source: "demo-factory".into(),
                });
            }
            let mut client = target.client.clone();
            let id = target.id;
            sends.push(async move {
                let mut tally = Tally::default();
                for batch in batches {
                    let len = batch.readings.len() as u64;
                    tally.sent += len;
                    match client.ingest_batch(batch).await {
                        Ok(ack) => tally.add_ack(ack.get_ref()),
                        Err(status) => {
                            tally.refused += len;
                            eprintln!("node {id} refused a batch of {len} readings: {status}");
                        }
                    }
                }
                tally
            });
        }
        let minute = now_ms - now_ms.rem_euclid(60_000);
        for tally in join_all(sends).await {
            self.minutes.entry(minute).or_default().add(&tally);
            self.total.add(&tally);
        }
        while self.minutes.len() > MINUTES_KEPT_MAX {
            self.minutes.pop_first();
        }
    }

    /// The recent minutes' tallies, by minute start (Unix ms).
    pub fn minutes(&self) -> &BTreeMap<i64, Tally> {
        &self.minutes
    }

    /// Everything since the factory started.
    pub fn total(&self) -> Tally {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_some_devices_and_a_device_always_the_same_node() {
        let factory = Factory::new(FactorySpec::default()).expect("default spec is valid");
        let mut per_node = [0u32; 4];
        for (id, _) in factory.devices() {
            let node = node_for(id, 4);
            assert_eq!(node, node_for(id, 4), "{id} always goes to one node");
            per_node[node] += 1;
        }
        assert!(
            per_node.iter().all(|n| *n > 0),
            "devices per node: {per_node:?}"
        );
    }
}
