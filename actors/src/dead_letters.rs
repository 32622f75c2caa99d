//! The dead-letter office: keeps every refused reading with its reason,
//! source and time in the dead-letter store, for inspection and replay.
//! Refusals reach it through the write-ahead log like everything else, so
//! a refused reading is as durable as an accepted one. Each letter is keyed
//! by the reading and the reason, which makes storing it again a no-op:
//! after a restart, and when a client sends a batch again and the same
//! reading is refused again. Store outages are retried by the store's
//! [`SinkGuard`]; the log holds the letters meanwhile.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use vatio_stores::{DeadLetterStore, NewDeadLetter};

use crate::feed::{Feed, LogConsumer};
use crate::pipeline::SubscriberMsg;
use crate::sink_retry::SinkGuard;
use crate::stats::NodeStats;

/// How often the position is committed when records carry no letters.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
pub struct DeadLetterOffice;

#[derive(Clone)]
pub struct DeadLetterArgs {
    pub store: Arc<dyn DeadLetterStore>,
    pub guard: SinkGuard,
    pub consumer: LogConsumer,
    pub stats: Arc<NodeStats>,
}

pub struct DeadLetterState {
    args: DeadLetterArgs,
    _feed: Feed,
}

impl Actor for DeadLetterOffice {
    type Msg = SubscriberMsg;
    type State = DeadLetterState;
    type Arguments = DeadLetterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DeadLetterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(COMMIT_INTERVAL, || SubscriberMsg::Tick);
        let feed = args.consumer.resume(myself)?;
        Ok(DeadLetterState { args, _feed: feed })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SubscriberMsg::Steps { steps, permit } => {
                let mut letters: Vec<NewDeadLetter> = Vec::new();
                for logged in &steps {
                    for letter in &logged.step.letters {
                        letters.push(NewDeadLetter {
                            key: Some(letter_key(letter)),
                            ..letter.clone()
                        });
                    }
                }
                if !letters.is_empty() {
                    let store = st.args.store.clone();
                    // A letter the store refuses as malformed is reported and
                    // counted; it stays in the log until truncation.
                    if let Err(e) = st.args.guard.call(|| store.insert(&letters)).await {
                        NodeStats::add(&st.args.stats.sink_writes_rejected, letters.len() as u64);
                        tracing::error!(error = %e, letters = letters.len(), "dead-letter store refused letters");
                    }
                }
                drop(permit);
                st.args.consumer.folded(&steps);
                // Only commit when letters were stored, or rarely: a
                // position write costs an fsync.
                if !letters.is_empty() {
                    st.args.consumer.commit_folded().await?;
                }
            }
            SubscriberMsg::Drain => {}
            SubscriberMsg::Tick => st.args.consumer.commit_folded().await?,
            SubscriberMsg::Flush(reply) => {
                st.args.consumer.commit_folded().await?;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

/// The key a letter is stored under: the refused reading as sent and the
/// reason. A letter read again from the log after a restart, and the same
/// reading refused again when a client sends its batch once more, are one
/// letter; a reading refused for another reason, or sent with other values
/// under the same seq, is another.
fn letter_key(letter: &NewDeadLetter) -> String {
    use sha2::{Digest, Sha256};
    let r = &letter.reading;
    let mut hash = Sha256::new();
    // Each field length-prefixed, so no two field lists hash alike.
    for field in [
        r.device_id.as_bytes(),
        &r.seq.to_le_bytes(),
        &r.ts_ms.to_le_bytes(),
        r.metric.as_bytes(),
        &r.value.to_bits().to_le_bytes(),
        r.unit.as_bytes(),
        &r.kind.to_le_bytes(),
        letter.reason.as_str().as_bytes(),
    ] {
        hash.update((field.len() as u64).to_le_bytes());
        hash.update(field);
    }
    format!("reading:{}", hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use vatio_stores::{DeadLetterReason, RawReading};

    use super::*;

    fn letter(value: f64, reason: DeadLetterReason, received_ms: i64) -> NewDeadLetter {
        NewDeadLetter {
            reading: RawReading {
                device_id: "meter-1".to_owned(),
                seq: 7,
                ts_ms: 1_000,
                metric: "power".to_owned(),
                value,
                unit: "kW".to_owned(),
                kind: 3,
            },
            reason,
            detail: "detail".to_owned(),
            source: "gateway".to_owned(),
            received_ms,
            key: None,
        }
    }

    #[test]
    fn a_reading_refused_again_keeps_its_key_and_another_gets_its_own() {
        let first = letter_key(&letter(f64::NAN, DeadLetterReason::NotFinite, 1));
        // The client sent the batch again: received later, same reading.
        assert_eq!(
            first,
            letter_key(&letter(f64::NAN, DeadLetterReason::NotFinite, 2))
        );
        assert_ne!(
            first,
            letter_key(&letter(f64::INFINITY, DeadLetterReason::NotFinite, 1))
        );
        assert_ne!(
            first,
            letter_key(&letter(f64::NAN, DeadLetterReason::OutOfRange, 1))
        );
    }
}
