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

/// Durable lengths as the hook reported them, per segment file.
type DurableLengths = Arc<std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, u64>>>;

fn reporting(cfg: &mut LogConfig) -> DurableLengths {
    let lengths = DurableLengths::default();
    let sink = Arc::clone(&lengths);
    cfg.durable = Some(Arc::new(move |path, len| {
        if let Ok(mut map) = sink.lock() {
            map.insert(path.to_path_buf(), len);
        }
    }));
    lengths
}

/// What a power loss leaves: every segment cut back to its last durable
/// length as reported. Returns how many bytes were lost.
fn lose_power(
    dir: &std::path::Path,
    durable: &std::collections::HashMap<std::path::PathBuf, u64>,
) -> u64 {
    let mut lost = 0;
    for (_, path) in segment_files(dir) {
        let len = *durable
            .get(&path)
            .unwrap_or_else(|| panic!("{} was never reported durable", path.display()));
        lost += file_len(&path) - len;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len))
            .expect("cut a segment back");
    }
    lost
}

/// Appends 60 records to a log opened with `cfg`, then loses the power:
/// the segments are cut back to what was durable after the last append.
/// Returns what was written and how many bytes were lost.
async fn append_then_lose_power(mut cfg: LogConfig) -> (Vec<Bytes>, u64) {
    let dir = cfg.dir.clone();
    let durable = reporting(&mut cfg);
    let (log, _) = Log::open(cfg).expect("open");
    let written: Vec<Bytes> = (0..60).map(|i| payload(i, 200)).collect();
    append_all(&log, &written).await;
    let at_power_loss = durable.lock().expect("lengths").clone();
    // (Closing syncs the rest; the cut below undoes it.)
    log.close().await.expect("close");
    (written, lose_power(&dir, &at_power_loss))
}

/// What the simulation's power loss relies on: with `fsync = always`,
/// every acknowledged record is within what the hook reported durable.
#[tokio::test]
async fn under_fsync_always_every_acknowledged_record_is_reported_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (written, lost) = append_then_lose_power(small_segments(dir.path(), 4096)).await;
    assert_eq!(lost, 0);

    let (log, recovery) = Log::open(LogConfig::new(dir.path())).expect("reopen");
    assert_eq!(recovery.cut, None);
    let records = read_to_head(&log, log.start(), 1 << 20).await;
    assert_eq!(payloads_of(&records), written);
    log.close().await.expect("close");
}

/// Under `fsync = interval` acknowledged records may not be durable yet:
/// the reported lengths end on record boundaries, so a log cut back to
/// them opens without a cut and holds a prefix of what was written.
#[tokio::test]
async fn a_log_cut_back_to_its_durable_lengths_opens_clean_with_a_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = small_segments(dir.path(), 4096);
    // Only rolls sync within the test.
    cfg.fsync = vatio_wal::FsyncMode::Interval(std::time::Duration::from_secs(3600));
    let (written, lost) = append_then_lose_power(cfg).await;
    assert!(lost > 0, "the unsynced tail goes");

    let (log, recovery) = Log::open(LogConfig::new(dir.path())).expect("reopen");
    assert_eq!(recovery.cut, None);
    let kept = payloads_of(&read_to_head(&log, log.start(), 1 << 20).await);
    assert!(
        !kept.is_empty() && kept.len() < written.len(),
        "kept {}",
        kept.len()
    );
    assert_eq!(kept, written[..kept.len()]);
    log.close().await.expect("close");
}
