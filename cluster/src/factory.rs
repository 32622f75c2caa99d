//! A simulated plant for `vatio demo` and tests: climate sensors, robot arms
//! and electricity meters producing plausible readings, with a share of
//! defective readings and re-sent duplicates so that the node's validation,
//! dead letters and dedupe have something to do.
//!
//! The factory is deterministic: time is passed to [`Factory::tick`] and all
//! randomness comes from generators seeded from [`FactorySpec::seed`], so the
//! same seed and the same tick times give the same readings. Each device owns
//! its generator and consumes it once per reading period, which also makes the
//! output independent of how often `tick` is called.
//!
//! ```
//! use vatio_cluster::factory::{Factory, FactorySpec};
//!
//! let mut factory = Factory::new(FactorySpec::default()).expect("default spec is valid");
//! let first = factory.tick(1_700_000_000_000);
//! let next = factory.tick(1_700_000_001_000);
//! assert!(!first.is_empty() && !next.is_empty());
//! ```

mod signals;

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vatio_proto::v1::{DeviceKind, Reading};

use self::signals::{Arm, Climate, Meter, Sample};

/// Most devices one factory simulates; bounds memory and the size of a tick.
pub const DEVICES_MAX: u64 = 100_000;

/// Most reading periods one device replays in a single tick. A longer gap
/// (a paused process, a clock jump) is skipped rather than replayed, so one
/// tick never produces an unbounded burst.
pub const CATCH_UP_PERIODS_MAX: i64 = 3_600;

/// Readings a device remembers for re-sending as duplicates.
const RECENT_READINGS_MAX: usize = 16;

/// How far ahead a defective "future" timestamp lies: beyond any clock skew
/// the node tolerates.
const FUTURE_TS_OFFSET_MS: i64 = 2 * 86_400_000;

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorySpec {
    /// Humidity and temperature sensors (`climate-000`, ...).
    pub climate_sensors: u32,
    /// Robot arms (`arm-000`, ...).
    pub robot_arms: u32,
    /// Electricity meters (`meter-00`, ...).
    pub meters: u32,
    /// Seed of every random choice; the same seed replays the same plant.
    pub seed: u64,
    /// Share of readings made defective, in `[0, 1]`.
    pub bad_share: f64,
    /// Share of readings followed by a re-sent recent reading, in `[0, 1]`.
    pub duplicate_share: f64,
    /// Period of each device's readings, in milliseconds (> 0).
    pub interval_ms: i64,
    /// Seq of every device's first reading (>= 1). A node drops readings
    /// at or below a device's last seq, so a plant sending again to the
    /// same node starts above what it sent before.
    pub seq_start: u64,
}

impl Default for FactorySpec {
    fn default() -> Self {
        Self {
            climate_sensors: 20,
            robot_arms: 10,
            meters: 6,
            seed: 1,
            bad_share: 0.01,
            duplicate_share: 0.005,
            interval_ms: 1_000,
            seq_start: 1,
        }
    }
}

/// Why a [`FactorySpec`] cannot be simulated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FactorySpecError {
    /// A share is not a probability.
    #[error("factory {name} must be within 0..=1, got {value}")]
    Share {
        /// `bad_share` or `duplicate_share`.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The reading period is zero or negative.
    #[error("factory interval_ms must be positive, got {0}")]
    Interval(i64),
    /// A first seq of 0: seqs start at 1.
    #[error("factory seq_start must be at least 1")]
    SeqStart,
    /// More devices than [`DEVICES_MAX`].
    #[error("a factory simulates at most {DEVICES_MAX} devices, got {0}")]
    TooManyDevices(u64),
}

/// Counts of what a factory produced so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FactoryStats {
    /// Every reading returned by `tick`, defective and duplicates included.
    pub readings: u64,
    /// Readings made defective on purpose (each took its own seq).
    pub defective: u64,
    /// Re-sent copies of earlier readings (same seq as the original).
    pub duplicates: u64,
}

/// The ways a reading is made defective; each one is refused by a different
/// check of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defect {
    /// Relative humidity of 130 %: out of the metric's range.
    HumidityOverRange,
    /// A NaN value.
    NotANumber,
    /// A unit the node does not know.
    UnknownUnit,
    /// A timestamp two days ahead.
    FutureTimestamp,
    /// An empty metric name.
    MissingMetric,
}

