//! The demo's four nodes: two per AZ, each a real [`Node`] with its own data
//! directory, gRPC port and gossip socket, all in this process. They find
//! each other through gossip on loopback UDP, seeded with the gossip
//! addresses of the nodes started before them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;
use vatio_actors::SharedClock;
use vatio_config::Config;
use vatio_proto::v1::{self, admin_client::AdminClient};

use crate::certs::{self, TlsFiles};
use crate::commands::TlsArgs;
use crate::{Node, NodeOptions};

/// One place in the demo cluster: a node id and the AZ it runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seat {
    pub id: &'static str,
    pub az: &'static str,
}

/// The demo's nodes, in start order; the first one seeds the gossip.
pub const SEATS: [Seat; 4] = [
    Seat {
        id: "demo-a1",
        az: "az-a",
    },
    Seat {
        id: "demo-a2",
        az: "az-a",
    },
    Seat {
        id: "demo-b1",
        az: "az-b",
    },
    Seat {
        id: "demo-b2",
        az: "az-b",
    },
];

/// How long the nodes get to see each other as ready members. Gossip on one
/// machine converges within a few gossip intervals; far longer means
/// something is wrong (a blocked UDP port, a node that did not start).
const MEMBERSHIP_WAIT_MAX: Duration = Duration::from_secs(30);

/// How often membership is polled while waiting.
const MEMBERSHIP_POLL: Duration = Duration::from_millis(100);

/// The configuration of the demo node in `seat`. Every per-node setting of
/// the demo is made here, so that settings shared by all nodes (such as
/// their TLS material) have one place to go.
pub fn node_config(
    seat: Seat,
    base: &Config,
    data_dir: &Path,
    listen: SocketAddr,
    seeds: &[SocketAddr],
) -> anyhow::Result<Config> {
    let mut cfg = base.clone();
    cfg.node.id = seat.id.into();
    cfg.node.az = seat.az.into();
    cfg.node.data_dir = data_dir.join(seat.id);
    cfg.node.listen = listen;
    // Mutual TLS between the nodes and towards the demo's own clients, as
    // in production, with the demo's development CA. Absolute: a node
    // resolves relative paths in its configuration against its own data
    // directory, and `data_dir` may be relative to the working directory.
    let certs = std::path::absolute(certs_dir(data_dir))
        .with_context(|| format!("locating {}", certs_dir(data_dir).display()))?;
    let files = TlsFiles::node(&certs, seat.id);
    cfg.tls.ca_file = files.ca;
    cfg.tls.cert_file = files.cert;
    cfg.tls.key_file = files.key;
    // Port 0: a free port. Seeds cannot name port 0, so later nodes are
    // seeded with the ports the earlier ones actually bound.
    cfg.cluster.gossip_listen = "127.0.0.1:0".into();
    cfg.cluster.seeds = seeds.iter().map(ToString::to_string).collect();
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("configuration of demo node {}:\n{e}", seat.id))?;
    Ok(cfg)
}

/// Where the demo keeps its development CA and certificates.
pub fn certs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("certs")
}

/// The name of the demo's own client certificate.
pub const DEMO_CLIENT: &str = "demo";

/// Generates the demo's CA, one certificate per node and one for the demo's
/// client, unless a previous run left them (`vatio certs dev` does the same).
pub fn ensure_certs(data_dir: &Path) -> anyhow::Result<()> {
    let dir = certs_dir(data_dir);
    let client = TlsFiles::client(&dir, DEMO_CLIENT);
    let complete = client.ca.exists()
        && client.cert.exists()
        && SEATS
            .iter()
            .all(|s| TlsFiles::node(&dir, s.id).cert.exists());
    if complete {
        return Ok(());
    }
    let nodes: Vec<(String, String)> = SEATS
        .iter()
        .map(|s| (s.id.to_owned(), s.az.to_owned()))
        .collect();
    certs::generate_dev(&dir, &nodes, &[DEMO_CLIENT.to_owned()], true)
        .with_context(|| format!("generating the demo's certificates in {}", dir.display()))?;
    Ok(())
}

/// How the demo's clients reach its nodes: the demo CA, the demo client certificate.
pub fn client_tls(data_dir: &Path) -> TlsArgs {
    let files = TlsFiles::client(&certs_dir(data_dir), DEMO_CLIENT);
    TlsArgs {
        tls_ca: Some(files.ca),
        tls_cert: Some(files.cert),
        tls_key: Some(files.key),
        tls_domain: None,
    }
}

/// The gRPC address of the `index`th node: `base` itself when its port is 0
/// (each node takes a free port), else consecutive ports from `base`.
fn listen_addr(base: SocketAddr, index: usize) -> anyhow::Result<SocketAddr> {
    if base.port() == 0 {
        return Ok(base);
    }
    let port = u16::try_from(index)
        .ok()
        .and_then(|i| base.port().checked_add(i))
        .with_context(|| format!("--listen {base}: no room for {} ports", SEATS.len()))?;
    Ok(SocketAddr::new(base.ip(), port))
}

/// A started demo node and a channel to it.
pub struct DemoNode {
    pub seat: Seat,
    pub node: Node,
    pub data_dir: PathBuf,
    /// The node's `ingest.max_batch_readings`: larger batches are refused.
    pub batch_readings_max: u32,
    pub channel: Channel,
}

