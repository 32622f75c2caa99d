//! The conformance suites: what every backend of a store trait must do,
//! written once as async functions over the trait and run by each backend's
//! test file (`embedded.rs` today; InfluxDB, MongoDB and S3 later).
//!
//! Values are exact binary fractions so sums and means compare exactly.

#![allow(dead_code)] // each backend's test file runs the suites it implements

pub mod archive;
pub mod checkpoints;
pub mod dead_letters;
pub mod documents;
pub mod staging;
pub mod timeseries;

use vatio_stores::{DeviceId, DeviceKind, MINUTE_MS, Metric, MinutePoint, Reading, Stats, UnixMs};

/// 2026-01-01T00:00:00Z: aligned to minutes, hours and days.
pub const T0: UnixMs = 1_767_225_600_000;

pub fn dev(id: &str) -> DeviceId {
    DeviceId::new(id)
}

pub fn reading(
    device: &str,
    kind: DeviceKind,
    seq: u64,
    ts_ms: UnixMs,
    metric: Metric,
    value: f64,
) -> Reading {
    Reading {
        device: dev(device),
        kind,
        seq,
        ts_ms,
        metric,
        value,
    }
}

/// Statistics of `values` read one second apart from `start_ms`, seq from 1.
pub fn stats_of(start_ms: UnixMs, values: &[f64]) -> Stats {
    let mut readings = values.iter().enumerate().map(|(i, v)| Reading {
        device: dev("x"),
        kind: DeviceKind::ClimateSensor,
        seq: i as u64 + 1,
        ts_ms: start_ms + i as i64 * 1000,
        metric: Metric::Temperature,
        value: *v,
    });
    let first = readings.next().expect("at least one value");
    let mut stats = Stats::of(&first);
    readings.for_each(|r| stats.add(&r));
    stats
}

/// Length of every record in the tests' log.
pub const RECORD_BYTES: u64 = 64;

/// Records of the tests' log per minute: minute `m` after [`T0`] holds the
/// records `100 m + 1 ..= 100 m + 100`.
pub const RECORDS_PER_MINUTE: u64 = 100;

/// The log position (end) of the `readings`-th record of minute `minute`:
/// what a window that folded in that minute's first `readings` readings
/// stores as its `log_pos`.
pub fn log_end(minute: i64, readings: usize) -> u64 {
    let minute = u64::try_from(minute).expect("test minutes are after T0");
    (minute * RECORDS_PER_MINUTE + readings as u64) * RECORD_BYTES
}

/// The point of `values` in minute `minute` after [`T0`], with the log
/// position of its last reading.
pub fn point(
    device: &str,
    kind: DeviceKind,
    metric: Metric,
    minute: i64,
    values: &[f64],
) -> MinutePoint {
    let minute_ms = T0 + minute * MINUTE_MS;
    MinutePoint {
        device: dev(device),
        kind,
        metric,
        minute_ms,
        stats: stats_of(minute_ms, values),
        log_pos: log_end(minute, values.len()),
    }
}
