//! [`DeadLetterStore`] conformance: every field of a refused reading is
//! kept, a keyed letter is stored once however often it is delivered, lists
//! filter and come newest first, replays are recorded, counts group by
//! reason.

use vatio_stores::{
    DeadLetter, DeadLetterFilter, DeadLetterId, DeadLetterReason, DeadLetterStore, NewDeadLetter,
    RawReading,
};

use super::T0;

fn letter(device: &str, seq: u64, reason: DeadLetterReason) -> NewDeadLetter {
    NewDeadLetter {
        reading: RawReading {
            device_id: device.to_owned(),
            seq,
            ts_ms: T0 + seq as i64,
            metric: "humidity".to_owned(),
            value: 130.0,
            unit: "%".to_owned(),
            kind: 1,
        },
        reason,
        detail: format!("{reason} for {device}/{seq}"),
        source: "gateway-7 10.0.0.7:5000".to_owned(),
        received_ms: T0 + 10_000 + seq as i64,
        key: None,
    }
}

/// A letter as the dead-letter office files it from a log record: keyed by
/// the record's position and the reading's index in it.
fn keyed(device: &str, seq: u64, position: u64, index: u32) -> NewDeadLetter {
    NewDeadLetter {
        key: Some(format!("log:{position}:{index}")),
        ..letter(device, seq, DeadLetterReason::OutOfRange)
    }
}

fn seqs(letters: &[DeadLetter]) -> Vec<u64> {
    letters.iter().map(|l| l.letter.reading.seq).collect()
}

fn pending() -> DeadLetterFilter {
    DeadLetterFilter::default()
}

pub async fn every_field_reads_back_and_ids_follow_input_order(store: &dyn DeadLetterStore) {
    use DeadLetterReason::*;
    let mut odd = letter("", u64::MAX, MissingField);
    // What arrives may be anything: a NaN, an infinity, a negative time.
    odd.reading.value = f64::NAN;
    odd.reading.ts_ms = -5;
    odd.reading.kind = -3;
    odd.reading.metric = String::new();
    let mut inf = letter("c1", 2, NotFinite);
    inf.reading.value = f64::NEG_INFINITY;
    inf.key = Some("log:4096:2".to_owned());
    let letters = vec![letter("c1", 1, OutOfRange), odd.clone(), inf.clone()];

    let ids = store.insert(&letters).await.expect("insert");
    assert_eq!(ids.len(), 3);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids grow in input order: {ids:?}"
    );

    let listed = store.list(&pending()).await.expect("list");
    assert_eq!(
        listed.iter().map(|l| l.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<DeadLetterId>>(),
        "newest first"
    );
    for stored in &listed {
        assert_eq!(stored.replayed_ms, None);
        assert_eq!(stored.replay_attempts, 0);
    }
    assert_eq!(listed[2].letter, letters[0]);
    assert_eq!(listed[0].letter, inf);
    let nan = &listed[1].letter;
    assert!(nan.reading.value.is_nan());
    let mut nan_free = nan.clone();
    nan_free.reading.value = 0.0;
    odd.reading.value = 0.0;
    assert_eq!(nan_free, odd);

    assert!(store.insert(&[]).await.expect("empty insert").is_empty());
}

pub async fn a_keyed_letter_is_stored_once(store: &dyn DeadLetterStore) {
    let first = keyed("c1", 1, 4096, 0);
    let second = keyed("c1", 2, 4096, 1);

    // Twice within one call: the second copy is skipped and has no id.
    let ids = store
        .insert(&[first.clone(), first.clone()])
        .await
        .expect("insert");
    assert_eq!(ids.len(), 1);

    // Delivered again after a restart, next to a new letter: only the new
    // one is stored and only its id comes back.
    let again = store
        .insert(&[first.clone(), second.clone(), first.clone()])
        .await
        .expect("insert again");
    assert_eq!(again.len(), 1);
    assert!(again[0] > ids[0]);

    let stored = store.list(&pending()).await.expect("list");
    assert_eq!(
        stored.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![again[0], ids[0]]
    );
    assert_eq!(stored[0].letter, second);
    assert_eq!(stored[1].letter, first, "the first copy, key included");
    assert_eq!(
        store.counts().await.expect("counts"),
        vec![(DeadLetterReason::OutOfRange, 2)]
    );

    // The key alone identifies the letter: different contents under a
    // stored key are a redelivery too.
    let mut changed = first.clone();
    changed.detail = "filed again with other words".to_owned();
    assert!(store.insert(&[changed]).await.expect("insert").is_empty());
    assert_eq!(store.list(&pending()).await.expect("list").len(), 2);
}

pub async fn a_keyed_letter_delivered_after_its_replay_stays_replayed(store: &dyn DeadLetterStore) {
    let l = keyed("c1", 1, 8192, 0);
    let ids = store
        .insert(std::slice::from_ref(&l))
        .await
        .expect("insert");
    store
        .mark_replayed(&ids, T0 + 60_000)
        .await
        .expect("replayed");
    assert!(store.insert(&[l]).await.expect("redeliver").is_empty());
    assert!(store.list(&pending()).await.expect("list").is_empty());
    let all = store
        .list(&DeadLetterFilter {
            include_replayed: true,
            ..pending()
        })
        .await
        .expect("list all");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].replayed_ms, Some(T0 + 60_000));
}

