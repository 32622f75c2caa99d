//! The node's pipeline counters. Every reading that does not reach the sinks
//! is counted here by why; nothing is dropped without a count.

use std::sync::atomic::{AtomicU64, Ordering};

use vatio_stores::DeadLetterReason;

#[derive(Debug, Default)]
pub struct NodeStats {
    pub readings_accepted: AtomicU64,
    pub readings_duplicate: AtomicU64,
    pub readings_dead_lettered: AtomicU64,
    dead_letters_by_reason: [AtomicU64; DeadLetterReason::ALL.len()],
    pub batches_refused_overload: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub points_written: AtomicU64,
    pub documents_written: AtomicU64,
    pub events_written: AtomicU64,
    pub archive_files_written: AtomicU64,
    pub sink_write_failures: AtomicU64,
    pub sink_writes_rejected: AtomicU64,
    pub devices_activated: AtomicU64,
    pub devices_passivated: AtomicU64,
}

impl NodeStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn dead_lettered(&self, reason: DeadLetterReason) {
        Self::add(&self.readings_dead_lettered, 1);
        if let Some(i) = DeadLetterReason::ALL.iter().position(|r| *r == reason) {
            Self::add(&self.dead_letters_by_reason[i], 1);
        }
    }

    /// Dead letters counted since start, per reason (reasons with none omitted).
    pub fn dead_letters_by_reason(&self) -> Vec<(DeadLetterReason, u64)> {
        DeadLetterReason::ALL
            .iter()
            .zip(&self.dead_letters_by_reason)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}
