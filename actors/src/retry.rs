//! Retrying a sink operation while its store is unavailable. The caller's
//! mailbox fills meanwhile, which is the backpressure that reaches `Ingest`.
//! A rejection (malformed data) is not retried.

use std::future::Future;
use std::time::Duration;

use vatio_stores::Error;

use crate::stats::NodeStats;

const FIRST_WAIT: Duration = Duration::from_millis(50);
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Runs `op` until it succeeds or fails with a non-transient error.
pub async fn while_transient<T, F, Fut>(
    what: &'static str,
    stats: &NodeStats,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut wait = FIRST_WAIT;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() => {
                NodeStats::add(&stats.sink_write_failures, 1);
                tracing::warn!(sink = what, error = %e, retry_in = ?wait, "sink unavailable");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
            }
            Err(e) => return Err(e),
        }
    }
}
