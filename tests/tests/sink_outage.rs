//! A sink outage loses nothing and holds nothing else up: while the
//! time-series store is down (FAULT INJECTION: a failing wrapper around the
//! embedded store) ingest is acknowledged from the log, the document store
//! and the archive stay current, the aggregator's lag and the sink's
//! breaker show in the status, and once the store is back the aggregator
//! catches up from the log with every reading exactly once.

use std::sync::Arc;
use std::time::Duration;

use vatio_actors::{TreeOptions, TreeStores};
use vatio_cluster::stores::open_embedded;
use vatio_proto::v1::{self, DeviceKind};
use vatio_stores::{DeviceId, MINUTE_MS, Metric};
use vatio_tests::outage::FlakyTimeSeries;
use vatio_tests::{T0_MS, TestNode, batch, reading, test_config};

const M: i64 = T0_MS - 2 * MINUTE_MS;
const BATCHES: u64 = 20;
const PER_BATCH: u64 = 50;

fn batch_no(b: u64) -> v1::IngestRequest {
    let readings = (1..=PER_BATCH)
        .map(|i| {
            let seq = (b - 1) * PER_BATCH + i;
            reading(
                "meter-07",
                DeviceKind::ElectricityMeter,
                seq,
                M + seq as i64,
                "power",
                2.0,
                "kW",
            )
        })
        .collect();
    batch(b, readings)
}

fn subscriber<'a>(s: &'a v1::StatusResponse, name: &str) -> &'a v1::SubscriberStatus {
    s.subscribers
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("status lists subscriber {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_series_outage_is_caught_up_from_the_log() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    cfg.aggregator.flush_max_delay = Duration::from_millis(20);
    cfg.stream_etl.flush_max_delay = Duration::from_millis(20);
    let real = open_embedded(&cfg)?;
    let (flaky, outage) = FlakyTimeSeries::down(real.timeseries.clone());
    let stores = TreeStores {
        timeseries: Arc::new(flaky),
        ..real
    };
    let t = TestNode::start_with(dir, cfg, TreeOptions::default(), Some(stores)).await?;
    let mut ingest = t.ingest().await?;
    for b in 1..=BATCHES {
        let ack = ingest.ingest_batch(batch_no(b)).await?.into_inner();
        assert_eq!(
            ack.accepted as u64, PER_BATCH,
            "acknowledged during the outage"
        );
    }
    let total = BATCHES * PER_BATCH;
    // Past the flush delays (the node runs on a manual clock).
    t.clock.advance(1_000);

    // The other sinks keep up while the time series is down.
    let s = t
        .wait_for_status("stream-etl and archiver have committed the head", |s| {
            subscriber(s, "stream-etl").lag_bytes == 0 && subscriber(s, "archiver").lag_bytes == 0
        })
        .await?;
    let doc = t
        .stores()
        .documents
        .minute_doc(&DeviceId::new("meter-07"), M)
        .await?
        .expect("the minute document is written during the outage");
    assert_eq!(doc.metrics[&Metric::Power].count, total);
    // The outage is visible: lag on the aggregator, failures on the sink.
    assert!(subscriber(&s, "aggregator").lag_bytes > 0);
    let sink = s
        .sinks
        .iter()
        .find(|x| x.name == "timeseries")
        .expect("status lists the timeseries sink");
    assert!(sink.transient_failures > 0);
    assert!(outage.refused() > 0);
    assert!(
        t.stores()
            .timeseries
            .point(&DeviceId::new("meter-07"), Metric::Power, M)
            .await
            .is_err(),
        "the store really is down"
    );

    // Back up: the breaker's open period runs on the node's clock.
    outage.set_down(false);
    t.clock.advance(60_000);
    t.wait_for_status("the aggregator has caught up", |s| {
        subscriber(s, "aggregator").lag_bytes == 0
    })
    .await?;
    t.flush().await?;
    let p = t.power_point("meter-07", M).await?;
    assert_eq!(p.stats.count, total, "every reading exactly once");
    assert!((p.stats.sum - 2.0 * total as f64).abs() < 1e-9);
    let doc = t
        .stores()
        .documents
        .minute_doc(&DeviceId::new("meter-07"), M)
        .await?
        .expect("minute document");
    assert_eq!(
        doc.metrics[&Metric::Power].count,
        total,
        "documents unchanged"
    );
    t.node.shutdown().await?;
    Ok(())
}
