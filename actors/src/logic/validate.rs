//! Validation of one raw reading: required fields, metric and unit for the
//! device kind, finiteness, timestamp bounds and physical range. A reading
//! that passes comes out in its metric's canonical unit, so nothing past the
//! device actor ever sees a Fahrenheit temperature or a power in watts.

use vatio_stores::model::{DeadLetterReason, DeviceId, DeviceKind, Metric, RawReading, Reading};

/// Timestamp bounds, relative to the receiving node's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// How far ahead of `now_ms` a reading's timestamp may be (device clock skew).
    pub max_future_skew_ms: i64,
    /// How far behind `now_ms` a reading's timestamp may be.
    pub max_past_age_ms: i64,
}

/// Why a reading was refused, ready for the dead-letter office.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub reason: DeadLetterReason,
    /// Names the field and the offending value, e.g. "humidity 130 % outside 0..=100".
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Checks one raw reading for a device of `kind` and converts its value to the
/// metric's canonical unit.
///
/// Checks run in a fixed order and the first failure wins, so the same raw
/// reading always gets the same reason: missing fields, metric, unit,
/// finiteness, future timestamp, stale timestamp, range.
pub fn validate(
    device: &DeviceId,
    kind: DeviceKind,
    raw: &RawReading,
    rules: &Rules,
    now_ms: i64,
) -> Result<Reading, Refusal> {
    use DeadLetterReason as R;

    if raw.seq == 0 {
        return Err(Refusal::new(
            R::MissingField,
            "seq 0 missing (seqs start at 1)",
        ));
    }
    if raw.ts_ms == 0 {
        return Err(Refusal::new(R::MissingField, "ts_ms 0 missing"));
    }
    if raw.metric.is_empty() {
        return Err(Refusal::new(R::MissingField, "metric empty"));
    }
    if raw.unit.is_empty() {
        return Err(Refusal::new(R::MissingField, "unit empty"));
    }

    let Some(metric) = Metric::parse(&raw.metric) else {
        return Err(Refusal::new(
            R::UnknownMetric,
            format!("metric {:?} unknown", raw.metric),
        ));
    };
    let Some((min, max)) = range_of(kind, metric) else {
        return Err(Refusal::new(
            R::UnknownMetric,
            format!("metric {metric} not reported by {kind}"),
        ));
    };

    let Some(convert) = conversion(metric, &raw.unit) else {
        return Err(Refusal::new(
            R::UnknownUnit,
            format!(
                "unit {:?} not convertible to {metric} ({})",
                raw.unit,
                metric.canonical_unit()
            ),
        ));
    };

    if !raw.value.is_finite() {
        return Err(Refusal::new(
            R::NotFinite,
            format!("{metric} value {} not finite", raw.value),
        ));
    }

    // Saturating: the bounds come from configuration and the clock, and an
    // absurd setting must not wrap around and let everything through.
    let latest_ms = now_ms.saturating_add(rules.max_future_skew_ms);
    if raw.ts_ms > latest_ms {
        return Err(Refusal::new(
            R::FutureTimestamp,
            format!(
                "ts_ms {} is {} ms ahead of now {now_ms} (max skew {} ms)",
                raw.ts_ms,
                raw.ts_ms.saturating_sub(now_ms),
                rules.max_future_skew_ms
            ),
        ));
    }
    let earliest_ms = now_ms.saturating_sub(rules.max_past_age_ms);
    if raw.ts_ms < earliest_ms {
        return Err(Refusal::new(
            R::StaleTimestamp,
            format!(
                "ts_ms {} is {} ms behind now {now_ms} (max age {} ms)",
                raw.ts_ms,
                now_ms.saturating_sub(raw.ts_ms),
                rules.max_past_age_ms
            ),
        ));
    }

    // The range is physical, so it applies to the converted value: 400 K is
    // as hot as 126.85 C whatever unit the device chose. A conversion that
    // overflows to infinity lands here too, as out of range.
    let value = convert.apply(raw.value);
    if !(min..=max).contains(&value) {
        let unit = metric.canonical_unit();
        let from = if raw.unit == unit {
            String::new()
        } else {
            format!(" (from {} {})", raw.value, raw.unit)
        };
        return Err(Refusal::new(
            R::OutOfRange,
            format!("{metric} {value} {unit}{from} outside {min}..={max}"),
        ));
    }

    Ok(Reading {
        device: device.clone(),
        kind,
        seq: raw.seq,
        ts_ms: raw.ts_ms,
        metric,
        value,
    })
}

