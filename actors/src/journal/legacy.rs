//! Records as earlier format versions wrote them, read into today's types,
//! so a node upgraded in place still replays its log.
//!
//! - Version 1 (types 1, 2, 3): no ownership epochs. Own and replica steps
//!   had no term (read as term 0, the epoch before any claim) and a state
//!   inside an op or seed had no epoch; a fence named only the claimer and
//!   is replayed as a fence at term 0, which changes nothing (the
//!   claimer's steps since carry a term above 0 and are judged by it).

use serde::Deserialize;
use vatio_stores::{DeviceId, NewDeadLetter, Reading};

use super::{FenceRecord, LogRecord, RecordError, ReplicaStep, StepRecord};
use crate::logic::device::{DeviceStateV2, Op, Pending};
use crate::logic::epoch::Epoch;

const OWN_STEP_V1: u8 = 1;
const REPLICA_STEP_V1: u8 = 2;
const FENCE_V1: u8 = 3;

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
        v => Err(RecordError::Version(v)),
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
