//! How fast vatio's production sinks write into real servers, against the
//! same servers driven directly by a bulk client, on this machine. A
//! benchmark, not a test: `scripts/bench-stores.sh` runs it.
//!
//! - InfluxDB 1.6: minute points through [`InfluxTimeSeries::write_points`]
//!   in the aggregator's flush size (5,000), gzip on; direct: `curl` posting
//!   the very same line protocol, gzip'd the same way, one request per 5,000
//!   points over one connection.
//! - SecantusDB: minute documents through
//!   [`MongoDocuments::upsert_minute_docs`] in the stream-ETL's flush size
//!   (2,000); direct: pymongo's unordered `bulk_write` of `ReplaceOne`
//!   upserts of the same documents, 2,000 at a time.
//! - moto: one hour of readings through [`ParquetArchive::write_hour`]
//!   (encode, write both sides, read both back and verify).
//!
//! Usage: `cargo run --release -p vatio-stores --example sink_throughput -- [POINTS] [DOCS] [ROWS]`

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use vatio_config::{InfluxDbConfig, MongoDbConfig, S3Config};
use vatio_stores::archive::ParquetArchive;
use vatio_stores::influxdb::{InfluxTimeSeries, line};
use vatio_stores::mongodb::MongoDocuments;
use vatio_stores::{
    DeviceId, DeviceKind, DocumentStore, HOUR_MS, HourKey, MINUTE_MS, Metric, MinuteDoc,
    MinutePoint, Reading, Stats, TimeSeriesStore,
};
use vatio_test_servers::{Kind, Server, create_bucket, s3, unique_name};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const POINTS_PER_WRITE: usize = 5_000;
const DOCS_PER_WRITE: usize = 2_000;

fn stats(i: usize) -> Stats {
    let v = (i % 1000) as f64 * 0.25;
    Stats {
        count: 60,
        min: v,
        max: v + 10.0,
        sum: v * 60.0 + 300.0,
        last: v + 5.0,
        last_ts_ms: T0 + 59_000,
        last_seq: i as u64,
    }
}

/// `n` points: 1,000 meters, each over `n / 1000` minutes.
fn points(n: usize) -> Vec<MinutePoint> {
    (0..n)
        .map(|i| MinutePoint {
            device: DeviceId::new(format!("meter-{:04}", i % 1000)),
            kind: DeviceKind::ElectricityMeter,
            metric: Metric::Power,
            minute_ms: T0 + (i / 1000) as i64 * MINUTE_MS,
            stats: stats(i),
            log_pos: i as u64 * 100,
        })
        .collect()
}

fn docs(n: usize) -> Vec<MinuteDoc> {
    (0..n)
        .map(|i| MinuteDoc {
            device: DeviceId::new(format!("climate-{:04}", i % 1000)),
            kind: DeviceKind::ClimateSensor,
            minute_ms: T0 + (i / 1000) as i64 * MINUTE_MS,
            metrics: BTreeMap::from([
                (Metric::Temperature, stats(i)),
                (Metric::Humidity, stats(i + 7)),
            ]),
            log_pos: i as u64 * 100,
        })
        .collect()
}

fn rate(what: &str, n: usize, start: Instant) -> f64 {
    let secs = start.elapsed().as_secs_f64();
    let per_s = n as f64 / secs;
    println!("{what}: {n} in {secs:.2} s = {per_s:.0}/s");
    per_s
}

async fn influxdb(n: usize) -> anyhow::Result<()> {
    let server = Server::start(Kind::InfluxDb)?;
    let points = points(n);
    let (vatio_db, direct_db) = (unique_name("bench"), unique_name("direct"));
    for db in [&vatio_db, &direct_db] {
        let (status, body) =
            vatio_test_servers::post(server.addr(), "/query", &format!("q=CREATE+DATABASE+{db}"))?;
        anyhow::ensure!(status == 200, "{body}");
    }
    let cfg = InfluxDbConfig {
        url: server.url(),
        database: vatio_db,
        batch_points_max: POINTS_PER_WRITE as u32,
        ..InfluxDbConfig::default()
    };
    let store = InfluxTimeSeries::connect(&cfg, "bench")?;
    let start = Instant::now();
    for chunk in points.chunks(POINTS_PER_WRITE) {
        store.write_points(chunk).await?;
    }
    let vatio = rate("influxdb via vatio (points)", n, start);

    // The same bodies, prepared beforehand, for curl.
    let dir = tempfile::tempdir()?;
    let mut args: Vec<String> = Vec::new();
    for (i, chunk) in points.chunks(POINTS_PER_WRITE).enumerate() {
        let mut body = String::new();
        for p in chunk {
            line::push_point(&mut body, p, "direct")?;
        }
        let path = dir.path().join(format!("chunk-{i}.lp.gz"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes())?;
        std::fs::write(&path, gz.finish()?)?;
        if i > 0 {
            args.push("--next".into());
        }
        args.extend([
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            "-H".into(),
            "Content-Encoding: gzip".into(),
            "--data-binary".into(),
            format!("@{}", path.display()),
            format!("{}/write?db={direct_db}&precision=ms", server.url()),
        ]);
    }
    let start = Instant::now();
    let status = Command::new("curl")
        .args(&args)
        .status()
        .context("running curl")?;
    anyhow::ensure!(status.success(), "curl failed");
    let direct = rate("influxdb via curl (points)", n, start);
    println!("influxdb vatio / direct = {:.2}", vatio / direct);
    Ok(())
}

const PYMONGO: &str = r#"
import sys, time, json
from pymongo import MongoClient, ReplaceOne
uri, db, path, per = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
docs = [json.loads(l) for l in open(path)]
coll = MongoClient(uri)[db]["minute_docs"]
start = time.perf_counter()
for i in range(0, len(docs), per):
    coll.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs[i:i+per]], ordered=False)
