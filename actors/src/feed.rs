//! How a subscriber reads the write-ahead log: each one (aggregator,
//! stream-ETL, archiver, dead-letter office, device checkpoint) has its own
//! durable position, a feed task that reads records from there into its
//! bounded mailbox, and a [`Progress`] the tree reads to flush, to report
//! lag and to truncate the log behind the slowest subscriber.
//!
//! A subscriber commits a position only once everything before it is in its
//! sink, so a restart (of the actor or the node) resumes there and sees some
//! records again: at-least-once, made exactly-once by idempotent sinks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vatio_wal::{Log, LogError, Position, PositionStore};

use crate::journal::{LogRecord, StepRecord};
use crate::mailbox::Bounded;
use crate::pipeline::{LoggedStep, SubscriberMsg};
use crate::stats::NodeStats;

/// Most record bytes a feed reads from the log at a time.
const READ_BYTES_MAX: usize = 1 << 20;
/// Wait before a feed retries after a log read error.
const READ_RETRY: Duration = Duration::from_secs(1);

/// How far one subscriber has got in the log.
#[derive(Debug)]
pub struct Progress {
    pub name: &'static str,
    /// End of the last record folded into the subscriber's state (not yet
    /// necessarily in its sink).
    folded: watch::Sender<u64>,
    /// Durable position: everything before it is in the sink.
    committed: AtomicU64,
}

impl Progress {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            folded: watch::Sender::new(0),
            committed: AtomicU64::new(0),
        })
    }

    pub fn folded(&self) -> u64 {
        *self.folded.borrow()
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    pub fn set_folded(&self, end: u64) {
        self.folded.send_if_modified(|v| {
            let moved = end > *v;
            if moved {
                *v = end;
            }
            moved
        });
    }

    pub fn set_committed(&self, end: u64) {
        self.committed.fetch_max(end, Ordering::AcqRel);
        self.set_folded(end);
    }

    /// A (re)started subscriber resumes at `pos`: what an earlier instance
    /// folded but did not commit is folded again, so `folded` moves back.
    pub fn resume_at(&self, pos: u64) {
        self.committed.fetch_max(pos, Ordering::AcqRel);
        self.folded.send_replace(pos);
    }

    /// Waits until the subscriber has folded everything before `target`.
    pub async fn wait_folded(&self, target: u64) {
        let mut rx = self.folded.subscribe();
        // The sender lives in `self`, so this only ends by reaching the target.
        let _ = rx.wait_for(|v| *v >= target).await;
    }
}

/// What a subscriber needs to read the log and keep its position.
#[derive(Clone)]
pub struct LogConsumer {
    pub log: Log,
    pub positions: PositionStore,
    pub progress: Arc<Progress>,
    /// Bound of the subscriber's mailbox, in readings.
    pub mailbox_readings: usize,
    pub stats: Arc<NodeStats>,
    /// In a cluster: what the subscriber may read (see [`Gate`]).
    pub gate: Option<Gate>,
    /// Reads only records on disk ([`Log::durable_reader`]). The shipper
    /// does: no replica then holds a step this node's log could lose in a
    /// power loss, and through the shipper's watermark neither do the sinks
    /// or a replicated ack (under `fsync = interval` they wait for it).
    pub durable_only: bool,
}

/// In a cluster, a subscriber reads only steps settled with the replicas,
/// and skips the ones dropped as orphaned (see [`crate::void`]).
#[derive(Clone)]
pub struct Gate {
    pub deliverable: watch::Receiver<u64>,
    pub void: Arc<crate::void::VoidSet>,
}

