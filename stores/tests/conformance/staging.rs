//! [`ArchiveStaging`] conformance: staging is idempotent by `(device, seq)`,
//! an hour is dirty exactly while it holds rows no sealed file has, and
//! purging forgets old hours for good.

use vatio_stores::{ArchiveStaging, DeviceKind, HOUR_MS, HourKey, Metric, Reading};

use super::{T0, reading};

const CLIMATE: DeviceKind = DeviceKind::ClimateSensor;
const METER: DeviceKind = DeviceKind::ElectricityMeter;

fn hour(kind: DeviceKind, n: i64) -> HourKey {
    HourKey {
        kind,
        hour_ms: T0 + n * HOUR_MS,
    }
}

/// A climate reading `seq` of `device`, `offset_ms` into hour `n`.
fn climate(device: &str, seq: u64, n: i64, offset_ms: i64) -> Reading {
    reading(
        device,
        CLIMATE,
        seq,
        T0 + n * HOUR_MS + offset_ms,
        Metric::Temperature,
        20.0 + seq as f64 / 4.0,
    )
}

fn meter(device: &str, seq: u64, n: i64, offset_ms: i64) -> Reading {
    reading(
        device,
        METER,
        seq,
        T0 + n * HOUR_MS + offset_ms,
        Metric::Power,
        100.0 + seq as f64,
    )
}

pub async fn staging_twice_keeps_one_row_per_device_and_seq(store: &dyn ArchiveStaging) {
    let rows = vec![
        climate("c2", 1, 0, 5_000),
        climate("c1", 2, 0, 2_000),
        climate("c1", 1, 0, 1_000),
        climate("c10", 1, 0, 9_000),
    ];
    store.stage(&rows).await.expect("stage");
    store.stage(&rows).await.expect("stage again");
    // The same (device, seq) again with another value: the first one stays.
    let mut changed = rows[0].clone();
    changed.value = -1.0;
    store.stage(&[changed]).await.expect("stage a changed copy");
    store.stage(&[]).await.expect("empty stage");

    let stored = store.hour_rows(hour(CLIMATE, 0)).await.expect("rows");
    // Ordered by device (as text), then seq.
    assert_eq!(
        stored,
        vec![
            rows[2].clone(),
            rows[1].clone(),
            rows[3].clone(),
            rows[0].clone()
        ]
    );
    assert!(
        store
            .hour_rows(hour(METER, 0))
            .await
            .expect("rows")
            .is_empty()
    );
}

pub async fn rows_go_to_the_hour_and_kind_of_their_time(store: &dyn ArchiveStaging) {
    let rows = vec![
        climate("c1", 1, 0, HOUR_MS - 1),
        climate("c1", 2, 1, 0),
        meter("m1", 1, 0, 0),
    ];
    store.stage(&rows).await.expect("stage");
    assert_eq!(
        store.hour_rows(hour(CLIMATE, 0)).await.expect("rows"),
        vec![rows[0].clone()]
    );
    assert_eq!(
        store.hour_rows(hour(CLIMATE, 1)).await.expect("rows"),
        vec![rows[1].clone()]
    );
    assert_eq!(
        store.hour_rows(hour(METER, 0)).await.expect("rows"),
        vec![rows[2].clone()]
    );
}

