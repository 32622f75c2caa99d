//! How a subscriber writes to its sink (time series, documents, dead letters,
//! archive staging, archive) when the sink misbehaves. A [`SinkGuard`] wraps
//! every write of one sink:
//!
//! - a transient failure (the sink is down or busy) is retried for as long as
//!   it lasts, with capped exponential backoff and jitter, and never sooner
//!   than a server's `Retry-After` asks: the write-ahead log holds the data
//!   meanwhile, so giving up would only lose the slot;
//! - a failure is logged as a warning when the sink stops answering and at
//!   every opening of the breaker (with the error, which names the store,
//!   the URL and the server's answer), not at every retry; the last error
//!   stays in [`SinkHealth`] for `vatio status`;
//! - after `breaker_failures` consecutive transient failures its circuit
//!   breaker opens: no call is made for `breaker_open_for`, then one trial
//!   call decides whether it closes or opens again;
//! - a rejection (the sink refused the data as malformed) is retried a bounded
//!   number of times, then [`SinkFailure::Rejected`] tells the caller to
//!   dead-letter the batch and move on, so it never blocks the others.
//!
//! Time comes from the node's [`SharedClock`] and sleeping from
//! `tokio::time`, and the jitter is seeded, so a simulation replays a run
//! exactly. [`SinkHealth`] counts what happened, for `Admin.Status`.

mod breaker;

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;

use crate::clock::SharedClock;
use breaker::{Admission, Breaker};

pub use breaker::BreakerState;

/// Growth of the base wait from one attempt to the next.
const BACKOFF_FACTOR: f32 = 2.0;

/// Retry policy of one sink (time series, documents, dead letters, archive
/// staging, archive).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Shortest wait between two attempts (at least 1 ms is used).
    pub backoff_min: Duration,
    /// Longest wait between two attempts, jitter included (at least `backoff_min` is used).
    pub backoff_max: Duration,
    /// Attempts at a write the sink rejects before it is given up (at least 1 is used).
    pub rejected_attempts_max: u32,
    /// Consecutive transient failures that open the breaker (at least 1 is used).
    pub breaker_failures: u32,
    /// How long an open breaker lets no call through before its trial call.
    pub breaker_open_for: Duration,
    /// Seed of the backoff jitter. Each node should set its own (from its id,
    /// or from the run's seed in a simulation) so that nodes do not retry in
    /// step while a replay still waits exactly as the run it replays.
    pub jitter_seed: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            rejected_attempts_max: 3,
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(10),
            jitter_seed: 0,
        }
    }
}

impl RetryPolicy {
    /// The policy with out-of-range values brought into range (see the fields).
    fn sanitized(mut self) -> Self {
        self.backoff_min = self.backoff_min.max(Duration::from_millis(1));
        self.backoff_max = self.backoff_max.max(self.backoff_min);
        self.rejected_attempts_max = self.rejected_attempts_max.max(1);
        self.breaker_failures = self.breaker_failures.max(1);
        self
    }

