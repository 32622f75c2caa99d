//! The documents conformance suite against [`MongoDocuments`] on a real
//! MongoDB-compatible server (the process-wide SecantusDB of
//! `vatio-test-servers`, each test in a database of its own), plus what only
//! this backend promises, checked through the plain `mongodb` driver rather
//! than vatio's code: the documents' shape and `_id`s, the indexes and their
//! TTL (retuned when the retention changes), per-document refusals of an
//! unordered batch, transient errors while the server is down, and
//! connection strings refused without showing their password.

mod conformance;

use std::time::{Duration, Instant};

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{Client, Database};
use vatio_config::MongoDbConfig;
use vatio_stores::mongodb::MongoDocuments;
use vatio_stores::{
    DeviceKind, DocumentStore, Error, Event, EventFilter, EventType, MINUTE_MS, Metric, MinuteDoc,
    Stats,
};
use vatio_test_servers::{Kind, Server, shared, unique_name};

use conformance::{T0, dev};

/// The retention the node is configured with.
const RETENTION: Duration = Duration::from_secs(168 * 3600);
const STORE: &str = "mongodb documents";

fn config(database: &str) -> MongoDbConfig {
    MongoDbConfig {
        uri: shared(Kind::SecantusDb).url(),
        database: database.to_owned(),
    }
}

async fn documents_of(database: &str, node: &str, retention: Duration) -> MongoDocuments {
    MongoDocuments::connect(&config(database), node, retention)
        .await
        .expect("connect")
}

/// A store on a database no other test uses, as node `node-a`.
async fn fresh() -> MongoDocuments {
    documents_of(&unique_name("t"), "node-a", RETENTION).await
}

/// The same database through the plain driver.
async fn raw(database: &str) -> Database {
    Client::with_uri_str(shared(Kind::SecantusDb).url())
        .await
        .expect("raw client")
        .database(database)
}

/// One tokio test per conformance check, each on a fresh database.
macro_rules! conformance {
    ($suite:ident, $open:path: $($check:ident),+ $(,)?) => {
        mod $suite {
            $(
                #[tokio::test]
                async fn $check() {
                    let backend = $open().await;
                    crate::conformance::$suite::$check(&backend).await;
                }
            )+
        }
    };
}

conformance!(documents, crate::fresh:
    upserting_a_minute_doc_replaces_it,
    a_minute_docs_log_position_reads_back_as_written,
    upserting_an_event_replaces_it,
    events_filter_and_come_newest_first,
    sweep_deletes_documents_and_events_before_the_cutoff,
    max_minute_is_the_newest_stored_document_minute,
    a_shared_store_says_so,
);

#[tokio::test]
async fn two_nodes_shares_of_one_minute_stay_apart() {
    let database = unique_name("t");
    let a = documents_of(&database, "node-a", RETENTION).await;
    let b = documents_of(&database, "node-b", RETENTION).await;
    conformance::documents::two_nodes_shares_of_one_minute_stay_apart(&a, &b).await;
}

fn stats(count: u64, value: f64, seq: u64) -> Stats {
    Stats {
        count,
        min: value,
        max: value,
        sum: value * count as f64,
        last: value,
        last_ts_ms: T0 + 1000,
        last_seq: seq,
    }
}

fn event(device: &str, seq: u64, value: f64) -> Event {
    Event {
        device: dev(device),
        kind: DeviceKind::ClimateSensor,
        event_type: EventType::OverTemperature,
        metric: Metric::Temperature,
        value,
        threshold: 40.0,
        ts_ms: T0 + seq as i64 * 1000,
        seq,
    }
}

/// Every document of a collection, by `_id`.
async fn all(db: &Database, collection: &str) -> Vec<Document> {
    use futures::TryStreamExt;
    db.collection::<Document>(collection)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("documents")
}

