//! Readers: arbitrary start positions, the tail cache versus the files, and
//! waiting at the head.

use bytes::Bytes;
use vatio_wal::{HEADER_BYTES, Log, LogConfig, LogError, Position};

use crate::common::*;

async fn log_with_records(
    dir: &std::path::Path,
    tail_cache_bytes_max: usize,
    count: usize,
) -> (Log, Vec<Bytes>, Vec<vatio_wal::Appended>) {
    let mut cfg = small_segments(dir, 2048);
    cfg.tail_cache_bytes_max = tail_cache_bytes_max;
    let (log, _) = Log::open(cfg).expect("open");
    let payloads: Vec<Bytes> = (0..count).map(|i| payload(i, 40 + i % 60)).collect();
    let acks = append_all(&log, &payloads).await;
    (log, payloads, acks)
}

#[tokio::test]
async fn a_reader_starts_at_any_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, payloads, acks) = log_with_records(dir.path(), 1 << 20, 120).await;
    for k in [0, 1, 37, 63, 119] {
        let records = read_to_head(&log, acks[k].position, 300).await;
        assert_eq!(records[0].position, acks[k].position);
        assert_eq!(
            payloads_of(&records),
            payloads[k..].to_vec(),
            "from record {k}"
        );
    }
    // A record's end works as a start too, also where it is a segment's end.
    let records = read_to_head(&log, acks[63].end, 300).await;
    assert_eq!(payloads_of(&records), payloads[64..].to_vec());
    log.close().await.expect("close");
}

#[tokio::test]
async fn readers_behind_a_tiny_cache_read_the_files_and_check_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, payloads, acks) = log_with_records(dir.path(), 256, 120).await;
    assert!(log.stats().tail_cache_bytes <= 256);
    // Everything but the last few records must come from the files.
    let records = read_to_head(&log, log.start(), 500).await;
    assert_eq!(payloads_of(&records), payloads);

    // The files are what is served: a flipped payload byte is caught on read.
    let (base, path) = segment_of(dir.path(), acks[3].position);
    flip_byte(&path, acks[3].position.0 - base + 8 + 2, 0x40);
    let mut reader = log.reader(acks[2].position).expect("reader");
    let batch = within("batch", reader.next_batch(1))
        .await
        .expect("record 2 is fine");
    assert_eq!(batch[0].payload, payloads[2]);
    let err = within("batch", reader.next_batch(1 << 20))
        .await
        .expect_err("corrupt");
    match err {
        LogError::Corrupt {
            path: p,
            offset,
            detail,
        } => {
            assert_eq!(p, path);
            assert_eq!(offset, acks[3].position.0 - base);
            assert!(detail.contains("checksum"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    log.close().await.expect("close");
}

#[tokio::test]
async fn readers_near_the_head_are_served_from_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, payloads, acks) = log_with_records(dir.path(), 1 << 20, 120).await;
    // Damage the first segment on disk: a reader served from memory never sees it.
    let (base, path) = segment_of(dir.path(), acks[3].position);
    flip_byte(&path, acks[3].position.0 - base + 8 + 2, 0x40);
    let records = read_to_head(&log, log.start(), 500).await;
    assert_eq!(payloads_of(&records), payloads);
    assert!(log.stats().tail_cache_bytes > 0);
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_reader_at_the_head_wakes_on_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _, _) = log_with_records(dir.path(), 1 << 20, 3).await;
    let mut reader = log.reader(log.visible_head()).expect("reader");
    let mut batch = Box::pin(reader.next_batch(1 << 20));
    assert!(
        futures::poll!(&mut batch).is_pending(),
        "nothing to read yet"
    );
    let ack = log
        .append(Bytes::from_static(b"wake up"))
        .await
        .expect("append");
    let records = within("the waiting reader", batch).await.expect("batch");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].position, ack.position);
    assert_eq!(records[0].payload, Bytes::from_static(b"wake up"));
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_reader_at_the_head_of_a_closed_log_gets_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _, _) = log_with_records(dir.path(), 1 << 20, 3).await;
    let mut reader = log.reader(log.start()).expect("reader");
    let mut waiting = log.reader(log.visible_head()).expect("reader");
    let mut batch = Box::pin(waiting.next_batch(100));
    assert!(futures::poll!(&mut batch).is_pending());
    log.close().await.expect("close");
    assert!(matches!(
        within("closed", batch).await,
        Err(LogError::Closed)
    ));
    assert_eq!(
        within("rest", reader.next_batch(1 << 20))
            .await
            .expect("rest")
            .len(),
        3
    );
    assert!(matches!(
        within("end", reader.next_batch(1 << 20)).await,
        Err(LogError::Closed)
    ));
}

#[tokio::test]
async fn readers_cannot_start_past_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Log::open(LogConfig::new(dir.path())).expect("open");
    let head = log.visible_head();
    assert_eq!(head, Position(HEADER_BYTES));
    assert!(
        log.reader(Position(0)).is_ok(),
        "the base of the first segment means its start"
    );
    match log.reader(Position(head.0 + 1)) {
        Err(LogError::BeyondHead { requested, head: h }) => {
            assert_eq!(requested, Position(head.0 + 1));
            assert_eq!(h, head);
        }
        other => panic!("expected BeyondHead, got {:?}", other.err()),
    }
    log.close().await.expect("close");
}

