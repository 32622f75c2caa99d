//! The writer thread (`vatio-log-writer`): group commit of queued appends.
//! Under [`crate::Blocking::Inline`] there is no thread: each append is
//! committed alone, in the appending task.
//!
//! It takes what is queued (up to `group_bytes_max`, and no further than the
//! active segment can hold), writes the group with one write, syncs according
//! to the `FsyncMode`, publishes the new head and answers every append of the
//! group. A failed write or sync fails the whole group and cuts the segment
//! back to its last good length, so no partial bytes stay and the head never
//! covers failed bytes. If that cut fails too, the log enters the failed state.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::config::{DurableHook, FaultHook, FaultPoint, FsyncMode, IntervalClock};
use crate::error::copy_io_error;
use crate::recovery::create_segment;
use crate::segment::{self, HEADER_BYTES, SegmentFile};
use crate::shared::{Counters, Shared, lock};
use crate::{Appended, LogError, Position};

/// A message to the writer thread.
pub(crate) enum Request {
    Append(Pending),
    /// An interval passed on the owner's clock ([`IntervalClock::Owner`]).
    IntervalTick,
    Close {
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// One append waiting for the writer.
pub(crate) struct Pending {
    pub payload: Bytes,
    pub reply: oneshot::Sender<Result<Appended, LogError>>,
    /// A slot in the bounded append queue, freed when this append is answered.
    pub slot: OwnedSemaphorePermit,
}

/// The segment being appended to.
pub(crate) struct Active {
    pub segment: SegmentFile,
    pub file: File,
    /// File length: every byte up to here is a good frame (or the header).
    pub len: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    requests: Receiver<Request>,
    active: Active,
    fsync: FsyncMode,
    segment_bytes_max: u64,
    group_bytes_max: u64,
    fault: Option<FaultHook>,
    durable: Option<DurableHook>,
    interval_clock: IntervalClock,
    /// Written bytes not yet fsynced (Interval and Never modes).
    dirty: bool,
    last_sync: Instant,
    /// A request taken from the queue that did not fit in the last group.
    carry: Option<Request>,
    buf: Vec<u8>,
    /// Held while the writer runs: the directory lock.
    _lock: File,
}

pub(crate) struct WriterConfig {
    pub fsync: FsyncMode,
    pub segment_bytes_max: u64,
    pub group_bytes_max: usize,
    pub fault: Option<FaultHook>,
    pub durable: Option<DurableHook>,
    pub interval_clock: IntervalClock,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        requests: Receiver<Request>,
        active: Active,
        config: WriterConfig,
        lock_file: File,
    ) -> Self {
        Writer {
            shared,
            requests,
            active,
            fsync: config.fsync,
            segment_bytes_max: config.segment_bytes_max,
            group_bytes_max: config.group_bytes_max as u64,
            fault: config.fault,
            durable: config.durable,
            interval_clock: config.interval_clock,
            dirty: false,
            last_sync: Instant::now(),
            carry: None,
            buf: Vec::new(),
            _lock: lock_file,
        }
    }

    /// The thread's body: runs until `close` or until every `Log` handle is gone.
    pub fn run(mut self) {
        let close_reply = loop {
            let Some(request) = self.next_request() else {
                break None;
            };
            match request {
                Request::Close { reply } => break Some(reply),
                Request::Append(first) => self.commit_from(first),
                Request::IntervalTick => self.owner_tick(),
            }
        };
        self.finish(close_reply);
    }

    /// Syncs what is written, stops, answers `close` and refuses whatever
    /// is still queued.
    pub fn finish(&mut self, close_reply: Option<oneshot::Sender<Result<(), LogError>>>) {
        let result = self.sync_if_dirty();
        if let Err(e) = &result {
            self.shared.fail(format!("final sync failed: {e}"));
        }
        self.shared.mark_stopped();
        if let Some(reply) = close_reply {
            let _ = reply.send(result);
        }
        // Anything queued after close is refused.
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Request::Append(pending) => {
                    let _ = pending.reply.send(Err(LogError::Closed));
                }
                Request::Close { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Request::IntervalTick => {}
            }
        }
    }

