//! State shared by the `Log` handles, its readers and the writer thread: the
//! segment list, the visible head, the tail cache, counters and the failed flag.

use crate::Blocking;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::cache::TailCache;
use crate::segment::{HEADER_BYTES, SegmentFile};
use crate::{LogError, LogStats, Position};

/// Longest fsync the latency histogram tells apart (longer ones count as this).
const FSYNC_MICROS_TRACKED_MAX: u64 = 60_000_000;

pub(crate) struct Shared {
    pub dir: PathBuf,
    /// Segments in base order; the last one is the writer's active segment.
    segments: RwLock<Vec<SegmentFile>>,
    head: watch::Sender<Position>,
    /// Where the records on disk end (fsynced), at or behind `head`.
    durable: watch::Sender<Position>,
    pub cache: Mutex<TailCache>,
    pub counters: Counters,
    fsync_micros: Mutex<Option<Histogram<u64>>>,
    failed: watch::Sender<Option<String>>,
    /// Set by the writer thread when it has stopped; nothing becomes visible after.
    stopped: AtomicBool,
    /// Where readers do their file reads.
    pub blocking: Blocking,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub appends: AtomicU64,
    pub append_bytes: AtomicU64,
    pub groups: AtomicU64,
    pub fsyncs: AtomicU64,
    pub write_errors: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        dir: PathBuf,
        segments: Vec<SegmentFile>,
        head: Position,
        tail_cache_bytes_max: usize,
        blocking: Blocking,
    ) -> Self {
        let (head_tx, _) = watch::channel(head);
        // What recovery found is on disk.
        let (durable_tx, _) = watch::channel(head);
        Shared {
            dir,
            segments: RwLock::new(segments),
            head: head_tx,
            durable: durable_tx,
            cache: Mutex::new(TailCache::new(tail_cache_bytes_max)),
            counters: Counters::default(),
            fsync_micros: Mutex::new(
                Histogram::new_with_bounds(1, FSYNC_MICROS_TRACKED_MAX, 3).ok(),
            ),
            failed: watch::channel(None).0,
            stopped: AtomicBool::new(false),
            blocking,
        }
    }

    pub fn segments(&self) -> RwLockReadGuard<'_, Vec<SegmentFile>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn segments_mut(&self) -> RwLockWriteGuard<'_, Vec<SegmentFile>> {
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The oldest retained position: the first record of the oldest segment.
    pub fn start(&self) -> Position {
        let base = self.segments().first().map_or(0, |s| s.base);
        Position(base + HEADER_BYTES)
    }

    /// A reader's position moved past a segment header: a position equal to
    /// a segment's base (the end of the previous segment's last record) means
    /// that segment's first record.
    pub fn skip_header(&self, position: Position) -> Position {
        let segments = self.segments();
        match segments.binary_search_by_key(&position.0, |s| s.base) {
            Ok(_) => position.add(HEADER_BYTES),
            Err(_) => position,
        }
    }

    /// The segment holding `position` and the address where that segment's
    /// readable bytes end (the next segment's base, or `head` for the last).
    pub fn locate(&self, position: Position, head: Position) -> Option<(SegmentFile, Position)> {
        let segments = self.segments();
        let index = segments
            .partition_point(|s| s.base <= position.0)
            .checked_sub(1)?;
        let segment = segments.get(index)?.clone();
        let end = segments
            .get(index + 1)
            .map_or(head, |next| Position(next.base));
        Some((segment, end))
    }

    pub fn head(&self) -> Position {
        *self.head.borrow()
    }

    pub fn watch_head(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }

    pub fn durable_head(&self) -> Position {
        *self.durable.borrow()
    }

    pub fn watch_durable(&self) -> watch::Receiver<Position> {
        self.durable.subscribe()
    }

    /// Everything before `durable` is on disk; never moves back.
    pub fn publish_durable(&self, durable: Position) {
        self.durable.send_if_modified(|d| {
            let moved = durable > *d;
            if moved {
                *d = durable;
            }
            moved
        });
    }

    pub fn publish_head(&self, head: Position) {
        self.head.send_replace(head);
    }

    pub fn record_fsync(&self, took: Duration) {
        Counters::add(&self.counters.fsyncs, 1);
        if let Some(histogram) = lock(&self.fsync_micros).as_mut() {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            histogram.saturating_record(micros.max(1));
        }
    }

    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    pub fn watch_failure(&self) -> watch::Receiver<Option<String>> {
        self.failed.subscribe()
    }

    /// Puts the log in the failed state: every later append fails with `reason`.
    pub fn fail(&self, reason: String) {
        tracing::error!(dir = %self.dir.display(), "write-ahead log failed: {reason}");
        self.failed.send_if_modified(|failed| {
            let first = failed.is_none();
            if first {
                *failed = Some(reason);
            }
            first
        });
    }

    pub fn check_failed(&self) -> Result<(), LogError> {
        match self.failure() {
            Some(reason) => Err(LogError::Failed(reason)),
            None => Ok(()),
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Called by the writer thread as it exits; wakes readers waiting at the head.
    pub fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
        self.head.send_modify(|_| {});
        self.durable.send_modify(|_| {});
    }

    pub fn stats(&self) -> LogStats {
        let (segments, first_base) = {
            let segments = self.segments();
            (
                segments.len() as u64,
                segments.first().map_or(0, |s| s.base),
            )
        };
        let head = self.head();
        let (p50, p99, max) = match lock(&self.fsync_micros).as_ref() {
            Some(h) if !h.is_empty() => {
                (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
            }
            _ => (0, 0, 0),
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LogStats {
            start: Position(first_base + HEADER_BYTES),
            head,
            durable_head: self.durable_head(),
            size_bytes: head.0.saturating_sub(first_base),
            segments,
            appends: load(&self.counters.appends),
            append_bytes: load(&self.counters.append_bytes),
            groups: load(&self.counters.groups),
            fsyncs: load(&self.counters.fsyncs),
            fsync_micros_p50: p50,
            fsync_micros_p99: p99,
            fsync_micros_max: max,
            write_errors: load(&self.counters.write_errors),
            tail_cache_bytes: lock(&self.cache).bytes() as u64,
        }
    }
}

/// fsyncs a directory so that created, renamed or removed entries are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("syncing directory", dir, e))
}
