//! Appending: round trips across segment rolls, reopening, group commit and
//! the fsync modes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use vatio_wal::{
    FaultPoint, FsyncMode, HEADER_BYTES, Log, LogConfig, LogError, PAYLOAD_BYTES_MAX, Position,
};

use crate::common::*;

#[tokio::test]
async fn records_round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, recovery) = Log::open(small_segments(dir.path(), 4096)).expect("open");
    assert_eq!(recovery.records, 0);
    assert_eq!(recovery.head, Position(HEADER_BYTES));
    assert_eq!(recovery.cut, None);
    assert_eq!(log.start(), Position(HEADER_BYTES));

    let payloads: Vec<Bytes> = (0..300).map(|i| payload(i, 20 + (i * 7) % 150)).collect();
    let acks = append_all(&log, &payloads).await;
    for pair in acks.windows(2) {
        let follows = pair[1].position == pair[0].end
            || pair[1].position == pair[0].end.add_header_for_test();
        assert!(follows, "{:?} does not follow {:?}", pair[1], pair[0]);
        assert!(pair[1].synced);
    }
    let segments = segment_files(dir.path());
    assert!(
        segments.len() >= 4,
        "expected several rolls, got {}",
        segments.len()
    );
    for (base, path) in &segments {
        assert!(file_len(path) <= 4096, "segment {base} is over its limit");
    }
    for pair in segments.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + file_len(&pair[0].1),
            "bases are contiguous"
        );
    }
    let head = log.visible_head();
    assert_eq!(head, acks[299].end);
    assert_eq!(
        payloads_of(&read_to_head(&log, log.start(), 1000).await),
        payloads
    );
    let stats = log.stats();
    assert_eq!(stats.appends, 300);
    assert_eq!(stats.segments, segments.len() as u64);
    assert_eq!(stats.head, head);
    log.close().await.expect("close");

    let (log, recovery) = Log::open(small_segments(dir.path(), 4096)).expect("reopen");
    assert_eq!(recovery.head, head, "{recovery}");
    assert_eq!(recovery.records, 300);
    assert_eq!(recovery.segments as usize, segments.len());
    assert_eq!(recovery.cut, None);
    assert_eq!(log.visible_head(), head);

    let more: Vec<Bytes> = (300..310).map(|i| payload(i, 64)).collect();
    let more_acks = append_all(&log, &more).await;
    assert!(more_acks[0].position == head || more_acks[0].position == head.add_header_for_test());
    let all = read_to_head(&log, Position(0), 1 << 20).await;
    assert_eq!(all.len(), 310);
    assert_eq!(payloads_of(&all[..300]), payloads);
    assert_eq!(payloads_of(&all[300..]), more);
    log.close().await.expect("close");
}

trait AddHeader {
    fn add_header_for_test(self) -> Position;
}

impl AddHeader for Position {
    /// Where the first record of a segment starting here lies.
    fn add_header_for_test(self) -> Position {
        Position(self.0 + HEADER_BYTES)
    }
}

/// Blocks the writer thread at its first write until released, so that a
/// test can queue appends behind it deterministically.
#[derive(Default)]
struct Gate {
    used: AtomicBool,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait_once(&self) {
        if self.used.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut open = self.open.lock().expect("gate lock");
        while !*open {
            open = self.opened.wait(open).expect("gate wait");
        }
    }

    fn release(&self) {
        *self.open.lock().expect("gate lock") = true;
        self.opened.notify_all();
    }
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Arc::new(Gate::default());
    let mut cfg = LogConfig::new(dir.path());
    let hook_gate = Arc::clone(&gate);
    cfg.fault = Some(Arc::new(move |point| {
        if point == FaultPoint::Write {
            hook_gate.wait_once();
        }
        None
    }));
    let (log, _) = Log::open(cfg).expect("open");
    const APPENDS: usize = 200;
    // join_all polls every append once, queueing all of them, before the
    // second future releases the writer.
    let appends = futures::future::join_all((0..APPENDS).map(|i| log.append(payload(i, 100))));
    let release = async {
        gate.release();
    };
    let (results, ()) = within("200 appends", async { futures::join!(appends, release) }).await;
    let mut acks: Vec<_> = results.into_iter().map(|r| r.expect("append")).collect();
    assert!(acks.iter().all(|a| a.synced));
    acks.sort_by_key(|a| a.position);
    for pair in acks.windows(2) {
        assert_eq!(pair[1].position, pair[0].end, "no gaps, no overlaps");
    }
    let stats = log.stats();
    assert_eq!(stats.appends, APPENDS as u64);
    assert_eq!(stats.fsyncs, stats.groups, "Always: one fsync per group");
    assert!(
        stats.fsyncs <= 3,
        "{APPENDS} concurrent appends took {} fsyncs",
        stats.fsyncs
    );
    assert!(stats.fsync_micros_max >= stats.fsync_micros_p50);
    log.close().await.expect("close");
}