    /// The next request, fsyncing on the way when an interval is due.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            if let Some(deadline) = self.sync_deadline() {
                let now = Instant::now();
                if now >= deadline {
                    self.interval_sync();
                    continue;
                }
                if let Some(request) = self.carry.take() {
                    return Some(request);
                }
                match self
                    .requests
                    .recv_timeout(deadline.saturating_duration_since(now))
                {
                    Ok(request) => return Some(request),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return None,
                }
            }
            if let Some(request) = self.carry.take() {
                return Some(request);
            }
            return self.requests.recv().ok();
        }
    }

    /// When the next interval fsync is due. None once the log has failed:
    /// a failed fsync is not retried (its error may have been the only report
    /// of lost pages), so the writer waits for requests and refuses them.
    fn sync_deadline(&self) -> Option<Instant> {
        match self.fsync {
            FsyncMode::Interval(interval)
                if self.dirty
                    && self.interval_clock == IntervalClock::Writer
                    && self.shared.failure().is_none() =>
            {
                Some(self.last_sync + interval)
            }
            _ => None,
        }
    }

    /// The owner's interval passed: fsync as the writer's own timer would
    /// (never after a failure, as [`Self::sync_deadline`] explains).
    pub fn owner_tick(&mut self) {
        if matches!(self.fsync, FsyncMode::Interval(_))
            && self.interval_clock == IntervalClock::Owner
            && self.shared.failure().is_none()
        {
            self.interval_sync();
        }
    }

    fn interval_sync(&mut self) {
        if let Err(e) = self.sync_if_dirty() {
            self.shared.fail(format!(
                "interval fsync failed after its records were acknowledged: {e}"
            ));
        }
    }

    /// Gathers a group starting with `first`, writes it and answers it.
    pub fn commit_from(&mut self, first: Pending) {
        if let Err(e) = self.shared.check_failed() {
            let _ = first.reply.send(Err(e));
            return;
        }
        let first_bytes = segment::frame_bytes(first.payload.len());
        if self.active.len > HEADER_BYTES
            && self.active.len + first_bytes > self.segment_bytes_max
            && let Err(e) = self.roll()
        {
            Counters::add(&self.shared.counters.write_errors, 1);
            let _ = first.reply.send(Err(e));
            return;
        }
        let mut group_bytes = first_bytes;
        let mut group = vec![first];
        loop {
            match self.requests.try_recv() {
                Ok(Request::Append(pending)) => {
                    let bytes = segment::frame_bytes(pending.payload.len());
                    let fits_group = group_bytes + bytes <= self.group_bytes_max;
                    let fits_segment =
                        self.active.len + group_bytes + bytes <= self.segment_bytes_max;
                    if fits_group && fits_segment {
                        group_bytes += bytes;
                        group.push(pending);
                    } else {
                        self.carry = Some(Request::Append(pending));
                        break;
                    }
                }
                Ok(other @ (Request::Close { .. } | Request::IntervalTick)) => {
                    self.carry = Some(other);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.commit(group);
    }

    fn commit(&mut self, group: Vec<Pending>) {
        self.buf.clear();
        for pending in &group {
            segment::encode_frame(&mut self.buf, &pending.payload);
        }
        let good_len = self.active.len;
        let synced = self.fsync == FsyncMode::Always;
        let result = self.write_buf().and_then(|()| {
            if synced {
                self.sync_active()
            } else {
                self.dirty = true;
                Ok(())
            }
        });
        Counters::add(&self.shared.counters.groups, 1);
        match result {
            Ok(()) => self.publish(group, synced),
            Err(e) => self.fail_group(group, good_len, e),
        }
    }

    /// Writes the encoded group at the end of the active segment.
    fn write_buf(&mut self) -> Result<(), LogError> {
        let path = &self.active.segment.path;
        if let Some(fault) = self.injected(FaultPoint::Write) {
            // Leave half a group behind, as a real short write would.
            let half = self.buf.len() / 2;
            let _ = self.active.file.write_all(&self.buf[..half]);
            return Err(LogError::io("writing log segment", path, fault));
        }
        self.active
            .file
            .write_all(&self.buf)
            .map_err(|e| LogError::io("writing log segment", path, e))
    }

    /// fsyncs the active segment and records how long it took.
    fn sync_active(&mut self) -> Result<(), LogError> {
        let path = &self.active.segment.path;
        if let Some(fault) = self.injected(FaultPoint::Sync) {
            return Err(LogError::io("syncing log segment", path, fault));
        }
        let started = Instant::now();
        self.active
            .file
            .sync_data()
            .map_err(|e| LogError::io("syncing log segment", path, e))?;
        let now = Instant::now();
        self.shared
            .record_fsync(now.saturating_duration_since(started));
        self.last_sync = now;
        self.dirty = false;
        // Every published group is written, so on disk now. (A group commit
        // syncs before it publishes; `publish` moves the durable head on.)
        self.shared.publish_durable(self.shared.head());
        if let Some(hook) = &self.durable {
            // The file's length, not `active.len`: a group commit syncs
            // before it publishes (and counts) its bytes.
            let len = self
                .active
                .file
                .metadata()
                .map_or(self.active.len, |m| m.len());
            hook(path, len);
        }
        Ok(())
    }

    /// Tells the durable hook the active segment is on disk as it is.
    fn report_durable(&self) {
        if let Some(hook) = &self.durable {
            hook(&self.active.segment.path, self.active.len);
        }
    }

    fn sync_if_dirty(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.sync_active()
        } else {
            Ok(())
        }
    }

    fn injected(&self, point: FaultPoint) -> Option<io::Error> {
        self.fault.as_ref().and_then(|hook| hook(point))
    }

    /// Makes a written group visible and answers its appends.
    fn publish(&mut self, group: Vec<Pending>, synced: bool) {
        let base = self.active.segment.base;
        let mut at = Position(base + self.active.len);
        self.active.len += self.buf.len() as u64;
        let mut answers = Vec::with_capacity(group.len());
        let mut payload_bytes = 0u64;
        {
            let mut cache = lock(&self.shared.cache);
            for pending in group {
                drop(pending.slot);
                let end = at.add(segment::frame_bytes(pending.payload.len()));
                payload_bytes += pending.payload.len() as u64;
                cache.push(at, end, pending.payload);
                answers.push((
                    pending.reply,
                    Appended {
                        position: at,
                        end,
                        synced,
                    },
                ));
                at = end;
            }
        }
        Counters::add(&self.shared.counters.appends, answers.len() as u64);
        Counters::add(&self.shared.counters.append_bytes, payload_bytes);
        self.shared.publish_head(at);
        // Under `never` nothing waits for the disk: the durable head follows
        // the visible one (a power loss may take what it covers).
        if synced || self.fsync == FsyncMode::Never {
            self.shared.publish_durable(at);
        }
        for (reply, appended) in answers {
            let _ = reply.send(Ok(appended));
        }
    }

    /// Fails every append of a group and removes whatever it left in the file.
    fn fail_group(&mut self, group: Vec<Pending>, good_len: u64, error: LogError) {
        Counters::add(&self.shared.counters.write_errors, 1);
        tracing::warn!(
            "write-ahead log group of {} appends failed: {error}",
            group.len()
        );
        if let Err(cut_error) = self.cut_back(good_len) {
            self.shared.fail(format!(
                "could not remove a failed write from {} ({cut_error}) after: {error}",
                self.active.segment.path.display()
            ));
        }
        for pending in group {
            let _ = pending.reply.send(Err(copy_error(&error)));
        }
    }

    /// Truncates the active segment back to `good_len` and seeks there.
    fn cut_back(&mut self, good_len: u64) -> io::Result<()> {
        self.active.file.set_len(good_len)?;
        self.active.file.seek(SeekFrom::Start(good_len))?;
        self.active.len = good_len;
        Ok(())
    }

    /// Closes the active segment (synced) and starts the next one.
    fn roll(&mut self) -> Result<(), LogError> {
        self.sync_if_dirty().inspect_err(|e| {
            self.shared
                .fail(format!("fsync before rolling the segment failed: {e}"));
        })?;
        let base = self.active.segment.base + self.active.len;
        let (segment, file) = create_segment(&self.shared.dir, base)?;
        self.shared.segments_mut().push(segment.clone());
        self.active = Active {
            segment,
            file,
            len: HEADER_BYTES,
        };
        // Created synced, with the directory entry.
        self.report_durable();
        self.shared.publish_head(Position(base + HEADER_BYTES));
        // The old segment was synced, the new one created synced.
        self.shared.publish_durable(Position(base + HEADER_BYTES));
        Ok(())
    }
}

/// One group failure, handed to each of its appends.
fn copy_error(error: &LogError) -> LogError {
    match error {
        LogError::Io { op, path, source } => LogError::Io {
            op,
            path: path.clone(),
            source: copy_io_error(source),
        },
        LogError::Failed(reason) => LogError::Failed(reason.clone()),
        other => LogError::Failed(other.to_string()),
    }
}
