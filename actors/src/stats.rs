//! The node's pipeline counters. Every reading that does not reach the sinks
//! is counted here by why; nothing is dropped without a count.

use std::sync::atomic::{AtomicU64, Ordering};

use vatio_stores::DeadLetterReason;

#[derive(Debug, Default)]
pub struct NodeStats {
    pub readings_accepted: AtomicU64,
    pub readings_duplicate: AtomicU64,
    pub readings_dead_lettered: AtomicU64,
    pub batches_refused_overload: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub points_written: AtomicU64,
    pub documents_written: AtomicU64,
    pub events_written: AtomicU64,
    pub archive_files_written: AtomicU64,
    pub sink_writes_rejected: AtomicU64,
    pub devices_activated: AtomicU64,
    pub devices_passivated: AtomicU64,
    /// Steps the write-ahead log refused (their batches failed, nothing applied).
    pub log_append_failures: AtomicU64,
    /// Log reads that failed in a subscriber's feed (retried).
    pub log_read_errors: AtomicU64,
    /// Log records whose checksum held but which no decoder understood.
    pub log_records_undecodable: AtomicU64,
    /// Subscribers (or the device checkpoint) found past the log's head at
    /// start: the log lost records they had already taken.
    pub log_positions_past_head: AtomicU64,
    /// Shipments to replicas that failed or timed out (retried).
    pub replication_failures: AtomicU64,
    /// Own steps dropped because no replica confirmed them and another
    /// node took their device over without them.
    pub steps_voided: AtomicU64,
    /// Readings of dropped steps that the copy a claim adopted held after
    /// all, delivered with the adoption (see `logic::voided`).
    pub dropped_readings_delivered: AtomicU64,
    /// Replica steps this node logged for other owners.
    pub replica_steps_logged: AtomicU64,
    /// Devices this node claimed from its peers.
    pub devices_claimed: AtomicU64,
    /// Devices this node handed over to a claiming peer.
    pub devices_handed_over: AtomicU64,
    /// Batches refused: readings' devices are another node's.
    pub batches_refused_not_owner: AtomicU64,
    /// Batches refused: `ack = replicated` and no replica in the other AZ.
    pub batches_refused_no_replica: AtomicU64,
    /// Batches acknowledged with the local guarantee because the other AZ
    /// had no live member (`no_other_az = degrade`).
    pub batches_acked_degraded: AtomicU64,
}

impl NodeStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One more refused reading. Per-reason counts live in the dead-letter
    /// store (`Query.DeadLetterCounts`); the reason is taken for the trace.
    pub fn dead_lettered(&self, reason: DeadLetterReason) {
        Self::add(&self.readings_dead_lettered, 1);
        tracing::trace!(%reason, "dead letter");
    }
}
