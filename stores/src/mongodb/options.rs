//! From `[stores.mongodb]` to the driver's client options, without talking
//! to the server.
//!
//! The connection string is parsed at startup so a malformed one stops the
//! node with a clear message (naming the store and the URI with its password
//! redacted), while a server that is down is only found by the first
//! operation. Short timeouts, unless the URI sets its own, make an outage
//! show as an error in seconds rather than after the driver's 30 s default,
//! so the sinks' retry and back-pressure logic sees it quickly.

use std::time::Duration;

use ::mongodb::bson::Document;
use ::mongodb::error::{Error as MongoError, ErrorKind};
use ::mongodb::options::{ClientOptions, ConnectionString};

use super::{STORE, mongo};
use crate::{Error, Result};

/// How long an operation waits for a usable server unless the URI says.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening one connection may take unless the URI says.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client options `uri` describes, with vatio's defaults for what it
/// leaves unset: 5 s timeouts and the app name `vatio-{node}`.
pub(super) async fn client_options(uri: &str, node: &str) -> Result<ClientOptions> {
    let parsed = ConnectionString::parse(uri).map_err(|e| refused(uri, &e))?;
    // Resolves the DNS records of a `mongodb+srv://` URI; nothing else
    // leaves the process.
    let mut options = ClientOptions::parse(parsed)
        .await
        .map_err(|e| match e.kind.as_ref() {
            ErrorKind::DnsResolve { .. } | ErrorKind::Io(_) => mongo(e),
            _ => refused(uri, &e),
        })?;
    options
        .server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
    options
        .app_name
        .get_or_insert_with(|| format!("vatio-{node}"));
    Ok(options)
}

/// The client's write concern as the `writeConcern` field of a command, if
/// the URI sets one.
pub(super) fn write_concern(options: &ClientOptions) -> Result<Option<Document>> {
    options
        .write_concern
        .as_ref()
        .filter(|wc| **wc != Default::default())
        .map(|wc| {
            ::mongodb::bson::serialize_to_document(wc).map_err(|e| Error::Rejected {
                store: STORE,
                message: format!("the connection string's write concern {wc:?}: {e}"),
            })
        })
        .transpose()
}

/// A database name MongoDB accepts: not empty, none of `/\. "$` or NUL.
pub(super) fn check_database_name(name: &str) -> Result<()> {
    const ILLEGAL: &[char] = &['/', '\\', '.', ' ', '"', '$', '\0'];
    if name.is_empty() || name.contains(ILLEGAL) {
        return Err(Error::Rejected {
            store: STORE,
            message: format!(
                "database name {name:?} is not one MongoDB accepts \
                 (empty, or containing one of / \\ . space \" $ NUL)"
            ),
        });
    }
    Ok(())
}

/// A connection string the driver refused: the driver's message, never
/// with the password, and the URI with the password redacted.
pub(super) fn refused(uri: &str, e: &MongoError) -> Error {
    let mut reason = e.kind.to_string();
    if let Some(password) = password(uri).filter(|p| !p.is_empty()) {
        reason = reason.replace(password, "***");
    }
    Error::Rejected {
        store: STORE,
        message: format!("cannot use the connection string {}: {reason}", redact(uri)),
    }
}

/// Where the password of `uri` is, split as the driver splits it: the user
/// info ends at the last `@` before the options (`?`), the password starts
/// after its first `:`.
fn password_span(uri: &str) -> Option<(usize, usize)> {
    let start = uri.find("://").map_or(0, |i| i + 3);
    let rest = &uri[start..];
    let before_options = rest.split('?').next().unwrap_or(rest);
    let user_info = &before_options[..before_options.rfind('@')?];
    let colon = user_info.find(':')?;
    Some((start + colon + 1, start + user_info.len()))
}

fn password(uri: &str) -> Option<&str> {
    password_span(uri).map(|(from, to)| &uri[from..to])
}

/// `uri` with its password, if any, replaced by `***`.
pub(super) fn redact(uri: &str) -> String {
    match password_span(uri) {
        Some((from, to)) => format!("{}***{}", &uri[..from], &uri[to..]),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact("mongodb://vatio:s3cret@db1:27017,db2/?replicaSet=rs"),
            "mongodb://vatio:***@db1:27017,db2/?replicaSet=rs"
        );
        assert_eq!(
            redact("mongodb+srv://u:p%40ss@cluster.example.net"),
            "mongodb+srv://u:***@cluster.example.net"
        );
        // A password with unescaped `@` and `/` (malformed): still hidden whole.
        assert_eq!(
            redact("mongodb://u:a@b/c@host/db"),
            "mongodb://u:***@host/db"
        );
        assert_eq!(redact("mongodb://user@host"), "mongodb://user@host");
        assert_eq!(
            redact("mongodb://host:27017/?w=1"),
            "mongodb://host:27017/?w=1"
        );
        assert_eq!(redact("nonsense:u:pw@host"), "nonsense:***@host");
    }

    #[tokio::test]
    async fn the_uris_settings_win_and_vatios_defaults_fill_the_rest() {
        let set = client_options(
            "mongodb://h:1/?serverSelectionTimeoutMS=900&connectTimeoutMS=800&appName=ops\
             &w=majority&wtimeoutMS=2000&journal=true",
            "n1",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            set.server_selection_timeout,
            Some(Duration::from_millis(900))
        );
        assert_eq!(set.connect_timeout, Some(Duration::from_millis(800)));
        assert_eq!(set.app_name.as_deref(), Some("ops"));
        assert_eq!(
            write_concern(&set).ok().flatten(),
            Some(::mongodb::bson::doc! { "w": "majority", "wtimeout": 2000, "j": true })
        );

        let unset = client_options("mongodb://h:1", "n1")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            unset.server_selection_timeout,
            Some(SERVER_SELECTION_TIMEOUT)
        );
        assert_eq!(unset.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(unset.app_name.as_deref(), Some("vatio-n1"));
        assert_eq!(write_concern(&unset).ok().flatten(), None);
    }

    #[test]
    fn database_names_mongodb_refuses_are_refused() {
        assert!(check_database_name("vatio").is_ok());
        for bad in ["", "a.b", "a/b", "a b", "a$b"] {
            assert!(check_database_name(bad).is_err(), "{bad:?}");
        }
    }
}
