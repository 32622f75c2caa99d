//! [`CheckpointStore`] conformance: a store starts without a checkpoint, a
//! save loads back whole (position and states of one save, never a mix),
//! later saves upsert only the devices they name, and a node's worth of
//! devices saves in one go.

use vatio_stores::{Checkpoint, CheckpointStore, DeviceId};

use super::dev;

/// A state encoding for the tests: the device's last seq, little-endian.
fn state(last_seq: u64) -> Vec<u8> {
    last_seq.to_le_bytes().to_vec()
}

fn states(devices: &[(&str, Vec<u8>)]) -> Vec<(DeviceId, Vec<u8>)> {
    devices.iter().map(|(id, s)| (dev(id), s.clone())).collect()
}

pub async fn an_empty_store_has_no_checkpoint(store: &dyn CheckpointStore) {
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded, Checkpoint::default());
    assert_eq!(loaded.position, None, "replay the whole log");
    assert!(loaded.devices.is_empty());
}

pub async fn a_saved_checkpoint_loads_back(store: &dyn CheckpointStore) {
    // Saved out of order; states are opaque bytes, empty ones included.
    let saved = states(&[
        ("m2", state(7)),
        ("c1", (0..=255).collect()),
        ("a1", Vec::new()),
        ("m1", state(u64::MAX)),
    ]);
    store.save(4096, &saved).await.expect("save");

    let mut by_device = saved.clone();
    by_device.sort();
    assert_eq!(
        store.load().await.expect("load"),
        Checkpoint {
            position: Some(4096),
            devices: by_device,
        },
        "devices come back ordered by device"
    );
}

pub async fn a_later_save_upserts_only_changed_devices_and_moves_the_position(
    store: &dyn CheckpointStore,
) {
    store
        .save(
            1024,
            &states(&[("c1", state(1)), ("c2", state(1)), ("m1", state(1))]),
        )
        .await
        .expect("first save");
    // c2 changed and d9 is new; c1 and m1 are not named and keep their state.
    store
        .save(2048, &states(&[("c2", state(5)), ("d9", state(1))]))
        .await
        .expect("second save");
    assert_eq!(
        store.load().await.expect("load"),
        Checkpoint {
            position: Some(2048),
            devices: states(&[
                ("c1", state(1)),
                ("c2", state(5)),
                ("d9", state(1)),
                ("m1", state(1)),
            ]),
        }
    );

    // Nothing changed since: the position still moves.
    store.save(3072, &[]).await.expect("third save");
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.position, Some(3072));
    assert_eq!(loaded.devices.len(), 4);
}

pub async fn a_save_is_seen_whole(store: &dyn CheckpointStore) {
    // Every save writes each device's state as its own position, so a load
    // that mixed two saves would show a state that differs from the position.
    let devices: Vec<String> = (0..50).map(|i| format!("d{i:02}")).collect();
    let save_at = |position: u64| {
        let changed: Vec<(DeviceId, Vec<u8>)> =
            devices.iter().map(|d| (dev(d), state(position))).collect();
        async move { store.save(position, &changed).await }
    };
    for position in 1..=20_u64 {
        // A load racing with the save sees it all or not at all.
        let (saved, loaded) = futures::join!(save_at(position * 512), store.load());
        saved.expect("save");
        let loaded = loaded.expect("load");
        match loaded.position {
            None => assert!(loaded.devices.is_empty(), "{loaded:?}"),
            Some(at) => {
                assert_eq!(loaded.devices.len(), devices.len());
                for (device, s) in &loaded.devices {
                    assert_eq!(s, &state(at), "{device} is from another save than {at}");
                }
            }
        }
        let after = store.load().await.expect("load after save");
        assert_eq!(after.position, Some(position * 512));
        assert!(
            after
                .devices
                .iter()
                .all(|(_, s)| s == &state(position * 512))
        );
    }
}

pub async fn a_save_of_ten_thousand_devices_works(store: &dyn CheckpointStore) {
    let mut devices: Vec<(DeviceId, Vec<u8>)> = (0..10_000_u64)
        .map(|i| {
            // A realistic state: last seq plus a short reorder buffer.
            let mut s = state(i);
            s.extend_from_slice(&[i as u8; 40]);
            (dev(&format!("device-{i:05}")), s)
        })
        .collect();
    store.save(1 << 30, &devices).await.expect("large save");
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.position, Some(1 << 30));
    assert_eq!(loaded.devices, devices);

    // One device changes among them: one upsert, the rest stays.
    devices[4_321].1 = state(99_999);
    store
        .save((1 << 30) + 64, &devices[4_321..4_322])
        .await
        .expect("small save");
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.position, Some((1 << 30) + 64));
    assert_eq!(loaded.devices, devices);
}
