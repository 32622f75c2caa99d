//! Tests of the simulated factory: determinism, seq discipline, and that the
//! signals and the defect and duplicate shares look like the spec says.

use std::collections::{HashMap, HashSet};

use vatio_proto::v1::{DeviceKind, Reading};

use super::*;

/// 2023-11-14 22:13:20 UTC; any fixed start works.
const START_MS: i64 = 1_700_000_000_000;

fn factory(spec: FactorySpec) -> Factory {
    Factory::new(spec).expect("valid spec")
}

/// Ticks every `step_ms` for `duration_ms` and returns everything produced.
fn run(factory: &mut Factory, start_ms: i64, step_ms: i64, duration_ms: i64) -> Vec<Reading> {
    let mut out = Vec::new();
    let mut now = start_ms;
    while now <= start_ms + duration_ms {
        out.extend(factory.tick(now));
        now += step_ms;
    }
    out
}

/// Bit-exact comparison: NaN readings are equal to themselves here.
fn same(a: &[Reading], b: &[Reading]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.device_id == y.device_id
                && x.seq == y.seq
                && x.ts_unix_ms == y.ts_unix_ms
                && x.metric == y.metric
                && x.value.to_bits() == y.value.to_bits()
                && x.unit == y.unit
                && x.kind == y.kind
        })
}

/// A reading the factory did not make defective on purpose.
fn is_clean(r: &Reading) -> bool {
    !r.metric.is_empty()
        && r.value.is_finite()
        && r.unit != "furlongs"
        && r.ts_unix_ms < START_MS + 86_400_000
        && !(r.metric == "humidity" && r.value > 100.0)
}

#[test]
fn same_seed_and_times_replay_the_same_readings() {
    let spec = FactorySpec {
        bad_share: 0.05,
        duplicate_share: 0.05,
        ..FactorySpec::default()
    };
    let a = run(&mut factory(spec.clone()), START_MS, 1_000, 600_000);
    let b = run(&mut factory(spec.clone()), START_MS, 1_000, 600_000);
    assert!(!a.is_empty());
    assert!(same(&a, &b));

    let other = run(
        &mut factory(FactorySpec { seed: 2, ..spec }),
        START_MS,
        1_000,
        600_000,
    );
    assert!(
        !same(&a, &other),
        "a different seed gives a different plant"
    );
}

#[test]
fn output_does_not_depend_on_how_often_tick_is_called() {
    let spec = FactorySpec::default();
    let mut fine = run(&mut factory(spec.clone()), START_MS, 250, 300_000);
    let mut coarse = run(&mut factory(spec), START_MS, 5_000, 300_000);
    let key = |r: &Reading| (r.device_id.clone(), r.seq, r.ts_unix_ms, r.metric.clone());
    fine.sort_by_key(key);
    coarse.sort_by_key(key);
    assert!(same(&fine, &coarse));
}

#[test]
fn ids_and_kinds_follow_the_naming_scheme() {
    let f = factory(FactorySpec::default());
    let devices: Vec<(String, DeviceKind)> = f
        .devices()
        .map(|(id, kind)| (id.to_owned(), kind))
        .collect();
    assert_eq!(devices.len(), 36);
    assert!(devices.contains(&("climate-007".to_owned(), DeviceKind::ClimateSensor)));
    assert!(devices.contains(&("arm-003".to_owned(), DeviceKind::RobotArm)));
    assert!(devices.contains(&("meter-01".to_owned(), DeviceKind::ElectricityMeter)));
}

#[test]
fn every_device_reports_each_metric_once_per_period() {
    let mut f = factory(FactorySpec {
        bad_share: 0.0,
        duplicate_share: 0.0,
        ..FactorySpec::default()
    });
    let first = f.tick(START_MS);
    // 20 climate × 2 + 10 arms × 4 + 6 meters × 3.
    assert_eq!(first.len(), 98);
    let minute = f.tick(START_MS + 60_000);
    assert_eq!(minute.len(), 98 * 60);
    assert!(f.tick(START_MS + 60_000).is_empty(), "same time again");
    assert!(f.tick(START_MS).is_empty(), "time going back");
    let ts: Vec<i64> = minute.iter().map(|r| r.ts_unix_ms).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "ordered by time");
    assert!(ts.iter().all(|t| *t > START_MS && *t <= START_MS + 60_000));
}

