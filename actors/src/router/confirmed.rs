//! A device's state as of this node's last own step that replicas have
//! confirmed: the part of its own copy that is surely on the device's line.
//!
//! When a replica has the node drop some of its steps (`orphaned`), the
//! node's copy includes them and is off the line as a whole; a claim then
//! takes the peers' copy. But the peers that hold the confirmed part may be
//! out of reach (the replica that confirmed it lost power, say), and the
//! claim would start the device's line afresh: dedupe state lost, and
//! readings waiting for seqs the line had passed never released
//! (simulation seed 7198: 30 acknowledged readings missing from the
//! archive). The confirmed copy stands in for them.
//!
//! Only the states of steps in flight are kept, besides the confirmed one:
//! a device with nothing unsettled at start-up keeps no copy until its
//! first own step, whose prior state is then the confirmed copy.

use std::collections::VecDeque;

use crate::logic::device::DeviceState;
use crate::void::VoidSet;

/// The states after this node's own steps of one device, until replicas
/// confirm them.
#[derive(Debug, Default)]
pub struct ConfirmedCopy {
    /// (log end, state after the step), oldest first.
    unconfirmed: VecDeque<(u64, DeviceState)>,
    /// The state after the last own step confirmed (None: not known).
    confirmed: Option<DeviceState>,
    /// The device's state as rebuilt at start-up was settled: the state
    /// before this node's first own step since is the confirmed copy.
    settled_at_start: bool,
}

impl ConfirmedCopy {
    /// The copy settled as of start-up (rebuilt from the log: the state
    /// before the device's first own step the replicas had not settled).
    pub fn known(state: DeviceState) -> Self {
        Self {
            confirmed: Some(state),
            ..Self::default()
        }
    }

    /// The state rebuilt at start-up is settled (no own step of the device
    /// was waiting for its replicas): it is taken as the confirmed copy when
    /// the first own step comes, rather than kept for every device.
    pub fn settled_at_start() -> Self {
        Self {
            settled_at_start: true,
            ..Self::default()
        }
    }

    /// The device actor logged an own step ending at `end` (an adoption
    /// included); `state` is the state after it, `before` the one before.
    pub fn logged(&mut self, end: u64, before: &DeviceState, state: &DeviceState) {
        let newer = self.unconfirmed.back().is_none_or(|(last, _)| end > *last);
        if end > 0 && newer {
            if std::mem::take(&mut self.settled_at_start) {
                self.confirmed = Some(before.clone());
            }
            self.unconfirmed.push_back((end, state.clone()));
        }
    }

    /// Replicas have settled this node's steps before `deliverable`: the
    /// states after those that were confirmed, not dropped (`void`), are
    /// on the line. A dropped step ends it: the states after it include
    /// the step, so they are off the line.
    pub fn settle(&mut self, deliverable: u64, void: Option<&VoidSet>) {
        while let Some((end, _)) = self.unconfirmed.front() {
            if *end > deliverable {
                break;
            }
            if void.is_some_and(|v| v.contains(*end)) {
                self.unconfirmed.clear();
                break;
            }
            if let Some((_, state)) = self.unconfirmed.pop_front() {
                self.confirmed = Some(state);
            }
        }
    }

    /// The confirmed copy, for a claim that adopts (`current`: the state
    /// the router holds now); what comes after is the adoption's.
    pub fn take(
        &mut self,
        deliverable: u64,
        void: Option<&VoidSet>,
        current: &DeviceState,
    ) -> Option<DeviceState> {
        if std::mem::take(&mut self.settled_at_start) {
            return Some(current.clone());
        }
        self.settle(deliverable, void);
        self.unconfirmed.clear();
        self.confirmed.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::device::Op;
    use crate::void::VoidError;
    use vatio_stores::{DeviceId, DeviceKind, Metric, Reading};

    fn released(n: u64) -> DeviceState {
        let mut s = DeviceState::new();
        s.apply(&Op::Start { seq: 1 });
        for seq in 1..=n {
            s.apply(&Op::Emit(Reading {
                device: DeviceId::new("meter-0-06"),
                kind: DeviceKind::ElectricityMeter,
                seq,
                ts_ms: 1_795_687_200_000,
                metric: Metric::Power,
                value: 1.0,
            }));
        }
        s
    }

    #[test]
    fn the_copy_is_the_state_after_the_last_confirmed_step_before_a_dropped_one()
    -> Result<(), VoidError> {
        let dir = tempfile::tempdir().map_err(|source| VoidError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let void = VoidSet::open(&dir.path().join("void"))?;
        let mut copy = ConfirmedCopy::default();
        for (end, n) in [(100, 1), (200, 2), (300, 3), (400, 4)] {
            copy.logged(end, &released(n - 1), &released(n));
        }
        copy.logged(400, &released(4), &released(9));
        copy.settle(150, Some(&void));
        // Step 300 was dropped; the shipper settled past it and 400.
        void.add(&[300])?;
        let taken = copy.take(400, Some(&void), &released(0));
        assert_eq!(taken.map(|s| s.next_seq()), Some(3), "the state after 200");
        assert_eq!(
            copy.take(400, Some(&void), &released(0)),
            None,
            "taken once"
        );
        Ok(())
    }

    #[test]
    fn nothing_is_known_before_a_step_is_confirmed() {
        let mut copy = ConfirmedCopy::default();
        copy.logged(100, &released(0), &released(1));
        assert_eq!(copy.take(99, None, &released(0)), None);
    }

    #[test]
    fn a_state_settled_at_start_up_is_the_copy_until_a_later_step_is_confirmed() {
        let mut copy = ConfirmedCopy::settled_at_start();
        let taken = copy.take(0, None, &released(3)).map(|s| s.next_seq());
        assert_eq!(taken, Some(4), "no own step since: the state as it is");
        let mut copy = ConfirmedCopy::settled_at_start();
        copy.logged(500, &released(7), &released(8));
        let taken = copy.take(499, None, &released(0)).map(|s| s.next_seq());
        assert_eq!(taken, Some(8), "the rebuilt state, seqs 1 to 7");
        let mut copy = ConfirmedCopy::settled_at_start();
        copy.logged(500, &released(7), &released(8));
        assert_eq!(
            copy.take(500, None, &released(0)).map(|s| s.next_seq()),
            Some(9)
        );
    }
}
