//! One load worker: a slice of devices, one connection, one `Ingest` stream
//! at a time, at most [`IN_FLIGHT_BATCHES_MAX`] batches un-acknowledged.
//!
//! A worker runs sessions until the deadline. A session opens a stream,
//! re-sends what the previous one left un-acknowledged (same batch ids, same
//! seqs), then sends new batches as the window and the rate allow while it
//! matches acks. It ends on the node's `RESOURCE_EXHAUSTED` (back off for the
//! retry hint), on any other failure (back off exponentially) or at the
//! deadline (stop sending, wait briefly for outstanding acks). After the
//! deadline a worker keeps reconnecting and re-sending what is still
//! un-acknowledged for at most [`DRAIN_MAX`], so a node that was down or
//! overloaded at that moment still gets to acknowledge every batch.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use vatio_proto::v1::ingest_client::IngestClient;
use vatio_proto::v1::{DeviceKind, IngestAck, IngestRequest, Reading};

use super::acks_out::AckSink;
use super::report::{Counters, latency_histogram};
use super::{IN_FLIGHT_BATCHES_MAX, device_id};

/// Metadata key of the node's retry hint on `RESOURCE_EXHAUSTED`, in ms.
pub(crate) const RETRY_AFTER_KEY: &str = "retry-after-ms";
/// Wait on `RESOURCE_EXHAUSTED` when the node gives no usable hint.
pub(crate) const RETRY_AFTER_DEFAULT: Duration = Duration::from_millis(200);
/// Longest retry hint honoured: a broken hint must not stall the run.
const RETRY_AFTER_MAX_MS: u64 = 30_000;
/// Backoff after other failures: doubles per failure in a row, reset by an ack.
const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(100);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a worker keeps trying to get its outstanding batches
/// acknowledged after the deadline.
const DRAIN_MAX: Duration = Duration::from_secs(5);

/// What one worker does.
#[derive(Clone, Debug)]
pub(crate) struct WorkerPlan {
    pub(crate) index: u32,
    /// Device numbers this worker owns.
    pub(crate) devices: Range<u32>,
    /// This worker's readings per second; `None`: as fast as acks allow.
    pub(crate) rate: Option<u64>,
    pub(crate) batch: u32,
    pub(crate) seed: u64,
    /// First seq of every device.
    pub(crate) seq_start: u64,
    /// When the run started: ack times are measured from here.
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
}

/// One simulated meter.
#[derive(Clone, Debug)]
struct LoadDevice {
    id: String,
    seq_last: u64,
    ts_last_ms: i64,
    /// The meter's typical draw; readings wobble around it.
    base_kw: f64,
}

/// Makes batches of readings: devices in turn, seqs and timestamps strictly
/// increasing per device.
#[derive(Debug)]
pub(crate) struct Generator {
    devices: Vec<LoadDevice>,
    cursor: usize,
    rng: SmallRng,
    batch_id_next: u64,
}

impl Generator {
    pub(crate) fn new(worker: u32, devices: Range<u32>, seed: u64, seq_start: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed ^ u64::from(worker).rotate_left(32));
        let devices = devices
            .map(|n| LoadDevice {
                id: device_id(n),
                seq_last: seq_start.saturating_sub(1),
                ts_last_ms: i64::MIN,
                base_kw: rng.random_range(50.0..450.0),
            })
            .collect();
        Self {
            devices,
            cursor: 0,
            rng,
            // The worker number in the high bits keeps batch ids unique over
            // the whole run, which makes node-side logs easier to follow.
            batch_id_next: (u64::from(worker) << 40) + 1,
        }
    }

    /// The next batch of `size` readings stamped no earlier than `now_ms`.
    pub(crate) fn next_batch(&mut self, size: u32, now_ms: i64) -> IngestRequest {
        let batch_id = self.batch_id_next;
        self.batch_id_next += 1;
        let mut readings = Vec::with_capacity(size as usize);
        if !self.devices.is_empty() {
            let count = self.devices.len();
            for _ in 0..size {
                let device = &mut self.devices[self.cursor];
                self.cursor = (self.cursor + 1) % count;
                device.seq_last += 1;
                // Strictly increasing per device: sinks key points by
                // (device, metric, ts), so equal timestamps would collapse.
                device.ts_last_ms = now_ms.max(device.ts_last_ms.saturating_add(1));
                let kw = device.base_kw * self.rng.random_range(0.95..1.05);
                readings.push(Reading {
                    device_id: device.id.clone(),
                    seq: device.seq_last,
                    ts_unix_ms: device.ts_last_ms,
                    metric: "power".to_owned(),
                    value: (kw * 100.0).round() / 100.0,
                    unit: "kW".to_owned(),
                    kind: DeviceKind::ElectricityMeter as i32,
                });
            }
        }
        IngestRequest {
            batch_id,
            readings,
            source: String::new(),
        }
    }
}

