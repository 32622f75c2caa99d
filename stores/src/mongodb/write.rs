//! Upserts by `_id` as the raw `update` command, unordered, in batches.
//!
//! Why the raw command: the driver's only multi-document write that takes
//! replacements is `Client::bulk_write`, which needs the `bulkWrite`
//! command of MongoDB 8.0; one `replace_one` per document is one round trip
//! each. The `update` command with many `{q: {_id}, u: <document>, upsert:
//! true}` statements is what every MongoDB-compatible server speaks, takes a
//! batch in one round trip, and with `ordered: false` writes every statement
//! it can and reports each refused one by its index in `writeErrors`.
//!
//! So one bad document does not hold back the rest: the batch comes back as
//! [`Error::Rejected`] naming how many were refused, the first one's `_id`
//! and the server's message; the caller retries item by item and
//! dead-letters only the refused ones (re-writing the others is
//! idempotent). A write error with a server-state code (not primary,
//! shutting down) and a `writeConcernError` are transient instead.
//!
//! A batch holds at most 1000 statements and 8 MiB of them, well within
//! the server's 16 MiB command limit.

use ::mongodb::Database;
use ::mongodb::bson::{Bson, Document, doc};

use super::errors::is_data_write_code;
use super::{STORE, mongo};
use crate::{Error, Result};

/// Most statements in one `update` command.
const MAX_STATEMENTS: usize = 1000;
/// Most encoded statement bytes in one `update` command.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Upserts each `(_id, document)` of `docs` into `collection`, replacing the
/// document with that `_id`.
pub(super) async fn upsert(
    db: &Database,
    write_concern: Option<&Document>,
    collection: &str,
    docs: Vec<(String, Document)>,
) -> Result<()> {
    let total = docs.len();
    let mut refused = Refused::default();
    for batch in batches(docs)? {
        let mut command = doc! {
            "update": collection,
            "updates": batch.statements,
            "ordered": false,
        };
        if let Some(wc) = write_concern {
            command.insert("writeConcern", wc.clone());
        }
        let reply = db.run_command(command).await.map_err(mongo)?;
        refused.note(collection, &batch.ids, &reply)?;
    }
    refused.into_result(collection, total)
}

/// One `update` command's worth of statements, with their `_id`s by index.
#[derive(Default)]
struct Batch {
    ids: Vec<String>,
    statements: Vec<Document>,
    bytes: usize,
}

/// The statements of `docs`, split at [`MAX_STATEMENTS`] and [`MAX_BATCH_BYTES`].
fn batches(docs: Vec<(String, Document)>) -> Result<Vec<Batch>> {
    let mut done = Vec::new();
    let mut batch = Batch::default();
    for (id, body) in docs {
        let statement = doc! {
            "q": { "_id": &id },
            "u": body,
            "upsert": true,
            "multi": false,
        };
        let bytes = statement
            .to_vec()
            .map_err(|e| Error::Rejected {
                store: STORE,
                message: format!("{id}: not encodable as BSON: {e}"),
            })?
            .len();
        let full = batch.ids.len() == MAX_STATEMENTS || batch.bytes + bytes > MAX_BATCH_BYTES;
        if full && !batch.ids.is_empty() {
            done.push(std::mem::take(&mut batch));
        }
        batch.ids.push(id);
        batch.statements.push(statement);
        batch.bytes += bytes;
    }
    if !batch.ids.is_empty() {
        done.push(batch);
    }
    Ok(done)
}

/// What the server refused over every batch of one upsert.
#[derive(Default)]
struct Refused {
    count: usize,
    /// The first refused statement: its `_id`, code and message.
    first: Option<(String, i32, String)>,
}