    fn breaker_open_for_ms(&self) -> i64 {
        i64::try_from(self.breaker_open_for.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The waits between the attempts of one call: exponential from
/// `backoff_min`, with seeded jitter, never above `backoff_max`, and endless
/// (once the schedule is exhausted the last wait is reused).
///
/// backon's jitter is seeded (`with_jitter_seed`, a fastrand generator), so
/// a seed always gives the same waits. It adds a random share in `[0, 1)` of
/// the base wait to it, so a wait lies in `[base, 2 × base)`. The base is
/// therefore capped at half of `backoff_max`: the jitter still spreads
/// retries once the cap is reached, and every wait stays within
/// `[backoff_min, backoff_max]`.
pub fn backoff_waits(policy: &RetryPolicy, seed: u64) -> BackoffWaits {
    let policy = policy.clone().sanitized();
    let schedule = ExponentialBuilder::new()
        .with_min_delay(policy.backoff_min)
        .with_max_delay((policy.backoff_max / 2).max(policy.backoff_min))
        .with_factor(BACKOFF_FACTOR)
        .with_jitter()
        .with_jitter_seed(seed)
        .without_max_times()
        .build();
    BackoffWaits {
        schedule,
        last: policy.backoff_min,
        min: policy.backoff_min,
        max: policy.backoff_max,
    }
}

/// The endless schedule of [`backoff_waits`].
#[derive(Debug)]
pub struct BackoffWaits {
    schedule: <ExponentialBuilder as BackoffBuilder>::Backoff,
    last: Duration,
    min: Duration,
    max: Duration,
}

impl Iterator for BackoffWaits {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if let Some(wait) = self.schedule.next() {
            // backon computes in f32: keep its waits within the policy's bounds.
            self.last = wait.clamp(self.min, self.max);
        }
        Some(self.last)
    }
}

/// What a guarded call ended with.
#[derive(Debug, thiserror::Error)]
pub enum SinkFailure {
    /// The sink refused the data as malformed `attempts` times (transient
    /// failures in between do not reset the count): the caller dead-letters
    /// it and moves on.
    #[error("{sink} rejected the write {attempts} times: {last}")]
    Rejected {
        sink: &'static str,
        attempts: u32,
        last: vatio_stores::Error,
    },
}

/// Counters of one sink, shared (`Arc`) so `Admin.Status` can read them.
#[derive(Debug)]
pub struct SinkHealth {
    transient_failures: AtomicU64,
    rejections: AtomicU64,
    breaker_opens: AtomicU64,
    consecutive_failures: AtomicU32,
    /// The breaker's state in one word, so a snapshot never mixes two states:
    /// [`STATE_CLOSED`], [`STATE_HALF_OPEN`], or else open until that many ms.
    state: AtomicI64,
    /// The last failure since the sink last answered (cleared by an answer).
    last_error: Mutex<Option<String>>,
}

const STATE_CLOSED: i64 = i64::MIN;
const STATE_HALF_OPEN: i64 = i64::MIN + 1;

fn encode_state(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => STATE_CLOSED,
        BreakerState::HalfOpen => STATE_HALF_OPEN,
        // An opening is `now + open_for`, far above the two reserved values.
        BreakerState::Open { until_ms } => until_ms.max(STATE_HALF_OPEN + 1),
    }
}

fn decode_state(word: i64) -> BreakerState {
    match word {
        STATE_CLOSED => BreakerState::Closed,
        STATE_HALF_OPEN => BreakerState::HalfOpen,
        until_ms => BreakerState::Open { until_ms },
    }
}

impl Default for SinkHealth {
    fn default() -> Self {
        Self {
            transient_failures: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            breaker_opens: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            state: AtomicI64::new(STATE_CLOSED),
            last_error: Mutex::new(None),
        }
    }
}

/// One reading of a sink's [`SinkHealth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkHealthSnapshot {
    /// Attempts that failed transiently (sink down or busy), since start.
    pub transient_failures: u64,
    /// Attempts the sink refused as malformed, since start.
    pub rejections: u64,
    /// Times the breaker opened (a failed trial re-opens it), since start.
    pub breaker_opens: u64,
    /// Transient failures since the sink last answered.
    pub consecutive_failures: u32,
    /// The breaker's state when read.
    pub breaker: BreakerState,
}

impl SinkHealth {
    /// Why the sink is failing, if it failed since it last answered.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_last_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}

impl SinkHealth {
    pub fn snapshot(&self) -> SinkHealthSnapshot {
        SinkHealthSnapshot {
            transient_failures: self.transient_failures.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            breaker_opens: self.breaker_opens.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            breaker: decode_state(self.state.load(Ordering::Relaxed)),
        }
    }

    /// Mirrors the breaker; called with the breaker locked.
    fn publish(&self, breaker: &Breaker) {
        self.consecutive_failures
            .store(breaker.consecutive_failures(), Ordering::Relaxed);
        self.state
            .store(encode_state(breaker.state()), Ordering::Relaxed);
    }
}

/// One sink's guard: retries transient failures forever with capped
/// exponential backoff and jitter, opens a circuit breaker after
/// `breaker_failures` consecutive transient failures (while it is open no call
/// is made; once it half-opens one trial call closes or re-opens it), and
/// retries a rejection up to `rejected_attempts_max` attempts before
/// returning [`SinkFailure::Rejected`].
///
/// Clones share the breaker and the counters: hand one to every writer of the
/// same sink.
#[derive(Clone)]
pub struct SinkGuard {
    sink: &'static str,
    clock: SharedClock,
    shared: Arc<Shared>,
}

struct Shared {
    policy: RetryPolicy,
    breaker: Mutex<Breaker>,
    /// Woken on every breaker transition and abandoned trial, for callers
    /// waiting on another caller's trial.
    breaker_changed: Notify,
    /// Calls started so far: each call's jitter seed is derived from it.
    calls: AtomicU64,
    health: Arc<SinkHealth>,
}

impl std::fmt::Debug for SinkGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkGuard")
            .field("sink", &self.sink)
            .field("policy", &self.shared.policy)
            .field("health", &self.shared.health.snapshot())
            .finish()
    }
}

