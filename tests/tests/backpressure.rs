//! Overload is answered with RESOURCE_EXHAUSTED and a retry hint, never with
//! a drop or an unbounded buffer: while the time-series sink is stalled
//! (FAULT INJECTION: a gated store) the write-ahead log keeps the readings
//! and ingest goes on, until the aggregator lags `log.unconsumed_bytes_max`
//! behind; then batches are refused whole. Once the sink recovers,
//! everything acknowledged lands exactly once.

use std::sync::Arc;
use std::time::Duration;

use vatio_actors::{TreeOptions, TreeStores};
use vatio_cluster::stores::open_embedded;
use vatio_proto::v1::{self, DeviceKind};
use vatio_stores::MINUTE_MS;
use vatio_tests::gate::GatedTimeSeries;
use vatio_tests::{T0_MS, TestNode, batch, reading, test_config};

const M: i64 = T0_MS - 2 * MINUTE_MS;
const BATCH: u64 = 2_000;
const LAG_MAX: u64 = 1 << 20;

/// Batch `b` (from 1): `BATCH` readings of one meter, all in minute `M`.
fn batch_no(b: u64) -> v1::IngestRequest {
    let readings = (1..=BATCH)
        .map(|i| {
            let seq = (b - 1) * BATCH + i;
            reading(
                "meter-03",
                DeviceKind::ElectricityMeter,
                seq,
                M + (seq / 10) as i64,
                "power",
                1.0,
                "kW",
            )
        })
        .collect();
    batch(b, readings)
}

fn lag_of(status: &v1::StatusResponse, name: &str) -> u64 {
    status
        .subscribers
        .iter()
        .find(|s| s.name == name)
        .map_or(u64::MAX, |s| s.unread_bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_turns_into_resource_exhausted_then_catches_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    cfg.ingest.retry_after = Duration::from_millis(250);
    cfg.log.unconsumed_bytes_max = LAG_MAX;
    cfg.aggregator.flush_max_points = 1;
    let real = open_embedded(&cfg)?;
    let (gated, gate) = GatedTimeSeries::closed(real.timeseries.clone());
    let stores = TreeStores {
        timeseries: Arc::new(gated),
        ..real
    };
    let t = TestNode::start_with(dir, cfg, TreeOptions::default(), Some(stores)).await?;
    let mut ingest = t.ingest().await?;
    let mut admin = t.admin().await?;

    // Acknowledged batch after batch: the log takes them while the sink is
    // stalled, until the aggregator's lag passes the bound.
    let mut acked = 0;
    let mut refused = None;
    for b in 1..=200 {
        match ingest.ingest_batch(batch_no(b)).await {
            Ok(ack) => {
                assert_eq!(ack.into_inner().accepted as u64, BATCH);
                acked += BATCH;
            }
            Err(e) => {
                refused = Some((b, e));
                break;
            }
        }
    }
    let (refused_no, err) = refused.expect("the lag bound must refuse a batch");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("aggregator"), "{}", err.message());
    assert_eq!(
        err.metadata()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok()),
        Some("250")
    );
    let status = admin.status(v1::StatusRequest {}).await?.into_inner();
    let lag = lag_of(&status, "aggregator");
    // Refused within the bound: at most one batch's record past it.
    assert!(lag > LAG_MAX, "refused only past the bound, lag {lag}");
    assert!(
        lag < LAG_MAX + 256 * 1024,
        "refused soon after the bound, lag {lag}"
    );
    // Nothing waits in memory: the log holds the backlog.
    assert_eq!(status.inflight_readings, 0);
    assert_eq!(status.batches_refused_overload, 1);

    gate.open();
    // The aggregator catches up from the log; then the refused batch goes in whole.
    let mut caught_up = false;
    for _ in 0..1_000 {
        let s = admin.status(v1::StatusRequest {}).await?.into_inner();
        if lag_of(&s, "aggregator") < LAG_MAX / 2 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        caught_up,
        "the aggregator caught up once its sink recovered"
    );
    let ack = ingest
        .ingest_batch(batch_no(refused_no))
        .await?
        .into_inner();
    assert_eq!((ack.accepted as u64, ack.duplicates), (BATCH, 0));
    acked += BATCH;
    t.flush().await?;
    let p = t.power_point("meter-03", M).await?;
    assert_eq!(p.stats.count, acked, "every acknowledged reading, once");
    t.node.shutdown().await?;
    Ok(())
}
