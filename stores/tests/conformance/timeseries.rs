//! [`TimeSeriesStore`] conformance: idempotent minute points with their log
//! positions, latest values, windowed series and the plant's power flow.

use vatio_stores::{
    DeviceKind, LatestFilter, MINUTE_MS, Metric, MinuteFilter, PowerFlowMinute, SeriesPoint,
    TimeSeriesStore, merge,
};

use super::{T0, dev, log_end, point};

const METER: DeviceKind = DeviceKind::ElectricityMeter;
const CLIMATE: DeviceKind = DeviceKind::ClimateSensor;
const ARM: DeviceKind = DeviceKind::RobotArm;

pub async fn writing_a_point_twice_keeps_one_copy_with_the_new_values(store: &dyn TimeSeriesStore) {
    let first = point("m1", METER, Metric::Power, 0, &[10.0, 20.0]);
    store
        .write_points(std::slice::from_ref(&first))
        .await
        .expect("write");
    store
        .write_points(std::slice::from_ref(&first))
        .await
        .expect("write again");
    let stored = store
        .point(&dev("m1"), Metric::Power, first.minute_ms)
        .await
        .expect("point");
    assert_eq!(stored, Some(first.clone()));

    // A reopened minute is written again with more readings: it replaces,
    // log position included.
    let reopened = point("m1", METER, Metric::Power, 0, &[10.0, 20.0, 40.0]);
    assert!(reopened.log_pos > first.log_pos);
    store
        .write_points(std::slice::from_ref(&reopened))
        .await
        .expect("rewrite");
    let stored = store
        .point(&dev("m1"), Metric::Power, first.minute_ms)
        .await
        .expect("point");
    assert_eq!(stored, Some(reopened.clone()));
    assert_eq!(stored.map(|p| p.log_pos), Some(log_end(0, 3)));

    let series = store
        .series(&dev("m1"), Metric::Power, T0, T0 + MINUTE_MS, 1)
        .await
        .expect("series");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].count, 3, "one copy of the minute, the new one");
}

pub async fn a_points_log_position_reads_back_as_written(store: &dyn TimeSeriesStore) {
    // 0 is "unknown" (a point written before positions were kept); the
    // largest position every backend keeps is i64::MAX.
    let positions = [0, 1, log_end(7, 3), (1 << 40) + 17, i64::MAX as u64];
    let points: Vec<_> = positions
        .iter()
        .enumerate()
        .map(|(i, &log_pos)| {
            let mut p = point("m1", METER, Metric::Power, i as i64, &[1.0, 2.0]);
            p.log_pos = log_pos;
            p
        })
        .collect();
    store.write_points(&points).await.expect("write");
    for p in &points {
        let stored = store
            .point(&p.device, p.metric, p.minute_ms)
            .await
            .expect("point")
            .expect("stored");
        assert_eq!(stored.log_pos, p.log_pos);
        assert_eq!(&stored, p);
    }
}

pub async fn a_missing_point_is_none(store: &dyn TimeSeriesStore) {
    store
        .write_points(&[point("m1", METER, Metric::Power, 0, &[1.0])])
        .await
        .expect("write");
    let missing = [
        store.point(&dev("m1"), Metric::Power, T0 + MINUTE_MS).await,
        store.point(&dev("m1"), Metric::Voltage, T0).await,
        store.point(&dev("m2"), Metric::Power, T0).await,
    ];
    for p in missing {
        assert_eq!(p.expect("point"), None);
    }
}

pub async fn an_empty_write_is_a_no_op(store: &dyn TimeSeriesStore) {
    store.write_points(&[]).await.expect("empty write");
    let latest = store
        .latest(&LatestFilter::default())
        .await
        .expect("latest");
    assert!(latest.is_empty());
}

