//! The simulation's fault-injecting time-series sink: a node's real
//! embedded store behind a switch the fault schedule flips. Down, every
//! write fails as an unreachable backend would; slow, every write first
//! waits (in simulated time). Reads always pass. Not a product backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use vatio_stores::{
    DeviceId, Error, LatestFilter, LatestValue, Metric, MinuteFilter, MinutePoint, PowerFlowMinute,
    Result, SeriesPoint, TimeSeriesStore, UnixMs,
};

/// How long a write waits while the sink is slow.
const SLOW_WRITE: Duration = Duration::from_millis(400);

/// The sink's condition, shared with the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SinkState {
    Up = 0,
    Down = 1,
    Slow = 2,
}

#[derive(Clone, Default)]
pub struct SinkSwitch(Arc<AtomicU8>);

impl SinkSwitch {
    pub fn set(&self, state: SinkState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }

    fn get(&self) -> SinkState {
        match self.0.load(Ordering::Relaxed) {
            1 => SinkState::Down,
            2 => SinkState::Slow,
            _ => SinkState::Up,
        }
    }
}

pub struct FaultySink {
    pub inner: Arc<dyn TimeSeriesStore>,
    pub switch: SinkSwitch,
}

#[async_trait]
impl TimeSeriesStore for FaultySink {
    async fn write_points(&self, points: &[MinutePoint]) -> Result<()> {
        match self.switch.get() {
            SinkState::Down => {
                return Err(Error::Unavailable {
                    store: "time series",
                    message: "simulated outage".into(),
                });
            }
            SinkState::Slow => tokio::time::sleep(SLOW_WRITE).await,
            SinkState::Up => {}
        }
        self.inner.write_points(points).await
    }

    async fn point(
        &self,
        device: &DeviceId,
        metric: Metric,
        minute_ms: UnixMs,
    ) -> Result<Option<MinutePoint>> {
        self.inner.point(device, metric, minute_ms).await
    }

    async fn latest(&self, filter: &LatestFilter) -> Result<Vec<LatestValue>> {
        self.inner.latest(filter).await
    }

    async fn series(
        &self,
        device: &DeviceId,
        metric: Metric,
        from_ms: UnixMs,
        to_ms: UnixMs,
        window_minutes: u32,
    ) -> Result<Vec<SeriesPoint>> {
        self.inner
            .series(device, metric, from_ms, to_ms, window_minutes)
            .await
    }

    async fn power_flow(&self, from_ms: UnixMs, to_ms: UnixMs) -> Result<Vec<PowerFlowMinute>> {
        self.inner.power_flow(from_ms, to_ms).await
    }

    async fn minutes(
        &self,
        filter: &MinuteFilter,
        from_ms: UnixMs,
        to_ms: UnixMs,
    ) -> Result<Vec<MinutePoint>> {
        self.inner.minutes(filter, from_ms, to_ms).await
    }

    async fn max_minute(&self) -> Result<Option<UnixMs>> {
        self.inner.max_minute().await
    }
}
