//! The vatio node and its command-line tools.
//!
//! - [`node`]: a running node (stores, actor tree, gRPC server).
//! - [`services`]: the gRPC services.
//! - [`factory`]: the simulated plant behind `vatio demo`.
//! - [`load`]: the load generator behind `vatio load`.

pub mod certs;
pub mod clock;
pub mod commands;
pub mod factory;
pub mod join;
pub mod load;
pub mod log;
pub mod membership;
pub mod net;
pub mod node;
pub mod peer;
pub mod placement;
pub mod routing;
pub mod services;
pub mod stores;
pub mod table;
pub mod transport;
pub mod trust;

pub use clock::SystemClock;
pub use node::{Node, NodeOptions};
