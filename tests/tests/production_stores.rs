//! A node on the production stores (InfluxDB 1.6, MongoDB-compatible
//! SecantusDB, S3 on moto, all real servers on loopback) ingests the same
//! mixed batch as `ingest_path.rs`, and so does a node on the embedded
//! stores. What the servers hold, read back with their own APIs, is what
//! the embedded stores hold: the same minute points, minute documents,
//! events and archive files, byte for byte. (Only the log positions the
//! points and documents carry differ: they are each node's own, and the two
//! nodes may lay the same batch out in their logs in another order.)

use std::collections::BTreeMap;

use vatio_actors::TreeOptions;
use vatio_stores::{DeviceId, EventFilter, MINUTE_MS, MinuteDoc, MinuteFilter, MinutePoint};
use vatio_tests::mixed::{M, mixed_batch};
use vatio_tests::real_stores::{InfluxKey, RealStores};
use vatio_tests::{TestNode, test_config};

/// A node on the embedded stores and one on the real servers, both fed the
/// mixed batch and flushed.
async fn both_fed() -> anyhow::Result<(TestNode, TestNode, RealStores)> {
    let embedded = TestNode::start().await?;
    let real = RealStores::on_shared_servers()?;
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    real.apply(&mut cfg);
    let production = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    for node in [&embedded, &production] {
        let ack = node
            .ingest()
            .await?
            .ingest_batch(mixed_batch())
            .await?
            .into_inner();
        assert_eq!((ack.accepted, ack.duplicates, ack.dead_lettered), (8, 1, 3));
        node.flush().await?;
    }
    Ok((embedded, production, real))
}

