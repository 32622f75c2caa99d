//! Hourly Parquet archive in two object stores (one per AZ), with manifests.
//!
//! One node's share of one hour of one device kind is one file at a
//! deterministic path named after the node (`part-{node}.parquet`), written
//! from every row of that hour the node staged, with fixed writer settings,
//! so a re-run writes the very same bytes. Two nodes that both sequenced
//! part of an hour (a failover in the middle of it) each write their own
//! file, so on a shared bucket neither clobbers the other. A
//! `manifest-{node}.json` beside each file records
//! what the file must be (rows, size, SHA-256, schema version, source); it is
//! written after the file, so a manifest always describes a complete file,
//! and both sides are read back and checked against it before an hour
//! counts as archived.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::{WriterProperties, WriterVersion};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{DeviceId, DeviceKind, Error, HourKey, Metric, Reading, Result, UnixMs, hour_of};

/// Version of the Parquet table schema written by [`encode`].
pub const SCHEMA_VERSION: u32 = 1;

const STORE: &str = "parquet archive";

/// Written into every file's footer instead of the library's version, so a
/// parquet upgrade alone does not change the bytes of a re-run.
const CREATED_BY: &str = "vatio";

/// Rows per row group and per record batch. Fixed, because row-group
/// boundaries are part of the file's bytes.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Files larger than this go up in parts (S3 takes at most 5 GiB in one
/// put, and a part that fails is retried alone).
pub const MULTIPART_THRESHOLD_BYTES: usize = 16 << 20;

/// Size of each part of a multipart upload but the last (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;

/// Parts of one file uploaded at once.
const PARTS_IN_FLIGHT_MAX: usize = 4;

/// Which AZ's object store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Primary,
    Replica,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Primary, Side::Replica];

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Primary => "primary",
            Side::Replica => "replica",
        }
    }
}

/// What an archived hour file must be; stored as `manifest.json` beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The Parquet file's object path.
    pub path: String,
    pub kind: DeviceKind,
    pub hour_ms: UnixMs,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the Parquet file, lowercase hex.
    pub sha256: String,
    pub schema_version: u32,
    /// Who wrote the hour: the node whose share of it the file holds.
    pub source: String,
}

/// The hourly archive over a primary and a replica object store.
#[derive(Clone, Debug)]
pub struct ParquetArchive {
    primary: Arc<dyn ObjectStore>,
    replica: Arc<dyn ObjectStore>,
    /// The node whose shares of the hours this archive writes and reads.
    writer: String,
    /// Where an hour is encoded.
    blocking: crate::Blocking,
    /// Files above this size are uploaded in parts.
    multipart_threshold_bytes: usize,
}

/// Start of `hour` as a UTC date-time, if chrono can represent it.
fn hour_start(hour: HourKey) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(hour_of(hour.hour_ms))
}

fn hour_dir(hour: HourKey) -> Path {
    let kind = format!("kind={}", hour.kind.as_str());
    match hour_start(hour) {
        Some(t) => {
            let date = format!("date={:04}-{:02}-{:02}", t.year(), t.month(), t.day());
            let hh = format!("hour={:02}", t.hour());
            Path::from_iter(["readings", kind.as_str(), date.as_str(), hh.as_str()])
        }
        // Out of chrono's range (±262 000 years): never written, since
        // `write_hour` refuses such keys, but still a distinct path.
        None => {
            let raw = format!("hour_ms={}", hour.hour_ms);
            Path::from_iter(["readings", kind.as_str(), "out_of_range", raw.as_str()])
        }
    }
}

/// Object path of one writer's share of an hour:
/// `readings/kind={kind}/date=YYYY-MM-DD/hour=HH/part-{writer}.parquet` (UTC).
/// `writer` is a node id (`[A-Za-z0-9_-]`, safe in a path).
pub fn hour_path(hour: HourKey, writer: &str) -> Path {
    hour_dir(hour).join(format!("part-{writer}.parquet"))
}

/// Object path of the manifest beside [`hour_path`]: `manifest-{writer}.json`.
pub fn manifest_path(hour: HourKey, writer: &str) -> Path {
    hour_dir(hour).join(format!("manifest-{writer}.json"))
}

/// The archive's Arrow schema; every column is required.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("unit", DataType::Utf8, false),
    ]))
}

/// Every setting that shapes the bytes is pinned here rather than left to
/// the library's defaults; nothing time- or host-dependent is written.
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::SNAPPY)
        .set_created_by(CREATED_BY.to_owned())
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(None)
        .build()
}

fn batch_of(schema: &SchemaRef, rows: &[&Reading]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.device.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.kind.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seq))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.ts_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.metric.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.metric.canonical_unit()),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Encodes rows as one Parquet file. Rows are written in `(device, seq)`
/// order whatever order they come in, so the same set of rows always gives
/// the same bytes.
pub fn encode(rows: &[Reading]) -> Result<Bytes> {
    let mut ordered: Vec<&Reading> = rows.iter().collect();
    ordered.sort_by(|a, b| (&a.device, a.seq).cmp(&(&b.device, b.seq)));
    let schema = schema();
    let mut writer =
        ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(writer_properties()))?;
    for chunk in ordered.chunks(ROW_GROUP_ROWS) {
        writer.write(&batch_of(&schema, chunk)?)?;
    }
    Ok(Bytes::from(writer.into_inner()?))
}

