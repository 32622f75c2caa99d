//! The conformance suites run against the embedded backends (SQLite files
//! and local directories in a fresh temp dir per test), plus what only the
//! embedded backends promise: data survives reopening the files.

mod conformance;

use std::path::Path;
use std::sync::Arc;

use vatio_stores::archive::{ParquetArchive, Side, sha256_hex};
use vatio_stores::embedded::{
    SqliteDeadLetters, SqliteDocuments, SqliteStaging, SqliteTimeSeries, Synchronous,
    local_object_store,
};
use vatio_stores::{
    ArchiveStaging, DeadLetterFilter, DeadLetterReason, DeadLetterStore, DeviceKind, DocumentStore,
    EventFilter, HOUR_MS, HourKey, Metric, TimeSeriesStore,
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

fn staging(dir: &Path) -> SqliteStaging {
    SqliteStaging::open(&dir.join("staging.sqlite"), Synchronous::Off).expect("open staging")
}

fn archive(dir: &Path) -> ArchiveUnderTest {
    // The roots do not exist yet: opening creates them.
    let primary = local_object_store(&dir.join("az-a/archive")).expect("primary root");
    let replica = local_object_store(&dir.join("az-b/archive")).expect("replica root");
    ArchiveUnderTest {
        archive: ParquetArchive::new(Arc::clone(&primary), Arc::clone(&replica)),
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
    a_missing_point_is_none,
    an_empty_write_is_a_no_op,
    latest_is_the_last_value_of_each_series_newest_minute,
    series_merges_minutes_into_epoch_aligned_windows,
    a_zero_minute_window_is_refused,
    power_flow_sums_each_meters_mean_power_per_minute,
    max_minute_is_the_newest_stored_minute,
);

conformance!(documents, crate::documents:
    upserting_a_minute_doc_replaces_it,
    upserting_an_event_replaces_it,
    events_filter_and_come_newest_first,
    sweep_deletes_documents_and_events_before_the_cutoff,
    max_minute_is_the_newest_stored_document_minute,
);

conformance!(dead_letters, crate::dead_letters:
    every_field_reads_back_and_ids_follow_input_order,
    list_filters_by_reason_device_and_pending,
    a_replayed_letter_leaves_the_pending_set,
    a_replay_refused_again_records_the_new_reason,
    counts_group_every_letter_by_reason,
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
    };
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
    let manifest = t
        .archive
        .write_hour(hour, &rows, "test")
        .await
        .expect("write hour");
    for root in ["az-a/archive", "az-b/archive"] {
        let hour_dir = dir
            .path()
            .join(root)
            .join("readings/kind=electricity_meter/date=2026-01-01/hour=23");
        let file = std::fs::read(hour_dir.join("part-00000.parquet")).expect("parquet file");
        assert_eq!(sha256_hex(&file), manifest.sha256);
        assert!(hour_dir.join("manifest.json").is_file());
    }
    assert_eq!(
        t.archive
            .read_hour(Side::Replica, hour)
            .await
            .expect("read"),
        rows
    );
}
