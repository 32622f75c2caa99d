use super::*;
use crate::model::{EventType, Reading};

fn reading(device: &str, kind: DeviceKind, metric: Metric, seq: u64, value: f64) -> Reading {
    Reading {
        device: DeviceId::new(device),
        kind,
        seq,
        // Four readings a minute, so a device's seqs span several minutes.
        ts_ms: 1_700_000_000_000 + i64::try_from(seq).unwrap_or(0) * 15_000,
        metric,
        value,
    }
}

/// One store's points for `readings`: what an aggregator writes.
fn points_of<'a>(readings: impl IntoIterator<Item = &'a Reading>) -> Vec<MinutePoint> {
    let mut points: BTreeMap<(DeviceId, Metric, UnixMs), MinutePoint> = BTreeMap::new();
    for r in readings {
        let minute_ms = r.ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        points
            .entry((r.device.clone(), r.metric, minute_ms))
            .and_modify(|p| p.stats.add(r))
            .or_insert_with(|| MinutePoint {
                device: r.device.clone(),
                kind: r.kind,
                metric: r.metric,
                minute_ms,
                stats: Stats::of(r),
                log_pos: 0,
            });
    }
    points.into_values().collect()
}

/// xorshift64*: a fixed, dependency-free sequence for splitting readings.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn close(a: &Stats, b: &Stats) -> bool {
    a.count == b.count
        && a.min == b.min
        && a.max == b.max
        && (a.sum - b.sum).abs() < 1e-6
        && a.last == b.last
        && (a.last_ts_ms, a.last_seq) == (b.last_ts_ms, b.last_seq)
}

#[test]
fn points_split_over_stores_merge_into_the_whole() {
    for seed in 1..=50u64 {
        let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let readings: Vec<Reading> = (1..=200)
            .map(|seq| {
                let device = format!("meter-{}", dice.below(3));
                let value = dice.below(10_000) as f64 / 10.0;
                reading(
                    &device,
                    DeviceKind::ElectricityMeter,
                    Metric::Power,
                    seq,
                    value,
                )
            })
            .collect();
        // Each reading delivered by exactly one of 3 nodes.
        let mut shares: Vec<Vec<&Reading>> = vec![Vec::new(); 3];
        for r in &readings {
            let node = usize::try_from(dice.below(3)).unwrap_or(0);
            shares[node].push(r);
        }
        let merged = merge_points(shares.iter().flat_map(|s| points_of(s.iter().copied())));
        let whole = points_of(&readings);
        assert_eq!(merged.len(), whole.len(), "seed {seed}");
        for (m, w) in merged.iter().zip(&whole) {
            assert_eq!(
                (&m.device, m.metric, m.minute_ms),
                (&w.device, w.metric, w.minute_ms)
            );
            assert!(close(&m.stats, &w.stats), "seed {seed}: {m:?} vs {w:?}");
        }
        // The flows agree too, minute by minute.
        let split_flow = power_flow(shares.iter().flat_map(|s| points_of(s.iter().copied())));
        let whole_flow = power_flow(whole);
        assert_eq!(split_flow.len(), whole_flow.len(), "seed {seed}");
        for (s, w) in split_flow.iter().zip(&whole_flow) {
            assert_eq!((s.minute_ms, s.meters), (w.minute_ms, w.meters));
            assert!((s.total_kw - w.total_kw).abs() < 1e-6, "seed {seed}");
        }
    }
}

#[test]
fn a_meter_minute_split_over_two_stores_counts_once_at_its_mean() {
    let a = reading("m", DeviceKind::ElectricityMeter, Metric::Power, 1, 10.0);
    let b = reading("m", DeviceKind::ElectricityMeter, Metric::Power, 2, 30.0);
    let other = reading("n", DeviceKind::ElectricityMeter, Metric::Power, 1, 5.0);
    let not_power = reading("m", DeviceKind::ElectricityMeter, Metric::Energy, 1, 99.0);
    let mut points = points_of([&a, &other, &not_power]);
    points.extend(points_of([&b]));
    let flow = power_flow(points);
    assert_eq!(flow.len(), 1);
    assert_eq!(flow[0].meters, 2);
    // m's mean is 20 (not 10 + 30), plus n's 5.
    assert!((flow[0].total_kw - 25.0).abs() < 1e-9, "{flow:?}");
}

