//! Injected write and fsync failures: the group fails, no partial bytes
//! remain, the head never covers them, and the log recovers when the fault
//! clears.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use vatio_wal::{FaultPoint, Log, LogConfig, LogError};

use crate::common::*;

/// Switches for the fault hook.
#[derive(Default)]
struct Faults {
    write: AtomicBool,
    sync: AtomicBool,
}

fn faulty_config(dir: &std::path::Path, faults: &Arc<Faults>) -> LogConfig {
    let mut cfg = small_segments(dir, 4096);
    let faults = Arc::clone(faults);
    cfg.fault = Some(Arc::new(move |point| {
        let fail = match point {
            FaultPoint::Write => faults.write.load(Ordering::SeqCst),
            FaultPoint::Sync => faults.sync.load(Ordering::SeqCst),
        };
        // ENOSPC: what a full disk reports.
        fail.then(|| io::Error::from_raw_os_error(28))
    }));
    cfg
}

async fn fails_then_recovers(switch: fn(&Faults) -> &AtomicBool, op: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(Faults::default());
    let (log, _) = Log::open(faulty_config(dir.path(), &faults)).expect("open");
    let mut acknowledged: Vec<Bytes> = (0..5).map(|i| payload(i, 80)).collect();
    append_all(&log, &acknowledged).await;
    let head = log.visible_head();
    let (base, path) = segment_of(dir.path(), head);

    switch(&faults).store(true, Ordering::SeqCst);
    let failing = futures::future::join_all((100..110).map(|i| log.append(payload(i, 80))));
    for result in within("failing appends", failing).await {
        match result {
            Err(LogError::Io {
                op: got,
                path: p,
                source,
            }) => {
                assert_eq!(got, op);
                assert_eq!(p, path);
                assert_eq!(source.raw_os_error(), Some(28));
            }
            other => panic!("expected an Io error, got {other:?}"),
        }
    }
    let err = log
        .append(payload(110, 80))
        .await
        .expect_err("still failing");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{op} {}", path.display()))
            && message.contains("No space left"),
        "{message}"
    );
    assert_eq!(
        log.visible_head(),
        head,
        "the head never covers failed bytes"
    );
    assert_eq!(file_len(&path), head.0 - base, "no partial bytes remain");
    assert!(log.stats().write_errors >= 1);

    switch(&faults).store(false, Ordering::SeqCst);
    let ack = log
        .append(payload(5, 80))
        .await
        .expect("append after the fault clears");
    assert_eq!(
        ack.position, head,
        "the next record takes the failed bytes' place"
    );
    acknowledged.push(payload(5, 80));
    log.close().await.expect("close");

    let (log, recovery) = Log::open(LogConfig::new(dir.path())).expect("reopen");
    assert_eq!(recovery.cut, None, "{recovery}");
    let read = read_to_head(&log, log.start(), 1 << 20).await;
    assert_eq!(
        payloads_of(&read),
        acknowledged,
        "only acknowledged records"
    );
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_failed_write_fails_its_group_and_leaves_nothing_behind() {
    fails_then_recovers(|f| &f.write, "writing log segment").await;
}

#[tokio::test]
async fn a_failed_fsync_fails_its_group_and_leaves_nothing_behind() {
    fails_then_recovers(|f| &f.sync, "syncing log segment").await;
}

#[tokio::test]
async fn a_failed_interval_fsync_puts_the_log_in_the_failed_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(Faults::default());
    let mut cfg = faulty_config(dir.path(), &faults);
    cfg.fsync = vatio_wal::FsyncMode::Interval(std::time::Duration::from_millis(5));
    let (log, _) = Log::open(cfg).expect("open");
    faults.sync.store(true, Ordering::SeqCst);
    // Acknowledged unsynced records cannot be taken back: when their fsync
    // fails the log stops accepting appends until it is reopened.
    let reason = within("the failed state", async {
        let mut i = 0;
        loop {
            match log.append(payload(i, 50)).await {
                Ok(ack) => assert!(!ack.synced),
                Err(LogError::Failed(reason)) => break reason,
                Err(other) => panic!("expected Failed, got {other}"),
            }
            i += 1;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(reason.contains("interval fsync failed"), "{reason}");
    assert!(log.close().await.is_err(), "the final fsync fails too");

    let (log, recovery) = Log::open(LogConfig::new(dir.path())).expect("reopen");
    assert_eq!(recovery.cut, None);
    log.close().await.expect("close");
}