impl LogConsumer {
    pub fn name(&self) -> &'static str {
        self.progress.name
    }

    /// Resumes the subscriber at its committed position (the start of the
    /// log for a new one) and starts its feed from there.
    pub fn resume(&self, actor: ActorRef<SubscriberMsg>) -> Result<Feed, LogError> {
        let pos = match self.positions.load(self.name())? {
            Some(p) => p.0,
            None => self.log.start().0,
        };
        self.start_feed(actor, pos)
    }

    /// Starts the feed of records from `from` into the subscriber's mailbox,
    /// for a subscriber that keeps its position elsewhere (the checkpoint).
    ///
    /// A position past the log's head means start-up cut records this
    /// subscriber had already taken (corruption of acknowledged data):
    /// they stay in its sink, and it goes on from the head, loudly.
    pub fn start_feed(&self, actor: ActorRef<SubscriberMsg>, from: u64) -> Result<Feed, LogError> {
        let head = self.log.visible_head().0;
        let from = if from > head {
            NodeStats::add(&self.stats.log_positions_past_head, 1);
            tracing::error!(
                subscriber = self.name(),
                position = from,
                head,
                "subscriber position is past the log's head: the log lost records it had taken; going on from the head"
            );
            head
        } else {
            from
        };
        self.progress.resume_at(from);
        let reader = if self.durable_only {
            self.log.durable_reader(Position(from))?
        } else {
            self.log.reader(Position(from))?
        };
        let mailbox = Bounded::new(self.name(), actor, self.mailbox_readings);
        let name = self.name();
        let stats = self.stats.clone();
        let gate = self.gate.clone();
        Ok(Feed(tokio::spawn(run_feed(
            name, reader, mailbox, stats, gate,
        ))))
    }

    /// Records that every step up to `steps`' last is folded in.
    pub fn folded(&self, steps: &[LoggedStep]) {
        if let Some(last) = steps.last() {
            self.progress.set_folded(last.end);
        }
    }

    /// Makes everything folded so far the subscriber's durable position:
    /// call once the sink has it.
    pub async fn commit_folded(&self) -> Result<(), LogError> {
        self.commit(self.progress.folded()).await
    }

    /// Makes `end` the subscriber's durable position.
    pub async fn commit(&self, end: u64) -> Result<(), LogError> {
        if end <= self.progress.committed() {
            return Ok(());
        }
        self.positions
            .commit_async(self.name(), Position(end))
            .await?;
        self.progress.set_committed(end);
        Ok(())
    }
}