/// A batch sent and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) request: IngestRequest,
    pub(crate) sent_at: Instant,
}

/// The un-acknowledged batches of a worker, oldest first; they survive a
/// reconnect and are re-sent on the next stream.
#[derive(Debug, Default)]
pub(crate) struct Window {
    batches: VecDeque<InFlight>,
}

impl Window {
    pub(crate) fn len(&self) -> usize {
        self.batches.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.batches.len() >= IN_FLIGHT_BATCHES_MAX
    }

    pub(crate) fn push(&mut self, request: IngestRequest, sent_at: Instant) {
        self.batches.push_back(InFlight { request, sent_at });
    }

    /// Removes and returns the batch `ack` answers. The node acks in send
    /// order, so it is normally the oldest; an ack for an unknown batch (one
    /// already acked before a reconnect) returns `None`.
    pub(crate) fn ack(&mut self, ack: &IngestAck) -> Option<InFlight> {
        let at = self
            .batches
            .iter()
            .position(|b| b.request.batch_id == ack.batch_id)?;
        self.batches.remove(at)
    }
}

/// Why a session ended.
#[derive(Debug, PartialEq)]
enum SessionEnd {
    /// The deadline passed; the worker is done.
    Deadline,
    /// The node is overloaded: wait this long, then reconnect.
    Overloaded(Duration),
    /// Anything else; the text goes into the report.
    Failed(String),
}

/// The node's retry hint in `status`, within sane bounds.
pub(crate) fn retry_after(status: &Status) -> Duration {
    status
        .metadata()
        .get(RETRY_AFTER_KEY)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(RETRY_AFTER_DEFAULT, |ms| {
            Duration::from_millis(ms.clamp(1, RETRY_AFTER_MAX_MS))
        })
}

fn session_end(status: &Status) -> SessionEnd {
    if status.code() == Code::ResourceExhausted {
        SessionEnd::Overloaded(retry_after(status))
    } else {
        SessionEnd::Failed(format!("{:?}: {}", status.code(), status.message()))
    }
}

/// Time between batches for `rate` readings/s in batches of `batch`.
pub(crate) fn batch_period(rate: u64, batch: u32) -> Duration {
    let nanos = u128::from(batch) * 1_000_000_000 / u128::from(rate.max(1));
    // tokio's interval refuses a zero period.
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1))
}

/// Waits for the next rate slot, or not at all without a rate limit.
async fn next_slot(ticker: &mut Option<Interval>) {
    if let Some(ticker) = ticker {
        ticker.tick().await;
    }
}

fn wall_clock_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

struct Worker {
    plan: WorkerPlan,
    client: IngestClient<Channel>,
    counters: Arc<Counters>,
    generator: Generator,
    window: Window,
    ticker: Option<Interval>,
    latency_us: Histogram<u64>,
    source: String,
    /// Whether the current session got at least one ack (resets the backoff).
    acked_in_session: bool,
    /// Where acknowledged readings are listed (`--acks-out`), if anywhere.
    ack_sink: Option<AckSink>,
}

/// Runs one worker until its deadline; returns its ack latencies in µs.
pub(crate) async fn run(
    plan: WorkerPlan,
    channel: Channel,
    counters: Arc<Counters>,
    ack_sink: Option<AckSink>,
) -> Histogram<u64> {
    let ticker = plan.rate.map(|rate| {
        let mut ticker = tokio::time::interval(batch_period(rate, plan.batch));
        // Catch up after a slow moment so the offered rate holds on average;
        // the ticker is reset after every backoff so a pause is not replayed.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        ticker
    });
    let mut worker = Worker {
        generator: Generator::new(plan.index, plan.devices.clone(), plan.seed, plan.seq_start),
        source: format!("vatio-load/{}", plan.index),
        plan,
        client: IngestClient::new(channel),
        counters,
        window: Window::default(),
        ticker,
        latency_us: latency_histogram(),
        acked_in_session: false,
        ack_sink,
    };

    let mut error_backoff = ERROR_BACKOFF_MIN;
    let drain_until = worker.plan.deadline + DRAIN_MAX;
    loop {
        // Before the deadline: send. After it: only while batches remain
        // un-acknowledged, and not past the drain limit.
        let now = Instant::now();
        let pending = worker.window.len() > 0;
        if now >= worker.plan.deadline && (!pending || now >= drain_until) {
            break;
        }
        worker.acked_in_session = false;
        let end = worker.session().await;
        if worker.acked_in_session {
            error_backoff = ERROR_BACKOFF_MIN;
        }
        let wait = match end {
            SessionEnd::Deadline => break,
            SessionEnd::Overloaded(wait) => {
                Counters::add(&worker.counters.backoffs, 1);
                tracing::debug!(
                    worker = worker.plan.index,
                    ?wait,
                    "node overloaded; backing off"
                );
                wait
            }
            SessionEnd::Failed(text) => {
                tracing::debug!(worker = worker.plan.index, error = %text, "stream failed; reconnecting");
                worker.counters.error(text);
                let wait = error_backoff;
                error_backoff = (error_backoff * 2).min(ERROR_BACKOFF_MAX);
                wait
            }
        };
        // Waiting past the deadline is only worth it with batches to re-send.
        let wait_until = if worker.window.len() > 0 {
            drain_until
        } else {
            worker.plan.deadline
        };
        tokio::time::sleep_until((Instant::now() + wait).min(wait_until)).await;
        if let Some(ticker) = &mut worker.ticker {
            ticker.reset();
        }
    }
    worker.latency_us
}

