//! Embedded time-series store: minute points in one SQLite table keyed
//! `(device, metric, minute_ms)`, so a rewrite of a minute replaces it.
//!
//! Windows coarser than a minute are merged at query time from the stored
//! minute statistics (counts and sums add, min/max combine, `last` comes from
//! the latest minute), which is exact.
//!
//! Each point also keeps `log_pos`, the log position up to which its minute
//! has counted readings, so an aggregator that reopens the minute after a
//! restart skips the log records already in it.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::Synchronous;
use super::sqlite::{AddedColumn, SqliteDb, named};
use crate::query_limit;
use crate::{
    DeviceId, DeviceKind, LatestFilter, LatestValue, Metric, MinuteFilter, MinutePoint,
    PowerFlowMinute, Result, Stats, TimeSeriesStore, UnixMs,
};

const STORE: &str = "embedded time series";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS minute_points (
    device     TEXT    NOT NULL,
    metric     TEXT    NOT NULL,
    minute_ms  INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    count      INTEGER NOT NULL,
    min        REAL    NOT NULL,
    max        REAL    NOT NULL,
    sum        REAL    NOT NULL,
    last       REAL    NOT NULL,
    last_ts_ms INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    log_pos    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device, metric, minute_ms)
) WITHOUT ROWID;
-- The power-flow query scans one kind and metric over a time range.
CREATE INDEX IF NOT EXISTS minute_points_by_kind_metric_minute
    ON minute_points (kind, metric, minute_ms);
";

const UPSERT: &str = "
INSERT INTO minute_points
    (device, metric, minute_ms, kind, count, min, max, sum, last, last_ts_ms, last_seq, log_pos)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
ON CONFLICT (device, metric, minute_ms) DO UPDATE SET
    kind = excluded.kind,
    count = excluded.count,
    min = excluded.min,
    max = excluded.max,
    sum = excluded.sum,
    last = excluded.last,
    last_ts_ms = excluded.last_ts_ms,
    last_seq = excluded.last_seq,
    log_pos = excluded.log_pos
";

/// Files created before points kept their log position.
const ADDED: &[AddedColumn] = &[AddedColumn {
    table: "minute_points",
    column: "log_pos",
    definition: "INTEGER NOT NULL DEFAULT 0",
}];

/// [`TimeSeriesStore`] in a SQLite file.
#[derive(Clone)]
pub struct SqliteTimeSeries {
    db: SqliteDb,
}

impl SqliteTimeSeries {
    /// Opens or creates the store's database at `path`.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self> {
        Ok(Self {
            db: SqliteDb::open(STORE, path, sync, SCHEMA, ADDED)?,
        })
    }
}

super::sqlite::store_options!(SqliteTimeSeries);

fn stats_from(row: &Row<'_>, first: usize) -> rusqlite::Result<Stats> {
    Ok(Stats {
        count: row.get(first)?,
        min: row.get(first + 1)?,
        max: row.get(first + 2)?,
        sum: row.get(first + 3)?,
        last: row.get(first + 4)?,
        last_ts_ms: row.get(first + 5)?,
        last_seq: row.get(first + 6)?,
    })
}

#[async_trait]
impl TimeSeriesStore for SqliteTimeSeries {
    async fn write_points(&self, points: &[MinutePoint]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points.to_vec();
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                {
                    let mut upsert = tx.prepare_cached(UPSERT)?;
                    for p in &points {
                        let s = &p.stats;
                        upsert.execute(params![
                            p.device.as_str(),
                            p.metric.as_str(),
                            p.minute_ms,
                            p.kind.as_str(),
                            s.count,
                            s.min,
                            s.max,
                            s.sum,
                            s.last,
                            s.last_ts_ms,
                            s.last_seq,
                            p.log_pos,
                        ])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn point(
        &self,
        device: &DeviceId,
        metric: Metric,
        minute_ms: UnixMs,
    ) -> Result<Option<MinutePoint>> {
        let device = device.clone();
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT kind, count, min, max, sum, last, last_ts_ms, last_seq, log_pos
                     FROM minute_points WHERE device = ?1 AND metric = ?2 AND minute_ms = ?3",
                )?;
                stmt.query_row(
                    params![device.as_str(), metric.as_str(), minute_ms],
                    |row| {
                        Ok(MinutePoint {
                            device: device.clone(),
                            kind: named(row, 0, "device kind", DeviceKind::parse)?,
                            metric,
                            minute_ms,
                            stats: stats_from(row, 1)?,
                            log_pos: row.get(8)?,
                        })
                    },
                )
                .optional()
            })
            .await
    }

