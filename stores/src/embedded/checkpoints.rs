//! Embedded device-state checkpoint: every device's encoded sequencing state
//! and the log position it was taken at, in one SQLite file.
//!
//! A save upserts only the devices that changed since the last one and moves
//! the position in the same transaction, so a load always sees states and
//! position from one save: a restarted node replays the log after that
//! position onto those states and ends where it stopped.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::Synchronous;
use super::sqlite::SqliteDb;
use crate::{Checkpoint, CheckpointStore, DeviceId, Error, Result};

const STORE: &str = "embedded checkpoints";

const SCHEMA: &str = "
-- The log position of the last save; no row until the first save.
CREATE TABLE IF NOT EXISTS checkpoint_position (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);

-- One row per device ever saved; the state is opaque to the store.
CREATE TABLE IF NOT EXISTS device_states (
    device TEXT NOT NULL PRIMARY KEY,
    state  BLOB NOT NULL
);
";

const UPSERT_STATE: &str = "
INSERT INTO device_states (device, state) VALUES (?1, ?2)
ON CONFLICT (device) DO UPDATE SET state = excluded.state
";

const SET_POSITION: &str = "
INSERT INTO checkpoint_position (id, position) VALUES (1, ?1)
ON CONFLICT (id) DO UPDATE SET position = excluded.position
";

/// [`CheckpointStore`] in a SQLite file.
#[derive(Clone)]
pub struct SqliteCheckpoints {
    db: SqliteDb,
}

impl SqliteCheckpoints {
    /// Opens or creates the store's database at `path`.
    ///
    /// If the log is truncated behind the checkpoint, open it with
    /// [`Synchronous::Full`]: under `Normal` a power loss may undo the last
    /// saves, leaving a position whose log records are already gone.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self> {
        Ok(Self {
            db: SqliteDb::open(STORE, path, sync, SCHEMA, &[])?,
        })
    }
}

super::sqlite::store_options!(SqliteCheckpoints);

#[async_trait]
impl CheckpointStore for SqliteCheckpoints {
    async fn load(&self) -> Result<Checkpoint> {
        self.db
            .run(|conn| {
                // One read transaction: position and states of the same save
                // even if another handle on the file saves meanwhile.
                let tx = conn.transaction()?;
                let position: Option<u64> = tx
                    .query_row(
                        "SELECT position FROM checkpoint_position WHERE id = 1",
                        [],
                        |row| row.get(0),
                    )
                    .optional()?;
                let devices = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT device, state FROM device_states ORDER BY device",
                    )?;
                    let rows = stmt.query_map([], |row| {
                        Ok((DeviceId::new(row.get::<_, String>(0)?), row.get(1)?))
                    })?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                };
                tx.commit()?;
                Ok(Checkpoint { position, devices })
            })
            .await
    }

    async fn save(&self, position: u64, changed: &[(DeviceId, Vec<u8>)]) -> Result<()> {
        let position = i64::try_from(position).map_err(|_| Error::Rejected {
            store: STORE,
            message: format!("log position {position} is beyond {}", i64::MAX),
        })?;
        let changed = changed.to_vec();
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                {
                    let mut upsert = tx.prepare_cached(UPSERT_STATE)?;
                    for (device, state) in &changed {
                        upsert.execute(params![device.as_str(), state])?;
                    }
                }
                tx.prepare_cached(SET_POSITION)?.execute([position])?;
                // Dropped without commit on any error above: nothing changes.
                tx.commit()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    fn dev(id: &str) -> DeviceId {
        DeviceId::new(id)
    }

    #[tokio::test]
    async fn a_save_that_fails_midway_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("checkpoints.sqlite");
        let store = SqliteCheckpoints::open(&path, Synchronous::Normal).expect("open");
        store
            .save(100, &[(dev("d1"), vec![1])])
            .await
            .expect("first save");
        let before = store.load().await.expect("load");

        // A second handle on the file makes the write of one device fail,
        // after another device of the same save was already written.
        let other = Connection::open(&path).expect("second handle");
        other
            .execute_batch(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON device_states
                 WHEN NEW.device = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .expect("trigger");
        let failed = store
            .save(
                200,
                &[
                    (dev("d1"), vec![2]),
                    (dev("d2"), vec![2]),
                    (dev("poison"), vec![2]),
                ],
            )
            .await;
        assert!(failed.is_err(), "the injected failure surfaces");
        assert_eq!(store.load().await.expect("load"), before);
    }

    #[tokio::test]
    async fn a_position_beyond_the_column_range_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteCheckpoints::open(&dir.path().join("c.sqlite"), Synchronous::Normal)
            .expect("open");
        let too_far = u64::try_from(i64::MAX).expect("fits") + 1;
        let err = store
            .save(too_far, &[(dev("d1"), vec![1])])
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::Rejected { .. }), "{err}");
        assert_eq!(store.load().await.expect("load"), Checkpoint::default());
    }
}