#[test]
fn series_windows_merge_shares_and_align_to_the_epoch() {
    let r = |seq, value| {
        reading(
            "t",
            DeviceKind::ClimateSensor,
            Metric::Temperature,
            seq,
            value,
        )
    };
    // seqs 1..=8 span two minutes; node A has the odd seqs, node B the even.
    let all: Vec<Reading> = (1..=8).map(|s| r(s, s as f64)).collect();
    let (odd, even): (Vec<&Reading>, Vec<&Reading>) = all.iter().partition(|x| x.seq % 2 == 1);
    let minutes = points_of(odd)
        .into_iter()
        .chain(points_of(even))
        .map(|p| (p.minute_ms, p.stats));
    let windows = series_windows(minutes, 60);
    assert_eq!(windows.len(), 1, "{windows:?}");
    let w = &windows[0];
    assert_eq!(w.window_start_ms % (60 * MINUTE_MS), 0);
    assert_eq!(w.count, 8);
    assert_eq!((w.min, w.max, w.last), (1.0, 8.0, 8.0));
    assert!((w.mean - 4.5).abs() < 1e-9);
}

#[test]
fn latest_keeps_the_newest_per_device_and_metric_in_order() {
    let v = |device: &str, metric, ts_ms, value| LatestValue {
        device: DeviceId::new(device),
        kind: DeviceKind::ClimateSensor,
        metric,
        value,
        ts_ms,
    };
    let node_a = vec![
        v("d1", Metric::Temperature, 100, 1.0),
        v("d2", Metric::Humidity, 300, 3.0),
    ];
    let node_b = vec![
        v("d1", Metric::Temperature, 200, 2.0),
        v("d1", Metric::Humidity, 50, 5.0),
    ];
    let merged = latest(node_a.into_iter().chain(node_b), 10);
    let got: Vec<(&str, &str, f64)> = merged
        .iter()
        .map(|l| (l.device.as_str(), l.metric.as_str(), l.value))
        .collect();
    assert_eq!(
        got,
        [
            ("d1", "humidity", 5.0),
            ("d1", "temperature", 2.0),
            ("d2", "humidity", 3.0)
        ]
    );
    assert_eq!(latest(merged, 2).len(), 2);
}

#[test]
fn events_are_listed_once_newest_first_up_to_the_limit() {
    let e = |device: &str, seq, ts_ms| Event {
        device: DeviceId::new(device),
        kind: DeviceKind::ClimateSensor,
        event_type: EventType::OverTemperature,
        metric: Metric::Temperature,
        value: 90.0,
        threshold: 80.0,
        ts_ms,
        seq,
    };
    let node_a = vec![e("d1", 3, 300), e("d1", 1, 100)];
    let node_b = vec![e("d2", 7, 300), e("d1", 1, 100), e("d2", 2, 200)];
    let merged = events(node_a.into_iter().chain(node_b), 3);
    let ids: Vec<String> = merged.iter().map(Event::id).collect();
    assert_eq!(
        ids,
        [
            "d2/7/over_temperature",
            "d1/3/over_temperature",
            "d2/2/over_temperature"
        ]
    );
}

#[test]
fn dead_letter_counts_add_up_per_reason() {
    let counts = dead_letter_counts([
        (DeadLetterReason::Late, 2),
        (DeadLetterReason::OutOfRange, 1),
        (DeadLetterReason::Late, 3),
    ]);
    assert_eq!(
        counts,
        [
            (DeadLetterReason::Late, 5),
            (DeadLetterReason::OutOfRange, 1)
        ]
    );
}
