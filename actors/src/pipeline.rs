//! The fan-out from device actors to the node's subscribers (aggregator,
//! stream-ETL, archiver). Each subscriber has its own bounded mailbox and
//! sees every released reading of a device in `seq` order.

use std::sync::Arc;

use ractor::RpcReplyPort;
use vatio_stores::Reading;

use crate::mailbox::{Bounded, Closed, Permit};

/// What a subscriber can be asked.
pub enum SubscriberMsg {
    /// Released readings of one device, in seq order.
    Readings {
        batch: Arc<[Reading]>,
        permit: Permit,
    },
    /// Write everything buffered to the sink, then reply.
    Flush(RpcReplyPort<()>),
    /// Periodic: flush what is due by time, housekeeping.
    Tick,
}

/// The node's subscribers, in the order they are fed.
#[derive(Clone, Default)]
pub struct Subscribers {
    list: Vec<Bounded<SubscriberMsg>>,
}

impl Subscribers {
    pub fn new(list: Vec<Bounded<SubscriberMsg>>) -> Self {
        Self { list }
    }

    /// Hands one device's released readings to every subscriber, waiting
    /// for room in each mailbox.
    pub async fn publish(&self, batch: Arc<[Reading]>) -> Result<(), Closed> {
        for sub in &self.list {
            let batch = batch.clone();
            sub.send(batch.len(), |permit| SubscriberMsg::Readings {
                batch,
                permit,
            })
            .await?;
        }
        Ok(())
    }

    /// Asks every subscriber to flush and waits for all of them.
    pub async fn flush(&self) -> Result<(), Closed> {
        for sub in &self.list {
            sub.current()
                .call(SubscriberMsg::Flush, None)
                .await
                .map_err(|_| Closed(sub.name()))?;
        }
        Ok(())
    }
}
