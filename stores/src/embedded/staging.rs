//! Embedded archive staging: readings wait in SQLite, keyed `(device, seq)`,
//! until the archiver seals their hour into Parquet.
//!
//! An hour is dirty while it holds rows that no sealed file contains. Only a
//! row that was actually inserted dirties its hour, so redelivered readings
//! (at-least-once delivery) do not make the archiver rewrite a sealed hour.
//! For the same reason a purge leaves a watermark: a reading redelivered for
//! a purged hour is not staged again, since sealing that hour anew from it
//! alone would overwrite a complete file with a partial one.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::Synchronous;
use super::sqlite::{SqliteDb, named};
use crate::{
    ArchiveStaging, DeviceId, DeviceKind, HourKey, Metric, Reading, Result, UnixMs, hour_of,
};

const STORE: &str = "embedded archive staging";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS staged_rows (
    device  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    hour_ms INTEGER NOT NULL,
    ts_ms   INTEGER NOT NULL,
    metric  TEXT    NOT NULL,
    value   REAL    NOT NULL,
    -- One B-tree, no secondary index: staging is the archiver's hot path.
    -- A reading's hour follows from its time, so (device, seq) identifies
    -- it within its hour; reading an hour back in file order is one range.
    PRIMARY KEY (kind, hour_ms, device, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS staged_hours (
    kind        TEXT    NOT NULL,
    hour_ms     INTEGER NOT NULL,
    dirty       INTEGER NOT NULL,
    sealed_rows INTEGER,
    PRIMARY KEY (kind, hour_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS staged_hours_dirty ON staged_hours (dirty, hour_ms);

-- Hours before this were purged; at most one row.
CREATE TABLE IF NOT EXISTS purge_watermark (
    id             INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    before_hour_ms INTEGER NOT NULL
);
";

/// [`ArchiveStaging`] in a SQLite file.
#[derive(Clone)]
pub struct SqliteStaging {
    db: SqliteDb,
}

impl SqliteStaging {
    /// Opens or creates the store's database at `path`.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self> {
        Ok(Self {
            db: SqliteDb::open(STORE, path, sync, SCHEMA, &[])?,
        })
    }
}

super::sqlite::store_options!(SqliteStaging);

#[async_trait]
impl ArchiveStaging for SqliteStaging {
    async fn stage(&self, readings: &[Reading]) -> Result<()> {
        if readings.is_empty() {
            return Ok(());
        }
        let readings = readings.to_vec();
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                let purged_before: UnixMs = tx
                    .query_row("SELECT before_hour_ms FROM purge_watermark", [], |row| {
                        row.get(0)
                    })
                    .optional()?
                    .unwrap_or(UnixMs::MIN);
                let mut skipped = 0_u64;
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO staged_rows
                             (device, seq, kind, hour_ms, ts_ms, metric, value)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?;
                    let mut touched: BTreeSet<(DeviceKind, UnixMs)> = BTreeSet::new();
                    for r in &readings {
                        let hour_ms = hour_of(r.ts_ms);
                        if hour_ms < purged_before {
                            skipped += 1;
                            continue;
                        }
                        let inserted = insert.execute(params![
                            r.device.as_str(),
                            r.seq,
                            r.kind.as_str(),
                            hour_ms,
                            r.ts_ms,
                            r.metric.as_str(),
                            r.value,
                        ])?;
                        if inserted > 0 {
                            touched.insert((r.kind, hour_ms));
                        }
                    }
                    let mut dirty = tx.prepare_cached(
                        "INSERT INTO staged_hours (kind, hour_ms, dirty) VALUES (?1, ?2, 1)
                         ON CONFLICT (kind, hour_ms) DO UPDATE SET dirty = 1",
                    )?;
                    for (kind, hour_ms) in touched {
                        dirty.execute(params![kind.as_str(), hour_ms])?;
                    }
                }
                tx.commit()?;
                if skipped > 0 {
                    tracing::warn!(
                        skipped,
                        purged_before_ms = purged_before,
                        "readings for already purged hours were not staged again"
                    );
                }
                Ok(())
            })
            .await
    }

    async fn dirty_hours(&self) -> Result<Vec<HourKey>> {
        self.db
            .run(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT kind, hour_ms FROM staged_hours WHERE dirty = 1
                     ORDER BY hour_ms, kind",
                )?;
                let rows = stmt.query_map([], |row| {
                    Ok(HourKey {
                        kind: named(row, 0, "device kind", DeviceKind::parse)?,
                        hour_ms: row.get(1)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn hour_rows(&self, hour: HourKey) -> Result<Vec<Reading>> {
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT device, seq, ts_ms, metric, value FROM staged_rows
                     WHERE kind = ?1 AND hour_ms = ?2
                     ORDER BY device, seq",
                )?;
                let rows = stmt.query_map(params![hour.kind.as_str(), hour.hour_ms], |row| {
                    Ok(Reading {
                        device: DeviceId::new(row.get::<_, String>(0)?),
                        kind: hour.kind,
                        seq: row.get(1)?,
                        ts_ms: row.get(2)?,
                        metric: named(row, 3, "metric", Metric::parse)?,
                        value: row.get(4)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn mark_sealed(&self, hour: HourKey, rows: u64) -> Result<()> {
        self.db
            .run(move |conn| {
                // The hour turns clean only if the file holds every row staged
                // now: rows that arrived after the archiver read the hour keep
                // it dirty, so they get sealed next time. Staged rows are never
                // changed, only added, so equal counts mean equal row sets.
                conn.prepare_cached(
                    "UPDATE staged_hours
                     SET sealed_rows = ?3,
                         dirty = (SELECT COUNT(*) FROM staged_rows
                                  WHERE kind = ?1 AND hour_ms = ?2) != ?3
                     WHERE kind = ?1 AND hour_ms = ?2",
                )?
                .execute(params![hour.kind.as_str(), hour.hour_ms, rows])?;
                Ok(())
            })
            .await
    }

    async fn purge_before(&self, hour_ms: UnixMs) -> Result<u64> {
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                let mut rows = 0;
                for kind in DeviceKind::ALL {
                    rows += tx.execute(
                        "DELETE FROM staged_rows WHERE kind = ?1 AND hour_ms < ?2",
                        params![kind.as_str(), hour_ms],
                    )?;
                }
                tx.execute("DELETE FROM staged_hours WHERE hour_ms < ?1", [hour_ms])?;
                tx.execute(
                    "INSERT INTO purge_watermark (id, before_hour_ms) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE
                     SET before_hour_ms = MAX(before_hour_ms, excluded.before_hour_ms)",
                    [hour_ms],
                )?;
                tx.commit()?;
                Ok(rows as u64)
            })
            .await
    }
}
