//! The real store servers fail under a node that keeps ingesting: InfluxDB
//! frozen (`SIGSTOP`), the MongoDB server killed (`SIGKILL`) and started
//! again on its files, S3 frozen while the archive seals, then InfluxDB
//! killed and restarted and MongoDB frozen. Ingest is
//! acknowledged from the log throughout, the status names the failing
//! store and its server, and once the servers are back every store holds
//! every reading exactly once.

use std::time::Duration;

use vatio_actors::TreeOptions;
use vatio_proto::v1::{self, DeviceKind};
use vatio_stores::MINUTE_MS;
use vatio_test_servers::{Kind, Server};
use vatio_tests::real_stores::RealStores;
use vatio_tests::{T0_MS, TestNode, batch, reading, test_config};

const M: i64 = T0_MS - 3 * MINUTE_MS;
const PER_BATCH: u64 = 50;

fn batch_no(b: u64) -> v1::IngestRequest {
    let readings = (1..=PER_BATCH)
        .map(|i| {
            let seq = (b - 1) * PER_BATCH + i;
            // 100 ms apart: the readings span several minutes.
            let ts = M + seq as i64 * 100;
            reading(
                "meter-07",
                DeviceKind::ElectricityMeter,
                seq,
                ts,
                "power",
                2.0,
                "kW",
            )
        })
        .collect();
    batch(b, readings)
}

/// The status's last error of sink `name`, empty when it answers.
fn sink_error(s: &v1::StatusResponse, name: &str) -> String {
    s.sinks
        .iter()
        .find(|x| x.name == name)
        .map(|x| x.last_error.clone())
        .unwrap_or_default()
}

/// Waits until every sink of `sinks` reports a failure (past the flush
/// delays on the node's clock first); the status that showed it.
async fn failing(t: &TestNode, what: &str, sinks: &[&str]) -> anyhow::Result<v1::StatusResponse> {
    t.clock.advance(1_000);
    t.wait_for_status(what, |s| sinks.iter().all(|x| !sink_error(s, x).is_empty()))
        .await
}

/// Waits until every sink of `sinks` answers again (past the breakers'
/// open periods, which run on the node's clock).
async fn answering(t: &TestNode, what: &str, sinks: &[&str]) -> anyhow::Result<()> {
    t.clock.advance(60_000);
    t.wait_for_status(what, |s| sinks.iter().all(|x| sink_error(s, x).is_empty()))
        .await
        .map(drop)
}

type Flushing = tokio::task::JoinHandle<Result<tonic::Response<v1::FlushResponse>, tonic::Status>>;

/// A flush that may have to wait for a server, started in the background.
async fn start_flush(t: &TestNode) -> anyhow::Result<Flushing> {
    let mut admin = t.admin().await?;
    Ok(tokio::spawn(async move {
        admin.flush(v1::FlushRequest {}).await
    }))
}

