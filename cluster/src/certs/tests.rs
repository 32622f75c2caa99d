//! What `vatio certs dev` and the TLS loaders guarantee, on real files in
//! temporary directories: every file written, nothing replaced unless
//! forced, bad names refused by name, node certificates accepted by their
//! own CA (as server and as client) and refused by another, identities read
//! back, and a real mutual TLS handshake over an in-memory stream.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::tls::provider;
use super::*;

type TestResult = Result<(), Box<dyn Error>>;

/// Bound on one in-memory handshake and exchange.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn nodes() -> Vec<(String, String)> {
    vec![
        ("n1".to_owned(), "az-a".to_owned()),
        ("n2".to_owned(), "az-b".to_owned()),
    ]
}

/// A directory with a dev CA, nodes n1 (az-a) and n2 (az-b), client `ops`.
fn dev_dir() -> Result<tempfile::TempDir, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    generate_dev(dir.path(), &nodes(), &["ops".to_owned()], false)?;
    Ok(dir)
}

fn leaf(files: &TlsFiles) -> Result<CertificateDer<'static>, Box<dyn Error>> {
    let (chain, _, _) = load_identity(files)?;
    chain.into_iter().next().ok_or_else(|| "empty chain".into())
}

/// How a server checks client certificates.
type ClientVerifier = Arc<dyn ClientCertVerifier>;

/// Verifiers of servers and of clients that trust the CA of `files`.
fn verifiers(
    files: &TlsFiles,
) -> Result<(Arc<WebPkiServerVerifier>, ClientVerifier), Box<dyn Error>> {
    let (_, _, roots) = load_identity(files)?;
    let roots = Arc::new(roots);
    let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider()).build()?;
    let clients = WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?;
    Ok((servers, clients))
}

fn verify_as_server(
    verifier: &WebPkiServerVerifier,
    cert: &CertificateDer<'_>,
    name: &str,
) -> Result<(), rustls::Error> {
    let name =
        ServerName::try_from(name.to_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
    verifier
        .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn generation_writes_every_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("certs");
    let written = generate_dev(&out, &nodes(), &["ops".to_owned()], false)?;

    let expected = [
        "ca.pem",
        "ca.key",
        "n1.pem",
        "n1.key",
        "n2.pem",
        "n2.key",
        "client-ops.pem",
        "client-ops.key",
    ];
    let listed: Vec<_> = written.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(listed, expected.map(|name| out.join(name)));
    for name in expected {
        let text = std::fs::read_to_string(out.join(name))?;
        assert!(text.starts_with("-----BEGIN "), "{name} is not PEM");
    }
    assert!(written.files[0].what.contains(DEV_CA_NAME));
    for files in [
        TlsFiles::node(&out, "n1"),
        TlsFiles::node(&out, "n2"),
        TlsFiles::client(&out, "ops"),
    ] {
        let (chain, _, roots) = load_identity(&files)?;
        assert_eq!((chain.len(), roots.len()), (1, 1));
    }
    Ok(())
}

#[cfg(unix)]
#[test]
fn keys_are_readable_by_their_owner_only() -> TestResult {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = dev_dir()?;
    for key in ["ca.key", "n1.key", "n2.key", "client-ops.key"] {
        let mode = std::fs::metadata(dir.path().join(key))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key} has mode {mode:o}");
    }
    Ok(())
}

#[test]
fn existing_files_are_kept_unless_forced() -> TestResult {
    let dir = dev_dir()?;
    let ca = dir.path().join("ca.pem");
    let before = std::fs::read(&ca)?;

    let refused = generate_dev(dir.path(), &nodes(), &[], false);
    let Err(CertsError::WouldOverwrite(paths)) = refused else {
        panic!("expected WouldOverwrite, got {refused:?}");
    };
    assert_eq!(paths.len(), 6, "{paths:?}");
    assert!(paths.contains(&ca));
    assert_eq!(std::fs::read(&ca)?, before, "a refused run changed ca.pem");

    generate_dev(dir.path(), &nodes(), &[], true)?;
    assert_ne!(
        std::fs::read(&ca)?,
        before,
        "--force did not replace ca.pem"
    );
    Ok(())
}

#[test]
fn one_existing_file_blocks_the_whole_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("n2.key");
    std::fs::write(&key, "mine")?;

    let err = generate_dev(dir.path(), &nodes(), &[], false)
        .err()
        .ok_or("generation replaced n2.key")?;
    assert!(err.to_string().contains("n2.key"), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert!(!dir.path().join("ca.pem").exists(), "wrote files anyway");
    assert_eq!(std::fs::read_to_string(&key)?, "mine");
    Ok(())
}