#[test]
fn seqs_increase_by_one_per_device_apart_from_duplicates() {
    let readings = run(
        &mut factory(FactorySpec {
            duplicate_share: 0.05,
            bad_share: 0.05,
            ..FactorySpec::default()
        }),
        START_MS,
        1_000,
        1_800_000,
    );
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    let mut sent: HashMap<(&str, u64), &Reading> = HashMap::new();
    let mut duplicates = 0;
    for r in &readings {
        if let Some(original) = sent.get(&(r.device_id.as_str(), r.seq)) {
            assert!(same(
                std::slice::from_ref(*original),
                std::slice::from_ref(r)
            ));
            duplicates += 1;
            continue;
        }
        let last = last_seq.entry(&r.device_id).or_insert(0);
        assert_eq!(r.seq, *last + 1, "{} seq after {}", r.device_id, *last);
        *last = r.seq;
        sent.insert((&r.device_id, r.seq), r);
    }
    assert!(duplicates > 0);
}

#[test]
fn energy_counters_never_decrease() {
    let readings = run(
        &mut factory(FactorySpec {
            bad_share: 0.0,
            interval_ms: 10_000,
            ..FactorySpec::default()
        }),
        START_MS,
        60_000,
        86_400_000,
    );
    // In seq order: a re-sent duplicate carries an older counter value,
    // which the node drops by its seq.
    let mut last: HashMap<&str, (u64, f64)> = HashMap::new();
    let mut seen = 0;
    for r in readings.iter().filter(|r| r.metric == "energy") {
        assert_eq!(r.unit, "kWh");
        let (seq, previous) = last
            .get(r.device_id.as_str())
            .copied()
            .unwrap_or((0, f64::MIN));
        if r.seq <= seq {
            continue;
        }
        assert!(
            r.value >= previous,
            "{} went from {previous} to {}",
            r.device_id,
            r.value
        );
        last.insert(&r.device_id, (r.seq, r.value));
        seen += 1;
    }
    assert!(seen >= 6 * 8_640);
}

/// Converts to the canonical unit the way the node will.
fn canonical(r: &Reading) -> f64 {
    match r.unit.as_str() {
        "F" => (r.value - 32.0) * 5.0 / 9.0,
        "W" => r.value / 1000.0,
        _ => r.value,
    }
}

#[test]
fn clean_values_stay_in_plausible_ranges_over_a_day() {
    let readings = run(
        &mut factory(FactorySpec {
            interval_ms: 10_000,
            ..FactorySpec::default()
        }),
        START_MS,
        60_000,
        86_400_000,
    );
    let mut units: HashSet<(String, String)> = HashSet::new();
    for r in readings.iter().filter(|r| is_clean(r)) {
        units.insert((r.metric.clone(), r.unit.clone()));
        let v = canonical(r);
        let range = match (r.metric.as_str(), r.kind) {
            ("temperature", 1) => 15.0..=30.0,
            ("humidity", 1) => 35.0..=60.0,
            ("vibration", 2) => 1.5..=18.0,
            ("torque", 2) => 0.0..=520.0,
            ("motor_temperature", 2) => 30.0..=95.0,
            ("power", 2) => 2.0..=8.0,
            ("power", 3) => 0.0..=450.0 * 1.2 * 2.5,
            ("energy", 3) => 10_000.0..=2_000_000.0,
            ("voltage", 3) => 390.0..=410.0,
            other => panic!("unexpected metric for kind: {other:?}"),
        };
        assert!(range.contains(&v), "{} {} = {v}", r.device_id, r.metric);
    }
    for pair in [
        ("temperature", "F"),
        ("temperature", "C"),
        ("power", "W"),
        ("power", "kW"),
        ("humidity", "%"),
        ("vibration", "mm/s"),
        ("torque", "Nm"),
    ] {
        assert!(
            units.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "{pair:?}"
        );
    }
}

#[test]
fn robot_arms_have_fault_episodes_and_meters_spike() {
    let readings = run(
        &mut factory(FactorySpec {
            bad_share: 0.0,
            duplicate_share: 0.0,
            interval_ms: 10_000,
            ..FactorySpec::default()
        }),
        START_MS,
        60_000,
        86_400_000,
    );
    let faulty_arms: HashSet<&str> = readings
        .iter()
        .filter(|r| r.metric == "vibration" && r.value > 12.0)
        .map(|r| r.device_id.as_str())
        .collect();
    // About 8 episodes per arm per day: every arm has some.
    assert_eq!(faulty_arms.len(), 10);
    assert!(
        readings
            .iter()
            .any(|r| r.metric == "torque" && r.value > 400.0)
    );

    // A spike is well above the meter's readings a minute before.
    let mut spikes = 0;
    let mut previous: HashMap<&str, f64> = HashMap::new();
    for r in readings
        .iter()
        .filter(|r| r.kind == 3 && r.metric == "power")
    {
        let kw = canonical(r);
        if let Some(before) = previous.insert(&r.device_id, kw)
            && kw > 2.0 * before
        {
            spikes += 1;
        }
    }
    assert!(spikes > 6, "{spikes} spikes");
}

