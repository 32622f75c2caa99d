//! Records as earlier format versions wrote them, read into today's types,
//! so a node upgraded in place still replays its log.
//!
//! - Version 1 (types 1, 2, 3): no ownership epochs. Own and replica steps
//!   had no term (read as term 0, the epoch before any claim) and a state
//!   inside an op or seed had no epoch; a fence named only the claimer and
//!   is replayed as a fence at term 0, which changes nothing (the
//!   claimer's steps since carry a term above 0 and are judged by it).
//! - Version 2 (types 4, 5; fences, type 6, are still written): a state
//!   inside an op or seed had no line (read as [`Epoch::ZERO`]: such a
//!   copy ranks by its progress, as all copies did then).

use serde::Deserialize;
use vatio_stores::{DeviceId, NewDeadLetter, Reading};

use super::{FenceRecord, LogRecord, RecordError, ReplicaStep, StepRecord};
use crate::logic::device::{DeviceStateV2, DeviceStateV3, Op, Pending};
use crate::logic::epoch::Epoch;

const OWN_STEP_V1: u8 = 1;
const REPLICA_STEP_V1: u8 = 2;
const FENCE_V1: u8 = 3;
const OWN_STEP_V2: u8 = 4;
const REPLICA_STEP_V2: u8 = 5;

/// Reads a record of an earlier version (`version` is its first byte).
pub(super) fn decode(version: u8, body: &[u8]) -> Result<LogRecord, RecordError> {
    match version {
        OWN_STEP_V1 => Ok(LogRecord::Own(
            postcard::from_bytes::<StepRecordV1>(body)?.into(),
        )),
        REPLICA_STEP_V1 => Ok(LogRecord::Replica(Box::new(
            postcard::from_bytes::<ReplicaStepV1>(body)?.into(),
        ))),
        FENCE_V1 => {
            let fence: FenceRecordV1 = postcard::from_bytes(body)?;
            // At term 0 the fence changes nothing (see the module docs).
            Ok(LogRecord::Fence(FenceRecord {
                device: fence.device,
                epoch: Epoch::ZERO,
                claimer_head: None,
            }))
        }
        OWN_STEP_V2 => Ok(LogRecord::Own(
            postcard::from_bytes::<StepRecordV2>(body)?.into(),
        )),
        REPLICA_STEP_V2 => Ok(LogRecord::Replica(Box::new(
            postcard::from_bytes::<ReplicaStepV2>(body)?.into(),
        ))),
        v => Err(RecordError::Version(v)),
    }
}

/// [`Op`] in version 2: states without a line.
#[derive(Deserialize)]
enum OpV2 {
    Start { seq: u64 },
    Hold(Pending),
    GiveUp { from: u64, to: u64 },
    Emit(Reading),
    Replayed(Reading),
    Adopt(Box<DeviceStateV3>),
    Reset(Box<DeviceStateV3>),
}

impl From<OpV2> for Op {
    fn from(op: OpV2) -> Self {
        match op {
            OpV2::Start { seq } => Op::Start { seq },
            OpV2::Hold(p) => Op::Hold(p),
            OpV2::GiveUp { from, to } => Op::GiveUp { from, to },
            OpV2::Emit(r) => Op::Emit(r),
            OpV2::Replayed(r) => Op::Replayed(r),
            OpV2::Adopt(s) => Op::Adopt(Box::new((*s).into())),
            OpV2::Reset(s) => Op::Reset(Box::new((*s).into())),
        }
    }
}

#[derive(Deserialize)]
struct StepRecordV2 {
    device: DeviceId,
    term: u64,
    ops: Vec<OpV2>,
    letters: Vec<NewDeadLetter>,
}

impl From<StepRecordV2> for StepRecord {
    fn from(v2: StepRecordV2) -> Self {
        Self {
            device: v2.device,
            term: v2.term,
            ops: v2.ops.into_iter().map(Op::from).collect(),
            letters: v2.letters,
        }
    }
}

#[derive(Deserialize)]
struct ReplicaStepV2 {
    from: String,
    end: u64,
    seed: Option<DeviceStateV3>,
    step: StepRecordV2,
}

impl From<ReplicaStepV2> for ReplicaStep {
    fn from(v2: ReplicaStepV2) -> Self {
        Self {
            from: v2.from,
            end: v2.end,
            seed: v2.seed.map(Into::into),
            step: v2.step.into(),
        }
    }
}

/// [`Op`] in version 1: states without an epoch.
#[derive(Deserialize)]
enum OpV1 {
    Start { seq: u64 },
    Hold(Pending),
    GiveUp { from: u64, to: u64 },
    Emit(Reading),
    Replayed(Reading),
    Adopt(Box<DeviceStateV2>),
    Reset(Box<DeviceStateV2>),
}

impl From<OpV1> for Op {
    fn from(op: OpV1) -> Self {
        match op {
            OpV1::Start { seq } => Op::Start { seq },
            OpV1::Hold(p) => Op::Hold(p),
            OpV1::GiveUp { from, to } => Op::GiveUp { from, to },
            OpV1::Emit(r) => Op::Emit(r),
            OpV1::Replayed(r) => Op::Replayed(r),
            OpV1::Adopt(s) => Op::Adopt(Box::new((*s).into())),
            OpV1::Reset(s) => Op::Reset(Box::new((*s).into())),
        }
    }
}

