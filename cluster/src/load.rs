//! `vatio load`: a load generator that drives a node's `Ingest` service with
//! synthetic electricity-meter readings and reports throughput, ack latency
//! and how the node pushed back.
//!
//! `concurrency` workers each own a disjoint slice of the devices and one
//! gRPC connection with one bidirectional `Ingest` stream on it. A worker
//! keeps at most [`IN_FLIGHT_BATCHES_MAX`] batches un-acknowledged, matches
//! acks to batches by `batch_id`, and on `RESOURCE_EXHAUSTED` waits for the
//! node's retry hint, reopens the stream and re-sends what was not
//! acknowledged with the same seqs (the node dedupes by `(device, seq)`).
//! With [`LoadSpec::acks_out`] every acknowledged reading is also listed in
//! a file (see [`acks_out`](self::acks_out)), so a test can check afterwards
//! that the node kept what it acknowledged.
//! Unlike the node, the load tool is a client: it reads the wall clock.

mod acks_out;
mod report;
mod worker;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;
use tokio::time::Instant;

use self::acks_out::AcksOut;
pub use self::report::LoadReport;
use self::report::{Counters, latency_histogram};
use self::worker::WorkerPlan;
use crate::commands::{self, TlsArgs};

/// Batches a stream keeps un-acknowledged; the client side of backpressure.
pub const IN_FLIGHT_BATCHES_MAX: usize = 8;
/// Most readings per batch: keeps a request well under gRPC's 4 MiB default.
pub const BATCH_READINGS_MAX: u32 = 10_000;
/// Most parallel streams.
pub const CONCURRENCY_MAX: u32 = 1_024;
/// Most simulated devices: ids keep their six digits (`load-999999`).
pub const DEVICES_MAX: u32 = 1_000_000;

/// How long one TCP/HTTP2 connect may take before it counts as an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a dead connection while a stream waits for acks.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress line is refreshed.
const PROGRESS_REFRESH: Duration = Duration::from_millis(250);

/// What load to generate and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSpec {
    /// The node's gRPC address, e.g. `http://127.0.0.1:7400`.
    pub addr: String,
    /// TLS towards the node (`https://` addresses).
    pub tls: TlsArgs,
    /// Simulated devices (`load-000000`, ...), 1..=[`DEVICES_MAX`].
    pub devices: u32,
    /// Readings per second over all streams; `None` sends as fast as acks allow.
    /// Timestamps stay strictly increasing per device, so keep it at most
    /// 1 000 readings/s per device or they run ahead of the clock.
    pub rate: Option<u64>,
    /// Readings per batch, 1..=[`BATCH_READINGS_MAX`].
    pub batch: u32,
    /// How long to send; outstanding acks are awaited briefly afterwards.
    pub duration: Duration,
    /// Parallel streams, 1..=[`CONCURRENCY_MAX`]; capped at `devices` so that
    /// every stream owns at least one device.
    pub concurrency: u32,
    /// Seed of the readings' values.
    pub seed: u64,
    /// First seq each device sends. Runs against the same node need
    /// increasing starts, or the node rightly drops the second run's
    /// readings as duplicates (the CLI derives it from the wall clock).
    pub seq_start: u64,
    /// Show a live progress line on stderr.
    pub progress: bool,
    /// Append `{device_id} {seq}` for every reading of every acknowledged
    /// batch (accepted, duplicate or dead-lettered) to this file.
    pub acks_out: Option<PathBuf>,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:7400".to_owned(),
            tls: TlsArgs::default(),
            devices: 1_000,
            rate: None,
            batch: 100,
            duration: Duration::from_secs(30),
            concurrency: 4,
            seed: 1,
            seq_start: 1,
            progress: false,
            acks_out: None,
        }
    }
}

/// Why a [`LoadSpec`] cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadSpecError {
    /// A count is zero or above its limit.
    #[error("load {name} must be within 1..={max}, got {value}")]
    OutOfRange {
        /// The field.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Its upper limit.
        max: u64,
    },
    /// `rate` is `Some(0)`.
    #[error("load rate must be positive (omit it to send as fast as possible)")]
    ZeroRate,
    /// `duration` is zero.
    #[error("load duration must be positive")]
    ZeroDuration,
}

