//! Shared plumbing of the SQLite stores: opening a database file (WAL,
//! `synchronous`, busy timeout, schema, columns added since a table first
//! shipped), running blocking work off the async runtime, and turning columns
//! back into model types.
//!
//! Every store owns one connection behind a mutex: SQLite serialises writers
//! anyway, and one connection lets prepared statements stay cached.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, Row};

use super::Synchronous;
use crate::{Blocking, StoreFault};
use crate::{Error, Result};

/// Version of the embedded schemas this build creates. Versioned migrations
/// (`vatio migrate`) take over from here; a newer file is refused.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Page cache per connection: 32 MiB (a negative value counts KiB).
const CACHE_KIB_NEGATIVE: i64 = -32 * 1024;

/// How long a statement waits for another process's lock (e.g. a CLI
/// reading the same file) before failing with `DatabaseBusy`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA_VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
";

/// A column added to a table after the table first shipped. `CREATE TABLE
/// IF NOT EXISTS` leaves an existing table as it is, so opening a file whose
/// table predates the column adds it with `ALTER TABLE` first; the schema's
/// statements run after that and may index the column.
pub(crate) struct AddedColumn {
    pub(crate) table: &'static str,
    pub(crate) column: &'static str,
    /// Everything after the name, e.g. `INTEGER NOT NULL DEFAULT 0`. SQLite
    /// can add a column only if it is nullable or has a non-null default, and
    /// not as UNIQUE: uniqueness goes into an index in the schema.
    pub(crate) definition: &'static str,
}

/// Adds each of `added` that an existing table lacks.
fn add_missing_columns(conn: &Connection, added: &[AddedColumn]) -> rusqlite::Result<()> {
    for c in added {
        // No columns at all: the table does not exist yet and the schema
        // creates it with the column.
        let (columns, present): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(name = ?2), 0) FROM pragma_table_info(?1)",
            [c.table, c.column],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if columns > 0 && present == 0 {
            conn.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN {} {}",
                c.table, c.column, c.definition
            ))?;
        }
    }
    Ok(())
}

/// `with_blocking` and `with_fault` for a store type holding its database
/// in a field `db`.
macro_rules! store_options {
    ($store:ty) => {
        impl $store {
            /// The same store, running its SQLite work where `blocking` says.
            pub fn with_blocking(mut self, blocking: crate::Blocking) -> Self {
                self.db.blocking = blocking;
                self
            }

            /// FAULT INJECTION for simulations only: the same store on a disk
            /// that fails its calls while `fault` says so.
            pub fn with_fault(mut self, fault: crate::StoreFault) -> Self {
                self.db.fault = Some(fault);
                self
            }
        }
    };
}
pub(crate) use store_options;

/// One SQLite database file used by one store.
#[derive(Clone)]
pub(crate) struct SqliteDb {
    store: &'static str,
    conn: Arc<Mutex<Connection>>,
    /// Where [`SqliteDb::run`] runs its work.
    pub(crate) blocking: Blocking,
    /// FAULT INJECTION for simulations only: a failing disk.
    pub(crate) fault: Option<StoreFault>,
}

impl SqliteDb {
    /// Opens (or creates) the database at `path`, adds the `added` columns
    /// an existing table lacks, then creates `schema` (statements written
    /// with `IF NOT EXISTS`), all in one transaction. `store` names the store
    /// in errors.
    pub(crate) fn open(
        store: &'static str,
        path: &Path,
        sync: Synchronous,
        schema: &str,
        added: &[AddedColumn],
    ) -> Result<Self> {
        let err = |source| Error::Sqlite { store, source };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // journal_mode answers with the mode in force; a file system without
        // shared memory support silently stays in another mode.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Unavailable {
                store,
                message: format!("{} refused WAL journal mode (got {mode})", path.display()),
            });
        }
        conn.pragma_update(None, "synchronous", sync.pragma_value())
            .map_err(err)?;
        // SQLite's default page cache (2 MiB) makes a growing staging table
        // re-read its index pages from the OS on every insert batch.
        conn.pragma_update(None, "cache_size", CACHE_KIB_NEGATIVE)
            .map_err(err)?;

        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(SCHEMA_VERSION_TABLE).map_err(err)?;
        let found: Option<i64> = tx
            .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                row.get(0)
            })
            .map_err(err)?;
        match found {
            None => {
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(err)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(Error::Rejected {
                    store,
                    message: format!(
                        "{} has schema version {v}, newer than this build's {SCHEMA_VERSION}",
                        path.display()
                    ),
                });
            }
            Some(_) => {}
        }
        add_missing_columns(&tx, added).map_err(err)?;
        tx.execute_batch(schema).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self {
            store,
            conn: Arc::new(Mutex::new(conn)),
            blocking: Blocking::Threads,
            fault: None,
        })
    }

    /// Runs `work` with the connection on the blocking pool (or inline, see
    /// [`Blocking`]). A panic inside `work` is re-raised in the caller (it is
    /// a bug, not a store outage).
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store;
        if let Some(error) = self.fault.as_ref().and_then(|fault| fault()) {
            return Err(Error::Unavailable {
                store,
                message: format!("disk error: {error}"),
            });
        }
        let conn = Arc::clone(&self.conn);
        let joined = self
            .blocking
            .run(move || {
                // A panic while holding the lock has already rolled back any
                // open transaction (Transaction rolls back on drop), so the
                // connection is still consistent.
                let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                work(&mut conn)
            })
            .await;
        match joined {
            Ok(result) => result.map_err(|source| Error::Sqlite { store, source }),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Unavailable {
                store,
                message: format!("blocking task did not finish: {e}"),
            }),
        }
    }
}

