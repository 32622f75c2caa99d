//! InfluxQL statements over the minute points, and their answers read back
//! into [`MinutePoint`]s, one per node's share.
//!
//! Every statement selects the same fields and groups by every tag
//! (`GROUP BY *`), so each series of the answer is one share's
//! device·metric and its rows are minutes.

use serde::Deserialize;

use super::line::MEASUREMENT;
use crate::{DeviceId, DeviceKind, Error, Metric, MinutePoint, Result, Stats, UnixMs};

const STORE: &str = "influxdb time series";

/// The fields of a point, in the order the statements select them.
const FIELDS: &str = r#""count","min","max","sum","last","last_ts_ms","last_seq","log_pos""#;

/// InfluxDB keeps times as nanoseconds in an i64: the range of
/// milliseconds it can hold, which every time bound is kept within.
const MS_MIN: UnixMs = -9_223_372_036_853;
const MS_MAX: UnixMs = 9_223_372_036_853;

/// A string as an InfluxQL string literal.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if matches!(c, '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// An identifier, double-quoted.
pub fn ident(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The measurement, qualified by the retention policy when one is set.
pub fn source(retention_policy: &str) -> String {
    if retention_policy.is_empty() {
        ident(MEASUREMENT)
    } else {
        format!("{}.{}", ident(retention_policy), ident(MEASUREMENT))
    }
}

/// Conditions joined by `AND` (each a complete comparison).
#[derive(Default)]
pub struct Conditions(Vec<String>);

impl Conditions {
    pub fn tag(mut self, tag: &str, value: Option<&str>) -> Self {
        if let Some(value) = value {
            self.0.push(format!("{} = {}", ident(tag), literal(value)));
        }
        self
    }

    /// `from_ms <= time < to_ms`, within what InfluxDB can hold.
    pub fn time_range(mut self, from_ms: UnixMs, to_ms: UnixMs) -> Self {
        let from = from_ms.clamp(MS_MIN, MS_MAX);
        let to = to_ms.clamp(MS_MIN, MS_MAX);
        self.0.push(format!("time >= {from}ms AND time < {to}ms"));
        self
    }

    pub fn at(mut self, minute_ms: UnixMs) -> Self {
        self.0
            .push(format!("time = {}ms", minute_ms.clamp(MS_MIN, MS_MAX)));
        self
    }

    fn clause(&self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.0.join(" AND "))
        }
    }
}

/// Every share's points that match, oldest first within each share.
pub fn select_points(retention_policy: &str, conditions: &Conditions) -> String {
    format!(
        "SELECT {FIELDS} FROM {}{} GROUP BY *",
        source(retention_policy),
        conditions.clause()
    )
}

/// Each share's newest point per device·metric.
pub fn select_newest(retention_policy: &str, conditions: &Conditions) -> String {
    format!(
        "SELECT {FIELDS} FROM {}{} GROUP BY * ORDER BY time DESC LIMIT 1",
        source(retention_policy),
        conditions.clause()
    )
}

/// The time of the newest point that matches (a selector returns its point's time).
pub fn select_newest_time(retention_policy: &str, conditions: &Conditions) -> String {
    format!(
        "SELECT last(\"count\") FROM {}{}",
        source(retention_policy),
        conditions.clause()
    )
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
    /// Set when the server cut the answer at its `max-row-limit`.
    #[serde(default)]
    partial: bool,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

fn corrupt(message: String) -> Error {
    Error::Corrupt {
        store: STORE,
        message,
    }
}

/// The one statement's series, or the error the server put in the answer
/// (InfluxDB reports a statement's failure inside a 200).
fn series_of(body: &str) -> Result<Vec<Series>> {
    let answer: Answer = serde_json::from_str(body)
        .map_err(|e| corrupt(format!("the query answer is not InfluxDB's JSON: {e}")))?;
    if let Some(error) = answer.error {
        return Err(statement_error(error));
    }
    let Some(result) = answer.results.into_iter().next() else {
        return Ok(Vec::new());
    };
    if let Some(error) = result.error {
        return Err(statement_error(error));
    }
    if result.partial {
        return Err(Error::Unavailable {
            store: STORE,
            message: "the server cut the answer short at its max-row-limit; \
                      raise [http] max-row-limit (0 = none)"
                .into(),
        });
    }
    Ok(result.series)
}

/// A missing database is a set-up problem the log waits out; anything else
/// a statement could fail with is a refusal.
fn statement_error(error: String) -> Error {
    if error.contains("database not found") || error.contains("retention policy not found") {
        Error::Unavailable {
            store: STORE,
            message: error,
        }
    } else {
        Error::Rejected {
            store: STORE,
            message: format!("InfluxQL: {error}"),
        }
    }
}

/// The points of an answer to [`select_points`] or [`select_newest`].
pub fn points(body: &str) -> Result<Vec<MinutePoint>> {
    let mut out = Vec::new();
    for series in series_of(body)? {
        let tag = |name: &str| {
            series
                .tags
                .get(name)
                .ok_or_else(|| corrupt(format!("a series has no {name} tag")))
        };
        let device = DeviceId::new(tag("device")?.as_str());
        let kind = DeviceKind::parse(tag("kind")?)
            .ok_or_else(|| corrupt(format!("unknown device kind {:?}", series.tags.get("kind"))))?;
        let metric = Metric::parse(tag("metric")?)
            .ok_or_else(|| corrupt(format!("unknown metric {:?}", series.tags.get("metric"))))?;
        for row in &series.values {
            let cells = Cells {
                columns: &series.columns,
                row,
                device: &device,
            };
            out.push(MinutePoint {
                device: device.clone(),
                kind,
                metric,
                minute_ms: cells.int("time")?,
                stats: Stats {
                    count: cells.count("count")?,
                    min: cells.float("min")?,
                    max: cells.float("max")?,
                    sum: cells.float("sum")?,
                    last: cells.float("last")?,
                    last_ts_ms: cells.int("last_ts_ms")?,
                    last_seq: cells.count("last_seq")?,
                },
                log_pos: cells.count("log_pos")?,
            });
        }
    }
    Ok(out)
}

/// The time of the first row of an answer to [`select_newest_time`].
pub fn newest_time(body: &str) -> Result<Option<UnixMs>> {
    let series = series_of(body)?;
    let Some(first) = series.first() else {
        return Ok(None);
    };
    let Some(row) = first.values.first() else {
        return Ok(None);
    };
    let device = DeviceId::new("-");
    let cells = Cells {
        columns: &first.columns,
        row,
        device: &device,
    };
    cells.int("time").map(Some)
}

/// One row of a series, read by column name.
struct Cells<'a> {
    columns: &'a [String],
    row: &'a [serde_json::Value],
    device: &'a DeviceId,
}

