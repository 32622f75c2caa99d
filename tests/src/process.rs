//! Real `vatio` processes for end-to-end tests, and what they leave on disk.
//!
//! Finds the `vatio` binary, writes a node configuration, starts nodes and
//! load generators as child processes with their output in files, waits
//! until a node serves, kills (`SIGKILL`) or stops (`SIGTERM`) it, and reads
//! the Parquet archive a stopped node wrote. Every wait is bounded, and a
//! [`Process`] kills its child when dropped, so a failing or timed-out test
//! leaves nothing running.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;
use tonic::transport::Endpoint;
use vatio_proto::v1;
use vatio_stores::Reading;

/// Environment variable naming the `vatio` binary to run.
pub const VATIO_BIN_ENV: &str = "VATIO_BIN";
/// How often a wait re-checks a child or a node.
const POLL: Duration = Duration::from_millis(50);
/// One attempt to reach a starting node.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines of a child's output shown when something went wrong.
const LOG_TAIL_LINES: usize = 40;

/// The `vatio` binary: `$VATIO_BIN`, else `vatio` next to the directory of
/// the running test executable (`target/debug/deps/..` → `target/debug/vatio`).
pub fn vatio_bin() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(VATIO_BIN_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().context("locating the test executable")?;
            let deps = exe
                .parent()
                .context("the test executable has no directory")?;
            deps.join("..")
                .join(format!("vatio{}", std::env::consts::EXE_SUFFIX))
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "no vatio binary at {}: run `cargo build -p vatio-cluster --bin vatio` first \
         (or point {VATIO_BIN_ENV} at one)",
        path.display()
    );
    Ok(path)
}

/// Where [`free_port`] looks: below Linux's default ephemeral range
/// (32768–60999), so that no socket bound to port 0 (by an in-process test
/// node running alongside, or by the kernel for an outgoing connection) is
/// handed a port a child node is about to bind or rebind after a restart.
const FIXED_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 free a moment ago for both TCP and UDP, taken from
/// [`FIXED_PORTS`]. Each call starts at a fresh random place, so concurrent
/// test processes rarely try the same port; a port is returned only if both
/// binds succeeded. A node restarted on it keeps the address its peers and
/// clients know.
pub fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher as _, Hasher as _};
    let span = FIXED_PORTS.end - FIXED_PORTS.start;
    // std's hasher keys are random per process and per call: enough spread
    // here without a random number generator.
    let noise = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let start = u16::try_from(noise % u64::from(span)).unwrap_or(0);
    for i in 0..span {
        let port = FIXED_PORTS.start + (start + i) % span;
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, port));
        if tcp.is_ok() && udp.is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!(
        "no port in 127.0.0.1:{}..{} is free for both TCP and UDP",
        FIXED_PORTS.start,
        FIXED_PORTS.end
    )
}

/// A node's configuration file and where the node keeps its data.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    /// The TOML file to pass as `--config`.
    pub config: PathBuf,
    /// `node.data_dir`.
    pub data_dir: PathBuf,
    /// `node.listen`.
    pub listen: SocketAddr,
}

impl NodeFiles {
    /// Writes `dir/node.toml` for a node listening on `127.0.0.1:port` with
    /// its data in `dir/data`; `extra` is appended verbatim (more sections).
    pub fn write(dir: &Path, port: u16, extra: &str) -> anyhow::Result<Self> {
        let data_dir = dir.join("data");
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // TOML basic strings escape backslashes and quotes like Rust's Debug.
        let text = format!(
            "[node]\ndata_dir = {:?}\nlisten = \"{listen}\"\n\n{extra}",
            data_dir.display().to_string()
        );
        let config = dir.join("node.toml");
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(Self {
            config,
            data_dir,
            listen,
        })
    }

    /// The gRPC endpoint clients use: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The configuration as the node reads it (without environment
    /// overrides, which [`vatio_command`] removes from children).
    pub fn load(&self) -> anyhow::Result<vatio_config::Config> {
        vatio_config::Config::load(Some(&self.config), std::iter::empty())
            .map_err(|e| anyhow::anyhow!("invalid configuration {}:\n{e}", self.config.display()))
    }
}