#[test]
fn meters_follow_the_shift_pattern() {
    let mut f = factory(FactorySpec {
        bad_share: 0.0,
        duplicate_share: 0.0,
        ..FactorySpec::default()
    });
    let midnight = START_MS - START_MS.rem_euclid(86_400_000) + 86_400_000;
    let total_kw_at = |readings: &[Reading]| -> f64 {
        readings
            .iter()
            .filter(|r| r.kind == 3 && r.metric == "power")
            .map(canonical)
            .sum()
    };
    f.tick(midnight + 3 * 3_600_000 - 1_000);
    let night = total_kw_at(&f.tick(midnight + 3 * 3_600_000));
    f.tick(midnight + 10 * 3_600_000 - 1_000);
    let morning = total_kw_at(&f.tick(midnight + 10 * 3_600_000));
    assert!(
        morning > 1.8 * night,
        "night {night} kW, morning {morning} kW"
    );
    assert!(
        morning > 6.0 * 150.0,
        "a few hundred kW per meter: {morning}"
    );
}

#[test]
fn defect_and_duplicate_shares_are_roughly_honoured() {
    let mut f = factory(FactorySpec::default());
    let readings = run(&mut f, START_MS, 1_000, 3_600_000);
    let stats = f.stats();
    assert_eq!(stats.readings, readings.len() as u64);
    let n = stats.readings as f64;
    let bad_share = stats.defective as f64 / n;
    let dup_share = stats.duplicates as f64 / n;
    assert!((0.008..0.012).contains(&bad_share), "bad share {bad_share}");
    assert!(
        (0.0035..0.0065).contains(&dup_share),
        "dup share {dup_share}"
    );

    let unclean = readings.iter().filter(|r| !is_clean(r)).count() as f64;
    // Duplicates of defective readings are defective too, hence the slack.
    assert!((unclean / n - bad_share).abs() < 0.001);
    let kinds: HashSet<&str> = readings
        .iter()
        .filter(|r| !is_clean(r))
        .map(|r| match r {
            r if r.metric.is_empty() => "missing metric",
            r if r.value.is_nan() => "nan",
            r if r.unit == "furlongs" => "unit",
            r if r.metric == "humidity" => "humidity",
            _ => "future",
        })
        .collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
}

#[test]
fn a_long_pause_is_skipped_not_replayed() {
    let mut f = factory(FactorySpec {
        bad_share: 0.0,
        duplicate_share: 0.0,
        ..FactorySpec::default()
    });
    f.tick(START_MS);
    let after_a_week = f.tick(START_MS + 7 * 86_400_000);
    assert_eq!(after_a_week.len() as i64, 98 * CATCH_UP_PERIODS_MAX);
}

#[test]
fn invalid_specs_are_refused() {
    let bad = |spec: FactorySpec| Factory::new(spec).is_err();
    assert!(bad(FactorySpec {
        bad_share: 1.5,
        ..FactorySpec::default()
    }));
    assert!(bad(FactorySpec {
        duplicate_share: f64::NAN,
        ..FactorySpec::default()
    }));
    assert!(bad(FactorySpec {
        interval_ms: 0,
        ..FactorySpec::default()
    }));
    assert!(bad(FactorySpec {
        climate_sensors: u32::MAX,
        ..FactorySpec::default()
    }));
    assert!(bad(FactorySpec {
        seq_start: 0,
        ..FactorySpec::default()
    }));
}

#[test]
fn every_device_starts_at_seq_start() {
    let mut f = factory(FactorySpec {
        seq_start: 5_000,
        bad_share: 0.0,
        duplicate_share: 0.0,
        ..FactorySpec::default()
    });
    let mut first: HashMap<String, u64> = HashMap::new();
    for r in f.tick(START_MS) {
        first.entry(r.device_id).or_insert(r.seq);
    }
    assert_eq!(first.len(), f.devices().count());
    assert!(first.values().all(|seq| *seq == 5_000), "{first:?}");
}
