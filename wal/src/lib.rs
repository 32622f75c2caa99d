//! vatio's node-local write-ahead log.
//!
//! A reading is acknowledged once it is in the log of its owner node (and of
//! a replica). This crate is that log: records are appended through a bounded
//! queue to one writer thread that commits them in groups (one write, at most
//! one fsync per group), into segment files of bounded size. Subscribers read
//! from their own positions — from an in-memory tail cache when close to the
//! head, else from the files — and keep those positions durable in a
//! [`PositionStore`]. The log is truncated, a whole segment at a time, behind
//! the slowest subscriber. `Log::open` validates every byte and cuts a bad
//! tail, reporting what it cut.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vatio_wal::LogError> {
//! use vatio_wal::{Log, LogConfig};
//! let (log, recovery) = Log::open(LogConfig::new("/var/lib/vatio/wal"))?;
//! println!("{recovery}");
//! let appended = log.append(bytes::Bytes::from_static(b"reading")).await?;
//! let mut reader = log.reader(log.start())?;
//! let batch = reader.next_batch(1 << 20).await?;
//! assert_eq!(batch.last().map(|r| r.end), Some(appended.end));
//! log.close().await
//! # }
//! ```

mod cache;
mod config;
mod error;
mod log;
mod position;
mod positions;
mod reader;
mod recovery;
mod segment;
mod shared;
mod writer;

pub use config::{
    Blocking, DurableHook, FaultHook, FaultPoint, FsyncMode, IntervalClock, LogConfig,
    ParseFsyncModeError,
};
pub use error::LogError;
pub use log::{Appended, Log, LogStats, Truncated, WeakLog};
pub use position::Position;
pub use positions::PositionStore;
pub use reader::{LogReader, Record};
pub use recovery::{Cut, CutReason, Recovery};
pub use segment::{FRAME_HEADER_BYTES, HEADER_BYTES, PAYLOAD_BYTES_MAX};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn handles_and_futures_can_move_between_tasks() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path();
        let (log, _) = Log::open(LogConfig::new(dir)).expect("open");
        send_sync(&log);
        let mut reader = log.reader(log.start()).expect("reader");
        send_sync(&reader);
        send(&log.append(bytes::Bytes::new()));
        send(&reader.next_batch(1));
        send(&log.close());
        let store = PositionStore::open(dir.join("positions")).expect("store");
        send_sync(&store);
        send(&store.commit_async("x", Position(1)));
        log.close().await.expect("close");
    }
}
