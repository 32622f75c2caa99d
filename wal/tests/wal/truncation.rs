//! `truncate_before`: whole segments only, never the active one.

use bytes::Bytes;
use vatio_wal::{HEADER_BYTES, Log, LogError, Position};

use crate::common::*;

#[tokio::test]
async fn truncate_before_removes_exactly_the_segments_below() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Log::open(small_segments(dir.path(), 1024)).expect("open");
    let payloads: Vec<Bytes> = (0..80).map(|i| payload(i, 100)).collect();
    let acks = append_all(&log, &payloads).await;
    let before = segment_files(dir.path());
    assert!(before.len() >= 6, "got {} segments", before.len());
    let mut old_reader = log.reader(log.start()).expect("reader");

    // A record in the fourth segment: the three before it go.
    let k = acks
        .iter()
        .position(|a| a.position.0 > before[3].0 + HEADER_BYTES)
        .expect("a record inside the fourth segment");
    let upto = acks[k].position;
    let truncated = log.truncate_before(upto).expect("truncate");
    assert_eq!(truncated.segments_removed, 3);
    assert_eq!(truncated.bytes_removed, before[3].0 - before[0].0);
    let after = segment_files(dir.path());
    assert_eq!(after, before[3..].to_vec());
    assert_eq!(log.start(), Position(before[3].0 + HEADER_BYTES));
    assert_eq!(log.stats().segments, after.len() as u64);

    // Readers behind the new start are told so.
    assert!(matches!(
        log.reader(Position(HEADER_BYTES)),
        Err(LogError::Truncated { start, .. }) if start == log.start()
    ));
    assert!(matches!(
        within("old reader", old_reader.next_batch(100)).await,
        Err(LogError::Truncated { .. })
    ));
    let first_kept = acks
        .iter()
        .position(|a| a.position == log.start())
        .expect("kept");
    let records = read_to_head(&log, log.start(), 1 << 20).await;
    assert_eq!(payloads_of(&records), payloads[first_kept..].to_vec());

    // A segment's exact end is enough to remove it.
    let truncated = log.truncate_before(Position(after[1].0)).expect("truncate");
    assert_eq!(truncated.segments_removed, 1);
    // A reader at that end (the last record's end) continues fine.
    assert!(log.reader(Position(after[1].0)).is_ok());

    // Far past the head: everything but the active segment.
    let truncated = log.truncate_before(Position(u64::MAX)).expect("truncate");
    let left = segment_files(dir.path());
    assert_eq!(left.len(), 1, "the active segment stays");
    assert_eq!(truncated.segments_removed as usize, after.len() - 2);
    assert_eq!(log.start(), Position(left[0].0 + HEADER_BYTES));
    log.append(payload(999, 10))
        .await
        .expect("append after truncation");
    let start = log.start();
    let head = log.visible_head();
    log.close().await.expect("close");

    let (log, recovery) = Log::open(small_segments(dir.path(), 1024)).expect("reopen");
    assert_eq!(log.start(), start);
    assert_eq!(recovery.head, head);
    assert_eq!(recovery.cut, None);
    log.close().await.expect("close");
}
