//! Steps this node logged that must never count: steps it took as a
//! device's owner just before it went down, which no replica confirmed and
//! which the device's next owner went on without (the client was never
//! acknowledged and sent the readings again there). The shipper learns of
//! them from the replica when this node comes back, records their log ends
//! here (durably, before anything may read past them), and subscribers,
//! the device checkpoint and start-up recovery skip them.
//!
//! With each end the set keeps the step's device and released readings: a
//! copy elsewhere may hold the step after all, and this node's next
//! adoption of the device then delivers them (see [`crate::logic::voided`]).
//! They are kept until a later own step of the device settles them, so a
//! restart in between does not lose them.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vatio_stores::{DeviceId, Reading};

use crate::logic::voided::VoidedStep;

#[derive(Debug, thiserror::Error)]
pub enum VoidError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {text:?} is not a log position, optionally followed by a step")]
    Corrupt {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("encoding a dropped step of {device}: {source}")]
    Encode {
        device: DeviceId,
        source: postcard::Error,
    },
}

/// A dropped step's device and released readings, as a line stores them.
type Payload = (DeviceId, Vec<Reading>);

/// The voided steps, by their end in this node's log: one per line, the
/// end in decimal, then (since steps carry their readings) a space and the
/// step's device and readings, postcard-encoded, in hex.
#[derive(Debug)]
pub struct VoidSet {
    path: PathBuf,
    ends: Mutex<BTreeMap<u64, Option<Payload>>>,
}