#[tokio::test]
async fn documents_have_the_documented_shape_and_ids() {
    let database = unique_name("t");
    let store = documents_of(&database, "node-a", RETENTION).await;
    let minute = MinuteDoc {
        device: dev("c1"),
        kind: DeviceKind::ClimateSensor,
        minute_ms: T0,
        metrics: [
            (Metric::Temperature, stats(2, 21.5, 8)),
            (Metric::Humidity, stats(1, 40.0, 7)),
        ]
        .into(),
        log_pos: 4096,
    };
    store
        .upsert_minute_docs(std::slice::from_ref(&minute))
        .await
        .expect("minute doc");
    store
        .upsert_events(&[event("c1", 8, 41.5)])
        .await
        .expect("event");

    let db = raw(&database).await;
    let id = format!("c1/{T0}/node-a");
    let metric = |count: i64, value: f64, seq: i64| {
        doc! {
            "count": count, "min": value, "max": value, "sum": value * count as f64,
            "last": value, "last_ts_ms": T0 + 1000, "last_seq": seq,
        }
    };
    assert_eq!(
        all(&db, "minute_docs").await,
        vec![doc! {
            "_id": &id,
            "device": "c1",
            "kind": "climate_sensor",
            "node": "node-a",
            "minute": DateTime::from_millis(T0),
            "minute_ms": T0,
            "metrics": {
                "humidity": metric(1, 40.0, 7),
                "temperature": metric(2, 21.5, 8),
            },
            "log_pos": 4096_i64,
        }]
    );
    assert_eq!(
        all(&db, "events").await,
        vec![doc! {
            "_id": "c1/8/over_temperature",
            "device": "c1",
            "kind": "climate_sensor",
            "node": "node-a",
            "event_type": "over_temperature",
            "metric": "temperature",
            "value": 41.5,
            "threshold": 40.0,
            "ts": DateTime::from_millis(T0 + 8000),
            "ts_ms": T0 + 8000,
            "seq": 8_i64,
        }]
    );
}

