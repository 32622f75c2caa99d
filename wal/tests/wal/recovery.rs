//! Recovery: every kind of damage is cut at the first bad byte, reported,
//! and everything before it is kept.

use std::path::Path;

use bytes::Bytes;
use vatio_wal::{Appended, CutReason, FRAME_HEADER_BYTES, HEADER_BYTES, Log, Position};

use crate::common::*;

const SEGMENT_BYTES: u64 = 1024;

/// A closed log of 60 records of 100 bytes over several segments.
async fn closed_log(dir: &Path) -> (Vec<Bytes>, Vec<Appended>) {
    let (log, _) = Log::open(small_segments(dir, SEGMENT_BYTES)).expect("open");
    let payloads: Vec<Bytes> = (0..60).map(|i| payload(i, 100)).collect();
    let acks = append_all(&log, &payloads).await;
    log.close().await.expect("close");
    assert!(segment_files(dir).len() >= 5);
    (payloads, acks)
}

/// Reopens and returns everything that can be read back.
async fn reopen(dir: &Path) -> (Log, vatio_wal::Recovery, Vec<Bytes>) {
    let (log, recovery) = Log::open(small_segments(dir, SEGMENT_BYTES)).expect("reopen");
    let records = read_to_head(&log, log.start(), 1 << 20).await;
    (log, recovery, payloads_of(&records))
}

#[tokio::test]
async fn a_torn_tail_is_cut_to_the_last_whole_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payloads, acks) = closed_log(dir.path()).await;
    let last = acks[59];
    let (base, path) = segment_of(dir.path(), last.position);
    let torn_len = file_len(&path) - 5;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(torn_len))
        .expect("tear the tail");

    let (log, recovery, read) = reopen(dir.path()).await;
    let cut = recovery.cut.clone().expect("a cut is reported");
    assert_eq!(cut.reason, CutReason::TornTail);
    assert_eq!(cut.segment, path);
    assert_eq!(cut.offset_in_segment, last.position.0 - base);
    assert_eq!(cut.position, last.position);
    assert_eq!(cut.bytes_cut, FRAME_HEADER_BYTES + 100 - 5);
    assert_eq!(cut.later_segments_removed, 0);
    assert_eq!(recovery.records, 59);
    assert_eq!(recovery.head, last.position);
    assert_eq!(read, payloads[..59].to_vec());
    assert_eq!(file_len(&path), last.position.0 - base);
    assert!(recovery.to_string().contains("torn tail"), "{recovery}");

    // Appends continue where the kept log ends.
    let ack = log.append(payload(60, 10)).await.expect("append");
    assert_eq!(ack.position, last.position);
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_torn_frame_header_is_cut_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, acks) = closed_log(dir.path()).await;
    let last = acks[59];
    let (base, path) = segment_of(dir.path(), last.position);
    let torn_len = last.position.0 - base + 3;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(torn_len))
        .expect("tear the tail");
    let (log, recovery, read) = reopen(dir.path()).await;
    let cut = recovery.cut.expect("cut");
    assert_eq!(cut.reason, CutReason::TornTail);
    assert_eq!(cut.bytes_cut, 3);
    assert_eq!(read.len(), 59);
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_flipped_payload_byte_cuts_at_that_record_and_removes_later_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payloads, acks) = closed_log(dir.path()).await;
    let segments = segment_files(dir.path());
    // The second record of the second segment.
    let k = acks
        .iter()
        .position(|a| a.position.0 > segments[1].0 + HEADER_BYTES)
        .expect("record");
    let (base, path) = segment_of(dir.path(), acks[k].position);
    assert_eq!(path, segments[1].1);
    let offset = acks[k].position.0 - base;
    let len_before = file_len(&path);
    flip_byte(&path, offset + FRAME_HEADER_BYTES + 50, 0x01);

    let (log, recovery, read) = reopen(dir.path()).await;
    let cut = recovery.cut.clone().expect("a cut is reported");
    assert_eq!(cut.reason, CutReason::ChecksumMismatch);
    assert_eq!(cut.segment, path);
    assert_eq!(cut.offset_in_segment, offset);
    assert_eq!(cut.position, acks[k].position);
    assert_eq!(cut.bytes_cut, len_before - offset);
    assert_eq!(cut.later_segments_removed as usize, segments.len() - 2);
    assert_eq!(segment_files(dir.path()), segments[..2].to_vec());
    assert_eq!(recovery.records, k as u64);
    assert_eq!(recovery.head, acks[k].position);
    assert_eq!(read, payloads[..k].to_vec());
    let text = cut.to_string();
    assert!(
        text.contains("checksum mismatch") && text.contains(&path.display().to_string()),
        "{text}"
    );
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_flipped_length_byte_cuts_at_that_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payloads, acks) = closed_log(dir.path()).await;
    let k = 20;
    let (base, path) = segment_of(dir.path(), acks[k].position);
    // The length's high byte: a length no record can have.
    flip_byte(&path, acks[k].position.0 - base + 3, 0x80);
    let (log, recovery, read) = reopen(dir.path()).await;
    let cut = recovery.cut.expect("cut");
    assert_eq!(cut.reason, CutReason::BadLength);
    assert_eq!(cut.position, acks[k].position);
    assert_eq!(read, payloads[..k].to_vec());

    // A small change to the length is caught by the checksum instead.
    log.close().await.expect("close");
    let k = 10;
    let (base, path) = segment_of(dir.path(), acks[k].position);
    flip_byte(&path, acks[k].position.0 - base, 0x01);
    let (log, recovery, read) = reopen(dir.path()).await;
    let cut = recovery.cut.expect("cut");
    assert_eq!(cut.reason, CutReason::ChecksumMismatch);
    assert_eq!(cut.position, acks[k].position);
    assert_eq!(read, payloads[..k].to_vec());
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_bad_segment_header_removes_that_segment_and_later_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payloads, acks) = closed_log(dir.path()).await;
    let segments = segment_files(dir.path());
    flip_byte(&segments[2].1, 0, 0xff);
    let (log, recovery, read) = reopen(dir.path()).await;
    let cut = recovery.cut.clone().expect("cut");
    assert_eq!(cut.reason, CutReason::BadSegmentHeader);
    assert_eq!(cut.segment, segments[2].1);
    assert_eq!(cut.bytes_cut, file_len_before(&segments, 2));
    assert_eq!(cut.later_segments_removed as usize, segments.len() - 3);
    assert_eq!(cut.position, Position(segments[2].0));
    assert_eq!(recovery.head, Position(segments[2].0));
    assert_eq!(segment_files(dir.path()), segments[..2].to_vec());
    let kept = acks.iter().filter(|a| a.end.0 <= segments[2].0).count();
    assert_eq!(read, payloads[..kept].to_vec());
    // The log continues in the last good segment.
    let ack = log.append(payload(99, 10)).await.expect("append");
    assert!(ack.position.0 >= segments[2].0);
    log.close().await.expect("close");
}

