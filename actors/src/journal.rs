//! What the node writes to its write-ahead log, and how it is encoded.
//!
//! Most records are one step of one of this node's device actors: the
//! sequencing ops it applied (readings held, gaps given up, readings
//! released) and the readings it refused. Subscribers take released readings
//! and dead letters from these records; the device checkpoint folds the ops;
//! a restarted node rebuilds every device's state from them.
//!
//! In a cluster a node also logs [`ReplicaStep`]s: steps another node took
//! as a device's owner, kept here as its replica in the other AZ. They are
//! folded into device state (so this node can hand the device on if the
//! owner goes) but never sent to this node's sinks: the owner does that.
//!
//! The first byte of a record says what follows: [`OWN_STEP`] or
//! [`REPLICA_STEP`] (each with its own format version).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use vatio_stores::{DeviceId, NewDeadLetter, Reading};

use crate::logic::device::{DeviceState, DeviceStateV1, Op};

/// First byte of an own step (format version 1), and of encoded states.
/// A node refuses records it does not know.
const VERSION: u8 = 1;
/// First byte of an own step.
pub const OWN_STEP: u8 = VERSION;
/// First byte of a replica step (format version 1).
pub const REPLICA_STEP: u8 = 2;

/// A step another node logged as a device's owner, as this node (its
/// replica) logs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStep {
    /// Node id of the owner that took the step.
    pub from: String,
    /// End of the step in the owner's log.
    pub end: u64,
    /// The device's state as the owner held it when it shipped the step,
    /// when this node may not hold the device's earlier steps. Folded
    /// before the step's ops.
    pub seed: Option<DeviceState>,
    pub step: StepRecord,
}

/// First byte of a fence record (format version 1).
pub const FENCE: u8 = 3;

/// This node handed a device over to `by` (answering its claim): from now
/// on the device's line runs through `by`. Folded into the device's state
/// (see `DeviceState::fence`) so the fence survives a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FenceRecord {
    pub device: DeviceId,
    pub by: String,
}

impl FenceRecord {
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        Ok(Bytes::from(postcard::to_extend(self, vec![FENCE])?))
    }
}

/// One record of the log, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum LogRecord {
    Own(StepRecord),
    Replica(ReplicaStep),
    Fence(FenceRecord),
}

impl LogRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        match bytes.split_first() {
            None => Err(RecordError::Empty),
            Some((&OWN_STEP, body)) => Ok(Self::Own(postcard::from_bytes(body)?)),
            Some((&REPLICA_STEP, body)) => Ok(Self::Replica(postcard::from_bytes(body)?)),
            Some((&FENCE, body)) => Ok(Self::Fence(postcard::from_bytes(body)?)),
            Some((&v, _)) => Err(RecordError::Version(v)),
        }
    }
}

impl ReplicaStep {
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        Ok(Bytes::from(postcard::to_extend(self, vec![REPLICA_STEP])?))
    }

    /// The device's state after folding this step onto `state`.
    pub fn fold_into(&self, state: &mut DeviceState) {
        // Already folded (the owner sent it again): folding twice would undo
        // later steps where an op replaces the state.
        if state.held_from(&self.from) >= self.end {
            return;
        }
        if let Some(seed) = &self.seed {
            state.apply(&Op::Adopt(Box::new(seed.clone())));
        }
        for op in &self.step.ops {
            state.apply(op);
        }
        state.note_step(&self.from, self.end);
    }
}

/// One device actor step, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub device: DeviceId,
    /// Applied in order to the state before the step.
    pub ops: Vec<Op>,
    /// Readings refused in this step, for the dead-letter office.
    pub letters: Vec<NewDeadLetter>,
}

/// A record that cannot be decoded: written by another version, or a bug.
/// (Torn or corrupt bytes never get here: the log checks every record's
/// checksum first.)
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty log record")]
    Empty,
    #[error(
        "log record type/version {0}; this node reads {OWN_STEP} (own step) and {REPLICA_STEP} (replica step)"
    )]
    Version(u8),
    #[error("undecodable log record: {0}")]
    Decode(#[from] postcard::Error),
}