impl Refused {
    /// Reads one `update` reply: write errors of the data are counted, a
    /// server-state one or a write concern error fails the upsert as transient.
    fn note(&mut self, collection: &str, ids: &[String], reply: &Document) -> Result<()> {
        let errors: &[Bson] = match reply.get("writeErrors") {
            None => &[],
            Some(Bson::Array(errors)) => errors,
            Some(other) => return Err(odd_reply(collection, &format!("writeErrors {other}"))),
        };
        let mut data = Vec::new();
        for error in errors {
            let (index, code, errmsg) = write_error(collection, error)?;
            if !is_data_write_code(code) {
                return Err(Error::Unavailable {
                    store: STORE,
                    message: format!("{collection}: write error {code}: {errmsg}"),
                });
            }
            let id = ids
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("#{index}"));
            data.push((id, code, errmsg));
        }
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(Error::Unavailable {
                store: STORE,
                message: format!("{collection}: write concern not satisfied: {wce}"),
            });
        }
        self.count += data.len();
        if self.first.is_none() {
            self.first = data.into_iter().next();
        }
        Ok(())
    }

    fn into_result(self, collection: &str, total: usize) -> Result<()> {
        match self.first {
            None => Ok(()),
            Some((id, code, errmsg)) => Err(Error::Rejected {
                store: STORE,
                message: format!(
                    "{} of {total} documents refused by {collection}; the first, \
                     _id {id:?}: {errmsg} (code {code})",
                    self.count
                ),
            }),
        }
    }
}

/// One entry of `writeErrors`: the statement's index, the code, the message.
fn write_error(collection: &str, error: &Bson) -> Result<(usize, i32, String)> {
    let odd = || odd_reply(collection, &format!("write error {error}"));
    let Bson::Document(error) = error else {
        return Err(odd());
    };
    let index = match error.get("index") {
        Some(Bson::Int32(i)) => usize::try_from(*i).ok(),
        Some(Bson::Int64(i)) => usize::try_from(*i).ok(),
        _ => None,
    }
    .ok_or_else(odd)?;
    let code = error.get_i32("code").map_err(|_| odd())?;
    let errmsg = error.get_str("errmsg").unwrap_or_default().to_owned();
    Ok((index, code, errmsg))
}

/// A reply the `update` command should not give; retried, as a server
/// fault rather than the data's.
fn odd_reply(collection: &str, what: &str) -> Error {
    Error::Unavailable {
        store: STORE,
        message: format!("{collection}: unexpected update reply: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(n: usize, padding: usize) -> Vec<(String, Document)> {
        (0..n)
            .map(|i| {
                let id = format!("d/{i}");
                let body = doc! { "_id": &id, "pad": "x".repeat(padding) };
                (id, body)
            })
            .collect()
    }

    #[test]
    fn batches_hold_at_most_a_thousand_statements() {
        let sizes: Vec<usize> = batches(docs(2500, 0))
            .unwrap_or_default()
            .iter()
            .map(|b| b.ids.len())
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn batches_stay_under_the_byte_budget() {
        let all = batches(docs(40, 1 << 20)).unwrap_or_default();
        assert!(all.len() >= 5, "{} batches", all.len());
        assert!(all.iter().all(|b| b.bytes <= MAX_BATCH_BYTES));
        assert_eq!(all.iter().map(|b| b.ids.len()).sum::<usize>(), 40);
    }

    #[test]
    fn refused_statements_are_counted_and_the_first_named() {
        let ids = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let reply = doc! {
            "ok": 1.0, "n": 1,
            "writeErrors": [
                { "index": 1, "code": 121, "errmsg": "Document failed validation" },
                { "index": 2, "code": 2, "errmsg": "bad value" },
            ],
        };
        let mut refused = Refused::default();
        assert!(refused.note("events", &ids, &reply).is_ok());
        let message = match refused.into_result("events", 3) {
            Err(Error::Rejected { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        assert!(
            message.starts_with("2 of 3 documents refused by events"),
            "{message}"
        );
        assert!(
            message.contains("\"b\": Document failed validation (code 121)"),
            "{message}"
        );
    }

    #[test]
    fn a_not_primary_write_error_or_a_write_concern_error_is_transient() {
        let ids = vec!["a".to_owned()];
        for reply in [
            doc! { "ok": 1, "writeErrors": [{ "index": 0, "code": 10107, "errmsg": "not primary" }] },
            doc! { "ok": 1, "n": 1, "writeConcernError": { "code": 64, "errmsg": "timeout" } },
        ] {
            let e = Refused::default().note("events", &ids, &reply);
            assert!(matches!(e, Err(ref e) if e.is_transient()), "{e:?}");
        }
    }
}
