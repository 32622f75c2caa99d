//! The collections' indexes, created by the first operation that reaches
//! the server, each under an explicit name.
//!
//! - `minute_docs`: a TTL index on `minute` (a BSON date) that expires a
//!   document `retention` after its minute began, and `{node, minute_ms}`
//!   for a node's newest minute.
//! - `events`: a TTL index on `ts`, `{ts_ms, _id}` for the newest-first
//!   listing, and one index per filter (`device`, `kind`, `event_type`),
//!   each ending in time as the query sorts by it.
//!
//! `createIndexes` refuses an index whose name exists with other options
//! (codes 85 and 86), so when the retention changed a TTL index is first
//! retuned with `collMod`, which changes `expireAfterSeconds` in place.
//! The TTL monitor runs about once a minute; [`DocumentStore::sweep_before`]
//! keeps the retention exact in between.
//!
//! [`Setup`] runs this once per handle, before its first operation, and
//! again after a failed attempt. Callers that queued behind an attempt that
//! failed get its error at once instead of each waiting out another
//! server-selection timeout in turn.
//!
//! [`DocumentStore::sweep_before`]: crate::DocumentStore::sweep_before

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ::mongodb::bson::{Bson, Document, doc};
use ::mongodb::error::{Error as MongoError, ErrorKind};
use ::mongodb::options::IndexOptions;
use ::mongodb::{Database, IndexModel};
use futures::TryStreamExt;

use super::{EVENTS, MINUTE_DOCS, STORE, mongo};
use crate::{Error, Result};

/// The TTL index of the minute documents.
pub(super) const MINUTE_DOCS_TTL: &str = "minute_ttl";
/// The TTL index of the events.
pub(super) const EVENTS_TTL: &str = "ts_ttl";

/// NamespaceNotFound: `listIndexes` of a collection that does not exist yet.
const NAMESPACE_NOT_FOUND: i32 = 26;

/// One index: its name and keys, and whether it is the collection's TTL index.
struct Spec {
    name: &'static str,
    keys: Document,
    ttl: bool,
}

impl Spec {
    fn new(name: &'static str, keys: Document) -> Self {
        Self {
            name,
            keys,
            ttl: false,
        }
    }

    fn ttl(name: &'static str, keys: Document) -> Self {
        Self {
            name,
            keys,
            ttl: true,
        }
    }

    fn model(&self, ttl_secs: i64) -> IndexModel {
        let options = IndexOptions::builder()
            .name(self.name.to_owned())
            .expire_after(
                self.ttl
                    .then(|| Duration::from_secs(ttl_secs.unsigned_abs())),
            )
            .build();
        IndexModel::builder()
            .keys(self.keys.clone())
            .options(options)
            .build()
    }
}

fn specs(collection: &str) -> Vec<Spec> {
    if collection == MINUTE_DOCS {
        vec![
            Spec::ttl(MINUTE_DOCS_TTL, doc! { "minute": 1 }),
            Spec::new("node_minute", doc! { "node": 1, "minute_ms": -1 }),
        ]
    } else {
        vec![
            Spec::ttl(EVENTS_TTL, doc! { "ts": 1 }),
            Spec::new("ts_id", doc! { "ts_ms": -1, "_id": -1 }),
            Spec::new("device_ts", doc! { "device": 1, "ts_ms": -1 }),
            Spec::new("kind_ts", doc! { "kind": 1, "ts_ms": -1 }),
            Spec::new("event_type_ts", doc! { "event_type": 1, "ts_ms": -1 }),
        ]
    }
}

/// The TTL indexes' `expireAfterSeconds` for `retention`: whole seconds,
/// at most `i32::MAX` (what MongoDB accepts).
pub(super) fn ttl_seconds(retention: Duration) -> Result<i64> {
    i32::try_from(retention.as_secs())
        .map(i64::from)
        .map_err(|_| Error::Rejected {
            store: STORE,
            message: format!("retention {retention:?} is longer than MongoDB's TTL indexes allow"),
        })
}