impl Worker {
    /// Adds a new batch to the window and queues it on the stream.
    fn send_new(&mut self, tx: &mpsc::Sender<IngestRequest>) {
        let mut request = self.generator.next_batch(self.plan.batch, wall_clock_ms());
        request.source.clone_from(&self.source);
        let readings = request.readings.len() as u64;
        // The channel holds as many batches as the window, and the window
        // is checked before sending, so this never finds the channel full.
        // A closed channel means the stream is gone; its status arrives on
        // the ack side and the batch is re-sent on the next stream.
        let _ = tx.try_send(request.clone());
        self.window.push(request, Instant::now());
        Counters::add(&self.counters.batches_sent, 1);
        Counters::add(&self.counters.readings_sent, readings);
    }

    async fn on_ack(&mut self, ack: &IngestAck) {
        let Some(batch) = self.window.ack(ack) else {
            tracing::debug!(
                batch_id = ack.batch_id,
                "ack for a batch not in flight; ignored"
            );
            return;
        };
        self.acked_in_session = true;
        self.latency_us
            .saturating_record(micros(batch.sent_at.elapsed()));
        let c = &self.counters;
        c.ack_at(micros(self.plan.started.elapsed()));
        Counters::add(&c.batches_acked, 1);
        if ack.guarantee == vatio_proto::v1::AckGuarantee::Replicated as i32 {
            Counters::add(&c.batches_acked_replicated, 1);
        }
        Counters::add(&c.readings_accepted, u64::from(ack.accepted));
        Counters::add(&c.readings_duplicate, u64::from(ack.duplicates));
        Counters::add(&c.readings_dead_lettered, u64::from(ack.dead_lettered));
        if let Some(sink) = &self.ack_sink {
            sink.record(batch.request.readings).await;
        }
    }

    /// One stream, from open to deadline (and then until every batch is
    /// acknowledged, for at most [`DRAIN_MAX`]), overload or failure.
    async fn session(&mut self) -> SessionEnd {
        let deadline = self.plan.deadline;
        let drain_until = deadline + DRAIN_MAX;
        let (tx, rx) = mpsc::channel::<IngestRequest>(IN_FLIGHT_BATCHES_MAX);

        // Re-send first, in the original order: same batch ids, same seqs.
        let mut resent = 0;
        for batch in &mut self.window.batches {
            batch.sent_at = Instant::now();
            resent += batch.request.readings.len() as u64;
            let _ = tx.try_send(batch.request.clone());
        }
        // A stream with nothing on it may not be answered before the node
        // sees a first message, so open it with one.
        if self.window.len() == 0 {
            if Instant::now() >= deadline {
                return SessionEnd::Deadline;
            }
            tokio::select! {
                () = next_slot(&mut self.ticker) => self.send_new(&tx),
                () = tokio::time::sleep_until(deadline) => return SessionEnd::Deadline,
            }
        }

        let opened = tokio::select! {
            opened = self.client.ingest(ReceiverStream::new(rx)) => opened,
            () = tokio::time::sleep_until(drain_until) => return SessionEnd::Deadline,
        };
        let mut acks = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => return session_end(&status),
        };
        // Counted once the stream is open: a refused connect re-sends nothing.
        Counters::add(&self.counters.readings_resent, resent);

