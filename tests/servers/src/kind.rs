//! What differs between the servers: binary, arguments and readiness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// A kind of server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// InfluxDB 1.6: `/write` and InfluxQL on `/query`.
    InfluxDb,
    /// InfluxDB 1.6 with authentication on: until an admin user is created
    /// (`CREATE USER … WITH ALL PRIVILEGES`, allowed without credentials
    /// while there is none) it refuses everything else.
    InfluxDbAuth,
    /// InfluxDB 1.6 on https only, with the certificate and key that
    /// [`crate::Server::start_https`] puts in its directory.
    InfluxDbHttps,
    /// VictoriaMetrics: takes InfluxDB v2 writes, reads back through `/api/v1/export`.
    VictoriaMetrics,
    /// SecantusDB: MongoDB wire protocol, on WiredTiger.
    SecantusDb,
    /// moto: S3.
    Moto,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::InfluxDb,
        Kind::InfluxDbAuth,
        Kind::InfluxDbHttps,
        Kind::VictoriaMetrics,
        Kind::SecantusDb,
        Kind::Moto,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::InfluxDb => "influxdb",
            Kind::InfluxDbAuth => "influxdb-auth",
            Kind::InfluxDbHttps => "influxdb-https",
            Kind::VictoriaMetrics => "victoria-metrics",
            Kind::SecantusDb => "secantusdb",
            Kind::Moto => "moto",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Kind::InfluxDb | Kind::InfluxDbAuth | Kind::InfluxDbHttps => "influxd",
            Kind::VictoriaMetrics => "victoria-metrics",
            Kind::SecantusDb => "secantusd-py",
            Kind::Moto => "moto_server",
        }
    }

    /// The binary on `PATH`, or an error that says how to install it.
    pub(crate) fn binary(self) -> anyhow::Result<PathBuf> {
        let program = self.program();
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
            .with_context(|| {
                format!(
                    "{program} is not installed: run tests/servers/install.sh \
                     (the README's test command does)"
                )
            })
    }

    /// Command-line arguments; writes any file the server needs into `dir`.
    pub(crate) fn args(self, addr: SocketAddr, dir: &Path) -> anyhow::Result<Vec<String>> {
        let path = |name: &str| dir.join(name).display().to_string();
        Ok(match self {
            Kind::InfluxDb | Kind::InfluxDbAuth | Kind::InfluxDbHttps => {
                let config = path("influxdb.conf");
                let mut text = influxdb_config(addr, dir, self == Kind::InfluxDbAuth)?;
                if self == Kind::InfluxDbHttps {
                    text.push_str(&format!(
                        "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
                        path(crate::TLS_CERT_FILE),
                        path(crate::TLS_KEY_FILE)
                    ));
                }
                std::fs::write(&config, text).context("writing influxdb.conf")?;
                vec!["-config".into(), config]
            }
            Kind::VictoriaMetrics => vec![
                format!("-httpListenAddr={addr}"),
                format!("-storageDataPath={}", path("data")),
                "-retentionPeriod=100y".into(),
                "-search.latencyOffset=0s".into(),
                "-search.disableCache".into(),
            ],
            Kind::SecantusDb => vec![
                "--host".into(),
                addr.ip().to_string(),
                "--port".into(),
                addr.port().to_string(),
                "--storage-path".into(),
                path("data"),
                "--standalone".into(),
                // Acknowledged writes survive a SIGKILL of the server.
                "--sync-on-commit".into(),
            ],
            Kind::Moto => vec![
                "-H".into(),
                addr.ip().to_string(),
                "-p".into(),
                addr.port().to_string(),
            ],
        })
    }

    /// Whether the server at `addr` answers as ready.
    pub(crate) fn is_ready(self, addr: SocketAddr) -> bool {
        match self {
            Kind::InfluxDb | Kind::InfluxDbAuth => {
                crate::http::status(addr, "GET", "/ping", b"") == Some(204)
            }
            // No TLS client here: listening is ready enough for a TLS test.
            Kind::InfluxDbHttps => std::net::TcpStream::connect(addr).is_ok(),
            Kind::VictoriaMetrics => crate::http::status(addr, "GET", "/health", b"") == Some(200),
            Kind::SecantusDb => std::net::TcpStream::connect(addr).is_ok(),
            Kind::Moto => crate::http::status(addr, "GET", "/moto-api/", b"") == Some(200),
        }
    }
}

/// InfluxDB 1.6 with only its HTTP port and RPC port open, both on loopback,
/// every file under `dir`, no reporting home and no `_internal` database.
fn influxdb_config(http: SocketAddr, dir: &Path, auth: bool) -> anyhow::Result<String> {
    let rpc = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let d = dir.display();
    Ok(format!(
        "reporting-enabled = false\n\
         bind-address = \"{rpc}\"\n\
         [meta]\n  dir = \"{d}/meta\"\n\
         [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
         [monitor]\n  store-enabled = false\n\
         [http]\n  bind-address = \"{http}\"\n  auth-enabled = {auth}\n  log-enabled = false\n"
    ))
}
