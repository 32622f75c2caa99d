//! The conformance suites run against the embedded backends (SQLite files
//! and local directories in a fresh temp dir per test), plus what only the
//! embedded backends promise: data survives reopening the files, and files
//! written before a column existed open and gain it.

mod conformance;

use std::path::Path;
use std::sync::Arc;

use vatio_stores::archive::{ParquetArchive, Side, sha256_hex};
use vatio_stores::embedded::{
    SqliteCheckpoints, SqliteDeadLetters, SqliteDocuments, SqliteStaging, SqliteTimeSeries,
    Synchronous, local_object_store,
};
use vatio_stores::{
    ArchiveStaging, Checkpoint, CheckpointStore, DeadLetterFilter, DeadLetterReason,
    DeadLetterStore, DeviceKind, DocumentStore, EventFilter, HOUR_MS, HourKey, Metric,
    TimeSeriesStore,
};

use conformance::archive::ArchiveUnderTest;
use conformance::{T0, dev, point, reading};

fn timeseries(dir: &Path) -> SqliteTimeSeries {
    SqliteTimeSeries::open(&dir.join("timeseries.sqlite"), Synchronous::Normal)
        .expect("open time series")
}

fn documents(dir: &Path) -> SqliteDocuments {
    SqliteDocuments::open(&dir.join("documents.sqlite"), Synchronous::Normal)
        .expect("open documents")
}

fn dead_letters(dir: &Path) -> SqliteDeadLetters {
    SqliteDeadLetters::open(&dir.join("dead_letters.sqlite"), Synchronous::Full)
        .expect("open dead letters")
}

fn checkpoints(dir: &Path) -> SqliteCheckpoints {
    SqliteCheckpoints::open(&dir.join("checkpoints.sqlite"), Synchronous::Full)
        .expect("open checkpoints")
}

fn staging(dir: &Path) -> SqliteStaging {
    SqliteStaging::open(&dir.join("staging.sqlite"), Synchronous::Off).expect("open staging")
}

fn archive(dir: &Path) -> ArchiveUnderTest {
    // The roots do not exist yet: opening creates them.
    let primary = local_object_store(&dir.join("az-a/archive")).expect("primary root");
    let replica = local_object_store(&dir.join("az-b/archive")).expect("replica root");
    ArchiveUnderTest {
        archive: ParquetArchive::new(Arc::clone(&primary), Arc::clone(&replica), "node-a1"),
        primary,
        replica,
    }
}

/// One tokio test per conformance check, each on a fresh backend.
macro_rules! conformance {
    ($suite:ident, $open:path: $($check:ident),+ $(,)?) => {
        mod $suite {
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let backend = $open(dir.path());
                    crate::conformance::$suite::$check(&backend).await;
                }
            )+
        }
    };
}

conformance!(timeseries, crate::timeseries:
    writing_a_point_twice_keeps_one_copy_with_the_new_values,
    a_points_log_position_reads_back_as_written,
    a_missing_point_is_none,
    an_empty_write_is_a_no_op,
    latest_is_the_last_value_of_each_series_newest_minute,
    series_merges_minutes_into_epoch_aligned_windows,
    a_zero_minute_window_is_refused,
    power_flow_sums_each_meters_mean_power_per_minute,
    max_minute_is_the_newest_stored_minute,
    minutes_lists_the_matching_points_and_merge_recomputes_the_answers,
);

conformance!(documents, crate::documents:
    upserting_a_minute_doc_replaces_it,
    a_minute_docs_log_position_reads_back_as_written,
    upserting_an_event_replaces_it,
    events_filter_and_come_newest_first,
    sweep_deletes_documents_and_events_before_the_cutoff,
    max_minute_is_the_newest_stored_document_minute,
);

conformance!(dead_letters, crate::dead_letters:
    every_field_reads_back_and_ids_follow_input_order,
    a_keyed_letter_is_stored_once,
    a_keyed_letter_delivered_after_its_replay_stays_replayed,
    unkeyed_letters_are_never_deduplicated,
    list_filters_by_reason_device_and_pending,
    a_replayed_letter_leaves_the_pending_set,
    a_replay_refused_again_records_the_new_reason,
    counts_group_every_letter_by_reason,
);

conformance!(checkpoints, crate::checkpoints:
    an_empty_store_has_no_checkpoint,
    a_saved_checkpoint_loads_back,
    a_later_save_upserts_only_changed_devices_and_moves_the_position,
    a_save_is_seen_whole,
    a_save_of_ten_thousand_devices_works,
);

