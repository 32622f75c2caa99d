//! The production [`DocumentStore`]: minute documents and threshold events
//! in a MongoDB (or MongoDB-compatible) server shared by every node of a
//! cluster.
//!
//! - Two nodes may both sequence part of one device·minute (a failover in
//!   the middle of it), so a minute document is one node's *share*: its
//!   `_id` is `"{device}/{minute_ms}/{node}"` and it carries a `node` field.
//!   [`DocumentStore::minute_doc`] and [`DocumentStore::max_minute`] read
//!   this node's shares only; neither node ever overwrites the other's.
//! - An event's `_id` is [`Event::id`], the same whichever node derives it
//!   from a reading, so an event is stored once; `node` records who wrote it.
//! - Connecting sends nothing: a node starts while the server is down and its
//!   sinks retry. The indexes are created by the first operation that
//!   reaches the server (and again after a failed attempt).
//! - Errors keep the driver's error ([`Error::Mongo`]); `is_data_error`
//!   tells the document's fault (dead-letter it) from the server's state
//!   (retry while the write-ahead log holds the data).
//!
//! Submodules: `codec` maps the model to BSON and back, `write` sends the
//! unordered upserts, `indexes` keeps the indexes (and the TTL in step with
//! the retention), `options` turns the configuration into client options,
//! `errors` classifies driver errors.

mod codec;
mod errors;
mod indexes;
mod options;
mod write;

use std::time::Duration;

use ::mongodb::bson::{Document, doc};
use ::mongodb::{Client, Collection, Database};
use async_trait::async_trait;
use futures::TryStreamExt;
use vatio_config::MongoDbConfig;

use crate::{
    DeviceId, DocumentStore, Error, Event, EventFilter, MinuteDoc, Result, UnixMs, query_limit,
};

pub(crate) use errors::is_data_error;

/// How errors of this store name it.
const STORE: &str = "mongodb documents";
/// Collection of the minute documents (one node's share each).
const MINUTE_DOCS: &str = "minute_docs";
/// Collection of the threshold events.
const EVENTS: &str = "events";

/// A driver error, kept whole as the source.
fn mongo(e: ::mongodb::error::Error) -> Error {
    Error::Mongo {
        store: STORE,
        source: Box::new(e),
    }
}

/// [`DocumentStore`] on a MongoDB server, shared by every node.
pub struct MongoDocuments {
    db: Database,
    /// This node's id: part of every minute document's `_id`.
    node: String,
    /// The TTL indexes' `expireAfterSeconds`: the retention.
    ttl_secs: i64,
    /// The client's write concern as a command field (the raw `update`
    /// command does not inherit it from the client).
    write_concern: Option<Document>,
    /// Whether the indexes are in place; the next operation after a
    /// failed attempt tries again.
    indexes: indexes::Setup,
}

impl std::fmt::Debug for MongoDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoDocuments")
            .field("database", &self.db.name())
            .field("node", &self.node)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl MongoDocuments {
    /// A store in `cfg.database` of the server `cfg.uri` names, writing as
    /// `node`, whose TTL indexes expire documents `retention` after their
    /// minute (events after their time).
    ///
    /// Only parses the connection string (a `mongodb+srv://` one also looks
    /// up its DNS records): a server that is down shows as a transient error
    /// of the first operation, within the server-selection timeout (5 s
    /// unless the URI sets `serverSelectionTimeoutMS`).
    pub async fn connect(cfg: &MongoDbConfig, node: &str, retention: Duration) -> Result<Self> {
        options::check_database_name(&cfg.database)?;
        let ttl_secs = indexes::ttl_seconds(retention)?;
        let client_options = options::client_options(&cfg.uri, node).await?;
        let write_concern = options::write_concern(&client_options)?;
        let client =
            Client::with_options(client_options).map_err(|e| options::refused(&cfg.uri, &e))?;
        Ok(Self {
            db: client.database(&cfg.database),
            node: node.to_owned(),
            ttl_secs,
            write_concern,
            indexes: indexes::Setup::default(),
        })
    }

    /// The node whose shares this handle writes and reads.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Makes sure the indexes exist before the first operation (once per
    /// handle, again after a failed attempt).
    async fn ready(&self) -> Result<()> {
        self.indexes.ready(&self.db, self.ttl_secs).await
    }

    fn minute_docs(&self) -> Collection<Document> {
        self.db.collection(MINUTE_DOCS)
    }

    fn events_collection(&self) -> Collection<Document> {
        self.db.collection(EVENTS)
    }

    async fn upsert(&self, collection: &str, docs: Vec<(String, Document)>) -> Result<()> {
        self.ready().await?;
        write::upsert(&self.db, self.write_concern.as_ref(), collection, docs).await
    }
}

#[async_trait]
impl DocumentStore for MongoDocuments {
    fn shared(&self) -> bool {
        true
    }

    async fn upsert_minute_docs(&self, docs: &[MinuteDoc]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let encoded = docs
            .iter()
            .map(|d| codec::encode_minute_doc(d, &self.node))
            .collect::<Result<Vec<_>>>()?;
        self.upsert(MINUTE_DOCS, encoded).await
    }

    async fn minute_doc(&self, device: &DeviceId, minute_ms: UnixMs) -> Result<Option<MinuteDoc>> {
        self.ready().await?;
        let id = codec::share_id(device, minute_ms, &self.node);
        let found = self
            .minute_docs()
            .find_one(doc! { "_id": &id })
            .await
            .map_err(mongo)?;
        found.map(|d| codec::decode_minute_doc(&d)).transpose()
    }

    async fn max_minute(&self) -> Result<Option<UnixMs>> {
        self.ready().await?;
        let newest = self
            .minute_docs()
            .find_one(doc! { "node": &self.node })
            .sort(doc! { "minute_ms": -1 })
            .projection(doc! { "_id": 1, "minute_ms": 1 })
            .await
            .map_err(mongo)?;
        newest.map(|d| codec::decode_minute_ms(&d)).transpose()
    }

    async fn upsert_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let encoded = events
            .iter()
            .map(|e| codec::encode_event(e, &self.node))
            .collect::<Result<Vec<_>>>()?;
        self.upsert(EVENTS, encoded).await
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        self.ready().await?;
        let limit = query_limit(filter.limit);
        let cursor = self
            .events_collection()
            .find(codec::event_query(filter))
            .sort(doc! { "ts_ms": -1, "_id": -1 })
            .limit(i64::from(limit))
            .batch_size(limit)
            .await
            .map_err(mongo)?;
        let found: Vec<Document> = cursor.try_collect().await.map_err(mongo)?;
        found.iter().map(codec::decode_event).collect()
    }

    async fn sweep_before(&self, cutoff_ms: UnixMs) -> Result<u64> {
        self.ready().await?;
        let docs = self
            .minute_docs()
            .delete_many(doc! { "minute_ms": { "$lt": cutoff_ms } })
            .await
            .map_err(mongo)?;
        let events = self
            .events_collection()
            .delete_many(doc! { "ts_ms": { "$lt": cutoff_ms } })
            .await
            .map_err(mongo)?;
        Ok(docs.deleted_count + events.deleted_count)
    }
}
