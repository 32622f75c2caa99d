//! The whole cluster on turmoil's simulated network and clock: real nodes
//! in two AZs, gateways sending readings, and faults drawn from a seed
//! (node crashes, AZ outages, partitions between the AZs, one-way too,
//! slow links, clock skew, sink outages, slow sinks, log disk errors, power
//! losses that drop the log's unsynced writes). Afterwards every
//! acknowledged reading must be in exactly one node's archive, in seq
//! order, counted once by the time-series and document sinks, every ack
//! replicated, and the cluster converged.
//!
//! A seed replays exactly: nodes do their blocking work inline (one
//! thread), gossip draws from a generator seeded from the run's seed, and
//! turmoil seeds each host's tokio runtime. The gateways record every
//! call's outcome with its simulated time ([`ClusterReport::trace`]); two
//! runs of one seed, each in a fresh process, must record the same.
//!
//! - [`faults`]: the seed's fault schedule.
//! - [`net`]: the simulation's network (turmoil), as the node's `Network`.
//! - [`clock`]: the simulation's wall clock, as the node's `Clock`.
//! - [`sink`]: the fault-injecting time-series sink.
//! - [`power`]: the fault-injecting power supply of a node's log disk.
//! - [`buckets`]: the in-memory stand-in for a node's archive buckets.
//! - [`client`]: the gateways.
//! - [`mod@run`]: one run and its checks.

pub mod buckets;
pub mod client;
pub mod clock;
pub mod faults;
pub mod net;
pub mod power;
pub mod run;
pub mod sink;

pub use faults::FaultKind;
pub use run::{ClusterOptions, ClusterReport, HEAP_GROWTH_MAX, default_work_dir, run_cluster_in};
