//! vatio's simulation harness. A deterministic single-node run, and whole
//! clusters ([`cluster`]). A seed decides a whole workload (devices, batches, corrupted,
//! duplicated, reordered and re-sent readings, injected actor crashes); the
//! real actor tree ingests it on embedded stores in a temporary directory
//! with a manual clock. Afterwards what the design's "Guarantees" promise of
//! one node (every sink holds each accepted reading exactly once, per-device
//! seq order, nothing lost, refusals kept with their reason, crashes cost
//! nothing, backpressure counted) is checked against the harness's own model
//! of the rules ([`check`] lists the checks). A failing seed replays exactly:
//!
//! ```sh
//! cargo run -p vatio-simulations --release -- --seeds 100 --crash-share 0.01
//! ```
//!
//! - [`workload`]: the seeded schedule and what should become of each reading.
//! - [`model`]: the expected end state, from the workload alone.
//! - [`mod@run`]: drives the workload through the node and reports.
//! - [`observe`]: reads the stores back.
//! - [`check`]: the guarantees, as checkers returning violations.
//! - [`trace`]: the run's fingerprint, to compare two runs of one seed.
//! - [`recording`]: instrumentation wrapper recording sink arrival order.
//!
//! [`cluster`] runs whole clusters (real nodes in two AZs) on turmoil's
//! simulated network and clock, with node crashes, AZ outages and
//! partitions drawn from a seed.

pub mod check;
pub mod cluster;
pub mod heap;
pub mod model;
pub mod observe;
pub mod recording;
pub mod run;
pub mod trace;
pub mod workload;

pub use check::Violation;
pub use run::{RunReport, RunStats, SimOptions, run};