/// The outcome of one attempt, as the breaker and the counters see it.
enum Outcome {
    Answered,
    TransientFailure,
}

impl SinkGuard {
    pub fn new(sink: &'static str, policy: RetryPolicy, clock: SharedClock) -> Self {
        let policy = policy.sanitized();
        let breaker = Breaker::new(policy.breaker_failures, policy.breaker_open_for_ms());
        Self {
            sink,
            clock,
            shared: Arc::new(Shared {
                policy,
                breaker: Mutex::new(breaker),
                breaker_changed: Notify::new(),
                calls: AtomicU64::new(0),
                health: Arc::new(SinkHealth::default()),
            }),
        }
    }

    pub fn health(&self) -> Arc<SinkHealth> {
        Arc::clone(&self.shared.health)
    }

    pub fn name(&self) -> &'static str {
        self.sink
    }

    /// Runs `op` until it succeeds, retrying transient failures for as long
    /// as they last, or until the sink has rejected it `rejected_attempts_max`
    /// times. `op` must be idempotent: a write that timed out may have landed.
    pub async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, SinkFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, vatio_stores::Error>>,
    {
        let policy = &self.shared.policy;
        let call_index = self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let mut waits = backoff_waits(
            policy,
            call_jitter_seed(policy.jitter_seed, self.sink, call_index),
        );
        let mut rejections = 0u32;
        loop {
            let permit = self.admission().await;
            let error = match op().await {
                Ok(value) => {
                    permit.finish(Outcome::Answered);
                    self.shared.health.set_last_error(None);
                    return Ok(value);
                }
                Err(error) => error,
            };
            if error.is_transient() {
                let health = &self.shared.health;
                health.transient_failures.fetch_add(1, Ordering::Relaxed);
                let first = health.last_error().is_none();
                health.set_last_error(Some(error.to_string()));
                let state = permit.finish(Outcome::TransientFailure);
                if let BreakerState::Open { until_ms } = state {
                    // The breaker's period replaces the backoff wait; its
                    // opening was logged, with this error.
                    let retry_in = self.wait_until(until_ms);
                    tracing::debug!(sink = self.sink, error = %error, ?retry_in, "sink unavailable; breaker open");
                } else {
                    let backoff = waits.next().unwrap_or(policy.backoff_max);
                    let retry_in = error
                        .retry_after()
                        .map_or(backoff, |asked| asked.max(backoff));
                    if first {
                        tracing::warn!(sink = self.sink, error = %error, ?retry_in, "sink unavailable; retrying");
                    } else {
                        tracing::debug!(sink = self.sink, error = %error, ?retry_in, "sink unavailable; retrying");
                    }
                    tokio::time::sleep(retry_in).await;
                }
            } else {
                self.shared
                    .health
                    .rejections
                    .fetch_add(1, Ordering::Relaxed);
                permit.finish(Outcome::Answered);
                self.shared.health.set_last_error(None);
                rejections += 1;
                if rejections >= policy.rejected_attempts_max {
                    tracing::warn!(sink = self.sink, error = %error, attempts = rejections, "sink rejected the write; giving up");
                    return Err(SinkFailure::Rejected {
                        sink: self.sink,
                        attempts: rejections,
                        last: error,
                    });
                }
                let retry_in = waits.next().unwrap_or(policy.backoff_max);
                tracing::warn!(
                    sink = self.sink,
                    error = %error,
                    attempt = rejections,
                    attempts_max = policy.rejected_attempts_max,
                    ?retry_in,
                    "sink rejected the write; retrying"
                );
                tokio::time::sleep(retry_in).await;
            }
        }
    }

    /// Waits until the breaker lets a call through.
    async fn admission(&self) -> Permit<'_> {
        loop {
            // Registered before the breaker is read, so a transition between
            // the read and the wait still wakes this caller.
            let changed = self.shared.breaker_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let admission = self.with_breaker(|breaker, now_ms| breaker.admit(now_ms));
            match admission {
                Admission::Call => return self.permit(false),
                Admission::Trial => return self.permit(true),
                Admission::WaitUntil { until_ms } => {
                    tokio::time::sleep(self.wait_until(until_ms)).await;
                }
                Admission::WaitForTrial => {
                    // Bounded: a trial that neither ends nor is abandoned
                    // cannot hold the others forever.
                    tokio::select! {
                        biased;
                        () = &mut changed => {}
                        () = tokio::time::sleep(self.shared.policy.breaker_open_for) => {}
                    }
                }
            }
        }
    }

    fn permit(&self, trial: bool) -> Permit<'_> {
        Permit {
            guard: self,
            trial,
            finished: false,
        }
    }

    /// How long to sleep until `until_ms` by the node's clock; never longer
    /// than one open period, in case the clock jumps back.
    fn wait_until(&self, until_ms: i64) -> Duration {
        let ms = until_ms
            .saturating_sub(self.clock.now_ms())
            .clamp(1, self.shared.policy.breaker_open_for_ms().max(1));
        Duration::from_millis(u64::try_from(ms).unwrap_or(1))
    }

    /// Runs `f` on the locked breaker at the clock's time, then mirrors the
    /// breaker into the counters, logs a transition and wakes the waiters.
    fn with_breaker<R>(&self, f: impl FnOnce(&mut Breaker, i64) -> R) -> R {
        let mut breaker = self
            .shared
            .breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now_ms = self.clock.now_ms();
        let before = breaker.state();
        let result = f(&mut breaker, now_ms);
        let after = breaker.state();
        self.shared.health.publish(&breaker);
        drop(breaker);
        if before != after {
            self.breaker_moved(before, after);
        }
        result
    }

    fn breaker_moved(&self, before: BreakerState, after: BreakerState) {
        let health = &self.shared.health;
        match after {
            BreakerState::Open { until_ms } => {
                health.breaker_opens.fetch_add(1, Ordering::Relaxed);
                let failures = health.consecutive_failures.load(Ordering::Relaxed);
                if before == BreakerState::HalfOpen {
                    let error = health.last_error().unwrap_or_default();
                    tracing::warn!(
                        sink = self.sink,
                        until_ms,
                        %error,
                        "sink breaker trial failed; open again"
                    );
                } else {
                    let error = health.last_error().unwrap_or_default();
                    tracing::warn!(sink = self.sink, until_ms, failures, %error, "sink breaker open");
                }
            }
            BreakerState::HalfOpen => {
                tracing::info!(sink = self.sink, "sink breaker half-open; one trial call");
            }
            BreakerState::Closed => {
                tracing::info!(sink = self.sink, "sink breaker closed; sink answers again");
            }
        }
        self.shared.breaker_changed.notify_waiters();
    }
}

