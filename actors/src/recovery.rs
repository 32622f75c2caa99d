//! Start-up recovery of the devices' sequencing state: load the last
//! checkpoint, fold every logged step after it, and save the result as a
//! checkpoint at the log's head. The router starts from this table, so a
//! reading accepted before a crash is a duplicate after it, and the
//! subscribers replay the log from their own positions.

use std::collections::BTreeMap;
use std::time::Duration;

use vatio_stores::{CheckpointStore, DeviceId};
use vatio_wal::{Log, Position};

use crate::checkpoint::DeviceTable;
use crate::journal::LogRecord;
use crate::logic::device::DeviceState;

/// Most record bytes read at a time while replaying.
const READ_BYTES_MAX: usize = 4 << 20;

/// The rebuilt table and what it took.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub devices: BTreeMap<DeviceId, DeviceState>,
    /// Per device, the end of the last step of this node's adopting it
    /// that was replayed (devices this node claimed since the checkpoint).
    pub adopted: BTreeMap<DeviceId, u64>,
    /// In a cluster, per device with own steps its replicas may not have
    /// settled yet: its state before the first of them (see
    /// `router::confirmed`). Every other device's state is settled as
    /// rebuilt.
    pub confirmed: BTreeMap<DeviceId, DeviceState>,
    /// The log position the table is at (the head at start-up).
    pub position: u64,
    /// Log records replayed after the checkpoint.
    pub records_replayed: u64,
    pub bytes_replayed: u64,
    /// Records that could not be decoded (written by another version).
    pub records_undecodable: u64,
    /// The checkpoint was past the log's head: the log lost records.
    pub checkpoint_past_head: bool,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("loading the device checkpoint: {0}")]
    Store(#[from] vatio_stores::Error),
    #[error("reading the write-ahead log: {0}")]
    Log(#[from] vatio_wal::LogError),
    #[error("{0}")]
    Checkpoint(String),
    #[error(
        "the device checkpoint is at log position {checkpoint} but the log starts at {start}: \
         the log was truncated past it, so device dedupe state cannot be rebuilt"
    )]
    Gap { checkpoint: u64, start: u64 },
}

/// Devices' states as the checkpoint stores them.
type EncodedStates = Vec<(DeviceId, Vec<u8>)>;

/// Rebuilds every device's state as of the log's head. Takes a clock-free
/// measure of time only for the report. `settled`: in a cluster, where the
/// shipper's committed position is (its own steps before it are settled
/// with their replicas).
pub async fn rebuild_devices(
    log: &Log,
    node: &str,
    void: Option<&crate::void::VoidSet>,
    settled: Option<u64>,
    store: &dyn CheckpointStore,
    now: impl Fn() -> std::time::Instant,
) -> Result<Rebuilt, RecoveryError> {
    let began = now();
    let saved = store.load().await?;
    let start = log.start().0;
    let from = match saved.position {
        Some(p) if p < start => {
            return Err(RecoveryError::Gap {
                checkpoint: p,
                start,
            });
        }
        Some(p) => p,
        None => start,
    };
    let mut table = DeviceTable::decode(saved.devices).map_err(RecoveryError::Checkpoint)?;
    let head = log.visible_head().0;
    let mut out = Rebuilt {
        position: head,
        checkpoint_past_head: from > head,
        ..Rebuilt::default()
    };
    if out.checkpoint_past_head {
        // The log lost records after the checkpoint took them: device state
        // keeps them (a resend counts as a duplicate), and it is reported.
        out_of_log_warning(from, head);
    }
    // The device checkpoint takes only settled steps, so the steps before
    // it are settled too.
    let settled = settled.map(|s| s.max(from));
    // In a cluster the checkpoint saved here takes only settled steps: an
    // own step after the shipper's position may yet be dropped, and a state
    // saved with it kept the dropped step after the next start (simulation
    // seed 6010: its readings counted as released on a copy that was off
    // the line, and delivered a second time).
    let mut at_boundary: Option<(u64, EncodedStates)> = None;
    if from < head {
        let mut reader = log.reader(Position(from))?;
        while reader.position().0 < head {
            for rec in reader.next_batch(READ_BYTES_MAX).await? {
                if at_boundary.is_none() && settled.is_some_and(|s| rec.end.0 > s) {
                    let changed = table.encode_changed().map_err(RecoveryError::Checkpoint)?;
                    at_boundary = Some((rec.position.0, changed));
                }
                out.records_replayed += 1;
                out.bytes_replayed += rec.end.0 - rec.position.0;
                match LogRecord::decode(&rec.payload) {
                    // Dropped as orphaned: never part of the device's line.
                    Ok(LogRecord::Own(_)) if void.is_some_and(|v| v.contains(rec.end.0)) => {}
                    Ok(LogRecord::Own(step)) => {
                        if settled.is_some_and(|s| rec.end.0 > s)
                            && !out.confirmed.contains_key(&step.device)
                        {
                            let before = table.state(&step.device).unwrap_or_default();
                            out.confirmed.insert(step.device.clone(), before);
                        }
                        if step.only_adopts() {
                            out.adopted.insert(step.device.clone(), rec.end.0);
                        }
                        table.fold(&step, node, rec.end.0)
                    }
                    Ok(LogRecord::Replica(replica)) => table.fold_replica(&replica),
                    Ok(LogRecord::Fence(fence)) => table.fold_fence(&fence),
                    Err(e) => {
                        out.records_undecodable += 1;
                        tracing::error!(position = rec.position.0, error = %e, "skipping an undecodable log record while rebuilding device state");
                    }
                }
            }
        }
    }
    if from != head || saved.position.is_none() {
        let (position, changed) = match at_boundary {
            Some(saved) => saved,
            None => (
                head,
                table.encode_changed().map_err(RecoveryError::Checkpoint)?,
            ),
        };
        store.save(position, &changed).await?;
    }
    out.devices = table.into_devices();
    out.elapsed = now().saturating_duration_since(began);
    tracing::info!(
        devices = out.devices.len(),
        records = out.records_replayed,
        bytes = out.bytes_replayed,
        elapsed_ms = out.elapsed.as_millis() as u64,
        "device state rebuilt from the checkpoint and the log"
    );
    Ok(out)
}