print(time.perf_counter() - start)
"#;

async fn mongodb(n: usize) -> anyhow::Result<()> {
    let server = Server::start(Kind::SecantusDb)?;
    let docs = docs(n);
    let cfg = MongoDbConfig {
        uri: server.url(),
        database: unique_name("bench"),
    };
    let store =
        MongoDocuments::connect(&cfg, "bench", std::time::Duration::from_secs(168 * 3600)).await?;
    // The indexes are made by the first operation: not part of the rate.
    store.max_minute().await?;
    let start = Instant::now();
    for chunk in docs.chunks(DOCS_PER_WRITE) {
        store.upsert_minute_docs(chunk).await?;
    }
    let vatio = rate("secantusdb via vatio (documents)", n, start);

    // The same shape for pymongo (dates as numbers: the driver's encoding
    // cost is the same either way), into a database with the same indexes.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("docs.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for d in &docs {
        let metrics: serde_json::Map<String, serde_json::Value> = d
            .metrics
            .iter()
            .map(|(m, s)| {
                let v = serde_json::json!({"count": s.count, "min": s.min, "max": s.max,
                    "sum": s.sum, "last": s.last, "last_ts_ms": s.last_ts_ms, "last_seq": s.last_seq});
                (m.as_str().to_owned(), v)
            })
            .collect();
        let doc = serde_json::json!({"_id": format!("{}/{}/direct", d.device, d.minute_ms),
            "device": d.device.as_str(), "kind": d.kind.as_str(), "node": "direct",
            "minute_ms": d.minute_ms, "metrics": metrics, "log_pos": d.log_pos});
        writeln!(file, "{doc}")?;
    }
    file.flush()?;
    let direct_db = unique_name("direct");
    let direct_store = MongoDocuments::connect(
        &MongoDbConfig {
            uri: server.url(),
            database: direct_db.clone(),
        },
        "direct",
        std::time::Duration::from_secs(168 * 3600),
    )
    .await?;
    direct_store.max_minute().await?;
    let out = Command::new("python3")
        .args(["-c", PYMONGO, &server.url(), &direct_db])
        .arg(&path)
        .arg(DOCS_PER_WRITE.to_string())
        .output()
        .context("running python3 with pymongo")?;
    anyhow::ensure!(
        out.status.success(),
        "pymongo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    let direct = n as f64 / secs;
    println!("secantusdb via pymongo (documents): {n} in {secs:.2} s = {direct:.0}/s");
    println!("secantusdb vatio / direct = {:.2}", vatio / direct);
    Ok(())
}

async fn moto(rows: usize) -> anyhow::Result<()> {
    let server = Server::start(Kind::Moto)?;
    let cfg = S3Config {
        endpoint: server.url(),
        region: s3::REGION.into(),
        access_key_id: s3::ACCESS_KEY_ID.into(),
        secret_access_key: s3::SECRET_ACCESS_KEY.into(),
        allow_http: true,
        ..S3Config::default()
    };
    let (a, b) = (unique_name("az-a"), unique_name("az-b"));
    create_bucket(&server.url(), &a)?;
    create_bucket(&server.url(), &b)?;
    let archive = ParquetArchive::new(
        vatio_stores::s3::s3_object_store(&a, "archive", &cfg)?,
        vatio_stores::s3::s3_object_store(&b, "archive", &cfg)?,
        "bench",
    );
    let hour = HourKey {
        kind: DeviceKind::ElectricityMeter,
        hour_ms: T0,
    };
    let readings: Vec<Reading> = (0..rows)
        .map(|i| Reading {
            device: DeviceId::new(format!("meter-{:04}", i % 1000)),
            kind: DeviceKind::ElectricityMeter,
            seq: (i / 1000) as u64 + 1,
            ts_ms: T0 + (i as i64 * HOUR_MS / rows as i64),
            metric: Metric::Power,
            value: (i % 977) as f64 * 0.5,
        })
        .collect();
    let start = Instant::now();
    let manifest = archive.write_hour(hour, &readings).await?;
    rate(
        "parquet to moto, both sides written and verified (rows)",
        rows,
        start,
    );
    println!("parquet file: {} bytes", manifest.bytes);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    influxdb(arg(1, 200_000)).await?;
    mongodb(arg(2, 50_000)).await?;
    moto(arg(3, 500_000)).await?;
    Ok(())
}