/// A running feed; stops when dropped (with the subscriber's state).
pub struct Feed(JoinHandle<()>);

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_feed(
    name: &'static str,
    mut reader: vatio_wal::LogReader,
    mailbox: Bounded<SubscriberMsg>,
    stats: Arc<NodeStats>,
    mut gate: Option<Gate>,
) {
    // Records read but not yet deliverable, oldest first.
    let mut held: Vec<vatio_wal::Record> = Vec::new();
    loop {
        let mut records = if held.is_empty() {
            match reader.next_batch(READ_BYTES_MAX).await {
                Ok(r) => r,
                Err(LogError::Closed) => return,
                Err(e) => {
                    NodeStats::add(&stats.log_read_errors, 1);
                    tracing::error!(subscriber = name, error = %e, "reading the write-ahead log failed; retrying");
                    tokio::time::sleep(READ_RETRY).await;
                    continue;
                }
            }
        } else {
            std::mem::take(&mut held)
        };
        if let (Some(gate), Some(first)) = (&mut gate, records.first()) {
            let end = first.end.0;
            // Ends only when settled or when the node stops.
            if gate.deliverable.wait_for(|d| *d >= end).await.is_err() {
                return;
            }
            // What is deliverable goes now; the rest waits. Waiting for the
            // whole read held back records the sinks may have, and a flush
            // that ends at the settled point never got them while a replica
            // was missing (a test's shutdown timed out on it).
            let deliverable = *gate.deliverable.borrow();
            let split = records
                .iter()
                .position(|r| r.end.0 > deliverable)
                .unwrap_or(records.len());
            held = records.split_off(split);
        }
        let mut steps = Vec::with_capacity(records.len());
        let mut weight = 0usize;
        for rec in records {
            let voided = gate.as_ref().is_some_and(|g| g.void.contains(rec.end.0));
            match LogRecord::decode(&rec.payload) {
                Ok(LogRecord::Own(_)) if voided => {
                    steps.push(LoggedStep {
                        end: rec.end.0,
                        step: Arc::new(StepRecord::empty()),
                        replica: None,
                        fence: None,
                        payload: rec.payload.clone(),
                    });
                }
                Ok(LogRecord::Own(step)) => {
                    weight += step.released_len() + step.letters.len() + 1;
                    steps.push(LoggedStep {
                        end: rec.end.0,
                        step: Arc::new(step),
                        replica: None,
                        fence: None,
                        payload: rec.payload.clone(),
                    });
                }
                Ok(LogRecord::Fence(fence)) => {
                    weight += 1;
                    steps.push(LoggedStep {
                        end: rec.end.0,
                        step: Arc::new(StepRecord::empty()),
                        replica: None,
                        fence: Some(Arc::new(fence)),
                        payload: rec.payload.clone(),
                    });
                }
                Ok(LogRecord::Replica(replica)) => {
                    weight += 1;
                    steps.push(LoggedStep {
                        end: rec.end.0,
                        step: Arc::new(StepRecord::empty()),
                        replica: Some(Arc::from(replica)),
                        fence: None,
                        payload: rec.payload.clone(),
                    });
                }
                Err(e) => {
                    // The checksum held, so the bytes are as written: another
                    // version wrote them. Counted and reported, never silent.
                    NodeStats::add(&stats.log_records_undecodable, 1);
                    tracing::error!(subscriber = name, position = rec.position.0, error = %e, "skipping an undecodable log record");
                    steps.push(LoggedStep {
                        end: rec.end.0,
                        step: Arc::new(StepRecord::empty()),
                        replica: None,
                        fence: None,
                        payload: rec.payload.clone(),
                    });
                }
            }
        }
        if steps.is_empty() {
            continue;
        }
        let sent = mailbox
            .send(weight, |permit| SubscriberMsg::Steps { steps, permit })
            .await;
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};
    use tokio::sync::mpsc;
    use vatio_stores::DeviceId;

    /// Hands the ends of the steps it gets to the test.
    struct Collector;

    impl Actor for Collector {
        type Msg = SubscriberMsg;
        type State = mpsc::UnboundedSender<Vec<u64>>;
        type Arguments = mpsc::UnboundedSender<Vec<u64>>;

        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            msg: Self::Msg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let SubscriberMsg::Steps { steps, .. } = msg {
                let _ = tx.send(steps.iter().map(|s| s.end).collect());
            }
            Ok(())
        }
    }

    /// Three records read at once, the first two deliverable: a gated
    /// subscriber gets those two now and the third once it is settled.
    #[tokio::test]
    async fn a_gated_feed_hands_over_what_is_deliverable_of_a_read()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (log, _) = Log::open(vatio_wal::LogConfig::new(dir.path()))?;
        let mut ends = Vec::new();
        for no in 0..3 {
            let step = StepRecord {
                device: DeviceId::new("meter-1"),
                term: 0,
                ops: vec![crate::logic::device::Op::Start { seq: no + 1 }],
                letters: Vec::new(),
            };
            ends.push(log.append(step.encode()?).await?.end.0);
        }
        let (deliverable_tx, deliverable) = watch::channel(ends[1]);
        let gate = Gate {
            deliverable,
            void: Arc::new(crate::void::VoidSet::open(&dir.path().join("void"))?),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (actor, handle) = Actor::spawn(None, Collector, tx).await?;
        let feed = tokio::spawn(run_feed(
            "test",
            log.reader(log.start())?,
            Bounded::new("test", actor.clone(), 1_000),
            Arc::new(NodeStats::default()),
            Some(gate),
        ));
        // Bounded, so that a feed holding them back fails the test.
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(
            first.ok().flatten(),
            Some(vec![ends[0], ends[1]]),
            "the deliverable records were held back"
        );
        deliverable_tx.send_replace(ends[2]);
        assert_eq!(rx.recv().await, Some(vec![ends[2]]));
        feed.abort();
        actor.stop(None);
        handle.await?;
        Ok(())
    }

    /// A restarted subscriber folds again from its committed position, so
    /// its progress must not keep reporting what the old instance folded.
    #[test]
    fn resuming_moves_folded_back_to_the_committed_position() {
        let p = Progress::new("aggregator");
        p.set_committed(100);
        p.set_folded(500);
        assert_eq!(p.folded(), 500);
        p.resume_at(100);
        assert_eq!((p.committed(), p.folded()), (100, 100));
        p.set_folded(90);
        assert_eq!(p.folded(), 100, "folded only moves forward while running");
    }
}