impl Cells<'_> {
    fn cell(&self, name: &str) -> Result<&serde_json::Value> {
        self.columns
            .iter()
            .position(|c| c == name)
            .and_then(|i| self.row.get(i))
            .filter(|v| !v.is_null())
            .ok_or_else(|| corrupt(format!("a point of {} has no {name}", self.device)))
    }

    fn int(&self, name: &str) -> Result<i64> {
        let v = self.cell(name)?;
        v.as_i64()
            .ok_or_else(|| corrupt(format!("{name} of {} is {v}, not an integer", self.device)))
    }

    fn count(&self, name: &str) -> Result<u64> {
        let v = self.int(name)?;
        u64::try_from(v).map_err(|_| corrupt(format!("{name} of {} is {v}, below 0", self.device)))
    }

    fn float(&self, name: &str) -> Result<f64> {
        let v = self.cell(name)?;
        v.as_f64()
            .ok_or_else(|| corrupt(format!("{name} of {} is {v}, not a number", self.device)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_identifiers_are_escaped() {
        assert_eq!(literal(r"it's a\b"), r"'it\'s a\\b'");
        assert_eq!(ident(r#"a"b"#), r#""a\"b""#);
        assert_eq!(source(""), r#""vatio_minute""#);
        assert_eq!(source("one week"), r#""one week"."vatio_minute""#);
    }

    #[test]
    fn statements_filter_by_tag_and_time() {
        let c = Conditions::default()
            .tag("device", Some("m-1"))
            .tag("kind", None)
            .time_range(0, i64::MAX);
        assert_eq!(
            select_points("", &c),
            format!(
                "SELECT {FIELDS} FROM \"vatio_minute\" WHERE \"device\" = 'm-1' AND \
                 time >= 0ms AND time < 9223372036853ms GROUP BY *"
            )
        );
    }

    #[test]
    fn an_answer_reads_into_points_and_a_statement_error_is_classified() {
        let body = r#"{"results":[{"statement_id":0,"series":[{"name":"vatio_minute",
            "tags":{"device":"m-1","kind":"electricity_meter","metric":"power","node":"a1"},
            "columns":["time","count","min","max","sum","last","last_ts_ms","last_seq","log_pos"],
            "values":[[60000,2,1,9,10.25,9,60500,7,640]]}]}]}"#;
        let read = points(body).expect("reads");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].minute_ms, 60_000);
        assert_eq!(read[0].stats.sum, 10.25);
        assert_eq!(read[0].stats.min, 1.0);
        assert_eq!(read[0].log_pos, 640);

        let missing = r#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#;
        assert!(points(missing).expect_err("missing db").is_transient());
        let cut = r#"{"results":[{"statement_id":0,"partial":true,"series":[]}]}"#;
        assert!(
            points(cut)
                .expect_err("partial")
                .to_string()
                .contains("max-row-limit")
        );
        assert_eq!(
            newest_time(r#"{"results":[{"statement_id":0}]}"#).expect("empty"),
            None
        );
    }
}