impl LoadSpec {
    /// Checks every field against its limit.
    pub fn validate(&self) -> Result<(), LoadSpecError> {
        for (name, value, max) in [
            ("devices", self.devices, DEVICES_MAX),
            ("batch", self.batch, BATCH_READINGS_MAX),
            ("concurrency", self.concurrency, CONCURRENCY_MAX),
        ] {
            if value == 0 || value > max {
                return Err(LoadSpecError::OutOfRange {
                    name,
                    value: u64::from(value),
                    max: u64::from(max),
                });
            }
        }
        if self.rate == Some(0) {
            return Err(LoadSpecError::ZeroRate);
        }
        if self.duration.is_zero() {
            return Err(LoadSpecError::ZeroDuration);
        }
        Ok(())
    }

    /// Streams actually opened: every stream owns at least one device.
    pub fn workers(&self) -> u32 {
        self.concurrency.min(self.devices).max(1)
    }
}

/// The id of load device number `n`.
pub fn device_id(n: u32) -> String {
    format!("load-{n:06}")
}

/// Device numbers owned by `worker` of `workers`: contiguous, disjoint
/// slices whose sizes differ by at most one.
pub(crate) fn worker_devices(devices: u32, workers: u32, worker: u32) -> Range<u32> {
    let slice = |w: u32| (u64::from(devices) * u64::from(w) / u64::from(workers.max(1))) as u32;
    slice(worker)..slice(worker + 1)
}

/// `worker`'s part of `total`: equal parts, the remainder going to the first
/// workers, so the parts add up to `total`.
pub(crate) fn share(total: u64, workers: u32, worker: u32) -> u64 {
    let workers = u64::from(workers.max(1));
    total / workers + u64::from(u64::from(worker) < total % workers)
}

