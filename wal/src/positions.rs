//! `PositionStore`: durable named positions, one per log subscriber.
//!
//! Each name is one small file `{name}.pos` holding the position (u64 LE) and
//! a crc32c of those 8 bytes. A commit writes a temporary file, fsyncs it,
//! renames it over the old one and fsyncs the directory, so a crash leaves
//! either the old position or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Blocking;
use crate::shared::sync_dir;
use crate::{LogError, Position};

const SUFFIX: &str = ".pos";
const TMP_MARK: &str = ".tmp-";
const FILE_BYTES: usize = 12;
/// Longest position name.
const NAME_BYTES_MAX: usize = 200;

/// Durable named positions in one directory. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PositionStore {
    dir: Arc<PathBuf>,
    /// Where [`PositionStore::commit_async`] does its file work.
    blocking: Blocking,
    /// Makes temporary file names unique within this process.
    tmp_counter: Arc<AtomicU64>,
}

impl PositionStore {
    /// Opens (creating if needed) the directory, and removes temporary files
    /// left by commits that a crash interrupted.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, LogError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)
            .map_err(|e| LogError::io("creating position directory", &dir, e))?;
        let entries =
            fs::read_dir(&dir).map_err(|e| LogError::io("listing position directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io("listing position directory", &dir, e))?;
            let is_tmp = entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.contains(TMP_MARK));
            if is_tmp {
                fs::remove_file(entry.path())
                    .map_err(|e| LogError::io("removing stale position file", entry.path(), e))?;
            }
        }
        Ok(PositionStore {
            dir: Arc::new(dir),
            blocking: Blocking::Threads,
            tmp_counter: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The position last committed under `name`, or `None` if there is none.
    pub fn load(&self, name: &str) -> Result<Option<Position>, LogError> {
        let path = self.path_of(name)?;
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io("opening position file", &path, e)),
        };
        let mut bytes = Vec::with_capacity(FILE_BYTES);
        file.read_to_end(&mut bytes)
            .map_err(|e| LogError::io("reading position file", &path, e))?;
        decode(&bytes)
            .map(Some)
            .map_err(|(offset, detail)| LogError::Corrupt {
                path,
                offset,
                detail,
            })
    }

    /// Durably stores `pos` under `name`. Blocks on two fsyncs; from async
    /// code use [`PositionStore::commit_async`].
    pub fn commit(&self, name: &str, pos: Position) -> Result<(), LogError> {
        let path = self.path_of(name)?;
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("{name}{SUFFIX}{TMP_MARK}{n}"));
        let written = write_synced(&tmp, &encode(pos))
            .map_err(|e| LogError::io("writing position file", &tmp, e))
            .and_then(|()| {
                fs::rename(&tmp, &path)
                    .map_err(|e| LogError::io("renaming position file", &path, e))
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.dir)
    }

    /// The same store, doing its asynchronous commits where `blocking` says.
    pub fn with_blocking(mut self, blocking: Blocking) -> Self {
        self.blocking = blocking;
        self
    }

    /// [`PositionStore::commit`] on tokio's blocking pool, or inline under
    /// [`Blocking::Inline`].
    pub async fn commit_async(&self, name: &str, pos: Position) -> Result<(), LogError> {
        if self.blocking == Blocking::Inline {
            return self.commit(name, pos);
        }
        let store = self.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || store.commit(&name, pos))
            .await
            .map_err(|e| LogError::Failed(format!("position commit task failed: {e}")))?
    }

    /// `dir/{name}.pos`, after checking that the name is a plain file name.
    fn path_of(&self, name: &str) -> Result<PathBuf, LogError> {
        let valid = !name.is_empty()
            && name.len() <= NAME_BYTES_MAX
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            return Ok(self.dir.join(format!("{name}{SUFFIX}")));
        }
        let detail = format!(
            "invalid position name {name:?}: use 1 to {NAME_BYTES_MAX} of A-Z a-z 0-9 - _ . (not starting with .)"
        );
        Err(LogError::io(
            "naming position in",
            self.dir.as_path(),
            io::Error::new(io::ErrorKind::InvalidInput, detail),
        ))
    }
}

fn encode(pos: Position) -> [u8; FILE_BYTES] {
    let mut bytes = [0u8; FILE_BYTES];
    let value = pos.0.to_le_bytes();
    bytes[..8].copy_from_slice(&value);
    bytes[8..].copy_from_slice(&crc32c::crc32c(&value).to_le_bytes());
    bytes
}

/// The position in a file's bytes, or the offset and reason it is corrupt.
fn decode(bytes: &[u8]) -> Result<Position, (u64, String)> {
    if bytes.len() != FILE_BYTES {
        return Err((
            0,
            format!(
                "position file has {} bytes, expected {FILE_BYTES}",
                bytes.len()
            ),
        ));
    }
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[..8]);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[8..]);
    if crc32c::crc32c(&value) != u32::from_le_bytes(stored) {
        return Err((8, "position checksum mismatch".to_string()));
    }
    Ok(Position(u64::from_le_bytes(value)))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
