//! What a load run counted, and the report built from it: shared atomic
//! counters that workers bump and the progress line reads, and the final
//! [`LoadReport`] with ack-latency percentiles.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest ack latency recorded, in µs (one hour); slower acks are recorded
/// as this, which is plenty to show that something is wrong.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// An empty ack-latency histogram in µs with three significant figures.
/// Every histogram of a run comes from here, so they can be added up.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_US_MAX, 3) {
        Ok(histogram) => histogram,
        // The bounds are constants that hdrhistogram accepts.
        Err(e) => unreachable!("constant histogram bounds rejected: {e}"),
    }
}

/// Counters shared by the workers of one run; relaxed atomics because each
/// is an independent tally read only for display and at the end.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) readings_sent: AtomicU64,
    pub(crate) readings_resent: AtomicU64,
    pub(crate) readings_accepted: AtomicU64,
    pub(crate) readings_duplicate: AtomicU64,
    pub(crate) readings_dead_lettered: AtomicU64,
    pub(crate) batches_sent: AtomicU64,
    pub(crate) batches_acked: AtomicU64,
    pub(crate) batches_acked_replicated: AtomicU64,
    pub(crate) backoffs: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// The latest ack seen, in µs since the run started.
    last_ack_us: AtomicU64,
    /// The longest stretch without an ack so far, in µs.
    longest_ack_gap_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an error and keeps its text for the report.
    pub(crate) fn error(&self, text: String) {
        Self::add(&self.errors, 1);
        // A poisoned lock only means another worker panicked mid-write;
        // the text is a diagnostic, so losing it is acceptable.
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(text);
        }
    }

    /// Notes an ack `since_start_us` after the run started. Workers ack
    /// concurrently and may report slightly out of order, so the gap is
    /// measured from the latest ack seen before this one.
    pub(crate) fn ack_at(&self, since_start_us: u64) {
        let before = self
            .last_ack_us
            .fetch_max(since_start_us, Ordering::Relaxed);
        if since_start_us > before {
            self.longest_ack_gap_us
                .fetch_max(since_start_us - before, Ordering::Relaxed);
        }
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }

    pub(crate) fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            readings_sent: get(&self.readings_sent),
            readings_resent: get(&self.readings_resent),
            readings_accepted: get(&self.readings_accepted),
            readings_duplicate: get(&self.readings_duplicate),
            readings_dead_lettered: get(&self.readings_dead_lettered),
            batches_sent: get(&self.batches_sent),
            batches_acked: get(&self.batches_acked),
            batches_acked_replicated: get(&self.batches_acked_replicated),
            backoffs: get(&self.backoffs),
            errors: get(&self.errors),
            longest_ack_gap_us: get(&self.longest_ack_gap_us),
        }
    }
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) readings_sent: u64,
    pub(crate) readings_resent: u64,
    pub(crate) readings_accepted: u64,
    pub(crate) readings_duplicate: u64,
    pub(crate) readings_dead_lettered: u64,
    pub(crate) batches_sent: u64,
    pub(crate) batches_acked: u64,
    pub(crate) batches_acked_replicated: u64,
    pub(crate) backoffs: u64,
    pub(crate) errors: u64,
    pub(crate) longest_ack_gap_us: u64,
}

impl Totals {
    /// Readings the node answered for, whatever the answer.
    pub(crate) fn readings_acked(&self) -> u64 {
        self.readings_accepted
            .saturating_add(self.readings_duplicate)
            .saturating_add(self.readings_dead_lettered)
    }
}

/// The outcome of a load run. `--json` prints it with serde; `Display`
/// prints an aligned table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadReport {
    /// Readings put on a stream at least once (re-sends not counted again).
    pub readings_sent: u64,
    /// Readings sent again after a reconnect, with their original seqs.
    pub readings_resent: u64,
    /// Readings acknowledged: accepted + duplicate + dead-lettered.
    pub readings_acked: u64,
    /// Readings the node accepted.
    pub readings_accepted: u64,
    /// Readings the node dropped as already accepted (re-sends land here).
    pub readings_duplicate: u64,
    /// Readings the node refused to dead letters.
    pub readings_dead_lettered: u64,
    /// Batches sent at least once.
    pub batches_sent: u64,
    /// Batches acknowledged.
    pub batches_acked: u64,
    /// Of those, batches whose ack said `REPLICATED` (in the owner's log
    /// and a replica's in the other AZ); the rest were local only.
    pub batches_acked_replicated: u64,
    /// Times the node answered `RESOURCE_EXHAUSTED` (overload) and a worker
    /// backed off for the node's retry hint.
    pub backoffs: u64,
    /// Other failures (connect, stream reset, unexpected status).
    pub errors: u64,
    /// Wall time of the run, including the wait for outstanding acks.
    pub elapsed_s: f64,
    /// `readings_acked / elapsed_s`.
    pub acked_readings_per_s: f64,
    /// Median ack latency: from a batch's (last) send to its ack.
    pub ack_latency_p50_ms: f64,
    /// 99th percentile of the ack latency.
    pub ack_latency_p99_ms: f64,
    /// 99.9th percentile of the ack latency.
    pub ack_latency_p999_ms: f64,
    /// Slowest ack.
    pub ack_latency_max_ms: f64,
    /// The longest stretch, from the run's start to its last ack, in which
    /// no batch was acknowledged: how long the cluster stopped serving this
    /// client, e.g. while a killed node's devices failed over.
    pub longest_ack_gap_ms: f64,
    /// Lines written to the `--acks-out` file: one per reading of every
    /// acknowledged batch. Absent without `--acks-out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readings_acked_listed: Option<u64>,
    /// The last error's text, if there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A latency quantile of a µs histogram in ms; 0 when nothing was recorded.
