//! How the node talks TLS: its gRPC server, its calls to peers, and who may
//! call it.
//!
//! - [`Transport`] is built once from the `[tls]` section and shared: it
//!   gives the server its TLS ([`Transport::server_builder`]), gives a peer
//!   connection its endpoint ([`Transport::peer_endpoint`]: the node's own
//!   certificate, and the peer's certificate must name the peer's node id),
//!   and decides per call who is served ([`Transport::authorize_peer`],
//!   [`Transport::authorize_client`]).
//! - [`client_tls`] is the same for the CLI and the load generator, which
//!   only trust the CA and may present a client certificate.
//!
//! The server's handshake takes a client certificate if one is offered (and
//! refuses one the CA did not issue) but lets clients without one in; what
//! each service then asks of the caller is decided per call, so that a
//! client without a certificate gets a gRPC status saying why rather than a
//! dropped connection, and health checks work without one.
//!
//! Cryptography is rustls' `ring` provider, installed as the process
//! default ([`install_crypto_provider`]) because tonic's server builds its
//! rustls configuration from that default.

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use vatio_config::{ClientAuth, Config, TlsConfig};

use crate::certs::{self, CertsError, PeerIdentity, TlsFiles};

/// Longest a client may take over the TLS handshake before the server drops
/// the connection: a stalled client must not hold a connection slot.
const SERVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs rustls' `ring` provider as the process default, once. Safe to
/// call any number of times; if the host installed a provider first, that
/// one stays (only `ring` is built into vatio).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a default is installed already, which is then used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What went wrong setting up TLS, naming the file or address concerned.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate or key could not be read or used.
    #[error(transparent)]
    Certs(#[from] CertsError),
    /// This node's certificate is not for this node.
    #[error("{}: {problem}", .cert.display())]
    WrongNode { cert: PathBuf, problem: String },
    /// tonic refused the server's TLS configuration.
    #[error(
        "TLS of the gRPC server (certificate {}, key {}, CA {}): {source}",
        .files.cert.display(),
        .files.key.display(),
        .files.ca.display()
    )]
    Server {
        files: TlsFiles,
        #[source]
        source: tonic::transport::Error,
    },
    /// tonic refused an endpoint or its TLS configuration.
    #[error("endpoint {uri}: {source}")]
    Endpoint {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Who is calling the Peer service, as far as the transport can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizedPeer {
    /// TLS is off: anyone who can reach the port (development only).
    Unauthenticated,
    /// A node whose certificate the CA issued and the allow-lists admit.
    Node(PeerIdentity),
}

impl AuthorizedPeer {
    /// The caller's node id, when TLS says who it is.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Self::Unauthenticated => None,
            Self::Node(identity) => Some(&identity.node_id),
        }
    }
}

/// Which nodes may call this node as peers (`tls.allowed_azs`,
/// `tls.allowed_peers`); an empty list admits any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    pub allowed_azs: Vec<String>,
    pub allowed_peers: Vec<String>,
}

impl PeerPolicy {
    pub fn from_config(tls: &TlsConfig) -> Self {
        Self {
            allowed_azs: tls.allowed_azs.clone(),
            allowed_peers: tls.allowed_peers.clone(),
        }
    }
}

/// Why a peer call is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("{0}")]
    NotANode(String),
    #[error("node {node_id:?} is in AZ {az:?}, which tls.allowed_azs does not list")]
    AzNotAllowed { node_id: String, az: String },
    #[error("node {node_id:?} is not listed in tls.allowed_peers")]
    PeerNotAllowed { node_id: String },
}

/// The node named by the first of the certificates a caller presented
/// (verified against the CA by the handshake).
pub fn presented_identity(
    certs: Option<&[CertificateDer<'_>]>,
) -> Result<PeerIdentity, PeerRefusal> {
    let leaf = certs
        .and_then(<[_]>::first)
        .ok_or(PeerRefusal::NoCertificate)?;
    certs::peer_identity(leaf).map_err(|e| PeerRefusal::NotANode(e.to_string()))
}

/// Whether `policy` admits the node `identity` as a peer.
pub fn check_peer(identity: &PeerIdentity, policy: &PeerPolicy) -> Result<(), PeerRefusal> {
    if !policy.allowed_peers.is_empty() && !policy.allowed_peers.contains(&identity.node_id) {
        return Err(PeerRefusal::PeerNotAllowed {
            node_id: identity.node_id.clone(),
        });
    }
    if !policy.allowed_azs.is_empty() && !policy.allowed_azs.contains(&identity.az) {
        return Err(PeerRefusal::AzNotAllowed {
            node_id: identity.node_id.clone(),
            az: identity.az.clone(),
        });
    }
    Ok(())
}

/// How this node talks to clients and peers: plain HTTP/2 or mutual TLS.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    tls: Option<Arc<NodeTls>>,
    /// `cluster.peer_timeout`: the longest a connection to a peer (TCP and
    /// TLS handshake) may take, and the interval and timeout of its pings.
    peer_timeout: Duration,
}