impl Defect {
    /// Defects that fit every metric; humidity readings can also go over range.
    const ANY_METRIC: [Defect; 4] = [
        Defect::NotANumber,
        Defect::UnknownUnit,
        Defect::FutureTimestamp,
        Defect::MissingMetric,
    ];

    fn apply(self, reading: &mut Reading) {
        match self {
            Defect::HumidityOverRange => {
                reading.value = 130.0;
                reading.unit = "%".to_owned();
            }
            Defect::NotANumber => reading.value = f64::NAN,
            Defect::UnknownUnit => reading.unit = "furlongs".to_owned(),
            Defect::FutureTimestamp => reading.ts_unix_ms += FUTURE_TS_OFFSET_MS,
            Defect::MissingMetric => reading.metric.clear(),
        }
    }
}

#[derive(Clone, Debug)]
enum Model {
    Climate(Climate),
    Arm(Arm),
    Meter(Meter),
}

#[derive(Clone, Debug)]
struct Device {
    id: String,
    kind: DeviceKind,
    rng: SmallRng,
    model: Model,
    /// Seq of the next new reading; seqs start at 1 or above, as the wire
    /// API says.
    seq_next: u64,
    /// Where in the reading period this device reads, so that devices do not
    /// all report on the same millisecond.
    phase_ms: i64,
    /// Time of the next reading; `None` until the first tick fixes the start.
    due_ms: Option<i64>,
    recent: VecDeque<Reading>,
}

/// The simulated plant. Build it with [`Factory::new`], then call
/// [`Factory::tick`] with increasing times.
#[derive(Clone, Debug)]
pub struct Factory {
    spec: FactorySpec,
    devices: Vec<Device>,
    stats: FactoryStats,
    /// Scratch buffer reused across readings.
    samples: Vec<Sample>,
}

/// SplitMix64: spreads related inputs (seed, device number) over unrelated
/// generator seeds.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn device_rng(seed: u64, kind: DeviceKind, index: u32) -> SmallRng {
    let stream = ((kind as i32 as u64) << 32) | u64::from(index);
    SmallRng::seed_from_u64(splitmix64(seed ^ splitmix64(stream)))
}

