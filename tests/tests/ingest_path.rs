//! A reading's whole path on one node, through the real gRPC API into the
//! real embedded stores: what the ack says and exactly what each store holds.

use std::sync::Arc;

use arrow_array::{Array, Float64Array, StringArray, UInt64Array};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use vatio_proto::v1::{self, DeviceKind};
use vatio_stores::{DeviceId, EventFilter, EventType, LatestFilter, MINUTE_MS, Metric};
use vatio_tests::{T0_MS, TestNode, batch, reading};

use vatio_tests::mixed::{M, mixed_batch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_counts_accepted_duplicates_and_dead_letters() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    let ack = t
        .ingest()
        .await?
        .ingest_batch(mixed_batch())
        .await?
        .into_inner();
    assert_eq!(ack.batch_id, 1);
    assert_eq!((ack.accepted, ack.duplicates, ack.dead_lettered), (8, 1, 3));
    assert_eq!(ack.guarantee, v1::AckGuarantee::LocalLog as i32);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_series_holds_minute_points_in_canonical_units() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    t.ingest().await?.ingest_batch(mixed_batch()).await?;
    t.flush().await?;
    let ts = &t.stores().timeseries;

    let p = ts
        .point(&DeviceId::new("meter-01"), Metric::Power, M)
        .await?
        .expect("meter-01 power point for 09:58");
    assert_eq!(
        p.stats.count, 5,
        "five accepted readings, the duplicate not counted"
    );
    assert_eq!(p.stats.min, 0.3);
    assert_eq!(p.stats.max, 500.0);
    assert!((p.stats.sum - 1200.3).abs() < 1e-9);
    assert_eq!((p.stats.last, p.stats.last_seq), (500.0, 5));

    let t_point = ts
        .point(&DeviceId::new("climate-01"), Metric::Temperature, M)
        .await?
        .expect("climate-01 temperature point");
    assert_eq!(
        t_point.stats.count, 3,
        "21.5 C, 50 C and 68 F; NaN and future refused"
    );
    assert!((t_point.stats.min - 20.0).abs() < 1e-9);
    assert!(
        ts.point(&DeviceId::new("climate-01"), Metric::Humidity, M)
            .await?
            .is_none(),
        "the only humidity reading was out of range"
    );

    let flow = ts.power_flow(M, M + MINUTE_MS).await?;
    assert_eq!(flow.len(), 1);
    assert_eq!(flow[0].meters, 1);
    assert!((flow[0].total_kw - 240.06).abs() < 1e-9);

    let latest = ts
        .latest(&LatestFilter {
            device: Some(DeviceId::new("meter-01")),
            ..Default::default()
        })
        .await?;
    assert_eq!(latest.len(), 1);
    assert_eq!((latest[0].value, latest[0].ts_ms), (500.0, M + 5_000));

    // The same through the gRPC query API.
    let resp = t
        .query()
        .await?
        .power_flow(v1::PowerFlowRequest {
            from_unix_ms: M,
            to_unix_ms: M + MINUTE_MS,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(resp.minutes.len(), 1);
    assert!((resp.minutes[0].total_kw - 240.06).abs() < 1e-9);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_hold_minute_docs_and_threshold_events() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    t.ingest().await?.ingest_batch(mixed_batch()).await?;
    t.flush().await?;
    let docs = &t.stores().documents;
    let doc = docs
        .minute_doc(&DeviceId::new("climate-01"), M)
        .await?
        .expect("climate-01 minute document");
    assert_eq!(doc.metrics.len(), 1);
    assert_eq!(doc.metrics[&Metric::Temperature].count, 3);

    let events = docs.events(&EventFilter::default()).await?;
    assert_eq!(events.len(), 1, "one over-temperature reading: {events:?}");
    assert_eq!(events[0].event_type, EventType::OverTemperature);
    assert_eq!(
        (events[0].device.as_str(), events[0].seq),
        ("climate-01", 5)
    );
    assert_eq!(events[0].id(), "climate-01/5/over_temperature");

    let resp = t
        .query()
        .await?
        .events(v1::EventsRequest {
            event_type: "over_temperature".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(resp.events.len(), 1);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_reading_reason_and_source() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    t.ingest().await?.ingest_batch(mixed_batch()).await?;
    t.flush().await?;
    let list = t
        .admin()
        .await?
        .list_dead_letters(v1::ListDeadLettersRequest::default())
        .await?
        .into_inner()
        .dead_letters;
    let mut got: Vec<(u64, String)> = list
        .iter()
        .map(|d| (d.reading.as_ref().map_or(0, |r| r.seq), d.reason.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (2, "out_of_range".to_string()),
            (3, "not_finite".to_string()),
            (4, "future_timestamp".to_string()),
        ]
    );
    assert!(list.iter().all(|d| d.source.starts_with("e2e")), "{list:?}");
    assert!(list.iter().all(|d| d.received_unix_ms == T0_MS));
    let humidity = list
        .iter()
        .find(|d| d.reason == "out_of_range")
        .expect("out_of_range letter");
    assert!(
        humidity.detail.contains("130"),
        "detail names the value: {}",
        humidity.detail
    );

    let counts = t
        .query()
        .await?
        .dead_letter_counts(v1::DeadLetterCountsRequest::default())
        .await?
        .into_inner();
    assert_eq!(counts.total, 3);
    t.node.shutdown().await?;
    Ok(())
}

fn read_parquet(path: &std::path::Path) -> anyhow::Result<Vec<(String, u64, String, f64)>> {
    let bytes = Bytes::from(std::fs::read(path)?);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| -> anyhow::Result<Arc<dyn Array>> {
            Ok(batch
                .column_by_name(name)
                .ok_or_else(|| anyhow::anyhow!("no column {name}"))?
                .clone())
        };
        let device = col("device_id")?;
        let device = device
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("utf8 device_id");
        let seq = col("seq")?;
        let seq = seq.as_any().downcast_ref::<UInt64Array>().expect("u64 seq");
        let metric = col("metric")?;
        let metric = metric
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("utf8 metric");
        let value = col("value")?;
        let value = value
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("f64 value");
        for i in 0..batch.num_rows() {
            rows.push((
                device.value(i).to_string(),
                seq.value(i),
                metric.value(i).to_string(),
                value.value(i),
            ));
        }
    }
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_holds_each_reading_once_in_both_azs() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    t.ingest().await?.ingest_batch(mixed_batch()).await?;
    t.flush().await?;
    let part = format!(
        "readings/kind=electricity_meter/date=2026-11-26/hour=09/part-{}.parquet",
        t.cfg.node.id
    );
    let primary = t
        .cfg
        .archive_dir(&t.cfg.archiver.primary_root)
        .expect("a local archive root")
        .join(&part);
    let replica = t
        .cfg
        .archive_dir(&t.cfg.archiver.replica_root)
        .expect("a local archive root")
        .join(&part);
    let rows = read_parquet(&primary)?;
    assert_eq!(
        rows,
        vec![
            ("meter-01".to_string(), 1, "power".to_string(), 100.0),
            ("meter-01".to_string(), 2, "power".to_string(), 200.0),
            ("meter-01".to_string(), 3, "power".to_string(), 0.3),
            ("meter-01".to_string(), 4, "power".to_string(), 400.0),
            ("meter-01".to_string(), 5, "power".to_string(), 500.0),
        ]
    );
    assert_eq!(
        std::fs::read(&primary)?,
        std::fs::read(&replica)?,
        "replica is byte-identical"
    );

    let manifest_path = primary.with_file_name(format!("manifest-{}.json", t.cfg.node.id));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest_path)?)?;
    assert_eq!(manifest["rows"], 5);
    assert_eq!(manifest["schema_version"], 1);

    let climate = t
        .cfg
        .archive_dir(&t.cfg.archiver.primary_root)
        .expect("a local archive root")
        .join(format!(
            "readings/kind=climate_sensor/date=2026-11-26/hour=09/part-{}.parquet",
            t.cfg.node.id
        ));
    let seqs: Vec<u64> = read_parquet(&climate)?.into_iter().map(|r| r.1).collect();
    assert_eq!(seqs, vec![1, 5, 6]);

    // Flushing again re-seals nothing new and leaves the same bytes.
    let before = std::fs::read(&primary)?;
    t.flush().await?;
    assert_eq!(std::fs::read(&primary)?, before);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_straggler_behind_the_reorder_window_is_dead_lettered_as_late() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    let mut ingest = t.ingest().await?;
    let m2 = |seq: u64| {
        reading(
            "meter-02",
            DeviceKind::ElectricityMeter,
            seq,
            M + seq as i64 * 1000,
            "power",
            10.0 * seq as f64,
            "kW",
        )
    };
    let ack = ingest
        .ingest_batch(batch(1, vec![m2(1), m2(3)]))
        .await?
        .into_inner();
    assert_eq!(ack.accepted, 2);
    // The flush gives up on the gap: seq 2 is now behind the watermark.
    t.flush().await?;
    let ack = ingest
        .ingest_batch(batch(2, vec![m2(2)]))
        .await?
        .into_inner();
    assert_eq!((ack.accepted, ack.dead_lettered), (0, 1));
    let list = t
        .admin()
        .await?
        .list_dead_letters(v1::ListDeadLettersRequest {
            reason: "late".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .dead_letters;
    assert_eq!(list.len(), 1);
    t.flush().await?;
    let p = t.power_point("meter-02", M).await?;
    assert_eq!(p.stats.count, 2);

    // Replay brings the straggler in: it was never accepted, so it is not a duplicate.
    let summary = t
        .admin()
        .await?
        .replay_dead_letters(v1::ReplayDeadLettersRequest {
            reason: "late".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        (summary.attempted, summary.accepted, summary.refused_again),
        (1, 1, 0)
    );
    t.flush().await?;
    let p = t.power_point("meter-02", M).await?;
    assert_eq!(p.stats.count, 3);
    // A second replay finds nothing pending.
    let again = t
        .admin()
        .await?
        .replay_dead_letters(v1::ReplayDeadLettersRequest::default())
        .await?
        .into_inner();
    assert_eq!(again.attempted, 0);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_the_rule_no_longer_refuses_accepts_and_refused_stay_pending()
-> anyhow::Result<()> {
    let t = TestNode::start().await?;
    t.ingest().await?.ingest_batch(mixed_batch()).await?;
    t.flush().await?;
    // A day later the "future" reading is valid; NaN and 130 % are still not.
    t.clock.advance(86_400_000);
    let summary = t
        .admin()
        .await?
        .replay_dead_letters(v1::ReplayDeadLettersRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        (summary.attempted, summary.accepted, summary.refused_again),
        (3, 1, 2)
    );
    let pending = t
        .admin()
        .await?
        .list_dead_letters(v1::ListDeadLettersRequest::default())
        .await?
        .into_inner()
        .dead_letters;
    let mut reasons: Vec<String> = pending.iter().map(|d| d.reason.clone()).collect();
    reasons.sort();
    assert_eq!(reasons, vec!["not_finite", "out_of_range"]);
    assert!(pending.iter().all(|d| d.replay_attempts == 1));
    t.node.shutdown().await?;
    Ok(())
}
