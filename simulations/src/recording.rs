//! INSTRUMENTATION for simulations only: an [`ArchiveStaging`] wrapper that
//! passes every call through and records, in order, the `(device, seq)` of
//! each reading staged. The archiver stages readings in the order it got
//! them, so the record shows the order in which readings reached a sink,
//! which the "per device, in `seq` order" check reads.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use vatio_stores::{ArchiveStaging, DeviceId, HourKey, Reading, Result, UnixMs};

/// Wraps a staging store and remembers the order of staged readings.
pub struct RecordingStaging {
    inner: Arc<dyn ArchiveStaging>,
    staged: Mutex<Vec<(DeviceId, u64)>>,
}

impl RecordingStaging {
    pub fn new(inner: Arc<dyn ArchiveStaging>) -> Self {
        Self {
            inner,
            staged: Mutex::new(Vec::new()),
        }
    }

    /// Every `(device, seq)` staged successfully so far, in staging order.
    pub fn staged(&self) -> Vec<(DeviceId, u64)> {
        match self.staged.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

#[async_trait]
impl ArchiveStaging for RecordingStaging {
    async fn stage(&self, readings: &[Reading]) -> Result<()> {
        self.inner.stage(readings).await?;
        // Recorded after success only: a retried stage is one arrival.
        let mut g = match self.staged.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.extend(readings.iter().map(|r| (r.device.clone(), r.seq)));
        Ok(())
    }

    async fn dirty_hours(&self) -> Result<Vec<HourKey>> {
        self.inner.dirty_hours().await
    }

    async fn hour_rows(&self, hour: HourKey) -> Result<Vec<Reading>> {
        self.inner.hour_rows(hour).await
    }

    async fn mark_sealed(&self, hour: HourKey, rows: u64) -> Result<()> {
        self.inner.mark_sealed(hour, rows).await
    }

    async fn purge_before(&self, hour_ms: UnixMs) -> Result<u64> {
        self.inner.purge_before(hour_ms).await
    }
}
