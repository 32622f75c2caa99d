//! InfluxDB's HTTP APIs: line-protocol writes on `/write` (v1) or
//! `/api/v2/write` (v2), InfluxQL reads on `/query`, and what each answer
//! means for the caller: done, retry (and when), or refused.
//!
//! | answer | meaning | [`Error`] |
//! |---|---|---|
//! | 204, 200 | written | — |
//! | 400, 413, 422 | the payload is refused (type conflict, parse error, too large); a 1.x "partial write" kept the other points | `Rejected` with the server's message |
//! | 401, 403 | credentials wrong or lacking rights | `Unavailable` (the log holds the data until an operator fixes it) |
//! | 404 | database or bucket missing | `Unavailable` |
//! | 429, 503 + `Retry-After` | slow down | `Throttled` |
//! | other 5xx, no answer | server trouble | `Unavailable` / `Request` |

use std::io::Write as _;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use vatio_config::{InfluxApi, InfluxDbConfig};

use crate::{Error, Result};

const STORE: &str = "influxdb time series";

/// Longest pause a `Retry-After` is taken for; a longer one is cut to this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// One InfluxDB server, as configured.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL without a trailing `/`.
    base: String,
    api: InfluxApi,
    database: String,
    retention_policy: String,
    org: String,
    bucket: String,
    auth: Auth,
    gzip: bool,
}

#[derive(Clone)]
enum Auth {
    None,
    Token(String),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Auth {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::Basic { .. } => "basic",
        })
    }
}

fn config_error(message: String) -> Error {
    Error::Rejected {
        store: STORE,
        message,
    }
}

impl Client {
    /// A client for the server `cfg` names; `cfg.ca_file`, if set, must be
    /// an absolute path or one relative to the working directory. Nothing
    /// is sent yet.
    pub fn new(cfg: &InfluxDbConfig) -> Result<Self> {
        let mut http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("vatio/", env!("CARGO_PKG_VERSION")));
        if !cfg.ca_file.as_os_str().is_empty() {
            let pem = std::fs::read(&cfg.ca_file).map_err(|e| {
                config_error(format!("reading ca_file {}: {e}", cfg.ca_file.display()))
            })?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                config_error(format!(
                    "ca_file {} is not a PEM certificate: {e}",
                    cfg.ca_file.display()
                ))
            })?;
            http = http.add_root_certificate(ca);
        }
        let http = http
            .build()
            .map_err(|e| config_error(format!("building the HTTP client: {e}")))?;
        let auth = if !cfg.token.is_empty() {
            Auth::Token(cfg.token.clone())
        } else if !cfg.username.is_empty() {
            Auth::Basic {
                username: cfg.username.clone(),
                password: cfg.password.clone(),
            }
        } else {
            Auth::None
        };
        Ok(Self {
            http,
            base: cfg.url.trim_end_matches('/').to_owned(),
            api: cfg.api,
            database: cfg.database.clone(),
            retention_policy: cfg.retention_policy.clone(),
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
            auth,
            gzip: cfg.gzip,
        })
    }

    /// The retention policy reads name (empty: the database's default).
    pub fn retention_policy(&self) -> &str {
        &self.retention_policy
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Token(token) => request.header(AUTHORIZATION, format!("Token {token}")),
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        }
    }

    /// Writes a body of line protocol with millisecond timestamps.
    pub async fn write(&self, lines: String) -> Result<()> {
        let (url, query): (String, Vec<(&str, &str)>) = match self.api {
            InfluxApi::V1 => {
                let mut q = vec![("db", self.database.as_str()), ("precision", "ms")];
                if !self.retention_policy.is_empty() {
                    q.push(("rp", self.retention_policy.as_str()));
                }
                (format!("{}/write", self.base), q)
            }
            InfluxApi::V2 => (
                format!("{}/api/v2/write", self.base),
                vec![
                    ("org", self.org.as_str()),
                    ("bucket", self.bucket.as_str()),
                    ("precision", "ms"),
                ],
            ),
        };
        let mut request = self
            .http
            .post(&url)
            .query(&query)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        request = if self.gzip {
            request
                .header(CONTENT_ENCODING, "gzip")
                .body(gzip(lines.as_bytes())?)
        } else {
            request.body(lines)
        };
        let response = self.send(self.authorized(request), &url).await?;
        answer(response, &url).await.map(drop)
    }

    /// Runs one InfluxQL statement against the database; returns the raw
    /// JSON answer with times in milliseconds.
    pub async fn query(&self, influxql: &str) -> Result<String> {
        let url = format!("{}/query", self.base);
        let form = [
            ("db", self.database.as_str()),
            ("q", influxql),
            ("epoch", "ms"),
        ];
        let request = self.http.post(&url).form(&form);
        let response = self.send(self.authorized(request), &url).await?;
        answer(response, &url).await
    }

    async fn send(&self, request: RequestBuilder, url: &str) -> Result<Response> {
        request.send().await.map_err(|source| Error::Request {
            store: STORE,
            url: url.to_owned(),
            source,
        })
    }
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::fast());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|e| Error::Unavailable {
            store: STORE,
            message: format!("compressing a write: {e}"),
        })
}

