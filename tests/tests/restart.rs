//! A node stopped cleanly and started again on the same data directory
//! continues where it left off: a minute that already has a stored point or
//! document is extended with new readings, not overwritten.

use vatio_actors::TreeOptions;
use vatio_proto::v1::DeviceKind;
use vatio_stores::{DeviceId, MINUTE_MS, Metric};
use vatio_tests::{T0_MS, TestNode, batch, reading};

const M: i64 = T0_MS - 2 * MINUTE_MS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_extends_stored_minutes() -> anyhow::Result<()> {
    let meter = |seq: u64| {
        reading(
            "meter-05",
            DeviceKind::ElectricityMeter,
            seq,
            M + seq as i64 * 1000,
            "power",
            seq as f64,
            "kW",
        )
    };
    let first = TestNode::start().await?;
    let ack = first
        .ingest()
        .await?
        .ingest_batch(batch(1, vec![meter(1), meter(2)]))
        .await?
        .into_inner();
    assert_eq!(ack.accepted, 2);
    let TestNode { node, dir, cfg, .. } = first;
    node.shutdown().await?;

    let second = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    let ack = second
        .ingest()
        .await?
        .ingest_batch(batch(2, vec![meter(3)]))
        .await?
        .into_inner();
    assert_eq!(ack.accepted, 1);
    second.flush().await?;
    let p = second.power_point("meter-05", M).await?;
    assert_eq!((p.stats.count, p.stats.sum), (3, 6.0));
    let doc = second
        .stores()
        .documents
        .minute_doc(&DeviceId::new("meter-05"), M)
        .await?
        .expect("meter-05 document");
    assert_eq!(doc.metrics[&Metric::Power].count, 3);
    second.node.shutdown().await?;
    Ok(())
}
