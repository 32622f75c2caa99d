//! Wall-clock time as the simulation keeps it, per host, optionally skewed
//! (a node whose clock runs ahead or behind the others').

use vatio_actors::Clock;

pub struct SimClock {
    /// Added to the simulated time since the epoch.
    pub skew_ms: i64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = turmoil::since_epoch().unwrap_or_default();
        i64::try_from(since_epoch.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(self.skew_ms)
    }
}