/// Whether a handle's indexes are in place yet, and how its last attempt
/// to put them there failed.
#[derive(Default)]
pub(super) struct Setup {
    done: AtomicBool,
    /// Failed attempts so far.
    failures: AtomicU64,
    /// Held while an attempt runs; the last failure.
    attempt: tokio::sync::Mutex<Option<MongoError>>,
}

impl Setup {
    /// Ensures the indexes unless done: at most one attempt at a time, and
    /// a caller that waited for an attempt that failed shares its error.
    pub(super) async fn ready(&self, db: &Database, ttl_secs: i64) -> Result<()> {
        if self.done.load(Ordering::Acquire) {
            return Ok(());
        }
        let failures_seen = self.failures.load(Ordering::Acquire);
        let mut last_failure = self.attempt.lock().await;
        if self.done.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.failures.load(Ordering::Acquire) != failures_seen
            && let Some(e) = last_failure.as_ref()
        {
            return Err(mongo(e.clone()));
        }
        match ensure(db, ttl_secs).await {
            Ok(()) => {
                self.done.store(true, Ordering::Release);
                *last_failure = None;
                Ok(())
            }
            Err(e) => {
                *last_failure = Some(e.clone());
                self.failures.fetch_add(1, Ordering::AcqRel);
                Err(mongo(e))
            }
        }
    }
}

/// Creates every index that is missing and retunes a TTL index whose
/// `expireAfterSeconds` is not `ttl_secs`.
async fn ensure(db: &Database, ttl_secs: i64) -> Result<(), MongoError> {
    for collection in [MINUTE_DOCS, EVENTS] {
        let specs = specs(collection);
        retune_ttl(db, collection, &specs, ttl_secs).await?;
        db.collection::<Document>(collection)
            .create_indexes(specs.iter().map(|s| s.model(ttl_secs)))
            .await?;
    }
    tracing::debug!(database = db.name(), ttl_secs, "{STORE}: indexes in place");
    Ok(())
}

/// `collMod`s each existing TTL index of `specs` to `ttl_secs`.
async fn retune_ttl(
    db: &Database,
    collection: &str,
    specs: &[Spec],
    ttl_secs: i64,
) -> Result<(), MongoError> {
    let existing = existing_indexes(db, collection).await?;
    for spec in specs.iter().filter(|s| s.ttl) {
        let Some(index) = existing
            .iter()
            .find(|i| i.get_str("name").ok() == Some(spec.name))
        else {
            continue;
        };
        let current = index.get("expireAfterSeconds").and_then(whole_number);
        if current == Some(ttl_secs) {
            continue;
        }
        db.run_command(doc! {
            "collMod": collection,
            "index": { "name": spec.name, "expireAfterSeconds": ttl_secs },
        })
        .await?;
        tracing::info!(
            collection,
            index = spec.name,
            from = ?current,
            to = ttl_secs,
            "{STORE}: retention changed, TTL index retuned"
        );
    }
    Ok(())
}

/// The index descriptions of `collection`; none if it does not exist yet.
async fn existing_indexes(db: &Database, collection: &str) -> Result<Vec<Document>, MongoError> {
    match db
        .run_cursor_command(doc! { "listIndexes": collection })
        .await
    {
        Ok(cursor) => cursor.try_collect().await,
        Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == NAMESPACE_NOT_FOUND) => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// A number a server may keep `expireAfterSeconds` as, if it is whole.
fn whole_number(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 && v.is_finite() => Some(*v as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_beyond_what_ttl_indexes_take_is_refused() {
        assert_eq!(
            ttl_seconds(Duration::from_secs(168 * 3600)).ok(),
            Some(604_800)
        );
        assert_eq!(ttl_seconds(Duration::from_millis(1500)).ok(), Some(1));
        assert!(ttl_seconds(Duration::from_secs(u64::from(u32::MAX))).is_err());
    }

    #[test]
    fn every_index_has_its_name_and_only_ttl_indexes_expire() {
        for collection in [MINUTE_DOCS, EVENTS] {
            for spec in specs(collection) {
                let model = spec.model(60);
                let options = model.options.unwrap_or_default();
                assert_eq!(options.name.as_deref(), Some(spec.name));
                assert_eq!(options.expire_after.is_some(), spec.ttl, "{}", spec.name);
            }
        }
    }
}