/// Maps [`DeviceKind`] to its wire value (`vatio.v1.DeviceKind` as i32).
pub fn kind_to_wire(kind: DeviceKind) -> i32 {
    match kind {
        DeviceKind::ClimateSensor => 1,
        DeviceKind::RobotArm => 2,
        DeviceKind::ElectricityMeter => 3,
    }
}

/// Maps the wire kind (`vatio.v1.DeviceKind` as i32) to [`DeviceKind`].
pub fn kind_from_wire(kind: i32) -> Result<DeviceKind, Refusal> {
    match kind {
        1 => Ok(DeviceKind::ClimateSensor),
        2 => Ok(DeviceKind::RobotArm),
        3 => Ok(DeviceKind::ElectricityMeter),
        0 => Err(Refusal::new(
            DeadLetterReason::MissingField,
            "kind 0 unspecified",
        )),
        other => Err(Refusal::new(
            DeadLetterReason::MissingField,
            format!("kind {other} unknown"),
        )),
    }
}

/// The physical range, in the canonical unit, of `metric` on a device of
/// `kind`; `None` when that kind does not report the metric.
pub fn range_of(kind: DeviceKind, metric: Metric) -> Option<(f64, f64)> {
    use DeviceKind as K;
    use Metric as M;
    match (kind, metric) {
        (K::ClimateSensor, M::Temperature) => Some((-50.0, 150.0)),
        (K::ClimateSensor, M::Humidity) => Some((0.0, 100.0)),
        (K::RobotArm, M::Vibration) => Some((0.0, 500.0)),
        (K::RobotArm, M::Torque) => Some((-5000.0, 5000.0)),
        (K::RobotArm, M::MotorTemperature) => Some((-50.0, 200.0)),
        // A robot arm reports its own draw; a meter sees a whole feeder.
        (K::RobotArm, M::Power) => Some((0.0, 1000.0)),
        (K::ElectricityMeter, M::Power) => Some((0.0, 100_000.0)),
        (K::ElectricityMeter, M::Energy) => Some((0.0, 1e12)),
        (K::ElectricityMeter, M::Voltage) => Some((0.0, 100_000.0)),
        _ => None,
    }
}

/// Converts `value` in `unit` to `metric`'s canonical unit; `None` when the
/// unit is not one the metric accepts. Units are case-sensitive: "mW" and
/// "MW" differ by nine orders of magnitude.
pub fn to_canonical(metric: Metric, unit: &str, value: f64) -> Option<f64> {
    conversion(metric, unit).map(|c| c.apply(value))
}

/// How a unit maps onto its metric's canonical unit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Convert {
    Same,
    Mul(f64),
    /// Division rather than multiplying by 0.001, so 1500 W is exactly 1.5 kW.
    Div(f64),
    Fahrenheit,
    Kelvin,
}

impl Convert {
    fn apply(self, v: f64) -> f64 {
        match self {
            Self::Same => v,
            Self::Mul(k) => v * k,
            Self::Div(k) => v / k,
            Self::Fahrenheit => (v - 32.0) * 5.0 / 9.0,
            Self::Kelvin => v - 273.15,
        }
    }
}

