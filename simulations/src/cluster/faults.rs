//! The faults of one cluster run, drawn from its seed: what happens, to
//! whom, when, and when it heals. Every fault heals before the load ends,
//! so the run can check that the cluster converges afterwards.

use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::sink::SinkState;

/// The kinds of fault a run may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum FaultKind {
    /// One node is killed (its unsynced writes survive: the process dies,
    /// the machine does not) and restarted later.
    NodeCrash,
    /// Both AZs are cut off from each other; clients still reach every node.
    AzPartition,
    /// Messages from one AZ to the other are lost; the other way works.
    OneWayPartition,
    /// Every node of one AZ is killed, then restarted.
    AzOutage,
    /// One node's clock jumps ahead or behind the others' by up to 3 s.
    ClockSkew,
    /// Messages between the AZs take up to 300 ms instead of 5 ms.
    SlowLink,
    /// Links between any two hosts (nodes and gateways) break at random:
    /// each message breaks its link with a chance of 1 in 10, losing it and
    /// whatever else is in flight on that link (the next message repairs
    /// it), so losses come in bursts. The simulated TCP does not retransmit: a connection
    /// that loses a segment stalls until keepalive gives up on it, and the
    /// callers reconnect; an ack lost on its way makes the gateway send its
    /// batch again.
    MessageLoss,
    /// One node's time-series sink refuses every write.
    SinkOutage,
    /// One node's time-series sink takes 400 ms per write.
    SlowSink,
    /// One node's disk fails: every write and fsync of its log, and every
    /// call of its SQLite stores (time series, documents, dead letters,
    /// archive staging, device checkpoints), fails with an I/O error.
    DiskErrors,
    /// One node loses power: it is killed and its log loses every write
    /// not yet fsynced (its other files keep what reached them); restarted
    /// later.
    PowerLoss,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::NodeCrash,
        FaultKind::AzPartition,
        FaultKind::OneWayPartition,
        FaultKind::AzOutage,
        FaultKind::ClockSkew,
        FaultKind::SlowLink,
        FaultKind::MessageLoss,
        FaultKind::SinkOutage,
        FaultKind::SlowSink,
        FaultKind::DiskErrors,
        FaultKind::PowerLoss,
    ];
}

/// Longest message delay on a healthy link.
pub const LINK_MAX: Duration = Duration::from_millis(5);
/// Longest message delay between the AZs while the link is slow.
const SLOW_LINK_MAX: Duration = Duration::from_millis(300);
/// Per thousand messages, how many break their link while the network is
/// lossy (turmoil's `fail_rate`).
const LOSSY_LINK_PER_MILLE: u32 = 100;

/// One thing the harness does to the cluster at a moment of simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Crash(Vec<String>),
    /// Kills nodes and drops their logs' unsynced writes.
    PowerLoss(Vec<String>),
    Restart(Vec<String>),
    Partition {
        from: Vec<String>,
        to: Vec<String>,
        one_way: bool,
    },
    Repair {
        from: Vec<String>,
        to: Vec<String>,
        one_way: bool,
    },
    /// Sets a node's clock skew (0: back in step).
    Skew {
        node: String,
        ms: i64,
    },
    /// Makes a node's log writes fail (or work again).
    Disk {
        node: String,
        failing: bool,
    },
    /// Sets the condition of a node's time-series sink.
    Sink {
        node: String,
        state: SinkState,
    },
    /// Sets the longest delay of messages between two groups of hosts.
    Latency {
        a: Vec<String>,
        b: Vec<String>,
        max: Duration,
    },
    /// Sets how many messages per thousand are lost, between any two hosts
    /// (0: none).
    Loss {
        per_mille: u32,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Crash(h) => write!(f, "crash {}", h.join("+")),
            Action::PowerLoss(h) => write!(f, "power off {}", h.join("+")),
            Action::Restart(h) => write!(f, "restart {}", h.join("+")),
            Action::Partition { from, to, one_way } => {
                let arrow = if *one_way { "->" } else { "<->" };
                write!(f, "cut {} {arrow} {}", from.join("+"), to.join("+"))
            }
            Action::Repair { from, to, one_way } => {
                let arrow = if *one_way { "->" } else { "<->" };
                write!(f, "heal {} {arrow} {}", from.join("+"), to.join("+"))
            }
            Action::Skew { node, ms } => write!(f, "skew {node} {ms:+} ms"),
            Action::Sink { node, state } => write!(f, "sink {node} {state:?}"),
            Action::Disk { node, failing } => {
                write!(f, "disk {node} {}", if *failing { "failing" } else { "ok" })
            }
            Action::Latency { a, b, max } => {
                write!(f, "delay {} <-> {} up to {max:?}", a.join("+"), b.join("+"))
            }
            Action::Loss { per_mille } => write!(f, "break links at {per_mille}‰ of messages"),
        }
    }
}

