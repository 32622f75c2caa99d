//! [`ParquetArchive`] conformance over a pair of object stores: an hour
//! round-trips through both sides, a re-run writes the very same bytes, and
//! a file that no longer matches its manifest is caught as corrupt.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use vatio_stores::archive::{self, Manifest, ParquetArchive, SCHEMA_VERSION, Side};
use vatio_stores::{DeviceKind, Error, HOUR_MS, HourKey, Metric, Reading};

use super::{T0, reading};

/// An archive plus direct access to the two buckets it writes, to look at
/// the raw files and to damage them.
pub struct ArchiveUnderTest {
    pub archive: ParquetArchive,
    pub primary: Arc<dyn ObjectStore>,
    pub replica: Arc<dyn ObjectStore>,
}

impl ArchiveUnderTest {
    fn bucket(&self, side: Side) -> &Arc<dyn ObjectStore> {
        match side {
            Side::Primary => &self.primary,
            Side::Replica => &self.replica,
        }
    }
}

const HOUR: HourKey = HourKey {
    kind: DeviceKind::RobotArm,
    hour_ms: T0 + 13 * HOUR_MS,
};

/// Rows of [`HOUR`], in `(device, seq)` order, several metrics.
fn rows() -> Vec<Reading> {
    let metrics = [
        Metric::Vibration,
        Metric::Torque,
        Metric::MotorTemperature,
        Metric::Power,
    ];
    let mut rows = Vec::new();
    for device in ["arm-01", "arm-02", "arm-10"] {
        for seq in 1..=40_u64 {
            rows.push(reading(
                device,
                DeviceKind::RobotArm,
                seq,
                HOUR.hour_ms + seq as i64 * 60_000 + 17,
                metrics[seq as usize % metrics.len()],
                seq as f64 * 1.25 - 3.0,
            ));
        }
    }
    rows
}

/// The same rows in another order.
fn shuffled(rows: &[Reading]) -> Vec<Reading> {
    let mut out: Vec<Reading> = rows.iter().rev().cloned().collect();
    out.rotate_left(17);
    out
}

pub async fn an_hour_round_trips_through_both_sides(t: &ArchiveUnderTest) {
    let rows = rows();
    let manifest = t
        .archive
        .write_hour(HOUR, &shuffled(&rows))
        .await
        .expect("write hour");

    let encoded = archive::encode(&rows).expect("encode");
    assert_eq!(
        manifest,
        Manifest {
            path: t.archive.path_of(HOUR).to_string(),
            kind: HOUR.kind,
            hour_ms: HOUR.hour_ms,
            rows: rows.len() as u64,
            bytes: encoded.len() as u64,
            sha256: archive::sha256_hex(&encoded),
            schema_version: SCHEMA_VERSION,
            source: t.archive.writer().to_owned(),
        }
    );
    for side in Side::BOTH {
        assert_eq!(
            t.archive.read_hour(side, HOUR).await.expect("read hour"),
            rows,
            "{side:?} rows, in (device, seq) order"
        );
        assert_eq!(
            t.archive.read_manifest(side, HOUR).await.expect("manifest"),
            manifest
        );
        assert_eq!(
            t.archive.verify(side, HOUR).await.expect("verify"),
            manifest
        );
    }

    // The manifest is plain JSON with the documented field names.
    let raw = t
        .replica
        .get(&t.archive.manifest_path_of(HOUR))
        .await
        .expect("get manifest")
        .bytes()
        .await
        .expect("manifest bytes");
    let json: serde_json::Value = serde_json::from_slice(&raw).expect("manifest is JSON");
    assert_eq!(
        json["path"],
        format!(
            "readings/kind=robot_arm/date=2026-01-01/hour=13/part-{}.parquet",
            t.archive.writer()
        )
    );
    assert_eq!(json["kind"], "robot_arm");
    assert_eq!(json["hour_ms"], HOUR.hour_ms);
    assert_eq!(json["rows"], 120);
    assert_eq!(json["bytes"], encoded.len() as u64);
    assert_eq!(json["sha256"], archive::sha256_hex(&encoded));
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["source"], t.archive.writer());
}

pub async fn rewriting_an_hour_writes_the_same_bytes_on_both_sides(t: &ArchiveUnderTest) {
    let rows = rows();
    let first = t.archive.write_hour(HOUR, &rows).await.expect("write hour");
    let primary_first = raw_file(t, Side::Primary).await;
    let second = t
        .archive
        .write_hour(HOUR, &shuffled(&rows))
        .await
        .expect("rewrite hour");

    assert_eq!(first.sha256, second.sha256);
    assert_eq!(first.bytes, second.bytes);
    let primary = raw_file(t, Side::Primary).await;
    let replica = raw_file(t, Side::Replica).await;
    assert_eq!(primary, primary_first, "a re-run rewrites the same bytes");
    assert_eq!(primary, replica, "both AZs hold the same bytes");
    assert_eq!(archive::sha256_hex(&replica), second.sha256);
    assert_eq!(primary, archive::encode(&rows).expect("encode"));
}

