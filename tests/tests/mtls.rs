//! Mutual TLS on a node's gRPC server, as clients and peers meet it: a node
//! with `[tls]` serves Ingest, Query and Admin over https to clients that
//! trust its CA, and to no one else; a certificate from another CA fails
//! the handshake; `client_auth = "required"` turns away clients without a
//! certificate; and a peer endpoint accepts only the node it names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use vatio_actors::TreeOptions;
use vatio_cluster::certs::{self, TlsFiles};
use vatio_cluster::transport::{self, Transport};
use vatio_config::{ClientAuth, Config};
use vatio_proto::v1::{self, admin_client::AdminClient};
use vatio_tests::{T0_MS, TestNode, batch, power, test_config};

/// Longest a connection and one call may take before the test fails: every
/// case here ends in a few milliseconds, served or refused.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Two development CAs: `main` with nodes n1 (az-a), n2 (az-b) and client
/// ops, and `other` with the same names, so that only the issuer differs.
struct Pki {
    _dir: TempDir,
    main: PathBuf,
    other: PathBuf,
}

fn pki() -> anyhow::Result<Pki> {
    let dir = tempfile::tempdir()?;
    let (main, other) = (dir.path().join("main"), dir.path().join("other"));
    let nodes = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(id, az)| ((*id).to_owned(), (*az).to_owned()))
            .collect()
    };
    let clients = ["ops".to_owned()];
    certs::generate_dev(
        &main,
        &nodes(&[("n1", "az-a"), ("n2", "az-b")]),
        &clients,
        false,
    )?;
    certs::generate_dev(&other, &nodes(&[("n1", "az-a")]), &clients, false)?;
    Ok(Pki {
        _dir: dir,
        main,
        other,
    })
}

/// `cfg` as node `id` in `az` with its certificate from `dir`.
fn with_tls(mut cfg: Config, dir: &Path, id: &str, az: &str) -> Config {
    let files = TlsFiles::node(dir, id);
    cfg.node.id = id.to_owned();
    cfg.node.az = az.to_owned();
    cfg.tls.ca_file = files.ca;
    cfg.tls.cert_file = files.cert;
    cfg.tls.key_file = files.key;
    cfg
}

/// Node n1 (az-a) with TLS from the main CA.
async fn tls_node(pki: &Pki, client_auth: ClientAuth) -> anyhow::Result<TestNode> {
    let dir = tempfile::tempdir()?;
    let mut cfg = with_tls(test_config(&dir), &pki.main, "n1", "az-a");
    cfg.tls.client_auth = client_auth;
    TestNode::start_with(dir, cfg, TreeOptions::default(), None).await
}

/// Client TLS trusting `ca_dir`'s CA, presenting client ops's certificate
/// from `identity_dir` if given.
fn client_tls(ca_dir: &Path, identity_dir: Option<&Path>) -> anyhow::Result<ClientTlsConfig> {
    let ca = TlsFiles::client(ca_dir, "ops").ca;
    let identity = identity_dir.map(|dir| TlsFiles::client(dir, "ops"));
    let identity = identity
        .as_ref()
        .map(|files| (files.cert.as_path(), files.key.as_path()));
    Ok(transport::client_tls(&ca, identity, None)?)
}

fn https(t: &TestNode, tls: ClientTlsConfig) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(t.node.endpoint())?.tls_config(tls)?)
}

/// Connects through `endpoint` and asks Admin.Status: the status if the
/// node served it, the error (connection, handshake or call) if not.
async fn status_over(endpoint: Endpoint) -> anyhow::Result<Result<v1::StatusResponse, String>> {
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connecting: {e:?}"))?;
        AdminClient::new(channel)
            .status(v1::StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("calling: {status:?}"))
    };
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| {
        anyhow::anyhow!("Admin.Status neither answered nor refused within {CALL_TIMEOUT:?}")
    })
}

