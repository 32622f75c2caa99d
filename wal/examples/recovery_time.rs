//! How long does `Log::open` take to recover a large log?
//!
//! Writes a log of SIZE_MIB (default 1024) of ~400-byte records into DIR (a
//! temporary directory by default), closes it, then times `Log::open`, which
//! scans and validates every record, and prints records, bytes, elapsed time
//! and MiB/s.
//!
//! ```text
//! cargo run -p vatio-wal --example recovery_time -- [SIZE_MIB] [DIR]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use vatio_wal::{FsyncMode, Log, LogConfig};

const RECORD_BYTES: usize = 400;
const APPENDS_IN_FLIGHT: usize = 4096;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let size_mib: u64 = match args.next() {
        Some(text) => text
            .parse()
            .map_err(|e| format!("SIZE_MIB {text:?} is not a number: {e}"))?,
        None => 1024,
    };
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);

    // Write: no fsync per group (the log syncs on every roll and on close).
    let mut cfg = LogConfig::new(&dir);
    cfg.fsync = FsyncMode::Never;
    let (log, _) = Log::open(cfg.clone())?;
    let target_bytes = size_mib << 20;
    let start_head = log.visible_head().0;
    let data = Bytes::from((0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let written = Instant::now();
    let mut appended = 0u64;
    let mut next = 0usize;
    loop {
        let remaining = target_bytes.saturating_sub(log.visible_head().0 - start_head);
        if remaining == 0 {
            break;
        }
        // One round of appends, at most about 16 MiB, with many in flight.
        let count = (remaining / (RECORD_BYTES as u64 + 8) + 1).min(40_000);
        let round = (0..count).map(|_| {
            next += 1;
            let len = RECORD_BYTES - 20 + next % 41;
            let offset = (next * 7919) % (data.len() - len);
            log.append(data.slice(offset..offset + len))
        });
        let mut results = futures::stream::iter(round).buffer_unordered(APPENDS_IN_FLIGHT);
        while let Some(result) = results.next().await {
            result?;
            appended += 1;
        }
    }
    log.close().await?;
    let write_secs = written.elapsed().as_secs_f64();
    println!(
        "wrote {appended} records, {:.1} MiB in {write_secs:.1}s into {}",
        mib(log.visible_head().0 - start_head),
        dir.display()
    );
    drop(log);

    // Recover: scan and validate every segment.
    let opened = Instant::now();
    let (log, recovery) = Log::open(cfg)?;
    let secs = opened.elapsed().as_secs_f64();
    println!("{recovery}");
    println!(
        "Log::open: {} records, {} bytes ({:.1} MiB) in {secs:.3}s = {:.0} MiB/s",
        recovery.records,
        recovery.bytes,
        mib(recovery.bytes),
        mib(recovery.bytes) / secs
    );
    log.close().await?;
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
