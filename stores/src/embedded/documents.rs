//! Embedded document store: per-minute device documents and threshold
//! events in SQLite, each under its stable id so an upsert replaces it.
//!
//! A minute document's metrics are kept as one JSON body (the shape a
//! MongoDB document would have); the columns beside it exist to filter and
//! to sweep by time, and `log_pos`, the log position up to which the
//! document's minute has counted readings.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::types::{Type, Value};
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::Synchronous;
use super::sqlite::{AddedColumn, SqliteDb, named};
use crate::query_limit;
use crate::{
    DeviceId, DeviceKind, DocumentStore, Event, EventFilter, EventType, Metric, MinuteDoc, Result,
    Stats, UnixMs, minute_doc_id,
};

const STORE: &str = "embedded documents";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS minute_docs (
    id        TEXT    NOT NULL PRIMARY KEY,
    device    TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    minute_ms INTEGER NOT NULL,
    body      TEXT    NOT NULL,
    log_pos   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS minute_docs_by_minute ON minute_docs (minute_ms);

CREATE TABLE IF NOT EXISTS events (
    id         TEXT    NOT NULL PRIMARY KEY,
    device     TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    metric     TEXT    NOT NULL,
    value      REAL    NOT NULL,
    threshold  REAL    NOT NULL,
    ts_ms      INTEGER NOT NULL,
    seq        INTEGER NOT NULL
);
-- One index per filter, each ending in time: the query orders by time.
CREATE INDEX IF NOT EXISTS events_by_ts ON events (ts_ms, id);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device, ts_ms);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, ts_ms);
CREATE INDEX IF NOT EXISTS events_by_type ON events (event_type, ts_ms);
";

const UPSERT_DOC: &str = "
INSERT INTO minute_docs (id, device, kind, minute_ms, body, log_pos)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (id) DO UPDATE SET
    device = excluded.device,
    kind = excluded.kind,
    minute_ms = excluded.minute_ms,
    body = excluded.body,
    log_pos = excluded.log_pos
";

/// Files created before documents kept their log position.
const ADDED: &[AddedColumn] = &[AddedColumn {
    table: "minute_docs",
    column: "log_pos",
    definition: "INTEGER NOT NULL DEFAULT 0",
}];

const UPSERT_EVENT: &str = "
INSERT INTO events (id, device, kind, event_type, metric, value, threshold, ts_ms, seq)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (id) DO UPDATE SET
    device = excluded.device,
    kind = excluded.kind,
    event_type = excluded.event_type,
    metric = excluded.metric,
    value = excluded.value,
    threshold = excluded.threshold,
    ts_ms = excluded.ts_ms,
    seq = excluded.seq
";

/// [`DocumentStore`] in a SQLite file.
#[derive(Clone)]
pub struct SqliteDocuments {
    db: SqliteDb,
}

impl SqliteDocuments {
    /// Opens or creates the store's database at `path`.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self> {
        Ok(Self {
            db: SqliteDb::open(STORE, path, sync, SCHEMA, ADDED)?,
        })
    }
}

super::sqlite::store_options!(SqliteDocuments);

#[async_trait]
impl DocumentStore for SqliteDocuments {
    async fn upsert_minute_docs(&self, docs: &[MinuteDoc]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let docs = docs.to_vec();
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                {
                    let mut upsert = tx.prepare_cached(UPSERT_DOC)?;
                    for doc in &docs {
                        let body = serde_json::to_string(&doc.metrics)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                        upsert.execute(params![
                            doc.id(),
                            doc.device.as_str(),
                            doc.kind.as_str(),
                            doc.minute_ms,
                            body,
                            doc.log_pos,
                        ])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn max_minute(&self) -> Result<Option<UnixMs>> {
        self.db
            .run(|conn| conn.query_row("SELECT MAX(minute_ms) FROM minute_docs", [], |r| r.get(0)))
            .await
    }

    async fn minute_doc(&self, device: &DeviceId, minute_ms: UnixMs) -> Result<Option<MinuteDoc>> {
        let device = device.clone();
        self.db
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT kind, body, log_pos FROM minute_docs WHERE id = ?1")?;
                stmt.query_row([minute_doc_id(&device, minute_ms)], |row| {
                    let body: String = row.get(1)?;
                    let metrics: BTreeMap<Metric, Stats> =
                        serde_json::from_str(&body).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(1, Type::Text, Box::new(e))
                        })?;
                    Ok(MinuteDoc {
                        device: device.clone(),
                        kind: named(row, 0, "device kind", DeviceKind::parse)?,
                        minute_ms,
                        metrics,
                        log_pos: row.get(2)?,
                    })
                })
                .optional()
            })
            .await
    }

    async fn upsert_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                {
                    let mut upsert = tx.prepare_cached(UPSERT_EVENT)?;
                    for e in &events {
                        upsert.execute(params![
                            e.id(),
                            e.device.as_str(),
                            e.kind.as_str(),
                            e.event_type.as_str(),
                            e.metric.as_str(),
                            e.value,
                            e.threshold,
                            e.ts_ms,
                            e.seq,
                        ])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        // Only the filters that are set go into the SQL, so SQLite can pick
        // the matching index; the statement text has at most 32 shapes and
        // stays in the statement cache.
        let mut sql = String::from(
            "SELECT device, kind, event_type, metric, value, threshold, ts_ms, seq
             FROM events WHERE 1 = 1",
        );
        let mut args: Vec<Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, value: Value| {
            args.push(value);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(device) = &filter.device {
            arg(
                &mut sql,
                "device =",
                Value::Text(device.as_str().to_owned()),
            );
        }
        if let Some(kind) = filter.kind {
            arg(&mut sql, "kind =", Value::Text(kind.as_str().to_owned()));
        }
        if let Some(event_type) = filter.event_type {
            arg(
                &mut sql,
                "event_type =",
                Value::Text(event_type.as_str().to_owned()),
            );
        }
        if let Some(from_ms) = filter.from_ms {
            arg(&mut sql, "ts_ms >=", Value::Integer(from_ms));
        }
        if let Some(to_ms) = filter.to_ms {
            arg(&mut sql, "ts_ms <", Value::Integer(to_ms));
        }
        args.push(Value::Integer(i64::from(query_limit(filter.limit))));
        sql.push_str(&format!(
            " ORDER BY ts_ms DESC, id DESC LIMIT ?{}",
            args.len()
        ));
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(args), |row| {
                    Ok(Event {
                        device: DeviceId::new(row.get::<_, String>(0)?),
                        kind: named(row, 1, "device kind", DeviceKind::parse)?,
                        event_type: named(row, 2, "event type", EventType::parse)?,
                        metric: named(row, 3, "metric", Metric::parse)?,
                        value: row.get(4)?,
                        threshold: row.get(5)?,
                        ts_ms: row.get(6)?,
                        seq: row.get(7)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn sweep_before(&self, cutoff_ms: UnixMs) -> Result<u64> {
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                let docs =
                    tx.execute("DELETE FROM minute_docs WHERE minute_ms < ?1", [cutoff_ms])?;
                let events = tx.execute("DELETE FROM events WHERE ts_ms < ?1", [cutoff_ms])?;
                tx.commit()?;
                Ok((docs + events) as u64)
            })
            .await
    }
}
