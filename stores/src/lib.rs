//! Store adapters behind small traits, in the style of the `object_store`
//! crate: one trait per kind of store, one module per backend.
//!
//! - [`TimeSeriesStore`]: minute points keyed `(device, metric, minute)`.
//! - [`DocumentStore`]: per-minute device documents and threshold events,
//!   stable ids, 168 h retention.
//! - [`DeadLetterStore`]: refused readings with their reasons, for inspection
//!   and replay.
//! - [`ArchiveStaging`] + [`archive::ParquetArchive`]: hourly Parquet files in
//!   two object stores (one per AZ) with a manifest, through `object_store`.
//! - [`CheckpointStore`]: the devices' sequencing state as of one log
//!   position (node-local, embedded only).
//!
//! Every write is idempotent: writing the same key twice leaves one copy.
//! The embedded backends (SQLite via `rusqlite`, local filesystem) live in
//! [`embedded`]; the production ones in [`influxdb`] (time series),
//! [`mongodb`] (documents) and [`s3`] (the archive's buckets).
//!
//! An embedded store holds one node's share; a server (InfluxDB, MongoDB)
//! is *shared* by every node of a cluster. Each node writes its share of a
//! minute under its own key there (the node is part of the key), so two
//! nodes that both sequenced part of one minute (a failover in the middle
//! of it) never overwrite each other, and a read merges the shares.

pub mod archive;
pub mod blocking;
pub mod embedded;
pub mod error;
pub mod influxdb;
pub mod merge;
pub mod model;
pub mod mongodb;
pub mod s3;

use async_trait::async_trait;

pub use blocking::{Blocking, StoreFault};
pub use error::{Error, Result};
pub use model::*;

/// Which devices a "latest" query covers.
#[derive(Clone, Debug, Default)]
pub struct LatestFilter {
    pub device: Option<DeviceId>,
    pub kind: Option<DeviceKind>,
    /// At most this many values; 0 = the backend's default (1000).
    pub limit: u32,
}

/// What a query's `limit` of 0 stands for.
pub const QUERY_LIMIT_DEFAULT: u32 = 1000;

/// A query's limit, with 0 meaning [`QUERY_LIMIT_DEFAULT`].
pub fn query_limit(limit: u32) -> u32 {
    if limit == 0 {
        QUERY_LIMIT_DEFAULT
    } else {
        limit
    }
}

/// Which minute points a [`TimeSeriesStore::minutes`] query returns; unset
/// fields match everything.
#[derive(Clone, Debug, Default)]
pub struct MinuteFilter {
    pub device: Option<DeviceId>,
    pub kind: Option<DeviceKind>,
    pub metric: Option<Metric>,
}

/// The latest value of one device's metric.
#[derive(Clone, Debug, PartialEq)]
pub struct LatestValue {
    pub device: DeviceId,
    pub kind: DeviceKind,
    pub metric: Metric,
    pub value: f64,
    pub ts_ms: UnixMs,
}

/// One window of a series query.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesPoint {
    pub window_start_ms: UnixMs,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub last: f64,
}

/// The plant's power flow in one minute.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerFlowMinute {
    pub minute_ms: UnixMs,
    /// Sum over electricity meters of each meter's mean power, kW.
    pub total_kw: f64,
    pub meters: u32,
}

/// Time-series sink: minute points per device and metric.
///
/// Writes and [`Self::point`] concern this node's share; the queries
/// (`latest`, `series`, `power_flow`, `minutes`) answer for every share the
/// store holds: one node's for an embedded store, the whole cluster's for a
/// [shared](Self::shared) one.
#[async_trait]
pub trait TimeSeriesStore: Send + Sync + 'static {
    /// Whether every node of a cluster writes to and reads this one store,
    /// so a cluster-wide answer reads it once instead of asking every node.
    fn shared(&self) -> bool {
        false
    }
    /// Upserts points; a point replaces any stored point with the same
    /// `(device, metric, minute_ms)`.
    async fn write_points(&self, points: &[MinutePoint]) -> Result<()>;
    /// The stored point for a key, if any (used to reopen a closed minute).
    async fn point(
        &self,
        device: &DeviceId,
        metric: Metric,
        minute_ms: UnixMs,
    ) -> Result<Option<MinutePoint>>;
    /// Latest value per device and metric, ordered by device then metric.
    async fn latest(&self, filter: &LatestFilter) -> Result<Vec<LatestValue>>;
    /// One device's metric over `[from_ms, to_ms)`, merged into windows of
    /// `window_minutes` (≥ 1) aligned to the epoch; ascending, empty windows
    /// omitted. Built from [`Self::minutes`], whose shares it merges.
    async fn series(
        &self,
        device: &DeviceId,
        metric: Metric,
        from_ms: UnixMs,
        to_ms: UnixMs,
        window_minutes: u32,
    ) -> Result<Vec<SeriesPoint>> {
        if window_minutes == 0 {
            return Err(Error::Rejected {
                store: "time series",
                message: "series window must be at least 1 minute".into(),
            });
        }
        let filter = MinuteFilter {
            device: Some(device.clone()),
            kind: None,
            metric: Some(metric),
        };
        let minutes = self.minutes(&filter, from_ms, to_ms).await?;
        Ok(merge::series_windows(
            minutes.into_iter().map(|p| (p.minute_ms, p.stats)),
            window_minutes,
        ))
    }
    /// Total power over all electricity meters per minute in `[from_ms, to_ms)`, ascending.
    async fn power_flow(&self, from_ms: UnixMs, to_ms: UnixMs) -> Result<Vec<PowerFlowMinute>>;
    /// The stored points matching `filter` with a minute in `[from_ms,
    /// to_ms)` and at least one reading, ordered by device, metric, minute:
    /// the raw shares that [`merge`] combines across nodes.
    async fn minutes(
        &self,
        filter: &MinuteFilter,
        from_ms: UnixMs,
        to_ms: UnixMs,
    ) -> Result<Vec<MinutePoint>>;
    /// The newest minute any stored point has (None when empty). Windows
    /// after it are new and need no read before their first write.
    async fn max_minute(&self) -> Result<Option<UnixMs>>;
}

