//! The archive's file format, independent of where files are stored: the
//! path layout, the pinned writer settings that make encoding deterministic,
//! and a decoder that refuses what `encode` would never write.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use vatio_stores::archive::{self, SCHEMA_VERSION};
use vatio_stores::{DeviceId, DeviceKind, Error, HOUR_MS, HourKey, Metric, Reading};

/// 2026-03-09T07:00:00Z.
const HOUR_MS_0709: i64 = 1_773_039_600_000;

fn rows() -> Vec<Reading> {
    (0..500_u64)
        .map(|i| Reading {
            device: DeviceId::new(format!("sensor-{:03}", i % 7)),
            kind: DeviceKind::ClimateSensor,
            seq: i / 7 + 1,
            ts_ms: HOUR_MS_0709 + i as i64 * 7_000,
            metric: if i % 2 == 0 {
                Metric::Temperature
            } else {
                Metric::Humidity
            },
            value: (i % 41) as f64 * 0.25 + 15.0,
        })
        .collect()
}

fn sorted(mut rows: Vec<Reading>) -> Vec<Reading> {
    rows.sort_by(|a, b| (&a.device, a.seq).cmp(&(&b.device, b.seq)));
    rows
}

#[test]
fn hour_paths_are_by_kind_utc_date_and_hour_and_name_the_writer() {
    let hour = HourKey {
        kind: DeviceKind::ClimateSensor,
        hour_ms: HOUR_MS_0709,
    };
    assert_eq!(
        archive::hour_path(hour, "node-a1").as_ref(),
        "readings/kind=climate_sensor/date=2026-03-09/hour=07/part-node-a1.parquet"
    );
    assert_eq!(
        archive::manifest_path(hour, "node-a1").as_ref(),
        "readings/kind=climate_sensor/date=2026-03-09/hour=07/manifest-node-a1.json"
    );
    let midnight = HourKey {
        kind: DeviceKind::RobotArm,
        hour_ms: HOUR_MS_0709 - 7 * HOUR_MS,
    };
    assert_eq!(
        archive::hour_path(midnight, "b2").as_ref(),
        "readings/kind=robot_arm/date=2026-03-09/hour=00/part-b2.parquet"
    );
}

#[test]
fn encoding_is_deterministic_and_canonical_in_row_order() {
    let rows = rows();
    let once = archive::encode(&rows).expect("encode");
    let twice = archive::encode(&rows).expect("encode again");
    assert_eq!(once, twice);
    let mut reversed = rows.clone();
    reversed.reverse();
    assert_eq!(archive::encode(&reversed).expect("encode reversed"), once);
    assert_eq!(archive::decode(once).expect("decode"), sorted(rows));
}

#[test]
fn files_carry_the_pinned_settings_and_schema() {
    let bytes = archive::encode(&rows()).expect("encode");
    let reader = SerializedFileReader::new(bytes).expect("parquet footer");
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().created_by(), Some("vatio"));
    assert_eq!(meta.file_metadata().num_rows(), 500);
    for rg in meta.row_groups() {
        for col in rg.columns() {
            assert_eq!(col.compression(), Compression::SNAPPY);
        }
    }

    let schema = archive::schema();
    let columns: Vec<(&str, &DataType, bool)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type(), f.is_nullable()))
        .collect();
    assert_eq!(
        columns,
        vec![
            ("device_id", &DataType::Utf8, false),
            ("kind", &DataType::Utf8, false),
            ("seq", &DataType::UInt64, false),
            (
                "ts",
                &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false
            ),
            ("metric", &DataType::Utf8, false),
            ("value", &DataType::Float64, false),
            ("unit", &DataType::Utf8, false),
        ]
    );
    assert_eq!(SCHEMA_VERSION, 1);
}

#[test]
fn units_are_the_canonical_ones() {
    let rows = rows();
    let bytes = archive::encode(&rows[..2]).expect("encode");
    let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("reader")
        .build()
        .expect("build")
        .next()
        .expect("one batch")
        .expect("batch");
    let units = batch
        .column_by_name("unit")
        .expect("unit column")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    assert_eq!(units.value(0), "C");
    assert_eq!(units.value(1), "%");
}

/// A one-row file in the archive's schema with the given unit.
fn file_with_unit(unit: &str) -> Bytes {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["c1"])),
        Arc::new(StringArray::from(vec!["climate_sensor"])),
        Arc::new(UInt64Array::from(vec![1_u64])),
        Arc::new(TimestampMillisecondArray::from(vec![HOUR_MS_0709]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec!["temperature"])),
        Arc::new(Float64Array::from(vec![68.0])),
        Arc::new(StringArray::from(vec![unit])),
    ];
    let batch = RecordBatch::try_new(archive::schema(), columns).expect("batch");
    let mut writer = ArrowWriter::try_new(Vec::new(), archive::schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    Bytes::from(writer.into_inner().expect("finish"))
}

#[test]
fn decode_refuses_what_encode_never_writes() {
    assert_eq!(
        archive::decode(file_with_unit("C")).expect("canonical unit"),
        vec![Reading {
            device: DeviceId::new("c1"),
            kind: DeviceKind::ClimateSensor,
            seq: 1,
            ts_ms: HOUR_MS_0709,
            metric: Metric::Temperature,
            value: 68.0,
        }]
    );
    let err = archive::decode(file_with_unit("F")).expect_err("Fahrenheit");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");

    let err = archive::decode(Bytes::from_static(b"not a parquet file")).expect_err("garbage");
    assert!(matches!(err, Error::Parquet(_)), "{err}");
}

/// The bytes of a fixed hour, pinned. A change here means a re-run of an
/// already archived hour would no longer reproduce its file (a dependency
/// upgrade or a writer setting changed): bump `SCHEMA_VERSION` or accept it
/// knowingly, then update the hash.
#[test]
fn encoding_of_a_fixed_hour_is_pinned() {
    let bytes = archive::encode(&rows()).expect("encode");
    assert_eq!(
        archive::sha256_hex(&bytes),
        "54a417b56dfd74ef44bd598dddea21d6914a041beddc384ac4005fef1cf3c2fe"
    );
}
