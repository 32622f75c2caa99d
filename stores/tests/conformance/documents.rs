//! [`DocumentStore`] conformance: minute documents (with their log
//! positions) and events upserted by stable id, event filters and order, and
//! the retention sweep.

use std::collections::BTreeMap;

use vatio_stores::{
    DeviceKind, DocumentStore, Event, EventFilter, EventType, MINUTE_MS, Metric, MinuteDoc, UnixMs,
};

use super::{T0, dev, log_end, stats_of};

/// The document of one minute's readings, with the log position of the last
/// of them.
fn doc(device: &str, minute: i64, metrics: &[(Metric, &[f64])]) -> MinuteDoc {
    let minute_ms = T0 + minute * MINUTE_MS;
    let readings = metrics.iter().map(|(_, values)| values.len()).sum();
    MinuteDoc {
        device: dev(device),
        kind: DeviceKind::ClimateSensor,
        minute_ms,
        metrics: metrics
            .iter()
            .map(|(m, values)| (*m, stats_of(minute_ms, values)))
            .collect::<BTreeMap<_, _>>(),
        log_pos: log_end(minute, readings),
    }
}

fn event(device: &str, kind: DeviceKind, event_type: EventType, seq: u64, ts_ms: UnixMs) -> Event {
    let metric = match event_type {
        EventType::OverTemperature => Metric::Temperature,
        EventType::HighHumidity => Metric::Humidity,
        EventType::PowerSpike => Metric::Power,
        EventType::VibrationFault => Metric::Vibration,
        EventType::TorqueFault => Metric::Torque,
    };
    Event {
        device: dev(device),
        kind,
        event_type,
        metric,
        value: 90.5,
        threshold: 80.0,
        ts_ms,
        seq,
    }
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(Event::id).collect()
}

pub async fn upserting_a_minute_doc_replaces_it(store: &dyn DocumentStore) {
    let first = doc("c1", 0, &[(Metric::Temperature, &[20.0, 21.0])]);
    store
        .upsert_minute_docs(std::slice::from_ref(&first))
        .await
        .expect("upsert");
    store
        .upsert_minute_docs(std::slice::from_ref(&first))
        .await
        .expect("upsert again");
    assert_eq!(
        store
            .minute_doc(&dev("c1"), first.minute_ms)
            .await
            .expect("get"),
        Some(first.clone())
    );

    let fuller = doc(
        "c1",
        0,
        &[
            (Metric::Temperature, &[20.0, 21.0, 19.5]),
            (Metric::Humidity, &[45.0]),
        ],
    );
    assert!(fuller.log_pos > first.log_pos);
    store
        .upsert_minute_docs(std::slice::from_ref(&fuller))
        .await
        .expect("replace");
    assert_eq!(
        store
            .minute_doc(&dev("c1"), first.minute_ms)
            .await
            .expect("get"),
        Some(fuller)
    );
    assert_eq!(
        store
            .minute_doc(&dev("c1"), first.minute_ms + MINUTE_MS)
            .await
            .expect("get other minute"),
        None
    );
    assert_eq!(
        store
            .minute_doc(&dev("c2"), first.minute_ms)
            .await
            .expect("get other device"),
        None
    );
}

pub async fn a_minute_docs_log_position_reads_back_as_written(store: &dyn DocumentStore) {
    // 0 is "unknown" (a document written before positions were kept); the
    // largest position every backend keeps is i64::MAX.
    let positions = [0, 1, log_end(7, 3), (1 << 40) + 17, i64::MAX as u64];
    let docs: Vec<_> = positions
        .iter()
        .enumerate()
        .map(|(i, &log_pos)| {
            let mut d = doc("c1", i as i64, &[(Metric::Temperature, &[20.0])]);
            d.log_pos = log_pos;
            d
        })
        .collect();
    store.upsert_minute_docs(&docs).await.expect("upsert");
    for d in &docs {
        let stored = store
            .minute_doc(&d.device, d.minute_ms)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.log_pos, d.log_pos);
        assert_eq!(&stored, d);
    }
}