/// Which events an events query returns.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub device: Option<DeviceId>,
    pub kind: Option<DeviceKind>,
    pub event_type: Option<EventType>,
    pub from_ms: Option<UnixMs>,
    pub to_ms: Option<UnixMs>,
    /// At most this many, newest first; 0 = the backend's default (1000).
    pub limit: u32,
}

/// Document sink: per-minute device documents and threshold events.
///
/// Minute documents are this node's share of a minute; events answer for
/// every share the store holds (see [`TimeSeriesStore`]).
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    /// Whether every node of a cluster writes to and reads this one store.
    fn shared(&self) -> bool {
        false
    }
    /// Upserts documents by id (replaces the whole document).
    async fn upsert_minute_docs(&self, docs: &[MinuteDoc]) -> Result<()>;
    async fn minute_doc(&self, device: &DeviceId, minute_ms: UnixMs) -> Result<Option<MinuteDoc>>;
    /// The newest minute any stored document has (None when empty).
    async fn max_minute(&self) -> Result<Option<UnixMs>>;
    /// Upserts events by id.
    async fn upsert_events(&self, events: &[Event]) -> Result<()>;
    /// Events matching the filter, newest first (by `ts_ms`, then id).
    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>>;
    /// Deletes documents and events whose time is before `cutoff_ms`; returns how many.
    async fn sweep_before(&self, cutoff_ms: UnixMs) -> Result<u64>;
}

/// Which dead letters a list or replay covers.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    pub reason: Option<DeadLetterReason>,
    pub device: Option<String>,
    /// Pending only unless set.
    pub include_replayed: bool,
    /// At most this many, newest first; 0 = the backend's default (1000).
    pub limit: u32,
}

/// The dead-letter office's storage.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Stores refused readings and returns the ids of the letters it stored
    /// now, in input order. A keyed letter whose key is already stored (or
    /// appears earlier in `letters`) is skipped and has no id in the result;
    /// unkeyed letters are always stored.
    async fn insert(&self, letters: &[NewDeadLetter]) -> Result<Vec<DeadLetterId>>;
    async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;
    /// Marks letters as replayed successfully at `at_ms` (they leave the pending set).
    async fn mark_replayed(&self, ids: &[DeadLetterId], at_ms: UnixMs) -> Result<()>;
    /// Records a replay that was refused again with a (possibly new) reason.
    async fn mark_refused_again(
        &self,
        id: DeadLetterId,
        reason: DeadLetterReason,
        detail: &str,
    ) -> Result<()>;
    /// Count per reason over all stored letters (pending and replayed), by reason name.
    async fn counts(&self) -> Result<Vec<(DeadLetterReason, u64)>>;
}

/// What [`CheckpointStore::load`] finds: the log position the checkpoint was
/// taken at and every device's state as of that position.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// None if no checkpoint was ever saved (replay the whole log).
    pub position: Option<u64>,
    /// Each device's encoded state, ordered by device.
    pub devices: Vec<(DeviceId, Vec<u8>)>,
}

/// The devices' sequencing state as of one log position, so a restarted node
/// rebuilds it by replaying only the log after that position.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The checkpoint's log position (None if never saved) and every device's encoded state.
    async fn load(&self) -> Result<Checkpoint>;
    /// Atomically: upserts `changed` device states and sets the position (all or nothing).
    async fn save(&self, position: u64, changed: &[(DeviceId, Vec<u8>)]) -> Result<()>;
}

/// One hour of one device kind: the unit of archiving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourKey {
    pub kind: DeviceKind,
    pub hour_ms: UnixMs,
}

/// Where the archiver keeps readings until their hour is sealed into Parquet.
/// Staging is what makes a re-run of an hour produce the same file: the file
/// is always written from every staged row of that hour.
#[async_trait]
pub trait ArchiveStaging: Send + Sync + 'static {
    /// Stages readings; idempotent by `(device, seq)`. Marks their hours dirty.
    async fn stage(&self, readings: &[Reading]) -> Result<()>;
    /// Hours with rows staged since they were last sealed, oldest first.
    async fn dirty_hours(&self) -> Result<Vec<HourKey>>;
    /// Every staged row of an hour, ordered by `(device, seq)`.
    async fn hour_rows(&self, hour: HourKey) -> Result<Vec<Reading>>;
    /// Records that `hour` was sealed with `rows` rows; it stays clean until
    /// new rows arrive for it.
    async fn mark_sealed(&self, hour: HourKey, rows: u64) -> Result<()>;
    /// Forgets staged rows of hours before `hour_ms` (already sealed or not).
    async fn purge_before(&self, hour_ms: UnixMs) -> Result<u64>;
}