pub async fn an_hour_is_dirty_until_sealed_and_only_new_rows_dirty_it_again(
    store: &dyn ArchiveStaging,
) {
    assert!(store.dirty_hours().await.expect("dirty").is_empty());
    store
        .stage(&[
            climate("c1", 3, 2, 0),
            meter("m1", 1, 0, 0),
            climate("c1", 1, 0, 0),
            climate("c1", 2, 0, 1_000),
        ])
        .await
        .expect("stage");
    // Oldest first.
    let dirty = store.dirty_hours().await.expect("dirty");
    assert_eq!(dirty.len(), 3);
    assert_eq!(dirty[2], hour(CLIMATE, 2));
    assert!(dirty[..2].contains(&hour(CLIMATE, 0)) && dirty[..2].contains(&hour(METER, 0)));

    let sealed_rows = store.hour_rows(hour(CLIMATE, 0)).await.expect("rows");
    store
        .mark_sealed(hour(CLIMATE, 0), sealed_rows.len() as u64)
        .await
        .expect("seal");
    assert_eq!(
        store.dirty_hours().await.expect("dirty"),
        vec![hour(METER, 0), hour(CLIMATE, 2)]
    );

    // Redelivered rows change nothing: the sealed file already has them.
    store
        .stage(&[climate("c1", 1, 0, 0), climate("c1", 2, 0, 1_000)])
        .await
        .expect("redeliver");
    assert!(
        !store
            .dirty_hours()
            .await
            .expect("dirty")
            .contains(&hour(CLIMATE, 0))
    );

    // A new row of the sealed hour makes it dirty again.
    store
        .stage(&[climate("c2", 1, 0, 30_000)])
        .await
        .expect("late row");
    assert!(
        store
            .dirty_hours()
            .await
            .expect("dirty")
            .contains(&hour(CLIMATE, 0))
    );
    assert_eq!(
        store.hour_rows(hour(CLIMATE, 0)).await.expect("rows").len(),
        3
    );
}

pub async fn sealing_fewer_rows_than_staged_keeps_the_hour_dirty(store: &dyn ArchiveStaging) {
    store
        .stage(&[climate("c1", 1, 0, 0), climate("c1", 2, 0, 1_000)])
        .await
        .expect("stage");
    let read = store.hour_rows(hour(CLIMATE, 0)).await.expect("rows");
    // A row arrives while the archiver writes the file it read before.
    store
        .stage(&[climate("c1", 3, 0, 2_000)])
        .await
        .expect("stage during sealing");
    store
        .mark_sealed(hour(CLIMATE, 0), read.len() as u64)
        .await
        .expect("seal");
    assert_eq!(
        store.dirty_hours().await.expect("dirty"),
        vec![hour(CLIMATE, 0)],
        "the row the file lacks must still be sealed"
    );
    store.mark_sealed(hour(CLIMATE, 0), 3).await.expect("seal");
    assert!(store.dirty_hours().await.expect("dirty").is_empty());
}

pub async fn purge_forgets_hours_before_the_cutoff(store: &dyn ArchiveStaging) {
    store
        .stage(&[
            climate("c1", 1, 0, 0),
            climate("c1", 2, 0, 1_000),
            meter("m1", 1, 1, 0),
            climate("c1", 3, 2, 0),
        ])
        .await
        .expect("stage");
    store.mark_sealed(hour(CLIMATE, 0), 2).await.expect("seal");

    let purged = store.purge_before(T0 + 2 * HOUR_MS).await.expect("purge");
    assert_eq!(purged, 3, "sealed or not");
    assert!(
        store
            .hour_rows(hour(CLIMATE, 0))
            .await
            .expect("rows")
            .is_empty()
    );
    assert!(
        store
            .hour_rows(hour(METER, 1))
            .await
            .expect("rows")
            .is_empty()
    );
    assert_eq!(
        store.dirty_hours().await.expect("dirty"),
        vec![hour(CLIMATE, 2)]
    );
    assert_eq!(
        store.hour_rows(hour(CLIMATE, 2)).await.expect("rows").len(),
        1
    );

    // A redelivered reading of a purged hour must not bring the hour back:
    // sealing it from that row alone would overwrite the complete file.
    store
        .stage(&[climate("c1", 1, 0, 0)])
        .await
        .expect("redeliver");
    assert_eq!(
        store.dirty_hours().await.expect("dirty"),
        vec![hour(CLIMATE, 2)]
    );
    assert_eq!(store.purge_before(T0).await.expect("purge older"), 0);
}