fn conversion(metric: Metric, unit: &str) -> Option<Convert> {
    use Convert as C;
    use Metric as M;
    let c = match (metric, unit) {
        (M::Temperature | M::MotorTemperature, "C" | "°C" | "degC") => C::Same,
        (M::Temperature | M::MotorTemperature, "F") => C::Fahrenheit,
        (M::Temperature | M::MotorTemperature, "K") => C::Kelvin,
        (M::Humidity, "%" | "%RH") => C::Same,
        (M::Vibration, "mm/s") => C::Same,
        (M::Vibration, "m/s") => C::Mul(1000.0),
        (M::Torque, "Nm" | "N·m") => C::Same,
        (M::Torque, "kNm") => C::Mul(1000.0),
        (M::Power, "kW") => C::Same,
        (M::Power, "W") => C::Div(1000.0),
        (M::Power, "MW") => C::Mul(1000.0),
        (M::Energy, "kWh") => C::Same,
        (M::Energy, "Wh") => C::Div(1000.0),
        (M::Energy, "MWh") => C::Mul(1000.0),
        (M::Voltage, "V") => C::Same,
        (M::Voltage, "kV") => C::Mul(1000.0),
        _ => return None,
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeadLetterReason as R;

    const NOW: i64 = 1_700_000_000_000;
    const RULES: Rules = Rules {
        max_future_skew_ms: 5_000,
        max_past_age_ms: 3_600_000,
    };

    fn dev() -> DeviceId {
        DeviceId::new("arm-7")
    }

    fn raw(metric: &str, value: f64, unit: &str) -> RawReading {
        RawReading {
            device_id: "arm-7".into(),
            seq: 42,
            ts_ms: NOW - 1_000,
            metric: metric.into(),
            value,
            unit: unit.into(),
            kind: 1,
        }
    }

    fn ok(kind: DeviceKind, r: &RawReading) -> Reading {
        match validate(&dev(), kind, r, &RULES, NOW) {
            Ok(reading) => reading,
            Err(refusal) => panic!("expected acceptance, got {refusal:?}"),
        }
    }

    fn refused(kind: DeviceKind, r: &RawReading) -> Refusal {
        match validate(&dev(), kind, r, &RULES, NOW) {
            Ok(reading) => panic!("expected a refusal, got {reading:?}"),
            Err(refusal) => refusal,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn accepted_reading_keeps_identity_and_canonical_metric() {
        let r = ok(DeviceKind::ClimateSensor, &raw("humidity", 55.5, "%"));
        assert_eq!(
            r,
            Reading {
                device: dev(),
                kind: DeviceKind::ClimateSensor,
                seq: 42,
                ts_ms: NOW - 1_000,
                metric: Metric::Humidity,
                value: 55.5,
            }
        );
    }

    #[test]
    fn missing_fields_are_refused_with_the_field_named() {
        let base = raw("temperature", 20.0, "C");
        let cases: [(RawReading, &str); 4] = [
            (
                RawReading {
                    seq: 0,
                    ..base.clone()
                },
                "seq 0 missing (seqs start at 1)",
            ),
            (
                RawReading {
                    ts_ms: 0,
                    ..base.clone()
                },
                "ts_ms 0 missing",
            ),
            (
                RawReading {
                    metric: String::new(),
                    ..base.clone()
                },
                "metric empty",
            ),
            (
                RawReading {
                    unit: String::new(),
                    ..base.clone()
                },
                "unit empty",
            ),
        ];
        for (r, detail) in cases {
            assert_eq!(
                refused(DeviceKind::ClimateSensor, &r),
                Refusal::new(R::MissingField, detail)
            );
        }
    }

    #[test]
    fn missing_field_wins_over_every_later_check() {
        // Also unknown metric, NaN and far future: the first check decides.
        let r = RawReading {
            seq: 0,
            ts_ms: NOW + 1_000_000,
            value: f64::NAN,
            ..raw("nonsense", 0.0, "?")
        };
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &r).reason,
            R::MissingField
        );
    }

    #[test]
    fn unknown_metric_and_metric_of_another_kind_are_unknown_metric() {
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &raw("pressure", 1.0, "bar")),
            Refusal::new(R::UnknownMetric, "metric \"pressure\" unknown")
        );
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &raw("energy", 1.0, "kWh")),
            Refusal::new(
                R::UnknownMetric,
                "metric energy not reported by climate_sensor"
            )
        );
        assert_eq!(
            refused(DeviceKind::ElectricityMeter, &raw("torque", 1.0, "Nm")).reason,
            R::UnknownMetric
        );
        // Metric names are case-sensitive like units.
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &raw("Temperature", 1.0, "C")).reason,
            R::UnknownMetric
        );
    }

    #[test]
    fn metrics_per_kind() {
        use DeviceKind as K;
        use Metric as M;
        let reported = |k| {
            M::ALL
                .into_iter()
                .filter(|&m| range_of(k, m).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(reported(K::ClimateSensor), [M::Temperature, M::Humidity]);
        assert_eq!(
            reported(K::RobotArm),
            [M::Vibration, M::Torque, M::MotorTemperature, M::Power]
        );
        assert_eq!(
            reported(K::ElectricityMeter),
            [M::Power, M::Energy, M::Voltage]
        );
    }

    #[test]
    fn unknown_unit_names_unit_and_metric() {
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &raw("temperature", 20.0, "c")),
            Refusal::new(
                R::UnknownUnit,
                "unit \"c\" not convertible to temperature (C)"
            )
        );
        // A unit of another metric is not convertible either.
        assert_eq!(
            refused(DeviceKind::ElectricityMeter, &raw("power", 1.0, "kWh")).reason,
            R::UnknownUnit
        );
        // Case matters: milliwatts are not megawatts.
        assert_eq!(
            refused(DeviceKind::ElectricityMeter, &raw("power", 1.0, "mW")).reason,
            R::UnknownUnit
        );
    }

    #[test]
    fn unknown_unit_wins_over_not_finite() {
        let r = raw("temperature", f64::NAN, "Rankine");
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &r).reason,
            R::UnknownUnit
        );
    }

    #[test]
    fn non_finite_values_are_refused() {
        for (v, shown) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(
                refused(DeviceKind::ClimateSensor, &raw("temperature", v, "C")),
                Refusal::new(
                    R::NotFinite,
                    format!("temperature value {shown} not finite")
                )
            );
        }
    }

    #[test]
    fn not_finite_wins_over_timestamps() {
        let r = RawReading {
            ts_ms: NOW + 10_000_000,
            ..raw("temperature", f64::NAN, "C")
        };
        assert_eq!(refused(DeviceKind::ClimateSensor, &r).reason, R::NotFinite);
    }

    #[test]
    fn future_timestamp_beyond_skew_is_refused_at_skew_accepted() {
        let at_edge = RawReading {
            ts_ms: NOW + 5_000,
            ..raw("temperature", 20.0, "C")
        };
        assert_eq!(ok(DeviceKind::ClimateSensor, &at_edge).ts_ms, NOW + 5_000);
        let beyond = RawReading {
            ts_ms: NOW + 5_001,
            ..at_edge
        };
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &beyond),
            Refusal::new(
                R::FutureTimestamp,
                format!(
                    "ts_ms {} is 5001 ms ahead of now {NOW} (max skew 5000 ms)",
                    NOW + 5_001
                )
            )
        );
    }

    #[test]
    fn stale_timestamp_beyond_age_is_refused_at_age_accepted() {
        let at_edge = RawReading {
            ts_ms: NOW - 3_600_000,
            ..raw("temperature", 20.0, "C")
        };
        assert_eq!(
            ok(DeviceKind::ClimateSensor, &at_edge).ts_ms,
            NOW - 3_600_000
        );
        let beyond = RawReading {
            ts_ms: NOW - 3_600_001,
            ..at_edge
        };
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &beyond),
            Refusal::new(
                R::StaleTimestamp,
                format!(
                    "ts_ms {} is 3600001 ms behind now {NOW} (max age 3600000 ms)",
                    NOW - 3_600_001
                )
            )
        );
    }

    #[test]
    fn timestamp_wins_over_range() {
        let r = RawReading {
            ts_ms: NOW + 60_000,
            ..raw("humidity", 130.0, "%")
        };
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &r).reason,
            R::FutureTimestamp
        );
        let r = RawReading {
            ts_ms: 1,
            ..raw("humidity", 130.0, "%")
        };
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &r).reason,
            R::StaleTimestamp
        );
    }

    #[test]
    fn extreme_rules_do_not_overflow() {
        let rules = Rules {
            max_future_skew_ms: i64::MAX,
            max_past_age_ms: i64::MAX,
        };
        let r = RawReading {
            ts_ms: i64::MAX,
            ..raw("humidity", 50.0, "%")
        };
        assert!(validate(&dev(), DeviceKind::ClimateSensor, &r, &rules, NOW).is_ok());
        let r = RawReading {
            ts_ms: 1,
            ..raw("humidity", 50.0, "%")
        };
        assert!(validate(&dev(), DeviceKind::ClimateSensor, &r, &rules, NOW).is_ok());
        // Still older than the oldest representable bound, and the detail's
        // arithmetic saturates instead of overflowing.
        let r = RawReading {
            ts_ms: i64::MIN,
            ..raw("humidity", 50.0, "%")
        };
        let refusal = validate(&dev(), DeviceKind::ClimateSensor, &r, &rules, NOW).err();
        assert_eq!(refusal.map(|r| r.reason), Some(R::StaleTimestamp));
        let refusal = validate(&dev(), DeviceKind::ClimateSensor, &r, &RULES, i64::MAX).err();
        assert_eq!(refusal.map(|r| r.reason), Some(R::StaleTimestamp));
    }

    #[test]
    fn out_of_range_quotes_metric_value_unit_and_range() {
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &raw("humidity", 130.0, "%")),
            Refusal::new(R::OutOfRange, "humidity 130 % outside 0..=100")
        );
        assert_eq!(
            refused(DeviceKind::ClimateSensor, &raw("temperature", -50.5, "C")),
            Refusal::new(R::OutOfRange, "temperature -50.5 C outside -50..=150")
        );
    }

    #[test]
    fn range_is_inclusive_at_both_ends() {
        for v in [-5000.0, 5000.0] {
            assert_eq!(ok(DeviceKind::RobotArm, &raw("torque", v, "Nm")).value, v);
        }
        assert_eq!(
            refused(DeviceKind::RobotArm, &raw("torque", 5000.001, "Nm")).reason,
            R::OutOfRange
        );
    }

    #[test]
    fn range_applies_to_converted_value() {
        // 302 F = 150 C, the top of the range.
        assert!(close(
            ok(DeviceKind::ClimateSensor, &raw("temperature", 302.0, "F")).value,
            150.0
        ));
        // 400 K = 126.85 C: inside, though 400 is outside in kelvin.
        assert!(close(
            ok(DeviceKind::ClimateSensor, &raw("temperature", 400.0, "K")).value,
            126.85
        ));
        // 0.6 m/s = 600 mm/s: outside, though 0.6 is inside in m/s.
        assert_eq!(
            refused(DeviceKind::RobotArm, &raw("vibration", 0.6, "m/s")),
            Refusal::new(
                R::OutOfRange,
                "vibration 600 mm/s (from 0.6 m/s) outside 0..=500"
            )
        );
    }

    #[test]
    fn same_metric_has_a_different_range_per_kind() {
        assert_eq!(
            ok(DeviceKind::ElectricityMeter, &raw("power", 5000.0, "kW")).value,
            5000.0
        );
        assert_eq!(
            refused(DeviceKind::RobotArm, &raw("power", 5000.0, "kW")),
            Refusal::new(R::OutOfRange, "power 5000 kW outside 0..=1000")
        );
        assert_eq!(
            refused(DeviceKind::RobotArm, &raw("motor_temperature", 201.0, "C")).reason,
            R::OutOfRange
        );
        assert_eq!(
            ok(DeviceKind::RobotArm, &raw("motor_temperature", 199.0, "C")).value,
            199.0
        );
    }

    #[test]
    fn conversion_overflowing_to_infinity_is_out_of_range() {
        let r = raw("power", f64::MAX, "MW");
        assert_eq!(
            refused(DeviceKind::ElectricityMeter, &r).reason,
            R::OutOfRange
        );
    }

    #[test]
    fn unit_conversions_to_canonical() {
        use Metric as M;
        let cases: &[(Metric, &str, f64, f64)] = &[
            (M::Temperature, "C", 21.5, 21.5),
            (M::Temperature, "°C", 21.5, 21.5),
            (M::Temperature, "degC", 21.5, 21.5),
            (M::Temperature, "F", 212.0, 100.0),
            (M::Temperature, "F", -40.0, -40.0),
            (M::Temperature, "K", 273.15, 0.0),
            (M::MotorTemperature, "F", 32.0, 0.0),
            (M::MotorTemperature, "K", 373.15, 100.0),
            (M::MotorTemperature, "°C", 80.0, 80.0),
            (M::Humidity, "%", 40.0, 40.0),
            (M::Humidity, "%RH", 40.0, 40.0),
            (M::Vibration, "mm/s", 3.0, 3.0),
            (M::Vibration, "m/s", 0.003, 3.0),
            (M::Torque, "Nm", 12.0, 12.0),
            (M::Torque, "N·m", 12.0, 12.0),
            (M::Torque, "kNm", 1.2, 1200.0),
            (M::Power, "kW", 7.0, 7.0),
            (M::Power, "W", 1500.0, 1.5),
            (M::Power, "MW", 2.5, 2500.0),
            (M::Energy, "kWh", 10.0, 10.0),
            (M::Energy, "Wh", 2500.0, 2.5),
            (M::Energy, "MWh", 3.0, 3000.0),
            (M::Voltage, "V", 230.0, 230.0),
            (M::Voltage, "kV", 11.0, 11_000.0),
        ];
        for &(metric, unit, from, to) in cases {
            let got = to_canonical(metric, unit, from);
            assert!(
                got.is_some_and(|g| close(g, to)),
                "{from} {unit} of {metric}: expected {to}, got {got:?}"
            );
        }
        // Units of other metrics are not accepted.
        assert_eq!(to_canonical(M::Humidity, "C", 1.0), None);
        assert_eq!(to_canonical(M::Voltage, "kW", 1.0), None);
        assert_eq!(to_canonical(M::Energy, "kW", 1.0), None);
    }

    #[test]
    fn validate_returns_converted_value() {
        let r = ok(DeviceKind::ElectricityMeter, &raw("energy", 1500.0, "Wh"));
        assert_eq!((r.metric, r.value), (Metric::Energy, 1.5));
        let r = ok(DeviceKind::RobotArm, &raw("torque", -2.0, "kNm"));
        assert_eq!((r.metric, r.value), (Metric::Torque, -2000.0));
    }

    #[test]
    fn wire_kinds() {
        assert_eq!(kind_from_wire(1), Ok(DeviceKind::ClimateSensor));
        assert_eq!(kind_from_wire(2), Ok(DeviceKind::RobotArm));
        assert_eq!(kind_from_wire(3), Ok(DeviceKind::ElectricityMeter));
        assert_eq!(
            kind_from_wire(0),
            Err(Refusal::new(R::MissingField, "kind 0 unspecified"))
        );
        assert_eq!(
            kind_from_wire(4),
            Err(Refusal::new(R::MissingField, "kind 4 unknown"))
        );
        assert_eq!(
            kind_from_wire(-1),
            Err(Refusal::new(R::MissingField, "kind -1 unknown"))
        );
    }
}