/// Leave to make one call. A trial permit dropped without an outcome (its
/// caller was cancelled) hands the trial to the next caller.
struct Permit<'a> {
    guard: &'a SinkGuard,
    trial: bool,
    finished: bool,
}

impl Permit<'_> {
    /// Records the attempt's outcome; returns the breaker's state after it.
    fn finish(mut self, outcome: Outcome) -> BreakerState {
        self.finished = true;
        let trial = self.trial;
        self.guard.with_breaker(|breaker, now_ms| {
            match outcome {
                Outcome::Answered => breaker.on_answer(),
                Outcome::TransientFailure => breaker.on_transient_failure(now_ms, trial),
            }
            breaker.state()
        })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial && !self.finished {
            self.guard
                .with_breaker(|breaker, _| breaker.abandon_trial());
            self.guard.shared.breaker_changed.notify_waiters();
        }
    }
}

/// The jitter seed of one call: the policy's seed mixed with the sink's name
/// and the call's number, so calls and sinks do not share one jitter
/// sequence while a given seed still replays the same waits.
fn call_jitter_seed(jitter_seed: u64, sink: &str, call_index: u64) -> u64 {
    // FNV-1a over the name: stable across Rust versions, unlike std's hasher.
    let name = sink.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix64(jitter_seed ^ mix64(name ^ mix64(call_index)))
}

/// A bijective 64-bit mixer (splitmix64's finaliser).
fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