impl StepRecord {
    /// A step that changes nothing (stands in for a record that could not
    /// be decoded, so positions still advance past it).
    pub fn empty() -> Self {
        Self {
            device: DeviceId::new(""),
            ops: Vec::new(),
            letters: Vec::new(),
        }
    }

    /// Readings this step sends to the sinks, in seq order for the device.
    pub fn released(&self) -> impl Iterator<Item = &Reading> {
        self.ops.iter().filter_map(Op::released)
    }

    /// How many readings this step sends to the sinks.
    pub fn released_len(&self) -> usize {
        self.ops.iter().filter(|op| op.released().is_some()).count()
    }

    /// True when the step changed nothing worth logging.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.letters.is_empty()
    }

    pub fn encode(&self) -> Result<Bytes, RecordError> {
        Ok(Bytes::from(encode_versioned(self)?))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode_versioned(bytes)
    }
}

/// Format version of an encoded device state (the checkpoint, seeds and
/// claim answers); version 1 had no owners.
const STATE_VERSION: u8 = 2;

/// A device's sequencing state as the checkpoint stores it.
pub fn encode_state(state: &DeviceState) -> Result<Vec<u8>, RecordError> {
    Ok(postcard::to_extend(state, vec![STATE_VERSION])?)
}

/// The version byte, then the value, in one allocation (this runs for
/// every device step).
fn encode_versioned<T: Serialize>(value: &T) -> Result<Vec<u8>, RecordError> {
    Ok(postcard::to_extend(value, vec![VERSION])?)
}

pub fn decode_state(bytes: &[u8]) -> Result<DeviceState, RecordError> {
    match bytes.split_first() {
        None => Err(RecordError::Empty),
        Some((&STATE_VERSION, body)) => Ok(postcard::from_bytes(body)?),
        Some((1, body)) => Ok(postcard::from_bytes::<DeviceStateV1>(body)?.into()),
        Some((&v, _)) => Err(RecordError::Version(v)),
    }
}

fn decode_versioned<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    match bytes.split_first() {
        None => Err(RecordError::Empty),
        Some((&VERSION, body)) => Ok(postcard::from_bytes(body)?),
        Some((&v, _)) => Err(RecordError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::device::Pending;
    use vatio_stores::{DeadLetterReason, DeviceKind, Metric, RawReading};

    fn reading(seq: u64) -> Reading {
        Reading {
            device: DeviceId::new("meter-1"),
            kind: DeviceKind::ElectricityMeter,
            seq,
            ts_ms: 1_795_687_200_000 + seq as i64,
            metric: Metric::Power,
            value: 12.5,
        }
    }

    #[test]
    fn a_step_round_trips() -> Result<(), RecordError> {
        let step = StepRecord {
            device: DeviceId::new("meter-1"),
            ops: vec![
                Op::Start { seq: 3 },
                Op::Hold(Pending {
                    reading: reading(5),
                    arrived_ms: 7,
                }),
                Op::GiveUp { from: 3, to: 4 },
                Op::Emit(reading(4)),
                Op::Replayed(reading(2)),
            ],
            letters: vec![NewDeadLetter {
                reading: RawReading {
                    device_id: "meter-1".into(),
                    seq: 9,
                    ts_ms: 1,
                    metric: "power".into(),
                    value: f64::NAN,
                    unit: "kW".into(),
                    kind: 3,
                },
                reason: DeadLetterReason::NotFinite,
                detail: "value is NaN".into(),
                source: "test".into(),
                received_ms: 8,
                key: None,
            }],
        };
        let bytes = step.encode()?;
        let back = StepRecord::decode(&bytes)?;
        assert_eq!(back.ops, step.ops);
        assert_eq!(back.letters.len(), 1);
        assert!(back.letters[0].reading.value.is_nan());
        assert_eq!(back.released().map(|r| r.seq).collect::<Vec<_>>(), [4, 2]);
        Ok(())
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        assert!(matches!(StepRecord::decode(&[]), Err(RecordError::Empty)));
        assert!(matches!(
            StepRecord::decode(&[9, 1, 2]),
            Err(RecordError::Version(9))
        ));
        assert!(matches!(
            StepRecord::decode(&[VERSION, 0xff, 0xff]),
            Err(RecordError::Decode(_))
        ));
    }
}
