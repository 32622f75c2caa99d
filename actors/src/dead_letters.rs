//! The dead-letter office: keeps every refused reading with its reason,
//! source and time in the dead-letter store, for inspection and replay.
//! Store outages are retried with backoff; the bounded mailbox makes device
//! actors wait meanwhile rather than lose a letter.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use vatio_stores::{DeadLetterStore, NewDeadLetter};

use crate::mailbox::Permit;
use crate::stats::NodeStats;

pub enum DeadLetterMsg {
    Record {
        letters: Vec<NewDeadLetter>,
        permit: Permit,
    },
    /// Replies once everything received before it is stored.
    Flush(RpcReplyPort<()>),
}

#[derive(Clone, Copy)]
pub struct DeadLetterOffice;

#[derive(Clone)]
pub struct DeadLetterArgs {
    pub store: Arc<dyn DeadLetterStore>,
    pub stats: Arc<NodeStats>,
}

/// Longest wait between two attempts to store a letter.
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Actor for DeadLetterOffice {
    type Msg = DeadLetterMsg;
    type State = DeadLetterArgs;
    type Arguments = DeadLetterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DeadLetterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeadLetterMsg::Record { letters, permit } => {
                let mut wait = Duration::from_millis(50);
                loop {
                    match st.store.insert(&letters).await {
                        Ok(_) => break,
                        Err(e) if e.is_transient() => {
                            NodeStats::add(&st.stats.sink_write_failures, 1);
                            tracing::warn!(error = %e, "dead-letter store unavailable; retrying");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(RETRY_MAX);
                        }
                        Err(e) => {
                            // Nothing else can hold them: fail loudly, the
                            // supervisor restarts the office and the count shows it.
                            NodeStats::add(&st.stats.sink_writes_rejected, 1);
                            return Err(e.into());
                        }
                    }
                }
                drop(permit);
            }
            DeadLetterMsg::Flush(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}
