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
//! And [`FenceRecord`]s: this node handed a device over to a claimer.
//!
//! The first byte of a record says what follows and in which format
//! version; records of earlier versions are read through [`legacy`].

mod legacy;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use vatio_stores::{DeviceId, NewDeadLetter, Reading};

use crate::logic::device::{DeviceState, DeviceStateV1, DeviceStateV2, DeviceStateV3, Op};
use crate::logic::epoch::Epoch;

/// First byte of an own step (format version 3: states carry their line).
pub const OWN_STEP: u8 = 7;
/// First byte of a replica step (format version 3).
pub const REPLICA_STEP: u8 = 8;
/// First byte of a fence record (format version 2: with the claim's epoch;
/// it holds no state, so version 3 left it as it was).
pub const FENCE: u8 = 6;

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

/// This node handed a device over to the claimer of `epoch` (answering its
/// claim): from now on the device's line runs through it. Folded into the
/// device's state (see `DeviceState::fence`) so the fence survives a
/// restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FenceRecord {
    pub device: DeviceId,
    pub epoch: Epoch,
    /// Where the claimer's log ended at its claim (None: not told).
    pub claimer_head: Option<u64>,
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
    // Boxed: a replica step may carry a whole device state as its seed.
    Replica(Box<ReplicaStep>),
    Fence(FenceRecord),
}

impl LogRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        match bytes.split_first() {
            None => Err(RecordError::Empty),
            Some((&OWN_STEP, body)) => Ok(Self::Own(postcard::from_bytes(body)?)),
            Some((&REPLICA_STEP, body)) => Ok(Self::Replica(Box::new(postcard::from_bytes(body)?))),
            Some((&FENCE, body)) => Ok(Self::Fence(postcard::from_bytes(body)?)),
            Some((&v, body)) => legacy::decode(v, body),
        }
    }
}

impl ReplicaStep {
    pub fn encode(&self) -> Result<Bytes, RecordError> {
        Ok(Bytes::from(postcard::to_extend(self, vec![REPLICA_STEP])?))
    }

    /// The epoch the owner logged the step at.
    pub fn epoch(&self) -> Epoch {
        Epoch::of(self.step.term, &self.from)
    }

    /// The device's state after folding this step onto `state`. Returns
    /// how many readings `state` held that the owner's line had already
    /// passed: more than 0 only when `state` missed some of the line's
    /// steps (see [`DeviceState::apply`]).
    pub fn fold_into(&self, state: &mut DeviceState) -> usize {
        // Already folded (the owner sent it again): folding twice would undo
        // later steps where an op replaces the state.
        if state.held_from(&self.from) >= self.end {
            return 0;
        }
        let mut passed = 0;
        if let Some(seed) = &self.seed {
            passed += state.apply(&Op::Adopt(Box::new(seed.clone())));
        }
        for op in &self.step.ops {
            passed += state.apply(op);
        }
        state.took_step(&self.from, self.end, self.step.term);
        passed
    }
}

/// One device actor step, as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub device: DeviceId,
    /// The term of the owner's epoch when it took the step (0: before any
    /// claim); the epoch is this term and the node that logged the step.
    pub term: u64,
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
        "log record type/version {0}; this node reads 1 to 8 (own steps, replica steps, fences)"
    )]
    Version(u8),
    #[error("a replica step or fence where an own step was expected")]
    NotOwnStep,
    #[error("undecodable log record: {0}")]
    Decode(#[from] postcard::Error),
}

impl StepRecord {
    /// A step that changes nothing (stands in for a record that could not
    /// be decoded, so positions still advance past it).
    pub fn empty() -> Self {
        Self {
            device: DeviceId::new(""),
            term: 0,
            ops: Vec::new(),
            letters: Vec::new(),
        }
    }

    /// Readings this step sends to the sinks, in seq order for the device.
    pub fn released(&self) -> impl Iterator<Item = &Reading> {
        self.ops.iter().filter_map(Op::released)
    }

    /// Readings this step sequenced and released (not replayed dead
    /// letters), in seq order for the device.
    pub fn emitted(&self) -> impl Iterator<Item = &Reading> {
        self.ops.iter().filter_map(|op| match op {
            Op::Emit(r) => Some(r),
            _ => None,
        })
    }

    /// How many readings this step sends to the sinks.
    pub fn released_len(&self) -> usize {
        self.ops.iter().filter(|op| op.released().is_some()).count()
    }

    /// True when the step changed nothing worth logging.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.letters.is_empty()
    }

    /// True when the step only takes a claimed device over: it carries the
    /// state and epoch of the claim, and no dead letter and no reading but
    /// those of this node's dropped steps that the adopted line holds.
    pub fn only_adopts(&self) -> bool {
        self.letters.is_empty()
            && self
                .ops
                .iter()
                .any(|op| matches!(op, Op::Adopt(_) | Op::Reset(_)))
            && self
                .ops
                .iter()
                .all(|op| matches!(op, Op::Adopt(_) | Op::Reset(_) | Op::Replayed(_)))
    }

    pub fn encode(&self) -> Result<Bytes, RecordError> {
        Ok(Bytes::from(postcard::to_extend(self, vec![OWN_STEP])?))
    }

    /// An own step, as [`Self::encode`] or an earlier version wrote it.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        match LogRecord::decode(bytes)? {
            LogRecord::Own(step) => Ok(step),
            _ => Err(RecordError::NotOwnStep),
        }
    }
}

/// Format version of an encoded device state (the checkpoint, seeds and
/// claim answers); version 1 had no owners, version 2 no epoch, version 3
/// no line.
const STATE_VERSION: u8 = 4;

/// A device's sequencing state as the checkpoint stores it.
pub fn encode_state(state: &DeviceState) -> Result<Vec<u8>, RecordError> {
    Ok(postcard::to_extend(state, vec![STATE_VERSION])?)
}

pub fn decode_state(bytes: &[u8]) -> Result<DeviceState, RecordError> {
    match bytes.split_first() {
        None => Err(RecordError::Empty),
        Some((&STATE_VERSION, body)) => Ok(postcard::from_bytes(body)?),
        Some((3, body)) => Ok(postcard::from_bytes::<DeviceStateV3>(body)?.into()),
        Some((2, body)) => Ok(postcard::from_bytes::<DeviceStateV2>(body)?.into()),
        Some((1, body)) => Ok(postcard::from_bytes::<DeviceStateV1>(body)?.into()),
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
            term: 3,
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
    fn only_a_step_without_new_readings_or_letters_merely_adopts() {
        let step = |ops| StepRecord {
            device: DeviceId::new("meter-1"),
            term: 2,
            ops,
            letters: Vec::new(),
        };
        let adopt = || Op::Adopt(Box::new(DeviceState::new()));
        assert!(step(vec![adopt()]).only_adopts());
        assert!(step(vec![Op::Reset(Box::new(DeviceState::new()))]).only_adopts());
        assert!(!step(vec![adopt(), Op::Emit(reading(1))]).only_adopts());
        // Readings of dropped steps the adopted line holds come with it.
        assert!(step(vec![adopt(), Op::Replayed(reading(1))]).only_adopts());
        assert!(!step(vec![Op::Replayed(reading(1))]).only_adopts());
        assert!(!step(Vec::new()).only_adopts());
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        assert!(matches!(StepRecord::decode(&[]), Err(RecordError::Empty)));
        assert!(matches!(
            StepRecord::decode(&[9, 1, 2]),
            Err(RecordError::Version(9))
        ));
        assert!(matches!(
            StepRecord::decode(&[OWN_STEP, 0xff, 0xff]),
            Err(RecordError::Decode(_))
        ));
    }
}
