//! Alert events: every health transition, operator switch, reload and undelivered call becomes one
//! [`Event`] published on the [`Bus`]. Subscribers (the admin `GET /events` stream, the webhook) get
//! them; publishers never wait for them.
//!
//! This module imports nothing of the crate, so any module may publish without bending the
//! dependency direction (health stays free of it anyway: the wiring converts its changes).
//!
//! - `queue`   — a bounded drop-oldest queue (the webhook's backlog).
//! - `webhook` — a hand-written HTTP/1.1 POST client with timeouts and bounded retry.

mod queue;
mod time;
pub mod webhook;

pub use queue::Queue;
pub use time::rfc3339_utc;
pub use webhook::{WebhookStats, WebhookUrl};

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Events a slow subscriber may fall behind by before it loses the oldest (it is told how many).
pub const SUBSCRIBER_CAPACITY: usize = 1024;
/// Events the webhook may have waiting; when full the oldest is dropped and counted.
pub const WEBHOOK_QUEUE: usize = 1024;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A target's health state changed (probes or call outcomes).
    Health,
    /// The operator enabled or disabled a target.
    Operator,
    /// A rules reload was applied or refused.
    Reload,
    /// No target answered a call; it is in the undelivered record.
    Undelivered,
    /// A shared failure: a failure domain turned suspect or failing, or too many targets are down
    /// or suspect (`new` = "raised"), or it healed (`new` = "cleared"). `detail` has the report.
    Systemic,
    /// Between the nodes of a cluster (etcd): etcd unreachable or back, a node running something
    /// else than the current rules version, a version refused, a peer's report, a node gone.
    /// `new` names which (`etcd-unreachable`, `etcd-reachable`, `node-mismatch`, ...).
    Cluster,
}

/// One alert event. Every key is always present (null when it does not apply), so consumers can
/// rely on the shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When the change happened, Unix time in milliseconds.
    pub unix_ms: u64,
    /// The same instant as RFC 3339 UTC with milliseconds.
    pub time: String,
    pub kind: Kind,
    pub target: Option<String>,
    pub route: Option<String>,
    pub call_id: Option<String>,
    /// State before and after: health states (`up`, `down`, `probation`), `enabled`/`disabled`,
    /// or `ok`/`error` for a reload (new only). Null when it does not apply.
    pub old: Option<String>,
    pub new: Option<String>,
    pub reason: String,
    /// Structured detail (the systemic report: domain, targets, routes, evidence); null otherwise.
    pub detail: Option<serde_json::Value>,
}

impl Event {
    fn at_now(kind: Kind, reason: String) -> Event {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Event {
            unix_ms,
            time: rfc3339_utc(unix_ms),
            kind,
            target: None,
            route: None,
            call_id: None,
            old: None,
            new: None,
            reason,
            detail: None,
        }
    }

    /// A health transition of `target` from `old` to `new`.
    pub fn health(target: &str, old: &str, new: &str, reason: &str) -> Event {
        Event {
            target: Some(target.to_string()),
            old: Some(old.to_string()),
            new: Some(new.to_string()),
            ..Event::at_now(Kind::Health, reason.to_string())
        }
    }

    /// The operator switched `target` on or off.
    pub fn operator(target: &str, enabled: bool) -> Event {
        let word = |e: bool| if e { "enabled" } else { "disabled" }.to_string();
        Event {
            target: Some(target.to_string()),
            old: Some(word(!enabled)),
            new: Some(word(enabled)),
            ..Event::at_now(Kind::Operator, "operator switch".to_string())
        }
    }

    /// A reload was applied (`ok`) or refused; `detail` says what changed or why it was refused.
    pub fn reload(ok: bool, detail: &str) -> Event {
        Event {
            new: Some(if ok { "ok" } else { "error" }.to_string()),
            ..Event::at_now(Kind::Reload, detail.to_string())
        }
    }

    /// A call on `route` that no target answered; `reason` summarises its attempts.
    pub fn undelivered(route: &str, call_id: &str, reason: &str) -> Event {
        Event {
            route: Some(route.to_string()),
            call_id: Some(call_id.to_string()),
            ..Event::at_now(Kind::Undelivered, reason.to_string())
        }
    }

    /// A systemic alarm raised or cleared; `sentence` is the plain text for a public notice.
    pub fn systemic(
        active: bool,
        domain: Option<&str>,
        sentence: &str,
        detail: serde_json::Value,
    ) -> Event {
        Event {
            target: domain.map(str::to_string),
            new: Some(if active { "raised" } else { "cleared" }.to_string()),
            detail: Some(detail),
            ..Event::at_now(Kind::Systemic, sentence.to_string())
        }
    }

    /// A cluster event; `new` names it (`etcd-unreachable`, `node-mismatch`, ...).
    pub fn cluster(new: &str, reason: &str) -> Event {
        Event {
            new: Some(new.to_string()),
            ..Event::at_now(Kind::Cluster, reason.to_string())
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The event bus. Cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

/// The webhook's backlog and its counters.
type WebhookSide = (Arc<Queue<Arc<Event>>>, Arc<WebhookStats>);

struct Inner {
    tx: broadcast::Sender<Arc<Event>>,
    webhook: OnceLock<WebhookSide>,
    published: AtomicU64,
}

impl Default for Bus {
    fn default() -> Bus {
        let (tx, _) = broadcast::channel(SUBSCRIBER_CAPACITY);
        Bus {
            inner: Arc::new(Inner {
                tx,
                webhook: OnceLock::new(),
                published: AtomicU64::new(0),
            }),
        }
    }
}

impl Bus {
    /// Publishes to every subscriber and the webhook queue. Never blocks: a slow subscriber loses
    /// its oldest events (broadcast lag), a full webhook queue drops its oldest.
    pub fn publish(&self, ev: Event) {
        let ev = Arc::new(ev);
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(kind = ?ev.kind, target = ?ev.target, "event published");
        let _ = self.inner.tx.send(ev.clone()); // Err only means nobody listens
        if let Some((q, stats)) = self.inner.webhook.get()
            && q.push(ev)
        {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.tx.subscribe()
    }

    /// Events published since start.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// Makes the webhook: from now on every event is queued for `url` (http:// only), and the
    /// returned future, which the caller spawns (and owns), POSTs them. Err: a bad URL, or a webhook
    /// already made.
    pub fn start_webhook(
        &self,
        url: &str,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
        let url = WebhookUrl::parse(url)?;
        let queue = Arc::new(Queue::new(WEBHOOK_QUEUE));
        let stats = Arc::new(WebhookStats::default());
        if self
            .inner
            .webhook
            .set((queue.clone(), stats.clone()))
            .is_err()
        {
            return Err("a webhook is already running".to_string());
        }
        tracing::info!(url = %url, "event webhook started");
        Ok(webhook::run(url, queue, stats))
    }

    /// The webhook's counters, when one runs.
    pub fn webhook_stats(&self) -> Option<Arc<WebhookStats>> {
        self.inner.webhook.get().map(|(_, s)| s.clone())
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("subscribers", &self.inner.tx.receiver_count())
            .field("published", &self.published())
            .field("webhook", &self.inner.webhook.get().is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests;
