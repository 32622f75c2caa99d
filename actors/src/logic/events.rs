//! Threshold events: a released reading above its limit becomes an [`Event`]
//! whose id is derived from the reading, so detecting again after a replay
//! writes the same event rather than a second one.
//!
//! Fixed limits cover temperatures, humidity, vibration and torque. A meter's
//! power has no fixed limit that suits every feeder, so a spike is measured
//! against the meter's own recent level, an exponentially weighted moving
//! average kept per device in [`PowerBaseline`].

use vatio_stores::model::{DeviceKind, Event, EventType, Metric, Reading};

/// Event limits, in canonical units.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub over_temperature_c: f64,
    pub motor_over_temperature_c: f64,
    pub high_humidity_pct: f64,
    pub vibration_fault_mm_s: f64,
    /// Applies to the magnitude: a jam may twist either way.
    pub torque_fault_nm: f64,
    /// A spike is power above the baseline times this factor...
    pub power_spike_factor: f64,
    /// ...and above this floor, so a meter idling near zero does not report a
    /// spike every time a machine starts.
    pub power_spike_min_kw: f64,
}

/// Weight of the newest power reading in the baseline.
pub const POWER_BASELINE_ALPHA: f64 = 0.2;
/// Power readings a baseline needs before it can call a spike; fewer say
/// too little about the meter's normal level.
pub const POWER_BASELINE_WARMUP: u64 = 5;

/// One meter's recent power level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PowerBaseline {
    /// EWMA of power, kW; meaningless while `samples` is 0.
    ewma_kw: f64,
    samples: u64,
}

impl PowerBaseline {
    /// The current average, once there is one.
    pub fn level_kw(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.ewma_kw)
    }

    /// How many power readings the baseline has seen.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    fn is_warm(&self) -> bool {
        self.samples >= POWER_BASELINE_WARMUP
    }

    fn update(&mut self, kw: f64) {
        // The first reading seeds the average; starting from 0 would make
        // the baseline crawl up for many readings.
        self.ewma_kw = if self.samples == 0 {
            kw
        } else {
            POWER_BASELINE_ALPHA * kw + (1.0 - POWER_BASELINE_ALPHA) * self.ewma_kw
        };
        self.samples = self.samples.saturating_add(1);
    }
}

/// The event `r` raises, if any. `baseline` is the reading's device's; it
/// learns from every meter power reading, spikes included, so a lasting
/// step up in load becomes the new normal instead of a stream of spikes.
pub fn detect(r: &Reading, t: &Thresholds, baseline: &mut PowerBaseline) -> Option<Event> {
    let (event_type, threshold) = match r.metric {
        Metric::Temperature => (EventType::OverTemperature, t.over_temperature_c),
        Metric::MotorTemperature => (EventType::OverTemperature, t.motor_over_temperature_c),
        Metric::Humidity => (EventType::HighHumidity, t.high_humidity_pct),
        Metric::Vibration => (EventType::VibrationFault, t.vibration_fault_mm_s),
        Metric::Torque => {
            return (r.value.abs() > t.torque_fault_nm)
                .then(|| event(r, EventType::TorqueFault, t.torque_fault_nm));
        }
        Metric::Power if r.kind == DeviceKind::ElectricityMeter => {
            let spike = baseline
                .is_warm()
                .then(|| (baseline.ewma_kw * t.power_spike_factor).max(t.power_spike_min_kw));
            baseline.update(r.value);
            return spike
                .filter(|&threshold| r.value > threshold)
                .map(|threshold| event(r, EventType::PowerSpike, threshold));
        }
        // A robot arm's own draw, energy counters and voltage raise nothing.
        Metric::Power | Metric::Energy | Metric::Voltage => return None,
    };
    (r.value > threshold).then(|| event(r, event_type, threshold))
}

