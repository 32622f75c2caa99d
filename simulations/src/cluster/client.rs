//! The simulation's clients: gateways sending readings to any node over the
//! simulated network, each one batch at a time, again and again until the
//! batch is acknowledged whole. What each acknowledgement promised is kept
//! for the checks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint};
use vatio_cluster::net::{Network, lazy_channel};
use vatio_proto::v1;

use super::net::SimNetwork;

/// What the clients saw, for the checks.
#[derive(Debug, Default)]
pub struct Acks {
    /// Every acknowledged valid reading, with the guarantee its ack reported.
    pub readings: BTreeMap<(String, u64), v1::AckGuarantee>,
    /// Invalid readings in acknowledged batches: each must be a dead letter.
    pub refused: BTreeSet<(String, u64)>,
    pub batches_sent: u64,
    pub batches_acked: u64,
    /// Calls that failed and were sent again, by the error's gRPC code.
    pub retries: BTreeMap<String, u64>,
    /// Batches given up on when the load ended (never acknowledged).
    pub abandoned: u64,
    /// One node's cluster-wide answers after the final flush, checked
    /// against every node's stores.
    pub cluster_answer: Option<ClusterAnswer>,
    /// Every call's outcome in the order the gateways saw them, stamped
    /// with simulated time: the run's trace. A seed must replay it exactly.
    pub trace: Vec<String>,
}

/// What one node answered for the whole cluster.
#[derive(Debug)]
pub struct ClusterAnswer {
    pub node: String,
    pub power_flow: v1::PowerFlowResponse,
    pub dead_letters: v1::DeadLetterCountsResponse,
}

pub type SharedAcks = Arc<Mutex<Acks>>;

/// One gateway's part of the load.
pub struct Gateway {
    pub seed: u64,
    pub name: String,
    /// The devices this gateway sends for (each device has one gateway).
    pub devices: Vec<String>,
    pub readings_per_batch: usize,
    /// Pause between one batch's ack and the next batch.
    pub pace: Duration,
    /// Nodes to send to, by host name.
    pub nodes: Vec<String>,
    pub grpc_port: u16,
    /// New batches stop after this much simulated time.
    pub load_for: Duration,
    /// Pause before a failed call is sent again.
    pub retry_after: Duration,
    /// A batch not acknowledged by this (simulated) time is abandoned.
    pub give_up_after: Duration,
    /// Share of readings sent in a unit validation refuses.
    pub invalid_share: f64,
}

/// The unit of the readings sent to be refused.
const INVALID_UNIT: &str = "furlongs";

/// Longest an ingest call may take before it is sent again.
const CALL_MAX: Duration = Duration::from_secs(5);
/// Longest a flush may take: it waits for sinks that were down to come
/// back (their retries back off).
const FLUSH_CALL_MAX: Duration = Duration::from_secs(180);

fn channel(host: &str, port: u16, call_max: Duration) -> anyhow::Result<Channel> {
    let addr = SocketAddr::new(turmoil::lookup(host), port);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(call_max)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true);
    let network: Arc<dyn Network> = Arc::new(SimNetwork);
    Ok(lazy_channel(&endpoint, network))
}

/// A query client for one node.
pub fn query(host: &str, port: u16) -> anyhow::Result<v1::query_client::QueryClient<Channel>> {
    Ok(v1::query_client::QueryClient::new(channel(
        host, port, CALL_MAX,
    )?))
}

/// An admin client for one node; `flush` allows the long calls of a flush.
pub fn admin(
    host: &str,
    port: u16,
    flush: bool,
) -> anyhow::Result<v1::admin_client::AdminClient<Channel>> {
    let call_max = if flush { FLUSH_CALL_MAX } else { CALL_MAX };
    Ok(v1::admin_client::AdminClient::new(channel(
        host, port, call_max,
    )?))
}

impl Gateway {
    pub async fn run(self, acks: SharedAcks) -> anyhow::Result<()> {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut clients = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            clients.push(v1::ingest_client::IngestClient::new(channel(
                node,
                self.grpc_port,
                CALL_MAX,
            )?));
        }
        let started = tokio::time::Instant::now();
        let mut next_seq: Vec<u64> = vec![1; self.devices.len()];
        let mut next_device = 0usize;
        let mut batch_id = 0u64;
        while started.elapsed() < self.load_for {
            batch_id += 1;
            let now_ms = i64::try_from(turmoil::since_epoch().unwrap_or_default().as_millis())
                .unwrap_or(i64::MAX);
            let mut readings = Vec::with_capacity(self.readings_per_batch);
            for _ in 0..self.readings_per_batch {
                let d = next_device % self.devices.len();
                next_device += 1;
                let seq = next_seq[d];
                next_seq[d] += 1;
                // A reading in a unit no meter reports must be refused,
                // whatever else happens to its batch.
                let unit = if rng.random_bool(self.invalid_share) {
                    INVALID_UNIT
                } else {
                    "kW"
                };
                readings.push(v1::Reading {
                    device_id: self.devices[d].clone(),
                    kind: v1::DeviceKind::ElectricityMeter as i32,
                    seq,
                    ts_unix_ms: now_ms,
                    metric: "power".into(),
                    value: rng.random_range(0.0..500.0),
                    unit: unit.into(),
                });
            }
            let request = v1::IngestRequest {
                batch_id,
                readings,
                source: self.name.clone(),
            };
            self.send_until_acked(&mut rng, &mut clients, request, &acks)
                .await;
            tokio::time::sleep(self.pace).await;
        }
        Ok(())
    }

    async fn send_until_acked(
        &self,
        rng: &mut SmallRng,
        clients: &mut [v1::ingest_client::IngestClient<Channel>],
        request: v1::IngestRequest,
        acks: &SharedAcks,
    ) {
        let lock = || acks.lock().unwrap_or_else(PoisonError::into_inner);
        lock().batches_sent += 1;
        let first_try = tokio::time::Instant::now();
        loop {
            let i = rng.random_range(0..clients.len());
            let outcome = clients[i].ingest_batch(request.clone()).await;
            let at = turmoil::elapsed().as_micros();
            let (gateway, batch, node) = (&self.name, request.batch_id, &self.nodes[i]);
            match outcome {
                Ok(reply) => {
                    let ack = reply.into_inner();
                    let guarantee = v1::AckGuarantee::try_from(ack.guarantee)
                        .unwrap_or(v1::AckGuarantee::Unspecified);
                    let mut acks = lock();
                    acks.trace.push(format!(
                        "{at} {gateway} batch {batch} via {node}: acked {guarantee:?}, {} accepted, {} duplicates, {} dead letters",
                        ack.accepted, ack.duplicates, ack.dead_lettered
                    ));
                    acks.batches_acked += 1;
                    for r in &request.readings {
                        let key = (r.device_id.clone(), r.seq);
                        if r.unit == INVALID_UNIT {
                            acks.refused.insert(key);
                        } else {
                            acks.readings.insert(key, guarantee);
                        }
                    }
                    return;
                }
                Err(status) => {
                    tracing::debug!(%gateway, batch, %node, code = ?status.code(), message = status.message(), "batch not acknowledged");
                    let mut acks = lock();
                    acks.trace.push(format!(
                        "{at} {gateway} batch {batch} via {node}: {:?}",
                        status.code()
                    ));
                    *acks
                        .retries
                        .entry(format!("{:?}", status.code()))
                        .or_default() += 1;
                }
            }
            if first_try.elapsed() >= self.give_up_after {
                lock().abandoned += 1;
                return;
            }
            tokio::time::sleep(self.retry_after).await;
        }
    }
}