pub async fn upserting_an_event_replaces_it(store: &dyn DocumentStore) {
    let first = event(
        "c1",
        DeviceKind::ClimateSensor,
        EventType::OverTemperature,
        7,
        T0,
    );
    store
        .upsert_events(&[first.clone(), first.clone()])
        .await
        .expect("upsert");
    let mut changed = first.clone();
    changed.value = 95.0;
    changed.threshold = 85.0;
    store
        .upsert_events(std::slice::from_ref(&changed))
        .await
        .expect("replace");
    let all = store.events(&EventFilter::default()).await.expect("events");
    assert_eq!(all, vec![changed]);
}

pub async fn events_filter_and_come_newest_first(store: &dyn DocumentStore) {
    use DeviceKind::{ClimateSensor as C, ElectricityMeter as M, RobotArm as A};
    use EventType::*;
    let events = vec![
        event("c1", C, OverTemperature, 1, T0),
        event("c1", C, HighHumidity, 2, T0 + 1000),
        event("c2", C, OverTemperature, 5, T0 + 2000),
        event("a1", A, VibrationFault, 9, T0 + 3000),
        event("a1", A, TorqueFault, 9, T0 + 3000),
        event("m1", M, PowerSpike, 4, T0 + 4000),
        event("a1", A, OverTemperature, 10, T0 + 5000),
    ];
    store.upsert_events(&events).await.expect("upsert");
    let query =
        |filter: EventFilter| async move { ids(&store.events(&filter).await.expect("events")) };

    // Newest first; equal times by id, descending like the times.
    assert_eq!(
        query(EventFilter::default()).await,
        vec![
            "a1/10/over_temperature",
            "m1/4/power_spike",
            "a1/9/vibration_fault",
            "a1/9/torque_fault",
            "c2/5/over_temperature",
            "c1/2/high_humidity",
            "c1/1/over_temperature",
        ]
    );
    assert_eq!(
        query(EventFilter {
            device: Some(dev("a1")),
            ..EventFilter::default()
        })
        .await,
        vec![
            "a1/10/over_temperature",
            "a1/9/vibration_fault",
            "a1/9/torque_fault"
        ]
    );
    assert_eq!(
        query(EventFilter {
            kind: Some(C),
            ..EventFilter::default()
        })
        .await,
        vec![
            "c2/5/over_temperature",
            "c1/2/high_humidity",
            "c1/1/over_temperature"
        ]
    );
    assert_eq!(
        query(EventFilter {
            event_type: Some(OverTemperature),
            ..EventFilter::default()
        })
        .await,
        vec![
            "a1/10/over_temperature",
            "c2/5/over_temperature",
            "c1/1/over_temperature"
        ]
    );
    // The time range is half-open: [from, to).
    assert_eq!(
        query(EventFilter {
            from_ms: Some(T0 + 1000),
            to_ms: Some(T0 + 4000),
            ..EventFilter::default()
        })
        .await,
        vec![
            "a1/9/vibration_fault",
            "a1/9/torque_fault",
            "c2/5/over_temperature",
            "c1/2/high_humidity",
        ]
    );
    assert_eq!(
        query(EventFilter {
            kind: Some(A),
            event_type: Some(OverTemperature),
            from_ms: Some(T0),
            ..EventFilter::default()
        })
        .await,
        vec!["a1/10/over_temperature"]
    );
    assert_eq!(
        query(EventFilter {
            limit: 2,
            ..EventFilter::default()
        })
        .await,
        vec!["a1/10/over_temperature", "m1/4/power_spike"]
    );
    // Every field reads back as written.
    let stored = store
        .events(&EventFilter {
            device: Some(dev("m1")),
            ..EventFilter::default()
        })
        .await
        .expect("events of m1");
    assert_eq!(stored, vec![events[5].clone()]);
}

