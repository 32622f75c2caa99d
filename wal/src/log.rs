//! `Log`: the handle that appends, reads, truncates and closes a log.
//!
//! `open` recovers the directory and starts the writer thread; `append` sends
//! a payload through the bounded queue to that thread and waits for its group
//! commit. Handles are cheap clones of one shared log.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::reader::Reach;
use crate::recovery::{self, Recovery};
use crate::segment::PAYLOAD_BYTES_MAX;
use crate::shared::{Shared, lock, sync_dir};
use crate::writer::{Active, Pending, Request, Writer, WriterConfig};
use crate::{Blocking, LogConfig, LogError, LogReader, Position};

const LOCK_FILE: &str = "LOCK";
const WRITER_THREAD: &str = "vatio-log-writer";

/// A node-local write-ahead log. Clone it freely; all clones share one log.
/// Close it with [`Log::close`]; dropping the last handle also closes it, in
/// the background.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    /// One permit per queued append: the bound of the append queue.
    queue_slots: Arc<Semaphore>,
    closing: AtomicBool,
    /// Where the writer runs: its own thread, or inline in the appending
    /// task ([`crate::Blocking::Inline`]). Taken when the log closes.
    writer: Mutex<Option<WriterHandle>>,
}

enum WriterHandle {
    Thread(JoinHandle<()>),
    Inline(Box<Writer>),
}

/// A [`Log`] handle that does not keep the log open (see [`Log::downgrade`]).
#[derive(Clone)]
pub struct WeakLog(std::sync::Weak<Inner>);

impl WeakLog {
    /// The log, while some [`Log`] handle still holds it.
    pub fn upgrade(&self) -> Option<Log> {
        self.0.upgrade().map(|inner| Log { inner })
    }
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Address of the record.
    pub position: Position,
    /// Address just after it.
    pub end: Position,
    /// Whether it was fsynced before this answer (`FsyncMode::Always`).
    pub synced: bool,
}

/// What `truncate_before` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Truncated {
    pub segments_removed: u32,
    pub bytes_removed: u64,
}

/// Counters and gauges of one log, since it was opened.
#[derive(Clone, Debug, Default)]
pub struct LogStats {
    pub start: Position,
    /// The visible head.
    pub head: Position,
    /// Where the records fsynced to disk end (see [`Log::durable_head`]).
    pub durable_head: Position,
    /// Bytes from the first segment's base to the head.
    pub size_bytes: u64,
    pub segments: u64,
    /// Records appended (acknowledged as written).
    pub appends: u64,
    /// Payload bytes appended.
    pub append_bytes: u64,
    /// Group commits attempted.
    pub groups: u64,
    /// Successful fsyncs of segment files.
    pub fsyncs: u64,
    pub fsync_micros_p50: u64,
    pub fsync_micros_p99: u64,
    pub fsync_micros_max: u64,
    /// Failed writes, fsyncs and segment rolls.
    pub write_errors: u64,
    pub tail_cache_bytes: u64,
}