impl VoidSet {
    /// Loads the set (empty if the file does not exist yet).
    pub fn open(path: &Path) -> Result<Self, VoidError> {
        let io = |source| VoidError::Io {
            path: path.to_owned(),
            source,
        };
        let mut ends = BTreeMap::new();
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
            let corrupt = || VoidError::Corrupt {
                path: path.to_owned(),
                line: i + 1,
                text: line.chars().take(80).collect(),
            };
            let (end, payload) = match line.split_once(' ') {
                Some((end, hex)) => (end, Some(decode_payload(hex).ok_or_else(corrupt)?)),
                None => (line, None),
            };
            let end = end.parse().map_err(|_| corrupt())?;
            ends.insert(end, payload);
        }
        Ok(Self {
            path: path.to_owned(),
            ends: Mutex::new(ends),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Option<Payload>>> {
        self.ends.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, end: u64) -> bool {
        self.lock().contains_key(&end)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds ends and makes them durable before returning.
    pub fn add(&self, new: &[u64]) -> Result<(), VoidError> {
        self.append(new.iter().map(|&end| (end, None)).collect())
    }

    /// Adds dropped steps, with their devices and readings, and makes them
    /// durable before returning.
    pub fn add_steps(&self, steps: &[(DeviceId, VoidedStep)]) -> Result<(), VoidError> {
        self.append(
            steps
                .iter()
                .map(|(device, step)| (step.end, Some((device.clone(), step.released.clone()))))
                .collect(),
        )
    }

    fn append(&self, new: Vec<(u64, Option<Payload>)>) -> Result<(), VoidError> {
        if new.is_empty() {
            return Ok(());
        }
        let io = |source| VoidError::Io {
            path: self.path.clone(),
            source,
        };
        let mut ends = self.lock();
        let mut text = String::new();
        for (end, payload) in new {
            if ends.contains_key(&end) {
                continue;
            }
            text.push_str(&line(end, payload.as_ref())?);
            ends.insert(end, payload);
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

    /// The dropped steps whose readings are kept, by device, oldest first.
    pub fn steps(&self) -> BTreeMap<DeviceId, Vec<VoidedStep>> {
        let mut out: BTreeMap<DeviceId, Vec<VoidedStep>> = BTreeMap::new();
        for (end, payload) in self.lock().iter() {
            if let Some((device, released)) = payload {
                out.entry(device.clone()).or_default().push(VoidedStep {
                    end: *end,
                    released: released.clone(),
                });
            }
        }
        out
    }

    /// At start-up: the dropped steps whose readings this node's next
    /// adoption of their device may have to deliver, those no adoption
    /// logged after them took in (`adopted`: the end of each device's last
    /// adoption step replayed at start-up). The others' readings are
    /// forgotten: a node that stopped between logging such an adoption and
    /// settling the set would otherwise deliver them twice.
    pub fn to_deliver(
        &self,
        adopted: &BTreeMap<DeviceId, u64>,
    ) -> Result<BTreeMap<DeviceId, Vec<VoidedStep>>, VoidError> {
        let mut open = BTreeMap::new();
        let mut settled = Vec::new();
        for (device, steps) in self.steps() {
            let adoption = adopted.get(&device).copied().unwrap_or(0);
            let (done, pending): (Vec<VoidedStep>, Vec<VoidedStep>) =
                steps.into_iter().partition(|s| s.end < adoption);
            settled.extend(done.iter().map(|s| s.end));
            if !pending.is_empty() {
                open.insert(device, pending);
            }
        }
        self.settle(&settled)?;
        Ok(open)
    }

    /// Forgets the readings of these dropped steps (a later own step of
    /// their device settled them); the ends stay voided.
    pub fn settle(&self, ends: &[u64]) -> Result<usize, VoidError> {
        let mut set = self.lock();
        let mut settled = 0;
        for end in ends {
            if let Some(payload) = set.get_mut(end)
                && payload.take().is_some()
            {
                settled += 1;
            }
        }
        if settled > 0 {
            self.rewrite(&set)?;
        }
        Ok(settled)
    }

    /// Forgets ends below `start` (the log no longer holds those records),
    /// rewriting the file (temporary file, fsync, rename) when any went.
    /// Steps whose readings are still kept stay until they are settled.
    pub fn prune_below(&self, start: u64) -> Result<usize, VoidError> {
        let mut ends = self.lock();
        let before = ends.len();
        ends.retain(|end, payload| *end >= start || payload.is_some());
        let pruned = before - ends.len();
        if pruned > 0 {
            self.rewrite(&ends)?;
        }
        Ok(pruned)
    }

    fn rewrite(&self, ends: &BTreeMap<u64, Option<Payload>>) -> Result<(), VoidError> {
        let io = |source| VoidError::Io {
            path: self.path.clone(),
            source,
        };
        let mut text = String::new();
        for (end, payload) in ends {
            text.push_str(&line(*end, payload.as_ref())?);
        }
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
        Ok(())
    }
}

/// One line of the file.
fn line(end: u64, payload: Option<&Payload>) -> Result<String, VoidError> {
    let Some(payload) = payload else {
        return Ok(format!("{end}\n"));
    };
    let bytes = postcard::to_allocvec(payload).map_err(|source| VoidError::Encode {
        device: payload.0.clone(),
        source,
    })?;
    let mut text = format!("{end} ");
    for b in bytes {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    Ok(text)
}

fn decode_payload(hex: &str) -> Option<Payload> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    postcard::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> Result<tempfile::TempDir, VoidError> {
        tempfile::tempdir().map_err(|source| VoidError::Io {
            path: PathBuf::from("tempdir"),
            source,
        })
    }

    #[test]
    fn ends_survive_reopening_and_a_torn_last_line_is_ignored() -> Result<(), VoidError> {
        let dir = tempdir()?;
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

        // A line that is no end, or whose step does not decode.
        for text in ["12\nnot a number\n", "12\n40 zz\n"] {
            std::fs::write(&path, text).map_err(|source| VoidError::Io {
                path: path.clone(),
                source,
            })?;
            assert!(matches!(
                VoidSet::open(&path),
                Err(VoidError::Corrupt { line: 2, .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn ends_below_the_log_start_are_forgotten_for_good() -> Result<(), VoidError> {
        let dir = tempdir()?;
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
    #[test]
    fn a_dropped_steps_readings_are_kept_until_settled() -> Result<(), VoidError> {
        use vatio_stores::{DeviceKind, Metric};
        let dir = tempdir()?;
        let path = dir.path().join("void");
        let device = DeviceId::new("meter-1-07");
        let reading = |seq: u64| Reading {
            device: device.clone(),
            kind: DeviceKind::ElectricityMeter,
            seq,
            ts_ms: 1_795_687_200_000,
            metric: Metric::Power,
            value: 7.5,
        };
        let step = VoidedStep {
            end: 79130,
            released: vec![reading(145), reading(146)],
        };
        let set = VoidSet::open(&path)?;
        set.add(&[100])?;
        set.add_steps(&[(device.clone(), step.clone())])?;

        let again = VoidSet::open(&path)?;
        assert!(again.contains(100) && again.contains(79130));
        assert_eq!(again.steps().get(&device), Some(&vec![step]));
        // The log moved past both: the plain end goes, the step with
        // readings to deliver stays.
        assert_eq!(again.prune_below(90_000)?, 1);
        assert!(again.contains(79130));

        assert_eq!(again.settle(&[79130])?, 1);
        let settled = VoidSet::open(&path)?;
        assert!(settled.steps().is_empty());
        assert!(settled.contains(79130), "a settled step stays voided");
        assert_eq!(settled.prune_below(90_000)?, 1);
        Ok(())
    }

    #[test]
    fn at_start_up_steps_an_adoption_took_in_are_forgotten() -> Result<(), VoidError> {
        let dir = tempdir()?;
        let path = dir.path().join("void");
        let step = |end: u64| VoidedStep {
            end,
            released: Vec::new(),
        };
        let (a, b) = (DeviceId::new("meter-a"), DeviceId::new("meter-b"));
        let set = VoidSet::open(&path)?;
        set.add_steps(&[
            (a.clone(), step(100)),
            (b.clone(), step(200)),
            (a.clone(), step(300)),
        ])?;
        // meter-a was adopted at 250, after its step at 100.
        let adopted = BTreeMap::from([(a.clone(), 250)]);
        let open = set.to_deliver(&adopted)?;
        assert_eq!(open.get(&a), Some(&vec![step(300)]));
        assert_eq!(open.get(&b), Some(&vec![step(200)]));
        let again = VoidSet::open(&path)?;
        assert_eq!(again.steps().get(&a), Some(&vec![step(300)]));
        assert!(again.contains(100), "still voided");
        Ok(())
    }
}
