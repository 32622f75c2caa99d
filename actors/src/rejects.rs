//! Dead letters for what a sink refuses as malformed after bounded
//! attempts. They are stored directly (not through the log) before the
//! subscriber commits its position, so none is lost in a crash; each has a
//! stable key, so writing one again after a restart stores it once.

use std::sync::Arc;

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