        let mut tx = Some(tx);
        // Pinned once rather than re-armed on every pass of the loop.
        let until_deadline = tokio::time::sleep_until(deadline);
        let until_drained = tokio::time::sleep_until(drain_until);
        tokio::pin!(until_deadline, until_drained);
        loop {
            let sending = tx.is_some();
            let can_send = sending && !self.window.is_full();
            tokio::select! {
                biased;
                item = acks.next() => match item {
                    Some(Ok(ack)) => self.on_ack(&ack).await,
                    Some(Err(status)) => return session_end(&status),
                    // Ended early, or before acknowledging everything.
                    None if sending || self.window.len() > 0 => {
                        return SessionEnd::Failed("the node closed the stream".to_owned());
                    }
                    None => return SessionEnd::Deadline,
                },
                () = &mut until_deadline, if sending => {
                    // Half-close: the node acks what it has and ends the stream.
                    tx = None;
                }
                () = &mut until_drained, if !sending => {
                    return SessionEnd::Deadline;
                }
                () = next_slot(&mut self.ticker), if can_send => {
                    if let Some(tx) = &tx {
                        self.send_new(tx);
                    }
                }
            }
            if tx.is_none() && self.window.len() == 0 {
                return SessionEnd::Deadline;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::metadata::MetadataMap;

    use super::*;

    #[test]
    fn seqs_and_timestamps_increase_per_device_across_batches() {
        let mut generator = Generator::new(2, 10..13, 7, 1);
        let mut last: HashMap<String, (u64, i64)> = HashMap::new();
        let mut batch_ids = Vec::new();
        // Same wall-clock millisecond for every batch: the worst case.
        for _ in 0..5 {
            let batch = generator.next_batch(7, 1_700_000_000_000);
            assert_eq!(batch.readings.len(), 7);
            batch_ids.push(batch.batch_id);
            for r in batch.readings {
                let (seq, ts) = last.get(&r.device_id).copied().unwrap_or((0, i64::MIN));
                assert_eq!(r.seq, seq + 1);
                assert!(r.ts_unix_ms > ts);
                assert_eq!((r.metric.as_str(), r.unit.as_str()), ("power", "kW"));
                assert_eq!(r.kind, DeviceKind::ElectricityMeter as i32);
                assert!((40.0..500.0).contains(&r.value));
                last.insert(r.device_id, (r.seq, r.ts_unix_ms));
            }
        }
        let mut ids: Vec<&String> = last.keys().collect();
        ids.sort();
        assert_eq!(ids, ["load-000010", "load-000011", "load-000012"]);
        assert!(batch_ids.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(batch_ids[0] >> 40, 2, "worker number in the batch id");
    }

    #[test]
    fn acks_are_matched_by_batch_id() {
        let mut generator = Generator::new(0, 0..4, 1, 1);
        let mut window = Window::default();
        let start = Instant::now();
        for _ in 0..IN_FLIGHT_BATCHES_MAX {
            window.push(generator.next_batch(2, 0), start);
        }
        assert!(window.is_full());
        let ack = |batch_id| IngestAck {
            batch_id,
            accepted: 2,
            ..IngestAck::default()
        };
        let first = window.ack(&ack(1)).map(|b| b.request.batch_id);
        assert_eq!(first, Some(1));
        // Out of order still finds its batch; unknown ids are ignored.
        assert_eq!(window.ack(&ack(5)).map(|b| b.request.batch_id), Some(5));
        assert!(window.ack(&ack(1)).is_none());
        assert!(window.ack(&ack(999)).is_none());
        assert_eq!(window.len(), IN_FLIGHT_BATCHES_MAX - 2);
        assert!(!window.is_full());
    }

    #[test]
    fn the_retry_hint_comes_from_status_metadata() {
        let with_hint = |hint: &'static str| {
            let mut metadata = MetadataMap::new();
            metadata.insert(RETRY_AFTER_KEY, hint.parse().expect("ascii metadata"));
            Status::with_metadata(Code::ResourceExhausted, "overloaded", metadata)
        };
        assert_eq!(retry_after(&with_hint("350")), Duration::from_millis(350));
        assert_eq!(retry_after(&with_hint("soon")), RETRY_AFTER_DEFAULT);
        assert_eq!(
            retry_after(&with_hint("99999999")),
            Duration::from_millis(RETRY_AFTER_MAX_MS)
        );
        assert_eq!(
            retry_after(&Status::resource_exhausted("overloaded")),
            RETRY_AFTER_DEFAULT
        );
        assert_eq!(
            session_end(&with_hint("350")),
            SessionEnd::Overloaded(Duration::from_millis(350))
        );
        assert!(matches!(
            session_end(&Status::unavailable("down")),
            SessionEnd::Failed(_)
        ));
    }

    #[test]
    fn batch_period_matches_the_rate() {
        assert_eq!(batch_period(1_000, 100), Duration::from_millis(100));
        assert_eq!(batch_period(3, 1), Duration::from_nanos(333_333_333));
        assert_eq!(batch_period(u64::MAX, 1), Duration::from_nanos(1));
    }
}
