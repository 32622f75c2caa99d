//! What the node's log subscribers (aggregator, stream-ETL, archiver,
//! dead-letter office, device checkpoint) are sent: logged device steps in
//! log order, from their feed (see [`crate::feed`]), plus flush and tick.

use std::sync::Arc;

use ractor::RpcReplyPort;

use crate::journal::{FenceRecord, ReplicaStep, StepRecord};
use crate::mailbox::Permit;

/// One log record as a subscriber sees it.
#[derive(Clone, Debug)]
pub struct LoggedStep {
    /// Log position just after the record: a subscriber that has folded
    /// this step resumes from here.
    pub end: u64,
    /// This node's own step; empty for a replica step.
    pub step: Arc<StepRecord>,
    /// A step kept as another node's replica: only the device checkpoint
    /// folds it; sinks never see it (its owner delivers it).
    pub replica: Option<Arc<ReplicaStep>>,
    /// A device handed over to another node: only the device checkpoint folds it.
    pub fence: Option<Arc<FenceRecord>>,
    /// The record as logged (what replication ships).
    pub payload: bytes::Bytes,
}

/// What a subscriber can be asked.
pub enum SubscriberMsg {
    /// Consecutive log records, in log order (so each device's readings
    /// arrive in seq order).
    Steps {
        steps: Vec<LoggedStep>,
        permit: Permit,
    },
    /// Write everything folded so far to the sink and commit the position,
    /// then reply.
    Flush(RpcReplyPort<()>),
    /// Periodic: flush what is due by time, housekeeping.
    Tick,
    /// Handle the steps queued so far, all at once: a subscriber's note to
    /// itself, behind the steps already in its mailbox (others ignore it).
    Drain,
}
