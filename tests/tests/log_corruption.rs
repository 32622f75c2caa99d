//! A damaged write-ahead log is cut at the first bad record, the cut is
//! reported, and everything before it is recovered: a real `vatio node` is
//! killed with SIGKILL, its last segment is damaged on disk, and the
//! restarted node must say what it cut, keep the readings before the cut
//! (a resend of them is a duplicate), take the cut ones again when they are
//! resent, and count every reading exactly once in the stores.
//!
//! Two kinds of damage: a torn tail (the segment ends mid-record, as after
//! a crash during a write) and a flipped byte inside a record.
//!
//! Needs the `vatio` binary, like the crash test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use vatio_proto::v1::{self, DeviceKind};
use vatio_stores::{DeviceId, MINUTE_MS, Metric, minute_of};
use vatio_tests::process::{NodeFiles, NodeProcess, connect, flush, free_port, status, vatio_bin};
use vatio_tests::{batch, reading};

const START_MAX: Duration = Duration::from_secs(60);
const STOP_MAX: Duration = Duration::from_secs(60);
/// Segment header, then frames of (u32 length, u32 checksum, payload).
const SEGMENT_HEADER: usize = 16;
const FRAME_HEADER: usize = 8;
const PER_BATCH: u64 = 10;

/// Nothing reaches the stores by time before the kill, so what the stores
/// end with comes from replaying the log after the restart.
const CONFIG: &str = "[aggregator]\nflush_max_delay = \"1h\"\n\n\
[stream_etl]\nflush_max_delay = \"1h\"\n\n\
[log]\ncheckpoint_interval = \"1h\"\n";

/// Batch `b` (from 1): readings `PER_BATCH·(b-1)+1 ..= PER_BATCH·b` of one
/// meter, all in the minute starting at `minute_ms`.
fn batch_no(b: u64, minute_ms: i64) -> v1::IngestRequest {
    let readings = (1..=PER_BATCH)
        .map(|i| {
            let seq = (b - 1) * PER_BATCH + i;
            reading(
                "meter-11",
                DeviceKind::ElectricityMeter,
                seq,
                minute_ms + seq as i64 * 10,
                "power",
                1.0,
                "kW",
            )
        })
        .collect();
    batch(b, readings)
}

/// The newest segment file of the node's log.
fn last_segment(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("log").join("segments");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    segments
        .pop()
        .with_context(|| format!("no segment in {}", dir.display()))
}

/// Byte offsets of each record's frame in a segment file.
fn frames(bytes: &[u8]) -> Vec<usize> {
    let mut at = SEGMENT_HEADER;
    let mut out = Vec::new();
    while at + FRAME_HEADER <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        out.push(at);
        at += FRAME_HEADER + len as usize;
    }
    out
}

enum Damage {
    /// Cut the file 5 bytes into the last record's payload.
    TornTail,
    /// Flip a payload byte of the second record.
    FlippedByte,
}

/// Runs the scenario; returns the cut the node reported.
async fn damaged_log_is_cut_and_recovered(damage: Damage) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let files = NodeFiles::write(dir.path(), free_port()?, CONFIG)?;
    let bin = vatio_bin()?;
    let mut node = NodeProcess::start(&bin, &files, dir.path(), START_MAX).await?;
    let endpoint = files.endpoint();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let minute_ms = minute_of(now_ms) - MINUTE_MS;
    let mut ingest = v1::ingest_client::IngestClient::new(connect(&endpoint).await?);
    for b in 1..=3 {
        let ack = ingest
            .ingest_batch(batch_no(b, minute_ms))
            .await?
            .into_inner();
        assert_eq!(ack.accepted as u64, PER_BATCH);
    }
    node.kill()?;

    // One record per batch: the meter's readings arrive in order, so each
    // batch is one device step.
    let segment = last_segment(&files.data_dir)?;
    let mut bytes = std::fs::read(&segment)?;
    let frames = frames(&bytes);
    assert_eq!(frames.len(), 3, "one log record per acknowledged batch");
    // The batches the damage takes away, and those that stay.
    let (lost, kept): (Vec<u64>, Vec<u64>) = match damage {
        Damage::TornTail => {
            bytes.truncate(frames[2] + FRAME_HEADER + 5);
            (vec![3], vec![1, 2])
        }
        Damage::FlippedByte => {
            bytes[frames[1] + FRAME_HEADER + 3] ^= 0x40;
            (vec![2, 3], vec![1])
        }
    };
    std::fs::write(&segment, &bytes)?;
    node.restart(START_MAX).await?;

    let s = status(&endpoint).await?;
    let log = s.log.context("status has the log")?;
    assert!(log.recovered_bytes_cut > 0, "the cut is counted");
    assert_eq!(log.recovered_records, kept.len() as u64);

    // Kept readings are known to the rebuilt device state; cut ones are new.
    for b in kept {
        let ack = ingest
            .ingest_batch(batch_no(b, minute_ms))
            .await?
            .into_inner();
        assert_eq!(
            (ack.accepted, ack.duplicates as u64),
            (0, PER_BATCH),
            "batch {b}"
        );
    }
    for b in lost {
        let ack = ingest
            .ingest_batch(batch_no(b, minute_ms))
            .await?
            .into_inner();
        assert_eq!(
            (ack.accepted as u64, ack.duplicates),
            (PER_BATCH, 0),
            "batch {b}"
        );
    }
    flush(&endpoint).await?;
    node.process().terminate(STOP_MAX).await?;

    let cfg = files.load()?;
    let stores = vatio_cluster::stores::open_embedded(&cfg)?;
    let device = DeviceId::new("meter-11");
    let point = stores
        .timeseries
        .point(&device, Metric::Power, minute_ms)
        .await?
        .context("power point")?;
    assert_eq!(point.stats.count, 3 * PER_BATCH, "every reading once");
    let doc = stores
        .documents
        .minute_doc(&device, minute_ms)
        .await?
        .context("minute document")?;
    assert_eq!(doc.metrics[&Metric::Power].count, 3 * PER_BATCH);
    Ok(log.recovered_cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_reported() -> anyhow::Result<()> {
    let cut = damaged_log_is_cut_and_recovered(Damage::TornTail).await?;
    assert!(cut.contains("torn tail"), "says why: {cut}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_cut_at_its_record_and_reported() -> anyhow::Result<()> {
    let cut = damaged_log_is_cut_and_recovered(Damage::FlippedByte).await?;
    assert!(cut.contains("checksum mismatch"), "says why: {cut}");
    Ok(())
}