    async fn latest(&self, filter: &LatestFilter) -> Result<Vec<LatestValue>> {
        let device = filter.device.as_ref().map(|d| d.as_str().to_owned());
        let kind = filter.kind.map(DeviceKind::as_str);
        let limit = query_limit(filter.limit);
        self.db
            .run(move |conn| {
                // Ordered by device, then metric name: the order every
                // backend can produce from its own keys.
                let mut stmt = conn.prepare_cached(
                    "SELECT p.device, p.kind, p.metric, p.last, p.last_ts_ms
                     FROM minute_points AS p
                     JOIN (SELECT device, metric, MAX(minute_ms) AS minute_ms
                           FROM minute_points
                           WHERE (?1 IS NULL OR device = ?1) AND (?2 IS NULL OR kind = ?2)
                             AND count > 0
                           GROUP BY device, metric) AS newest
                       ON p.device = newest.device AND p.metric = newest.metric
                      AND p.minute_ms = newest.minute_ms
                     ORDER BY p.device, p.metric
                     LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![device, kind, limit], |row| {
                    Ok(LatestValue {
                        device: DeviceId::new(row.get::<_, String>(0)?),
                        kind: named(row, 1, "device kind", DeviceKind::parse)?,
                        metric: named(row, 2, "metric", Metric::parse)?,
                        value: row.get(3)?,
                        ts_ms: row.get(4)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn minutes(
        &self,
        filter: &MinuteFilter,
        from_ms: UnixMs,
        to_ms: UnixMs,
    ) -> Result<Vec<MinutePoint>> {
        let device = filter.device.as_ref().map(|d| d.as_str().to_owned());
        let kind = filter.kind.map(DeviceKind::as_str);
        let metric = filter.metric.map(Metric::as_str);
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT device, metric, minute_ms, kind,
                            count, min, max, sum, last, last_ts_ms, last_seq, log_pos
                     FROM minute_points
                     WHERE (?1 IS NULL OR device = ?1) AND (?2 IS NULL OR kind = ?2)
                       AND (?3 IS NULL OR metric = ?3)
                       AND minute_ms >= ?4 AND minute_ms < ?5 AND count > 0
                     ORDER BY device, metric, minute_ms",
                )?;
                let rows =
                    stmt.query_map(params![device, kind, metric, from_ms, to_ms], |row| {
                        Ok(MinutePoint {
                            device: DeviceId::new(row.get::<_, String>(0)?),
                            metric: named(row, 1, "metric", Metric::parse)?,
                            minute_ms: row.get(2)?,
                            kind: named(row, 3, "device kind", DeviceKind::parse)?,
                            stats: stats_from(row, 4)?,
                            log_pos: row.get(11)?,
                        })
                    })?;
                rows.collect()
            })
            .await
    }

    async fn max_minute(&self) -> Result<Option<UnixMs>> {
        self.db
            .run(|conn| {
                conn.query_row("SELECT MAX(minute_ms) FROM minute_points", [], |r| r.get(0))
            })
            .await
    }

    async fn power_flow(&self, from_ms: UnixMs, to_ms: UnixMs) -> Result<Vec<PowerFlowMinute>> {
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT minute_ms, SUM(sum / count), COUNT(DISTINCT device)
                     FROM minute_points
                     WHERE kind = ?1 AND metric = ?2 AND minute_ms >= ?3 AND minute_ms < ?4
                       AND count > 0
                     GROUP BY minute_ms
                     ORDER BY minute_ms",
                )?;
                let rows = stmt.query_map(
                    params![
                        DeviceKind::ElectricityMeter.as_str(),
                        Metric::Power.as_str(),
                        from_ms,
                        to_ms
                    ],
                    |row| {
                        Ok(PowerFlowMinute {
                            minute_ms: row.get(0)?,
                            total_kw: row.get(1)?,
                            meters: row.get(2)?,
                        })
                    },
                )?;
                rows.collect()
            })
            .await
    }
}
