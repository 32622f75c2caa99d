//! The archive conformance suite on S3: moto's S3 server, one bucket per
//! side and test on one server per test process, through `object_store`'s
//! AWS backend as a node opens it; plus the two sides on two endpoints (two
//! AZs, two services) and a bucket that does not exist.

mod conformance;

use std::sync::Arc;

use vatio_config::S3Config;
use vatio_stores::archive::{ParquetArchive, Side};
use vatio_stores::s3::s3_object_store;
use vatio_stores::{DeviceKind, HOUR_MS, HourKey, Metric};
use vatio_test_servers::{Kind, Server, create_bucket, s3, shared, unique_name};

use conformance::archive::ArchiveUnderTest;
use conformance::{T0, reading};

fn s3_config(server: &Server) -> S3Config {
    S3Config {
        endpoint: server.url(),
        region: s3::REGION.into(),
        access_key_id: s3::ACCESS_KEY_ID.into(),
        secret_access_key: s3::SECRET_ACCESS_KEY.into(),
        allow_http: true,
        ..S3Config::default()
    }
}

/// A fresh bucket on `server`, under a prefix like a node's archive root.
fn side(server: &Server) -> Arc<dyn object_store::ObjectStore> {
    let bucket = unique_name("vatio");
    create_bucket(&server.url(), &bucket).expect("create bucket");
    s3_object_store(&bucket, "bronze/readings-archive", &s3_config(server)).expect("open bucket")
}

fn archive() -> ArchiveUnderTest {
    let server = shared(Kind::Moto);
    let (primary, replica) = (side(server), side(server));
    ArchiveUnderTest {
        archive: ParquetArchive::new(Arc::clone(&primary), Arc::clone(&replica), "node-a1"),
        primary,
        replica,
    }
}

macro_rules! conformance {
    ($($check:ident),+ $(,)?) => {
        mod archive {
            $(
                #[tokio::test]
                async fn $check() {
                    let t = crate::archive();
                    crate::conformance::archive::$check(&t).await;
                }
            )+
        }
    };
}

conformance!(
    an_hour_round_trips_through_both_sides,
    rewriting_an_hour_writes_the_same_bytes_on_both_sides,
    a_damaged_replica_file_is_detected_as_corrupt,
    rows_outside_the_hour_are_refused,
    an_empty_hour_is_a_valid_file,
    two_writers_of_one_hour_keep_their_own_files,
    a_large_hour_goes_up_in_parts,
);

fn hour_rows() -> (HourKey, Vec<vatio_stores::Reading>) {
    let hour = HourKey {
        kind: DeviceKind::ElectricityMeter,
        hour_ms: T0 + 5 * HOUR_MS,
    };
    let rows = (1..=50)
        .map(|seq| {
            let ts = hour.hour_ms + seq as i64 * 1000;
            reading(
                "m-7",
                DeviceKind::ElectricityMeter,
                seq,
                ts,
                Metric::Power,
                0.5 * seq as f64,
            )
        })
        .collect();
    (hour, rows)
}

#[tokio::test]
async fn the_two_sides_may_live_on_two_services() {
    let az_a = shared(Kind::Moto);
    let az_b = Server::start(Kind::Moto).expect("a second S3 service");
    let archive = ParquetArchive::new(side(az_a), side(&az_b), "node-a1");
    let (hour, rows) = hour_rows();
    let manifest = archive.write_hour(hour, &rows).await.expect("write hour");
    for side in Side::BOTH {
        assert_eq!(archive.verify(side, hour).await.expect("verify"), manifest);
        assert_eq!(archive.read_hour(side, hour).await.expect("read"), rows);
    }
}

#[tokio::test]
async fn a_missing_bucket_is_a_transient_error_that_names_it() {
    let server = shared(Kind::Moto);
    let missing = unique_name("absent");
    let primary = s3_object_store(&missing, "", &s3_config(server)).expect("open needs no server");
    let archive = ParquetArchive::new(primary, side(server), "node-a1");
    let (hour, rows) = hour_rows();
    let err = archive
        .write_hour(hour, &rows)
        .await
        .expect_err("no bucket");
    assert!(err.is_transient(), "the archiver retries it: {err}");
    assert!(
        err.to_string().contains(&missing),
        "names the bucket: {err}"
    );
}
