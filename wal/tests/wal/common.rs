//! Helpers shared by the log tests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use vatio_wal::{Appended, Log, LogConfig, Position, Record};

/// Generous bound on anything a test awaits, so a bug fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

/// A config with small segments so that tests roll several of them.
pub fn small_segments(dir: &Path, segment_bytes_max: u64) -> LogConfig {
    let mut cfg = LogConfig::new(dir);
    cfg.segment_bytes_max = segment_bytes_max;
    cfg
}

/// A recognisable payload: record `i`, `len` bytes.
pub fn payload(i: usize, len: usize) -> Bytes {
    let mut bytes = format!("record-{i:06}-").into_bytes();
    bytes.resize(len.max(bytes.len()), b'a' + (i % 26) as u8);
    Bytes::from(bytes)
}

pub async fn append_all(log: &Log, payloads: &[Bytes]) -> Vec<Appended> {
    let mut acks = Vec::with_capacity(payloads.len());
    for p in payloads {
        acks.push(log.append(p.clone()).await.expect("append"));
    }
    acks
}

/// Every record from `from` up to the visible head.
pub async fn read_to_head(log: &Log, from: Position, max_bytes: usize) -> Vec<Record> {
    let head = log.visible_head();
    let mut reader = log.reader(from).expect("reader");
    let mut records = Vec::new();
    while reader.position() < head {
        let batch = within("next_batch", reader.next_batch(max_bytes))
            .await
            .expect("next_batch");
        assert!(!batch.is_empty(), "next_batch returned no records");
        records.extend(batch);
    }
    assert_eq!(reader.position(), head);
    records
}

pub fn payloads_of(records: &[Record]) -> Vec<Bytes> {
    records.iter().map(|r| r.payload.clone()).collect()
}

/// The segment files in `dir`, in base order, with their bases.
pub fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .expect("list dir")
        .filter_map(|e| {
            let path = e.expect("dir entry").path();
            let name = path.file_name()?.to_str()?.to_string();
            let base = name.strip_suffix(".wal")?.parse().ok()?;
            Some((base, path))
        })
        .collect();
    files.sort();
    files
}

/// The segment (base, path) holding `position`.
pub fn segment_of(dir: &Path, position: Position) -> (u64, PathBuf) {
    segment_files(dir)
        .into_iter()
        .rev()
        .find(|(base, _)| *base <= position.0)
        .expect("a segment holds the position")
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

/// XORs one byte of a file.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[offset as usize] ^= mask;
    std::fs::write(path, bytes).expect("write segment");
}
