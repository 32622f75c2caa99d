//! Names in vatio certificates: which node ids, AZs and client names are
//! accepted, how a node's id and AZ are written into its certificate as a
//! URI, and how [`peer_identity`] reads them back.

use rustls::pki_types::{CertificateDer, DnsName};

use super::CertsError;

/// Subject alternative name URI of a node: `vatio://node/<id>?az=<az>`.
const NODE_URI_PREFIX: &str = "vatio://node/";
const NODE_URI_AZ: &str = "?az=";
/// Subject alternative name URI of a client: `vatio://client/<name>`.
const CLIENT_URI_PREFIX: &str = "vatio://client/";

/// A node as its certificate names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub node_id: String,
    pub az: String,
}

/// The DNS name in node `node_id`'s certificate, `<id>.vatio.internal`:
/// the server name a peer verifies, whatever address it dialled.
pub fn node_dns_name(node_id: &str) -> String {
    format!("{node_id}.vatio.internal")
}

pub(crate) fn node_uri(node_id: &str, az: &str) -> String {
    format!("{NODE_URI_PREFIX}{node_id}{NODE_URI_AZ}{az}")
}

pub(crate) fn client_uri(name: &str) -> String {
    format!("{CLIENT_URI_PREFIX}{name}")
}

/// The node id and AZ that `cert` was issued for.
///
/// This only reads the certificate: call it on a certificate the TLS
/// handshake has already verified against the CA (the first of the peer's
/// certificates), never on one that has not been verified.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, CertsError> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| CertsError::NotANode(format!("unreadable certificate: {e}")))?;
    let mut found = parsed
        .valid_uri_names()
        .filter(|uri| uri.starts_with(NODE_URI_PREFIX));
    let Some(uri) = found.next() else {
        let client = parsed
            .valid_uri_names()
            .any(|uri| uri.starts_with(CLIENT_URI_PREFIX));
        return Err(CertsError::NotANode(if client {
            "it is a client certificate".to_owned()
        } else {
            format!("no {NODE_URI_PREFIX}<id>{NODE_URI_AZ}<az> subject alternative name")
        }));
    };
    if let Some(other) = found.next() {
        return Err(CertsError::NotANode(format!(
            "it names two nodes, {uri:?} and {other:?}"
        )));
    }
    parse_node_uri(uri).map_err(CertsError::NotANode)
}

fn parse_node_uri(uri: &str) -> Result<PeerIdentity, String> {
    let (node_id, az) = uri
        .strip_prefix(NODE_URI_PREFIX)
        .and_then(|rest| rest.split_once(NODE_URI_AZ))
        .ok_or_else(|| format!("{uri:?} is not {NODE_URI_PREFIX}<id>{NODE_URI_AZ}<az>"))?;
    for (what, value) in [("node id", node_id), ("AZ", az)] {
        if let Some(problem) = name_problem(value) {
            return Err(format!("{uri:?}: {what} {problem}"));
        }
    }
    Ok(PeerIdentity {
        node_id: node_id.to_owned(),
        az: az.to_owned(),
    })
}

/// Why `value` cannot be a node id, AZ or client name, if it cannot: the
/// rule of `node.id` and `node.az` in the configuration (see
/// `config/src/validate.rs`), so that every configured node can have a
/// certificate and nothing needs escaping in the URI or file names.
pub(crate) fn name_problem(value: &str) -> Option<String> {
    (!vatio_config::is_valid_name(value))
        .then(|| format!("must be {}, got {value:?}", vatio_config::NAME_RULE))
}

/// Why node `node_id` cannot have `<id>.vatio.internal` in its certificate,
/// if it cannot: a DNS label has at most 63 characters and does not start
/// or end with '-' (stricter than the configuration's rule).
pub(crate) fn dns_problem(node_id: &str) -> Option<String> {
    let name = node_dns_name(node_id);
    DnsName::try_from(name.as_str()).err().map(|_| {
        format!(
            "cannot be a DNS label in {name:?} (at most 63 characters, \
             not starting or ending with '-'), got {node_id:?}"
        )
    })
}
