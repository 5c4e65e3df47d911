//! The event webhook: one task POSTs every queued event, in order, as JSON to an `http://` or
//! `https://` URL with `reqwest` (TLS by rustls on ring; the system's roots, plus an operator's CA
//! file when given, e.g. for a receiver with an internal certificate).
//!
//! Delivery, per event:
//! 1. POST within [`CONNECT_TIMEOUT`] to connect and [`REQUEST_TIMEOUT`] for the whole exchange.
//!    A 2xx is delivered.
//! 2. A transient failure — no connection, a timeout, a broken exchange, or 408, 429 or 5xx — is
//!    retried after [`BACKOFF`], at most [`TRIES`] tries in all. Any other answer (3xx, 4xx) says
//!    the receiver will not take this event: retrying cannot help, so it is given up at once.
//! 3. A given-up event is logged and counted; the next one goes.
//!
//! Why bounded: an event describes a change operators must see within seconds; one dead receiver
//! must not hold the queue for long, and the queue itself drops its oldest when full.

use super::{Event, Queue};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Tries per event, the first included.
pub const TRIES: usize = 3;
/// Pause before the 2nd and 3rd try.
pub const BACKOFF: [Duration; TRIES - 1] = [Duration::from_millis(100), Duration::from_millis(400)];
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The whole POST: connect, TLS, request, response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Counters of the webhook, for metrics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events the receiver accepted (2xx).
    pub delivered: AtomicU64,
    /// Events given up (every try failed, or the receiver refused it for good).
    pub failed: AtomicU64,
    /// Single tries that failed (each retry counts).
    pub failed_tries: AtomicU64,
    /// Events dropped from a full queue.
    pub dropped: AtomicU64,
}

/// Where the webhook posts, and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct WebhookOptions {
    /// `http://host[:port]/path` or `https://...`.
    pub url: String,
    /// A PEM file of CA certificates trusted for an https receiver, on top of the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// A checked URL and its HTTP client.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: reqwest::Url,
    client: reqwest::Client,
}

/// What one try came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Try {
    Delivered,
    /// Worth another try: no connection, a timeout, 408, 429 or 5xx.
    Transient,
    /// The receiver refused it for good (3xx, other 4xx): no retry.
    Refused,
}

/// The verdict on a status code.
pub fn classify(code: u16) -> Try {
    match code {
        200..=299 => Try::Delivered,
        408 | 429 | 500..=599 => Try::Transient,
        _ => Try::Refused,
    }
}

impl Webhook {
    pub fn new(opts: &WebhookOptions) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(&opts.url)
            .map_err(|e| format!("webhook URL `{}`: {e}", opts.url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "webhook URL `{}`: expected http://host[:port]/path or https://...",
                opts.url
            ));
        }
        let mut b = client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect is a 3xx: refused (never re-POSTed elsewhere).
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &opts.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("webhook CA file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("webhook CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "webhook CA file {}: no certificate",
                    path.display()
                ));
            }
            b = b.tls_certs_merge(certs);
        }
        let client = b.build().map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(Webhook { url, client })
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// One POST of `body`.
    pub async fn post(&self, body: &str) -> Try {
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let verdict = classify(code);
                if verdict != Try::Delivered {
                    tracing::debug!(url = %self.url, code, "webhook answered without taking the event");
                }
                verdict
            }
            Err(e) => {
                tracing::debug!(url = %self.url, error = %e, "webhook POST failed");
                Try::Transient
            }
        }
    }

    /// Up to [`TRIES`] POSTs of `body` while failures are transient; true once one got a 2xx.
    pub async fn deliver(&self, body: &str, stats: &WebhookStats) -> bool {
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF[attempt - 1]).await;
            }
            let verdict = self.post(body).await;
            if verdict == Try::Delivered {
                return true;
            }
            stats.failed_tries.fetch_add(1, Ordering::Relaxed);
            if verdict == Try::Refused {
                return false;
            }
        }
        false
    }
}

/// The one way this crate builds an HTTP client: rustls on ring, `sosrouter` user agent. Used by
/// the webhook, by `sosrouter route --admin` and by the etcd client (`cluster`).
pub fn client_builder() -> reqwest::ClientBuilder {
    // reqwest asks rustls for the process default provider; install ring once (an Err only
    // means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("sosrouter/", env!("CARGO_PKG_VERSION")))
}

/// The webhook task: forever takes the oldest event and delivers it.
pub async fn run(hook: Webhook, queue: Arc<Queue<Arc<Event>>>, stats: Arc<WebhookStats>) {
    loop {
        let ev = queue.pop().await;
        let body = ev.to_json();
        if hook.deliver(&body, &stats).await {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %hook.url, seq = ev.seq, kind = ?ev.kind, "event webhook gave up on an event");
        }
    }
}