/// Sizes of segments before the test damaged them: contiguous bases tell.
fn file_len_before(segments: &[(u64, std::path::PathBuf)], i: usize) -> u64 {
    segments[i + 1].0 - segments[i].0
}

#[tokio::test]
async fn a_missing_segment_is_a_gap_and_later_segments_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payloads, acks) = closed_log(dir.path()).await;
    let segments = segment_files(dir.path());
    std::fs::remove_file(&segments[2].1).expect("remove a segment");
    let (log, recovery, read) = reopen(dir.path()).await;
    let cut = recovery.cut.clone().expect("cut");
    assert_eq!(cut.reason, CutReason::Gap);
    assert_eq!(cut.segment, segments[3].1);
    assert_eq!(cut.position, Position(segments[2].0));
    assert_eq!(cut.later_segments_removed as usize, segments.len() - 4);
    assert_eq!(segment_files(dir.path()), segments[..2].to_vec());
    let kept = acks.iter().filter(|a| a.end.0 <= segments[2].0).count();
    assert_eq!(read, payloads[..kept].to_vec());
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_clean_log_reports_no_cut_with_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, acks) = closed_log(dir.path()).await;
    let segments = segment_files(dir.path());
    let (log, recovery, read) = reopen(dir.path()).await;
    assert_eq!(recovery.cut, None);
    assert_eq!(read.len(), 60);
    assert_eq!(recovery.records, 60);
    assert_eq!(recovery.segments as usize, segments.len());
    assert_eq!(recovery.bytes, acks[59].end.0);
    assert!(recovery.to_string().contains("60 records"), "{recovery}");
    log.close().await.expect("close");
}

#[tokio::test]
async fn an_empty_last_segment_is_kept_and_readers_reach_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (payloads, acks) = closed_log(dir.path()).await;
    // A roll that wrote its header and then nothing (e.g. its group failed).
    let base = acks[59].end.0;
    let mut header = b"VATIOWAL".to_vec();
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    std::fs::write(dir.path().join(format!("{base:020}.wal")), header).expect("write");

    let (log, recovery, read) = reopen(dir.path()).await;
    assert_eq!(recovery.cut, None);
    assert_eq!(recovery.head, Position(base + HEADER_BYTES));
    assert_eq!(read, payloads);
    let reader = log
        .reader(acks[59].end)
        .expect("reader at the last record's end");
    assert_eq!(
        reader.position(),
        log.visible_head(),
        "nothing is left to read"
    );
    let ack = log.append(payload(60, 10)).await.expect("append");
    assert_eq!(ack.position, Position(base + HEADER_BYTES));
    log.close().await.expect("close");
}
