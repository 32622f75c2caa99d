//! Minute points as InfluxDB line protocol.
//!
//! One point per node's share of a device·metric·minute:
//!
//! ```text
//! vatio_minute,device=m-1,kind=electricity_meter,metric=power,node=a1 count=12i,min=3.5,max=9,sum=71.25,last=8,last_ts_ms=1767225659000i,last_seq=812i,log_pos=40960i 1767225600000
//! ```
//!
//! - The series key (measurement and tags) plus the minute's timestamp is
//!   the point's identity, so rewriting a minute replaces it, and the
//!   `node` tag keeps two nodes' shares of one minute apart.
//! - A field keeps one type forever (InfluxDB refuses a change): counts,
//!   times, sequence numbers and log positions are always integers (`i`),
//!   statistics always floats, written without the `i` suffix even when
//!   whole (`9` is a float in line protocol).
//! - Escaping follows InfluxDB's parser (1.x and 2.x): in tag keys, tag
//!   values and field keys a comma, an equals sign and a space take a
//!   backslash; any other backslash is kept as it is.

use std::fmt::Write as _;

use crate::{Error, MinutePoint, Result};

/// The measurement every minute point is written to.
pub const MEASUREMENT: &str = "vatio_minute";

const STORE: &str = "influxdb time series";

fn rejected(message: String) -> Error {
    Error::Rejected {
        store: STORE,
        message,
    }
}

/// Appends `value` to `out` as a tag value. Line protocol cannot carry a
/// newline, nor a value that ends in a backslash (it would escape the
/// delimiter after it): such values are refused.
fn push_tag_value(out: &mut String, tag: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.contains(['\n', '\r']) || value.ends_with('\\') {
        return Err(rejected(format!(
            "tag {tag} = {value:?} cannot be written in line protocol \
             (empty, a line break, or a trailing backslash)"
        )));
    }
    for c in value.chars() {
        if matches!(c, ',' | '=' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(())
}

fn integer(field: &str, value: u64, point: &MinutePoint) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        rejected(format!(
            "{field} = {value} of {}/{} at {} does not fit InfluxDB's signed 64-bit integers",
            point.device, point.metric, point.minute_ms
        ))
    })
}

fn float(field: &str, value: f64, point: &MinutePoint) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(rejected(format!(
            "{field} = {value} of {}/{} at {} is not a finite number",
            point.device, point.metric, point.minute_ms
        )))
    }
}

/// Appends one point, newline-terminated, with `node` as the share's writer.
pub fn push_point(out: &mut String, point: &MinutePoint, node: &str) -> Result<()> {
    let s = &point.stats;
    // Check everything before writing anything, so a refused point leaves
    // `out` as it was.
    let count = integer("count", s.count, point)?;
    let last_seq = integer("last_seq", s.last_seq, point)?;
    let log_pos = integer("log_pos", point.log_pos, point)?;
    let min = float("min", s.min, point)?;
    let max = float("max", s.max, point)?;
    let sum = float("sum", s.sum, point)?;
    let last = float("last", s.last, point)?;
    let mut line = String::with_capacity(192);
    line.push_str(MEASUREMENT);
    for (tag, value) in [
        ("device", point.device.as_str()),
        ("kind", point.kind.as_str()),
        ("metric", point.metric.as_str()),
        ("node", node),
    ] {
        line.push(',');
        line.push_str(tag);
        line.push('=');
        push_tag_value(&mut line, tag, value)?;
    }
    // `{}` of an f64 is its shortest exact decimal form, never an exponent.
    let _ = writeln!(
        line,
        " count={count}i,min={min},max={max},sum={sum},last={last},\
         last_ts_ms={}i,last_seq={last_seq}i,log_pos={log_pos}i {}",
        s.last_ts_ms, point.minute_ms
    );
    out.push_str(&line);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceId, DeviceKind, Metric, Stats};

    fn point(device: &str, sum: f64) -> MinutePoint {
        MinutePoint {
            device: DeviceId::new(device),
            kind: DeviceKind::ElectricityMeter,
            metric: Metric::Power,
            minute_ms: 1_767_225_600_000,
            stats: Stats {
                count: 2,
                min: 1.0,
                max: 9.0,
                sum,
                last: 9.0,
                last_ts_ms: 1_767_225_659_000,
                last_seq: 812,
            },
            log_pos: 40_960,
        }
    }

    fn line(p: &MinutePoint) -> Result<String> {
        let mut out = String::new();
        push_point(&mut out, p, "a1").map(|()| out)
    }

    #[test]
    fn a_point_is_one_line_with_integer_and_float_fields_apart() {
        assert_eq!(
            line(&point("m-1", 10.25)).expect("encodes"),
            "vatio_minute,device=m-1,kind=electricity_meter,metric=power,node=a1 \
             count=2i,min=1,max=9,sum=10.25,last=9,last_ts_ms=1767225659000i,\
             last_seq=812i,log_pos=40960i 1767225600000\n"
        );
    }

    #[test]
    fn commas_equals_and_spaces_in_tags_are_escaped_other_backslashes_kept() {
        let out = line(&point(r"m,1=a\b", 1.0)).expect("encodes");
        assert!(
            out.starts_with(r"vatio_minute,device=m\,1\=a\b,kind="),
            "{out}"
        );
    }

    #[test]
    fn what_line_protocol_cannot_carry_is_refused_and_nothing_written() {
        for bad in [
            point(r"m\", 1.0),
            point("m-1", f64::INFINITY),
            point("m-1", f64::NAN),
        ] {
            let mut out = String::from("before\n");
            let err = push_point(&mut out, &bad, "a1").expect_err("refused");
            assert!(matches!(err, Error::Rejected { .. }), "{err}");
            assert_eq!(out, "before\n");
        }
        let mut huge = point("m-1", 1.0);
        huge.log_pos = u64::MAX;
        let err = line(&huge).expect_err("log_pos out of range");
        assert!(err.to_string().contains("log_pos"), "{err}");
    }

    #[test]
    fn floats_round_trip_exactly() {
        for v in [0.1, 1e-7, 123_456_789.123_456_79, -0.0, 1e300] {
            let text = format!("{v}");
            assert_eq!(text.parse::<f64>().expect("parses"), v, "{text}");
            assert!(!text.contains('e'), "{text}");
        }
    }
}