fn corrupt(message: impl Into<String>) -> Error {
    Error::Corrupt {
        store: STORE,
        message: message.into(),
    }
}

/// Decodes a file written by [`encode`], checking it against the schema: a
/// missing column, a null, an unknown kind or metric, or a unit other than
/// the metric's canonical one is reported as [`Error::Corrupt`].
pub fn decode(bytes: Bytes) -> Result<Vec<Reading>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(ROW_GROUP_ROWS)
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let column = |name: &str| {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| corrupt(format!("column {name} is missing")))?;
            if col.null_count() > 0 {
                return Err(corrupt(format!("column {name} has nulls")));
            }
            Ok(col)
        };
        let wrong_type = |name: &str| corrupt(format!("column {name} has the wrong type"));
        let devices = column("device_id")?
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong_type("device_id"))?;
        let kinds = column("kind")?
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong_type("kind"))?;
        let seqs = column("seq")?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| wrong_type("seq"))?;
        let tss = column("ts")?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| wrong_type("ts"))?;
        let metrics = column("metric")?
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong_type("metric"))?;
        let values = column("value")?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| wrong_type("value"))?;
        let units = column("unit")?
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong_type("unit"))?;
        out.reserve(batch.num_rows());
        for i in 0..batch.num_rows() {
            let kind = DeviceKind::parse(kinds.value(i))
                .ok_or_else(|| corrupt(format!("unknown device kind {:?}", kinds.value(i))))?;
            let metric = Metric::parse(metrics.value(i))
                .ok_or_else(|| corrupt(format!("unknown metric {:?}", metrics.value(i))))?;
            if units.value(i) != metric.canonical_unit() {
                return Err(corrupt(format!(
                    "{metric} in unit {:?}, expected {:?}",
                    units.value(i),
                    metric.canonical_unit()
                )));
            }
            out.push(Reading {
                device: DeviceId::new(devices.value(i)),
                kind,
                seq: seqs.value(i),
                ts_ms: tss.value(i),
                metric,
                value: values.value(i),
            });
        }
    }
    Ok(out)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ParquetArchive {
    /// An archive writing `writer`'s share of every hour (`writer` is the
    /// node's id) to `primary` (this AZ) and `replica` (the other AZ).
    pub fn new(
        primary: Arc<dyn ObjectStore>,
        replica: Arc<dyn ObjectStore>,
        writer: impl Into<String>,
    ) -> Self {
        Self {
            primary,
            replica,
            writer: writer.into(),
            blocking: crate::Blocking::Threads,
            multipart_threshold_bytes: MULTIPART_THRESHOLD_BYTES,
        }
    }

    /// The same archive, uploading files above `bytes` in parts.
    pub fn with_multipart_threshold(mut self, bytes: usize) -> Self {
        self.multipart_threshold_bytes = bytes;
        self
    }

    /// The node whose shares this archive writes.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Object path of this writer's share of `hour`.
    pub fn path_of(&self, hour: HourKey) -> Path {
        hour_path(hour, &self.writer)
    }

    /// Object path of the manifest of this writer's share of `hour`.
    pub fn manifest_path_of(&self, hour: HourKey) -> Path {
        manifest_path(hour, &self.writer)
    }

    /// The same archive, encoding hours where `blocking` says.
    pub fn with_blocking(mut self, blocking: crate::Blocking) -> Self {
        self.blocking = blocking;
        self
    }

    fn store(&self, side: Side) -> &Arc<dyn ObjectStore> {
        match side {
            Side::Primary => &self.primary,
            Side::Replica => &self.replica,
        }
    }

    /// Archives this writer's share of one hour: encodes `rows` (every row
    /// of the hour it staged), writes the file and then its manifest to
    /// both sides, and reads both sides back to check them. Re-running with
    /// the same rows rewrites the same bytes, so a retry after any failure
    /// is safe.
    pub async fn write_hour(&self, hour: HourKey, rows: &[Reading]) -> Result<Manifest> {
        check_rows(hour, rows)?;
        let path = self.path_of(hour);
        // Encoding and hashing an hour is CPU work: keep it off the runtime.
        let owned = rows.to_vec();
        let (bytes, sha256) = self
            .blocking
            .run(move || {
                encode(&owned).map(|bytes| {
                    let sha = sha256_hex(&bytes);
                    (bytes, sha)
                })
            })
            .await
            .map_err(|e| {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic())
                }
                Error::Unavailable {
                    store: STORE,
                    message: format!("encoding task did not finish: {e}"),
                }
            })??;
        let manifest = Manifest {
            path: path.to_string(),
            kind: hour.kind,
            hour_ms: hour.hour_ms,
            rows: rows.len() as u64,
            bytes: bytes.len() as u64,
            sha256,
            schema_version: SCHEMA_VERSION,
            source: self.writer.clone(),
        };
        let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Rejected {
            store: STORE,
            message: format!("manifest does not serialise: {e}"),
        })?;

        // File before manifest on each side: a manifest never points at a
        // file that is not there yet.
        let put_file = |side: Side| self.put_file(side, &path, bytes.clone());
        futures::try_join!(put_file(Side::Primary), put_file(Side::Replica))?;
        let manifest_at = self.manifest_path_of(hour);
        let put_manifest = |side: Side| {
            let payload = PutPayload::from(Bytes::from(manifest_json.clone()));
            let path = &manifest_at;
            async move { self.store(side).put(path, payload).await }
        };
        futures::try_join!(put_manifest(Side::Primary), put_manifest(Side::Replica))?;

        for side in Side::BOTH {
            let stored = self.verify(side, hour).await?;
            if stored != manifest {
                return Err(corrupt(format!(
                    "{} manifest of {path} does not read back as written",
                    side.as_str()
                )));
            }
        }
        Ok(manifest)
    }

    /// Puts a whole file, in parts when it is large. A part upload that
    /// fails is aborted, so no orphaned parts are left to pay for.
    async fn put_file(&self, side: Side, path: &Path, bytes: Bytes) -> Result<()> {
        let store = self.store(side);
        if bytes.len() <= self.multipart_threshold_bytes {
            store.put(path, PutPayload::from(bytes)).await?;
            return Ok(());
        }
        let mut upload = store.put_multipart(path).await?;
        let mut parts = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let part = rest.split_to(PART_BYTES.min(rest.len()));
            parts.push(upload.put_part(PutPayload::from(part)));
        }
        // At most four parts in flight: bounded memory and connections.
        let sent: Result<Vec<()>, _> = futures::stream::iter(parts)
            .buffered(PARTS_IN_FLIGHT_MAX)
            .try_collect()
            .await;
        match sent {
            Ok(_) => {
                upload.complete().await?;
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(error = %abort, %path, "aborting a failed multipart upload failed");
                }
                Err(e.into())
            }
        }
    }

    /// Reads the manifest of this writer's share of an hour from one side.
    pub async fn read_manifest(&self, side: Side, hour: HourKey) -> Result<Manifest> {
        let path = self.manifest_path_of(hour);
        let bytes = self.store(side).get(&path).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            corrupt(format!(
                "{} manifest {path} does not parse: {e}",
                side.as_str()
            ))
        })
    }

    /// Reads the rows of this writer's share of an hour from one side.
    pub async fn read_hour(&self, side: Side, hour: HourKey) -> Result<Vec<Reading>> {
        let bytes = self
            .store(side)
            .get(&self.path_of(hour))
            .await?
            .bytes()
            .await?;
        decode(bytes)
    }

    /// Checks one side's file against that side's manifest (path, size and
    /// SHA-256); returns the manifest. A mismatch is [`Error::Corrupt`].
    pub async fn verify(&self, side: Side, hour: HourKey) -> Result<Manifest> {
        let manifest = self.read_manifest(side, hour).await?;
        let path = self.path_of(hour);
        if manifest.path != path.as_ref()
            || manifest.kind != hour.kind
            || manifest.hour_ms != hour.hour_ms
        {
            return Err(corrupt(format!(
                "{} manifest beside {path} describes {} of {} at {}",
                side.as_str(),
                manifest.path,
                manifest.kind,
                manifest.hour_ms
            )));
        }
        let bytes = self.store(side).get(&path).await?.bytes().await?;
        if bytes.len() as u64 != manifest.bytes {
            return Err(corrupt(format!(
                "{} {path} has {} bytes, manifest says {}",
                side.as_str(),
                bytes.len(),
                manifest.bytes
            )));
        }
        let sha = sha256_hex(&bytes);
        if sha != manifest.sha256 {
            return Err(corrupt(format!(
                "{} {path} has SHA-256 {sha}, manifest says {}",
                side.as_str(),
                manifest.sha256
            )));
        }
        Ok(manifest)
    }
}

/// Refuses rows that do not belong to `hour`: a file holds one kind's hour.
fn check_rows(hour: HourKey, rows: &[Reading]) -> Result<()> {
    let rejected = |message: String| Error::Rejected {
        store: STORE,
        message,
    };
    if hour_of(hour.hour_ms) != hour.hour_ms || hour_start(hour).is_none() {
        return Err(rejected(format!(
            "{} is not the start of a representable hour",
            hour.hour_ms
        )));
    }
    if let Some(r) = rows
        .iter()
        .find(|r| r.kind != hour.kind || hour_of(r.ts_ms) != hour.hour_ms)
    {
        return Err(rejected(format!(
            "reading {}/{} ({} at {}) is not in hour {} of {}",
            r.device, r.seq, r.kind, r.ts_ms, hour.hour_ms, hour.kind
        )));
    }
    Ok(())
}
