//! Dead letters replayed through their devices' owners: the node holding a
//! letter asks the owner to validate its reading again and take it (the
//! owner files no letter of its own), and records the outcome on the letter.

use std::collections::BTreeMap;

use tonic::Status;
use vatio_actors::{ReplayOutcome, logic::validate::Refusal};
use vatio_proto::v1::{ReplayOutcome as WireOutcome, ReplayRequest, ReplayVerdict};
use vatio_stores::{DeadLetter, DeadLetterId, DeadLetterReason, DeviceId, RawReading};

use super::{Routing, owner, tree_stopped};
use crate::placement::NodeId;
use crate::services::convert::{raw_from_wire, raw_into_wire};

impl Routing {
    /// Readings of letters another node holds, replayed here as their
    /// devices' owner: those this node's view places elsewhere are
    /// `NotOwned`; the others are claimed if need be and validated again.
    pub async fn replay_owned(
        &self,
        readings: Vec<RawReading>,
    ) -> Result<Vec<ReplayOutcome>, Status> {
        let view = self.views.borrow().clone();
        let mut outcomes = vec![ReplayOutcome::NotOwned; readings.len()];
        let (mine, positions): (Vec<RawReading>, Vec<usize>) = readings
            .into_iter()
            .enumerate()
            .filter(|(_, r)| owner(&view, &r.device_id).as_ref() == Some(&self.me))
            .map(|(i, r)| (r, i))
            .unzip();
        if mine.is_empty() {
            return Ok(outcomes);
        }
        let mut devices: Vec<DeviceId> = mine
            .iter()
            .map(|r| DeviceId::new(r.device_id.as_str()))
            .collect();
        devices.sort_unstable();
        devices.dedup();
        let unowned = self.tree.unowned(devices).await.map_err(tree_stopped)?;
        if !unowned.is_empty() {
            self.claim(unowned).await?;
        }
        let replayed = self
            .tree
            .replay_readings(mine)
            .await
            .map_err(tree_stopped)?;
        for (pos, outcome) in positions.into_iter().zip(replayed) {
            outcomes[pos] = outcome;
        }
        Ok(outcomes)
    }

    /// Sends each letter's reading to its device's owner under this node's
    /// view and returns what became of it. A letter whose owner is this
    /// node, unknown, or does not answer comes back `NotDone` (it stays
    /// pending for the next replay).
    pub async fn replay_elsewhere(
        &self,
        letters: Vec<DeadLetter>,
    ) -> Vec<(DeadLetterId, ReplayOutcome)> {
        let view = self.views.borrow().clone();
        let mut by_owner: BTreeMap<NodeId, Vec<DeadLetter>> = BTreeMap::new();
        let mut out = Vec::with_capacity(letters.len());
        for letter in letters {
            match owner(&view, &letter.letter.reading.device_id) {
                Some(o) if o != self.me => by_owner.entry(o).or_default().push(letter),
                _ => out.push((letter.id, ReplayOutcome::NotDone)),
            }
        }
        for (owner, letters) in by_owner {
            let ids: Vec<DeadLetterId> = letters.iter().map(|l| l.id).collect();
            let outcomes = match self.ask_to_replay(&view, &owner, letters).await {
                Ok(outcomes) if outcomes.len() == ids.len() => outcomes,
                Ok(outcomes) => {
                    tracing::warn!(%owner, sent = ids.len(), answered = outcomes.len(), "dead-letter replay: the owner's answer does not match the letters sent; they stay pending");
                    vec![ReplayOutcome::NotDone; ids.len()]
                }
                Err(status) => {
                    tracing::warn!(%owner, error = %status, "dead-letter replay through the owner failed; the letters stay pending");
                    vec![ReplayOutcome::NotDone; ids.len()]
                }
            };
            out.extend(ids.into_iter().zip(outcomes));
        }
        out
    }

    async fn ask_to_replay(
        &self,
        view: &crate::placement::View,
        owner: &NodeId,
        letters: Vec<DeadLetter>,
    ) -> Result<Vec<ReplayOutcome>, Status> {
        let mut client = self.owner_client(view, owner)?;
        let request = ReplayRequest {
            from_node: self.me.to_string(),
            readings: letters
                .into_iter()
                .map(|l| raw_into_wire(l.letter.reading))
                .collect(),
        };
        let reply = tokio::time::timeout(self.timeout, client.replay(request))
            .await
            .map_err(|_| Status::unavailable(format!("owner {owner} did not answer in time")))??
            .into_inner();
        Ok(reply.outcomes.into_iter().map(outcome_from_wire).collect())
    }
}

/// A replay outcome as the peer call carries it.
pub fn outcome_to_wire(outcome: ReplayOutcome) -> WireOutcome {
    let (verdict, reason, detail) = match outcome {
        ReplayOutcome::Accepted => (ReplayVerdict::Accepted, String::new(), String::new()),
        ReplayOutcome::Refused(r) => (
            ReplayVerdict::Refused,
            r.reason.as_str().to_owned(),
            r.detail,
        ),
        ReplayOutcome::NotOwned => (ReplayVerdict::NotOwned, String::new(), String::new()),
        ReplayOutcome::NotDone => (ReplayVerdict::NotDone, String::new(), String::new()),
    };
    WireOutcome {
        verdict: verdict as i32,
        reason,
        detail,
    }
}

/// The outcome a peer answered; anything unknown leaves the letter pending.
fn outcome_from_wire(o: WireOutcome) -> ReplayOutcome {
    match ReplayVerdict::try_from(o.verdict) {
        Ok(ReplayVerdict::Accepted) => ReplayOutcome::Accepted,
        Ok(ReplayVerdict::Refused) => match DeadLetterReason::parse(&o.reason) {
            Some(reason) => ReplayOutcome::Refused(Refusal::new(reason, o.detail)),
            None => ReplayOutcome::NotDone,
        },
        Ok(ReplayVerdict::NotOwned) => ReplayOutcome::NotOwned,
        _ => ReplayOutcome::NotDone,
    }
}

/// The readings of a replay request.
pub fn readings_from_wire(request: ReplayRequest) -> Vec<RawReading> {
    request.readings.into_iter().map(raw_from_wire).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_cross_the_wire_unchanged() {
        let outcomes = [
            ReplayOutcome::Accepted,
            ReplayOutcome::Refused(Refusal::new(DeadLetterReason::OutOfRange, "humidity 130 %")),
            ReplayOutcome::NotOwned,
            ReplayOutcome::NotDone,
        ];
        for o in outcomes {
            assert_eq!(outcome_from_wire(outcome_to_wire(o.clone())), o);
        }
    }

    #[test]
    fn an_unknown_verdict_or_reason_leaves_the_letter_pending() {
        let unknown = WireOutcome {
            verdict: 99,
            reason: String::new(),
            detail: String::new(),
        };
        assert_eq!(outcome_from_wire(unknown), ReplayOutcome::NotDone);
        let odd_reason = WireOutcome {
            verdict: ReplayVerdict::Refused as i32,
            reason: "no_such_reason".to_owned(),
            detail: "x".to_owned(),
        };
        assert_eq!(outcome_from_wire(odd_reason), ReplayOutcome::NotDone);
    }
}