pub async fn unkeyed_letters_are_never_deduplicated(store: &dyn DeadLetterStore) {
    let l = letter("c1", 1, DeadLetterReason::Late);
    let ids = store.insert(&[l.clone(), l.clone()]).await.expect("insert");
    assert_eq!(ids.len(), 2);
    let more = store
        .insert(&[l.clone(), keyed("c1", 1, 0, 0)])
        .await
        .expect("insert again");
    assert_eq!(more.len(), 2);
    let stored = store.list(&pending()).await.expect("list");
    assert_eq!(stored.len(), 4);
    assert_eq!(stored.iter().filter(|s| s.letter == l).count(), 3);
}

pub async fn list_filters_by_reason_device_and_pending(store: &dyn DeadLetterStore) {
    use DeadLetterReason::*;
    let ids = store
        .insert(&[
            letter("c1", 1, OutOfRange),
            letter("c2", 2, UnknownUnit),
            letter("c1", 3, UnknownUnit),
            letter("c1", 4, OutOfRange),
            letter("c3", 5, Late),
        ])
        .await
        .expect("insert");
    store
        .mark_replayed(&[ids[3]], T0 + 99_000)
        .await
        .expect("mark replayed");

    let list =
        |filter: DeadLetterFilter| async move { seqs(&store.list(&filter).await.expect("list")) };
    assert_eq!(list(pending()).await, vec![5, 3, 2, 1]);
    assert_eq!(
        list(DeadLetterFilter {
            include_replayed: true,
            ..pending()
        })
        .await,
        vec![5, 4, 3, 2, 1]
    );
    assert_eq!(
        list(DeadLetterFilter {
            reason: Some(OutOfRange),
            ..pending()
        })
        .await,
        vec![1]
    );
    assert_eq!(
        list(DeadLetterFilter {
            reason: Some(OutOfRange),
            include_replayed: true,
            ..pending()
        })
        .await,
        vec![4, 1]
    );
    assert_eq!(
        list(DeadLetterFilter {
            device: Some("c1".to_owned()),
            ..pending()
        })
        .await,
        vec![3, 1]
    );
    assert_eq!(
        list(DeadLetterFilter {
            device: Some("c1".to_owned()),
            reason: Some(UnknownUnit),
            ..pending()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        list(DeadLetterFilter {
            limit: 2,
            include_replayed: true,
            ..pending()
        })
        .await,
        vec![5, 4]
    );
}

pub async fn a_replayed_letter_leaves_the_pending_set(store: &dyn DeadLetterStore) {
    let ids = store
        .insert(&[
            letter("c1", 1, DeadLetterReason::Late),
            letter("c1", 2, DeadLetterReason::Late),
            letter("c1", 3, DeadLetterReason::Late),
        ])
        .await
        .expect("insert");
    store
        .mark_replayed(&[ids[0], ids[2]], T0 + 60_000)
        .await
        .expect("mark replayed");
    store.mark_replayed(&[], T0).await.expect("empty mark");

    assert_eq!(seqs(&store.list(&pending()).await.expect("list")), vec![2]);
    let all = store
        .list(&DeadLetterFilter {
            include_replayed: true,
            ..pending()
        })
        .await
        .expect("list all");
    let replayed: Vec<(u64, Option<i64>, u32)> = all
        .iter()
        .map(|l| (l.letter.reading.seq, l.replayed_ms, l.replay_attempts))
        .collect();
    assert_eq!(
        replayed,
        vec![
            (3, Some(T0 + 60_000), 1),
            (2, None, 0),
            (1, Some(T0 + 60_000), 1),
        ]
    );
}

pub async fn a_replay_refused_again_records_the_new_reason(store: &dyn DeadLetterStore) {
    let ids = store
        .insert(&[letter("c1", 1, DeadLetterReason::UnknownUnit)])
        .await
        .expect("insert");
    for round in 1..=2_u32 {
        store
            .mark_refused_again(
                ids[0],
                DeadLetterReason::OutOfRange,
                &format!("still refused, round {round}"),
            )
            .await
            .expect("refused again");
    }
    let stored = store.list(&pending()).await.expect("list");
    assert_eq!(stored.len(), 1, "still pending");
    assert_eq!(stored[0].letter.reason, DeadLetterReason::OutOfRange);
    assert_eq!(stored[0].letter.detail, "still refused, round 2");
    assert_eq!(stored[0].replay_attempts, 2);
    assert_eq!(stored[0].replayed_ms, None);
    assert_eq!(
        stored[0].letter.reading,
        letter("c1", 1, DeadLetterReason::UnknownUnit).reading
    );
}

pub async fn counts_group_every_letter_by_reason(store: &dyn DeadLetterStore) {
    use DeadLetterReason::*;
    assert!(store.counts().await.expect("counts").is_empty());
    let ids = store
        .insert(&[
            letter("c1", 1, OutOfRange),
            letter("c1", 2, UnknownUnit),
            letter("c1", 3, OutOfRange),
            letter("c1", 4, Poison),
        ])
        .await
        .expect("insert");
    // Replayed letters still count; a changed reason moves the letter.
    store.mark_replayed(&[ids[0]], T0).await.expect("replayed");
    store
        .mark_refused_again(ids[1], OutOfRange, "converted, still out of range")
        .await
        .expect("refused again");
    // By reason name.
    assert_eq!(
        store.counts().await.expect("counts"),
        vec![(OutOfRange, 3), (Poison, 1)]
    );
}