#[derive(Deserialize)]
struct StepRecordV1 {
    device: DeviceId,
    ops: Vec<OpV1>,
    letters: Vec<NewDeadLetter>,
}

impl From<StepRecordV1> for StepRecord {
    fn from(v1: StepRecordV1) -> Self {
        Self {
            device: v1.device,
            term: 0,
            ops: v1.ops.into_iter().map(Op::from).collect(),
            letters: v1.letters,
        }
    }
}

#[derive(Deserialize)]
struct ReplicaStepV1 {
    from: String,
    end: u64,
    seed: Option<DeviceStateV2>,
    step: StepRecordV1,
}

impl From<ReplicaStepV1> for ReplicaStep {
    fn from(v1: ReplicaStepV1) -> Self {
        Self {
            from: v1.from,
            end: v1.end,
            seed: v1.seed.map(Into::into),
            step: v1.step.into(),
        }
    }
}

#[derive(Deserialize)]
struct FenceRecordV1 {
    device: DeviceId,
    /// The claimer: read past (fields are positional), not kept.
    _by: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use vatio_stores::{DeviceKind, Metric};

    /// Version 1's own step, written the way version 1 wrote it.
    #[derive(Serialize)]
    enum WrittenOpV1 {
        #[allow(dead_code)]
        Start {
            seq: u64,
        },
        #[allow(dead_code)]
        Hold(Pending),
        #[allow(dead_code)]
        GiveUp {
            from: u64,
            to: u64,
        },
        Emit(Reading),
    }

    #[derive(Serialize)]
    struct WrittenStepV1 {
        device: DeviceId,
        ops: Vec<WrittenOpV1>,
        letters: Vec<NewDeadLetter>,
    }

    /// A device state as version 2 records and version 3 states held it.
    #[derive(Serialize)]
    struct WrittenStateV3 {
        kind: Option<DeviceKind>,
        next_seq: u64,
        last: Option<Reading>,
        last_energy: Option<(u64, f64)>,
        skipped: Vec<(u64, u64)>,
        pending: Vec<(u64, Pending)>,
        owners: Vec<(String, u64)>,
        epoch: Epoch,
    }

    /// Version 2's ops, up to the adoption.
    #[derive(Serialize)]
    enum WrittenOpV2 {
        #[allow(dead_code)]
        Start {
            seq: u64,
        },
        #[allow(dead_code)]
        Hold(Pending),
        #[allow(dead_code)]
        GiveUp {
            from: u64,
            to: u64,
        },
        #[allow(dead_code)]
        Emit(Reading),
        #[allow(dead_code)]
        Replayed(Reading),
        Adopt(Box<WrittenStateV3>),
    }

    #[derive(Serialize)]
    struct WrittenStepV2 {
        device: DeviceId,
        term: u64,
        ops: Vec<WrittenOpV2>,
        letters: Vec<NewDeadLetter>,
    }

    fn written_state_v3() -> WrittenStateV3 {
        WrittenStateV3 {
            kind: Some(DeviceKind::ElectricityMeter),
            next_seq: 9,
            last: None,
            last_energy: None,
            skipped: vec![(1, 3)],
            pending: Vec::new(),
            owners: vec![("b2".to_owned(), 4000)],
            epoch: Epoch::of(3, "b2"),
        }
    }

    #[test]
    fn a_version_2_adoption_reads_with_its_state_on_no_known_line() -> Result<(), RecordError> {
        let written = WrittenStepV2 {
            device: DeviceId::new("meter-1"),
            term: 3,
            ops: vec![WrittenOpV2::Adopt(Box::new(written_state_v3()))],
            letters: Vec::new(),
        };
        let bytes = postcard::to_extend(&written, vec![OWN_STEP_V2])?;
        let LogRecord::Own(step) = LogRecord::decode(&bytes)? else {
            panic!("a version 2 own step read as another record");
        };
        assert_eq!(step.term, 3);
        let [Op::Adopt(state)] = step.ops.as_slice() else {
            panic!("the adoption did not read as one: {:?}", step.ops);
        };
        assert_eq!(state.next_seq(), 9);
        assert_eq!(state.held_from("b2"), 4000);
        assert_eq!(state.epoch(), &Epoch::of(3, "b2"));
        assert_eq!(state.line(), &Epoch::ZERO);

        // A version 3 state (a checkpoint, a claim's answer) reads the same.
        let bytes = postcard::to_extend(&written_state_v3(), vec![3])?;
        let state = crate::journal::decode_state(&bytes)?;
        assert_eq!((state.next_seq(), state.line()), (9, &Epoch::ZERO));
        Ok(())
    }

    #[test]
    fn a_version_1_own_step_reads_at_term_0() -> Result<(), RecordError> {
        let reading = Reading {
            device: DeviceId::new("meter-1"),
            kind: DeviceKind::ElectricityMeter,
            seq: 4,
            ts_ms: 1_795_687_200_000,
            metric: Metric::Power,
            value: 12.5,
        };
        let written = WrittenStepV1 {
            device: DeviceId::new("meter-1"),
            ops: vec![WrittenOpV1::Emit(reading.clone())],
            letters: Vec::new(),
        };
        let bytes = postcard::to_extend(&written, vec![OWN_STEP_V1])?;
        let LogRecord::Own(step) = LogRecord::decode(&bytes)? else {
            panic!("a version 1 own step read as another record");
        };
        assert_eq!(step.term, 0);
        assert_eq!(step.ops, [Op::Emit(reading)]);
        Ok(())
    }
}
