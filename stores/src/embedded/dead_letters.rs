//! Embedded dead-letter store: every refused reading exactly as it arrived,
//! with its reason, in one SQLite table with an autoincrement id.
//!
//! A dead letter holds unvalidated input, so nothing about it may make the
//! insert fail: `seq` is kept as its 64 bits in a signed column and a NaN
//! value (which SQLite stores as NULL) reads back as NaN.
//!
//! A letter that may be delivered more than once (refused readings read
//! again from vatio's log after a restart) carries a key; a unique index on
//! it makes a second insert of the same letter a no-op. Unkeyed letters have
//! a NULL key, which the index never treats as a duplicate.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, params, params_from_iter};

use super::Synchronous;
use super::sqlite::{AddedColumn, SqliteDb, named};
use crate::query_limit;
use crate::{
    DeadLetter, DeadLetterFilter, DeadLetterId, DeadLetterReason, DeadLetterStore, NewDeadLetter,
    RawReading, Result, UnixMs,
};

const STORE: &str = "embedded dead letters";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id       TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    ts_ms           INTEGER NOT NULL,
    metric          TEXT    NOT NULL,
    value           REAL,
    unit            TEXT    NOT NULL,
    kind            INTEGER NOT NULL,
    reason          TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    received_ms     INTEGER NOT NULL,
    replayed_ms     INTEGER,
    replay_attempts INTEGER NOT NULL DEFAULT 0,
    key             TEXT
);
-- Unique as an index, not as a column constraint: ALTER TABLE cannot add a
-- UNIQUE column to a file created before keys existed. NULLs never collide.
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_by_key ON dead_letters (key);
CREATE INDEX IF NOT EXISTS dead_letters_by_reason ON dead_letters (reason, id);
CREATE INDEX IF NOT EXISTS dead_letters_by_device ON dead_letters (device_id, id);
";

const INSERT: &str = "
INSERT INTO dead_letters
    (device_id, seq, ts_ms, metric, value, unit, kind, reason, detail, source, received_ms, key)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
ON CONFLICT (key) DO NOTHING
RETURNING id
";

/// Files created before letters had keys.
const ADDED: &[AddedColumn] = &[AddedColumn {
    table: "dead_letters",
    column: "key",
    definition: "TEXT",
}];

const COLUMNS: &str = "id, device_id, seq, ts_ms, metric, value, unit, kind, reason, detail, \
                       source, received_ms, replayed_ms, replay_attempts, key";

/// [`DeadLetterStore`] in a SQLite file.
#[derive(Clone)]
pub struct SqliteDeadLetters {
    db: SqliteDb,
}

impl SqliteDeadLetters {
    /// Opens or creates the store's database at `path`.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self> {
        Ok(Self {
            db: SqliteDb::open(STORE, path, sync, SCHEMA, ADDED)?,
        })
    }
}

super::sqlite::store_options!(SqliteDeadLetters);

/// `seq` as the signed column stores it: the same 64 bits.
fn seq_to_column(seq: u64) -> i64 {
    i64::from_ne_bytes(seq.to_ne_bytes())
}

fn seq_from_column(column: i64) -> u64 {
    u64::from_ne_bytes(column.to_ne_bytes())
}

fn letter_from(row: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: DeadLetterId(row.get(0)?),
        letter: NewDeadLetter {
            reading: RawReading {
                device_id: row.get(1)?,
                seq: seq_from_column(row.get(2)?),
                ts_ms: row.get(3)?,
                metric: row.get(4)?,
                value: row.get::<_, Option<f64>>(5)?.unwrap_or(f64::NAN),
                unit: row.get(6)?,
                kind: row.get(7)?,
            },
            reason: named(row, 8, "dead-letter reason", DeadLetterReason::parse)?,
            detail: row.get(9)?,
            source: row.get(10)?,
            received_ms: row.get(11)?,
            key: row.get(14)?,
        },
        replayed_ms: row.get(12)?,
        replay_attempts: row.get(13)?,
    })
}

#[async_trait]
impl DeadLetterStore for SqliteDeadLetters {
    async fn insert(&self, letters: &[NewDeadLetter]) -> Result<Vec<DeadLetterId>> {
        if letters.is_empty() {
            return Ok(Vec::new());
        }
        let letters = letters.to_vec();
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                let mut ids = Vec::with_capacity(letters.len());
                {
                    let mut insert = tx.prepare_cached(INSERT)?;
                    for l in &letters {
                        let r = &l.reading;
                        // No row back: a letter with this key is stored
                        // already (maybe earlier in this same call).
                        let id = insert
                            .query_row(
                                params![
                                    r.device_id,
                                    seq_to_column(r.seq),
                                    r.ts_ms,
                                    r.metric,
                                    r.value,
                                    r.unit,
                                    r.kind,
                                    l.reason.as_str(),
                                    l.detail,
                                    l.source,
                                    l.received_ms,
                                    l.key,
                                ],
                                |row| row.get(0),
                            )
                            .optional()?;
                        ids.extend(id.map(DeadLetterId));
                    }
                }
                tx.commit()?;
                Ok(ids)
            })
            .await
    }

    async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(reason) = filter.reason {
            args.push(Value::Text(reason.as_str().to_owned()));
            sql.push_str(&format!(" AND reason = ?{}", args.len()));
        }
        if let Some(device) = &filter.device {
            args.push(Value::Text(device.clone()));
            sql.push_str(&format!(" AND device_id = ?{}", args.len()));
        }
        if !filter.include_replayed {
            sql.push_str(" AND replayed_ms IS NULL");
        }
        args.push(Value::Integer(i64::from(query_limit(filter.limit))));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
        self.db
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(args), letter_from)?;
                rows.collect()
            })
            .await
    }

    async fn mark_replayed(&self, ids: &[DeadLetterId], at_ms: UnixMs) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                {
                    // A successful replay is an attempt too.
                    let mut mark = tx.prepare_cached(
                        "UPDATE dead_letters
                         SET replayed_ms = ?2, replay_attempts = replay_attempts + 1
                         WHERE id = ?1",
                    )?;
                    for id in &ids {
                        mark.execute(params![id.0, at_ms])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    async fn mark_refused_again(
        &self,
        id: DeadLetterId,
        reason: DeadLetterReason,
        detail: &str,
    ) -> Result<()> {
        let detail = detail.to_owned();
        self.db
            .run(move |conn| {
                conn.prepare_cached(
                    "UPDATE dead_letters
                     SET reason = ?2, detail = ?3, replay_attempts = replay_attempts + 1
                     WHERE id = ?1",
                )?
                .execute(params![id.0, reason.as_str(), detail])?;
                Ok(())
            })
            .await
    }

    async fn counts(&self) -> Result<Vec<(DeadLetterReason, u64)>> {
        self.db
            .run(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason ORDER BY reason",
                )?;
                let rows = stmt.query_map([], |row| {
                    Ok((
                        named(row, 0, "dead-letter reason", DeadLetterReason::parse)?,
                        row.get(1)?,
                    ))
                })?;
                rows.collect()
            })
            .await
    }
}
