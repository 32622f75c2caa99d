//! Combining what several stores hold into one answer.
//!
//! In a cluster every node writes the readings it delivered into its own
//! stores, and each accepted reading is delivered by exactly one node. A
//! device that moved between nodes therefore has its minutes split over
//! several stores, and a minute can be split too. The functions here merge
//! such shares; the embedded backend answers its own queries with them as
//! well, so one node's answer and a merged one are computed alike.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::model::{DeadLetterReason, DeviceId, DeviceKind, Event, Metric, MinutePoint, Stats};
use crate::{LatestValue, MINUTE_MS, PowerFlowMinute, SeriesPoint, UnixMs};

/// Points of the same `(device, metric, minute)` merged into one, sorted by
/// that key. The merged point keeps the kind and `log_pos` of the first share
/// (`log_pos` means nothing across stores).
pub fn merge_points(points: impl IntoIterator<Item = MinutePoint>) -> Vec<MinutePoint> {
    let mut merged: BTreeMap<(DeviceId, Metric, UnixMs), MinutePoint> = BTreeMap::new();
    for p in points {
        match merged.entry((p.device.clone(), p.metric, p.minute_ms)) {
            Entry::Occupied(mut e) => e.get_mut().stats.merge(&p.stats),
            Entry::Vacant(e) => {
                e.insert(p);
            }
        }
    }
    merged.into_values().collect()
}

/// One series out of `(minute, stats)` pairs of a single device and metric:
/// windows of `window_minutes` (≥ 1) aligned to the epoch, ascending, empty
/// windows omitted. Minutes may come in any order and more than once.
pub fn series_windows(
    minutes: impl IntoIterator<Item = (UnixMs, Stats)>,
    window_minutes: u32,
) -> Vec<SeriesPoint> {
    let window_ms = i64::from(window_minutes.max(1)) * MINUTE_MS;
    let mut windows: BTreeMap<UnixMs, Stats> = BTreeMap::new();
    for (minute_ms, stats) in minutes {
        if stats.count == 0 {
            continue;
        }
        let start = minute_ms.div_euclid(window_ms) * window_ms;
        windows
            .entry(start)
            .and_modify(|w| w.merge(&stats))
            .or_insert(stats);
    }
    windows
        .into_iter()
        .map(|(window_start_ms, s)| SeriesPoint {
            window_start_ms,
            count: s.count,
            min: s.min,
            max: s.max,
            mean: s.mean(),
            last: s.last,
        })
        .collect()
}

/// The plant's power flow from electricity meters' power points: per minute,
/// the sum over meters of each meter's mean power, ascending. Shares of one
/// meter's minute are merged first, so a split minute counts the meter once.
pub fn power_flow(points: impl IntoIterator<Item = MinutePoint>) -> Vec<PowerFlowMinute> {
    let meters = points.into_iter().filter(|p| {
        p.kind == DeviceKind::ElectricityMeter && p.metric == Metric::Power && p.stats.count > 0
    });
    let mut minutes: BTreeMap<UnixMs, (f64, u32)> = BTreeMap::new();
    for p in merge_points(meters) {
        let minute = minutes.entry(p.minute_ms).or_insert((0.0, 0));
        minute.0 += p.stats.mean();
        minute.1 += 1;
    }
    minutes
        .into_iter()
        .map(|(minute_ms, (total_kw, meters))| PowerFlowMinute {
            minute_ms,
            total_kw,
            meters,
        })
        .collect()
}

/// The newest value per device and metric out of several stores' latest
/// values, ordered by device then metric, at most `limit`. Each share must
/// be a store's first `limit` values in that order: the merged first
/// `limit` are then among them.
pub fn latest(values: impl IntoIterator<Item = LatestValue>, limit: usize) -> Vec<LatestValue> {
    let mut newest: BTreeMap<(DeviceId, &'static str), LatestValue> = BTreeMap::new();
    for v in values {
        match newest.entry((v.device.clone(), v.metric.as_str())) {
            Entry::Occupied(mut e) => {
                if v.ts_ms > e.get().ts_ms {
                    e.insert(v);
                }
            }
            Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
    newest.into_values().take(limit).collect()
}

/// Events out of several stores, each listed once, newest first (ties by id,
/// descending, as the stores order them), at most `limit`. Each share must
/// be a store's first `limit` events in that order.
pub fn events(events: impl IntoIterator<Item = Event>, limit: usize) -> Vec<Event> {
    let mut by_key: BTreeMap<(Reverse<UnixMs>, Reverse<String>), Event> = BTreeMap::new();
    for e in events {
        by_key.insert((Reverse(e.ts_ms), Reverse(e.id())), e);
    }
    by_key.into_values().take(limit).collect()
}

/// Dead-letter counts summed per reason, ordered by reason name.
pub fn dead_letter_counts(
    counts: impl IntoIterator<Item = (DeadLetterReason, u64)>,
) -> Vec<(DeadLetterReason, u64)> {
    let mut sums: BTreeMap<&'static str, (DeadLetterReason, u64)> = BTreeMap::new();
    for (reason, n) in counts {
        sums.entry(reason.as_str()).or_insert((reason, 0)).1 += n;
    }
    sums.into_values().collect()
}

#[cfg(test)]
mod tests;
