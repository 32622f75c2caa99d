//! The dead-letter office: keeps every refused reading with its reason,
//! source and time in the dead-letter store, for inspection and replay.
//! Refusals reach it through the write-ahead log like everything else, so
//! a refused reading is as durable as an accepted one. Each letter is keyed
//! by its place in the log, which makes storing it again after a restart a
//! no-op. Store outages are retried by the store's [`SinkGuard`]; the log
//! holds the letters meanwhile.

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
                    for (i, letter) in logged.step.letters.iter().enumerate() {
                        letters.push(NewDeadLetter {
                            key: Some(format!("log:{}:{i}", logged.end)),
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
