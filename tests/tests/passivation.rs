//! Device actors are passivated when idle and come back with their state:
//! a passivated device still knows which seqs it accepted.

use std::time::Duration;

use vatio_actors::TreeOptions;
use vatio_proto::v1::{self};
use vatio_tests::{T0_MS, TestNode, batch, power, test_config};

fn meter(device: &str, seq: u64) -> v1::Reading {
    power(device, seq, T0_MS - 1_000, 7.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_devices_are_passivated_and_keep_their_dedupe_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    // Short, so that the router scans for idle devices every 50 ms of real time.
    cfg.device.idle_passivate_after = Duration::from_millis(200);
    let t = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    let mut ingest = t.ingest().await?;
    let readings = (0..10)
        .map(|d| meter(&format!("meter-{d:02}"), 1))
        .collect();
    let ack = ingest.ingest_batch(batch(1, readings)).await?.into_inner();
    assert_eq!(ack.accepted, 10);
    let mut admin = t.admin().await?;
    let status = admin.status(v1::StatusRequest {}).await?.into_inner();
    assert_eq!((status.devices_known, status.devices_active), (10, 10));

    // Silence on the node's clock makes every device idle; the
    // router's periodic scan passivates them.
    t.clock.advance(1_000);
    let mut active = u64::MAX;
    for _ in 0..500 {
        active = admin
            .status(v1::StatusRequest {})
            .await?
            .into_inner()
            .devices_active;
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(active, 0, "all ten passivated");

    // Reactivated from the compact table: seq 1 is a duplicate, seq 2 is new.
    let ack = ingest
        .ingest_batch(batch(2, vec![meter("meter-03", 1), meter("meter-03", 2)]))
        .await?
        .into_inner();
    assert_eq!((ack.accepted, ack.duplicates), (1, 1));
    let status = admin.status(v1::StatusRequest {}).await?.into_inner();
    assert_eq!((status.devices_known, status.devices_active), (10, 1));
    t.node.shutdown().await?;
    Ok(())
}