pub async fn latest_is_the_last_value_of_each_series_newest_minute(store: &dyn TimeSeriesStore) {
    // Written out of order: the newest minute wins, not the last write.
    store
        .write_points(&[
            point("m1", METER, Metric::Power, 2, &[7.0, 8.0]),
            point("m1", METER, Metric::Power, 0, &[1.0]),
            point("c1", CLIMATE, Metric::Temperature, 5, &[21.5, 22.5]),
            point("m2", METER, Metric::Voltage, 1, &[230.0]),
            point("m2", METER, Metric::Power, 3, &[3.0, 4.5]),
            point("c1", CLIMATE, Metric::Humidity, 4, &[40.0]),
        ])
        .await
        .expect("write");
    store
        .write_points(&[point("m1", METER, Metric::Power, 1, &[100.0])])
        .await
        .expect("write older minute later");

    let all = store
        .latest(&LatestFilter::default())
        .await
        .expect("latest");
    let got: Vec<(&str, DeviceKind, Metric, f64, i64)> = all
        .iter()
        .map(|v| (v.device.as_str(), v.kind, v.metric, v.value, v.ts_ms))
        .collect();
    // Ordered by device, then metric name.
    assert_eq!(
        got,
        vec![
            ("c1", CLIMATE, Metric::Humidity, 40.0, T0 + 4 * MINUTE_MS),
            (
                "c1",
                CLIMATE,
                Metric::Temperature,
                22.5,
                T0 + 5 * MINUTE_MS + 1000
            ),
            ("m1", METER, Metric::Power, 8.0, T0 + 2 * MINUTE_MS + 1000),
            ("m2", METER, Metric::Power, 4.5, T0 + 3 * MINUTE_MS + 1000),
            ("m2", METER, Metric::Voltage, 230.0, T0 + MINUTE_MS),
        ]
    );

    let meters = store
        .latest(&LatestFilter {
            kind: Some(METER),
            ..LatestFilter::default()
        })
        .await
        .expect("latest of meters");
    assert_eq!(meters.len(), 3);
    assert!(meters.iter().all(|v| v.kind == METER));

    let m2 = store
        .latest(&LatestFilter {
            device: Some(dev("m2")),
            ..LatestFilter::default()
        })
        .await
        .expect("latest of m2");
    assert_eq!(
        m2.iter().map(|v| v.metric).collect::<Vec<_>>(),
        vec![Metric::Power, Metric::Voltage]
    );

    let limited = store
        .latest(&LatestFilter {
            limit: 2,
            ..LatestFilter::default()
        })
        .await
        .expect("latest, limited");
    assert_eq!(limited, all[..2].to_vec());
}

pub async fn series_merges_minutes_into_epoch_aligned_windows(store: &dyn TimeSeriesStore) {
    // Minutes 3, 4, 5, 6 and 9 of the hour; minutes 7 and 8 are empty.
    store
        .write_points(&[
            point("c1", CLIMATE, Metric::Temperature, 3, &[20.0, 22.0]),
            point("c1", CLIMATE, Metric::Temperature, 4, &[18.0]),
            point("c1", CLIMATE, Metric::Temperature, 5, &[25.0, 26.0, 24.0]),
            point("c1", CLIMATE, Metric::Temperature, 6, &[23.0]),
            point("c1", CLIMATE, Metric::Temperature, 9, &[30.0, 31.0]),
            // Other series in the same minutes must not leak in.
            point("c1", CLIMATE, Metric::Humidity, 4, &[99.0]),
            point("c2", CLIMATE, Metric::Temperature, 4, &[-40.0]),
        ])
        .await
        .expect("write");
    let c1 = dev("c1");
    let series = |from_minute: i64, to_minute: i64, window_minutes: u32| {
        store.series(
            &c1,
            Metric::Temperature,
            T0 + from_minute * MINUTE_MS,
            T0 + to_minute * MINUTE_MS,
            window_minutes,
        )
    };

    let by_minute = series(0, 60, 1).await.expect("1-minute series");
    assert_eq!(
        by_minute
            .iter()
            .map(|p| (p.window_start_ms, p.count))
            .collect::<Vec<_>>(),
        vec![
            (T0 + 3 * MINUTE_MS, 2),
            (T0 + 4 * MINUTE_MS, 1),
            (T0 + 5 * MINUTE_MS, 3),
            (T0 + 6 * MINUTE_MS, 1),
            (T0 + 9 * MINUTE_MS, 2),
        ]
    );
    assert_eq!(
        by_minute[2],
        SeriesPoint {
            window_start_ms: T0 + 5 * MINUTE_MS,
            count: 3,
            min: 24.0,
            max: 26.0,
            mean: 25.0,
            last: 24.0,
        }
    );

    // Windows of 5 minutes start at multiples of 5 minutes since the epoch.
    let by_five = series(0, 60, 5).await.expect("5-minute series");
    assert_eq!(
        by_five,
        vec![
            SeriesPoint {
                window_start_ms: T0,
                count: 3,
                min: 18.0,
                max: 22.0,
                mean: 20.0,
                last: 18.0,
            },
            SeriesPoint {
                window_start_ms: T0 + 5 * MINUTE_MS,
                count: 6,
                min: 23.0,
                max: 31.0,
                // (75 + 23 + 61) / 6
                mean: 159.0 / 6.0,
                last: 31.0,
            },
        ]
    );

    // The range is half-open and cuts minutes, not windows: the window of
    // minute 0 holds only minute 4, minute 6 is past the end.
    let cut = series(4, 6, 5).await.expect("cut series");
    assert_eq!(
        cut.iter()
            .map(|p| (p.window_start_ms, p.count, p.last))
            .collect::<Vec<_>>(),
        vec![(T0, 1, 18.0), (T0 + 5 * MINUTE_MS, 3, 24.0)]
    );

    let nothing = series(10, 60, 5).await.expect("empty series");
    assert!(nothing.is_empty(), "empty windows are omitted");
}