#[tokio::test]
async fn interval_mode_acknowledges_unsynced_then_syncs_within_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = LogConfig::new(dir.path());
    cfg.fsync = FsyncMode::Interval(Duration::from_millis(20));
    let (log, _) = Log::open(cfg).expect("open");
    let ack = log.append(payload(1, 100)).await.expect("append");
    assert!(!ack.synced);
    assert_eq!(log.visible_head(), ack.end, "visible after the write");
    // No more appends: the writer must still sync on its own.
    within("an interval fsync", async {
        while log.stats().fsyncs == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert_eq!(log.stats().fsyncs, 1);
    log.close().await.expect("close");
    assert_eq!(log.stats().fsyncs, 1, "nothing left to sync on close");
}

#[tokio::test]
async fn never_mode_syncs_only_on_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = LogConfig::new(dir.path());
    cfg.fsync = FsyncMode::Never;
    let (log, _) = Log::open(cfg).expect("open");
    for i in 0..10 {
        assert!(!log.append(payload(i, 50)).await.expect("append").synced);
    }
    assert_eq!(log.stats().fsyncs, 0);
    log.close().await.expect("close");
    assert_eq!(log.stats().fsyncs, 1);
}

#[tokio::test]
async fn oversized_records_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Log::open(LogConfig::new(dir.path())).expect("open");
    let err = log
        .append(Bytes::from(vec![0u8; PAYLOAD_BYTES_MAX + 1]))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, LogError::TooLarge { bytes, max } if bytes == PAYLOAD_BYTES_MAX + 1 && max == PAYLOAD_BYTES_MAX)
    );
    let ack = log
        .append(Bytes::from(vec![1u8; PAYLOAD_BYTES_MAX]))
        .await
        .expect("the largest record fits");
    assert_eq!(ack.end.0 - ack.position.0, PAYLOAD_BYTES_MAX as u64 + 8);
    log.close().await.expect("close");
}

#[tokio::test]
async fn appends_after_close_fail_and_close_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Log::open(LogConfig::new(dir.path())).expect("open");
    log.append(payload(0, 10)).await.expect("append");
    let clone = log.clone();
    log.close().await.expect("close");
    assert!(matches!(
        clone.append(payload(1, 10)).await,
        Err(LogError::Closed)
    ));
    clone.close().await.expect("second close");
}

#[tokio::test]
async fn a_directory_is_opened_by_one_log_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Log::open(LogConfig::new(dir.path())).expect("open");
    let err = Log::open(LogConfig::new(dir.path()))
        .err()
        .expect("second open fails");
    assert!(err.to_string().contains("locking log directory"), "{err}");
    log.close().await.expect("close");
    let (again, _) = Log::open(LogConfig::new(dir.path())).expect("open after close");
    again.close().await.expect("close");
}

#[tokio::test]
async fn bad_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = LogConfig::new(dir.path());
    cfg.append_queue_max = 0;
    let err = Log::open(cfg).err().expect("refused");
    assert!(err.to_string().contains("append_queue_max"), "{err}");
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = LogConfig::new(dir.path());
    cfg.fsync = FsyncMode::Never;
    let (log, _) = Log::open(cfg.clone()).expect("open");
    let ack = log.append(payload(0, 10)).await.expect("append");
    drop(log);
    // The writer finishes in the background and then frees the directory.
    let (log, recovery) = within("reopen after drop", async {
        loop {
            match Log::open(cfg.clone()) {
                Ok(opened) => break opened,
                Err(e) if e.to_string().contains("locking log directory") => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("reopen failed: {e}"),
            }
        }
    })
    .await;
    assert_eq!(recovery.head, ack.end);
    assert_eq!(recovery.records, 1);
    log.close().await.expect("close");
}