async fn connect(endpoint: Endpoint) -> anyhow::Result<Channel> {
    Ok(tokio::time::timeout(CALL_TIMEOUT, endpoint.connect()).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_ca_is_served_over_https() -> anyhow::Result<()> {
    let pki = pki()?;
    let t = tls_node(&pki, ClientAuth::Optional).await?;
    assert!(
        t.node.endpoint().starts_with("https://"),
        "{}",
        t.node.endpoint()
    );

    // No client certificate: the address (127.0.0.1) is in the node's certificate.
    let channel = connect(https(&t, client_tls(&pki.main, None)?)?).await?;
    let ack = v1::ingest_client::IngestClient::new(channel.clone())
        .ingest_batch(batch(1, vec![power("meter-01", 1, T0_MS - 60_000, 5.0)]))
        .await?
        .into_inner();
    assert_eq!(ack.accepted, 1);
    let status = AdminClient::new(channel)
        .status(v1::StatusRequest {})
        .await?
        .into_inner();
    assert_eq!(
        (status.node_id.as_str(), status.az.as_str()),
        ("n1", "az-a")
    );

    // A client certificate from the same CA, and the node's DNS name.
    let with_cert = client_tls(&pki.main, Some(&pki.main))?.domain_name("n1.vatio.internal");
    let served = status_over(https(&t, with_cert)?).await?;
    assert_eq!(served.map(|s| s.node_id), Ok("n1".to_owned()));

    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_client_is_not_served() -> anyhow::Result<()> {
    let pki = pki()?;
    let t = tls_node(&pki, ClientAuth::Optional).await?;
    let plain = Endpoint::from_shared(format!("http://{}", t.node.addr()))?;
    let refused = status_over(plain).await?;
    assert!(refused.is_err(), "served over plain HTTP/2: {refused:?}");
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_handshake() -> anyhow::Result<()> {
    let pki = pki()?;
    let t = tls_node(&pki, ClientAuth::Optional).await?;

    // The same client, with its certificate from the main CA, is served...
    let served = status_over(https(&t, client_tls(&pki.main, Some(&pki.main))?)?).await?;
    assert!(served.is_ok(), "{served:?}");
    // ...but not with the same name's certificate from the other CA.
    let foreign_client = client_tls(&pki.main, Some(&pki.other))?;
    let refused = status_over(https(&t, foreign_client)?).await?;
    assert!(refused.is_err(), "served a foreign client certificate");
    // Nor does a client that trusts only the other CA accept the node.
    let foreign_trust = client_tls(&pki.other, None)?;
    let refused = status_over(https(&t, foreign_trust)?).await?;
    let reason = refused.expect_err("accepted a server from another CA");
    assert!(reason.contains("InvalidCertificate"), "{reason}");

    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_auth_refuses_clients_without_a_certificate() -> anyhow::Result<()> {
    let pki = pki()?;
    let t = tls_node(&pki, ClientAuth::Required).await?;

    let anonymous = connect(https(&t, client_tls(&pki.main, None)?)?).await?;
    let refused = AdminClient::new(anonymous.clone())
        .status(v1::StatusRequest {})
        .await
        .expect_err("Admin without a certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = v1::ingest_client::IngestClient::new(anonymous.clone())
        .ingest_batch(batch(1, vec![power("meter-01", 1, T0_MS - 60_000, 5.0)]))
        .await
        .expect_err("Ingest without a certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = v1::query_client::QueryClient::new(anonymous)
        .latest(v1::LatestRequest {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect_err("Query without a certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let identified = connect(https(&t, client_tls(&pki.main, Some(&pki.main))?)?).await?;
    let ack = v1::ingest_client::IngestClient::new(identified)
        .ingest_batch(batch(1, vec![power("meter-01", 1, T0_MS - 60_000, 5.0)]))
        .await?
        .into_inner();
    assert_eq!(ack.accepted, 1);

    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_endpoint_accepts_only_the_node_it_names() -> anyhow::Result<()> {
    let pki = pki()?;
    let t = tls_node(&pki, ClientAuth::Required).await?;
    let n2 = Transport::from_config(&with_tls(Config::default(), &pki.main, "n2", "az-b"))?;

    // n2 presents its node certificate (client_auth = required lets it in)
    // and checks that the server's certificate names n1.
    let served = status_over(n2.peer_endpoint("n1", t.node.addr())?).await?;
    assert_eq!(served.map(|s| s.node_id), Ok("n1".to_owned()));
    // The same address taken for node n2: n1's certificate does not name n2.
    let refused = status_over(n2.peer_endpoint("n2", t.node.addr())?).await?;
    let reason = refused.expect_err("n1 passed for n2");
    assert!(reason.contains("n2.vatio.internal"), "{reason}");
    // A node without TLS cannot reach a node with it.
    let plain = Transport::from_config(&Config::default())?;
    let refused = status_over(plain.peer_endpoint("n1", t.node.addr())?).await?;
    assert!(refused.is_err(), "a plain-HTTP peer was served");

    t.node.shutdown().await?;
    Ok(())
}