pub async fn a_zero_minute_window_is_refused(store: &dyn TimeSeriesStore) {
    let result = store
        .series(&dev("c1"), Metric::Temperature, T0, T0 + MINUTE_MS, 0)
        .await;
    assert!(result.is_err());
}

pub async fn power_flow_sums_each_meters_mean_power_per_minute(store: &dyn TimeSeriesStore) {
    store
        .write_points(&[
            point("m1", METER, Metric::Power, 0, &[10.0, 20.0]),
            point("m2", METER, Metric::Power, 0, &[5.0]),
            point("m1", METER, Metric::Power, 1, &[30.0]),
            point("m2", METER, Metric::Power, 2, &[1.0, 2.0, 3.0, 6.0]),
            point("m3", METER, Metric::Power, 2, &[0.5]),
            point("m1", METER, Metric::Power, 3, &[50.0]),
            // Not meter power: a robot arm's own draw, a meter's voltage.
            point("a1", ARM, Metric::Power, 0, &[1000.0]),
            point("m1", METER, Metric::Voltage, 1, &[230.0]),
        ])
        .await
        .expect("write");

    let flow = store
        .power_flow(T0, T0 + 3 * MINUTE_MS)
        .await
        .expect("power flow");
    assert_eq!(
        flow,
        vec![
            PowerFlowMinute {
                minute_ms: T0,
                total_kw: 20.0,
                meters: 2,
            },
            PowerFlowMinute {
                minute_ms: T0 + MINUTE_MS,
                total_kw: 30.0,
                meters: 1,
            },
            PowerFlowMinute {
                minute_ms: T0 + 2 * MINUTE_MS,
                total_kw: 3.5,
                meters: 2,
            },
        ]
    );

    let later = store
        .power_flow(T0 + MINUTE_MS, T0 + 60 * MINUTE_MS)
        .await
        .expect("power flow from minute 1");
    assert_eq!(
        later.iter().map(|m| m.minute_ms).collect::<Vec<_>>(),
        vec![T0 + MINUTE_MS, T0 + 2 * MINUTE_MS, T0 + 3 * MINUTE_MS]
    );
}

pub async fn max_minute_is_the_newest_stored_minute(store: &dyn TimeSeriesStore) {
    assert_eq!(store.max_minute().await.expect("max of empty"), None);
    store
        .write_points(&[
            point("m1", METER, Metric::Power, 3, &[1.0]),
            point("m2", METER, Metric::Power, 1, &[1.0]),
        ])
        .await
        .expect("write");
    assert_eq!(
        store.max_minute().await.expect("max"),
        Some(T0 + 3 * MINUTE_MS)
    );
}

