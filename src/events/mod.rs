//! Alert events: every health transition, operator switch, reload and undelivered call becomes one
//! [`Event`] published on the [`Bus`]. Subscribers (the admin `GET /events` stream, the webhook) get
//! them; publishers never wait for them.
//!
//! This module imports nothing of the crate, so any module may publish without bending the
//! dependency direction (health stays free of it anyway: the wiring converts its changes).
//!
//! Every published event gets a sequence number (`seq`, 1, 2, 3, ... per process) and stays in a
//! bounded replay ring of the last [`REPLAY_RING`] events, so a stream client that reconnects with
//! the last id it saw gets exactly what it missed ([`Bus::subscribe_after`]).
//!
//! - `queue`   — a bounded drop-oldest queue (the webhook's backlog).
//! - `webhook` — POSTs each event with `reqwest` (rustls: http and https receivers), timeouts and
//!   bounded retry of transient failures only.

mod queue;
mod time;
pub mod webhook;

pub use queue::Queue;
pub use time::rfc3339_utc;
pub use webhook::{WebhookOptions, WebhookStats};

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Events a slow subscriber may fall behind by before it loses the oldest (it is told how many).
pub const SUBSCRIBER_CAPACITY: usize = 1024;
/// Recent events kept for stream clients that reconnect (`Last-Event-ID`).
pub const REPLAY_RING: usize = 1024;
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
    /// Between the nodes of a cluster (etcd): etcd unreachable or back, a peer joining or running
    /// another version, a node running something else than the current rules version, a version
    /// refused, a peer's report, a node gone.
    /// `new` names which (`etcd-unreachable`, `etcd-reachable`, `node-mismatch`, ...).
    Cluster,
}

/// One alert event. Every key is always present (null when it does not apply), so consumers can
/// rely on the shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The event's number in this process: 1, 2, 3, ... in publish order (0 until published). The
    /// `id:` of the event stream.
    pub seq: u64,
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
            seq: 0,
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
    /// The recent events and the last seq handed out. Publish sends under this lock, so a
    /// subscriber taken under it sees each event exactly once: in the ring or on its receiver.
    ring: Mutex<Ring>,
    webhook: OnceLock<WebhookSide>,
    published: AtomicU64,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    cap: usize,
    last_seq: u64,
}

/// A subscription that resumes after an id a client saw ([`Bus::subscribe_after`]).
pub struct Resumed {
    /// Events after the client's id that are still in the ring, oldest first.
    pub backlog: Vec<Arc<Event>>,
    /// Some when events after the client's id are gone: `Some(n)`, n events fell out of the ring;
    /// `None` inside, the id is not of this process (a restart): how many is unknown.
    pub lost: Option<Option<u64>>,
    /// Every event published after the backlog.
    pub rx: broadcast::Receiver<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Bus {
        Bus::with_ring(REPLAY_RING)
    }
}

impl Bus {
    /// A bus that keeps the last `ring` events for resuming streams (at least 1).
    pub fn with_ring(ring: usize) -> Bus {
        let (tx, _) = broadcast::channel(SUBSCRIBER_CAPACITY);
        let cap = ring.max(1);
        Bus {
            inner: Arc::new(Inner {
                tx,
                ring: Mutex::new(Ring {
                    events: VecDeque::with_capacity(cap),
                    cap,
                    last_seq: 0,
                }),
                webhook: OnceLock::new(),
                published: AtomicU64::new(0),
            }),
        }
    }

    /// Numbers the event, keeps it in the replay ring, publishes it to every subscriber and the
    /// webhook queue. Never waits: a slow subscriber loses its oldest events (broadcast lag), a
    /// full webhook queue and the full ring drop their oldest. The ring lock is held for a deque
    /// push and a broadcast send, never across an `.await`.
    pub fn publish(&self, mut ev: Event) {
        let ev = {
            let mut ring = self.ring();
            ring.last_seq += 1;
            ev.seq = ring.last_seq;
            let ev = Arc::new(ev);
            if ring.events.len() >= ring.cap {
                ring.events.pop_front();
            }
            ring.events.push_back(ev.clone());
            let _ = self.inner.tx.send(ev.clone()); // Err only means nobody listens
            ev
        };
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(seq = ev.seq, kind = ?ev.kind, target = ?ev.target, "event published");
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

    /// A receiver of every event published from now on, plus the events after `last_seen` still in
    /// the ring (none when `last_seen` is None: a new client). Each event is in exactly one of the
    /// two.
    pub fn subscribe_after(&self, last_seen: Option<u64>) -> Resumed {
        let ring = self.ring();
        let rx = self.inner.tx.subscribe();
        let Some(last) = last_seen else {
            return Resumed {
                backlog: Vec::new(),
                lost: None,
                rx,
            };
        };
        let oldest = ring.events.front().map_or(ring.last_seq + 1, |e| e.seq);
        let (backlog, lost) = if last > ring.last_seq {
            // An id from before a restart: all we have, and say that some may be gone.
            (ring.events.iter().cloned().collect(), Some(None))
        } else {
            let backlog: Vec<_> = ring
                .events
                .iter()
                .filter(|e| e.seq > last)
                .cloned()
                .collect();
            let gone = oldest.saturating_sub(last + 1);
            (backlog, (gone > 0).then_some(Some(gone)))
        };
        Resumed { backlog, lost, rx }
    }

    /// The seq of the last event published; 0 before the first.
    pub fn last_seq(&self) -> u64 {
        self.ring().last_seq
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events published since start.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// Makes the webhook: from now on every event is queued for `opts.url` (http:// or https://),
    /// and the returned future, which the caller spawns (and owns), POSTs them. Err: a bad URL or
    /// CA file, or a webhook already made.
    pub fn start_webhook(
        &self,
        opts: &WebhookOptions,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
        let hook = webhook::Webhook::new(opts)?;
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
        tracing::info!(url = %hook.url(), "event webhook started");
        Ok(webhook::run(hook, queue, stats))
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