impl Log {
    /// Opens the log in `cfg.dir` (created if missing): takes the directory
    /// lock, scans and validates every segment, cuts a bad tail (see
    /// [`Recovery`]) and starts the writer thread. Blocking.
    pub fn open(cfg: LogConfig) -> Result<(Log, Recovery), LogError> {
        let dir = cfg.dir.clone();
        cfg.validate().map_err(|reason| {
            LogError::io(
                "checking log config for",
                &dir,
                io::Error::new(io::ErrorKind::InvalidInput, reason),
            )
        })?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| LogError::io("creating log directory", &dir, e))?;
        let lock_file = lock_dir(&dir)?;
        sync_dir(&dir)?;
        let recovered = recovery::recover(&dir)?;
        let report = recovered.report;
        let Some(active_segment) = recovered.segments.last().cloned() else {
            return Err(LogError::Failed(format!(
                "recovery of {} left no segment",
                dir.display()
            )));
        };
        let file = recovery::open_active(&active_segment, recovered.active_len)?;
        if let Some(hook) = &cfg.durable {
            // The log as recovered counts as on disk: a process that died
            // left its writes to the file system, and a simulated power
            // loss cuts what it drops before the log opens again.
            for segment in &recovered.segments {
                let len = if segment.base == active_segment.base {
                    recovered.active_len
                } else {
                    std::fs::metadata(&segment.path).map_or(0, |m| m.len())
                };
                hook(&segment.path, len);
            }
        }
        let shared = Arc::new(Shared::new(
            dir.clone(),
            recovered.segments,
            report.head,
            cfg.tail_cache_bytes_max,
            cfg.blocking,
        ));
        let (requests, receiver) = mpsc::channel();
        let writer = Writer::new(
            Arc::clone(&shared),
            receiver,
            Active {
                segment: active_segment,
                file,
                len: recovered.active_len,
            },
            WriterConfig {
                fsync: cfg.fsync,
                segment_bytes_max: cfg.segment_bytes_max,
                group_bytes_max: cfg.group_bytes_max,
                fault: cfg.fault.clone(),
                durable: cfg.durable.clone(),
                interval_clock: cfg.interval_clock,
            },
            lock_file,
        );
        let writer = match cfg.blocking {
            Blocking::Threads => WriterHandle::Thread(
                std::thread::Builder::new()
                    .name(WRITER_THREAD.to_string())
                    .spawn(move || writer.run())
                    .map_err(|e| LogError::io("starting the log writer thread for", &dir, e))?,
            ),
            Blocking::Inline => WriterHandle::Inline(Box::new(writer)),
        };
        let log = Log {
            inner: Arc::new(Inner {
                shared,
                requests,
                queue_slots: Arc::new(Semaphore::new(cfg.append_queue_max)),
                closing: AtomicBool::new(false),
                writer: Mutex::new(Some(writer)),
            }),
        };
        Ok((log, report))
    }

    /// Appends one record and waits for its group commit. With
    /// `FsyncMode::Always` the answer comes after the fsync. Waits while the
    /// append queue is full.
    ///
    /// Dropping the future after the append was queued does not withdraw it:
    /// the record may still be written.
    pub async fn append(&self, payload: Bytes) -> Result<Appended, LogError> {
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(LogError::TooLarge {
                bytes: payload.len(),
                max: PAYLOAD_BYTES_MAX,
            });
        }
        let inner = &self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        inner.shared.check_failed()?;
        let slot = Arc::clone(&inner.queue_slots)
            .acquire_owned()
            .await
            .map_err(|_| LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            payload,
            reply,
            slot,
        };
        match &mut *lock(&inner.writer) {
            Some(WriterHandle::Inline(writer)) => writer.commit_from(pending),
            Some(WriterHandle::Thread(_)) => inner
                .requests
                .send(Request::Append(pending))
                .map_err(|_| LogError::Closed)?,
            None => return Err(LogError::Closed),
        }
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// One interval has passed on the owner's clock: the writer fsyncs what
    /// it wrote since the last fsync. Only for logs opened with
    /// [`crate::IntervalClock::Owner`] under `interval`; otherwise ignored.
    /// False once the writer has stopped (it synced on its way out), so a
    /// ticking task knows to end.
    pub fn interval_tick(&self) -> bool {
        let inner = &self.inner;
        if inner.shared.is_stopped() {
            return false;
        }
        match &mut *lock(&inner.writer) {
            Some(WriterHandle::Inline(writer)) => {
                writer.owner_tick();
                true
            }
            Some(WriterHandle::Thread(_)) => inner.requests.send(Request::IntervalTick).is_ok(),
            None => false,
        }
    }

    /// A handle that does not keep the log open: the log closes (in the
    /// background) when its last [`Log`] is dropped, whatever weak handles
    /// remain.
    pub fn downgrade(&self) -> WeakLog {
        WeakLog(Arc::downgrade(&self.inner))
    }

    /// Readers see the records whose end is at or before this position.
    pub fn visible_head(&self) -> Position {
        self.inner.shared.head()
    }

    /// Follows the visible head.
    pub fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.shared.watch_head()
    }

    /// The oldest retained position: the first record of the oldest segment.
    pub fn start(&self) -> Position {
        self.inner.shared.start()
    }

    /// Why the log failed, once it has: appends fail from then on, and only
    /// reopening (after a restart) makes it usable again.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failure()
    }

    /// Completes when the log fails, with the reason (never, if it does not).
    pub async fn failed(&self) -> String {
        let mut failure = self.inner.shared.watch_failure();
        loop {
            if let Some(reason) = failure.borrow_and_update().clone() {
                return reason;
            }
            if failure.changed().await.is_err() {
                // The log is gone without failing.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Where the records fsynced to disk end: the visible head under
    /// `fsync = always` (and `never`, which waits for no disk); under
    /// `interval` it follows each interval's fsync.
    pub fn durable_head(&self) -> Position {
        self.inner.shared.durable_head()
    }

    /// Waits until the records ending at or before `upto` are on disk: at
    /// once under `always` (and `never`, which waits for no disk), at the
    /// next interval fsync under `interval`. Fails if the log fails or
    /// closes first.
    pub async fn wait_durable(&self, upto: Position) -> Result<(), LogError> {
        let shared = &self.inner.shared;
        let mut durable = shared.watch_durable();
        loop {
            if *durable.borrow_and_update() >= upto {
                return Ok(());
            }
            shared.check_failed()?;
            if shared.is_stopped() || durable.changed().await.is_err() {
                return Err(LogError::Closed);
            }
        }
    }

    /// A reader from `from`, which must be a record's position or end (or
    /// `start()`, or the visible head).
    pub fn reader(&self, from: Position) -> Result<LogReader, LogError> {
        self.reader_to(from, Reach::Visible)
    }

    /// A reader like [`Log::reader`] that gets records only once they are
    /// at or behind [`Log::durable_head`]: what it passes on, a power loss
    /// cannot take back.
    pub fn durable_reader(&self, from: Position) -> Result<LogReader, LogError> {
        self.reader_to(from, Reach::Durable)
    }

    fn reader_to(&self, from: Position, reach: Reach) -> Result<LogReader, LogError> {
        let shared = &self.inner.shared;
        let start = shared.start();
        let at = shared.skip_header(from);
        if at < start {
            return Err(LogError::Truncated {
                requested: from,
                start,
            });
        }
        let head = shared.head();
        if from > head {
            return Err(LogError::BeyondHead {
                requested: from,
                head,
            });
        }
        Ok(LogReader::new(Arc::clone(shared), from, reach))
    }

    /// Deletes the oldest segments whose every byte lies before `upto`
    /// (segment end <= `upto`), never the active segment. `start()` moves to
    /// the first record of the oldest remaining segment.
    pub fn truncate_before(&self, upto: Position) -> Result<Truncated, LogError> {
        let shared = &self.inner.shared;
        let mut removed = Truncated::default();
        let mut segments = shared.segments_mut();
        while segments.len() > 1 && segments[1].base <= upto.0 {
            let segment = segments.remove(0);
            let bytes = segments[0].base - segment.base;
            if let Err(e) = std::fs::remove_file(&segment.path) {
                segments.insert(0, segment.clone());
                return Err(LogError::io("removing log segment", &segment.path, e));
            }
            tracing::debug!(segment = %segment.path.display(), "log segment truncated");
            removed.segments_removed += 1;
            removed.bytes_removed += bytes;
        }
        drop(segments);
        if removed.segments_removed > 0 {
            sync_dir(&shared.dir)?;
        }
        Ok(removed)
    }

    pub fn stats(&self) -> LogStats {
        self.inner.shared.stats()
    }

    /// Writes what is queued, fsyncs and stops the writer thread. Later
    /// appends fail with [`LogError::Closed`]; readers get what is visible,
    /// then `Closed`. Closing twice is fine.
    pub async fn close(&self) -> Result<(), LogError> {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::Release);
        let writer = lock(&inner.writer).take();
        let thread = match writer {
            None => return Ok(()),
            Some(WriterHandle::Inline(mut writer)) => {
                let (reply, answer) = oneshot::channel();
                writer.finish(Some(reply));
                inner.queue_slots.close();
                return answer.await.unwrap_or(Ok(()));
            }
            Some(WriterHandle::Thread(thread)) => thread,
        };
        let (reply, answer) = oneshot::channel();
        let result = match inner.requests.send(Request::Close { reply }) {
            Ok(()) => answer.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        inner.queue_slots.close();
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| LogError::Failed(format!("joining the log writer thread failed: {e}")))?
            .map_err(|_| LogError::Failed("the log writer thread panicked".to_string()))?;
        result
    }
}

impl Drop for Inner {
    /// The last handle is gone without `close`: the writer commits what is
    /// queued, syncs and stops on its own thread. Nothing waits for it here,
    /// so the directory lock is released a little later; `close` waits.
    fn drop(&mut self) {
        match lock(&self.writer).take() {
            Some(WriterHandle::Inline(mut writer)) => writer.finish(None),
            _ => {
                let (reply, _) = oneshot::channel();
                let _ = self.requests.send(Request::Close { reply });
            }
        }
        self.queue_slots.close();
    }
}

/// Takes the directory's lock file, so that one process at a time owns the log.
fn lock_dir(dir: &std::path::Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io("opening log lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogError::io(
            "locking log directory",
            dir,
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another log handle or process has it open",
            ),
        )),
        Err(TryLockError::Error(e)) => Err(LogError::io("locking log directory", dir, e)),
    }
}