/// Reads a text column holding a stable name (kind, metric, reason…).
/// An unknown name means the file was written by something else: it surfaces
/// as a conversion error naming the column.
pub(crate) fn named<T>(
    row: &Row<'_>,
    idx: usize,
    what: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            format!("unknown {what} {text:?}").into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sets_wal_synchronous_and_schema_version() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.sqlite");
        let db = SqliteDb::open(
            "test",
            &path,
            Synchronous::Full,
            "CREATE TABLE IF NOT EXISTS t (x INTEGER);",
            &[],
        )
        .expect("open");
        let conn = db.conn.lock().expect("lock");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("synchronous");
        assert_eq!(sync, 2);
        drop(conn);
        drop(db);

        // Reopening keeps a single version row.
        let db = SqliteDb::open("test", &path, Synchronous::Off, "", &[]).expect("reopen");
        let conn = db.conn.lock().expect("lock");
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM schema_version")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("versions");
        assert_eq!(versions, vec![SCHEMA_VERSION]);
    }

    const ADDED: &[AddedColumn] = &[AddedColumn {
        table: "t",
        column: "y",
        definition: "INTEGER NOT NULL DEFAULT 0",
    }];

    fn columns(db: &SqliteDb) -> Vec<String> {
        let conn = db.conn.lock().expect("lock");
        conn.prepare("SELECT name FROM pragma_table_info('t') ORDER BY cid")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("columns")
    }

    #[test]
    fn an_added_column_is_added_to_an_older_table_and_indexable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.sqlite");
        {
            let db = SqliteDb::open(
                "test",
                &path,
                Synchronous::Normal,
                "CREATE TABLE IF NOT EXISTS t (x INTEGER);",
                &[],
            )
            .expect("open as first shipped");
            let conn = db.conn.lock().expect("lock");
            conn.execute("INSERT INTO t (x) VALUES (7)", [])
                .expect("old row");
        }
        let schema = "CREATE TABLE IF NOT EXISTS t (x INTEGER, y INTEGER NOT NULL DEFAULT 0);
                      CREATE INDEX IF NOT EXISTS t_by_y ON t (y);";
        let db = SqliteDb::open("test", &path, Synchronous::Normal, schema, ADDED)
            .expect("open with the added column");
        assert_eq!(columns(&db), vec!["x", "y"]);
        {
            let conn = db.conn.lock().expect("lock");
            let old: (i64, i64) = conn
                .query_row("SELECT x, y FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("old row");
            assert_eq!(old, (7, 0), "the old row gets the default");
        }
        drop(db);

        // Reopening adds nothing twice; a fresh file gets the column from
        // the schema itself.
        let db = SqliteDb::open("test", &path, Synchronous::Normal, schema, ADDED).expect("reopen");
        assert_eq!(columns(&db), vec!["x", "y"]);
        let fresh = SqliteDb::open(
            "test",
            &dir.path().join("fresh.sqlite"),
            Synchronous::Normal,
            schema,
            ADDED,
        )
        .expect("fresh");
        assert_eq!(columns(&fresh), vec!["x", "y"]);
    }

    #[test]
    fn newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.sqlite");
        {
            let db = SqliteDb::open("test", &path, Synchronous::Normal, "", &[]).expect("open");
            let conn = db.conn.lock().expect("lock");
            conn.execute("UPDATE schema_version SET version = 99", [])
                .expect("bump");
        }
        let err = SqliteDb::open("test", &path, Synchronous::Normal, "", &[])
            .err()
            .expect("refused");
        assert!(matches!(err, Error::Rejected { .. }), "{err}");
    }
}
