//! A running node: its stores, its actor tree and its gRPC server (Ingest,
//! Query, Admin, plus health and reflection). Used by `vatio node`,
//! `vatio demo` and the end-to-end tests alike.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use vatio_actors::{ActorTree, SharedClock, TreeOptions, TreeStores};
use vatio_config::Config;
use vatio_proto::v1;

use crate::membership::Membership;
use crate::net::{Conn, Network};
use crate::peer::clients::MAX_PEER_MESSAGE_BYTES;
use crate::peer::{PeerClients, PeerService, ViewLink};
use crate::placement::Az;
use crate::routing::Routing;
use crate::services::admin::{AdminCluster, AdminService};
use crate::services::fanout::ClusterReads;
use crate::services::ingest::IngestService;
use crate::services::query::QueryService;
use crate::transport::Transport;
use crate::trust::{StartedAs, TrustedView};
use vatio_actors::replication::Replication;

/// Largest gRPC message the node decodes (a full batch is far below this).
const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// Where the gRPC server's connections come from.
enum Incoming {
    Tcp(TcpListener),
    Other(futures::stream::BoxStream<'static, std::io::Result<Conn>>),
}

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
    /// Fault injection for simulations only: told how far each log segment
    /// is durable, so that a simulated power loss can drop the rest.
    pub log_durable: Option<vatio_wal::DurableHook>,
    /// Who times the log's interval fsyncs: the writer thread on the
    /// machine's clock (production), or this runtime's clock (simulations).
    pub log_interval_clock: vatio_wal::IntervalClock,
    /// Where the log and the embedded stores do their blocking work: on
    /// threads (production), or inline in the calling task (simulations,
    /// so that one thread runs everything in the order the seed gives).
    pub blocking: vatio_wal::Blocking,
    /// The network to serve, call peers and gossip on instead of real
    /// sockets (a simulation's).
    pub network: Option<Arc<dyn Network>>,
    /// Seeds the gossip's random choices. `None` draws one from the
    /// operating system; a simulation passes one derived from its seed.
    pub gossip_seed: Option<u64>,
}

impl NodeOptions {
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            clock,
            tree: TreeOptions::default(),
            stores: None,
            log_fault: None,
            log_durable: None,
            log_interval_clock: vatio_wal::IntervalClock::Writer,
            blocking: vatio_wal::Blocking::Threads,
            network: None,
            gossip_seed: None,
        }
    }
}

pub struct Node {
    addr: SocketAddr,
    tree: Arc<ActorTree>,
    /// Gossip membership, when the node is configured to join a cluster.
    membership: Option<Arc<Membership>>,
    /// TLS (or not) of the server and of calls to peers.
    transport: Transport,
    /// Keeps owned devices in line with membership (in a cluster).
    follower: Option<JoinHandle<()>>,
    /// The members this node has verified over the peer transport.
    trusted: Option<TrustedView>,
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
        // Before anything starts: a bad certificate stops the node here.
        let transport = Transport::from_config(&cfg).context("setting up TLS ([tls])")?;
        let stores = match options.stores {
            Some(s) => s,
            None => crate::stores::open(&cfg).await?,
        };
        let log = crate::log::open(
            &cfg,
            options.log_fault.clone(),
            options.log_durable.clone(),
            options.log_interval_clock,
            options.blocking,
        )
        .await?;
        let started_ms = options.clock.now_ms();
        let bind_error = || format!("binding node.listen {}", cfg.node.listen);
        let (addr, incoming) = match &options.network {
            None => {
                let listener = TcpListener::bind(cfg.node.listen)
                    .await
                    .with_context(bind_error)?;
                let addr = listener.local_addr().context("reading the bound address")?;
                (addr, Incoming::Tcp(listener))
            }
            Some(network) => {
                let listener = network
                    .listen(cfg.node.listen)
                    .await
                    .with_context(bind_error)?;
                (listener.local_addr, Incoming::Other(listener.incoming))
            }
        };
        // Membership first (not ready yet): replication places steps by it.
        let membership =
            crate::join::join(&cfg, addr, options.network.as_ref(), options.gossip_seed)
                .await?
                .map(Arc::new);
        let clients = PeerClients::new(transport.clone(), options.network.clone());
        let trusted = membership.as_ref().map(|m| {
            // A log past its first header held steps: this node ran before.
            let started = StartedAs {
                restarted: log.recovery.head.0 > vatio_wal::HEADER_BYTES,
                expects_peers: !cfg.cluster.seeds.is_empty(),
            };
            TrustedView::start(
                m.clone(),
                clients.clone(),
                cfg.cluster.peer_timeout,
                started,
            )
        });
        let mut tree_options = options.tree.clone();
        if let (Some(m), Some(trusted)) = (&membership, &trusted) {
            tree_options.replication = Some(Replication {
                link: Arc::new(ViewLink::new(
                    m.node().clone(),
                    Az::new(cfg.node.az.as_str()),
                    trusted.watch(),
                    m.watch(),
                    clients.clone(),
                )),
                ack: cfg.cluster.ack,
                no_other_az: cfg.cluster.no_other_az,
                timeout: cfg.cluster.peer_timeout,
                void_path: cfg.data_path(&cfg.log.dir).join("void"),
            });
        }
        let tree = Arc::new(
            ActorTree::start(
                &cfg,
                stores.clone(),
                log,
                options.clock.clone(),
                tree_options,
            )
            .await
            .context("starting the actor tree")?,
        );
        let reads = membership.as_ref().zip(trusted.as_ref()).map(|(m, t)| {
            Arc::new(ClusterReads::new(
                m.node().clone(),
                t.watch(),
                clients.clone(),
                cfg.cluster.peer_timeout,
            ))
        });
        let routing = membership.as_ref().zip(trusted.as_ref()).map(|(m, t)| {
            Routing::new(
                m.node().clone(),
                t.watch(),
                t.gate_watch(),
                clients,
                tree.clone(),
                cfg.cluster.peer_timeout,
            )
        });
        let follower = routing.as_ref().map(|r| r.follow_membership());

