//! Overload is answered with RESOURCE_EXHAUSTED and a retry hint, never with
//! a drop: a stalled time-series sink (FAULT INJECTION: a gated store) fills
//! the bounded mailboxes and the in-flight budget, the next batch is
//! refused whole, and once the sink recovers everything acknowledged lands.

use std::sync::Arc;
use std::time::Duration;

use vatio_actors::{TreeOptions, TreeStores};
use vatio_cluster::stores::open_embedded;
use vatio_proto::v1::{self, DeviceKind};
use vatio_stores::MINUTE_MS;
use vatio_tests::gate::GatedTimeSeries;
use vatio_tests::{T0_MS, TestNode, batch, reading, test_config};

const M: i64 = T0_MS - 2 * MINUTE_MS;

fn five(b: u64) -> v1::IngestRequest {
    let readings = (1..=5)
        .map(|i| {
            let seq = (b - 1) * 5 + i;
            reading(
                "meter-03",
                DeviceKind::ElectricityMeter,
                seq,
                M + seq as i64,
                "power",
                1.0,
                "kW",
            )
        })
        .collect();
    batch(b, readings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_turns_into_resource_exhausted_then_catches_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    cfg.ingest.max_inflight_readings = 10;
    cfg.ingest.max_batch_readings = 5;
    cfg.ingest.retry_after = Duration::from_millis(250);
    cfg.aggregator.mailbox_readings = 5;
    cfg.aggregator.flush_max_points = 1;
    let real = open_embedded(&cfg)?;
    let (gated, gate) = GatedTimeSeries::closed(real.timeseries.clone());
    let stores = TreeStores {
        timeseries: Arc::new(gated),
        ..real
    };
    let t = TestNode::start_with(dir, cfg, TreeOptions::default(), Some(stores)).await?;
    let mut ingest = t.ingest().await?;

    // Batch 1: the aggregator takes it and stalls in its flush.
    // Batch 2: waits in the aggregator's one-slot mailbox. Both are acked.
    for b in 1..=2 {
        let ack = ingest.ingest_batch(five(b)).await?.into_inner();
        assert_eq!(ack.accepted, 5);
    }
    // Batches 3 and 4 fill the in-flight budget (10 readings): not acked
    // yet. Sent one after the other so that 3 reaches the device first.
    let mut admin = t.admin().await?;
    let mut pending = Vec::new();
    for (b, expected) in [(3, 5), (4, 10)] {
        let mut c = ingest.clone();
        pending.push(tokio::spawn(async move { c.ingest_batch(five(b)).await }));
        let inflight = wait_for_inflight(&mut admin, expected).await?;
        assert_eq!(inflight, expected, "batch {b} is held in flight");
    }

    let err = ingest
        .ingest_batch(five(5))
        .await
        .expect_err("no room for batch 5");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        err.metadata()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok()),
        Some("250")
    );

    gate.open();
    for p in pending {
        assert_eq!(p.await??.into_inner().accepted, 5);
    }
    // Nothing of the refused batch was taken: it is accepted whole now.
    let ack = ingest.ingest_batch(five(5)).await?.into_inner();
    assert_eq!((ack.accepted, ack.duplicates), (5, 0));
    t.flush().await?;
    let p = t.power_point("meter-03", M).await?;
    assert_eq!(p.stats.count, 25, "every acknowledged reading, once");
    let status = admin.status(v1::StatusRequest {}).await?.into_inner();
    assert_eq!(status.batches_refused_overload, 1);
    t.node.shutdown().await?;
    Ok(())
}

/// Polls the node's status until `inflight_readings` reaches `expected`
/// (bounded: about five seconds); returns the last value seen.
async fn wait_for_inflight(
    admin: &mut v1::admin_client::AdminClient<tonic::transport::Channel>,
    expected: u64,
) -> anyhow::Result<u64> {
    let mut inflight = 0;
    for _ in 0..500 {
        inflight = admin
            .status(v1::StatusRequest {})
            .await?
            .into_inner()
            .inflight_readings;
        if inflight == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(inflight)
}
