//! Signal models of the simulated plant: one small state machine per device
//! kind that turns "this device reads now" into plausible values.
//!
//! The models take the reading's timestamp and a seeded generator and never
//! look at a clock, so a replay with the same seed and times is identical.
//! Time of day is the UTC time of day: the simulated plant runs on UTC.

use std::f64::consts::TAU;

use rand::Rng;
use rand::rngs::SmallRng;

/// One measured value before it becomes a wire `Reading`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) metric: &'static str,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
}

const MS_PER_HOUR: f64 = 3_600_000.0;
const MS_PER_DAY: i64 = 86_400_000;

/// Mean time between two fault episodes of one robot arm ("every few hours").
const ARM_FAULT_MEAN_GAP_MS: f64 = 3.0 * MS_PER_HOUR;
/// How long a fault episode lasts: long enough for a minute window to show it.
const ARM_FAULT_DURATION_MS: i64 = 60_000;
/// Motor temperature follows load with this time constant (a motor's thermal mass).
const MOTOR_THERMAL_TAU_MS: f64 = 10.0 * 60_000.0;
/// Mean time between two power spikes of one meter.
const METER_SPIKE_MEAN_GAP_MS: f64 = MS_PER_HOUR;
/// A spike multiplies the meter's power by this; above the node's spike factor.
const METER_SPIKE_FACTOR: f64 = 2.5;

/// Hour of the (UTC) day of `ts_unix_ms`, in `[0, 24)`.
pub(crate) fn hour_of_day(ts_unix_ms: i64) -> f64 {
    ts_unix_ms.rem_euclid(MS_PER_DAY) as f64 / MS_PER_HOUR
}