/// The configuration files of a cluster on loopback: each node of `nodes`
/// (id, AZ) gets a directory under `root`, a free gRPC port, a gossip port
/// seeded with every other node's, the quick timings of the process tests
/// (gossip every 100 ms, 2 s peer timeout, 200 ms flushes), and `sections`
/// (more TOML sections) after them.
pub fn write_cluster_configs(
    root: &Path,
    nodes: &[(&'static str, &str)],
    sections: &str,
) -> anyhow::Result<std::collections::BTreeMap<&'static str, NodeFiles>> {
    let gossip: Vec<u16> = nodes
        .iter()
        .map(|_| free_port())
        .collect::<anyhow::Result<_>>()?;
    let mut files = std::collections::BTreeMap::new();
    for (i, (id, az)) in nodes.iter().enumerate() {
        let seeds: Vec<String> = gossip
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("\"127.0.0.1:{p}\""))
            .collect();
        // Keys before the first section header belong to [node].
        let extra = format!(
            "id = \"{id}\"\naz = \"{az}\"\n\n\
             [cluster]\ngossip_listen = \"127.0.0.1:{}\"\nseeds = [{}]\n\
             gossip_interval = \"100ms\"\npeer_timeout = \"2s\"\n\n\
             [device]\nreorder_max_hold = \"120s\"\n\n\
             [aggregator]\nflush_max_delay = \"200ms\"\n\n\
             [stream_etl]\nflush_max_delay = \"200ms\"\n\n{sections}",
            gossip[i],
            seeds.join(", ")
        );
        let dir = root.join(id);
        std::fs::create_dir_all(&dir)?;
        files.insert(*id, NodeFiles::write(&dir, free_port()?, &extra)?);
    }
    Ok(files)
}

/// `vatio ARGS…` with the `VATIO_*` variables of the test's environment
/// removed (they would override the test's configuration) and the node's
/// log level set to `info`, or to `$VATIO_TEST_CHILD_LOG`.
pub fn vatio_command(bin: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VATIO_") {
            command.env_remove(name);
        }
    }
    let log = std::env::var("VATIO_TEST_CHILD_LOG").unwrap_or_else(|_| "info".to_owned());
    command.env("VATIO_LOG", log);
    command
}

/// A child process with its stdout and stderr in files. Dropping it kills
/// the child (`SIGKILL`) and reaps it.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Starts `command` with its output in `log_dir/NAME.stdout` and
    /// `log_dir/NAME.stderr`.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let stdout = log_dir.join(format!("{name}.stdout"));
        let stderr = log_dir.join(format!("{name}.stderr"));
        let out =
            File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let err =
            File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        let child = command
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            stdout,
            stderr,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the file holding the child's stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// The child's exit status if it has exited; `None` while it runs.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child
                .try_wait()
                .with_context(|| format!("checking on {}", self.name)),
            None => anyhow::bail!("{} was already killed", self.name),
        }
    }

    /// Waits at most `timeout` for the child to exit.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `SIGKILL`: the process dies at once, with no chance to clean up.
    /// Waits for it to be gone.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited, which is fine: it is gone.
            let _ = child.kill();
            child
                .wait()
                .with_context(|| format!("reaping {} after SIGKILL", self.name))?;
        }
        Ok(())
    }

    /// `SIGTERM` (a clean stop), then waits at most `timeout` for the exit.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_exit()? {
            anyhow::bail!(
                "{} had already exited ({status}) before SIGTERM\n{}",
                self.name,
                self.logs()
            );
        }
        let pid = self.child.as_ref().map(Child::id).unwrap_or_default();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running kill -TERM")?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed: {sent}");
        self.wait(timeout).await
    }

    /// The last lines of the child's stdout and stderr, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for path in [&self.stdout, &self.stderr] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            let _ = writeln!(out, "--- {} (last {} lines)", path.display(), tail.len());
            for line in tail {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Best effort: a test must never leave a node or generator behind.
        let _ = self.kill();
    }
}