/// Under `fsync = interval` a durable reader waits for the records' fsync:
/// what it passes on (to a replica, say), a power loss cannot take back.
#[tokio::test]
async fn a_durable_reader_waits_for_the_fsync_under_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = LogConfig::new(dir.path());
    // No interval fsync within the test: only `close` syncs.
    cfg.fsync = vatio_wal::FsyncMode::Interval(std::time::Duration::from_secs(3600));
    let (log, _) = Log::open(cfg).expect("open");
    let synced_at_open = log.durable_head();
    assert_eq!(synced_at_open, log.visible_head());
    let payloads: Vec<Bytes> = (0..3).map(|i| payload(i, 50)).collect();
    let acks = append_all(&log, &payloads).await;
    assert!(acks.iter().all(|a| !a.synced));
    assert_eq!(log.durable_head(), synced_at_open, "nothing synced yet");
    let stats = log.stats();
    assert_eq!(
        (stats.head, stats.durable_head),
        (log.visible_head(), synced_at_open)
    );

    let mut durable = log.durable_reader(log.start()).expect("durable reader");
    let mut batch = Box::pin(durable.next_batch(1 << 20));
    assert!(
        futures::poll!(&mut batch).is_pending(),
        "unsynced records wait"
    );
    let mut visible = log.reader(log.start()).expect("reader");
    assert_eq!(
        payloads_of(&visible.next_batch(1 << 20).await.expect("batch")),
        payloads
    );

    // Closing fsyncs: the durable reader gets the records.
    log.close().await.expect("close");
    let records = within("the durable reader", batch).await.expect("batch");
    assert_eq!(payloads_of(&records), payloads);
}

/// A replica answers its owner only once the steps are on disk: under
/// `interval` waiting for durability ends with the fsync.
#[tokio::test]
async fn waiting_for_durability_ends_with_the_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = LogConfig::new(dir.path());
    // No interval fsync within the test: only `close` syncs.
    cfg.fsync = vatio_wal::FsyncMode::Interval(std::time::Duration::from_secs(3600));
    let (log, _) = Log::open(cfg).expect("open");
    let acks = append_all(&log, &[payload(0, 50)]).await;
    let end = acks[0].end;
    let mut wait = Box::pin(log.wait_durable(end));
    assert!(futures::poll!(&mut wait).is_pending(), "not fsynced yet");
    log.close().await.expect("close");
    within("waiting for durability", wait)
        .await
        .expect("durable after the closing fsync");
    assert!(log.durable_head() >= end);
}

/// With the owner timing intervals, its tick is what fsyncs; the writer's
/// own timer and a tick to a writer-timed log do nothing.
#[tokio::test]
async fn an_owner_timed_interval_fsyncs_on_the_owners_tick() {
    for clock in [
        vatio_wal::IntervalClock::Owner,
        vatio_wal::IntervalClock::Writer,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = LogConfig::new(dir.path());
        // Long enough that the writer's own timer never fires in the test.
        cfg.fsync = vatio_wal::FsyncMode::Interval(std::time::Duration::from_secs(3600));
        cfg.interval_clock = clock;
        let (log, _) = Log::open(cfg).expect("open");
        let acks = append_all(&log, &[payload(0, 50), payload(1, 50)]).await;
        let end = acks[1].end;
        assert!(log.durable_head() < end, "{clock:?}: nothing synced yet");
        assert!(log.interval_tick(), "{clock:?}: the writer runs");
        let mut wait = Box::pin(log.wait_durable(end));
        match clock {
            vatio_wal::IntervalClock::Owner => {
                within("the owner's tick", wait).await.expect("durable");
            }
            vatio_wal::IntervalClock::Writer => {
                // The tick was queued behind nothing: once a later append is
                // answered, the tick has been handled, and ignored.
                append_all(&log, &[payload(2, 50)]).await;
                assert!(
                    futures::poll!(&mut wait).is_pending(),
                    "the tick is ignored"
                );
            }
        }
        log.close().await.expect("close");
        assert!(
            !log.interval_tick(),
            "{clock:?}: a closed log takes no ticks"
        );
    }
}

/// Under `always` every acknowledged record is durable at once.
#[tokio::test]
async fn under_always_the_durable_head_is_the_visible_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, payloads, acks) = log_with_records(dir.path(), 1 << 20, 40).await;
    assert!(acks.iter().all(|a| a.synced));
    assert_eq!(log.durable_head(), log.visible_head());
    assert_eq!(log.stats().durable_head, log.visible_head());
    let mut durable = log.durable_reader(log.start()).expect("durable reader");
    let mut got = Vec::new();
    while got.len() < payloads.len() {
        got.extend(payloads_of(
            &within("a batch", durable.next_batch(1 << 20))
                .await
                .expect("batch"),
        ));
    }
    assert_eq!(got, payloads);
    log.close().await.expect("close");
}