/// This node's TLS material, read and checked once at start-up.
struct NodeTls {
    files: TlsFiles,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    policy: PeerPolicy,
    client_auth: ClientAuth,
}

impl fmt::Debug for NodeTls {
    /// Everything but the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("files", &self.files)
            .field("policy", &self.policy)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Reads and checks the `[tls]` files (paths relative to
    /// `node.data_dir`): they must load, the key must match the
    /// certificate, and the certificate must name `node.id` in `node.az`,
    /// or peers would refuse this node.
    pub fn from_config(cfg: &Config) -> Result<Self, TransportError> {
        let peer_timeout = cfg.cluster.peer_timeout;
        if !cfg.tls.enabled() {
            return Ok(Self {
                tls: None,
                peer_timeout,
            });
        }
        let files = TlsFiles {
            ca: cfg.data_path(&cfg.tls.ca_file),
            cert: cfg.data_path(&cfg.tls.cert_file),
            key: cfg.data_path(&cfg.tls.key_file),
        };
        // Both build every part (chain, key, CA, key matching the
        // certificate), so problems show now, with the file they are in.
        certs::server_config(&files)?;
        certs::client_config(&files)?;
        check_own_certificate(&files, &cfg.node.id, &cfg.node.az)?;
        let tls = NodeTls {
            ca_pem: read(&files.ca)?,
            cert_pem: read(&files.cert)?,
            key_pem: read(&files.key)?,
            files,
            policy: PeerPolicy::from_config(&cfg.tls),
            client_auth: cfg.tls.client_auth,
        };
        Ok(Self {
            tls: Some(Arc::new(tls)),
            peer_timeout,
        })
    }

    /// Whether the node serves and calls peers over TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// `https` with TLS, `http` without: the scheme of this node's URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls_enabled() { "https" } else { "http" }
    }

    /// The server's TLS: this node's certificate; client certificates are
    /// optional but, when presented, must be issued by the CA.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        install_crypto_provider();
        let tls = self.tls.as_ref()?;
        Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
                .client_ca_root(Certificate::from_pem(&tls.ca_pem))
                .client_auth_optional(true)
                .timeout(SERVER_HANDSHAKE_TIMEOUT),
        )
    }

    /// A server builder with this node's TLS applied to every service.
    pub fn server_builder(&self) -> Result<Server, TransportError> {
        let builder = Server::builder();
        let (Some(config), Some(tls)) = (self.server_tls(), &self.tls) else {
            return Ok(builder);
        };
        builder
            .tls_config(config)
            .map_err(|source| TransportError::Server {
                files: tls.files.clone(),
                source,
            })
    }

    /// An endpoint for peer `node_id` at `grpc_addr`: over TLS, this node
    /// presents its certificate and accepts only a certificate from the CA
    /// that names `node_id` (`<id>.vatio.internal`), whatever the address.
    pub fn peer_endpoint(
        &self,
        node_id: &str,
        grpc_addr: SocketAddr,
    ) -> Result<Endpoint, TransportError> {
        install_crypto_provider();
        let uri = format!("{}://{grpc_addr}", self.scheme());
        let endpoint_error = |source| TransportError::Endpoint {
            uri: uri.clone(),
            source,
        };
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(endpoint_error)?
            .connect_timeout(self.peer_timeout)
            .tcp_nodelay(true)
            // HTTP/2 pings, answered by the peer's HTTP/2 layer even while
            // it is busy, find a dead connection (a peer that lost power, a
            // path that drops everything) within two peer timeouts; the
            // channel then connects afresh. Without them calls to that
            // peer time out until the operating system gives up on the
            // connection, which takes minutes.
            .http2_keep_alive_interval(self.peer_timeout)
            .keep_alive_timeout(self.peer_timeout)
            .keep_alive_while_idle(true);
        let Some(tls) = &self.tls else {
            return Ok(endpoint);
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            .domain_name(certs::node_dns_name(node_id))
            .timeout(self.peer_timeout);
        endpoint.tls_config(config).map_err(endpoint_error)
    }

    /// Who is calling the Peer service: with TLS, a node certificate from
    /// the CA that the allow-lists admit, or `PERMISSION_DENIED` (logged
    /// with the reason and the caller's address).
    pub fn authorize_peer<T>(&self, req: &Request<T>) -> Result<AuthorizedPeer, Status> {
        let Some(tls) = &self.tls else {
            return Ok(AuthorizedPeer::Unauthenticated);
        };
        let certs = req.peer_certs();
        let checked = presented_identity(certs.as_deref().map(Vec::as_slice))
            .and_then(|identity| check_peer(&identity, &tls.policy).map(|()| identity));
        match checked {
            Ok(identity) => Ok(AuthorizedPeer::Node(identity)),
            Err(refusal) => {
                tracing::warn!(
                    reason = %refusal,
                    remote = ?req.remote_addr(),
                    "peer call refused"
                );
                Err(Status::permission_denied(format!(
                    "peer call refused: {refusal}"
                )))
            }
        }
    }

    /// Whether a call to Ingest, Query or Admin may proceed: always, unless
    /// `tls.client_auth = "required"` and the caller presented no
    /// certificate (`UNAUTHENTICATED`). A certificate that is presented was
    /// verified against the CA by the handshake already.
    pub fn authorize_client<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let required = self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_auth == ClientAuth::Required);
        if !required || req.peer_certs().is_some_and(|certs| !certs.is_empty()) {
            return Ok(());
        }
        tracing::warn!(
            remote = ?req.remote_addr(),
            "client call refused: no client certificate"
        );
        Err(Status::unauthenticated(
            "this node requires a client certificate issued by its CA \
             (tls.client_auth = \"required\")",
        ))
    }

    /// [`Transport::authorize_client`] as an interceptor, to wrap the
    /// Ingest, Query and Admin services with.
    pub fn client_auth(&self) -> ClientAuthInterceptor {
        ClientAuthInterceptor {
            transport: self.clone(),
        }
    }
}

