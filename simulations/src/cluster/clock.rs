//! Wall-clock time as the simulation keeps it, per host, with the skew the
//! fault schedule sets (a node whose clock runs ahead of or behind the
//! others').

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use vatio_actors::Clock;

pub struct SimClock {
    /// Added to the simulated time since the epoch; the harness moves it.
    pub skew_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = turmoil::since_epoch().unwrap_or_default();
        i64::try_from(since_epoch.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(self.skew_ms.load(Ordering::Relaxed))
    }
}
