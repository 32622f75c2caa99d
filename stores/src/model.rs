//! The shapes the sinks store: clean readings, minute points, documents,
//! events, dead letters. Shared by every backend and by the actors above.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type UnixMs = i64;

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// Start of the minute that contains `ts`.
pub fn minute_of(ts: UnixMs) -> UnixMs {
    ts.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Start of the hour that contains `ts`.
pub fn hour_of(ts: UnixMs) -> UnixMs {
    ts.div_euclid(HOUR_MS) * HOUR_MS
}

/// A device's stable identifier. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// What kind of device produced a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    ClimateSensor,
    RobotArm,
    ElectricityMeter,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 3] = [Self::ClimateSensor, Self::RobotArm, Self::ElectricityMeter];

    /// Stable name used in stores, paths and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClimateSensor => "climate_sensor",
            Self::RobotArm => "robot_arm",
            Self::ElectricityMeter => "electricity_meter",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every metric vatio knows, each with one canonical unit. Values are stored
/// in the canonical unit only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Air temperature, °C (climate sensors).
    Temperature,
    /// Relative humidity, % (climate sensors).
    Humidity,
    /// Vibration velocity, mm/s (robot arms).
    Vibration,
    /// Joint torque, N·m (robot arms).
    Torque,
    /// Motor temperature, °C (robot arms).
    MotorTemperature,
    /// Active power, kW (meters; robot arms may report their own draw too).
    Power,
    /// Energy counter, kWh, never decreasing (meters).
    Energy,
    /// Voltage, V (meters).
    Voltage,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Self::Temperature,
        Self::Humidity,
        Self::Vibration,
        Self::Torque,
        Self::MotorTemperature,
        Self::Power,
        Self::Energy,
        Self::Voltage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Temperature => "temperature",
            Self::Humidity => "humidity",
            Self::Vibration => "vibration",
            Self::Torque => "torque",
            Self::MotorTemperature => "motor_temperature",
            Self::Power => "power",
            Self::Energy => "energy",
            Self::Voltage => "voltage",
        }
    }

    /// The unit every stored value of this metric is in.
    pub fn canonical_unit(self) -> &'static str {
        match self {
            Self::Temperature | Self::MotorTemperature => "C",
            Self::Humidity => "%",
            Self::Vibration => "mm/s",
            Self::Torque => "Nm",
            Self::Power => "kW",
            Self::Energy => "kWh",
            Self::Voltage => "V",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated reading, value in the metric's canonical unit. This is what
/// flows to the sinks; `(device, seq)` identifies it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub device: DeviceId,
    pub kind: DeviceKind,
    pub seq: u64,
    pub ts_ms: UnixMs,
    pub metric: Metric,
    pub value: f64,
}

/// Statistics of one metric over one window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// Value of the reading with the greatest `(ts, seq)` in the window.
    pub last: f64,
    pub last_ts_ms: UnixMs,
    pub last_seq: u64,
}

impl Stats {
    pub fn of(r: &Reading) -> Self {
        Self {
            count: 1,
            min: r.value,
            max: r.value,
            sum: r.value,
            last: r.value,
            last_ts_ms: r.ts_ms,
            last_seq: r.seq,
        }
    }

    pub fn add(&mut self, r: &Reading) {
        self.count += 1;
        self.min = self.min.min(r.value);
        self.max = self.max.max(r.value);
        self.sum += r.value;
        if (r.ts_ms, r.seq) >= (self.last_ts_ms, self.last_seq) {
            self.last = r.value;
            self.last_ts_ms = r.ts_ms;
            self.last_seq = r.seq;
        }
    }

    /// Adds another window's readings of the same key: stats of disjoint
    /// reading sets (one node's share each) combine into the whole.
    pub fn merge(&mut self, other: &Stats) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        if (other.last_ts_ms, other.last_seq) >= (self.last_ts_ms, self.last_seq) {
            self.last = other.last;
            self.last_ts_ms = other.last_ts_ms;
            self.last_seq = other.last_seq;
        }
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Time-series point: one device's metric over one minute. Key:
/// `(device, metric, minute_ms)`; a write replaces the point with that key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinutePoint {
    pub device: DeviceId,
    pub kind: DeviceKind,
    pub metric: Metric,
    pub minute_ms: UnixMs,
    pub stats: Stats,
    /// Log position (end) of the last log record folded into this window; a
    /// record at or below it is already counted. 0 when unknown.
    #[serde(default)]
    pub log_pos: u64,
}

