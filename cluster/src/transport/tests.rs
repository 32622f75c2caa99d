//! Who the transport lets in: the allow-lists of peers and AZs, callers
//! without a (node) certificate, and a node whose certificate names
//! another node. Connections over TLS are tested end to end in
//! `tests/tests/mtls.rs`.

use std::path::Path;

use tempfile::TempDir;
use tonic::{Code, Request};
use vatio_config::{ClientAuth, Config};

use super::*;

fn node(id: &str, az: &str) -> PeerIdentity {
    PeerIdentity {
        node_id: id.to_owned(),
        az: az.to_owned(),
    }
}

fn policy(azs: &[&str], peers: &[&str]) -> PeerPolicy {
    PeerPolicy {
        allowed_azs: azs.iter().map(|s| (*s).to_owned()).collect(),
        allowed_peers: peers.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// A development CA with nodes n1 (az-a) and n2 (az-b) and client ops.
fn dev_certs() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = [("n1", "az-a"), ("n2", "az-b")].map(|(id, az)| (id.to_owned(), az.to_owned()));
    certs::generate_dev(dir.path(), &nodes, &["ops".to_owned()], false)
        .expect("development certificates");
    dir
}

fn leaf(files: &TlsFiles) -> CertificateDer<'static> {
    let (chain, _, _) = certs::load_identity(files).expect("identity loads");
    chain.into_iter().next().expect("a certificate")
}

/// Node `id` in `az` with TLS from `dir`'s files for `cert_of`.
fn tls_config(dir: &Path, id: &str, az: &str, cert_of: &str) -> Config {
    let files = TlsFiles::node(dir, cert_of);
    let mut cfg = Config::default();
    cfg.node.id = id.to_owned();
    cfg.node.az = az.to_owned();
    cfg.tls.ca_file = files.ca;
    cfg.tls.cert_file = files.cert;
    cfg.tls.key_file = files.key;
    cfg
}

#[test]
fn empty_lists_admit_every_node() {
    let open = PeerPolicy::default();
    assert_eq!(check_peer(&node("n1", "az-a"), &open), Ok(()));
    assert_eq!(check_peer(&node("n9", "az-z"), &open), Ok(()));
}

#[test]
fn a_node_outside_the_allowed_azs_is_refused() {
    let azs = policy(&["az-a", "az-b"], &[]);
    assert_eq!(check_peer(&node("n1", "az-a"), &azs), Ok(()));
    assert_eq!(check_peer(&node("n2", "az-b"), &azs), Ok(()));
    assert_eq!(
        check_peer(&node("n3", "az-c"), &azs),
        Err(PeerRefusal::AzNotAllowed {
            node_id: "n3".to_owned(),
            az: "az-c".to_owned()
        })
    );
}

#[test]
fn a_node_outside_the_allowed_peers_is_refused() {
    let peers = policy(&[], &["n1", "n2"]);
    assert_eq!(check_peer(&node("n2", "az-b"), &peers), Ok(()));
    assert_eq!(
        check_peer(&node("n3", "az-a"), &peers),
        Err(PeerRefusal::PeerNotAllowed {
            node_id: "n3".to_owned()
        })
    );
}

#[test]
fn a_node_must_pass_both_lists() {
    let both = policy(&["az-a"], &["n1", "n2"]);
    assert_eq!(check_peer(&node("n1", "az-a"), &both), Ok(()));
    assert!(matches!(
        check_peer(&node("n2", "az-b"), &both),
        Err(PeerRefusal::AzNotAllowed { .. })
    ));
    assert!(matches!(
        check_peer(&node("n3", "az-a"), &both),
        Err(PeerRefusal::PeerNotAllowed { .. })
    ));
}

#[test]
fn a_caller_without_a_node_certificate_is_no_peer() {
    assert_eq!(presented_identity(None), Err(PeerRefusal::NoCertificate));
    assert_eq!(
        presented_identity(Some(&[][..])),
        Err(PeerRefusal::NoCertificate)
    );

    let dir = dev_certs();
    let client = leaf(&TlsFiles::client(dir.path(), "ops"));
    match presented_identity(Some(std::slice::from_ref(&client))) {
        Err(PeerRefusal::NotANode(reason)) => {
            assert!(reason.contains("client certificate"), "{reason}")
        }
        other => panic!("a client certificate must not pass as a node: {other:?}"),
    }
    let n2 = leaf(&TlsFiles::node(dir.path(), "n2"));
    assert_eq!(
        presented_identity(Some(std::slice::from_ref(&n2))),
        Ok(node("n2", "az-b"))
    );
}

