//! The sink retry guarantees, on tokio's paused time with a manual clock that
//! follows it (as the simulation's clock follows simulated time): nothing here
//! really sleeps, and every run is the same.

use std::collections::VecDeque;

use tokio::time::Instant;
use vatio_stores::Error;

use super::*;
use crate::clock::ManualClock;

const START_MS: i64 = 1_700_000_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A manual clock kept on tokio's paused time, 1 ms at a time.
fn clock_following_paused_time() -> Arc<ManualClock> {
    let clock = Arc::new(ManualClock::new(START_MS));
    let ticking = Arc::clone(&clock);
    let origin = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ms(1));
        loop {
            tick.tick().await;
            let elapsed = i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX);
            ticking.set(START_MS + elapsed);
        }
    });
    clock
}

fn guard(sink: &'static str, policy: RetryPolicy) -> SinkGuard {
    SinkGuard::new(sink, policy, clock_following_paused_time())
}

fn breaker_after(failures: u32) -> RetryPolicy {
    RetryPolicy {
        breaker_failures: failures,
        breaker_open_for: Duration::from_secs(10),
        ..RetryPolicy::default()
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// The sink is unreachable.
    Down,
    /// The server asks to come back after this long (`Retry-After`).
    Throttled(Duration),
    /// The sink refuses the data as malformed.
    Malformed,
    /// The write lands after this long.
    SlowOk(Duration),
    /// The write never ends.
    Hang,
}

/// A scripted sink: answers each call with the next step, then with success
/// once the script is over. Records when each call started and how many
/// calls were in flight at once.
struct FakeSink {
    origin: Instant,
    script: Mutex<VecDeque<Step>>,
    calls_at: Mutex<Vec<Duration>>,
    in_flight: AtomicU32,
    in_flight_max: AtomicU32,
}

impl FakeSink {
    fn new(script: impl IntoIterator<Item = Step>) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            script: Mutex::new(script.into_iter().collect()),
            calls_at: Mutex::new(Vec::new()),
            in_flight: AtomicU32::new(0),
            in_flight_max: AtomicU32::new(0),
        })
    }

    async fn write(&self) -> Result<usize, Error> {
        let step = self.script.lock().expect("script").pop_front();
        let call = {
            let mut calls_at = self.calls_at.lock().expect("calls");
            calls_at.push(self.origin.elapsed());
            calls_at.len()
        };
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.in_flight_max.fetch_max(in_flight, Ordering::SeqCst);
        let result = match step {
            Some(Step::Down) => Err(Error::Unavailable {
                store: "fake",
                message: "connection refused".into(),
            }),
            Some(Step::Throttled(retry_after)) => Err(Error::Throttled {
                store: "fake",
                message: "429 Too Many Requests".into(),
                retry_after,
            }),
            Some(Step::Malformed) => Err(Error::Rejected {
                store: "fake",
                message: "bad line protocol".into(),
            }),
            Some(Step::SlowOk(took)) => {
                tokio::time::sleep(took).await;
                Ok(call)
            }
            Some(Step::Hang) => std::future::pending().await,
            None => Ok(call),
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn calls_at(&self) -> Vec<Duration> {
        self.calls_at.lock().expect("calls").clone()
    }

    fn calls(&self) -> usize {
        self.calls_at().len()
    }

    fn gaps(&self) -> Vec<Duration> {
        self.calls_at().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// One guarded write; a write still going after two minutes of (paused)
/// time fails the test instead of hanging it.
async fn write_through(guard: &SinkGuard, sink: &Arc<FakeSink>) -> Result<usize, SinkFailure> {
    tokio::time::timeout(Duration::from_secs(120), guard.call(|| sink.write()))
        .await
        .expect("the guarded write ends")
}

fn spawn_write(
    guard: &SinkGuard,
    sink: &Arc<FakeSink>,
) -> tokio::task::JoinHandle<Result<usize, SinkFailure>> {
    let (guard, sink) = (guard.clone(), Arc::clone(sink));
    tokio::spawn(async move { write_through(&guard, &sink).await })
}

fn assert_between(what: &str, value: Duration, low: Duration, high: Duration) {
    assert!(
        low <= value && value <= high,
        "{what}: {value:?} not within [{low:?}, {high:?}]"
    );
}

// ---- transient failures ----

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_until_the_sink_answers() {
    let guard = guard("time_series", RetryPolicy::default());
    let sink = FakeSink::new([Step::Down, Step::Down, Step::Down]);

    let written = write_through(&guard, &sink).await.expect("written");

    assert_eq!(written, 4, "three failures, then the write that landed");
    // Waits grow from backoff_min; each lies in [base, 2 × base) (+1 ms timer granularity).
    let gaps = sink.gaps();
    assert_between("1st wait", gaps[0], ms(50), ms(101));
    assert_between("2nd wait", gaps[1], ms(100), ms(201));
    assert_between("3rd wait", gaps[2], ms(200), ms(401));
    assert_eq!(
        guard.health().snapshot(),
        SinkHealthSnapshot {
            transient_failures: 3,
            rejections: 0,
            breaker_opens: 0,
            consecutive_failures: 0,
            breaker: BreakerState::Closed,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_grow_and_stay_capped_during_a_long_outage() {
    let policy = RetryPolicy {
        backoff_max: ms(400),
        breaker_failures: 1_000,
        ..RetryPolicy::default()
    };
    let guard = guard("documents", policy);
    let sink = FakeSink::new([Step::Down; 30]);

    write_through(&guard, &sink).await.expect("written");

    let gaps = sink.gaps();
    assert_eq!(gaps.len(), 30);
    for (i, gap) in gaps.iter().enumerate() {
        assert_between(&format!("wait {i}"), *gap, ms(50), ms(401));
    }
    // Past the cap the base wait is half of backoff_max, jittered up to backoff_max.
    for (i, gap) in gaps.iter().enumerate().skip(5) {
        assert_between(&format!("capped wait {i}"), *gap, ms(199), ms(401));
    }
    assert_eq!(guard.health().snapshot().transient_failures, 30);
}

#[tokio::test(start_paused = true)]
async fn a_servers_retry_after_is_waited_out_before_the_next_attempt() {
    let guard = guard("time_series", RetryPolicy::default());
    let sink = FakeSink::new([Step::Throttled(Duration::from_secs(3)), Step::Down]);

    write_through(&guard, &sink).await.expect("written");

    let gaps = sink.gaps();
    // The server's 3 s, not the first backoff wait of 50-100 ms; then the
    // backoff again for a failure that asks nothing.
    assert_between(
        "after Retry-After",
        gaps[0],
        Duration::from_secs(3),
        ms(3_001),
    );
    assert_between("after a plain failure", gaps[1], ms(100), ms(201));
}

#[tokio::test(start_paused = true)]
async fn the_last_failure_is_kept_until_the_sink_answers() {
    let guard = guard("documents", RetryPolicy::default());
    let sink = FakeSink::new([Step::Down, Step::Hang]);
    let writing = spawn_write(&guard, &sink);
    while sink.calls() < 2 {
        tokio::time::sleep(ms(10)).await;
    }
    let error = guard.health().last_error().expect("a failure is kept");
    assert!(error.contains("connection refused"), "{error}");
    writing.abort();

    write_through(&guard, &sink).await.expect("written");
    assert_eq!(guard.health().last_error(), None, "cleared by an answer");
}

// ---- rejections ----

#[tokio::test(start_paused = true)]
async fn a_rejected_write_is_retried_a_bounded_number_of_times_then_given_up() {
    let guard = guard("documents", RetryPolicy::default());
    let sink = FakeSink::new([Step::Malformed; 10]);

    let failure = write_through(&guard, &sink).await.expect_err("rejected");

    let SinkFailure::Rejected {
        sink: name,
        attempts,
        last,
    } = failure;
    assert_eq!((name, attempts), ("documents", 3));
    assert!(matches!(last, Error::Rejected { .. }), "{last}");
    assert_eq!(sink.calls(), 3);
    let health = guard.health().snapshot();
    assert_eq!((health.rejections, health.transient_failures), (3, 0));
    assert_eq!(health.breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_between_rejections_do_not_reset_the_rejection_count() {
    let guard = guard("archive", RetryPolicy::default());
    let sink = FakeSink::new([
        Step::Malformed,
        Step::Down,
        Step::Malformed,
        Step::Down,
        Step::Malformed,
    ]);

    let SinkFailure::Rejected { attempts, .. } =
        write_through(&guard, &sink).await.expect_err("rejected");

    assert_eq!(attempts, 3);
    assert_eq!(sink.calls(), 5);
    let health = guard.health().snapshot();
    assert_eq!((health.rejections, health.transient_failures), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_batch_does_not_block_the_next_one() {
    let guard = guard("time_series", RetryPolicy::default());
    let sink = FakeSink::new([Step::Malformed; 3]);
    write_through(&guard, &sink).await.expect_err("rejected");

    let started = Instant::now();
    write_through(&guard, &sink)
        .await
        .expect("next batch written");

    assert_eq!(started.elapsed(), Duration::ZERO);
}

// ---- breaker ----

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_consecutive_transient_failures_and_no_call_is_made_while_open() {
    let guard = guard("time_series", breaker_after(3));
    let health = guard.health();
    let sink = FakeSink::new([Step::Down; 3]);

    let write = spawn_write(&guard, &sink);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let opened_at = sink.calls_at()[2];
    let snapshot = health.snapshot();
    assert_eq!(sink.calls(), 3);
    assert_eq!(
        (snapshot.breaker_opens, snapshot.consecutive_failures),
        (1, 3)
    );
    let BreakerState::Open { until_ms } = snapshot.breaker else {
        panic!("breaker not open: {snapshot:?}");
    };
    let open_for_ms = until_ms - START_MS - i64::try_from(opened_at.as_millis()).expect("ms");
    assert!((9_998..=10_000).contains(&open_for_ms), "{open_for_ms}");

    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(sink.calls(), 3, "no call while the breaker is open");

    assert_eq!(write.await.expect("joined").expect("written"), 4);
    assert_between("open period", sink.gaps()[2], ms(9_999), ms(10_002));
    assert_eq!(health.snapshot().breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_trial_success_closes_the_breaker() {
    let guard = guard("documents", breaker_after(2));
    let health = guard.health();
    let sink = FakeSink::new([Step::Down, Step::Down, Step::SlowOk(ms(500))]);

    let write = spawn_write(&guard, &sink);
    // The trial starts 10 s after the breaker opened and takes 500 ms.
    tokio::time::sleep(ms(10_300)).await;
    assert_eq!(sink.calls(), 3);
    assert_eq!(health.snapshot().breaker, BreakerState::HalfOpen);

    write.await.expect("joined").expect("written");
    assert_eq!(
        health.snapshot(),
        SinkHealthSnapshot {
            transient_failures: 2,
            rejections: 0,
            breaker_opens: 1,
            consecutive_failures: 0,
            breaker: BreakerState::Closed,
        }
    );
    // Closed again: the next write goes straight through.
    let started = Instant::now();
    write_through(&guard, &sink).await.expect("written");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn half_open_trial_failure_reopens_the_breaker() {
    let guard = guard("archive_staging", breaker_after(3));
    let health = guard.health();
    let sink = FakeSink::new([Step::Down; 4]);

    let write = spawn_write(&guard, &sink);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let snapshot = health.snapshot();
    assert_eq!(sink.calls(), 4, "three failures and one failed trial");
    assert_eq!(snapshot.breaker_opens, 2);
    assert!(
        matches!(snapshot.breaker, BreakerState::Open { .. }),
        "{snapshot:?}"
    );

    write.await.expect("joined").expect("written");
    let gaps = sink.gaps();
    assert_between("first open period", gaps[2], ms(9_999), ms(10_002));
    assert_between("second open period", gaps[3], ms(9_999), ms(10_002));
    assert_eq!(health.snapshot().breaker, BreakerState::Closed);
    assert_eq!(health.snapshot().breaker_opens, 2);
}

#[tokio::test(start_paused = true)]
async fn callers_wait_for_the_one_trial_while_half_open() {
    let guard = guard("time_series", breaker_after(3));
    let sink = FakeSink::new([Step::Down, Step::Down, Step::Down, Step::SlowOk(ms(1_000))]);

    let first = spawn_write(&guard, &sink);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let others: Vec<_> = (0..3).map(|_| spawn_write(&guard, &sink)).collect();
    first.await.expect("joined").expect("written");
    for other in others {
        other.await.expect("joined").expect("written");
    }

    let calls_at = sink.calls_at();
    assert_eq!(
        calls_at.len(),
        7,
        "three failures, one trial, three waiting writes"
    );
    assert_eq!(sink.in_flight_max.load(Ordering::SeqCst), 1);
    // The waiting writes went as soon as the trial's second was over.
    for (i, at) in calls_at.iter().enumerate().skip(4) {
        assert_between(
            &format!("call {i}"),
            *at,
            calls_at[3] + ms(1_000),
            calls_at[3] + ms(1_001),
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_trial_hands_the_trial_to_the_next_caller() {
    let guard = guard("documents", breaker_after(3));
    let sink = FakeSink::new([Step::Down, Step::Down, Step::Down, Step::Hang]);

    let (g, s) = (guard.clone(), Arc::clone(&sink));
    let abandoned = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(12), write_through(&g, &s)).await
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let next = spawn_write(&guard, &sink);

    assert!(
        abandoned.await.expect("joined").is_err(),
        "the trial hangs until cancelled"
    );
    next.await.expect("joined").expect("written");
    let calls_at = sink.calls_at();
    assert_eq!(calls_at.len(), 5);
    // The next caller tried as soon as the hung trial was dropped, not one open period later.
    assert_between(
        "next trial",
        calls_at[4],
        Duration::from_secs(12),
        ms(12_001),
    );
    assert_eq!(guard.health().snapshot().breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn health_snapshot_reflects_failures_rejections_and_breaker_opens() {
    let guard = guard("dead_letters", breaker_after(2));
    let health = guard.health();
    assert_eq!(
        health.snapshot(),
        SinkHealthSnapshot {
            transient_failures: 0,
            rejections: 0,
            breaker_opens: 0,
            consecutive_failures: 0,
            breaker: BreakerState::Closed,
        }
    );
    // Two failures open the breaker; the trial is answered with a rejection,
    // which closes it (the sink is up); two more rejections give the write up.
    let sink = FakeSink::new([
        Step::Down,
        Step::Down,
        Step::Malformed,
        Step::Malformed,
        Step::Malformed,
    ]);

    write_through(&guard, &sink).await.expect_err("rejected");

    assert_eq!(
        health.snapshot(),
        SinkHealthSnapshot {
            transient_failures: 2,
            rejections: 3,
            breaker_opens: 1,
            consecutive_failures: 0,
            breaker: BreakerState::Closed,
        }
    );
}

#[test]
fn breaker_state_round_trips_through_the_health_word() {
    for state in [
        BreakerState::Closed,
        BreakerState::HalfOpen,
        BreakerState::Open { until_ms: 0 },
        BreakerState::Open { until_ms: START_MS },
    ] {
        assert_eq!(decode_state(encode_state(state)), state);
    }
}

#[test]
fn a_guarded_call_can_run_on_any_worker() {
    fn assert_send<T: Send>(_: &T) {}
    let guard = SinkGuard::new(
        "time_series",
        RetryPolicy::default(),
        Arc::new(ManualClock::new(START_MS)),
    );
    let sink = FakeSink::new([]);
    assert_send(&write_through(&guard, &sink));
}

// ---- the backoff schedule ----

#[test]
fn backoff_waits_grow_from_min_and_are_capped_at_max() {
    let policy = RetryPolicy::default();
    let waits: Vec<_> = backoff_waits(&policy, 7).take(40).collect();
    for (i, wait) in waits.iter().enumerate() {
        let base = (policy.backoff_min * 2u32.pow(u32::try_from(i.min(20)).expect("small")))
            .min(policy.backoff_max / 2);
        assert_between(
            &format!("wait {i}"),
            *wait,
            base - ms(1),
            (base * 2).min(policy.backoff_max),
        );
    }
}

#[test]
fn backoff_waits_never_end_and_keep_within_the_cap() {
    let policy = RetryPolicy::default();
    let tail: Vec<_> = backoff_waits(&policy, 1).skip(10_000).take(100).collect();
    assert_eq!(tail.len(), 100);
    for wait in tail {
        assert_between(
            "late wait",
            wait,
            policy.backoff_max / 2 - ms(1),
            policy.backoff_max,
        );
    }
}

#[test]
fn a_seed_replays_the_same_waits_and_another_seed_does_not() {
    let policy = RetryPolicy::default();
    let waits = |seed| backoff_waits(&policy, seed).take(20).collect::<Vec<_>>();
    assert_eq!(waits(42), waits(42));
    assert_ne!(waits(42), waits(43));
}

#[test]
fn every_call_and_every_sink_gets_its_own_jitter() {
    let seed = |sink, call| call_jitter_seed(5, sink, call);
    assert_eq!(seed("time_series", 0), seed("time_series", 0));
    assert_ne!(seed("time_series", 0), seed("time_series", 1));
    assert_ne!(seed("time_series", 0), seed("documents", 0));
    assert_ne!(
        call_jitter_seed(5, "archive", 0),
        call_jitter_seed(6, "archive", 0)
    );
}

#[test]
fn out_of_range_policy_values_are_brought_into_range() {
    let policy = RetryPolicy {
        backoff_min: Duration::ZERO,
        backoff_max: Duration::ZERO,
        rejected_attempts_max: 0,
        breaker_failures: 0,
        ..RetryPolicy::default()
    }
    .sanitized();
    assert_eq!((policy.backoff_min, policy.backoff_max), (ms(1), ms(1)));
    assert_eq!(
        (policy.rejected_attempts_max, policy.breaker_failures),
        (1, 1)
    );
    assert!(backoff_waits(&policy, 0).take(50).all(|wait| wait == ms(1)));
}
