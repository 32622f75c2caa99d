//! Harness for vatio's end-to-end tests: a real node in-process on an
//! ephemeral port, real gRPC clients, real embedded stores in a temporary
//! directory, and a manual clock so that time-dependent rules are exact.

pub mod audit;
pub mod cluster;
pub mod gate;
pub mod mixed;
pub mod outage;
pub mod process;
pub mod real_stores;

use std::sync::Arc;

use tempfile::TempDir;
use tonic::transport::Channel;
use vatio_actors::{ManualClock, TreeOptions, TreeStores};
use vatio_cluster::{Node, NodeOptions};
use vatio_config::Config;
use vatio_proto::v1;
use vatio_stores::{DeviceId, Metric, MinutePoint};

/// 2026-11-26T10:00:00Z: the tests' "now".
pub const T0_MS: i64 = 1_795_687_200_000;

/// A node under test and what it was built from.
pub struct TestNode {
    pub node: Node,
    pub clock: Arc<ManualClock>,
    pub cfg: Config,
    pub dir: TempDir,
}

/// Defaults, with the data directory in `dir` and an ephemeral port.
pub fn test_config(dir: &TempDir) -> Config {
    let mut cfg = Config::default();
    cfg.node.data_dir = dir.path().to_path_buf();
    cfg.node.listen = "127.0.0.1:0".parse().expect("literal address");
    cfg
}

impl TestNode {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let cfg = test_config(&dir);
        Self::start_with(dir, cfg, TreeOptions::default(), None).await
    }

    pub async fn start_with(
        dir: TempDir,
        cfg: Config,
        tree: TreeOptions,
        stores: Option<TreeStores>,
    ) -> anyhow::Result<Self> {
        Self::start_full(dir, cfg, tree, stores, None).await
    }

    /// Like [`TestNode::start_with`], with FAULT INJECTION on the
    /// write-ahead log's writes and fsyncs.
    pub async fn start_full(
        dir: TempDir,
        cfg: Config,
        tree: TreeOptions,
        stores: Option<TreeStores>,
        log_fault: Option<vatio_wal::FaultHook>,
    ) -> anyhow::Result<Self> {
        init_logs();
        let clock = Arc::new(ManualClock::new(T0_MS));
        let node = Node::start(
            cfg.clone(),
            NodeOptions {
                clock: clock.clone(),
                tree,
                stores,
                log_fault,
                ..NodeOptions::with_clock(clock.clone())
            },
        )
        .await?;
        Ok(Self {
            node,
            clock,
            cfg,
            dir,
        })
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(self.node.endpoint())?
            .connect()
            .await?)
    }

    pub async fn ingest(&self) -> anyhow::Result<v1::ingest_client::IngestClient<Channel>> {
        Ok(v1::ingest_client::IngestClient::new(self.channel().await?))
    }

    pub async fn admin(&self) -> anyhow::Result<v1::admin_client::AdminClient<Channel>> {
        Ok(v1::admin_client::AdminClient::new(self.channel().await?))
    }

    pub async fn query(&self) -> anyhow::Result<v1::query_client::QueryClient<Channel>> {
        Ok(v1::query_client::QueryClient::new(self.channel().await?))
    }

    /// Pushes everything through to the sinks (Admin.Flush).
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.admin().await?.flush(v1::FlushRequest {}).await?;
        Ok(())
    }

    /// The node's counters (Admin.Status).
    pub async fn status(&self) -> anyhow::Result<v1::StatusResponse> {
        Ok(self
            .admin()
            .await?
            .status(v1::StatusRequest {})
            .await?
            .into_inner())
    }

    /// Polls the status (bounded: about twenty seconds) until `done` holds,
    /// and returns that status; an error names `what` it waited for.
    pub async fn wait_for_status(
        &self,
        what: &str,
        done: impl Fn(&v1::StatusResponse) -> bool,
    ) -> anyhow::Result<v1::StatusResponse> {
        for _ in 0..1_000 {
            let s = self.status().await?;
            if done(&s) {
                return Ok(s);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        anyhow::bail!("timed out waiting until {what}")
    }

    /// The stored power point of `device` for the minute starting at `minute_ms`.
    pub async fn power_point(&self, device: &str, minute_ms: i64) -> anyhow::Result<MinutePoint> {
        self.stores()
            .timeseries
            .point(&DeviceId::new(device), Metric::Power, minute_ms)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no power point for {device} at {minute_ms}"))
    }

    pub fn stores(&self) -> &TreeStores {
        self.node.tree().stores()
    }
}

/// The node's logs on stderr when `VATIO_LOG` is set (e.g. `VATIO_LOG=info`),
/// as the `vatio` binary prints them; nothing otherwise.
fn init_logs() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("VATIO_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// A reading as a device would send it.
pub fn reading(
    device: &str,
    kind: v1::DeviceKind,
    seq: u64,
    ts_ms: i64,
    metric: &str,
    value: f64,
    unit: &str,
) -> v1::Reading {
    v1::Reading {
        device_id: device.into(),
        seq,
        ts_unix_ms: ts_ms,
        metric: metric.into(),
        value,
        unit: unit.into(),
        kind: kind as i32,
    }
}

/// An electricity meter's power reading in kW.
pub fn power(device: &str, seq: u64, ts_ms: i64, kw: f64) -> v1::Reading {
    reading(
        device,
        v1::DeviceKind::ElectricityMeter,
        seq,
        ts_ms,
        "power",
        kw,
        "kW",
    )
}

pub fn batch(batch_id: u64, readings: Vec<v1::Reading>) -> v1::IngestRequest {
    v1::IngestRequest {
        batch_id,
        readings,
        source: "e2e".into(),
    }
}
