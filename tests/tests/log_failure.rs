//! A write-ahead log that cannot write (disk full, I/O error) fails the
//! ingest call with a clear error, keeps the node alive and applies
//! nothing of the refused batch; once the disk recovers the same batch is
//! accepted whole and everything acknowledged is stored once.
//! FAULT INJECTION: the log's writes fail while the test says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vatio_actors::TreeOptions;
use vatio_proto::v1::{self, DeviceKind};
use vatio_stores::MINUTE_MS;
use vatio_tests::{T0_MS, TestNode, batch, reading, test_config};
use vatio_wal::FaultPoint;

const M: i64 = T0_MS - 2 * MINUTE_MS;

fn batch_no(b: u64) -> v1::IngestRequest {
    let readings = (1..=10)
        .map(|i| {
            let seq = (b - 1) * 10 + i;
            reading(
                "meter-09",
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

/// A fault hook that fails `point` with OS error `errno` while the
/// returned switch is on.
fn switched_fault(point: FaultPoint, errno: i32) -> (Arc<AtomicBool>, vatio_wal::FaultHook) {
    let on = Arc::new(AtomicBool::new(false));
    let switch = on.clone();
    let hook: vatio_wal::FaultHook = Arc::new(move |at| {
        (at == point && switch.load(Ordering::SeqCst))
            .then(|| std::io::Error::from_raw_os_error(errno))
    });
    (on, hook)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_call_and_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = test_config(&dir);
    // ENOSPC: what a full disk reports.
    let (full, fault) = switched_fault(FaultPoint::Write, 28);
    let t = TestNode::start_full(dir, cfg, TreeOptions::default(), None, Some(fault)).await?;
    let mut ingest = t.ingest().await?;
    assert_eq!(
        ingest
            .ingest_batch(batch_no(1))
            .await?
            .into_inner()
            .accepted,
        10
    );

    full.store(true, Ordering::SeqCst);
    let err = ingest
        .ingest_batch(batch_no(2))
        .await
        .expect_err("the log cannot take batch 2");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("write-ahead log"),
        "says what failed: {}",
        err.message()
    );
    let status = t.status().await?;
    assert!(status.log.as_ref().is_some_and(|l| l.append_failures > 0));

    // The node is alive; with room again, batch 2 is accepted whole: none
    // of it was applied (no duplicates), and batch 1 is still there.
    full.store(false, Ordering::SeqCst);
    let ack = ingest.ingest_batch(batch_no(2)).await?.into_inner();
    assert_eq!((ack.accepted, ack.duplicates), (10, 0));
    t.flush().await?;
    let p = t.power_point("meter-09", M).await?;
    assert_eq!(p.stats.count, 20);
    t.node.shutdown().await?;
    Ok(())
}

/// Under `fsync = interval` a failed fsync may have lost acknowledged
/// records, and the log takes nothing more until it is reopened: the node
/// stops (its service manager starts it again), and the restarted node
/// recovers the log and takes the readings again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_interval_fsync_stops_the_node_and_a_restart_recovers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    cfg.log.fsync = vatio_config::LogFsync::Interval(std::time::Duration::from_millis(5));
    let (failing, fault) = switched_fault(FaultPoint::Sync, 5); // EIO
    let t =
        TestNode::start_full(dir, cfg.clone(), TreeOptions::default(), None, Some(fault)).await?;
    let mut ingest = t.ingest().await?;
    assert_eq!(
        ingest
            .ingest_batch(batch_no(1))
            .await?
            .into_inner()
            .accepted,
        10
    );

    failing.store(true, Ordering::SeqCst);
    // Acknowledged (written, not yet synced); the interval's fsync fails.
    let _ = ingest.ingest_batch(batch_no(2)).await;
    tokio::time::timeout(std::time::Duration::from_secs(20), t.node.failed())
        .await
        .map_err(|_| anyhow::anyhow!("the node did not stop after its log failed"))?;
    let reason = t.node.tree().log_failure();
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("interval fsync failed")),
        "{reason:?}"
    );
    drop(ingest);
    let TestNode { dir, .. } = t;

    // Restarted on the same directory with a working disk: batch 1 is
    // there, batch 2 is taken (again, or for the first time) and stored once.
    let t = TestNode::start_full(dir, cfg, TreeOptions::default(), None, None).await?;
    let mut ingest = t.ingest().await?;
    let ack = ingest.ingest_batch(batch_no(2)).await?.into_inner();
    assert_eq!(ack.accepted + ack.duplicates, 10);
    t.flush().await?;
    let p = t.power_point("meter-09", M).await?;
    assert_eq!(p.stats.count, 20);
    t.node.shutdown().await?;
    Ok(())
}