/// A standard normal draw (Box–Muller); `rand_distr` is not a dependency and
/// one cosine per draw is cheap next to building the reading.
pub(crate) fn gauss(rng: &mut SmallRng) -> f64 {
    // 1 - [0, 1) is (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// Rounds to `decimals` places, like a sensor's display resolution. Rounding
/// is monotone, so a rounded counter still never decreases.
fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Whether the production shifts run at `hour` (06:00–22:00).
fn shift_running(hour: f64) -> bool {
    (6.0..22.0).contains(&hour)
}

/// The plant's load as a fraction of nominal over the day: base load at night,
/// ramps at shift start and end, a dip over lunch. Linear between knots so the
/// curve has no jumps that would look like spikes.
pub(crate) fn plant_load(hour: f64) -> f64 {
    const KNOTS: [(f64, f64); 10] = [
        (0.0, 0.35),
        (5.5, 0.35),
        (6.25, 0.90),
        (11.75, 0.92),
        (12.1, 0.70),
        (12.9, 0.70),
        (13.25, 0.95),
        (21.75, 0.90),
        (22.5, 0.35),
        (24.0, 0.35),
    ];
    for pair in KNOTS.windows(2) {
        let (h0, l0) = pair[0];
        let (h1, l1) = pair[1];
        if hour >= h0 && hour <= h1 {
            return l0 + (l1 - l0) * (hour - h0) / (h1 - h0);
        }
    }
    KNOTS[0].1
}

/// A climate sensor: temperature with a daily cycle peaking mid-afternoon and
/// humidity moving against it.
#[derive(Clone, Debug)]
pub(crate) struct Climate {
    /// Where the sensor hangs: some corners run warmer than others.
    offset_c: f64,
    offset_pct: f64,
    /// Slow drift (AR(1)) shared by both metrics, like a draught or a door.
    drift: f64,
    /// Reports in °F to exercise the node's unit conversion.
    fahrenheit: bool,
}

impl Climate {
    pub(crate) fn new(rng: &mut SmallRng, fahrenheit: bool) -> Self {
        Self {
            offset_c: rng.random_range(-0.8..0.8),
            offset_pct: rng.random_range(-3.0..3.0),
            drift: 0.0,
            fahrenheit,
        }
    }

    pub(crate) fn sample(&mut self, rng: &mut SmallRng, ts_unix_ms: i64, out: &mut Vec<Sample>) {
        // Peak at 15:00, trough at 03:00.
        let daily = (TAU * (hour_of_day(ts_unix_ms) - 9.0) / 24.0).sin();
        self.drift = 0.95 * self.drift + 0.1 * gauss(rng);
        let temperature_c =
            (22.5 + 4.0 * daily + self.offset_c + self.drift + 0.05 * gauss(rng)).clamp(17.5, 27.5);
        let humidity_pct = (47.5 - 10.0 * daily + self.offset_pct - 1.5 * self.drift
            + 0.3 * gauss(rng))
        .clamp(35.0, 60.0);
        let (temperature, unit) = if self.fahrenheit {
            (temperature_c * 9.0 / 5.0 + 32.0, "F")
        } else {
            (temperature_c, "C")
        };
        out.push(Sample {
            metric: "temperature",
            value: round_to(temperature, 2),
            unit,
        });
        out.push(Sample {
            metric: "humidity",
            value: round_to(humidity_pct, 1),
            unit: "%",
        });
    }
}

/// A robot arm: a repeating work cycle drives torque, power and, slowly,
/// motor temperature; now and then a fault episode (a failing bearing)
/// drives vibration and torque over the node's fault thresholds.
#[derive(Clone, Debug)]
pub(crate) struct Arm {
    cycle_ms: i64,
    cycle_offset_ms: i64,
    torque_peak_nm: f64,
    motor_temperature_c: f64,
    /// The fault episode lasts while the reading time is before this.
    fault_until_ms: i64,
    last_ts_unix_ms: Option<i64>,
    /// Reports power in W to exercise the node's unit conversion.
    watts: bool,
}

impl Arm {
    pub(crate) fn new(rng: &mut SmallRng, watts: bool) -> Self {
        let cycle_ms = rng.random_range(20_000..45_000);
        Self {
            cycle_ms,
            cycle_offset_ms: rng.random_range(0..cycle_ms),
            torque_peak_nm: rng.random_range(180.0..260.0),
            motor_temperature_c: rng.random_range(38.0..45.0),
            fault_until_ms: i64::MIN,
            last_ts_unix_ms: None,
            watts,
        }
    }

    pub(crate) fn sample(
        &mut self,
        rng: &mut SmallRng,
        ts_unix_ms: i64,
        interval_ms: i64,
        out: &mut Vec<Sample>,
    ) {
        let phase = (ts_unix_ms + self.cycle_offset_ms).rem_euclid(self.cycle_ms) as f64
            / self.cycle_ms as f64;
        // Off shift the arm holds its pose: a little holding torque, no cycle.
        let effort = if shift_running(hour_of_day(ts_unix_ms)) {
            1.0
        } else {
            0.1
        };
        let load = effort * (0.5 - 0.5 * (TAU * phase).cos()).powf(1.5);

        // A per-reading start probability gives a Poisson process whose mean
        // gap does not depend on the reading period.
        let fault_p = (interval_ms as f64 / ARM_FAULT_MEAN_GAP_MS).min(1.0);
        if ts_unix_ms >= self.fault_until_ms && rng.random_bool(fault_p) {
            self.fault_until_ms = ts_unix_ms + ARM_FAULT_DURATION_MS;
        }
        let faulty = ts_unix_ms < self.fault_until_ms;

        let (vibration, torque) = if faulty {
            (rng.random_range(12.5..18.0), rng.random_range(410.0..520.0))
        } else {
            (
                (2.2 + 1.5 * load + 0.15 * gauss(rng)).clamp(1.8, 4.2),
                (40.0 + (self.torque_peak_nm - 40.0) * load + 4.0 * gauss(rng)).max(20.0),
            )
        };
        let power_kw = if faulty {
            rng.random_range(7.0..8.0)
        } else {
            (2.0 + 5.5 * load + 0.1 * gauss(rng)).clamp(2.0, 8.0)
        };

        // First-order lag towards a load-dependent temperature: a work shift
        // warms the motor over tens of minutes, a fault heats it faster.
        let target_c = 35.0 + 35.0 * load * effort + if faulty { 25.0 } else { 0.0 };
        let dt_ms = self
            .last_ts_unix_ms
            .map_or(interval_ms, |last| (ts_unix_ms - last).max(0));
        let alpha = 1.0 - (-(dt_ms as f64) / MOTOR_THERMAL_TAU_MS).exp();
        self.motor_temperature_c += (target_c - self.motor_temperature_c) * alpha;
        self.last_ts_unix_ms = Some(ts_unix_ms);

        let (power, power_unit) = if self.watts {
            (round_to(power_kw * 1000.0, 0), "W")
        } else {
            (round_to(power_kw, 3), "kW")
        };
        out.push(Sample {
            metric: "vibration",
            value: round_to(vibration, 2),
            unit: "mm/s",
        });
        out.push(Sample {
            metric: "torque",
            value: round_to(torque, 1),
            unit: "Nm",
        });
        out.push(Sample {
            metric: "motor_temperature",
            value: round_to(self.motor_temperature_c + 0.1 * gauss(rng), 2),
            unit: "C",
        });
        out.push(Sample {
            metric: "power",
            value: power,
            unit: power_unit,
        });
    }
}

/// An electricity meter on one of the plant's feeders: power following the
/// plant's load curve, an energy counter integrating it, the line voltage.
#[derive(Clone, Debug)]
pub(crate) struct Meter {
    nominal_kw: f64,
    energy_kwh: f64,
    /// Readings left in the current spike; 0 when none.
    spike_readings_left: u32,
    /// Reports power in W to exercise the node's unit conversion.
    watts: bool,
}

impl Meter {
    pub(crate) fn new(rng: &mut SmallRng, watts: bool) -> Self {
        Self {
            nominal_kw: rng.random_range(180.0..450.0),
            energy_kwh: rng.random_range(10_000.0..900_000.0),
            spike_readings_left: 0,
            watts,
        }
    }

    pub(crate) fn sample(
        &mut self,
        rng: &mut SmallRng,
        ts_unix_ms: i64,
        interval_ms: i64,
        out: &mut Vec<Sample>,
    ) {
        let base_kw =
            (self.nominal_kw * plant_load(hour_of_day(ts_unix_ms)) * (1.0 + 0.03 * gauss(rng)))
                .max(0.0);
        let spike_p = (interval_ms as f64 / METER_SPIKE_MEAN_GAP_MS).min(1.0);
        if self.spike_readings_left == 0 && rng.random_bool(spike_p) {
            self.spike_readings_left = rng.random_range(2..=4);
        }
        let power_kw = if self.spike_readings_left > 0 {
            self.spike_readings_left -= 1;
            base_kw * METER_SPIKE_FACTOR
        } else {
            base_kw
        };
        // The power is held over the period that ends with this reading;
        // power is never negative, so the counter never decreases.
        self.energy_kwh += power_kw * interval_ms as f64 / MS_PER_HOUR;
        let voltage_v = (400.0 + 1.5 * gauss(rng)).clamp(390.0, 410.0);

        let (power, power_unit) = if self.watts {
            (round_to(power_kw * 1000.0, 0), "W")
        } else {
            (round_to(power_kw, 2), "kW")
        };
        out.push(Sample {
            metric: "power",
            value: power,
            unit: power_unit,
        });
        out.push(Sample {
            metric: "energy",
            value: round_to(self.energy_kwh, 3),
            unit: "kWh",
        });
        out.push(Sample {
            metric: "voltage",
            value: round_to(voltage_v, 1),
            unit: "V",
        });
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn plant_load_is_higher_on_shift_with_a_lunch_dip() {
        let night = plant_load(3.0);
        let morning = plant_load(9.0);
        let lunch = plant_load(12.5);
        let afternoon = plant_load(16.0);
        assert!(night < lunch && lunch < morning && lunch < afternoon);
        for step in 0..=240 {
            let load = plant_load(f64::from(step) / 10.0);
            assert!((0.3..=1.0).contains(&load), "load {load} at step {step}");
        }
    }

    #[test]
    fn climate_peaks_in_the_afternoon() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut climate = Climate::new(&mut rng, false);
        let mean_at = |climate: &mut Climate, rng: &mut SmallRng, hour: i64| {
            let mut out = Vec::new();
            for minute in 0..60 {
                climate.sample(rng, hour * 3_600_000 + minute * 60_000, &mut out);
            }
            let temps: Vec<f64> = out
                .iter()
                .filter(|s| s.metric == "temperature")
                .map(|s| s.value)
                .collect();
            temps.iter().sum::<f64>() / temps.len() as f64
        };
        let early = mean_at(&mut climate, &mut rng, 3);
        let afternoon = mean_at(&mut climate, &mut rng, 15);
        assert!(afternoon > early + 4.0, "{early} vs {afternoon}");
    }

    #[test]
    fn gauss_has_unit_spread() {
        let mut rng = SmallRng::seed_from_u64(9);
        let draws: Vec<f64> = (0..20_000).map(|_| gauss(&mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