fn out_of_log_warning(checkpoint: u64, head: u64) {
    tracing::error!(
        checkpoint,
        head,
        "the device checkpoint is past the log's head: the log lost records it had taken; \
         going on from the head with the checkpointed state"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::StepRecord;
    use crate::logic::device::Op;
    use vatio_stores::embedded::{SqliteCheckpoints, Synchronous};

    fn step(device: &str, seq: u64) -> StepRecord {
        StepRecord {
            device: DeviceId::new(device),
            term: 0,
            ops: vec![Op::GiveUp {
                from: seq,
                to: seq + 1,
            }],
            letters: Vec::new(),
        }
    }

    /// A device whose last own steps the shipper had not settled gets its
    /// state before the first of them as its confirmed copy; one whose
    /// steps were all settled gets none (its state as rebuilt is settled).
    #[tokio::test]
    async fn the_state_before_a_devices_first_unsettled_own_step_is_kept()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (log, _) = Log::open(vatio_wal::LogConfig::new(dir.path().join("log")))?;
        let store = SqliteCheckpoints::open(&dir.path().join("c.sqlite"), Synchronous::Full)?;
        let mut ends = Vec::new();
        for (device, seq) in [("m-1", 1), ("m-2", 1), ("m-1", 2), ("m-1", 3)] {
            ends.push(log.append(step(device, seq).encode()?).await?.end.0);
        }
        let now = std::time::Instant::now;
        let rebuilt = rebuild_devices(&log, "n1", None, Some(ends[1]), &store, now).await?;
        let m1 = DeviceId::new("m-1");
        assert_eq!(rebuilt.devices.get(&m1).map(DeviceState::next_seq), Some(4));
        assert_eq!(
            rebuilt.confirmed.get(&m1).map(DeviceState::next_seq),
            Some(2),
            "m-1 before its step at {}",
            ends[2]
        );
        assert!(!rebuilt.confirmed.contains_key(&DeviceId::new("m-2")));

        // The checkpoint saved takes only the settled steps: the next start
        // replays the others again (some may be dropped meanwhile).
        let saved = store.load().await?;
        assert_eq!(saved.position, Some(ends[1]));
        let m1_saved = saved
            .devices
            .iter()
            .find(|(d, _)| *d == m1)
            .map(|(_, bytes)| crate::journal::decode_state(bytes))
            .transpose()?;
        assert_eq!(m1_saved.map(|s| s.next_seq()), Some(2));
        Ok(())
    }
}
