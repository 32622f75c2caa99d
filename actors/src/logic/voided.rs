//! Steps this node dropped as orphaned that a device's line turned out to
//! hold.
//!
//! A node drops its own unconfirmed step when a replica answers that the
//! device's line went on without it. One case of that answer is a guess: a
//! replica fenced by a claim whose claimer has since left cannot tell a
//! claim that completed (its line went on without the step) from one that
//! was abandoned (the old owner's line, step included, is still the line).
//! Another replica may have taken the step before that answer came. When
//! this node claims the device again and adopts a copy that holds the step,
//! the line counts the step's readings as released, yet no sink has them:
//! the only node that delivers a step is its owner, and it dropped the
//! step. So the adoption delivers them (simulation seed 307).

use vatio_stores::Reading;

use super::device::DeviceState;

/// One of this node's steps for a device that it dropped as orphaned.
#[derive(Clone, Debug, PartialEq)]
pub struct VoidedStep {
    /// End of the step in this node's log.
    pub end: u64,
    /// The readings the step released to the sinks (which skipped them).
    pub released: Vec<Reading>,
}

/// The readings of `voided` (steps of node `me`) that the adopted copy
/// `line` holds and has passed: no sink has them, and the line will not
/// release them again, so the adoption must deliver them.
///
/// A copy holds a step of `me` when it noted one of `me`'s steps at or
/// after its end (a copy that missed the step but took a later one has
/// passed its seqs just the same). Readings the copy still waits for in
/// its reorder buffer are not returned: the line releases those itself.
pub fn held_by_line(line: &DeviceState, me: &str, voided: &[VoidedStep]) -> Vec<Reading> {
    let held = line.held_from(me);
    voided
        .iter()
        .filter(|step| step.end <= held)
        .flat_map(|step| step.released.iter())
        .filter(|r| line.has_passed(r.seq))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::device::{Op, Pending};
    use vatio_stores::{DeviceId, DeviceKind, Metric};

    fn reading(seq: u64) -> Reading {
        Reading {
            device: DeviceId::new("meter-1-07"),
            kind: DeviceKind::ElectricityMeter,
            seq,
            ts_ms: 1_795_687_200_000 + seq as i64,
            metric: Metric::Power,
            value: 3.0,
        }
    }

    fn voided(end: u64, seqs: &[u64]) -> VoidedStep {
        VoidedStep {
            end,
            released: seqs.iter().map(|&s| reading(s)).collect(),
        }
    }

    /// A copy that released seqs 1..=n, with b2's steps noted up to `b2_end`.
    fn copy(n: u64, b2_end: u64) -> DeviceState {
        let mut s = DeviceState::new();
        s.apply(&Op::Start { seq: 1 });
        for seq in 1..=n {
            s.apply(&Op::Emit(reading(seq)));
        }
        if b2_end > 0 {
            s.note_step("b2", b2_end);
        }
        s
    }

    #[test]
    fn a_copy_that_took_the_dropped_step_gets_its_readings_delivered() {
        // b2 dropped its step at 79130 (seqs 145, 146); a1 had taken it.
        let line = copy(146, 79130);
        let steps = [voided(79130, &[145, 146])];
        assert_eq!(
            held_by_line(&line, "b2", &steps),
            [reading(145), reading(146)]
        );
    }

    #[test]
    fn a_copy_without_the_dropped_step_gets_nothing() {
        // The line went on without the step: its seqs are for the line to
        // take from the client's retry.
        let line = copy(144, 78144);
        assert!(held_by_line(&line, "b2", &[voided(79130, &[145, 146])]).is_empty());
        // Nor does a copy that holds another node's steps only.
        let line = copy(146, 0);
        assert!(held_by_line(&line, "b2", &[voided(79130, &[145, 146])]).is_empty());
    }

    #[test]
    fn only_the_dropped_steps_the_copy_holds_and_has_passed_count() {
        let mut line = copy(146, 79130);
        // Seq 148 waits in the copy's buffer: the line releases it itself.
        line.apply(&Op::Hold(Pending {
            reading: reading(148),
            arrived_ms: 0,
        }));
        let steps = [
            voided(79130, &[145, 146]),
            voided(80000, &[147, 148]),
            voided(1000, &[148]),
        ];
        assert_eq!(
            held_by_line(&line, "b2", &steps),
            [reading(145), reading(146)]
        );
    }
}
