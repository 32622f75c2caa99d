//! BSON shapes of the two collections, and the way back.
//!
//! A minute document:
//! `{_id: "{device}/{minute_ms}/{node}", device, kind, node, minute: Date,
//! minute_ms, metrics: {<metric>: {count, min, max, sum, last, last_ts_ms,
//! last_seq}}, log_pos}`; an event:
//! `{_id: Event::id(), device, kind, node, event_type, metric, value,
//! threshold, ts: Date, ts_ms, seq}`. The `Date` fields exist for the TTL
//! indexes; reads and filters use the exact `*_ms` integers.
//!
//! BSON has no unsigned integers: `u64` fields (`count`, `last_seq`,
//! `log_pos`, `seq`) are stored as `i64`. A value above `i64::MAX` is
//! refused before it is sent, and a stored one that is negative, missing or
//! of another type reads back as [`Error::Corrupt`] naming the `_id` and the
//! field, as does an unknown kind, metric or event type name.

use std::collections::BTreeMap;

use ::mongodb::bson::{Bson, DateTime, Document, doc};

use super::STORE;
use crate::{
    DeviceId, DeviceKind, Error, Event, EventFilter, EventType, Metric, MinuteDoc, Result, Stats,
    UnixMs,
};

/// The `_id` of `node`'s share of a device·minute.
pub(super) fn share_id(device: &DeviceId, minute_ms: UnixMs, node: &str) -> String {
    format!("{device}/{minute_ms}/{node}")
}

/// A `u64` as the `i64` BSON keeps, or a refusal naming the document and field.
fn to_i64(id: &str, field: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::Rejected {
        store: STORE,
        message: format!(
            "{id}: {field} = {value} is above {}, the largest integer MongoDB keeps",
            i64::MAX
        ),
    })
}

/// `doc`'s `_id` and its document, as [`super::write::upsert`] takes them.
pub(super) fn encode_minute_doc(doc: &MinuteDoc, node: &str) -> Result<(String, Document)> {
    let id = share_id(&doc.device, doc.minute_ms, node);
    let mut metrics = Document::new();
    for (metric, stats) in &doc.metrics {
        metrics.insert(metric.as_str(), encode_stats(&id, *metric, stats)?);
    }
    let body = doc! {
        "_id": &id,
        "device": doc.device.as_str(),
        "kind": doc.kind.as_str(),
        "node": node,
        "minute": DateTime::from_millis(doc.minute_ms),
        "minute_ms": doc.minute_ms,
        "metrics": metrics,
        "log_pos": to_i64(&id, "log_pos", doc.log_pos)?,
    };
    Ok((id, body))
}

fn encode_stats(id: &str, metric: Metric, stats: &Stats) -> Result<Document> {
    let field = |name: &str| format!("metrics.{metric}.{name}");
    Ok(doc! {
        "count": to_i64(id, &field("count"), stats.count)?,
        "min": stats.min,
        "max": stats.max,
        "sum": stats.sum,
        "last": stats.last,
        "last_ts_ms": stats.last_ts_ms,
        "last_seq": to_i64(id, &field("last_seq"), stats.last_seq)?,
    })
}

/// `event`'s `_id` and its document.
pub(super) fn encode_event(event: &Event, node: &str) -> Result<(String, Document)> {
    let id = event.id();
    let body = doc! {
        "_id": &id,
        "device": event.device.as_str(),
        "kind": event.kind.as_str(),
        "node": node,
        "event_type": event.event_type.as_str(),
        "metric": event.metric.as_str(),
        "value": event.value,
        "threshold": event.threshold,
        "ts": DateTime::from_millis(event.ts_ms),
        "ts_ms": event.ts_ms,
        "seq": to_i64(&id, "seq", event.seq)?,
    };
    Ok((id, body))
}

/// The `find` filter of an events query: equality on the set fields and
/// `ts_ms` in `[from_ms, to_ms)`, as the embedded store answers it.
pub(super) fn event_query(filter: &EventFilter) -> Document {
    let mut query = Document::new();
    if let Some(device) = &filter.device {
        query.insert("device", device.as_str());
    }
    if let Some(kind) = filter.kind {
        query.insert("kind", kind.as_str());
    }
    if let Some(event_type) = filter.event_type {
        query.insert("event_type", event_type.as_str());
    }
    let mut ts = Document::new();
    if let Some(from_ms) = filter.from_ms {
        ts.insert("$gte", from_ms);
    }
    if let Some(to_ms) = filter.to_ms {
        ts.insert("$lt", to_ms);
    }
    if !ts.is_empty() {
        query.insert("ts_ms", ts);
    }
    query
}

