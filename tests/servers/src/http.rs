//! Just enough HTTP over a std `TcpStream` to probe readiness and to set
//! servers up (create a database, flush), without an HTTP client crate.
//! Requests are HTTP/1.0, so answers come whole, never chunked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context as _;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request; returns the status code and the body.
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let head = format!(
        "{method} {target} HTTP/1.0\r\nHost: {addr}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The status code of a request, or None if the server did not answer.
pub(crate) fn status(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Option<u16> {
    request(addr, method, target, "text/plain", body)
        .ok()
        .map(|(status, _)| status)
}

/// `GET target`: status and body.
pub fn get(addr: SocketAddr, target: &str) -> anyhow::Result<(u16, String)> {
    request(addr, "GET", target, "text/plain", b"")
}

/// `POST target` with a form-encoded body: status and body.
pub fn post(addr: SocketAddr, target: &str, form: &str) -> anyhow::Result<(u16, String)> {
    request(
        addr,
        "POST",
        target,
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    )
}