/// Refuses calls that [`Transport::authorize_client`] refuses.
#[derive(Clone, Debug)]
pub struct ClientAuthInterceptor {
    transport: Transport,
}

impl Interceptor for ClientAuthInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.transport.authorize_client(&request)?;
        Ok(request)
    }
}

/// TLS for a client of Ingest, Query and Admin: trusts the CA in `ca`,
/// presents `identity` (certificate, key) if given, and verifies the
/// server's certificate against `domain` if given, else against the host
/// of the address it connects to.
pub fn client_tls(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    domain: Option<&str>,
) -> Result<ClientTlsConfig, TransportError> {
    install_crypto_provider();
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_ca(ca)?));
    if let Some((cert, key)) = identity {
        let files = TlsFiles {
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        // Loads and matches the certificate and key, naming them on error.
        certs::client_config(&files)?;
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(domain) = domain {
        config = config.domain_name(domain);
    }
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, CertsError> {
    std::fs::read(path).map_err(|source| CertsError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

/// A CA file's bytes, once they are known to hold at least one certificate
/// (tonic skips what it cannot parse, and a handshake would then fail with
/// no word about the file).
fn read_ca(path: &Path) -> Result<Vec<u8>, CertsError> {
    let bytes = read(path)?;
    let problem = match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => return Ok(bytes),
        Ok(_) => "no certificate (-----BEGIN CERTIFICATE-----) in the file".to_owned(),
        Err(e) => format!("malformed PEM: {e}"),
    };
    Err(CertsError::Pem {
        path: path.to_path_buf(),
        problem,
    })
}

/// This node's certificate must name `node_id` in `az`: peers verify the
/// name, and read the AZ, from it.
fn check_own_certificate(files: &TlsFiles, node_id: &str, az: &str) -> Result<(), TransportError> {
    let (chain, _, _) = certs::load_identity(files)?;
    let wrong = |problem: String| TransportError::WrongNode {
        cert: files.cert.clone(),
        problem,
    };
    let leaf = chain
        .first()
        .ok_or_else(|| wrong("no certificate in the file".to_owned()))?;
    let named = certs::peer_identity(leaf).map_err(|e| wrong(e.to_string()))?;
    if named.node_id != node_id || named.az != az {
        return Err(wrong(format!(
            "the certificate is for node {:?} in AZ {:?}, but this node is \
             node.id = {node_id:?}, node.az = {az:?}",
            named.node_id, named.az
        )));
    }
    Ok(())
}