/// Document: one device's minute, all metrics. `_id` is `"{device}/{minute_ms}"`;
/// an upsert replaces the document with that id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinuteDoc {
    pub device: DeviceId,
    pub kind: DeviceKind,
    pub minute_ms: UnixMs,
    pub metrics: BTreeMap<Metric, Stats>,
    /// Log position (end) of the last log record folded into this window; a
    /// record at or below it is already counted. 0 when unknown.
    #[serde(default)]
    pub log_pos: u64,
}

impl MinuteDoc {
    pub fn id(&self) -> String {
        minute_doc_id(&self.device, self.minute_ms)
    }
}

pub fn minute_doc_id(device: &DeviceId, minute_ms: UnixMs) -> String {
    format!("{device}/{minute_ms}")
}

/// What a threshold event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Air or motor temperature above its limit.
    OverTemperature,
    /// Humidity above its limit.
    HighHumidity,
    /// A meter's power jumped far above its recent level.
    PowerSpike,
    /// A robot arm's vibration above its limit (bearing or gearbox fault).
    VibrationFault,
    /// A robot arm's torque magnitude above its limit (collision, jam).
    TorqueFault,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        Self::OverTemperature,
        Self::HighHumidity,
        Self::PowerSpike,
        Self::VibrationFault,
        Self::TorqueFault,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OverTemperature => "over_temperature",
            Self::HighHumidity => "high_humidity",
            Self::PowerSpike => "power_spike",
            Self::VibrationFault => "vibration_fault",
            Self::TorqueFault => "torque_fault",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// A threshold event. `_id` is `"{device}/{seq}/{event_type}"`: the same
/// reading always yields the same event id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub device: DeviceId,
    pub kind: DeviceKind,
    pub event_type: EventType,
    pub metric: Metric,
    pub value: f64,
    pub threshold: f64,
    pub ts_ms: UnixMs,
    pub seq: u64,
}

impl Event {
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.device, self.seq, self.event_type.as_str())
    }
}

/// A reading exactly as it arrived, before validation; what dead letters keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawReading {
    pub device_id: String,
    pub seq: u64,
    pub ts_ms: UnixMs,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    /// Wire value of `vatio.v1.DeviceKind` (0 = unspecified).
    pub kind: i32,
}

/// Why a reading was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// A required field is empty or zero (metric, unit, seq, ts, kind).
    MissingField,
    /// The metric is not one this device kind reports.
    UnknownMetric,
    /// The unit is not one the metric can be converted from.
    UnknownUnit,
    /// NaN or infinite value.
    NotFinite,
    /// Outside the metric's physical range for this device kind.
    OutOfRange,
    /// An energy counter went backwards.
    CounterDecreased,
    /// Timestamp further in the future than the allowed clock skew.
    FutureTimestamp,
    /// Timestamp older than the allowed age.
    StaleTimestamp,
    /// Arrived after the device's reorder window had moved past its seq.
    Late,
    /// The device reported a different kind than it was first seen with.
    KindMismatch,
    /// Crashed the actor that handled it repeatedly.
    Poison,
    /// A sink refused what was made of it (a minute point or document) as
    /// malformed after bounded attempts.
    SinkRejected,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 12] = [
        Self::MissingField,
        Self::UnknownMetric,
        Self::UnknownUnit,
        Self::NotFinite,
        Self::OutOfRange,
        Self::CounterDecreased,
        Self::FutureTimestamp,
        Self::StaleTimestamp,
        Self::Late,
        Self::KindMismatch,
        Self::Poison,
        Self::SinkRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingField => "missing_field",
            Self::UnknownMetric => "unknown_metric",
            Self::UnknownUnit => "unknown_unit",
            Self::NotFinite => "not_finite",
            Self::OutOfRange => "out_of_range",
            Self::CounterDecreased => "counter_decreased",
            Self::FutureTimestamp => "future_timestamp",
            Self::StaleTimestamp => "stale_timestamp",
            Self::Late => "late",
            Self::KindMismatch => "kind_mismatch",
            Self::Poison => "poison",
            Self::SinkRejected => "sink_rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused reading on its way into the dead-letter store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDeadLetter {
    pub reading: RawReading,
    pub reason: DeadLetterReason,
    /// Human-readable specifics, e.g. "humidity 130 % outside 0..=100".
    pub detail: String,
    /// Where it came from: the client's source label and peer address, or "replay".
    pub source: String,
    pub received_ms: UnixMs,
    /// Identity of the letter when it can be delivered more than once (e.g.
    /// `log:{position}:{index}`); inserting a letter whose key is already
    /// stored is a no-op.
    #[serde(default)]
    pub key: Option<String>,
}

/// Identifier of a stored dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetterId(pub u64);

/// A stored dead letter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: DeadLetterId,
    pub letter: NewDeadLetter,
    /// Set once a replay got the reading accepted.
    pub replayed_ms: Option<UnixMs>,
    pub replay_attempts: u32,
}
