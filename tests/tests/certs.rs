//! `vatio certs dev` as a user runs it: the real binary writes a CA and
//! node and client certificates that the node's TLS loaders accept, refuses
//! to overwrite them without `--force`, and names every bad node id.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Context as _;
use vatio_cluster::certs::{self, PeerIdentity, TlsFiles};
use vatio_tests::process::vatio_bin;

fn certs_dev(out: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let bin = vatio_bin()?;
    Command::new(&bin)
        .args(["certs", "dev", "--out"])
        .arg(out)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn certs_dev_writes_certificates_the_node_loads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("certs");
    let run = certs_dev(
        &out,
        &["--node", "n1:az-a", "--node", "n2:az-b", "--client", "ops"],
    )?;
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", text(&run.stderr));
    for file in ["ca.pem", "ca.key", "n1.pem", "n1.key", "n2.pem", "n2.key"] {
        assert!(stdout.contains(file), "{file} not reported:\n{stdout}");
    }
    assert!(stdout.contains("client-ops.key"), "{stdout}");

    for (id, az) in [("n1", "az-a"), ("n2", "az-b")] {
        let files = TlsFiles::node(&out, id);
        certs::server_config(&files)?;
        certs::client_config(&files)?;
        let (chain, _, _) = certs::load_identity(&files)?;
        let leaf = chain.first().context("no certificate")?;
        let expected = PeerIdentity {
            node_id: id.to_owned(),
            az: az.to_owned(),
        };
        assert_eq!(certs::peer_identity(leaf)?, expected);
    }
    certs::client_config(&TlsFiles::client(&out, "ops"))?;

    let again = certs_dev(&out, &["--node", "n1:az-a"])?;
    let stderr = text(&again.stderr);
    assert!(!again.status.success(), "overwrote without --force");
    assert!(
        stderr.contains("--force") && stderr.contains("ca.pem"),
        "{stderr}"
    );

    let forced = certs_dev(&out, &["--node", "n1:az-a", "--force"])?;
    let stderr = text(&forced.stderr);
    assert!(forced.status.success(), "{stderr}");
    assert!(
        stderr.contains("n2.pem"),
        "no note on n2's stale certificate: {stderr}"
    );
    Ok(())
}

#[test]
fn certs_dev_names_every_bad_node() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("certs");
    let run = certs_dev(&out, &["--node", "bad id:az-a", "--node", "n2:az/b"])?;
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "accepted bad names");
    assert!(stderr.contains("\"bad id\""), "{stderr}");
    assert!(stderr.contains("\"az/b\""), "{stderr}");
    assert!(!out.exists(), "wrote something for refused names");
    Ok(())
}

/// `vatio config check` loads the TLS files as the node would: a
/// certificate issued to another node is a problem under `tls`.
#[test]
fn config_check_refuses_another_nodes_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("certs");
    let run = certs_dev(&out, &["--node", "n1:az-a", "--node", "n2:az-b"])?;
    assert!(run.status.success(), "{}", text(&run.stderr));
    let check = |cert_of: &str| -> anyhow::Result<Output> {
        let files = TlsFiles::node(&out, cert_of);
        let config = dir.path().join(format!("with-{cert_of}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nid = \"n1\"\naz = \"az-a\"\n\n[tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
                files.ca.display().to_string(),
                files.cert.display().to_string(),
                files.key.display().to_string()
            ),
        )?;
        let bin = vatio_bin()?;
        Command::new(&bin)
            .args(["config", "check"])
            .arg(&config)
            .output()
            .with_context(|| format!("running {}", bin.display()))
    };
    let own = check("n1")?;
    assert!(own.status.success(), "{}", text(&own.stderr));
    let other = check("n2")?;
    let stderr = text(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tls:") && stderr.contains("n2"), "{stderr}");
    Ok(())
}
