//! `LogConfig` and `FsyncMode`: how a log is laid out on disk and when it syncs.
//!
//! Every queue and buffer of the log has its bound here, with a default that
//! suits one node. `FaultHook` lets tests and simulations inject write and sync
//! failures; production code leaves it unset.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// When the writer makes appended bytes durable with an fsync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncMode {
    /// One fsync per group commit; an append is acknowledged (and becomes
    /// visible to readers) only after its group is synced.
    #[default]
    Always,
    /// Appends are acknowledged once written (`synced = false`); the writer
    /// fsyncs at most once per interval and within one interval of any write,
    /// even when appends stop. A crash may lose up to one interval of
    /// acknowledged records.
    Interval(Duration),
    /// No fsync except when a segment is rolled and when the log is closed.
    Never,
}

/// `FsyncMode::from_str` failed; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync mode {input:?}: {reason}")]
pub struct ParseFsyncModeError {
    input: String,
    reason: String,
}

impl FromStr for FsyncMode {
    type Err = ParseFsyncModeError;

    /// Parses `always`, `never` or `interval(DURATION)` with a humantime
    /// duration such as `5ms` or `1s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ParseFsyncModeError {
            input: s.to_string(),
            reason,
        };
        let text = s.trim();
        match text {
            "always" => return Ok(FsyncMode::Always),
            "never" => return Ok(FsyncMode::Never),
            _ => {}
        }
        let inner = text
            .strip_prefix("interval(")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(|| {
                error("expected \"always\", \"never\" or \"interval(DURATION)\", e.g. \"interval(5ms)\"".to_string())
            })?;
        let interval = humantime::parse_duration(inner.trim())
            .map_err(|e| error(format!("bad interval duration {:?}: {e}", inner.trim())))?;
        if interval.is_zero() {
            return Err(error("the interval must be longer than zero".to_string()));
        }
        Ok(FsyncMode::Interval(interval))
    }
}

impl fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncMode::Always => f.write_str("always"),
            FsyncMode::Never => f.write_str("never"),
            FsyncMode::Interval(interval) => {
                write!(f, "interval({})", humantime::format_duration(*interval))
            }
        }
    }
}

impl Serialize for FsyncMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FsyncMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A point in the writer where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Before a group's bytes are written. An injected fault writes half of
    /// the group first, as a real short write would, then fails.
    Write,
    /// Before every fsync of a segment file (group, interval, roll, close).
    Sync,
}

/// FAULT INJECTION, for tests and simulations only: called by the writer
/// thread at each [`FaultPoint`]; returning `Some(error)` makes that operation
/// fail with it. Production configurations leave [`LogConfig::fault`] unset.
pub type FaultHook = Arc<dyn Fn(FaultPoint) -> Option<std::io::Error> + Send + Sync>;

/// FAULT INJECTION, for simulations only: told, on the writer thread,
/// whenever a segment file is durable up to a length (after each fsync, at
/// a new segment's creation, and for every segment when the log opens).
/// A simulated power loss cuts each file back to its last such length.
pub type DurableHook = Arc<dyn Fn(&Path, u64) + Send + Sync>;

/// Who times the fsyncs of [`FsyncMode::Interval`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IntervalClock {
    /// The writer thread, on the machine's clock (production).
    #[default]
    Writer,
    /// The log's owner, by calling [`crate::Log::interval_tick`] once per
    /// interval on its own clock. For simulations, whose clock is not the
    /// machine's: timed by the machine, an interval lasts many simulated
    /// ones and the node seems to wait for its disk for seconds.
    Owner,
}

/// Where a log does its blocking work (file I/O, fsyncs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Blocking {
    /// On its writer thread and tokio's blocking pool (production): appends
    /// are grouped, and tasks never wait on the disk.
    #[default]
    Threads,
    /// In the calling task, one append at a time (simulations): nothing runs
    /// beside the simulation's one thread, so its interleavings follow from
    /// its seed alone. Blocks the runtime's thread for each write and fsync.
    Inline,
}

/// Where a log lives and the bounds it works within.
#[derive(Clone)]
pub struct LogConfig {
    /// Directory holding the segment files; created if missing.
    pub dir: PathBuf,
    /// A segment is rolled when the next group would take it past this size.
    /// A group bigger than this still goes into one (new) segment.
    pub segment_bytes_max: u64,
    /// When appended bytes are fsynced.
    pub fsync: FsyncMode,
    /// Most frame bytes written by one group commit (a single larger record
    /// still goes alone).
    pub group_bytes_max: usize,
    /// Most appends waiting for the writer; `append` waits while it is full.
    pub append_queue_max: usize,
    /// Most payload bytes of recent records kept in memory for readers.
    pub tail_cache_bytes_max: usize,
    /// FAULT INJECTION for tests and simulations only; `None` in production.
    pub fault: Option<FaultHook>,
    /// FAULT INJECTION for simulations only; `None` in production.
    pub durable: Option<DurableHook>,
    /// Who times interval fsyncs; [`IntervalClock::Writer`] in production.
    pub interval_clock: IntervalClock,
    /// Where the blocking work runs; [`Blocking::Threads`] in production.
    pub blocking: Blocking,
}

