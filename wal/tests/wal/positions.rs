//! `PositionStore`: durable named positions.

use vatio_wal::{LogError, Position, PositionStore};

#[tokio::test]
async fn positions_round_trip_and_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PositionStore::open(dir.path().join("positions")).expect("open");
    assert_eq!(store.load("archiver").expect("load"), None);
    store.commit("archiver", Position(1234)).expect("commit");
    assert_eq!(store.load("archiver").expect("load"), Some(Position(1234)));
    store
        .commit("archiver", Position(99_999))
        .expect("overwrite");
    store
        .clone()
        .commit_async("stream-etl", Position(7))
        .await
        .expect("commit_async");

    let reopened = PositionStore::open(dir.path().join("positions")).expect("reopen");
    assert_eq!(
        reopened.load("archiver").expect("load"),
        Some(Position(99_999))
    );
    assert_eq!(
        reopened.load("stream-etl").expect("load"),
        Some(Position(7))
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("positions"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "no temporary files remain: {leftovers:?}"
    );
}

#[tokio::test]
async fn a_corrupt_position_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PositionStore::open(dir.path()).expect("open");
    store.commit("aggregator", Position(42)).expect("commit");
    let path = dir.path().join("aggregator.pos");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[0] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    match store.load("aggregator") {
        Err(LogError::Corrupt {
            path: p, detail, ..
        }) => {
            assert_eq!(p, path);
            assert!(detail.contains("checksum"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::write(&path, b"short").expect("write");
    let err = store.load("aggregator").expect_err("corrupt");
    assert!(err.to_string().contains("5 bytes"), "{err}");
    // A fresh commit repairs it.
    store.commit("aggregator", Position(43)).expect("commit");
    assert_eq!(store.load("aggregator").expect("load"), Some(Position(43)));
}

#[test]
fn position_names_must_be_plain_file_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = PositionStore::open(dir.path()).expect("open");
    for bad in ["", "../escape", "a/b", ".hidden"] {
        let err = store.commit(bad, Position(1)).expect_err("invalid name");
        assert!(err.to_string().contains("invalid position name"), "{err}");
    }
}
