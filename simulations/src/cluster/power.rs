//! FAULT INJECTION: the power supply of a node's log disk, for the
//! simulation only.
//!
//! The node's log reports how far each segment file is durable (after each
//! fsync, at a segment's creation, and when it opens). When the power goes,
//! reports stop counting, and before the node starts again every segment
//! file is cut back to the length durable when the power went; a segment
//! never reported durable is removed. Only the log's segment files are
//! covered: subscriber positions, checkpoints, the embedded stores and the
//! archive keep whatever reached the file system.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use vatio_wal::DurableHook;

/// How long a restart waits for a crashed node's log writer thread (a real
/// thread, which finishes its queue after the crash) to let the log go.
const WRITER_GONE_MAX: Duration = Duration::from_secs(20);

/// One node's log disk power.
#[derive(Default)]
pub struct Power {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    off: bool,
    /// Per segment file, its length durable as last reported while on.
    durable: HashMap<PathBuf, u64>,
}

impl Power {
    /// The hook the node's log reports durable lengths to.
    pub fn hook(self: &Arc<Self>) -> DurableHook {
        let power = Arc::clone(self);
        Arc::new(move |path: &Path, len: u64| {
            let mut state = power.lock();
            // What the writer syncs after the power went never reached the disk.
            if !state.off {
                state.durable.insert(path.to_path_buf(), len);
            }
        })
    }

    /// The power goes: from now on nothing more becomes durable.
    pub fn cut(&self) {
        self.lock().off = true;
    }

    pub fn is_off(&self) -> bool {
        self.lock().off
    }

    /// The power comes back: waits until the crashed node's log writer has
    /// let the log in `segments` go, cuts each segment back to what was
    /// durable, and switches on. Returns the bytes lost.
    pub fn restore(&self, segments: &Path) -> anyhow::Result<u64> {
        let lock = wait_for_writer(segments)?;
        let mut state = self.lock();
        let mut lost = 0;
        let entries = std::fs::read_dir(segments)
            .with_context(|| format!("listing {}", segments.display()))?;
        for entry in entries {
            let path = entry?.path();
            if !is_segment(&path) {
                continue;
            }
            let len = std::fs::metadata(&path)?.len();
            match state.durable.get(&path) {
                Some(&durable) if durable < len => {
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(durable))
                        .with_context(|| format!("cutting {} back", path.display()))?;
                    lost += len - durable;
                }
                Some(_) => {}
                None => {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    lost += len;
                }
            }
        }
        // The log reports everything again when it opens.
        state.durable.clear();
        state.off = false;
        drop(lock);
        Ok(lost)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wal")
}

/// Takes the log directory's lock, which the writer thread holds until it
/// stops. Real time: the writer is a real thread.
pub(crate) fn wait_for_writer(segments: &Path) -> anyhow::Result<File> {
    let path = segments.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if started.elapsed() < WRITER_GONE_MAX => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(TryLockError::WouldBlock) => {
                anyhow::bail!(
                    "the crashed node's log writer still holds {} after {WRITER_GONE_MAX:?}",
                    path.display()
                )
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restoring_cuts_back_to_what_was_durable_when_the_power_went() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let seg = |n: u64| dir.path().join(format!("{n:020}.wal"));
        std::fs::write(seg(0), [1u8; 100])?;
        std::fs::write(seg(100), [2u8; 50])?;
        std::fs::write(seg(150), [3u8; 10])?;
        let power = Arc::new(Power::default());
        let hook = power.hook();
        hook(&seg(0), 100);
        hook(&seg(100), 20);
        power.cut();
        // Synced by the dying writer: too late.
        hook(&seg(100), 50);
        hook(&seg(150), 10);
        assert!(power.is_off());

        assert_eq!(power.restore(dir.path())?, 30 + 10);
        assert_eq!(std::fs::metadata(seg(0))?.len(), 100);
        assert_eq!(std::fs::metadata(seg(100))?.len(), 20);
        assert!(!seg(150).exists(), "a segment never durable is gone");
        assert!(!power.is_off());
        Ok(())
    }
}