pub(crate) fn quantile_ms(latency_us: &Histogram<u64>, quantile: f64) -> f64 {
    if latency_us.is_empty() {
        return 0.0;
    }
    latency_us.value_at_quantile(quantile) as f64 / 1_000.0
}

impl LoadReport {
    pub(crate) fn new(
        totals: &Totals,
        latency_us: &Histogram<u64>,
        elapsed: Duration,
        last_error: Option<String>,
    ) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        let readings_acked = totals.readings_acked();
        Self {
            readings_sent: totals.readings_sent,
            readings_resent: totals.readings_resent,
            readings_acked,
            readings_accepted: totals.readings_accepted,
            readings_duplicate: totals.readings_duplicate,
            readings_dead_lettered: totals.readings_dead_lettered,
            batches_sent: totals.batches_sent,
            batches_acked: totals.batches_acked,
            batches_acked_replicated: totals.batches_acked_replicated,
            backoffs: totals.backoffs,
            errors: totals.errors,
            elapsed_s,
            // JSON has no NaN or infinity: a zero-length run reports 0.
            acked_readings_per_s: if elapsed_s > 0.0 {
                readings_acked as f64 / elapsed_s
            } else {
                0.0
            },
            ack_latency_p50_ms: quantile_ms(latency_us, 0.50),
            ack_latency_p99_ms: quantile_ms(latency_us, 0.99),
            ack_latency_p999_ms: quantile_ms(latency_us, 0.999),
            ack_latency_max_ms: if latency_us.is_empty() {
                0.0
            } else {
                latency_us.max() as f64 / 1_000.0
            },
            longest_ack_gap_ms: totals.longest_ack_gap_us as f64 / 1_000.0,
            readings_acked_listed: None,
            last_error,
        }
    }
}

