//! Supervision through the real node: a device actor that panics is
//! restarted and its batch completes; a batch that crashes it every time is
//! a poison message and lands in dead letters.
//!
//! The crashes are FAULT INJECTION: a crash hook handed to the actor tree
//! makes the device actor panic on chosen readings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use vatio_actors::TreeOptions;
use vatio_proto::v1::{self};
use vatio_tests::{T0_MS, TestNode, batch, power, test_config};

fn meter(seq: u64, kw: f64) -> v1::Reading {
    power("meter-07", seq, T0_MS - 1_000, kw)
}

async fn node_with_hook(hook: vatio_actors::device::CrashHook) -> anyhow::Result<TestNode> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    cfg.supervision.backoff_initial = std::time::Duration::from_millis(10);
    cfg.supervision.backoff_max = std::time::Duration::from_millis(40);
    TestNode::start_with(
        dir,
        cfg,
        TreeOptions {
            crash_hook: Some(hook),
            ..TreeOptions::default()
        },
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_device_actor_is_restarted_and_finishes_the_batch() -> anyhow::Result<()> {
    let crashes = Arc::new(AtomicU32::new(0));
    let seen = crashes.clone();
    // Crash on the first sight of 13 kW only.
    let t = node_with_hook(Arc::new(move |r| {
        r.value == 13.0 && seen.fetch_add(1, Ordering::SeqCst) == 0
    }))
    .await?;
    let ack = t
        .ingest()
        .await?
        .ingest_batch(batch(1, vec![meter(1, 12.0), meter(2, 13.0)]))
        .await?
        .into_inner();
    assert_eq!((ack.accepted, ack.dead_lettered), (2, 0));
    assert_eq!(
        crashes.load(Ordering::SeqCst),
        2,
        "crashed once, then handled"
    );
    let status = t.status().await?;
    assert_eq!(status.actor_restarts, 1);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_always_crashes_its_actor_is_a_poison_message() -> anyhow::Result<()> {
    let t = node_with_hook(Arc::new(|r| r.value == 666.0)).await?;
    let mut ingest = t.ingest().await?;
    let ack = ingest
        .ingest_batch(batch(1, vec![meter(1, 1.0), meter(2, 666.0)]))
        .await?
        .into_inner();
    assert_eq!(
        (ack.accepted, ack.dead_lettered),
        (0, 2),
        "the whole group is poison"
    );
    // The device keeps working for the next batch.
    let ack = ingest
        .ingest_batch(batch(2, vec![meter(3, 3.0)]))
        .await?
        .into_inner();
    assert_eq!(ack.accepted, 1);
    t.flush().await?;
    let letters = t
        .admin()
        .await?
        .list_dead_letters(v1::ListDeadLettersRequest {
            reason: "poison".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 2);
    assert!(
        letters
            .iter()
            .all(|d| d.detail.contains("crashed the device actor 3 times"))
    );
    let status = t.status().await?;
    assert_eq!(status.actor_restarts, 3);
    t.node.shutdown().await?;
    Ok(())
}
