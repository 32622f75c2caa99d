//! The real servers the store tests run against, each started on a free
//! loopback port with its files in a temporary directory:
//!
//! - InfluxDB 1.6 (`influxd`, Debian `influxdb`): v1 writes and InfluxQL;
//! - VictoriaMetrics (`victoria-metrics`, Debian): the InfluxDB v2 write API;
//! - SecantusDB (`secantusd-py`, PyPI `secantusdb`): a MongoDB-compatible server;
//! - moto (`moto_server`, PyPI `moto[server]`): S3.
//!
//! `tests/servers/install.sh` installs whichever is missing (the README's
//! test command runs it). A test either takes the process-wide [`shared`]
//! server of a kind (started on first use, each test in its own database or
//! bucket) or starts its own [`Server`] to stop, pause and restart.
//!
//! Every server runs under a small shell watchdog that holds a pipe from
//! this process: when the test process ends, however it ends, the pipe
//! closes and the watchdog stops the server by its PID. Every wait is bounded.

mod http;
mod kind;
pub mod s3;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use http::{get, post};
pub use kind::Kind;
pub use s3::create_bucket;

/// Where [`Server::start_https`] puts the certificate and key, in the server's directory.
pub(crate) const TLS_CERT_FILE: &str = "tls.crt";
pub(crate) const TLS_KEY_FILE: &str = "tls.key";

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How often readiness is probed.
const POLL: Duration = Duration::from_millis(50);

/// The watchdog: starts the server, prints its PID, waits until its own
/// standard input closes (this process ended or dropped the [`Server`]),
/// then stops the server, politely first.
const WATCHDOG: &str = r#"
"$@" >>"$VATIO_SERVER_LOG" 2>&1 </dev/null &
pid=$!
echo "$pid"
cat >/dev/null
kill -CONT "$pid" 2>/dev/null
kill -TERM "$pid" 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.5; done
kill -KILL "$pid" 2>/dev/null
"#;

/// One running server.
pub struct Server {
    kind: Kind,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    pid: u32,
    watchdog: Child,
    /// Held open: closing it stops the server.
    leash: Option<ChildStdin>,
}

impl Server {
    /// Starts a server of `kind` on a free loopback port and waits until it answers.
    pub fn start(kind: Kind) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vatio-{}-", kind.name()))
            .tempdir()
            .context("creating the server's directory")?;
        let addr = free_loopback_addr()?;
        let mut server = spawn(kind, addr, dir)?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts a server of `kind` on `addr` (e.g. one a node was already
    /// configured with while nothing listened there).
    pub fn start_at(kind: Kind, addr: SocketAddr) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vatio-{}-", kind.name()))
            .tempdir()
            .context("creating the server's directory")?;
        let mut server = spawn(kind, addr, dir)?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts a server of a TLS kind (such as [`Kind::InfluxDbHttps`])
    /// serving `cert_pem` (its chain) with `key_pem`.
    pub fn start_https(kind: Kind, cert_pem: &str, key_pem: &str) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vatio-{}-", kind.name()))
            .tempdir()
            .context("creating the server's directory")?;
        std::fs::write(dir.path().join(TLS_CERT_FILE), cert_pem)?;
        std::fs::write(dir.path().join(TLS_KEY_FILE), key_pem)?;
        let mut server = spawn(kind, free_loopback_addr()?, dir)?;
        server.wait_ready()?;
        Ok(server)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (SecantusDB: `mongodb://127.0.0.1:PORT`;
    /// a TLS kind: `https://localhost:PORT`).
    pub fn url(&self) -> String {
        match self.kind {
            Kind::SecantusDb => format!("mongodb://{}", self.addr),
            Kind::InfluxDbHttps => format!("https://localhost:{}", self.addr.port()),
            _ => format!("http://{}", self.addr),
        }
    }

    /// The server process's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's own output so far (last `lines` lines).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Freezes the process (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a paused process go on (`SIGCONT`).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    /// Kills the process (`SIGKILL`) and waits for its watchdog to end.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.signal("KILL")?;
        self.leash = None;
        self.watchdog.wait().context("waiting for the watchdog")?;
        Ok(())
    }

    /// Starts the server again on the same port and files (after [`Self::kill`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.leash.is_some() {
            self.kill()?;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir()?);
        let fresh = spawn(self.kind, self.addr, dir)?;
        let old = std::mem::replace(self, fresh);
        drop(old);
        self.wait_ready()
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -{signal} {} failed", self.pid);
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.watchdog.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.kind.name(),
                    self.log_tail(30)
                );
            }
            if self.kind.is_ready(self.addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} on {} not ready after {READY_TIMEOUT:?}:\n{}",
                    self.kind.name(),
                    self.addr,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing the leash makes the watchdog stop the server.
        if let Some(mut leash) = self.leash.take() {
            let _ = leash.flush();
        }
        let _ = self.watchdog.wait();
    }
}

fn spawn(kind: Kind, addr: SocketAddr, dir: tempfile::TempDir) -> anyhow::Result<Server> {
    let program = kind.binary()?;
    let args = kind.args(addr, dir.path())?;
    let log = dir.path().join("server.log");
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("sh")
        .arg(&program)
        .args(&args)
        .env("VATIO_SERVER_LOG", &log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let stdout = watchdog.stdout.take().context("watchdog stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the server's PID")?;
    let pid = line
        .trim()
        .parse()
        .with_context(|| format!("the watchdog printed {line:?}, not a PID"))?;
    let leash = watchdog.stdin.take();
    Ok(Server {
        kind,
        addr,
        dir,
        pid,
        watchdog,
        leash,
    })
}

/// The process-wide server of `kind`, started on first use and stopped when
/// the process ends. Tests sharing it keep apart by database or bucket name.
pub fn shared(kind: Kind) -> &'static Server {
    static SERVERS: [OnceLock<Server>; Kind::ALL.len()] =
        [const { OnceLock::new() }; Kind::ALL.len()];
    // One start at a time: parallel tests of one process wait for the first.
    static STARTING: Mutex<()> = Mutex::new(());
    let slot = &SERVERS[kind as usize];
    if let Some(server) = slot.get() {
        return server;
    }
    let _starting = STARTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.get_or_init(|| match Server::start(kind) {
        Ok(server) => server,
        Err(e) => panic!("starting the shared {} server: {e:#}", kind.name()),
    })
}

/// A name no other test of this run uses: `{prefix}{pid}x{n}`, lowercase
/// letters and digits only (valid for databases and buckets alike).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// A loopback address nothing listens on now.
pub fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}
