//! rustls configurations for mutual TLS, from a node's (or client's) files:
//! the server side requires a certificate from the CA, the client side
//! presents its own and accepts only servers with one from the CA. Both
//! offer ALPN `h2`, as gRPC needs.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{CertsError, TlsFiles, files};

/// The ALPN protocol both configurations offer: HTTP/2, for gRPC.
pub const GRPC_ALPN: &[u8] = b"h2";

/// rustls' `ring` provider, named here rather than taken from the process
/// default, so these configurations never depend on one being installed.
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: String) -> impl FnOnce(rustls::Error) -> CertsError {
    move |source| CertsError::Tls { what, source }
}

/// This side's certificate chain, its private key, and the CA certificates
/// it trusts.
pub type Identity = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    RootCertStore,
);

/// This side's certificate chain and private key, and the CA certificates
/// it trusts, read from `files`.
pub fn load_identity(files: &TlsFiles) -> Result<Identity, CertsError> {
    let chain = files::certificates(&files.cert)?;
    let key = files::private_key(&files.key)?;
    let mut roots = RootCertStore::empty();
    for ca in files::certificates(&files.ca)? {
        roots.add(ca).map_err(tls_error(format!(
            "CA certificate in {}",
            files.ca.display()
        )))?;
    }
    Ok((chain, key, roots))
}

/// A server that presents `files.cert` and requires every client to present
/// a certificate issued by the CA in `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, CertsError> {
    let (chain, key, roots) = load_identity(files)?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| CertsError::Verifier {
            ca: files.ca.clone(),
            source,
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error("TLS protocol versions".to_owned()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error(identity_what(files)))?;
    config.alpn_protocols = vec![GRPC_ALPN.to_vec()];
    Ok(config)
}

/// A client that presents `files.cert` and accepts only servers whose
/// certificate was issued by the CA in `files.ca` (and names the server
/// name it is given at connection time, e.g. [`super::node_dns_name`]).
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, CertsError> {
    let (chain, key, roots) = load_identity(files)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error("TLS protocol versions".to_owned()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(tls_error(identity_what(files)))?;
    config.alpn_protocols = vec![GRPC_ALPN.to_vec()];
    Ok(config)
}

fn identity_what(files: &TlsFiles) -> String {
    format!(
        "certificate {} with key {}",
        files.cert.display(),
        files.key.display()
    )
}