conformance!(staging, crate::staging:
    staging_twice_keeps_one_row_per_device_and_seq,
    rows_go_to_the_hour_and_kind_of_their_time,
    an_hour_is_dirty_until_sealed_and_only_new_rows_dirty_it_again,
    sealing_fewer_rows_than_staged_keeps_the_hour_dirty,
    purge_forgets_hours_before_the_cutoff,
);

conformance!(archive, crate::archive:
    an_hour_round_trips_through_both_sides,
    rewriting_an_hour_writes_the_same_bytes_on_both_sides,
    a_damaged_replica_file_is_detected_as_corrupt,
    rows_outside_the_hour_are_refused,
    an_empty_hour_is_a_valid_file,
    two_writers_of_one_hour_keep_their_own_files,
    a_large_hour_goes_up_in_parts,
);

#[tokio::test]
async fn sqlite_stores_keep_their_data_across_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = point("m1", DeviceKind::ElectricityMeter, Metric::Power, 0, &[4.0]);
    let letter = vatio_stores::NewDeadLetter {
        reading: vatio_stores::RawReading {
            device_id: "c1".into(),
            seq: 1,
            ts_ms: T0,
            metric: "humidity".into(),
            value: 130.0,
            unit: "%".into(),
            kind: 1,
        },
        reason: DeadLetterReason::OutOfRange,
        detail: "humidity 130 % outside 0..=100".into(),
        source: "test".into(),
        received_ms: T0,
        key: Some("log:4096:0".into()),
    };
    let device_states = vec![(dev("c1"), vec![1, 2, 3]), (dev("m1"), vec![4])];
    let staged = reading(
        "c1",
        DeviceKind::ClimateSensor,
        1,
        T0,
        Metric::Temperature,
        21.0,
    );
    let event = vatio_stores::Event {
        device: dev("c1"),
        kind: DeviceKind::ClimateSensor,
        event_type: vatio_stores::EventType::OverTemperature,
        metric: Metric::Temperature,
        value: 41.0,
        threshold: 40.0,
        ts_ms: T0,
        seq: 1,
    };
    {
        timeseries(dir.path())
            .write_points(std::slice::from_ref(&p))
            .await
            .expect("write");
        documents(dir.path())
            .upsert_events(std::slice::from_ref(&event))
            .await
            .expect("event");
        dead_letters(dir.path())
            .insert(std::slice::from_ref(&letter))
            .await
            .expect("letter");
        staging(dir.path())
            .stage(std::slice::from_ref(&staged))
            .await
            .expect("stage");
        checkpoints(dir.path())
            .save(8192, &device_states)
            .await
            .expect("checkpoint");
    }

    let ts = timeseries(dir.path());
    assert_eq!(
        ts.point(&dev("m1"), Metric::Power, T0)
            .await
            .expect("point"),
        Some(p)
    );
    let events = documents(dir.path())
        .events(&EventFilter::default())
        .await
        .expect("events");
    assert_eq!(events, vec![event]);
    let letters = dead_letters(dir.path())
        .list(&DeadLetterFilter::default())
        .await
        .expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].letter, letter);
    assert!(
        dead_letters(dir.path())
            .insert(std::slice::from_ref(&letter))
            .await
            .expect("redeliver")
            .is_empty(),
        "the key still dedupes after reopening"
    );
    assert_eq!(
        checkpoints(dir.path()).load().await.expect("load"),
        Checkpoint {
            position: Some(8192),
            devices: device_states,
        }
    );
    let staging = staging(dir.path());
    let hour = HourKey {
        kind: DeviceKind::ClimateSensor,
        hour_ms: T0,
    };
    assert_eq!(staging.dirty_hours().await.expect("dirty"), vec![hour]);
    assert_eq!(staging.hour_rows(hour).await.expect("rows"), vec![staged]);
}

#[tokio::test]
async fn stores_opened_twice_in_one_process_share_the_file() {
    // A CLI or a second handle may open the same file: WAL lets readers and
    // the busy timeout lets writers wait instead of failing.
    let dir = tempfile::tempdir().expect("temp dir");
    let a = timeseries(dir.path());
    let b = timeseries(dir.path());
    let p = point("m1", DeviceKind::ElectricityMeter, Metric::Power, 0, &[1.0]);
    a.write_points(std::slice::from_ref(&p))
        .await
        .expect("write through a");
    assert_eq!(
        b.point(&dev("m1"), Metric::Power, T0)
            .await
            .expect("read through b"),
        Some(p)
    );
}