pub async fn minutes_lists_the_matching_points_and_merge_recomputes_the_answers(
    store: &dyn TimeSeriesStore,
) {
    store
        .write_points(&[
            point("m1", METER, Metric::Power, 0, &[10.0, 20.0]),
            point("m2", METER, Metric::Power, 0, &[5.0]),
            point("m1", METER, Metric::Power, 1, &[30.0]),
            point("m1", METER, Metric::Voltage, 1, &[230.0]),
            point("a1", ARM, Metric::Power, 0, &[1000.0]),
            point("c1", CLIMATE, Metric::Temperature, 2, &[21.0, 23.0]),
            point("c1", CLIMATE, Metric::Temperature, 7, &[25.0]),
        ])
        .await
        .expect("write");
    let everything = store
        .minutes(&MinuteFilter::default(), T0, T0 + 60 * MINUTE_MS)
        .await
        .expect("all minutes");
    let keys: Vec<(&str, &str, i64)> = everything
        .iter()
        .map(|p| {
            (
                p.device.as_str(),
                p.metric.as_str(),
                (p.minute_ms - T0) / MINUTE_MS,
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("a1", "power", 0),
            ("c1", "temperature", 2),
            ("c1", "temperature", 7),
            ("m1", "power", 0),
            ("m1", "power", 1),
            ("m1", "voltage", 1),
            ("m2", "power", 0),
        ],
        "ordered by device, metric, minute"
    );
    assert_eq!(everything[3].stats.count, 2);
    assert_eq!(everything[3].kind, METER);

    let meters = MinuteFilter {
        device: None,
        kind: Some(METER),
        metric: Some(Metric::Power),
    };
    let meter_power = store
        .minutes(&meters, T0 + MINUTE_MS, T0 + 60 * MINUTE_MS)
        .await
        .expect("meter power from minute 1");
    assert_eq!(meter_power.len(), 1, "{meter_power:?}");

    // The store's own answers equal the merge of its minutes.
    let range = (T0, T0 + 60 * MINUTE_MS);
    let flow = store.power_flow(range.0, range.1).await.expect("flow");
    let all_meters = store
        .minutes(&meters, range.0, range.1)
        .await
        .expect("meters");
    assert_eq!(flow, merge::power_flow(all_meters));
    let c1 = MinuteFilter {
        device: Some(dev("c1")),
        kind: None,
        metric: Some(Metric::Temperature),
    };
    let series = store
        .series(&dev("c1"), Metric::Temperature, range.0, range.1, 5)
        .await
        .expect("series");
    let c1_minutes = store.minutes(&c1, range.0, range.1).await.expect("c1");
    assert_eq!(
        series,
        merge::series_windows(c1_minutes.into_iter().map(|p| (p.minute_ms, p.stats)), 5)
    );
}

/// Shared stores only: two nodes that each sequenced part of one minute (a
/// failover in the middle of it) write their shares through `a` and `b`.
/// Neither overwrites the other, each reopens its own share, and every
/// answer counts each reading once.
pub async fn two_nodes_shares_of_one_minute_add_up(
    a: &dyn TimeSeriesStore,
    b: &dyn TimeSeriesStore,
) {
    assert!(a.shared() && b.shared(), "a shared store says so");
    let share_a = point("m1", METER, Metric::Power, 3, &[10.0, 20.0]);
    let mut share_b = point("m1", METER, Metric::Power, 3, &[30.0, 40.0, 50.0]);
    // b's readings came after a's in the minute.
    share_b.stats.last_ts_ms += 30_000;
    share_b.stats.last_seq += 10;
    a.write_points(std::slice::from_ref(&share_a))
        .await
        .expect("write a");
    b.write_points(std::slice::from_ref(&share_b))
        .await
        .expect("write b");
    // A replay of a's share after a crash changes nothing.
    a.write_points(std::slice::from_ref(&share_a))
        .await
        .expect("replay a");

    let minute = share_a.minute_ms;
    let own_a = a
        .point(&dev("m1"), Metric::Power, minute)
        .await
        .expect("point a");
    let own_b = b
        .point(&dev("m1"), Metric::Power, minute)
        .await
        .expect("point b");
    assert_eq!(own_a, Some(share_a.clone()), "a reopens its own share");
    assert_eq!(own_b, Some(share_b.clone()), "b reopens its own share");

    let whole = merge::merge_points([share_a.clone(), share_b.clone()]);
    for store in [a, b] {
        let minutes = store
            .minutes(&MinuteFilter::default(), T0, T0 + 10 * MINUTE_MS)
            .await
            .expect("minutes");
        assert_eq!(minutes.len(), 1, "one key, shares merged");
        assert_eq!(minutes[0].stats, whole[0].stats);
        assert_eq!(minutes[0].stats.count, 5);
        let flow = store
            .power_flow(T0, T0 + 10 * MINUTE_MS)
            .await
            .expect("power flow");
        assert_eq!(
            flow,
            vec![PowerFlowMinute {
                minute_ms: minute,
                total_kw: 30.0,
                meters: 1,
            }]
        );
        let latest = store
            .latest(&LatestFilter::default())
            .await
            .expect("latest");
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].value, 50.0, "the newest reading over both shares");
    }
    let later = point("m1", METER, Metric::Power, 7, &[1.0]);
    b.write_points(std::slice::from_ref(&later))
        .await
        .expect("write b later");
    assert_eq!(
        a.max_minute().await.expect("max a"),
        Some(minute),
        "a's own newest"
    );
    assert_eq!(b.max_minute().await.expect("max b"), Some(later.minute_ms));
}