fn without_log_pos(points: Vec<MinutePoint>) -> Vec<MinutePoint> {
    points
        .into_iter()
        .map(|p| MinutePoint { log_pos: 0, ..p })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_holds_the_embedded_minute_points() -> anyhow::Result<()> {
    let (embedded, production, real) = both_fed().await?;
    let expected = embedded
        .stores()
        .timeseries
        .minutes(&MinuteFilter::default(), i64::MIN, i64::MAX)
        .await?;
    assert_eq!(
        expected.len(),
        2,
        "meter power and climate temperature: {expected:?}"
    );
    let mut rows = real.influx_rows()?;
    for fields in rows.values_mut() {
        let log_pos = fields.remove("log_pos").unwrap_or_default();
        assert!(log_pos > 0.0, "each point carries its node's log position");
    }
    let node = production.cfg.node.id.clone();
    let mut stored = BTreeMap::new();
    for p in &expected {
        let key = InfluxKey {
            device: p.device.to_string(),
            metric: p.metric.to_string(),
            node: node.clone(),
            minute_ms: p.minute_ms,
        };
        let s = &p.stats;
        let fields: BTreeMap<String, f64> = [
            ("count", s.count as f64),
            ("min", s.min),
            ("max", s.max),
            ("sum", s.sum),
            ("last", s.last),
            ("last_ts_ms", s.last_ts_ms as f64),
            ("last_seq", s.last_seq as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        stored.insert(key, fields);
    }
    assert_eq!(rows, stored, "InfluxDB's own answer");
    // And vatio's reads of it agree with the embedded store's.
    let through_vatio = production
        .stores()
        .timeseries
        .minutes(&MinuteFilter::default(), i64::MIN, i64::MAX)
        .await?;
    assert_eq!(without_log_pos(through_vatio), without_log_pos(expected));
    assert_eq!(
        production
            .stores()
            .timeseries
            .power_flow(M, M + MINUTE_MS)
            .await?,
        embedded
            .stores()
            .timeseries
            .power_flow(M, M + MINUTE_MS)
            .await?
    );
    embedded.node.shutdown().await?;
    production.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_holds_the_embedded_documents_and_events() -> anyhow::Result<()> {
    let (embedded, production, real) = both_fed().await?;
    let node = production.cfg.node.id.clone();
    let docs = real.mongo_documents("minute_docs").await?;
    assert_eq!(
        docs.keys().cloned().collect::<Vec<_>>(),
        vec![
            format!("climate-01/{M}/{node}"),
            format!("meter-01/{M}/{node}")
        ]
    );
    for device in ["climate-01", "meter-01"] {
        let want = embedded
            .stores()
            .documents
            .minute_doc(&DeviceId::new(device), M)
            .await?
            .expect("an embedded minute document");
        let got = &docs[&format!("{device}/{M}/{node}")];
        assert_eq!(got.get_str("device")?, device);
        assert_eq!(got.get_i64("minute_ms")?, M);
        assert_eq!(got.get_datetime("minute")?.timestamp_millis(), M);
        let metrics = got.get_document("metrics")?;
        assert_eq!(metrics.len(), want.metrics.len());
        for (metric, stats) in &want.metrics {
            let m = metrics.get_document(metric.as_str())?;
            assert_eq!(m.get_i64("count")?, stats.count as i64);
            assert_eq!(m.get_f64("sum")?, stats.sum);
            assert_eq!(m.get_f64("min")?, stats.min);
            assert_eq!(m.get_f64("max")?, stats.max);
            assert_eq!(m.get_f64("last")?, stats.last);
        }
        // vatio reads its own share back as the embedded store holds it.
        let through_vatio = production
            .stores()
            .documents
            .minute_doc(&DeviceId::new(device), M)
            .await?
            .expect("its own share");
        assert!(through_vatio.log_pos > 0);
        assert_eq!(
            MinuteDoc {
                log_pos: 0,
                ..through_vatio
            },
            MinuteDoc { log_pos: 0, ..want }
        );
    }
    let want_events = embedded
        .stores()
        .documents
        .events(&EventFilter::default())
        .await?;
    let events = real.mongo_documents("events").await?;
    assert_eq!(
        events.keys().cloned().collect::<Vec<_>>(),
        want_events.iter().map(|e| e.id()).collect::<Vec<_>>()
    );
    assert_eq!(
        production
            .stores()
            .documents
            .events(&EventFilter::default())
            .await?,
        want_events
    );
    embedded.node.shutdown().await?;
    production.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_holds_the_embedded_archive_byte_for_byte() -> anyhow::Result<()> {
    let (embedded, production, real) = both_fed().await?;
    for (root, bucket) in [
        (&embedded.cfg.archiver.primary_root, &real.primary_bucket),
        (&embedded.cfg.archiver.replica_root, &real.replica_bucket),
    ] {
        let dir = embedded
            .cfg
            .archive_dir(root)
            .expect("a local archive root");
        let mut local = BTreeMap::new();
        for file in vatio_tests::process::files_under(&dir)? {
            let path = format!("archive/{}", file.display());
            local.insert(path, std::fs::read(dir.join(&file))?);
        }
        assert!(
            local.keys().any(|p| p.ends_with(".parquet")),
            "the embedded node archived: {:?}",
            local.keys()
        );
        let objects = real.bucket_objects(bucket).await?;
        assert_eq!(
            objects.keys().collect::<Vec<_>>(),
            local.keys().collect::<Vec<_>>(),
            "the same files in {bucket}"
        );
        assert!(objects == local, "the same bytes in {bucket}");
    }
    embedded.node.shutdown().await?;
    production.node.shutdown().await?;
    Ok(())
}

/// Someone else wrote `count` as a float into vatio's measurement, in the
/// shard of the batch's minute: InfluxDB refuses vatio's integer counts
/// there (a field keeps one type). The refused points go to dead letters
/// as `sink_rejected` with the server's own words, and nothing else is held
/// up: the flush completes and the documents and the archive have the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_influxdb_refuses_go_to_dead_letters_with_its_answer() -> anyhow::Result<()> {
    let real = RealStores::on_shared_servers()?;
    let (status, body) = vatio_test_servers::post(
        real.influx_addr,
        &format!("/write?db={}&precision=ms", real.database),
        &format!("vatio_minute,device=other,kind=robot_arm,metric=torque,node=other count=1.5 {M}"),
    )?;
    anyhow::ensure!(status == 204, "{body}");
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    real.apply(&mut cfg);
    let t = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    t.ingest().await?.ingest_batch(mixed_batch()).await?;
    t.flush().await?;

    let letters = t
        .admin()
        .await?
        .list_dead_letters(vatio_proto::v1::ListDeadLettersRequest {
            reason: "sink_rejected".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .dead_letters;
    let mut devices: Vec<String> = letters
        .iter()
        .filter_map(|l| l.reading.as_ref().map(|r| r.device_id.clone()))
        .collect();
    devices.sort();
    assert_eq!(
        devices,
        ["climate-01", "meter-01"],
        "both points of the minute: {letters:?}"
    );
    for letter in &letters {
        assert!(
            letter.detail.contains("field type conflict"),
            "{}",
            letter.detail
        );
    }
    assert_eq!(
        real.mongo_documents("minute_docs").await?.len(),
        2,
        "documents unaffected"
    );
    let parquet = real
        .bucket_objects(&real.primary_bucket)
        .await?
        .into_keys()
        .filter(|p| p.ends_with(".parquet"))
        .count();
    assert_eq!(parquet, 2, "the archive unaffected (two kinds' hours)");
    t.node.shutdown().await?;
    Ok(())
}