/// A `vatio node` child that can be killed and restarted on the same
/// configuration (same data directory, same port).
#[derive(Debug)]
pub struct NodeProcess {
    bin: PathBuf,
    files: NodeFiles,
    log_dir: PathBuf,
    /// How many times the node was started; names each run's log files.
    runs: u32,
    process: Process,
}

impl NodeProcess {
    /// Starts `vatio node --config FILE` and waits at most `timeout` until
    /// it answers `Admin.Status`.
    pub async fn start(
        bin: &Path,
        files: &NodeFiles,
        log_dir: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let process = Self::spawn(bin, files, log_dir, 1)?;
        let mut node = Self {
            bin: bin.to_path_buf(),
            files: files.clone(),
            log_dir: log_dir.to_path_buf(),
            runs: 1,
            process,
        };
        node.wait_serving(timeout).await?;
        Ok(node)
    }

    fn spawn(bin: &Path, files: &NodeFiles, log_dir: &Path, run: u32) -> anyhow::Result<Process> {
        let config = files.config.display().to_string();
        let command = vatio_command(bin, &["node", "--config", &config]);
        Process::spawn(&format!("node-run{run}"), command, log_dir)
    }

    pub fn files(&self) -> &NodeFiles {
        &self.files
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// `SIGKILL` the node, start it again on the same data and port, and
    /// wait at most `timeout` until it serves.
    pub async fn kill_and_restart(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.kill()?;
        self.restart(timeout).await
    }

    /// `SIGKILL` the node; it must still have been running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.process.try_exit()? {
            anyhow::bail!(
                "{} exited on its own ({status}) before it was killed\n{}",
                self.process.name(),
                self.process.logs()
            );
        }
        self.process.kill()
    }

    /// Starts the node again on the same data and port (after [`Self::kill`])
    /// and waits at most `timeout` until it serves.
    pub async fn restart(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.runs += 1;
        self.process = Self::spawn(&self.bin, &self.files, &self.log_dir, self.runs)?;
        self.wait_serving(timeout).await
    }

    /// Polls `Admin.Status` until the node answers, the child exits, or
    /// `timeout` passes.
    pub async fn wait_serving(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_exit()? {
                anyhow::bail!(
                    "{} exited ({status}) before serving\n{}",
                    self.process.name(),
                    self.process.logs()
                );
            }
            let last_error =
                match tokio::time::timeout(PROBE_TIMEOUT, status(&self.files.endpoint())).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
                };
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not serving on {} after {timeout:?} (last: {last_error})\n{}",
                self.process.name(),
                self.files.endpoint(),
                self.process.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A gRPC channel to `endpoint`, failing fast when nothing listens.
pub async fn connect(endpoint: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(PROBE_TIMEOUT)
        .connect()
        .await?)
}

/// `Admin.Status` of the node at `endpoint`.
pub async fn status(endpoint: &str) -> anyhow::Result<v1::StatusResponse> {
    let mut admin = v1::admin_client::AdminClient::new(connect(endpoint).await?);
    Ok(admin.status(v1::StatusRequest {}).await?.into_inner())
}

/// `Admin.Flush` on the node at `endpoint`: everything in flight reaches
/// the sinks, open archive hours included.
pub async fn flush(endpoint: &str) -> anyhow::Result<()> {
    let mut admin = v1::admin_client::AdminClient::new(connect(endpoint).await?);
    admin.flush(v1::FlushRequest {}).await?;
    Ok(())
}

/// Every file under `root`, as paths relative to it, sorted.
pub fn files_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == root => break,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path.strip_prefix(root)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every Parquet hour file under an archive root (relative path) with its
/// rows in file order.
pub fn archived_files(root: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<Reading>)>> {
    let mut out = Vec::new();
    for relative in files_under(root)? {
        if relative.extension().is_some_and(|ext| ext == "parquet") {
            let path = root.join(&relative);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let rows = vatio_stores::archive::decode(bytes.into())
                .with_context(|| format!("decoding {}", path.display()))?;
            out.push((relative, rows));
        }
    }
    Ok(out)
}