#[test]
fn bad_names_are_refused_each_by_name() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("certs");
    let nodes = [
        ("n 1", "az-a"),
        ("n2", "az/b"),
        ("-n3", "az-a"),
        (&"x".repeat(64), "az-a"),
        ("n5", ""),
    ]
    .map(|(id, az)| (id.to_owned(), az.to_owned()));
    let clients = ["ops!".to_owned()];

    let err = generate_dev(&out, &nodes, &clients, false)
        .err()
        .ok_or("bad names were accepted")?;
    let CertsError::InvalidNames(problems) = &err else {
        panic!("expected InvalidNames, got {err:?}");
    };
    assert_eq!(problems.len(), 6, "{problems:#?}");
    let message = err.to_string();
    for named in [
        "\"n 1\"", "\"az/b\"", "\"-n3\"", "\"xxxx", "\"\"", "\"ops!\"",
    ] {
        assert!(message.contains(named), "{named} not named in:\n{message}");
    }
    assert!(!out.exists(), "created the directory for refused names");
    Ok(())
}

#[test]
fn names_that_would_share_a_file_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let nodes = [
        ("ca", "az-a"),
        ("N1", "az-a"),
        ("n1", "az-b"),
        ("client-x", "az-a"),
    ]
    .map(|(id, az)| (id.to_owned(), az.to_owned()));
    let err = generate_dev(dir.path(), &nodes, &["x".to_owned()], false)
        .err()
        .ok_or("clashing names were accepted")?;
    let message = err.to_string();
    assert!(message.contains("3 problem(s)"), "{message}");
    assert!(
        message.contains("node \"ca\" and the CA would both write ca.pem\n"),
        "{message}"
    );
    assert!(
        message.contains("node \"n1\" and node \"N1\" would both write n1.pem (file names"),
        "{message}"
    );
    assert!(
        message.contains("client \"x\" and node \"client-x\""),
        "{message}"
    );
    Ok(())
}

#[test]
fn a_node_certificate_verifies_against_its_ca_as_server_and_as_client() -> TestResult {
    let dir = dev_dir()?;
    let files = TlsFiles::node(dir.path(), "n1");
    let cert = leaf(&files)?;
    let (servers, clients) = verifiers(&files)?;

    for name in ["n1.vatio.internal", "localhost", "127.0.0.1"] {
        verify_as_server(&servers, &cert, name).map_err(|e| format!("as {name}: {e}"))?;
    }
    let wrong = verify_as_server(&servers, &cert, &node_dns_name("n2"));
    assert!(wrong.is_err(), "n1's certificate passed as n2");
    clients.verify_client_cert(&cert, &[], UnixTime::now())?;
    Ok(())
}

#[test]
fn a_certificate_from_another_dev_ca_is_rejected() -> TestResult {
    let ours = dev_dir()?;
    let theirs = dev_dir()?;
    let (servers, clients) = verifiers(&TlsFiles::node(ours.path(), "n1"))?;
    let stranger = leaf(&TlsFiles::node(theirs.path(), "n1"))?;

    let as_server = verify_as_server(&servers, &stranger, "n1.vatio.internal");
    assert!(
        matches!(as_server, Err(rustls::Error::InvalidCertificate(_))),
        "{as_server:?}"
    );
    let as_client = clients.verify_client_cert(&stranger, &[], UnixTime::now());
    assert!(
        matches!(as_client, Err(rustls::Error::InvalidCertificate(_))),
        "{as_client:?}"
    );
    Ok(())
}

#[test]
fn a_client_certificate_authenticates_a_client_but_cannot_serve() -> TestResult {
    let dir = dev_dir()?;
    let cert = leaf(&TlsFiles::client(dir.path(), "ops"))?;
    let (servers, clients) = verifiers(&TlsFiles::client(dir.path(), "ops"))?;

    clients.verify_client_cert(&cert, &[], UnixTime::now())?;
    let served = verify_as_server(&servers, &cert, "localhost");
    assert!(served.is_err(), "a client certificate passed as a server");
    Ok(())
}

#[test]
fn peer_identity_reads_back_node_id_and_az() -> TestResult {
    let dir = dev_dir()?;
    for (id, az) in nodes() {
        let identity = peer_identity(&leaf(&TlsFiles::node(dir.path(), &id))?)?;
        assert_eq!(identity, PeerIdentity { node_id: id, az });
    }
    let client = peer_identity(&leaf(&TlsFiles::client(dir.path(), "ops"))?);
    assert!(
        matches!(&client, Err(CertsError::NotANode(why)) if why.contains("client")),
        "{client:?}"
    );
    let garbage = peer_identity(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]));
    assert!(
        matches!(garbage, Err(CertsError::NotANode(_))),
        "{garbage:?}"
    );
    Ok(())
}

