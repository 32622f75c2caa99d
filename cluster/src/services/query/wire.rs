//! The query service's wire types and the store model, both ways: answers
//! go out, and peers' shares of cluster-wide answers come back in.

use tonic::Status;
use vatio_proto::v1;
use vatio_stores::{
    DeadLetterReason, DeviceId, DeviceKind, Event, EventType, LatestValue, Metric, MinutePoint,
    SeriesPoint, Stats,
};

use crate::services::convert::{kind_filter, kind_to_wire};

/// A peer's share that does not decode: the share is dropped and the peer
/// listed as unanswered.
fn bad_share(what: &str, value: impl std::fmt::Debug) -> Status {
    Status::data_loss(format!("a peer answered an unknown {what} {value:?}"))
}

fn kind_from_wire(wire: i32) -> Result<DeviceKind, Status> {
    kind_filter(wire)
        .ok()
        .flatten()
        .ok_or_else(|| bad_share("device kind", wire))
}

fn metric_from_wire(name: &str) -> Result<Metric, Status> {
    Metric::parse(name).ok_or_else(|| bad_share("metric", name))
}

pub fn latest_to_wire(v: &LatestValue) -> v1::LatestValue {
    v1::LatestValue {
        device_id: v.device.to_string(),
        kind: kind_to_wire(v.kind) as i32,
        metric: v.metric.as_str().into(),
        value: v.value,
        unit: v.metric.canonical_unit().into(),
        ts_unix_ms: v.ts_ms,
    }
}

pub fn latest_from_wire(v: v1::LatestValue) -> Result<LatestValue, Status> {
    Ok(LatestValue {
        device: DeviceId::new(v.device_id),
        kind: kind_from_wire(v.kind)?,
        metric: metric_from_wire(&v.metric)?,
        value: v.value,
        ts_ms: v.ts_unix_ms,
    })
}

pub fn series_point_to_wire(p: &SeriesPoint) -> v1::SeriesPoint {
    v1::SeriesPoint {
        window_start_unix_ms: p.window_start_ms,
        count: p.count,
        min: p.min,
        max: p.max,
        mean: p.mean,
        last: p.last,
    }
}

pub fn event_to_wire(e: &Event) -> v1::Event {
    v1::Event {
        id: e.id(),
        device_id: e.device.to_string(),
        kind: kind_to_wire(e.kind) as i32,
        event_type: e.event_type.as_str().into(),
        metric: e.metric.as_str().into(),
        value: e.value,
        threshold: e.threshold,
        ts_unix_ms: e.ts_ms,
        seq: e.seq,
    }
}

pub fn event_from_wire(e: v1::Event) -> Result<Event, Status> {
    Ok(Event {
        device: DeviceId::new(e.device_id),
        kind: kind_from_wire(e.kind)?,
        event_type: EventType::parse(&e.event_type)
            .ok_or_else(|| bad_share("event type", &e.event_type))?,
        metric: metric_from_wire(&e.metric)?,
        value: e.value,
        threshold: e.threshold,
        ts_ms: e.ts_unix_ms,
        seq: e.seq,
    })
}

pub fn minute_to_wire(p: &MinutePoint) -> v1::MinuteStats {
    let s = &p.stats;
    v1::MinuteStats {
        device_id: p.device.to_string(),
        kind: kind_to_wire(p.kind) as i32,
        metric: p.metric.as_str().into(),
        minute_unix_ms: p.minute_ms,
        count: s.count,
        min: s.min,
        max: s.max,
        sum: s.sum,
        last: s.last,
        last_ts_unix_ms: s.last_ts_ms,
        last_seq: s.last_seq,
    }
}

pub fn minute_from_wire(m: v1::MinuteStats) -> Result<MinutePoint, Status> {
    Ok(MinutePoint {
        device: DeviceId::new(m.device_id),
        kind: kind_from_wire(m.kind)?,
        metric: metric_from_wire(&m.metric)?,
        minute_ms: m.minute_unix_ms,
        stats: Stats {
            count: m.count,
            min: m.min,
            max: m.max,
            sum: m.sum,
            last: m.last,
            last_ts_ms: m.last_ts_unix_ms,
            last_seq: m.last_seq,
        },
        // Positions are per log; another node's mean nothing here.
        log_pos: 0,
    })
}

pub fn reason_counts_to_wire(counts: Vec<(DeadLetterReason, u64)>) -> v1::DeadLetterCountsResponse {
    let total = counts.iter().map(|(_, n)| n).sum();
    v1::DeadLetterCountsResponse {
        counts: counts
            .into_iter()
            .map(|(reason, count)| v1::ReasonCount {
                reason: reason.as_str().into(),
                count,
            })
            .collect(),
        total,
        unanswered_nodes: Vec::new(),
    }
}

pub fn reason_counts_from_wire(
    counts: Vec<v1::ReasonCount>,
) -> Result<Vec<(DeadLetterReason, u64)>, Status> {
    counts
        .into_iter()
        .map(|c| {
            let reason = DeadLetterReason::parse(&c.reason)
                .ok_or_else(|| bad_share("dead-letter reason", &c.reason))?;
            Ok((reason, c.count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_survives_the_wire() {
        let point = MinutePoint {
            device: DeviceId::new("meter-1"),
            kind: DeviceKind::ElectricityMeter,
            metric: Metric::Power,
            minute_ms: 1_700_000_040_000,
            stats: Stats {
                count: 3,
                min: 1.0,
                max: 9.0,
                sum: 12.0,
                last: 2.0,
                last_ts_ms: 1_700_000_059_000,
                last_seq: 42,
            },
            log_pos: 0,
        };
        let back = minute_from_wire(minute_to_wire(&point)).expect("decodes");
        assert_eq!(back, point);
    }

    #[test]
    fn a_share_with_an_unknown_metric_is_refused_by_name() {
        let mut wire = v1::LatestValue {
            device_id: "d".into(),
            kind: v1::DeviceKind::ClimateSensor as i32,
            metric: "temperature".into(),
            value: 1.0,
            unit: "C".into(),
            ts_unix_ms: 1,
        };
        assert!(latest_from_wire(wire.clone()).is_ok());
        wire.metric = "flux".into();
        let status = latest_from_wire(wire).expect_err("unknown metric");
        assert!(status.message().contains("\"flux\""), "{status}");
    }
}