/// Moves the node's clock past the breakers' open periods until the flush
/// ends (at most `rounds` rounds of a second), then returns its outcome.
async fn finish_flush(t: &TestNode, flushing: Flushing, rounds: u32) -> anyhow::Result<()> {
    for _ in 0..rounds {
        t.clock.advance(60_000);
        if flushing.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    flushing.await??;
    Ok(())
}

async fn ingest(t: &TestNode, batches: std::ops::RangeInclusive<u64>) -> anyhow::Result<()> {
    let mut client = t.ingest().await?;
    for b in batches {
        let ack = client.ingest_batch(batch_no(b)).await?.into_inner();
        assert_eq!(
            ack.accepted as u64, PER_BATCH,
            "batch {b} acknowledged from the log"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_outages_lose_nothing_and_count_nothing_twice() -> anyhow::Result<()> {
    let mut influx = Server::start(Kind::InfluxDb)?;
    let mut mongo = Server::start(Kind::SecantusDb)?;
    let moto = Server::start(Kind::Moto)?;
    let real = RealStores::on(&influx, &mongo, &moto)?;
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    real.apply(&mut cfg);
    cfg.stores.influxdb.request_timeout = Duration::from_secs(1);
    cfg.stores.s3.request_timeout = Duration::from_secs(1);
    cfg.aggregator.flush_max_delay = Duration::from_millis(20);
    cfg.stream_etl.flush_max_delay = Duration::from_millis(20);
    let t = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;

    ingest(&t, 1..=4).await?;
    t.flush().await?;

    // InfluxDB stops answering: connections stay open, requests time out.
    influx.pause()?;
    ingest(&t, 5..=8).await?;
    let s = failing(
        &t,
        "the time-series sink reports InfluxDB failing",
        &["timeseries"],
    )
    .await?;
    let error = sink_error(&s, "timeseries");
    assert!(error.contains(&influx.url()), "names the server: {error}");

    // The MongoDB server dies and comes back on its files.
    mongo.kill()?;
    ingest(&t, 9..=12).await?;
    let s = failing(
        &t,
        "the document sink reports MongoDB failing",
        &["documents"],
    )
    .await?;
    assert!(sink_error(&s, "documents").contains("mongodb"), "{s:?}");
    mongo.restart()?;
    influx.resume()?;
    let both = ["timeseries", "documents"];
    answering(&t, "InfluxDB and MongoDB answer again", &both).await?;
    ingest(&t, 13..=16).await?;
    t.flush().await?;

    // S3 freezes while the archive seals the hour.
    moto.pause()?;
    ingest(&t, 17..=20).await?;
    let flushing = start_flush(&t).await?;
    failing(&t, "the archive sink reports S3 failing", &["archive"]).await?;
    moto.resume()?;
    finish_flush(&t, flushing, 10).await?;
    t.flush().await?;

    // The other way round: InfluxDB killed and restarted on its files,
    // MongoDB frozen.
    influx.kill()?;
    mongo.pause()?;
    ingest(&t, 21..=24).await?;
    failing(&t, "both sinks report their servers failing again", &both).await?;
    influx.restart()?;
    mongo.resume()?;
    answering(&t, "InfluxDB and MongoDB answer again", &both).await?;
    t.flush().await?;

    let total = 24 * PER_BATCH;
    let influx_count = real.influx_counted()?;
    assert_eq!(
        influx_count, total as f64,
        "InfluxDB counts each reading once"
    );
    let docs = real.mongo_documents("minute_docs").await?;
    let doc_count: i64 = docs
        .values()
        .map(|d| {
            d.get_document("metrics")
                .and_then(|m| m.get_document("power"))
                .and_then(|p| p.get_i64("count"))
                .unwrap_or_default()
        })
        .sum();
    assert_eq!(doc_count, total as i64, "MongoDB counts each reading once");
    for bucket in [&real.primary_bucket, &real.replica_bucket] {
        let mut seqs = Vec::new();
        for (path, bytes) in real.bucket_objects(bucket).await? {
            if path.ends_with(".parquet") {
                seqs.extend(
                    vatio_stores::archive::decode(bytes.into())?
                        .into_iter()
                        .map(|r| r.seq),
                );
            }
        }
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "{bucket} archives each reading once"
        );
    }
    let s = t.status().await?;
    for sink in ["timeseries", "documents", "archive"] {
        assert_eq!(sink_error(&s, sink), "", "{sink} answers again");
    }
    t.node.shutdown().await?;
    Ok(())
}

/// None of the servers is up when the node starts: it starts all the same,
/// acknowledges from the log, says which stores fail and why, and once the
/// servers come up (on the addresses it was given) catches up with every
/// reading exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_and_acknowledges_while_its_stores_are_down() -> anyhow::Result<()> {
    let influx_addr = vatio_test_servers::free_loopback_addr()?;
    let mongo_addr = vatio_test_servers::free_loopback_addr()?;
    let moto_addr = vatio_test_servers::free_loopback_addr()?;
    let real = RealStores::at(influx_addr, mongo_addr, moto_addr);
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    real.apply(&mut cfg);
    cfg.stores.influxdb.request_timeout = Duration::from_secs(1);
    cfg.stores.s3.request_timeout = Duration::from_secs(1);
    cfg.aggregator.flush_max_delay = Duration::from_millis(20);
    cfg.stream_etl.flush_max_delay = Duration::from_millis(20);
    let t = tokio::time::timeout(
        Duration::from_secs(60),
        TestNode::start_with(dir, cfg, TreeOptions::default(), None),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the node did not start while its stores were down"))??;

    ingest(&t, 1..=4).await?;
    let what = "the time-series and document sinks report their servers down";
    let s = failing(&t, what, &["timeseries", "documents"]).await?;
    assert!(
        sink_error(&s, "timeseries").contains(&real.influx_url),
        "{s:?}"
    );
    let backend = |name: &str| {
        s.sinks
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.backend.clone())
    };
    assert_eq!(backend("timeseries").as_deref(), Some("influxdb"));
    assert_eq!(backend("documents").as_deref(), Some("mongodb"));
    assert_eq!(backend("archive").as_deref(), Some("s3"));

    let _influx = Server::start_at(Kind::InfluxDb, influx_addr)?;
    let _mongo = Server::start_at(Kind::SecantusDb, mongo_addr)?;
    let _moto = Server::start_at(Kind::Moto, moto_addr)?;
    real.create()?;
    let flushing = start_flush(&t).await?;
    finish_flush(&t, flushing, 30).await?;

    let total = 4 * PER_BATCH;
    let counted = real.influx_counted()?;
    assert_eq!(counted, total as f64);
    let parquet_rows: usize = real
        .bucket_objects(&real.replica_bucket)
        .await?
        .into_iter()
        .filter(|(path, _)| path.ends_with(".parquet"))
        .map(|(_, bytes)| vatio_stores::archive::decode(bytes.into()).map(|rows| rows.len()))
        .sum::<Result<usize, _>>()?;
    assert_eq!(parquet_rows, total as usize);
    assert!(!real.mongo_documents("minute_docs").await?.is_empty());
    t.node.shutdown().await?;
    Ok(())
}