#[test]
fn loading_names_the_file_that_is_missing_or_not_pem() -> TestResult {
    let dir = dev_dir()?;
    let mut files = TlsFiles::node(dir.path(), "n1");
    files.key = dir.path().join("missing.key");
    let err = load_identity(&files).err().ok_or("loaded a missing key")?;
    assert!(err.to_string().contains("missing.key"), "{err}");

    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "not a certificate")?;
    let mut files = TlsFiles::node(dir.path(), "n1");
    files.ca = not_pem;
    let err = server_config(&files).err().ok_or("loaded a CA from text")?;
    assert!(
        matches!(&err, CertsError::Pem { path, .. } if path.ends_with("notes.txt")),
        "{err:?}"
    );

    // n1's certificate with n2's key: rustls sees they do not match.
    let mut files = TlsFiles::node(dir.path(), "n1");
    files.key = TlsFiles::node(dir.path(), "n2").key;
    let err = client_config(&files)
        .err()
        .ok_or("accepted another node's key")?;
    assert!(err.to_string().contains("n1.pem"), "{err}");
    Ok(())
}

/// Outcome of one handshake: what each side saw of the other's certificate.
struct Exchange {
    server_saw: Result<PeerIdentity, String>,
    client_saw: Result<PeerIdentity, String>,
}

/// Node `server` accepts, `client` connects to `server_name` over an
/// in-memory stream; they exchange one message each way.
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    server_name: &str,
) -> Result<Exchange, Box<dyn Error>> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(server_name.to_owned())?;

    let serve = async move {
        let mut tls = acceptor
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let first = certs.first().ok_or("no client certificate")?;
        peer_identity(first).map_err(|e| e.to_string())
    };
    let connect = async move {
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(GRPC_ALPN) {
            return Err(format!("ALPN {alpn:?}"));
        }
        let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let first = certs.first().ok_or("no server certificate")?;
        peer_identity(first).map_err(|e| e.to_string())
    };
    let (server_saw, client_saw) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, async { tokio::join!(serve, connect) }).await?;
    Ok(Exchange {
        server_saw,
        client_saw,
    })
}

fn identity(node_id: &str, az: &str) -> PeerIdentity {
    PeerIdentity {
        node_id: node_id.to_owned(),
        az: az.to_owned(),
    }
}

#[tokio::test]
async fn two_nodes_complete_mutual_tls_and_see_each_other() -> TestResult {
    let dir = dev_dir()?;
    let n1 = TlsFiles::node(dir.path(), "n1");
    let n2 = TlsFiles::node(dir.path(), "n2");
    let seen = handshake(
        server_config(&n1)?,
        client_config(&n2)?,
        &node_dns_name("n1"),
    )
    .await?;
    assert_eq!(seen.server_saw, Ok(identity("n2", "az-b")));
    assert_eq!(seen.client_saw, Ok(identity("n1", "az-a")));
    Ok(())
}

#[tokio::test]
async fn a_node_refuses_a_peer_from_another_ca() -> TestResult {
    let ours = dev_dir()?;
    let theirs = dev_dir()?;
    let n1 = TlsFiles::node(ours.path(), "n1");
    // n2's certificate from another dev CA, by someone who trusts ours: the
    // only thing wrong is who issued the certificate it presents.
    let stranger = TlsFiles {
        ca: n1.ca.clone(),
        ..TlsFiles::node(theirs.path(), "n2")
    };

    // The stranger connects to n1: n1 refuses its certificate.
    let seen = handshake(
        server_config(&n1)?,
        client_config(&stranger)?,
        &node_dns_name("n1"),
    )
    .await?;
    assert!(
        matches!(&seen.server_saw, Err(why) if why.contains("invalid peer certificate")),
        "n1 as server saw {:?}",
        seen.server_saw
    );

    // n1 connects to the stranger posing as n2: n1 refuses the server.
    let seen = handshake(
        server_config(&stranger)?,
        client_config(&n1)?,
        &node_dns_name("n2"),
    )
    .await?;
    assert!(
        matches!(&seen.client_saw, Err(why) if why.contains("invalid peer certificate")),
        "n1 as client saw {:?}",
        seen.client_saw
    );
    Ok(())
}

#[tokio::test]
async fn a_node_refuses_a_client_without_a_certificate() -> TestResult {
    let dir = dev_dir()?;
    let n1 = TlsFiles::node(dir.path(), "n1");
    let (_, _, roots) = load_identity(&n1)?;
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![GRPC_ALPN.to_vec()];

    let seen = handshake(server_config(&n1)?, anonymous, "localhost").await?;
    assert!(
        matches!(&seen.server_saw, Err(why) if why.contains("no certificates")),
        "n1 as server saw {:?}",
        seen.server_saw
    );
    Ok(())
}

/// The IP SAN: a peer dialling 127.0.0.1 without a name still verifies.
#[tokio::test]
async fn a_node_is_reachable_as_127_0_0_1() -> TestResult {
    let dir = dev_dir()?;
    let n1 = TlsFiles::node(dir.path(), "n1");
    let client = TlsFiles::client(dir.path(), "ops");
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST).to_string();
    let seen = handshake(server_config(&n1)?, client_config(&client)?, &loopback).await?;
    assert_eq!(seen.client_saw, Ok(identity("n1", "az-a")));
    assert!(
        matches!(&seen.server_saw, Err(why) if why.contains("client certificate")),
        "{:?}",
        seen.server_saw
    );
    Ok(())
}