/// A fault or its healing, at a simulated time since the run began (the
/// load begins at the warm-up's end).
#[derive(Clone, Debug)]
pub struct Scheduled {
    pub at: Duration,
    pub action: Action,
}

/// The run's faults in time order: `count` of the given kinds, each within
/// `[start, end)` of simulated time, none overlapping another.
pub fn plan(
    seed: u64,
    kinds: &[FaultKind],
    count: usize,
    azs: &[Vec<String>],
    start: Duration,
    end: Duration,
) -> Vec<Scheduled> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let mut out = Vec::new();
    if kinds.is_empty() || count == 0 || azs.len() < 2 {
        return out;
    }
    // Equal slots, one fault each, so a fault heals before the next begins.
    let slot = (end.saturating_sub(start)) / u32::try_from(count).unwrap_or(u32::MAX);
    for i in 0..count {
        let slot_start = start + slot * u32::try_from(i).unwrap_or(0);
        let kind = kinds[rng.random_range(0..kinds.len())];
        let lasts = slot.mul_f64(rng.random_range(0.3..0.7));
        let begins = slot_start + slot.mul_f64(rng.random_range(0.0..0.2));
        let heals = begins + lasts;
        let az = rng.random_range(0..azs.len());
        let other = (az + 1) % azs.len();
        let (fault, heal) = match kind {
            FaultKind::NodeCrash => {
                let nodes = &azs[az];
                let node = vec![nodes[rng.random_range(0..nodes.len())].clone()];
                (Action::Crash(node.clone()), Action::Restart(node))
            }
            FaultKind::PowerLoss => {
                let nodes = &azs[az];
                let node = vec![nodes[rng.random_range(0..nodes.len())].clone()];
                (Action::PowerLoss(node.clone()), Action::Restart(node))
            }
            FaultKind::AzOutage => (
                Action::Crash(azs[az].clone()),
                Action::Restart(azs[az].clone()),
            ),
            FaultKind::ClockSkew => {
                let nodes = &azs[az];
                let node = nodes[rng.random_range(0..nodes.len())].clone();
                let ms = rng.random_range(-3_000..=3_000);
                (
                    Action::Skew {
                        node: node.clone(),
                        ms,
                    },
                    Action::Skew { node, ms: 0 },
                )
            }
            FaultKind::DiskErrors => {
                let nodes = &azs[az];
                let node = nodes[rng.random_range(0..nodes.len())].clone();
                (
                    Action::Disk {
                        node: node.clone(),
                        failing: true,
                    },
                    Action::Disk {
                        node,
                        failing: false,
                    },
                )
            }
            FaultKind::SinkOutage | FaultKind::SlowSink => {
                let nodes = &azs[az];
                let node = nodes[rng.random_range(0..nodes.len())].clone();
                let state = if kind == FaultKind::SinkOutage {
                    SinkState::Down
                } else {
                    SinkState::Slow
                };
                (
                    Action::Sink {
                        node: node.clone(),
                        state,
                    },
                    Action::Sink {
                        node,
                        state: SinkState::Up,
                    },
                )
            }
            FaultKind::SlowLink => {
                let (a, b) = (azs[az].clone(), azs[other].clone());
                (
                    Action::Latency {
                        a: a.clone(),
                        b: b.clone(),
                        max: SLOW_LINK_MAX,
                    },
                    Action::Latency {
                        a,
                        b,
                        max: LINK_MAX,
                    },
                )
            }
            FaultKind::MessageLoss => (
                Action::Loss {
                    per_mille: LOSSY_LINK_PER_MILLE,
                },
                Action::Loss { per_mille: 0 },
            ),
            FaultKind::AzPartition | FaultKind::OneWayPartition => {
                let one_way = kind == FaultKind::OneWayPartition;
                let (from, to) = (azs[az].clone(), azs[other].clone());
                (
                    Action::Partition {
                        from: from.clone(),
                        to: to.clone(),
                        one_way,
                    },
                    Action::Repair { from, to, one_way },
                )
            }
        };
        out.push(Scheduled {
            at: begins,
            action: fault,
        });
        out.push(Scheduled {
            at: heals,
            action: heal,
        });
    }
    out
}