#[tokio::test]
async fn archive_files_land_under_each_azs_root() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = archive(dir.path());
    let hour = HourKey {
        kind: DeviceKind::ElectricityMeter,
        hour_ms: T0 + 23 * HOUR_MS,
    };
    let rows = vec![reading(
        "m1",
        DeviceKind::ElectricityMeter,
        1,
        hour.hour_ms + 5,
        Metric::Energy,
        1234.5,
    )];
    let manifest = t.archive.write_hour(hour, &rows).await.expect("write hour");
    for root in ["az-a/archive", "az-b/archive"] {
        let hour_dir = dir
            .path()
            .join(root)
            .join("readings/kind=electricity_meter/date=2026-01-01/hour=23");
        let file = std::fs::read(hour_dir.join("part-node-a1.parquet")).expect("parquet file");
        assert_eq!(sha256_hex(&file), manifest.sha256);
        assert!(hour_dir.join("manifest-node-a1.json").is_file());
    }
    assert_eq!(
        t.archive
            .read_hour(Side::Replica, hour)
            .await
            .expect("read"),
        rows
    );
}

/// The tables as the first embedded build created them, before minute
/// windows kept their log position and dead letters their key.
const TABLES_BEFORE_LOG_POSITIONS: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
CREATE TABLE minute_points (
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
    PRIMARY KEY (device, metric, minute_ms)
) WITHOUT ROWID;
CREATE TABLE minute_docs (
    id        TEXT    NOT NULL PRIMARY KEY,
    device    TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    minute_ms INTEGER NOT NULL,
    body      TEXT    NOT NULL
);
CREATE TABLE dead_letters (
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
    replay_attempts INTEGER NOT NULL DEFAULT 0
);
";

#[tokio::test]
async fn files_from_before_log_positions_open_and_gain_the_new_columns() {
    let dir = tempfile::tempdir().expect("temp dir");
    // One old row in each table, written the old way.
    for file in [
        "timeseries.sqlite",
        "documents.sqlite",
        "dead_letters.sqlite",
    ] {
        let conn = rusqlite::Connection::open(dir.path().join(file)).expect("old file");
        conn.execute_batch(TABLES_BEFORE_LOG_POSITIONS)
            .expect("old tables");
        conn.execute_batch(&format!(
            "INSERT INTO minute_points VALUES ('m1', 'power', {T0}, 'electricity_meter',
                 1, 4.0, 4.0, 4.0, 4.0, {T0}, 1);
             INSERT INTO minute_docs VALUES ('c1/{T0}', 'c1', 'climate_sensor', {T0}, '{{}}');
             INSERT INTO dead_letters
                 (device_id, seq, ts_ms, metric, value, unit, kind, reason, detail, source,
                  received_ms)
             VALUES ('c1', 1, {T0}, 'humidity', 130.0, '%', 1, 'out_of_range', 'old', 'test',
                     {T0});"
        ))
        .expect("old rows");
    }

    // Old rows read back with an unknown position (0) and no key.
    let ts = timeseries(dir.path());
    let old_point = ts
        .point(&dev("m1"), Metric::Power, T0)
        .await
        .expect("point")
        .expect("old point");
    assert_eq!(old_point.log_pos, 0);
    assert_eq!(old_point.stats.count, 1);
    let docs = documents(dir.path());
    let old_doc = docs
        .minute_doc(&dev("c1"), T0)
        .await
        .expect("doc")
        .expect("old doc");
    assert_eq!(old_doc.log_pos, 0);
    let letters = dead_letters(dir.path());
    let old_letters = letters
        .list(&DeadLetterFilter::default())
        .await
        .expect("list");
    assert_eq!(old_letters.len(), 1);
    assert_eq!(old_letters[0].letter.key, None);

    // New writes keep the new fields.
    let p = point(
        "m1",
        DeviceKind::ElectricityMeter,
        Metric::Power,
        0,
        &[4.0, 6.0],
    );
    assert_ne!(p.log_pos, 0);
    ts.write_points(std::slice::from_ref(&p))
        .await
        .expect("write");
    assert_eq!(
        ts.point(&dev("m1"), Metric::Power, T0)
            .await
            .expect("point"),
        Some(p)
    );
    let mut doc = old_doc;
    doc.log_pos = 640;
    docs.upsert_minute_docs(std::slice::from_ref(&doc))
        .await
        .expect("upsert");
    assert_eq!(
        docs.minute_doc(&dev("c1"), T0).await.expect("doc"),
        Some(doc)
    );
    let mut keyed = old_letters[0].letter.clone();
    keyed.key = Some("log:640:0".into());
    let ids = letters
        .insert(&[keyed.clone(), keyed])
        .await
        .expect("insert");
    assert_eq!(ids.len(), 1, "the key is unique in the upgraded table");
    assert_eq!(
        letters
            .list(&DeadLetterFilter::default())
            .await
            .expect("list")
            .len(),
        2
    );
}