/// Two nodes that both sequenced part of an hour (a failover in the middle
/// of it) each archive their share in their own file on the same buckets:
/// neither overwrites the other.
pub async fn two_writers_of_one_hour_keep_their_own_files(t: &ArchiveUnderTest) {
    let rows = rows();
    let (first_half, second_half) = rows.split_at(rows.len() / 2);
    let other = ParquetArchive::new(t.primary.clone(), t.replica.clone(), "node-b1");
    assert_ne!(other.writer(), t.archive.writer());
    let mine = t
        .archive
        .write_hour(HOUR, first_half)
        .await
        .expect("write share");
    let theirs = other
        .write_hour(HOUR, second_half)
        .await
        .expect("write other share");
    assert_ne!(mine.path, theirs.path);
    for side in Side::BOTH {
        assert_eq!(
            t.archive.read_hour(side, HOUR).await.expect("read"),
            first_half
        );
        assert_eq!(
            other.read_hour(side, HOUR).await.expect("read"),
            second_half
        );
        assert_eq!(t.archive.verify(side, HOUR).await.expect("verify"), mine);
        assert_eq!(other.verify(side, HOUR).await.expect("verify"), theirs);
    }
}

/// A file above the multipart threshold goes up in parts and reads back
/// byte for byte like a single put.
pub async fn a_large_hour_goes_up_in_parts(t: &ArchiveUnderTest) {
    let rows = rows();
    let in_parts = t.archive.clone().with_multipart_threshold(1);
    let manifest = in_parts
        .write_hour(HOUR, &rows)
        .await
        .expect("write in parts");
    assert_eq!(
        manifest.sha256,
        archive::sha256_hex(&archive::encode(&rows).expect("encode"))
    );
    for side in Side::BOTH {
        assert_eq!(in_parts.verify(side, HOUR).await.expect("verify"), manifest);
        assert_eq!(in_parts.read_hour(side, HOUR).await.expect("read"), rows);
    }
}

/// The raw Parquet file of `HOUR` on one side.
async fn raw_file(t: &ArchiveUnderTest, side: Side) -> Bytes {
    t.bucket(side)
        .get(&t.archive.path_of(HOUR))
        .await
        .expect("get file")
        .bytes()
        .await
        .expect("file bytes")
}

pub async fn a_damaged_replica_file_is_detected_as_corrupt(t: &ArchiveUnderTest) {
    let rows = rows();
    t.archive.write_hour(HOUR, &rows).await.expect("write hour");
    let path = t.archive.path_of(HOUR);
    let good = raw_file(t, Side::Replica).await;

    // One flipped bit, same size.
    let mut flipped = good.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    t.replica
        .put(&path, PutPayload::from(flipped))
        .await
        .expect("damage replica");
    let err = t
        .archive
        .verify(Side::Replica, HOUR)
        .await
        .expect_err("flipped bit detected");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    t.archive
        .verify(Side::Primary, HOUR)
        .await
        .expect("primary is intact");

    // Truncated.
    t.replica
        .put(&path, PutPayload::from(good.slice(..good.len() - 10)))
        .await
        .expect("truncate replica");
    let err = t
        .archive
        .verify(Side::Replica, HOUR)
        .await
        .expect_err("truncation detected");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");

    // Re-running the hour repairs the replica.
    t.archive
        .write_hour(HOUR, &rows)
        .await
        .expect("rewrite hour");
    t.archive
        .verify(Side::Replica, HOUR)
        .await
        .expect("replica repaired");
    assert_eq!(raw_file(t, Side::Replica).await, good);
}

pub async fn rows_outside_the_hour_are_refused(t: &ArchiveUnderTest) {
    let mut late = rows();
    late[5].ts_ms = HOUR.hour_ms + HOUR_MS;
    let err = t
        .archive
        .write_hour(HOUR, &late)
        .await
        .expect_err("row of the next hour");
    assert!(matches!(err, Error::Rejected { .. }), "{err}");

    let mut other_kind = rows();
    other_kind[0].kind = DeviceKind::ClimateSensor;
    let err = t
        .archive
        .write_hour(HOUR, &other_kind)
        .await
        .expect_err("row of another kind");
    assert!(matches!(err, Error::Rejected { .. }), "{err}");

    let unaligned = HourKey {
        kind: HOUR.kind,
        hour_ms: HOUR.hour_ms + 1,
    };
    let err = t
        .archive
        .write_hour(unaligned, &[])
        .await
        .expect_err("unaligned hour");
    assert!(matches!(err, Error::Rejected { .. }), "{err}");

    // Nothing was written.
    let err = t
        .archive
        .read_manifest(Side::Primary, HOUR)
        .await
        .expect_err("no manifest");
    assert!(matches!(err, Error::Object(_)), "{err}");
}

pub async fn an_empty_hour_is_a_valid_file(t: &ArchiveUnderTest) {
    let manifest = t
        .archive
        .write_hour(HOUR, &[])
        .await
        .expect("write empty hour");
    assert_eq!(manifest.rows, 0);
    for side in Side::BOTH {
        assert!(
            t.archive
                .read_hour(side, HOUR)
                .await
                .expect("read")
                .is_empty()
        );
    }
}