fn event(r: &Reading, event_type: EventType, threshold: f64) -> Event {
    Event {
        device: r.device.clone(),
        kind: r.kind,
        event_type,
        metric: r.metric,
        value: r.value,
        threshold,
        ts_ms: r.ts_ms,
        seq: r.seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vatio_stores::model::DeviceId;

    const T: Thresholds = Thresholds {
        over_temperature_c: 40.0,
        motor_over_temperature_c: 90.0,
        high_humidity_pct: 85.0,
        vibration_fault_mm_s: 20.0,
        torque_fault_nm: 1500.0,
        power_spike_factor: 2.0,
        power_spike_min_kw: 50.0,
    };

    fn reading(kind: DeviceKind, metric: Metric, seq: u64, value: f64) -> Reading {
        Reading {
            device: DeviceId::new("d-1"),
            kind,
            seq,
            ts_ms: 1_700_000_000_000 + seq as i64,
            metric,
            value,
        }
    }

    fn detect_once(kind: DeviceKind, metric: Metric, value: f64) -> Option<Event> {
        detect(
            &reading(kind, metric, 9, value),
            &T,
            &mut PowerBaseline::default(),
        )
    }

    fn meter_power(b: &mut PowerBaseline, seq: u64, kw: f64) -> Option<Event> {
        detect(
            &reading(DeviceKind::ElectricityMeter, Metric::Power, seq, kw),
            &T,
            b,
        )
    }

    #[test]
    fn over_temperature_event_carries_reading_and_threshold() {
        let e = detect_once(DeviceKind::ClimateSensor, Metric::Temperature, 41.5);
        assert_eq!(
            e,
            Some(Event {
                device: DeviceId::new("d-1"),
                kind: DeviceKind::ClimateSensor,
                event_type: EventType::OverTemperature,
                metric: Metric::Temperature,
                value: 41.5,
                threshold: 40.0,
                ts_ms: 1_700_000_000_009,
                seq: 9,
            })
        );
        assert_eq!(
            e.map(|e| e.id()),
            Some("d-1/9/over_temperature".to_string())
        );
    }

    #[test]
    fn limits_are_exclusive() {
        use DeviceKind as K;
        use Metric as M;
        for (kind, metric, at_limit) in [
            (K::ClimateSensor, M::Temperature, 40.0),
            (K::RobotArm, M::MotorTemperature, 90.0),
            (K::ClimateSensor, M::Humidity, 85.0),
            (K::RobotArm, M::Vibration, 20.0),
            (K::RobotArm, M::Torque, 1500.0),
            (K::RobotArm, M::Torque, -1500.0),
        ] {
            assert_eq!(
                detect_once(kind, metric, at_limit),
                None,
                "{metric} at {at_limit}"
            );
        }
    }

    #[test]
    fn each_fixed_limit_raises_its_event() {
        use DeviceKind as K;
        use EventType as E;
        use Metric as M;
        for (kind, metric, value, event_type, threshold) in [
            (
                K::ClimateSensor,
                M::Temperature,
                40.1,
                E::OverTemperature,
                40.0,
            ),
            (
                K::RobotArm,
                M::MotorTemperature,
                95.0,
                E::OverTemperature,
                90.0,
            ),
            (K::ClimateSensor, M::Humidity, 90.0, E::HighHumidity, 85.0),
            (K::RobotArm, M::Vibration, 25.0, E::VibrationFault, 20.0),
            (K::RobotArm, M::Torque, 1600.0, E::TorqueFault, 1500.0),
            (K::RobotArm, M::Torque, -1600.0, E::TorqueFault, 1500.0),
        ] {
            let e = detect_once(kind, metric, value);
            assert_eq!(
                e.map(|e| (e.event_type, e.metric, e.value, e.threshold)),
                Some((event_type, metric, value, threshold)),
                "{metric} {value}"
            );
        }
    }

    #[test]
    fn motor_temperature_uses_its_own_limit() {
        // 60 C is over the air limit but a normal motor temperature.
        assert_eq!(
            detect_once(DeviceKind::RobotArm, Metric::MotorTemperature, 60.0),
            None
        );
    }

    #[test]
    fn quiet_metrics_raise_nothing() {
        use DeviceKind as K;
        use Metric as M;
        assert_eq!(detect_once(K::ElectricityMeter, M::Energy, 1e9), None);
        assert_eq!(detect_once(K::ElectricityMeter, M::Voltage, 99_999.0), None);
        assert_eq!(detect_once(K::RobotArm, M::Power, 999.0), None);
    }

    #[test]
    fn robot_arm_power_does_not_feed_the_baseline() {
        let mut b = PowerBaseline::default();
        for seq in 1..=10 {
            let r = reading(DeviceKind::RobotArm, Metric::Power, seq, 500.0);
            assert_eq!(detect(&r, &T, &mut b), None);
        }
        assert_eq!(b, PowerBaseline::default());
    }

    #[test]
    fn baseline_warms_up_before_spikes_are_called() {
        let mut b = PowerBaseline::default();
        assert_eq!(b.level_kw(), None);
        // Wild swings during warm-up raise nothing.
        for (seq, kw) in [(1, 100.0), (2, 100.0), (3, 1000.0), (4, 100.0), (5, 100.0)] {
            assert_eq!(meter_power(&mut b, seq, kw), None, "warm-up reading {seq}");
        }
        assert_eq!(b.samples(), 5);
        // EWMA: 100, 100, 280, 244, 215.2.
        assert!(b.level_kw().is_some_and(|l| (l - 215.2).abs() < 1e-9));
        // Sixth reading: threshold 2 x 215.2.
        let e = meter_power(&mut b, 6, 431.0);
        assert_eq!(
            e.as_ref().map(|e| e.event_type),
            Some(EventType::PowerSpike)
        );
        assert!(e.is_some_and(|e| (e.threshold - 430.4).abs() < 1e-9 && e.value == 431.0));
    }

    #[test]
    fn spike_threshold_is_baseline_times_factor() {
        let mut b = PowerBaseline::default();
        for seq in 1..=5 {
            assert_eq!(meter_power(&mut b, seq, 100.0), None);
        }
        assert_eq!(
            meter_power(&mut b, 6, 200.0),
            None,
            "at the threshold is no spike"
        );
        // Baseline now 0.2 x 200 + 0.8 x 100 = 120: threshold 240.
        assert!(b.level_kw().is_some_and(|l| (l - 120.0).abs() < 1e-9));
        let e = meter_power(&mut b, 7, 241.0);
        assert_eq!(
            e.map(|e| (e.event_type, e.metric, e.seq, e.value, e.threshold)),
            Some((EventType::PowerSpike, Metric::Power, 7, 241.0, 240.0))
        );
    }

    #[test]
    fn spike_threshold_has_a_floor() {
        let mut b = PowerBaseline::default();
        for seq in 1..=5 {
            assert_eq!(meter_power(&mut b, seq, 1.0), None);
        }
        // 2 x 1 kW = 2 kW, but the floor is 50 kW.
        assert_eq!(meter_power(&mut b, 6, 40.0), None);
        let e = meter_power(&mut b, 7, 60.0);
        assert_eq!(e.map(|e| e.threshold), Some(50.0));
    }

    #[test]
    fn spikes_feed_the_baseline_so_a_lasting_step_stops_alarming() {
        let mut b = PowerBaseline::default();
        for seq in 1..=5 {
            assert_eq!(meter_power(&mut b, seq, 100.0), None);
        }
        let mut spikes = 0;
        for seq in 6..=30 {
            if meter_power(&mut b, seq, 300.0).is_some() {
                spikes += 1;
            }
        }
        // 300 > 2 x baseline only until the baseline passes 150: 100, 140,
        // 172: the first two step readings alarm, then none.
        assert_eq!(spikes, 2);
        assert_eq!(b.samples(), 30);
    }
}