/// `name → (key, expireAfterSeconds)` of every index of `collection`.
async fn indexes(db: &Database, collection: &str) -> Vec<(String, Document, Option<i64>)> {
    use futures::TryStreamExt;
    let found: Vec<Document> = db
        .run_cursor_command(doc! { "listIndexes": collection })
        .await
        .expect("listIndexes")
        .try_collect()
        .await
        .expect("indexes");
    let mut found: Vec<_> = found
        .into_iter()
        .map(|index| {
            let name = index.get_str("name").expect("name").to_owned();
            let key = index.get_document("key").expect("key").clone();
            let ttl = index.get("expireAfterSeconds").map(|v| match v {
                Bson::Int32(v) => i64::from(*v),
                Bson::Int64(v) => *v,
                Bson::Double(v) => *v as i64,
                other => panic!("expireAfterSeconds {other:?}"),
            });
            (name, key, ttl)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn ttl_of(indexes: &[(String, Document, Option<i64>)], key: &Document) -> Option<i64> {
    let (_, _, ttl) = indexes
        .iter()
        .find(|(_, k, _)| k == key)
        .unwrap_or_else(|| panic!("no index on {key} in {indexes:?}"));
    *ttl
}

#[tokio::test]
async fn the_indexes_exist_with_the_retention_as_ttl() {
    let database = unique_name("t");
    let store = documents_of(&database, "node-a", RETENTION).await;
    // Indexes come with the first operation.
    assert_eq!(store.max_minute().await.expect("max"), None);
    let db = raw(&database).await;
    let keys = |indexes: &[(String, Document, Option<i64>)]| -> Vec<(String, Document)> {
        let mut keys: Vec<_> = indexes
            .iter()
            .map(|(name, key, _)| (name.clone(), key.clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys
    };
    let minute_docs = indexes(&db, "minute_docs").await;
    assert_eq!(
        keys(&minute_docs),
        vec![
            ("_id_".to_owned(), doc! { "_id": 1 }),
            ("minute_ttl".to_owned(), doc! { "minute": 1 }),
            (
                "node_minute".to_owned(),
                doc! { "node": 1, "minute_ms": -1 }
            ),
        ]
    );
    let week = i64::try_from(RETENTION.as_secs()).expect("seconds");
    assert_eq!(ttl_of(&minute_docs, &doc! { "minute": 1 }), Some(week));
    assert_eq!(
        ttl_of(&minute_docs, &doc! { "node": 1, "minute_ms": -1 }),
        None
    );

    let events = indexes(&db, "events").await;
    assert_eq!(
        keys(&events),
        vec![
            ("_id_".to_owned(), doc! { "_id": 1 }),
            ("device_ts".to_owned(), doc! { "device": 1, "ts_ms": -1 }),
            (
                "event_type_ts".to_owned(),
                doc! { "event_type": 1, "ts_ms": -1 }
            ),
            ("kind_ts".to_owned(), doc! { "kind": 1, "ts_ms": -1 }),
            ("ts_id".to_owned(), doc! { "ts_ms": -1, "_id": -1 }),
            ("ts_ttl".to_owned(), doc! { "ts": 1 }),
        ]
    );
    assert_eq!(ttl_of(&events, &doc! { "ts": 1 }), Some(week));
    assert_eq!(ttl_of(&events, &doc! { "ts_ms": -1, "_id": -1 }), None);

    // Opening again with the same retention changes nothing.
    let again = documents_of(&database, "node-b", RETENTION).await;
    assert_eq!(again.max_minute().await.expect("max"), None);
    assert_eq!(indexes(&db, "minute_docs").await, minute_docs);
    assert_eq!(indexes(&db, "events").await, events);
}

#[tokio::test]
async fn a_changed_retention_retunes_the_ttl_indexes() {
    let database = unique_name("t");
    let week = documents_of(&database, "node-a", RETENTION).await;
    week.upsert_events(&[event("c1", 1, 41.0)])
        .await
        .expect("event");
    let day = documents_of(&database, "node-a", Duration::from_secs(24 * 3600)).await;
    // The store works on as before, with the new TTL.
    assert_eq!(
        day.events(&EventFilter::default())
            .await
            .expect("events")
            .len(),
        1
    );
    let db = raw(&database).await;
    assert_eq!(
        ttl_of(&indexes(&db, "minute_docs").await, &doc! { "minute": 1 }),
        Some(86_400)
    );
    assert_eq!(
        ttl_of(&indexes(&db, "events").await, &doc! { "ts": 1 }),
        Some(86_400)
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_a_transient_error_naming_the_store() {
    let cfg = MongoDbConfig {
        uri: "mongodb://127.0.0.1:1".to_owned(),
        database: "vatio".to_owned(),
    };
    // Connecting sends nothing: the node starts while the server is down.
    let store = MongoDocuments::connect(&cfg, "node-a", RETENTION)
        .await
        .expect("connect without a server");
    // An empty write needs no server at all.
    store.upsert_events(&[]).await.expect("empty write");
    store.upsert_minute_docs(&[]).await.expect("empty write");

    // A write and a read, side by side: each fails within the 5 s
    // server-selection timeout (and some slack).
    let started = Instant::now();
    let write = [event("c1", 1, 41.0)];
    let (written, read) = tokio::join!(store.upsert_events(&write), store.max_minute());
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(8), "took {waited:?}");
    for e in [written.expect_err("write"), read.expect_err("read")] {
        assert!(e.is_transient(), "{e:?}");
        assert!(matches!(e, Error::Mongo { .. }), "{e:?}");
        assert!(e.to_string().starts_with(STORE), "{e}");
    }
}

#[tokio::test]
async fn the_indexes_come_with_the_first_operation_once_the_server_is_up() {
    let mut server = Server::start(Kind::SecantusDb).expect("start a server");
    server.kill().expect("kill it");
    let database = unique_name("t");
    let cfg = MongoDbConfig {
        uri: server.url(),
        database: database.clone(),
    };
    let store = MongoDocuments::connect(&cfg, "node-a", RETENTION)
        .await
        .expect("connect while the server is down");
    let e = store.max_minute().await.expect_err("down");
    assert!(e.is_transient(), "{e:?}");

    server.restart().expect("restart");
    let e = event("c1", 1, 41.0);
    store
        .upsert_events(std::slice::from_ref(&e))
        .await
        .expect("written once the server is back");
    let db = Client::with_uri_str(server.url())
        .await
        .expect("raw client")
        .database(&database);
    assert_eq!(
        ttl_of(&indexes(&db, "events").await, &doc! { "ts": 1 }),
        Some(i64::try_from(RETENTION.as_secs()).expect("seconds"))
    );
    assert_eq!(indexes(&db, "minute_docs").await.len(), 3);
}

#[tokio::test]
async fn a_malformed_connection_string_is_refused_without_its_password() {
    for uri in [
        "mongodb://vatio:hunter2@127.0.0.1:27017/?serverSelectionTimeoutMS=soon",
        "mongodb//vatio:hunter2@127.0.0.1:27017",
        "mysql://vatio:hunter2@127.0.0.1:3306",
        "mongodb://vatio:hunter2@127.0.0.1:99999",
    ] {
        let cfg = MongoDbConfig {
            uri: uri.to_owned(),
            database: "vatio".to_owned(),
        };
        let e = MongoDocuments::connect(&cfg, "node-a", RETENTION)
            .await
            .expect_err(uri);
        let message = e.to_string();
        assert!(matches!(e, Error::Rejected { .. }), "{uri}: {e:?}");
        assert!(!e.is_transient(), "{uri}");
        assert!(message.contains(STORE), "{message}");
        assert!(message.contains("***"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    }
}

#[tokio::test]
async fn refused_documents_of_a_batch_are_named_and_the_others_written() {
    let database = unique_name("t");
    // The server refuses events whose value is 1000 or more.
    raw(&database)
        .await
        .create_collection("events")
        .validator(doc! { "value": { "$lt": 1000.0 } })
        .await
        .expect("collection with a validator");
    let store = documents_of(&database, "node-a", RETENTION).await;
    let batch = [
        event("c1", 1, 41.0),
        event("c1", 2, 5000.0),
        event("c1", 3, 42.0),
        event("c1", 4, 6000.0),
    ];
    let e = store.upsert_events(&batch).await.expect_err("refused");
    let message = match &e {
        Error::Rejected { message, .. } => message.clone(),
        other => panic!("{other:?}"),
    };
    assert!(!e.is_transient());
    assert!(message.contains("2 of 4"), "{message}");
    assert!(message.contains("c1/2/over_temperature"), "{message}");
    let stored = store.events(&EventFilter::default()).await.expect("events");
    assert_eq!(stored, vec![batch[2].clone(), batch[0].clone()]);
    // One by one, only the refused ones fail.
    for (i, e) in batch.iter().enumerate() {
        let written = store.upsert_events(std::slice::from_ref(e)).await;
        assert_eq!(written.is_ok(), i % 2 == 0, "{i}: {written:?}");
    }
}

#[tokio::test]
async fn values_beyond_i64_are_refused_before_they_are_sent() {
    let store = fresh().await;
    let mut e = event("c1", 1, 41.0);
    e.seq = u64::MAX;
    let refused = store.upsert_events(&[e]).await.expect_err("seq too large");
    assert!(matches!(refused, Error::Rejected { .. }), "{refused:?}");
    assert!(refused.to_string().contains("seq"), "{refused}");

    let doc = MinuteDoc {
        device: dev("c1"),
        kind: DeviceKind::ClimateSensor,
        minute_ms: T0,
        metrics: [(Metric::Power, stats(1, 2.0, u64::MAX))].into(),
        log_pos: 1,
    };
    let refused = store
        .upsert_minute_docs(&[doc])
        .await
        .expect_err("last_seq");
    assert!(
        refused.to_string().contains("metrics.power.last_seq"),
        "{refused}"
    );
}

#[tokio::test]
async fn documents_that_do_not_read_back_as_written_are_corrupt() {
    let database = unique_name("t");
    let store = documents_of(&database, "node-a", RETENTION).await;
    let db = raw(&database).await;
    let minute_docs = db.collection::<Document>("minute_docs");
    let body = |minute_ms: i64, metrics: Document, log_pos: Bson| {
        doc! {
            "_id": format!("c1/{minute_ms}/node-a"), "device": "c1", "kind": "climate_sensor",
            "node": "node-a", "minute": DateTime::from_millis(minute_ms), "minute_ms": minute_ms,
            "metrics": metrics, "log_pos": log_pos,
        }
    };
    let good = doc! {
        "count": 1_i64, "min": 1.0, "max": 1.0, "sum": 1.0, "last": 1.0,
        "last_ts_ms": T0, "last_seq": 1_i64,
    };
    let mut negative = good.clone();
    negative.insert("count", -3_i64);
    let cases = [
        (
            body(T0, doc! { "temperature": negative }, Bson::Int64(1)),
            "metrics.temperature.count",
        ),
        (
            body(
                T0 + MINUTE_MS,
                doc! { "pressure": good.clone() },
                Bson::Int64(1),
            ),
            "metrics.pressure",
        ),
        (
            body(T0 + 2 * MINUTE_MS, doc! {}, Bson::String("7".into())),
            "log_pos",
        ),
    ];
    for (i, (stored, field)) in cases.iter().enumerate() {
        minute_docs.insert_one(stored).await.expect("insert");
        let minute_ms = T0 + i as i64 * MINUTE_MS;
        let e = store
            .minute_doc(&dev("c1"), minute_ms)
            .await
            .expect_err("corrupt");
        let message = e.to_string();
        assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
        assert!(
            message.contains(&format!("c1/{minute_ms}/node-a")),
            "{message}"
        );
        assert!(message.contains(field), "{message}");
    }

    db.collection::<Document>("events")
        .insert_one(doc! {
            "_id": "c1/1/meltdown", "device": "c1", "kind": "climate_sensor", "node": "node-a",
            "event_type": "meltdown", "metric": "temperature", "value": 1.0, "threshold": 0.5,
            "ts": DateTime::from_millis(T0), "ts_ms": T0, "seq": 1_i64,
        })
        .await
        .expect("insert event");
    let e = store
        .events(&EventFilter::default())
        .await
        .expect_err("unknown event type");
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("event_type"), "{e}");
}

#[tokio::test]
async fn the_uris_write_concern_goes_with_the_upserts() {
    let database = unique_name("t");
    let cfg = MongoDbConfig {
        uri: format!(
            "{}/?w=majority&wtimeoutMS=2000&journal=true",
            shared(Kind::SecantusDb).url()
        ),
        database: database.clone(),
    };
    let store = MongoDocuments::connect(&cfg, "node-a", RETENTION)
        .await
        .expect("connect");
    let e = event("c1", 1, 41.0);
    store
        .upsert_events(std::slice::from_ref(&e))
        .await
        .expect("upsert with w: majority");
    assert_eq!(
        store.events(&EventFilter::default()).await.expect("events"),
        vec![e]
    );
}