/// The model of a stored minute document.
pub(super) fn decode_minute_doc(doc: &Document) -> Result<MinuteDoc> {
    let r = Reader::of(doc)?;
    let mut metrics = BTreeMap::new();
    let stored = r.document("metrics")?;
    for name in stored.doc.keys() {
        let metric =
            Metric::parse(name).ok_or_else(|| stored.corrupt(name, "is not a known metric"))?;
        metrics.insert(metric, decode_stats(&stored.document(name)?)?);
    }
    Ok(MinuteDoc {
        device: DeviceId::new(r.str("device")?),
        kind: r.named("kind", "device kind", DeviceKind::parse)?,
        minute_ms: r.i64("minute_ms")?,
        metrics,
        // 0 is the model's "unknown"; every document this store writes has one.
        log_pos: if r.doc.contains_key("log_pos") {
            r.u64("log_pos")?
        } else {
            0
        },
    })
}

fn decode_stats(r: &Reader<'_>) -> Result<Stats> {
    Ok(Stats {
        count: r.u64("count")?,
        min: r.f64("min")?,
        max: r.f64("max")?,
        sum: r.f64("sum")?,
        last: r.f64("last")?,
        last_ts_ms: r.i64("last_ts_ms")?,
        last_seq: r.u64("last_seq")?,
    })
}

/// The `minute_ms` of a stored minute document (projected or whole).
pub(super) fn decode_minute_ms(doc: &Document) -> Result<UnixMs> {
    Reader::of(doc)?.i64("minute_ms")
}

/// The model of a stored event.
pub(super) fn decode_event(doc: &Document) -> Result<Event> {
    let r = Reader::of(doc)?;
    Ok(Event {
        device: DeviceId::new(r.str("device")?),
        kind: r.named("kind", "device kind", DeviceKind::parse)?,
        event_type: r.named("event_type", "event type", EventType::parse)?,
        metric: r.named("metric", "metric", Metric::parse)?,
        value: r.f64("value")?,
        threshold: r.f64("threshold")?,
        ts_ms: r.i64("ts_ms")?,
        seq: r.u64("seq")?,
    })
}

/// Typed access to a stored document's fields; every failure is
/// [`Error::Corrupt`] naming the document's `_id` and the field's path.
struct Reader<'a> {
    id: &'a str,
    /// Path of `doc` inside the stored document: `""` or `"metrics.power."`.
    path: String,
    doc: &'a Document,
}

impl<'a> Reader<'a> {
    /// A reader of a stored document, which must have a string `_id`.
    fn of(doc: &'a Document) -> Result<Self> {
        match doc.get("_id") {
            Some(Bson::String(id)) => Ok(Self {
                id,
                path: String::new(),
                doc,
            }),
            other => Err(Error::Corrupt {
                store: STORE,
                message: format!("a stored document's _id is {other:?}, not a string"),
            }),
        }
    }

    fn corrupt(&self, field: &str, problem: &str) -> Error {
        Error::Corrupt {
            store: STORE,
            message: format!("{}: field {}{field} {problem}", self.id, self.path),
        }
    }

    fn get(&self, field: &str) -> Result<&'a Bson> {
        self.doc
            .get(field)
            .ok_or_else(|| self.corrupt(field, "is missing"))
    }

    fn wrong_type(&self, field: &str, value: &Bson, wanted: &str) -> Error {
        let problem = format!("is a {:?}, not {wanted}", value.element_type());
        self.corrupt(field, &problem)
    }

    fn str(&self, field: &str) -> Result<&'a str> {
        match self.get(field)? {
            Bson::String(s) => Ok(s),
            other => Err(self.wrong_type(field, other, "a string")),
        }
    }

    /// A name one of the model's enums parses.
    fn named<T>(&self, field: &str, what: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
        let name = self.str(field)?;
        parse(name).ok_or_else(|| self.corrupt(field, &format!("is {name:?}, not a known {what}")))
    }

    /// An integer; a server may keep a small one as a 32-bit integer.
    fn i64(&self, field: &str) -> Result<i64> {
        match self.get(field)? {
            Bson::Int64(v) => Ok(*v),
            Bson::Int32(v) => Ok(i64::from(*v)),
            other => Err(self.wrong_type(field, other, "an integer")),
        }
    }

    /// An integer that stands for a `u64`: never negative.
    fn u64(&self, field: &str) -> Result<u64> {
        let value = self.i64(field)?;
        u64::try_from(value).map_err(|_| self.corrupt(field, &format!("is negative ({value})")))
    }

    fn f64(&self, field: &str) -> Result<f64> {
        match self.get(field)? {
            Bson::Double(v) => Ok(*v),
            other => Err(self.wrong_type(field, other, "a double")),
        }
    }

    /// The embedded document at `field`, read with the same `_id`.
    fn document(&self, field: &str) -> Result<Reader<'a>> {
        match self.get(field)? {
            Bson::Document(doc) => Ok(Reader {
                id: self.id,
                path: format!("{}{field}.", self.path),
                doc,
            }),
            other => Err(self.wrong_type(field, other, "a document")),
        }
    }
}