impl DemoNode {
    /// The node's counters and its view of the cluster (Admin.Status).
    pub async fn status(&self) -> anyhow::Result<v1::StatusResponse> {
        let status = AdminClient::new(self.channel.clone())
            .status(v1::StatusRequest {})
            .await
            .with_context(|| format!("Admin.Status of {}", self.seat.id))?;
        Ok(status.into_inner())
    }
}

/// The running demo cluster.
pub struct DemoCluster {
    nodes: Vec<DemoNode>,
}

impl DemoCluster {
    /// Starts every node, then waits until each one lists all of them as
    /// ready members. On failure, the nodes already started are shut down.
    pub async fn start(
        base: &Config,
        data_dir: &Path,
        listen: SocketAddr,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let mut cluster = Self { nodes: Vec::new() };
        let started = cluster.start_nodes(base, data_dir, listen, clock).await;
        let ready = match started {
            Ok(()) => cluster.wait_until_members().await,
            Err(e) => Err(e),
        };
        match ready {
            Ok(()) => Ok(cluster),
            Err(e) => {
                if let Err(stop) = cluster.shutdown().await {
                    tracing::error!(error = %format!("{stop:#}"), "stopping the demo nodes");
                }
                Err(e)
            }
        }
    }

    async fn start_nodes(
        &mut self,
        base: &Config,
        data_dir: &Path,
        listen: SocketAddr,
        clock: SharedClock,
    ) -> anyhow::Result<()> {
        ensure_certs(data_dir)?;
        let tls = client_tls(data_dir);
        let mut seeds: Vec<SocketAddr> = Vec::new();
        for (i, seat) in SEATS.into_iter().enumerate() {
            let cfg = node_config(seat, base, data_dir, listen_addr(listen, i)?, &seeds)?;
            let node_dir = cfg.node.data_dir.clone();
            let batch_readings_max = cfg.ingest.max_batch_readings;
            let node = Node::start(cfg, NodeOptions::with_clock(clock.clone()))
                .await
                .with_context(|| {
                    format!(
                        "starting demo node {} (if its address is taken, pass --listen 127.0.0.1:0)",
                        seat.id
                    )
                })?;
            let gossip = node.gossip_addr();
            let channel = match super::super::connect(&node.endpoint(), &tls).await {
                Ok(c) => c,
                Err(e) => {
                    if let Err(stop) = node.shutdown().await {
                        tracing::error!(error = %format!("{stop:#}"), node = seat.id, "stopping a demo node");
                    }
                    return Err(e);
                }
            };
            self.nodes.push(DemoNode {
                seat,
                node,
                data_dir: node_dir,
                batch_readings_max,
                channel,
            });
            seeds.push(gossip.with_context(|| format!("demo node {} has no gossip", seat.id))?);
        }
        Ok(())
    }

    /// Waits (bounded) until every node's Admin.Status lists every seat, in
    /// its AZ, as a ready member.
    async fn wait_until_members(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_WAIT_MAX;
        loop {
            let mut missing = Vec::new();
            for n in &self.nodes {
                let status = n.status().await?;
                let lacking: Vec<&str> = SEATS
                    .iter()
                    .filter(|seat| !lists_ready(&status, **seat))
                    .map(|seat| seat.id)
                    .collect();
                if !lacking.is_empty() {
                    missing.push(format!("{} lacks {}", n.seat.id, lacking.join(", ")));
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the demo nodes did not all see each other as ready members within {}s: {}",
                    MEMBERSHIP_WAIT_MAX.as_secs(),
                    missing.join("; ")
                );
            }
            tokio::time::sleep(MEMBERSHIP_POLL).await;
        }
    }

    pub fn nodes(&self) -> &[DemoNode] {
        &self.nodes
    }

    /// Completes with the node's id if any node's actor tree stops on its
    /// own (a fatal failure).
    pub async fn failed(&self) -> &'static str {
        if self.nodes.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.nodes.iter().map(|n| {
            Box::pin(async move {
                n.node.failed().await;
                n.seat.id
            })
        });
        futures::future::select_all(waits).await.0
    }

    /// Shuts every node down (each drains what it acknowledged into its
    /// stores), all at once; reports every node that did not stop cleanly.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // Flushed together first, while every node still serves: a node
        // whose replica had already stopped could not settle its last
        // steps, and would leave them for its next start.
        let flushes = self.nodes.iter().map(|n| async move {
            if let Err(e) = n.node.tree().flush().await {
                tracing::warn!(node = n.seat.id, error = %e, "flushing a demo node before it stops");
            }
        });
        futures::future::join_all(flushes).await;
        let stops = self.nodes.into_iter().map(|n| async move {
            drop(n.channel);
            n.node
                .shutdown()
                .await
                .with_context(|| format!("shutting down demo node {}", n.seat.id))
        });
        let failures: Vec<String> = futures::future::join_all(stops)
            .await
            .into_iter()
            .filter_map(|r| r.err().map(|e| format!("{e:#}")))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", failures.join("; "))
        }
    }
}

/// Whether `status` lists `seat` as a ready member in its AZ.
pub fn lists_ready(status: &v1::StatusResponse, seat: Seat) -> bool {
    status
        .members
        .iter()
        .any(|m| m.node_id == seat.id && m.az == seat.az && m.ready)
}
