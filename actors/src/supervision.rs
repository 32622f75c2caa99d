//! Restart policy shared by the supervisors: exponential backoff between
//! restarts and a budget of restarts per window. Pure; time comes in.

use std::collections::VecDeque;
use std::time::Duration;

use vatio_config::SupervisionConfig;

/// What a supervisor should do about a child that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many restarts inside the window: escalate.
    GiveUp,
}

/// Restart bookkeeping for one child.
#[derive(Clone, Debug)]
pub struct RestartBudget {
    max_restarts: usize,
    window_ms: i64,
    backoff_initial: Duration,
    backoff_max: Duration,
    recent_ms: VecDeque<i64>,
    consecutive: u32,
}

impl RestartBudget {
    pub fn new(cfg: &SupervisionConfig) -> Self {
        Self {
            max_restarts: cfg.max_restarts as usize,
            window_ms: i64::try_from(cfg.restart_window.as_millis()).unwrap_or(i64::MAX),
            backoff_initial: cfg.backoff_initial,
            backoff_max: cfg.backoff_max,
            recent_ms: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// Records a failure at `now_ms` and decides.
    pub fn on_failure(&mut self, now_ms: i64) -> RestartDecision {
        while let Some(first) = self.recent_ms.front() {
            if now_ms.saturating_sub(*first) >= self.window_ms {
                self.recent_ms.pop_front();
            } else {
                break;
            }
        }
        if self.recent_ms.len() >= self.max_restarts {
            return RestartDecision::GiveUp;
        }
        self.recent_ms.push_back(now_ms);
        let delay = self.backoff(self.consecutive);
        self.consecutive = self.consecutive.saturating_add(1);
        RestartDecision::RestartAfter(delay)
    }

    /// The child handled a message successfully: the next failure starts the
    /// backoff from the beginning again.
    pub fn on_success(&mut self) {
        self.consecutive = 0;
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SupervisionConfig {
        SupervisionConfig {
            max_restarts: 3,
            restart_window: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            poison_attempts: 3,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = RestartBudget::new(&cfg());
        assert_eq!(
            b.on_failure(0),
            RestartDecision::RestartAfter(Duration::from_millis(100))
        );
        assert_eq!(
            b.on_failure(1),
            RestartDecision::RestartAfter(Duration::from_millis(200))
        );
        assert_eq!(
            b.on_failure(2),
            RestartDecision::RestartAfter(Duration::from_millis(350))
        );
    }

    #[test]
    fn budget_is_per_window() {
        let mut b = RestartBudget::new(&cfg());
        for t in 0..3 {
            assert!(matches!(b.on_failure(t), RestartDecision::RestartAfter(_)));
        }
        assert_eq!(b.on_failure(5), RestartDecision::GiveUp);
        // The window slides: old restarts stop counting.
        assert!(matches!(
            b.on_failure(10_001),
            RestartDecision::RestartAfter(_)
        ));
    }

    #[test]
    fn success_resets_backoff() {
        let mut b = RestartBudget::new(&cfg());
        b.on_failure(0);
        b.on_failure(1);
        b.on_success();
        assert_eq!(
            b.on_failure(2),
            RestartDecision::RestartAfter(Duration::from_millis(100))
        );
    }
}