/// Runs the load described by `spec` and reports what happened.
///
/// Errors for an invalid spec or address and when the `acks_out` file
/// cannot be written; failures while running (refused connections,
/// overload) are counted in the report instead.
pub async fn run(spec: LoadSpec) -> anyhow::Result<LoadReport> {
    spec.validate()?;
    let endpoint = commands::endpoint(&spec.addr, &spec.tls)
        .with_context(|| format!("node address {:?}", spec.addr))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);

    let (ack_sink, acks_out) = match &spec.acks_out {
        Some(path) => {
            let (sink, out) = AcksOut::open(path).await?;
            (Some(sink), Some(out))
        }
        None => (None, None),
    };

    let workers = spec.workers();
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let deadline = start + spec.duration;
    let progress = spec
        .progress
        .then(|| spawn_progress(Arc::clone(&counters), spec.duration));

    let mut handles = Vec::with_capacity(workers as usize);
    for index in 0..workers {
        let plan = WorkerPlan {
            index,
            devices: worker_devices(spec.devices, workers, index),
            rate: spec.rate.map(|rate| share(rate, workers, index)),
            batch: spec.batch,
            seed: spec.seed,
            seq_start: spec.seq_start,
            started: start,
            deadline,
        };
        // One connection per worker, so streams spread over the node's
        // connection handlers instead of sharing one HTTP/2 connection.
        let channel = endpoint.connect_lazy();
        handles.push(tokio::spawn(worker::run(
            plan,
            channel,
            Arc::clone(&counters),
            ack_sink.clone(),
        )));
    }
    // The workers hold the only senders now: the writer ends when they do.
    drop(ack_sink);

    let mut latency_us = latency_histogram();
    let mut joined = Ok(());
    for handle in handles {
        match handle.await {
            Ok(worker_latency_us) => {
                // Every histogram comes from `latency_histogram`, so the
                // bounds match and adding cannot fail.
                if let Err(e) = latency_us.add(&worker_latency_us) {
                    tracing::warn!(error = %e, "merging a worker's latencies failed");
                }
            }
            Err(e) => joined = Err(anyhow::anyhow!("a load worker failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    if let Some((bar, stop)) = progress {
        // The progress task may already be gone; nothing to do then.
        let _ = stop.send(());
        bar.finish_and_clear();
    }
    let acks_listed = match acks_out {
        Some(out) => Some(out.finish().await?),
        None => None,
    };
    joined?;
    let mut report = LoadReport::new(
        &counters.totals(),
        &latency_us,
        elapsed,
        counters.last_error(),
    );
    report.readings_acked_listed = acks_listed;
    Ok(report)
}

/// A progress bar over the run's duration showing acked readings and the
/// current ack rate; stops when the returned sender fires or is dropped.
fn spawn_progress(
    counters: Arc<Counters>,
    duration: Duration,
) -> (ProgressBar, oneshot::Sender<()>) {
    let length_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::new(length_ms);
    match ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}") {
        Ok(style) => bar.set_style(style),
        Err(e) => tracing::debug!(error = %e, "progress template rejected; using the default"),
    }
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let task_bar = bar.clone();
    tokio::spawn(async move {
        let start = Instant::now();
        let mut refresh = tokio::time::interval(PROGRESS_REFRESH);
        let mut acked_before = 0u64;
        let mut at_before = start;
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = refresh.tick() => {}
            }
            let now = Instant::now();
            let totals = counters.totals();
            let acked = totals.readings_acked();
            let dt_s = (now - at_before).as_secs_f64();
            let rate = if dt_s > 0.0 {
                acked.saturating_sub(acked_before) as f64 / dt_s
            } else {
                0.0
            };
            acked_before = acked;
            at_before = now;
            let elapsed_ms = u64::try_from((now - start).as_millis()).unwrap_or(u64::MAX);
            task_bar.set_position(elapsed_ms.min(length_ms));
            task_bar.set_message(format!(
                "{} acked  {:.0}/s  {} backoffs  {} errors",
                acked, rate, totals.backoffs, totals.errors
            ));
        }
    });
    (bar, stop_tx)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn devices_are_split_into_disjoint_covering_slices() {
        for (devices, workers) in [(1, 1), (10, 4), (1_000, 4), (7, 7), (1_000_000, 1_024)] {
            let mut next = 0;
            let mut sizes = HashSet::new();
            for w in 0..workers {
                let slice = worker_devices(devices, workers, w);
                assert_eq!(slice.start, next, "contiguous and disjoint");
                assert!(!slice.is_empty(), "every worker owns a device");
                sizes.insert(slice.len());
                next = slice.end;
            }
            assert_eq!(next, devices, "every device is owned");
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1));
        }
    }

    #[test]
    fn rate_shares_add_up() {
        for (total, workers) in [(1, 4), (10_000, 3), (7, 7), (u64::MAX, 1_024)] {
            let parts: Vec<u64> = (0..workers).map(|w| share(total, workers, w)).collect();
            let sum = parts.iter().fold(0u64, |a, b| a.saturating_add(*b));
            assert_eq!(sum, total);
            assert!(parts.windows(2).all(|p| p[0] >= p[1] && p[0] - p[1] <= 1));
        }
    }

    #[test]
    fn ids_have_six_digits() {
        assert_eq!(device_id(42), "load-000042");
        assert_eq!(device_id(DEVICES_MAX - 1), "load-999999");
    }

    #[test]
    fn specs_are_checked_against_their_limits() {
        assert_eq!(LoadSpec::default().validate(), Ok(()));
        let invalid = [
            LoadSpec {
                devices: 0,
                ..LoadSpec::default()
            },
            LoadSpec {
                batch: BATCH_READINGS_MAX + 1,
                ..LoadSpec::default()
            },
            LoadSpec {
                concurrency: 0,
                ..LoadSpec::default()
            },
            LoadSpec {
                rate: Some(0),
                ..LoadSpec::default()
            },
            LoadSpec {
                duration: Duration::ZERO,
                ..LoadSpec::default()
            },
        ];
        for spec in invalid {
            assert!(spec.validate().is_err(), "{spec:?}");
        }
        let few_devices = LoadSpec {
            devices: 3,
            concurrency: 8,
            ..LoadSpec::default()
        };
        assert_eq!(few_devices.workers(), 3);
    }

    #[tokio::test]
    async fn an_invalid_address_is_an_error() {
        let spec = LoadSpec {
            addr: "not a uri".to_owned(),
            ..LoadSpec::default()
        };
        assert!(run(spec).await.is_err());
    }
}
