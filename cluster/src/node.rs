//! A running node: its stores, its actor tree and its gRPC server (Ingest,
//! Query, Admin, plus health and reflection). Used by `vatio node`,
//! `vatio demo` and the end-to-end tests alike.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use vatio_actors::{ActorTree, SharedClock, TreeOptions, TreeStores};
use vatio_config::Config;
use vatio_proto::v1;

use crate::membership::Membership;
use crate::services::{admin::AdminService, ingest::IngestService, query::QueryService};

/// Largest gRPC message the node decodes (a full batch is far below this).
const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// What the node takes from its host besides configuration.
#[derive(Clone)]
pub struct NodeOptions {
    pub clock: SharedClock,
    pub tree: TreeOptions,
    /// Stores to use instead of opening the configured ones (tests,
    /// simulations with fault-injecting wrappers).
    pub stores: Option<TreeStores>,
    /// Fault injection for tests and simulations only: makes the
    /// write-ahead log's writes or fsyncs fail on demand.
    pub log_fault: Option<vatio_wal::FaultHook>,
}

impl NodeOptions {
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            clock,
            tree: TreeOptions::default(),
            stores: None,
            log_fault: None,
        }
    }
}

pub struct Node {
    addr: SocketAddr,
    tree: Arc<ActorTree>,
    /// Gossip membership, when the node is configured to join a cluster.
    membership: Option<Arc<Membership>>,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Node {
    /// Opens the stores, starts the actor tree and serves gRPC on
    /// `node.listen` (port 0 picks a free port; see [`Node::addr`]).
    pub async fn start(cfg: Config, options: NodeOptions) -> anyhow::Result<Self> {
        let data_dir = &cfg.node.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let stores = match options.stores {
            Some(s) => s,
            None => crate::stores::open_embedded(&cfg)?,
        };
        let log = crate::log::open(&cfg, options.log_fault.clone()).await?;
        let started_ms = options.clock.now_ms();
        let tree = Arc::new(
            ActorTree::start(
                &cfg,
                stores.clone(),
                log,
                options.clock.clone(),
                options.tree.clone(),
            )
            .await
            .context("starting the actor tree")?,
        );
        let listener = TcpListener::bind(cfg.node.listen)
            .await
            .with_context(|| format!("binding node.listen {}", cfg.node.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let membership = crate::join::join(&cfg, addr).await?.map(Arc::new);

        let ingest = IngestService::new(
            tree.clone(),
            cfg.ingest.max_batch_readings,
            cfg.ingest.max_device_id_bytes,
        );
        let query = QueryService::new(stores);
        let admin = AdminService::new(
            tree.clone(),
            cfg.node.id.clone(),
            cfg.node.az.clone(),
            started_ms,
            cfg.dead_letters.list_limit_max,
            membership.clone(),
        );
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<v1::ingest_server::IngestServer<IngestService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(vatio_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(
                v1::ingest_server::IngestServer::new(ingest)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(v1::query_server::QueryServer::new(query))
            .add_service(v1::admin_server::AdminServer::new(admin))
            .serve_with_incoming_shutdown(
                // Small acks must not wait for Nagle's algorithm.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stop_rx.await;
                },
            );
        let server = tokio::spawn(server);
        tracing::info!(node = %cfg.node.id, az = %cfg.node.az, %addr, "node serving");
        if let Some(m) = &membership {
            m.set_ready(true).await;
        }
        Ok(Self {
            addr,
            tree,
            membership,
            stop_server: Some(stop_tx),
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for gRPC clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The UDP address peers gossip with, when the node is in a cluster.
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.membership.as_ref().map(|m| m.gossip_addr())
    }

    pub fn tree(&self) -> &ActorTree {
        &self.tree
    }

    /// Completes if the actor tree stops on its own (a fatal failure); the
    /// node must then exit rather than keep answering.
    pub async fn failed(&self) {
        self.tree.stopped().await
    }

    /// Stops taking new calls, lets running ones finish, then flushes every
    /// reading the node acknowledged into the sinks and stops the actors.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        // Peers stop counting on this node first.
        if let Some(m) = &self.membership {
            m.set_ready(false).await;
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .context("gRPC server task")?
                .context("gRPC server")?;
        }
        self.tree
            .shutdown()
            .await
            .context("stopping the actor tree")?;
        // The server (and its Admin service's handle) is gone by now, so
        // this is the last handle; otherwise dropping it stops gossip too.
        if let Some(m) = self.membership.take().and_then(|m| Arc::try_unwrap(m).ok()) {
            m.shutdown().await.context("leaving the cluster gossip")?;
        }
        Ok(())
    }
}
