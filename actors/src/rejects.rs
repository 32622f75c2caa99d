//! Dead letters for what a sink refuses as malformed after bounded
//! attempts. They are stored directly (not through the log) before the
//! subscriber commits its position, so none is lost in a crash; each has a
//! stable key, so writing one again after a restart stores it once.

use std::sync::Arc;

use futures::future::BoxFuture;

use vatio_stores::{
    DeadLetterReason, DeadLetterStore, MinuteDoc, MinutePoint, NewDeadLetter, RawReading,
};

use crate::logic::validate::kind_to_wire;
use crate::sink_retry::{SinkFailure, SinkGuard};
use crate::stats::NodeStats;

/// Where subscribers put what their sink refused.
#[derive(Clone)]
pub struct Rejects {
    pub store: Arc<dyn DeadLetterStore>,
    pub guard: SinkGuard,
    pub stats: Arc<NodeStats>,
}

impl Rejects {
    /// Writes `items` in one call. If the sink refuses that as malformed,
    /// writes them one at a time, so one bad item cannot hold the rest
    /// back, and dead-letters each item refused on its own. Returns how
    /// many items the sink took.
    pub async fn write_or_split<S: ?Sized, T>(
        &self,
        guard: &SinkGuard,
        store: &S,
        items: &[T],
        write: impl for<'a> Fn(&'a S, &'a [T]) -> BoxFuture<'a, vatio_stores::Result<()>>,
        letters: impl Fn(&T, &str) -> Vec<NewDeadLetter>,
    ) -> Result<u64, SinkFailure> {
        if items.is_empty() {
            return Ok(0);
        }
        let rejected = match guard.call(|| write(store, items)).await {
            Ok(()) => return Ok(items.len() as u64),
            Err(e) => e,
        };
        tracing::error!(sink = guard.name(), error = %rejected, items = items.len(), "sink refused a batch; writing its items one by one");
        let mut written = 0;
        for item in items {
            let one = std::slice::from_ref(item);
            match guard.call(|| write(store, one)).await {
                Ok(()) => written += 1,
                Err(e) => {
                    NodeStats::add(&self.stats.sink_writes_rejected, 1);
                    for letter in letters(item, &e.to_string()) {
                        self.dead_letter(letter).await?;
                    }
                }
            }
        }
        Ok(written)
    }

    pub async fn dead_letter(&self, letter: NewDeadLetter) -> Result<(), SinkFailure> {
        let store = self.store.clone();
        let letters = [letter];
        self.guard.call(|| store.insert(&letters)).await?;
        self.stats.dead_lettered(DeadLetterReason::SinkRejected);
        Ok(())
    }
}

/// A minute point the time-series store refused, kept as a letter whose
/// reading carries the point's mean at its minute.
pub fn point_letter(p: &MinutePoint, error: &str) -> NewDeadLetter {
    NewDeadLetter {
        reading: RawReading {
            device_id: p.device.to_string(),
            seq: p.stats.last_seq,
            ts_ms: p.minute_ms,
            metric: p.metric.to_string(),
            value: p.stats.mean(),
            unit: p.metric.canonical_unit().to_owned(),
            kind: kind_to_wire(p.kind),
        },
        reason: DeadLetterReason::SinkRejected,
        detail: format!(
            "time-series store refused the minute point ({} readings, min {}, max {}): {error}",
            p.stats.count, p.stats.min, p.stats.max
        ),
        source: "aggregator".to_owned(),
        received_ms: p.minute_ms,
        key: Some(format!(
            "timeseries:{}/{}/{}/{}",
            p.device, p.metric, p.minute_ms, p.log_pos
        )),
    }
}

/// A minute document the document store refused, one letter per metric.
pub fn doc_letters(d: &MinuteDoc, error: &str) -> Vec<NewDeadLetter> {
    d.metrics
        .iter()
        .map(|(metric, stats)| NewDeadLetter {
            reading: RawReading {
                device_id: d.device.to_string(),
                seq: stats.last_seq,
                ts_ms: d.minute_ms,
                metric: metric.to_string(),
                value: stats.mean(),
                unit: metric.canonical_unit().to_owned(),
                kind: kind_to_wire(d.kind),
            },
            reason: DeadLetterReason::SinkRejected,
            detail: format!(
                "document store refused the minute document ({} readings of {metric}): {error}",
                stats.count
            ),
            source: "stream-etl".to_owned(),
            received_ms: d.minute_ms,
            key: Some(format!(
                "documents:{}/{}/{}/{}",
                d.device, d.minute_ms, metric, d.log_pos
            )),
        })
        .collect()
}
