//! vatio's actor tree: the router and per-device actors, the dead-letter
//! office, and the subscribers that land readings in the sinks (aggregator →
//! time series, stream-ETL → documents, archiver → Parquet), under a node
//! supervisor. Device actors write every step to the node's write-ahead log
//! before they answer; subscribers read the log from their own positions. [`tree::ActorTree`] builds it and is the node's handle on it.
//!
//! Actors take time from the [`clock::Clock`] they are handed and never touch
//! the network; [`logic`] holds the pure rules they apply.

pub mod aggregator;
pub mod archiver;
pub mod checkpoint;
pub mod clock;
pub mod dead_letters;
pub mod device;
pub mod feed;
pub mod journal;
pub mod logic;
pub mod mailbox;
pub mod pipeline;
pub mod recovery;
pub mod rejects;
pub mod replication;
pub mod router;
pub mod sink_retry;
pub mod stats;
pub mod stream_etl;
pub mod supervision;
pub mod supervisor;
pub mod tree;
pub mod void;

pub use clock::{Clock, ManualClock, SharedClock};
pub use tree::cluster::{IncomingStep, Replicated};
pub use tree::{
    AckCounts, AckGuarantee, ActorTree, IngestError, RecoveryStatus, ReplayOutcome, ReplaySummary,
    SubscriberStatus, TreeError, TreeLog, TreeOptions, TreeStatus, TreeStores,
};
