//! The mixed batch the ingest-path tests send: valid readings of two
//! devices, a duplicate, readings out of order, in another unit, out of
//! range, not finite, a day ahead and one over the temperature limit.
//! Its ack is 8 accepted, 1 duplicate, 3 dead letters.

use vatio_proto::v1::{self, DeviceKind};
use vatio_stores::MINUTE_MS;

use crate::{T0_MS, batch, reading};

/// The minute the test's readings fall into: 09:58 UTC.
pub const M: i64 = T0_MS - 2 * MINUTE_MS;

fn meter(seq: u64, offset_s: i64, kw: f64, unit: &str) -> v1::Reading {
    reading(
        "meter-01",
        DeviceKind::ElectricityMeter,
        seq,
        M + offset_s * 1000,
        "power",
        kw,
        unit,
    )
}

fn climate(seq: u64, ts: i64, metric: &str, value: f64, unit: &str) -> v1::Reading {
    reading(
        "climate-01",
        DeviceKind::ClimateSensor,
        seq,
        ts,
        metric,
        value,
        unit,
    )
}

pub fn mixed_batch() -> v1::IngestRequest {
    batch(
        1,
        vec![
            meter(1, 1, 100.0, "kW"),
            meter(2, 2, 200.0, "kW"),
            meter(3, 3, 300.0, "W"),  // converted to 0.3 kW
            meter(2, 2, 200.0, "kW"), // duplicate
            meter(5, 5, 500.0, "kW"), // out of order: 5 before 4
            meter(4, 4, 400.0, "kW"),
            climate(1, M + 1_000, "temperature", 21.5, "C"),
            climate(2, M + 2_000, "humidity", 130.0, "%"), // out of range
            climate(3, M + 3_000, "temperature", f64::NAN, "C"), // not finite
            climate(4, T0_MS + 86_400_000, "temperature", 22.0, "C"), // a day ahead
            climate(5, M + 5_000, "temperature", 50.0, "C"), // over-temperature event
            climate(6, M + 6_000, "temperature", 68.0, "F"), // 20 °C
        ],
    )
}
