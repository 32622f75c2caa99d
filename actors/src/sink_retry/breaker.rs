//! The circuit breaker of one sink: a small state machine that takes time as
//! an argument, so a simulation replays it exactly from its seed. It knows
//! nothing of sleeping, logging or counters; [`super::SinkGuard`] does that.

/// Observable state of one sink's breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; consecutive transient failures are counted.
    Closed,
    /// The sink is considered down: no call is made before `until_ms`.
    Open { until_ms: i64 },
    /// The open period is over: one trial call decides.
    HalfOpen,
}

/// What a caller may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Call the sink.
    Call,
    /// Call the sink as the half-open trial: report the outcome (or abandon it).
    Trial,
    /// The breaker is open: ask again at `until_ms`.
    WaitUntil { until_ms: i64 },
    /// Another caller's trial is in flight: ask again once it has an outcome.
    WaitForTrial,
}

/// Opens after `failures_to_open` consecutive transient failures, stays open
/// for `open_for_ms`, then lets one trial call through: success (or any answer
/// from the sink, a rejection included) closes it, a transient failure
/// re-opens it for another `open_for_ms`.
#[derive(Clone, Debug)]
pub(crate) struct Breaker {
    failures_to_open: u32,
    open_for_ms: i64,
    consecutive_failures: u32,
    state: BreakerState,
    trial_in_flight: bool,
}

impl Breaker {
    /// `failures_to_open` below 1 is taken as 1; a negative `open_for_ms` as 0.
    pub(crate) fn new(failures_to_open: u32, open_for_ms: i64) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for_ms: open_for_ms.max(0),
            consecutive_failures: 0,
            state: BreakerState::Closed,
            trial_in_flight: false,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether a call may be made at `now_ms`. An open breaker whose period is
    /// over turns half-open here, and the first caller to ask gets the trial.
    pub(crate) fn admit(&mut self, now_ms: i64) -> Admission {
        if let BreakerState::Open { until_ms } = self.state {
            if now_ms < until_ms {
                return Admission::WaitUntil { until_ms };
            }
            self.state = BreakerState::HalfOpen;
        }
        match self.state {
            BreakerState::Closed => Admission::Call,
            BreakerState::HalfOpen if self.trial_in_flight => Admission::WaitForTrial,
            BreakerState::HalfOpen => {
                self.trial_in_flight = true;
                Admission::Trial
            }
            BreakerState::Open { until_ms } => Admission::WaitUntil { until_ms },
        }
    }

    /// The sink answered (the write succeeded, or it refused the data as
    /// malformed): it is up, so the breaker closes and the count restarts.
    pub(crate) fn on_answer(&mut self) {
        self.consecutive_failures = 0;
        self.trial_in_flight = false;
        self.state = BreakerState::Closed;
    }

