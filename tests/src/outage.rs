//! FAULT INJECTION for tests only: a time-series store that fails every
//! call with "unavailable" while the test says it is down, standing for a
//! sink outage. Not a product backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use vatio_stores::{
    DeviceId, Error, LatestFilter, LatestValue, Metric, MinuteFilter, MinutePoint, PowerFlowMinute,
    Result, SeriesPoint, TimeSeriesStore, UnixMs,
};

/// Wraps a real store; every call fails while the switch is down.
pub struct FlakyTimeSeries {
    inner: Arc<dyn TimeSeriesStore>,
    switch: Arc<OutageSwitch>,
}

/// The test's handle: take the store down, bring it back, count refusals.
#[derive(Debug, Default)]
pub struct OutageSwitch {
    down: AtomicBool,
    refused: AtomicU64,
}

impl OutageSwitch {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Calls refused while down.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Unavailable {
                store: "time series (fault injection)",
                message: "outage injected by the test".to_owned(),
            });
        }
        Ok(())
    }
}

impl FlakyTimeSeries {
    /// `inner` behind a switch that starts down.
    pub fn down(inner: Arc<dyn TimeSeriesStore>) -> (Self, Arc<OutageSwitch>) {
        let switch = Arc::new(OutageSwitch::default());
        switch.set_down(true);
        (
            Self {
                inner,
                switch: switch.clone(),
            },
            switch,
        )
    }
}

#[async_trait]
impl TimeSeriesStore for FlakyTimeSeries {
    async fn write_points(&self, points: &[MinutePoint]) -> Result<()> {
        self.switch.check()?;
        self.inner.write_points(points).await
    }
    async fn point(&self, d: &DeviceId, m: Metric, minute: UnixMs) -> Result<Option<MinutePoint>> {
        self.switch.check()?;
        self.inner.point(d, m, minute).await
    }
    async fn latest(&self, f: &LatestFilter) -> Result<Vec<LatestValue>> {
        self.switch.check()?;
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
        self.switch.check()?;
        self.inner.series(d, m, from, to, w).await
    }
    async fn power_flow(&self, from: UnixMs, to: UnixMs) -> Result<Vec<PowerFlowMinute>> {
        self.switch.check()?;
        self.inner.power_flow(from, to).await
    }
    async fn minutes(
        &self,
        f: &MinuteFilter,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<Vec<MinutePoint>> {
        self.switch.check()?;
        self.inner.minutes(f, from, to).await
    }
    async fn max_minute(&self) -> Result<Option<UnixMs>> {
        // Start-up must get past this even during the outage.
        self.inner.max_minute().await
    }
}
