//! Certificates for mutual TLS between vatio nodes and for vatio's clients.
//!
//! - [`generate_dev`] (behind `vatio certs dev`) writes a development CA and a
//!   certificate and key for each node and client into one directory.
//! - [`load_identity`], [`server_config`] and [`client_config`] read a node's
//!   (or a client's) files back and build the rustls configurations that the
//!   node's gRPC server and its peer clients use: both sides present a
//!   certificate, and both accept only certificates issued by the given CA.
//! - [`peer_identity`] reads the node id and AZ out of a peer's certificate
//!   once the handshake has verified it.
//!
//! How a node's identity is written into its certificate (the one place a
//! verifier reads it from): a subject alternative name URI
//! `vatio://node/<id>?az=<az>`. The subject (`CN=<id>, L=<az>, OU=node,
//! O=vatio`) repeats it for people reading the certificate, and is not used.
//! A client's certificate has `vatio://client/<name>` and `CN=<name>,
//! OU=client, O=vatio`, and may only authenticate as a client.
//!
//! Cryptography is rustls' `ring` provider, chosen explicitly, so nothing
//! here depends on a process-wide default provider being installed.

mod files;
mod generate;
mod names;
mod tls;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use generate::{DEV_CA_NAME, Written, WrittenFile, generate_dev};
pub use names::{PeerIdentity, node_dns_name, peer_identity};
pub use tls::{GRPC_ALPN, Identity, client_config, load_identity, server_config};

/// The files one node (or client) needs for mutual TLS: the CA that it
/// trusts, and its own certificate chain and private key, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) whose certificates are accepted from the other side.
    pub ca: PathBuf,
    /// This side's certificate, optionally followed by intermediates.
    pub cert: PathBuf,
    /// This side's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `vatio certs dev` wrote in `dir` for node `node_id`.
    pub fn node(dir: &Path, node_id: &str) -> Self {
        Self {
            ca: dir.join(generate::CA_CERT_FILE),
            cert: dir.join(format!("{node_id}.pem")),
            key: dir.join(format!("{node_id}.key")),
        }
    }

    /// The files `vatio certs dev` wrote in `dir` for client `name`.
    pub fn client(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join(generate::CA_CERT_FILE),
            cert: dir.join(format!("client-{name}.pem")),
            key: dir.join(format!("client-{name}.key")),
        }
    }
}

/// What went wrong, and with which file, name or certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Node ids, AZs or client names that cannot be used, one line each.
    #[error("{} problem(s) with the names given:\n  {}", .0.len(), .0.join("\n  "))]
    InvalidNames(Vec<String>),
    /// Files that exist and would be replaced; nothing was written.
    #[error(
        "refusing to overwrite {} existing file(s) (pass --force to replace them; \
         certificates signed by a replaced CA stop verifying): {}",
        .0.len(),
        display_paths(.0)
    )]
    WouldOverwrite(Vec<PathBuf>),
    /// rcgen could not build a key or certificate.
    #[error("generating {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    /// A file or directory could not be created, written or read.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file is malformed or lacks what it should contain.
    #[error("{}: {problem}", .path.display())]
    Pem { path: PathBuf, problem: String },
    /// rustls refused a certificate, key or configuration.
    #[error("{what}: {source}")]
    Tls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    /// The verifier of client certificates could not be built from the CA.
    #[error("client certificate verifier from {}: {source}", .ca.display())]
    Verifier {
        ca: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// A certificate that does not name a vatio node.
    #[error("not a vatio node certificate: {0}")]
    NotANode(String),
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