/// The body of a successful answer, or what the failure means.
async fn answer(response: Response, url: &str) -> Result<String> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.text().await.map_err(|source| Error::Request {
        store: STORE,
        url: url.to_owned(),
        source,
    })?;
    if status.is_success() {
        return Ok(body);
    }
    Err(classify(status, retry_after, &server_message(&body), url))
}

/// What a failed answer means; see the table at the top.
fn classify(status: StatusCode, retry_after: Option<Duration>, message: &str, url: &str) -> Error {
    let message = format!("{url} answered {status}: {message}");
    match status.as_u16() {
        429 | 503 if retry_after.is_some() => Error::Throttled {
            store: STORE,
            message,
            retry_after: retry_after.unwrap_or_default().min(RETRY_AFTER_MAX),
        },
        400 | 413 | 422 => Error::Rejected {
            store: STORE,
            message,
        },
        _ => Error::Unavailable {
            store: STORE,
            message,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by InfluxDB).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The server's own words: `{"error": …}` (1.x), `{"message": …}` (2.x), or the body.
fn server_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |name| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    field("error")
        .or_else(|| field("message"))
        .unwrap_or_else(|| body.trim().chars().take(500).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, retry_after: Option<u64>) -> &'static str {
        let status = StatusCode::from_u16(status).expect("status");
        match classify(status, retry_after.map(Duration::from_secs), "m", "u") {
            Error::Rejected { .. } => "rejected",
            Error::Throttled { .. } => "throttled",
            Error::Unavailable { .. } => "unavailable",
            _ => "other",
        }
    }

    #[test]
    fn answers_are_classified_as_the_table_says() {
        let table = [
            (400, None, "rejected"),
            (413, None, "rejected"),
            (422, None, "rejected"),
            (401, None, "unavailable"),
            (403, None, "unavailable"),
            (404, None, "unavailable"),
            (429, Some(3), "throttled"),
            (429, None, "unavailable"),
            (503, Some(1), "throttled"),
            (503, None, "unavailable"),
            (500, None, "unavailable"),
        ];
        for (status, retry_after, expected) in table {
            assert_eq!(
                kind(status, retry_after),
                expected,
                "{status} {retry_after:?}"
            );
        }
    }

    #[test]
    fn a_long_retry_after_is_cut_and_the_message_names_url_and_answer() {
        let err = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(86_400)),
            "slow down",
            "http://i/write",
        );
        assert_eq!(err.retry_after(), Some(RETRY_AFTER_MAX));
        assert!(
            err.to_string()
                .contains("http://i/write answered 429 Too Many Requests: slow down"),
            "{err}"
        );
    }

    #[test]
    fn the_servers_message_is_taken_from_either_versions_json() {
        assert_eq!(
            server_message(r#"{"error":"partial write: x dropped=1"}"#),
            "partial write: x dropped=1"
        );
        assert_eq!(
            server_message(r#"{"code":"invalid","message":"bad line"}"#),
            "bad line"
        );
        assert_eq!(server_message("plain text\n"), "plain text");
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
