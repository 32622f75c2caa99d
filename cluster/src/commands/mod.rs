//! One module per `vatio` subcommand.

pub mod certs;
pub mod config_check;
pub mod demo;
pub mod dlq;
pub mod node;
pub mod query;
pub mod status;

use std::path::PathBuf;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

use crate::transport;

/// How a command reaches a node over TLS; shared by every command that
/// connects to one. With `--tls-ca` the address must be `https://`.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    /// CA certificate (PEM) that issued the node's certificate; needed for an https:// address.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present, for nodes with tls.client_auth = "required".
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name the node's certificate must carry, when the address does not
    /// name it (e.g. NODE_ID.vatio.internal when connecting by IP address;
    /// 127.0.0.1 and localhost are in every node certificate).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_domain: Option<String>,
}

/// The endpoint of the node at `addr`, with TLS as `tls` says.
pub fn endpoint(addr: &str, tls: &TlsArgs) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(addr.to_string()).with_context(|| {
        format!("--addr {addr:?} is not a valid URL (e.g. http://127.0.0.1:7400)")
    })?;
    let https = endpoint.uri().scheme_str() == Some("https");
    match (&tls.tls_ca, https) {
        (None, false) => Ok(endpoint),
        (None, true) => anyhow::bail!(
            "--addr {addr} is https://: pass --tls-ca FILE, the CA that issued the node's certificate"
        ),
        (Some(ca), false) => anyhow::bail!(
            "--tls-ca {} is given but --addr {addr} is not https://",
            ca.display()
        ),
        (Some(ca), true) => {
            let identity = tls.tls_cert.as_deref().zip(tls.tls_key.as_deref());
            let config = transport::client_tls(ca, identity, tls.tls_domain.as_deref())?;
            endpoint
                .tls_config(config)
                .with_context(|| format!("TLS towards {addr}"))
        }
    }
}

/// Connects to the node at `addr`, with TLS as `tls` says and a clear
/// error if it is not there.
pub async fn connect(addr: &str, tls: &TlsArgs) -> anyhow::Result<Channel> {
    endpoint(addr, tls)?
        .connect()
        .await
        .with_context(|| format!("connecting to the node at {addr}"))
}