#[tokio::test]
async fn without_tls_peers_are_unauthenticated_and_clients_served() {
    let transport = Transport::from_config(&Config::default()).expect("no TLS to load");
    assert!(!transport.tls_enabled());
    assert_eq!(transport.scheme(), "http");
    assert!(transport.server_tls().is_none());
    let peer = transport
        .authorize_peer(&Request::new(()))
        .expect("no TLS, no refusal");
    assert_eq!(peer, AuthorizedPeer::Unauthenticated);
    assert_eq!(peer.node_id(), None);
    transport
        .authorize_client(&Request::new(()))
        .expect("no TLS, no refusal");
    let endpoint = transport
        .peer_endpoint("n2", "127.0.0.1:7400".parse().expect("literal address"))
        .expect("endpoint");
    assert_eq!(endpoint.uri().to_string(), "http://127.0.0.1:7400/");
}

#[tokio::test]
async fn with_tls_a_call_without_certificate_is_no_peer() {
    let dir = dev_certs();
    let mut cfg = tls_config(dir.path(), "n1", "az-a", "n1");
    let transport = Transport::from_config(&cfg).expect("n1's files load");
    assert_eq!(transport.scheme(), "https");
    assert!(transport.server_tls().is_some());
    let refused = transport
        .authorize_peer(&Request::new(()))
        .expect_err("no certificate");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("no client certificate"),
        "{refused:?}"
    );
    transport
        .authorize_client(&Request::new(()))
        .expect("client_auth = optional serves clients without a certificate");

    cfg.tls.client_auth = ClientAuth::Required;
    let transport = Transport::from_config(&cfg).expect("n1's files load");
    let refused = transport
        .authorize_client(&Request::new(()))
        .expect_err("client_auth = required");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let endpoint = transport
        .peer_endpoint("n2", "127.0.0.1:7400".parse().expect("literal address"))
        .expect("endpoint");
    assert_eq!(endpoint.uri().to_string(), "https://127.0.0.1:7400/");
}

#[test]
fn a_certificate_for_another_node_is_refused_at_start() {
    let dir = dev_certs();
    let err = Transport::from_config(&tls_config(dir.path(), "n1", "az-a", "n2"))
        .expect_err("n2's certificate on n1");
    let text = err.to_string();
    assert!(
        text.contains("n2.pem") && text.contains("\"n2\"") && text.contains("node.id = \"n1\""),
        "{text}"
    );
    let err = Transport::from_config(&tls_config(dir.path(), "n1", "az-b", "n1"))
        .expect_err("n1's certificate names az-a");
    assert!(err.to_string().contains("\"az-a\""), "{err}");
}

#[test]
fn missing_and_malformed_files_are_named() {
    let dir = dev_certs();
    let mut cfg = tls_config(dir.path(), "n1", "az-a", "n1");
    cfg.tls.key_file = dir.path().join("missing.key");
    let err = Transport::from_config(&cfg).expect_err("no key file");
    assert!(err.to_string().contains("missing.key"), "{err}");

    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let err = client_tls(&not_pem, None, None).expect_err("no certificate in it");
    assert!(err.to_string().contains("not-a-ca.pem"), "{err}");
    let err = client_tls(&dir.path().join("nowhere.pem"), None, None).expect_err("no file");
    assert!(err.to_string().contains("nowhere.pem"), "{err}");

    let n1 = TlsFiles::node(dir.path(), "n1");
    let n2 = TlsFiles::node(dir.path(), "n2");
    let err = client_tls(&n1.ca, Some((n1.cert.as_path(), n2.key.as_path())), None)
        .expect_err("n2's key does not match n1's certificate");
    assert!(err.to_string().contains("n1.pem"), "{err}");
    client_tls(
        &n1.ca,
        Some((n1.cert.as_path(), n1.key.as_path())),
        Some("n1.vatio.internal"),
    )
    .expect("matching certificate and key");
}
