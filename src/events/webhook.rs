//! The event webhook: one task POSTs every queued event, in order, as JSON to an http:// URL with a
//! hand-written HTTP/1.1 client (no HTTP crate for one request shape).
//!
//! Delivery, per event:
//! 1. Connect (within [`CONNECT_TIMEOUT`]), write the request and read the status line (each within
//!    [`IO_TIMEOUT`]). A 2xx is delivered.
//! 2. Anything else (refused, timeout, non-2xx) is retried after [`BACKOFF`], at most [`TRIES`]
//!    tries in all; then the event is given up (logged, counted) and the next one goes.
//!
//! Why bounded: an event describes a change operators must see within seconds; one dead receiver
//! must not hold the queue for long, and the queue itself drops its oldest when full.

use super::{Event, Queue};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Tries per event, the first included.
pub const TRIES: usize = 3;
/// Pause before the 2nd and 3rd try.
pub const BACKOFF: [Duration; TRIES - 1] = [Duration::from_millis(100), Duration::from_millis(400)];
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters of the webhook, for metrics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events the receiver accepted (2xx).
    pub delivered: AtomicU64,
    /// Events given up after every try.
    pub failed: AtomicU64,
    /// Single tries that failed (each retry counts).
    pub failed_tries: AtomicU64,
    /// Events dropped from a full queue.
    pub dropped: AtomicU64,
}

/// A parsed `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl WebhookUrl {
    pub fn parse(s: &str) -> Result<WebhookUrl, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("webhook URL `{s}`: only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad_port = |p: &str| format!("webhook URL `{s}`: bad port `{p}`");
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("webhook URL `{s}`: unclosed `[`"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, p.parse().map_err(|_| bad_port(p))?),
                None if after.is_empty() => (h, 80),
                None => return Err(bad_port(after)),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad_port(p))?),
                None => (authority, 80),
            }
        };
        if host.is_empty() || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!("webhook URL `{s}`: missing host or bad path"));
        }
        Ok(WebhookUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.path)
    }
}

/// The webhook task: forever takes the oldest event and delivers it.
pub async fn run(url: WebhookUrl, queue: Arc<Queue<Arc<Event>>>, stats: Arc<WebhookStats>) {
    loop {
        let ev = queue.pop().await;
        let body = ev.to_json();
        if deliver(&url, &body, &stats).await {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %url, kind = ?ev.kind, "event webhook gave up on an event");
        }
    }
}

/// Up to [`TRIES`] POSTs of `body`; true once one got a 2xx.
pub async fn deliver(url: &WebhookUrl, body: &str, stats: &WebhookStats) -> bool {
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(BACKOFF[attempt - 1]).await;
        }
        match post(url, body).await {
            Ok(code) if (200..300).contains(&code) => return true,
            Ok(code) => tracing::debug!(url = %url, code, attempt, "webhook refused the event"),
            Err(e) => tracing::debug!(url = %url, error = %e, attempt, "webhook POST failed"),
        }
        stats.failed_tries.fetch_add(1, Ordering::Relaxed);
    }
    false
}

/// One POST; the status code of the reply.
pub async fn post(url: &WebhookUrl, body: &str) -> std::io::Result<u16> {
    let timeout = |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string());
    let addr = (url.host.as_str(), url.port);
    let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| timeout("connect timeout"))??;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: sosrouter\r\n\r\n{body}",
        url.path,
        url.host_header(),
        body.len()
    );
    tokio::time::timeout(IO_TIMEOUT, s.write_all(req.as_bytes()))
        .await
        .map_err(|_| timeout("write timeout"))??;
    let mut buf = Vec::with_capacity(256);
    let read_status = async {
        let mut chunk = [0u8; 512];
        loop {
            if let Some(code) = status_code(&buf) {
                return Ok(code);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 || buf.len() > 8192 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "no HTTP status line",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(IO_TIMEOUT, read_status)
        .await
        .map_err(|_| timeout("reply timeout"))?
}

/// The code of a complete `HTTP/1.x NNN ...` status line in `buf`, once one is there.
fn status_code(buf: &[u8]) -> Option<u16> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..end]).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return Some(0);
    }
    Some(parts.next()?.parse().unwrap_or(0))
}