impl Factory {
    /// Builds the plant described by `spec`.
    ///
    /// Some devices report in non-canonical units to exercise the node's
    /// conversion: every fifth climate sensor (`climate-004`, `-009`, ...)
    /// reports temperature in °F, every fourth arm (`arm-003`, ...) and every
    /// third meter (`meter-02`, ...) report power in W.
    pub fn new(spec: FactorySpec) -> Result<Self, FactorySpecError> {
        for (name, value) in [
            ("bad_share", spec.bad_share),
            ("duplicate_share", spec.duplicate_share),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FactorySpecError::Share { name, value });
            }
        }
        if spec.interval_ms <= 0 {
            return Err(FactorySpecError::Interval(spec.interval_ms));
        }
        if spec.seq_start == 0 {
            return Err(FactorySpecError::SeqStart);
        }
        let total =
            u64::from(spec.climate_sensors) + u64::from(spec.robot_arms) + u64::from(spec.meters);
        if total > DEVICES_MAX {
            return Err(FactorySpecError::TooManyDevices(total));
        }

        let mut devices = Vec::with_capacity(total as usize);
        let mut add = |kind: DeviceKind, index: u32, id: String| {
            let mut rng = device_rng(spec.seed, kind, index);
            let model = match kind {
                DeviceKind::ClimateSensor => Model::Climate(Climate::new(&mut rng, index % 5 == 4)),
                DeviceKind::RobotArm => Model::Arm(Arm::new(&mut rng, index % 4 == 3)),
                _ => Model::Meter(Meter::new(&mut rng, index % 3 == 2)),
            };
            let phase_ms = rng.random_range(0..spec.interval_ms);
            devices.push(Device {
                id,
                kind,
                rng,
                model,
                seq_next: spec.seq_start,
                phase_ms,
                due_ms: None,
                recent: VecDeque::with_capacity(RECENT_READINGS_MAX),
            });
        };
        for i in 0..spec.climate_sensors {
            add(DeviceKind::ClimateSensor, i, format!("climate-{i:03}"));
        }
        for i in 0..spec.robot_arms {
            add(DeviceKind::RobotArm, i, format!("arm-{i:03}"));
        }
        for i in 0..spec.meters {
            add(DeviceKind::ElectricityMeter, i, format!("meter-{i:02}"));
        }

        Ok(Self {
            spec,
            devices,
            stats: FactoryStats::default(),
            samples: Vec::with_capacity(4),
        })
    }

    /// The spec this factory was built from.
    pub fn spec(&self) -> &FactorySpec {
        &self.spec
    }

    /// Every device's id and kind, in a stable order.
    pub fn devices(&self) -> impl Iterator<Item = (&str, DeviceKind)> {
        self.devices.iter().map(|d| (d.id.as_str(), d.kind))
    }

    /// What the factory produced so far.
    pub fn stats(&self) -> FactoryStats {
        self.stats
    }

    /// Readings every device produced up to and including `now_ms` since the
    /// previous tick, ordered by when they were taken (a device's own
    /// readings stay in seq order).
    ///
    /// The first tick starts the plant: each device reports once, at its own
    /// phase within the period ending at `now_ms`. A time at or before the
    /// previous tick yields nothing.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Reading> {
        let interval_ms = self.spec.interval_ms;
        let mut taken: Vec<(i64, Reading)> = Vec::new();
        for device in &mut self.devices {
            let due = device
                .due_ms
                .get_or_insert(now_ms.saturating_sub(device.phase_ms));
            if *due <= now_ms {
                let behind = (now_ms - *due) / interval_ms;
                if behind >= CATCH_UP_PERIODS_MAX {
                    *due += (behind - CATCH_UP_PERIODS_MAX + 1) * interval_ms;
                }
            }
            while let Some(ts) = device.due_ms.filter(|due| *due <= now_ms) {
                device.due_ms = Some(ts + interval_ms);
                Self::read_device(
                    device,
                    &self.spec,
                    &mut self.samples,
                    &mut self.stats,
                    ts,
                    &mut taken,
                );
            }
        }
        // Stable: readings taken at the same time keep device and seq order.
        taken.sort_by_key(|(ts, _)| *ts);
        taken.into_iter().map(|(_, reading)| reading).collect()
    }

    /// One reading period of one device: a reading per metric, some made
    /// defective, some followed by a re-sent duplicate.
    fn read_device(
        device: &mut Device,
        spec: &FactorySpec,
        samples: &mut Vec<Sample>,
        stats: &mut FactoryStats,
        ts: i64,
        out: &mut Vec<(i64, Reading)>,
    ) {
        samples.clear();
        match &mut device.model {
            Model::Climate(m) => m.sample(&mut device.rng, ts, samples),
            Model::Arm(m) => m.sample(&mut device.rng, ts, spec.interval_ms, samples),
            Model::Meter(m) => m.sample(&mut device.rng, ts, spec.interval_ms, samples),
        }
        for sample in samples.iter() {
            let mut reading = Reading {
                device_id: device.id.clone(),
                seq: device.seq_next,
                ts_unix_ms: ts,
                metric: sample.metric.to_owned(),
                value: sample.value,
                unit: sample.unit.to_owned(),
                kind: device.kind as i32,
            };
            device.seq_next += 1;

            if device.rng.random_bool(spec.bad_share) {
                let defect = if sample.metric == "humidity" && device.rng.random_bool(0.2) {
                    Defect::HumidityOverRange
                } else {
                    Defect::ANY_METRIC[device.rng.random_range(0..Defect::ANY_METRIC.len())]
                };
                defect.apply(&mut reading);
                stats.defective += 1;
            }

            if device.recent.len() == RECENT_READINGS_MAX {
                device.recent.pop_front();
            }
            device.recent.push_back(reading.clone());
            out.push((ts, reading));
            stats.readings += 1;

            // A gateway that missed an ack re-sends something it already
            // sent: the reading just sent or one shortly before.
            if device.rng.random_bool(spec.duplicate_share) {
                let pick = device.rng.random_range(0..device.recent.len());
                if let Some(again) = device.recent.get(pick) {
                    out.push((ts, again.clone()));
                    stats.readings += 1;
                    stats.duplicates += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
