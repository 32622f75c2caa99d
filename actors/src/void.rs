//! Steps this node logged that must never count: steps it took as a
//! device's owner just before it went down, which no replica confirmed and
//! which the device's next owner went on without (the client was never
//! acknowledged and sent the readings again there). The shipper learns of
//! them from the replica when this node comes back, records their log ends
//! here (durably, before anything may read past them), and subscribers,
//! the device checkpoint and start-up recovery skip them.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum VoidError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {text:?} is not a log position")]
    Corrupt {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

/// The voided steps, by their end in this node's log: one decimal per line.
#[derive(Debug)]
pub struct VoidSet {
    path: PathBuf,
    ends: Mutex<BTreeSet<u64>>,
}

impl VoidSet {
    /// Loads the set (empty if the file does not exist yet).
    pub fn open(path: &Path) -> Result<Self, VoidError> {
        let io = |source| VoidError::Io {
            path: path.to_owned(),
            source,
        };
        let mut ends = BTreeSet::new();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        // Every complete line ends with '\n'; a torn last line from a crash
        // mid-append was never acted on (the set is durable before anyone
        // reads past a voided step), so it is ignored.
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        for (i, line) in complete.split('\n').enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let end = line.parse().map_err(|_| VoidError::Corrupt {
                path: path.to_owned(),
                line: i + 1,
                text: line.to_owned(),
            })?;
            ends.insert(end);
        }
        Ok(Self {
            path: path.to_owned(),
            ends: Mutex::new(ends),
        })
    }

    pub fn contains(&self, end: u64) -> bool {
        self.ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&end)
    }

    pub fn len(&self) -> usize {
        self.ends.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds ends and makes them durable before returning.
    pub fn add(&self, new: &[u64]) -> Result<(), VoidError> {
        if new.is_empty() {
            return Ok(());
        }
        let io = |source| VoidError::Io {
            path: self.path.clone(),
            source,
        };
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::new();
        for end in new {
            if ends.insert(*end) {
                text.push_str(&format!("{end}\n"));
            }
        }
        if text.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(())
    }
}

impl VoidSet {
    /// Forgets ends below `start` (the log no longer holds those records),
    /// rewriting the file (temporary file, fsync, rename) when any went.
    pub fn prune_below(&self, start: u64) -> Result<usize, VoidError> {
        let io = |source| VoidError::Io {
            path: self.path.clone(),
            source,
        };
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let kept = ends.split_off(&start);
        let pruned = ends.len();
        *ends = kept;
        if pruned == 0 {
            return Ok(0);
        }
        let text: String = ends.iter().map(|e| format!("{e}\n")).collect();
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_survive_reopening_and_a_torn_last_line_is_ignored() -> Result<(), VoidError> {
        let dir = tempfile::tempdir().map_err(|source| VoidError::Io {
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let path = dir.path().join("void");
        let set = VoidSet::open(&path)?;
        assert!(set.is_empty());
        set.add(&[120, 40])?;
        set.add(&[40, 300])?;
        let again = VoidSet::open(&path)?;
        assert_eq!(again.len(), 3);
        assert!(again.contains(40) && again.contains(120) && again.contains(300));
        assert!(!again.contains(41));

        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| VoidError::Io {
                path: path.clone(),
                source,
            })?;
        file.write_all(b"99").map_err(|source| VoidError::Io {
            path: path.clone(),
            source,
        })?;
        assert_eq!(
            VoidSet::open(&path)?.len(),
            3,
            "an unfinished last line was never acted on"
        );

        std::fs::write(&path, "12\nnot a number\n").map_err(|source| VoidError::Io {
            path: path.clone(),
            source,
        })?;
        assert!(matches!(
            VoidSet::open(&path),
            Err(VoidError::Corrupt { line: 2, .. })
        ));
        Ok(())
    }

    #[test]
    fn ends_below_the_log_start_are_forgotten_for_good() -> Result<(), VoidError> {
        let dir = tempfile::tempdir().map_err(|source| VoidError::Io {
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let path = dir.path().join("void");
        let set = VoidSet::open(&path)?;
        set.add(&[10, 20, 30])?;
        assert_eq!(set.prune_below(25)?, 2);
        assert_eq!(set.prune_below(25)?, 0);
        let again = VoidSet::open(&path)?;
        assert_eq!(again.len(), 1);
        assert!(again.contains(30) && !again.contains(20));
        Ok(())
    }
}