        let ingest = IngestService::new(
            tree.clone(),
            routing.clone(),
            cfg.ingest.max_batch_readings,
            cfg.ingest.max_device_id_bytes,
        );
        let peer = routing
            .clone()
            .map(|r| PeerService::new(transport.clone(), r, tree.clone()));
        let query = QueryService::new(stores, reads.clone());
        let admin = AdminService::new(
            tree.clone(),
            cfg.node.id.clone(),
            cfg.node.az.clone(),
            started_ms,
            cfg.dead_letters.list_limit_max,
            crate::stores::SinkBackends::of(&cfg),
            membership
                .clone()
                .zip(trusted.as_ref())
                .zip(reads.clone())
                .zip(routing.clone())
                .map(|(((membership, trusted), reads), routing)| AdminCluster {
                    membership,
                    trusted: trusted.watch(),
                    reads,
                    routing,
                }),
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
        let stopped = async {
            let _ = stop_rx.await;
        };
        let router = transport
            .server_builder()?
            .add_service(health)
            .add_service(reflection)
            .add_service(InterceptedService::new(
                v1::ingest_server::IngestServer::new(ingest)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
                transport.client_auth(),
            ))
            .add_service(v1::query_server::QueryServer::with_interceptor(
                query,
                transport.client_auth(),
            ))
            .add_service(v1::admin_server::AdminServer::with_interceptor(
                admin,
                transport.client_auth(),
            ))
            .add_optional_service(peer.map(|p| {
                v1::peer_server::PeerServer::new(p)
                    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
            }));
        let server = match incoming {
            Incoming::Tcp(listener) => tokio::spawn(router.serve_with_incoming_shutdown(
                // Small acks must not wait for Nagle's algorithm.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped,
            )),
            Incoming::Other(connections) => {
                tokio::spawn(router.serve_with_incoming_shutdown(connections, stopped))
            }
        };
        tracing::info!(node = %cfg.node.id, az = %cfg.node.az, %addr, "node serving");
        if let Some(m) = &membership {
            m.set_ready(true).await;
        }
        Ok(Self {
            addr,
            tree,
            membership,
            transport,
            follower,
            trusted,
            stop_server: Some(stop_tx),
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, or `https://ADDR` with TLS, for gRPC clients.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.transport.scheme(), self.addr)
    }

    /// How this node serves and reaches its peers (TLS or not).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The members this node places devices on (verified over the peer
    /// transport), when the node is in a cluster.
    pub fn cluster_view(&self) -> Option<crate::placement::View> {
        self.trusted.as_ref().map(TrustedView::view)
    }

    /// The UDP address peers gossip with, when the node is in a cluster.
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.membership.as_ref().map(|m| m.gossip_addr())
    }

    pub fn tree(&self) -> &ActorTree {
        &self.tree
    }

    /// Completes if the actor tree stops on its own (a fatal failure: an
    /// actor beyond its restart budget, or the write-ahead log failed); the
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
        if let Some(f) = self.follower.take() {
            f.abort();
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
