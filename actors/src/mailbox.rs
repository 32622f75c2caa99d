//! Bounded mailboxes on top of ractor's unbounded ones.
//!
//! The bound counts readings, not messages: a sender first takes as many
//! permits as its message carries readings from the receiver's semaphore,
//! then casts a message that holds them; they return when the receiver has
//! handled (dropped) the message. A full receiver therefore makes its senders
//! wait, which is how backpressure travels from a slow sink up to `Ingest`.
//! The actor behind the mailbox can be swapped when a supervisor restarts it.

use std::sync::{Arc, RwLock};

use ractor::{ActorRef, Message};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Held by a message while it waits in (or is handled by) a bounded mailbox.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

/// The receiver is gone (node shutting down).
#[derive(Debug, thiserror::Error)]
#[error("mailbox of {0} is closed")]
pub struct Closed(pub &'static str);

/// A cloneable, bounded handle to one actor.
pub struct Bounded<M: Message> {
    name: &'static str,
    actor: Arc<RwLock<ActorRef<M>>>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl<M: Message> Clone for Bounded<M> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            actor: self.actor.clone(),
            permits: self.permits.clone(),
            capacity: self.capacity,
        }
    }
}

impl<M: Message> Bounded<M> {
    pub fn new(name: &'static str, actor: ActorRef<M>, capacity: usize) -> Self {
        Self {
            name,
            actor: Arc::new(RwLock::new(actor)),
            permits: Arc::new(Semaphore::new(capacity.clamp(1, Semaphore::MAX_PERMITS))),
            capacity: capacity.clamp(1, Semaphore::MAX_PERMITS),
        }
    }

    /// Waits for room for `weight` readings (at least one, at most the
    /// whole capacity), then sends the message built around the permit.
    pub async fn send(&self, weight: usize, build: impl FnOnce(Permit) -> M) -> Result<(), Closed> {
        let n = u32::try_from(weight.clamp(1, self.capacity)).unwrap_or(u32::MAX);
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| Closed(self.name))?;
        self.cast(build(Permit(permit)))
    }

    /// Sends a control message (flush, tick) that does not count against the bound.
    pub fn cast(&self, msg: M) -> Result<(), Closed> {
        self.current().cast(msg).map_err(|_| Closed(self.name))
    }

    /// The actor currently behind this mailbox.
    pub fn current(&self) -> ActorRef<M> {
        match self.actor.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Points the mailbox at a restarted actor.
    pub fn replace(&self, actor: ActorRef<M>) {
        match self.actor.write() {
            Ok(mut guard) => *guard = actor,
            Err(poisoned) => *poisoned.into_inner() = actor,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}