pub async fn sweep_deletes_documents_and_events_before_the_cutoff(store: &dyn DocumentStore) {
    let docs: Vec<MinuteDoc> = (0..4)
        .map(|minute| doc("c1", minute, &[(Metric::Temperature, &[20.0])]))
        .collect();
    store.upsert_minute_docs(&docs).await.expect("docs");
    let events: Vec<Event> = (0..5)
        .map(|i| {
            event(
                "c1",
                DeviceKind::ClimateSensor,
                EventType::OverTemperature,
                i + 1,
                T0 + i as i64 * 30_000,
            )
        })
        .collect();
    store.upsert_events(&events).await.expect("events");

    // Cutoff at minute 2: docs of minutes 0 and 1, events at 0 s, 30 s,
    // 60 s and 90 s go; the event exactly at the cutoff stays.
    let cutoff = T0 + 2 * MINUTE_MS;
    let deleted = store.sweep_before(cutoff).await.expect("sweep");
    assert_eq!(deleted, 2 + 4);
    assert_eq!(store.minute_doc(&dev("c1"), T0).await.expect("get"), None);
    assert_eq!(
        store
            .minute_doc(&dev("c1"), T0 + MINUTE_MS)
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        store.minute_doc(&dev("c1"), cutoff).await.expect("get"),
        Some(docs[2].clone())
    );
    let left = store.events(&EventFilter::default()).await.expect("events");
    assert_eq!(left, vec![events[4].clone()]);

    assert_eq!(store.sweep_before(cutoff).await.expect("sweep again"), 0);
}

pub async fn max_minute_is_the_newest_stored_document_minute(store: &dyn DocumentStore) {
    assert_eq!(store.max_minute().await.expect("max of empty"), None);
    store
        .upsert_minute_docs(&[
            doc("c1", 2, &[(Metric::Temperature, &[20.0])]),
            doc("c2", 5, &[(Metric::Temperature, &[21.0])]),
        ])
        .await
        .expect("upsert");
    assert_eq!(
        store.max_minute().await.expect("max"),
        Some(T0 + 5 * MINUTE_MS)
    );
}

/// Shared stores only: `a` and `b` are two nodes' handles on one store.
/// Both sequenced part of one device·minute (a failover in the middle of
/// it); each keeps and reads back its own share, and each node's newest
/// minute is its own.
pub async fn two_nodes_shares_of_one_minute_stay_apart(
    a: &dyn DocumentStore,
    b: &dyn DocumentStore,
) {
    let share_a = doc("c1", 3, &[(Metric::Temperature, &[20.0, 21.0])]);
    let mut share_b = doc(
        "c1",
        3,
        &[(Metric::Temperature, &[22.0]), (Metric::Humidity, &[40.0])],
    );
    // b's log is its own: its positions are unrelated to a's.
    share_b.log_pos = log_end(50, 7);
    a.upsert_minute_docs(std::slice::from_ref(&share_a))
        .await
        .expect("a's share");
    b.upsert_minute_docs(&[
        share_b.clone(),
        doc("c2", 5, &[(Metric::Temperature, &[19.0])]),
    ])
    .await
    .expect("b's shares");
    let minute_ms = share_a.minute_ms;
    assert_eq!(
        a.minute_doc(&dev("c1"), minute_ms).await.expect("a reads"),
        Some(share_a.clone())
    );
    assert_eq!(
        b.minute_doc(&dev("c1"), minute_ms).await.expect("b reads"),
        Some(share_b.clone())
    );
    assert_eq!(
        a.minute_doc(&dev("c2"), T0 + 5 * MINUTE_MS)
            .await
            .expect("a reads b's minute"),
        None,
        "a minute only b wrote is not a's"
    );
    assert_eq!(a.max_minute().await.expect("a's max"), Some(minute_ms));
    assert_eq!(
        b.max_minute().await.expect("b's max"),
        Some(T0 + 5 * MINUTE_MS)
    );

    // a rewrites its share and moves on; b's share and newest minute stay.
    let fuller_a = doc("c1", 3, &[(Metric::Temperature, &[20.0, 21.0, 23.0])]);
    a.upsert_minute_docs(&[
        fuller_a.clone(),
        doc("c1", 7, &[(Metric::Temperature, &[18.0])]),
    ])
    .await
    .expect("a again");
    assert_eq!(
        a.minute_doc(&dev("c1"), minute_ms).await.expect("a reads"),
        Some(fuller_a)
    );
    assert_eq!(
        b.minute_doc(&dev("c1"), minute_ms).await.expect("b reads"),
        Some(share_b)
    );
    assert_eq!(
        a.max_minute().await.expect("a's max"),
        Some(T0 + 7 * MINUTE_MS)
    );
    assert_eq!(
        b.max_minute().await.expect("b's max"),
        Some(T0 + 5 * MINUTE_MS)
    );
}

/// A store every node of a cluster writes to says so.
pub async fn a_shared_store_says_so(store: &dyn DocumentStore) {
    assert!(store.shared());
}