    /// The sink failed transiently at `now_ms`; `trial` tells whether the call
    /// was the half-open trial (only the trial's outcome re-opens the breaker).
    pub(crate) fn on_transient_failure(&mut self, now_ms: i64, trial: bool) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let open = match self.state {
            // The trial failed: the sink is still down.
            BreakerState::HalfOpen => trial,
            BreakerState::Closed => self.consecutive_failures >= self.failures_to_open,
            // A call admitted before the breaker opened failed late: keep the period.
            BreakerState::Open { .. } => false,
        };
        if open {
            self.trial_in_flight = false;
            self.state = BreakerState::Open {
                until_ms: now_ms.saturating_add(self.open_for_ms),
            };
        }
    }

    /// The trial call ended without an outcome (its caller was cancelled):
    /// the next caller to ask makes the trial instead.
    pub(crate) fn abandon_trial(&mut self) {
        self.trial_in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR_MS: i64 = 10_000;

    fn opened_at(now_ms: i64) -> Breaker {
        let mut b = Breaker::new(3, OPEN_FOR_MS);
        for _ in 0..3 {
            assert_eq!(b.admit(now_ms), Admission::Call);
            b.on_transient_failure(now_ms, false);
        }
        b
    }

    #[test]
    fn opens_after_the_configured_consecutive_transient_failures() {
        let mut b = Breaker::new(3, OPEN_FOR_MS);
        b.on_transient_failure(0, false);
        b.on_transient_failure(1, false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
        b.on_transient_failure(2, false);
        assert_eq!(b.state(), BreakerState::Open { until_ms: 10_002 });
    }

    #[test]
    fn an_answer_restarts_the_count_of_consecutive_failures() {
        let mut b = Breaker::new(3, OPEN_FOR_MS);
        b.on_transient_failure(0, false);
        b.on_transient_failure(1, false);
        b.on_answer();
        b.on_transient_failure(2, false);
        b.on_transient_failure(3, false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
    }

    #[test]
    fn open_breaker_admits_no_call_until_its_period_is_over() {
        let mut b = opened_at(1_000);
        assert_eq!(b.admit(1_000), Admission::WaitUntil { until_ms: 11_000 });
        assert_eq!(b.admit(10_999), Admission::WaitUntil { until_ms: 11_000 });
        assert_eq!(b.admit(11_000), Admission::Trial);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_breaker_admits_one_trial_at_a_time() {
        let mut b = opened_at(0);
        assert_eq!(b.admit(OPEN_FOR_MS), Admission::Trial);
        assert_eq!(b.admit(OPEN_FOR_MS + 5), Admission::WaitForTrial);
        assert_eq!(b.admit(OPEN_FOR_MS + 50), Admission::WaitForTrial);
    }

    #[test]
    fn trial_success_closes_the_breaker() {
        let mut b = opened_at(0);
        assert_eq!(b.admit(OPEN_FOR_MS), Admission::Trial);
        b.on_answer();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.admit(OPEN_FOR_MS + 1), Admission::Call);
    }

    #[test]
    fn trial_failure_reopens_the_breaker_for_another_period() {
        let mut b = opened_at(0);
        assert_eq!(b.admit(12_000), Admission::Trial);
        b.on_transient_failure(12_500, true);
        assert_eq!(b.state(), BreakerState::Open { until_ms: 22_500 });
        assert_eq!(b.admit(22_499), Admission::WaitUntil { until_ms: 22_500 });
        assert_eq!(b.admit(22_500), Admission::Trial);
    }

    #[test]
    fn a_rejected_trial_closes_the_breaker_because_the_sink_answered() {
        let mut b = opened_at(0);
        assert_eq!(b.admit(OPEN_FOR_MS), Admission::Trial);
        b.on_answer();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_late_failure_of_a_call_admitted_before_opening_keeps_the_period() {
        let mut b = opened_at(0);
        b.on_transient_failure(4_000, false);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until_ms: OPEN_FOR_MS
            }
        );
    }

    #[test]
    fn only_the_trial_failure_reopens_a_half_open_breaker() {
        let mut b = opened_at(0);
        assert_eq!(b.admit(OPEN_FOR_MS), Admission::Trial);
        // A call admitted before the breaker opened fails late: not the trial.
        b.on_transient_failure(OPEN_FOR_MS + 1, false);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(OPEN_FOR_MS + 2), Admission::WaitForTrial);
        b.on_transient_failure(OPEN_FOR_MS + 3, true);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until_ms: 2 * OPEN_FOR_MS + 3
            }
        );
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_caller_try() {
        let mut b = opened_at(0);
        assert_eq!(b.admit(OPEN_FOR_MS), Admission::Trial);
        b.abandon_trial();
        assert_eq!(b.admit(OPEN_FOR_MS + 1), Admission::Trial);
    }

    #[test]
    fn zero_failures_to_open_is_taken_as_one() {
        let mut b = Breaker::new(0, OPEN_FOR_MS);
        assert_eq!(b.admit(0), Admission::Call);
        b.on_transient_failure(0, false);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until_ms: OPEN_FOR_MS
            }
        );
    }
}