/// `1234567` as `1,234,567`: load numbers are big and read at a glance.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, String, &str); 18] = [
            ("elapsed", format!("{:.2}", self.elapsed_s), "s"),
            ("readings sent", grouped(self.readings_sent), ""),
            ("  re-sent", grouped(self.readings_resent), ""),
            ("readings acked", grouped(self.readings_acked), ""),
            ("  accepted", grouped(self.readings_accepted), ""),
            ("  duplicate", grouped(self.readings_duplicate), ""),
            ("  dead-lettered", grouped(self.readings_dead_lettered), ""),
            (
                "acked rate",
                format!("{:.1}", self.acked_readings_per_s),
                "readings/s",
            ),
            ("batches sent", grouped(self.batches_sent), ""),
            ("batches acked", grouped(self.batches_acked), ""),
            ("  replicated", grouped(self.batches_acked_replicated), ""),
            ("told to back off", grouped(self.backoffs), "times"),
            ("errors", grouped(self.errors), ""),
            (
                "ack latency p50",
                format!("{:.3}", self.ack_latency_p50_ms),
                "ms",
            ),
            (
                "ack latency p99",
                format!("{:.3}", self.ack_latency_p99_ms),
                "ms",
            ),
            (
                "ack latency p99.9",
                format!("{:.3}", self.ack_latency_p999_ms),
                "ms",
            ),
            (
                "ack latency max",
                format!("{:.3}", self.ack_latency_max_ms),
                "ms",
            ),
            (
                "longest ack gap",
                format!("{:.3}", self.longest_ack_gap_ms),
                "ms",
            ),
        ];
        for (label, value, unit) in &rows {
            let gap = if unit.is_empty() { "" } else { " " };
            writeln!(f, "{label:<20}{value:>16}{gap}{unit}")?;
        }
        if let Some(listed) = self.readings_acked_listed {
            writeln!(f, "{:<20}{:>16}", "acks listed", grouped(listed))?;
        }
        if let Some(error) = &self.last_error {
            writeln!(f, "{:<20}{error}", "last error")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies_ms(values_ms: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = latency_histogram();
        for ms in values_ms {
            h.saturating_record(ms * 1_000);
        }
        h
    }

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let h = latencies_ms(1..=1_000);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 1e-9;
        assert!(
            close(quantile_ms(&h, 0.5), 500.0),
            "{}",
            quantile_ms(&h, 0.5)
        );
        assert!(
            close(quantile_ms(&h, 0.99), 990.0),
            "{}",
            quantile_ms(&h, 0.99)
        );
        assert!(
            close(quantile_ms(&h, 0.999), 999.0),
            "{}",
            quantile_ms(&h, 0.999)
        );
        assert_eq!(quantile_ms(&latency_histogram(), 0.99), 0.0);
    }

    #[test]
    fn over_long_latencies_saturate_instead_of_failing() {
        let mut h = latency_histogram();
        h.saturating_record(u64::MAX);
        assert!(quantile_ms(&h, 1.0) >= 3_599_000.0);
    }

    /// Label width + value width in `Display`.
    const VALUE_END_COLUMN: usize = 36;

    #[test]
    fn report_adds_up_acks_and_divides_by_elapsed_time() {
        let totals = Totals {
            readings_sent: 10_000,
            readings_resent: 200,
            readings_accepted: 9_000,
            readings_duplicate: 150,
            readings_dead_lettered: 850,
            batches_sent: 100,
            batches_acked: 100,
            batches_acked_replicated: 100,
            backoffs: 2,
            errors: 1,
            longest_ack_gap_us: 1_500_000,
        };
        let report = LoadReport::new(
            &totals,
            &latencies_ms([2, 2, 2, 40]),
            Duration::from_secs(4),
            Some("connection refused".to_owned()),
        );
        assert_eq!(report.readings_acked, 10_000);
        assert_eq!(report.acked_readings_per_s, 2_500.0);
        assert!((report.ack_latency_p50_ms - 2.0).abs() < 0.01);
        assert!((report.ack_latency_max_ms - 40.0).abs() < 0.05);
        assert_eq!(report.backoffs, 2);
        assert_eq!(report.longest_ack_gap_ms, 1_500.0);

        let json = serde_json::to_value(&report).expect("report serializes");
        assert_eq!(json["readings_acked"], 10_000);
        assert_eq!(json["last_error"], "connection refused");

        let table = report.to_string();
        assert!(
            table.contains("readings acked                10,000"),
            "{table}"
        );
        assert!(table.contains("last error"));
        assert!(
            table.contains("told to back off                   2 times"),
            "{table}"
        );
        assert!(!table.contains("acks listed"), "{table}");

        let listed = LoadReport {
            readings_acked_listed: Some(10_000),
            ..report
        };
        let json = serde_json::to_value(&listed).expect("report serializes");
        assert_eq!(json["readings_acked_listed"], 10_000);
        let table = listed.to_string();
        assert!(
            table.contains("acks listed                   10,000"),
            "{table}"
        );
        // Values are right-aligned: each ends in the same column.
        for line in table.lines().filter(|l| !l.starts_with("last error")) {
            let end = line.chars().nth(VALUE_END_COLUMN - 1);
            assert!(end.is_some_and(|c| c.is_ascii_digit()), "{line:?}");
        }
    }

    #[test]
    fn an_empty_run_reports_zeros_not_nan() {
        let report = LoadReport::new(
            &Totals::default(),
            &latency_histogram(),
            Duration::ZERO,
            None,
        );
        assert_eq!(report.acked_readings_per_s, 0.0);
        assert_eq!(report.ack_latency_max_ms, 0.0);
        let json = serde_json::to_string(&report).expect("report serializes");
        assert!(
            !json.contains("null")
                && !json.contains("last_error")
                && !json.contains("readings_acked_listed"),
            "{json}"
        );
    }

    #[test]
    fn the_longest_ack_gap_is_measured_between_consecutive_acks() {
        let counters = Counters::default();
        // The first ack's gap counts from the run's start; a late report
        // (300 after 350) neither shrinks nor grows a gap.
        for at_us in [100, 350, 300, 1_000, 1_200] {
            counters.ack_at(at_us);
        }
        assert_eq!(counters.totals().longest_ack_gap_us, 650);
        counters.ack_at(5_000);
        assert_eq!(counters.totals().longest_ack_gap_us, 3_800);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