impl LogConfig {
    pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 << 20;
    pub const GROUP_BYTES_MAX_DEFAULT: usize = 8 << 20;
    pub const APPEND_QUEUE_MAX_DEFAULT: usize = 65_536;
    pub const TAIL_CACHE_BYTES_MAX_DEFAULT: usize = 64 << 20;

    /// A configuration with the defaults: 64 MiB segments, fsync always,
    /// 8 MiB groups, 65,536 queued appends, 64 MiB tail cache, no faults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_bytes_max: Self::SEGMENT_BYTES_MAX_DEFAULT,
            fsync: FsyncMode::default(),
            group_bytes_max: Self::GROUP_BYTES_MAX_DEFAULT,
            append_queue_max: Self::APPEND_QUEUE_MAX_DEFAULT,
            tail_cache_bytes_max: Self::TAIL_CACHE_BYTES_MAX_DEFAULT,
            fault: None,
            durable: None,
            interval_clock: IntervalClock::Writer,
            blocking: Blocking::Threads,
        }
    }

    /// Checks the bounds; the error names the field.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.segment_bytes_max <= crate::segment::HEADER_BYTES {
            return Err(format!(
                "segment_bytes_max must be larger than the {}-byte segment header",
                crate::segment::HEADER_BYTES
            ));
        }
        if self.blocking == Blocking::Inline
            && matches!(self.fsync, FsyncMode::Interval(_))
            && self.interval_clock == IntervalClock::Writer
        {
            return Err(
                "an inline log has no writer thread to time interval fsyncs: its owner must (interval_clock = Owner)"
                    .to_string(),
            );
        }
        if self.group_bytes_max == 0 {
            return Err("group_bytes_max must be at least 1".to_string());
        }
        if self.append_queue_max == 0 {
            return Err("append_queue_max must be at least 1".to_string());
        }
        if self.append_queue_max > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(format!(
                "append_queue_max must be at most {}",
                tokio::sync::Semaphore::MAX_PERMITS
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogConfig")
            .field("dir", &self.dir)
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("fsync", &self.fsync)
            .field("group_bytes_max", &self.group_bytes_max)
            .field("append_queue_max", &self.append_queue_max)
            .field("tail_cache_bytes_max", &self.tail_cache_bytes_max)
            .field("fault", &self.fault.as_ref().map(|_| "<fault hook>"))
            .field("interval_clock", &self.interval_clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_mode_parses_and_displays_round_trip() {
        for text in [
            "always",
            "never",
            "interval(5ms)",
            "interval(1s)",
            "interval(2m 30s)",
        ] {
            let mode: FsyncMode = text.parse().expect("valid mode");
            assert_eq!(mode.to_string(), text);
            assert_eq!(mode.to_string().parse::<FsyncMode>(), Ok(mode));
        }
        assert_eq!(
            "interval(5ms)".parse::<FsyncMode>(),
            Ok(FsyncMode::Interval(Duration::from_millis(5)))
        );
        assert_eq!(FsyncMode::default(), FsyncMode::Always);
    }

    #[test]
    fn fsync_mode_rejects_bad_text_clearly() {
        let err = "interval(x)"
            .parse::<FsyncMode>()
            .expect_err("x is no duration");
        let message = err.to_string();
        assert!(message.contains("interval(x)"), "{message}");
        assert!(message.contains("bad interval duration \"x\""), "{message}");

        let err = "sometimes".parse::<FsyncMode>().expect_err("unknown mode");
        assert!(
            err.to_string().contains("expected \"always\", \"never\""),
            "{err}"
        );

        let err = "interval(0s)"
            .parse::<FsyncMode>()
            .expect_err("zero interval");
        assert!(err.to_string().contains("longer than zero"), "{err}");
    }

    #[test]
    fn fsync_mode_serializes_as_its_string() {
        let json = serde_json::to_string(&FsyncMode::Interval(Duration::from_millis(5)))
            .expect("serialize");
        assert_eq!(json, "\"interval(5ms)\"");
        let back: FsyncMode = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, FsyncMode::Interval(Duration::from_millis(5)));
        let err = serde_json::from_str::<FsyncMode>("\"interval(x)\"").expect_err("bad");
        assert!(err.to_string().contains("bad interval duration"), "{err}");
    }
}
