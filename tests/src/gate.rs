//! FAULT INJECTION for tests only: a time-series store whose writes wait at
//! a gate until the test opens it, standing for a stalled sink. Not a
//! product backend.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use vatio_stores::{
    DeviceId, LatestFilter, LatestValue, Metric, MinuteFilter, MinutePoint, PowerFlowMinute,
    Result, SeriesPoint, TimeSeriesStore, UnixMs,
};

/// Wraps a real store; `write_points` blocks while the gate is closed.
pub struct GatedTimeSeries {
    inner: Arc<dyn TimeSeriesStore>,
    open: watch::Receiver<bool>,
}

/// The test's handle on the gate.
pub struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn open(&self) {
        let _ = self.0.send(true);
    }
}

impl GatedTimeSeries {
    /// A closed gate in front of `inner`.
    pub fn closed(inner: Arc<dyn TimeSeriesStore>) -> (Self, Gate) {
        let (tx, rx) = watch::channel(false);
        (Self { inner, open: rx }, Gate(tx))
    }
}

#[async_trait]
impl TimeSeriesStore for GatedTimeSeries {
    async fn write_points(&self, points: &[MinutePoint]) -> Result<()> {
        let mut open = self.open.clone();
        // A dropped gate counts as open: the test is over.
        let _ = open.wait_for(|o| *o).await;
        self.inner.write_points(points).await
    }
    async fn point(&self, d: &DeviceId, m: Metric, minute: UnixMs) -> Result<Option<MinutePoint>> {
        self.inner.point(d, m, minute).await
    }
    async fn latest(&self, f: &LatestFilter) -> Result<Vec<LatestValue>> {
        self.inner.latest(f).await
    }
    async fn series(
        &self,
        d: &DeviceId,
        m: Metric,
        from: UnixMs,
        to: UnixMs,
        w: u32,
    ) -> Result<Vec<SeriesPoint>> {
        self.inner.series(d, m, from, to, w).await
    }
    async fn power_flow(&self, from: UnixMs, to: UnixMs) -> Result<Vec<PowerFlowMinute>> {
        self.inner.power_flow(from, to).await
    }
    async fn minutes(
        &self,
        f: &MinuteFilter,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<Vec<MinutePoint>> {
        self.inner.minutes(f, from, to).await
    }
    async fn max_minute(&self) -> Result<Option<UnixMs>> {
        self.inner.max_minute().await
    }
}
