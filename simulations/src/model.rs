//! What the node should end up with after a workload, worked out by the
//! harness alone from the rules as the design states them: a corrupted
//! reading is refused with its reason every time it arrives; a valid one is
//! accepted the first time its `(device, seq)` arrives and is a duplicate
//! after that. The workload is built so that no other rule (late stragglers,
//! poison, stale resends) can apply, which is what makes this model exact.

use std::collections::BTreeMap;

use vatio_actors::AckCounts;
use vatio_stores::{DeadLetterReason, Metric, Reading, minute_of};

use crate::workload::{Expect, Workload};

/// `(device, seq)`: a reading's identity.
pub type ReadingKey = (String, u64);

/// `(device, metric, minute_ms)`: a time-series point's key.
pub type PointKey = (String, Metric, i64);

/// The expected end state of a run.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Per planned batch, in schedule order.
    pub acks: Vec<AckCounts>,
    /// Every reading that must be in the sinks, once, in canonical units.
    pub accepted: BTreeMap<ReadingKey, Reading>,
    /// Pending dead letters by `(device, seq, reason)`: how many of each
    /// (one per distinct refused reading: the same reading refused again is
    /// the same letter).
    pub dead_letters: BTreeMap<(String, u64, DeadLetterReason), u32>,
    /// Accepted readings per time-series point.
    pub point_counts: BTreeMap<PointKey, u64>,
    pub readings_sent: u64,
}

/// Plays the workload through the model. Devices never share a client, and
/// each client sends in schedule order, so schedule order is every device's
/// arrival order.
pub fn expect(w: &Workload) -> Expected {
    let mut e = Expected::default();
    let mut refused = std::collections::BTreeSet::new();
    for batch in &w.batches {
        let mut ack = AckCounts::default();
        for s in &batch.readings {
            e.readings_sent += 1;
            match &s.expect {
                Expect::Refused(reason) => {
                    ack.dead_lettered += 1;
                    let r = &s.raw;
                    let reading = (
                        (r.device_id.clone(), r.seq, r.ts_ms, r.metric.clone()),
                        (r.value.to_bits(), r.unit.clone(), r.kind, *reason),
                    );
                    if refused.insert(reading) {
                        *e.dead_letters
                            .entry((r.device_id.clone(), r.seq, *reason))
                            .or_default() += 1;
                    }
                }
                Expect::Valid(r) => {
                    let key = (s.raw.device_id.clone(), s.raw.seq);
                    if e.accepted.contains_key(&key) {
                        ack.duplicates += 1;
                    } else {
                        ack.accepted += 1;
                        *e.point_counts
                            .entry((key.0.clone(), r.metric, minute_of(r.ts_ms)))
                            .or_default() += 1;
                        e.accepted.insert(key, r.clone());
                    }
                }
            }
        }
        e.acks.push(ack);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::SimOptions;
    use crate::workload::{Bounds, generate};

    #[test]
    fn every_sent_reading_has_exactly_one_expected_outcome() {
        let opts = SimOptions {
            devices: 6,
            batches: 30,
            duplicate_share: 0.2,
            resend_share: 0.2,
            ..SimOptions::default()
        };
        let w = generate(5, &opts, &Bounds::default());
        let e = expect(&w);
        let total: u64 = e
            .acks
            .iter()
            .map(|a| u64::from(a.accepted + a.duplicates + a.dead_lettered))
            .sum();
        assert_eq!(total, e.readings_sent);
        assert_eq!(e.readings_sent, w.readings_sent() as u64);
        let accepted: u64 = e.acks.iter().map(|a| u64::from(a.accepted)).sum();
        assert_eq!(accepted, e.accepted.len() as u64);
        assert!(e.acks.iter().any(|a| a.duplicates > 0), "re-sends planned");
    }
}
