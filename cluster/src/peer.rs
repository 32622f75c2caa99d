//! Node-to-node calls (`vatio.v1.Peer`): forwarding batches to their owner,
//! shipping device steps to replicas, and claiming devices on takeover.
//!
//! - [`clients`]: one gRPC channel per peer, through the node's [`Transport`](crate::transport::Transport).
//! - [`link`]: the [`ReplicaLink`](vatio_actors::replication::ReplicaLink) the actor tree ships steps through.
//! - [`service`]: the Peer service other nodes call.

pub mod clients;
pub mod link;
pub mod service;

pub use clients::PeerClients;
pub use link::ViewLink;
pub use service::PeerService;
