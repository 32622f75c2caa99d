//! One module per `vatio` subcommand.

pub mod certs;
pub mod config_check;
pub mod demo;
pub mod dlq;
pub mod node;
pub mod query;
pub mod status;

use anyhow::Context;
use tonic::transport::Channel;

/// Connects to a node's gRPC endpoint, with a clear error if it is not there.
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(addr.to_string()).with_context(|| {
            format!("--addr {addr:?} is not a valid URL (e.g. http://127.0.0.1:7400)")
        })?;
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to the node at {addr}"))
}
