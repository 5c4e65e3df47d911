//! `GET /metrics` and `GET /events`: telemetry read by monitoring, never on the call path.

use super::http::{Handler, Request, Response, Streamer};
use crate::events::{Bus, Event};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;

/// Time between `: keepalive` comments on an idle event stream: often enough that proxies and load
/// balancers in between keep the connection, and that a gone client is noticed by a failed write.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /metrics`: the page comes from a closure the wiring supplies, so admin stays ignorant of
/// where the numbers live.
#[derive(Clone)]
pub struct MetricsRoute {
    render: Arc<dyn Fn() -> String + Send + Sync>,
}

impl MetricsRoute {
    pub fn new(render: impl Fn() -> String + Send + Sync + 'static) -> MetricsRoute {
        MetricsRoute {
            render: Arc::new(render),
        }
    }
}

impl Handler for MetricsRoute {
    fn handle(&self, req: &Request) -> Option<Response> {
        if req.path != "/metrics" {
            return None;
        }
        if req.method != "GET" {
            return Some(Response::method_not_allowed("GET"));
        }
        let body = (self.render)();
        Some(Response::text(200, crate::metrics::CONTENT_TYPE, body))
    }
}

/// `GET /events`: server-sent events, one per alert event, until the client goes away.
#[derive(Clone)]
pub struct EventsRoute {
    bus: Bus,
    keepalive: Duration,
}

impl EventsRoute {
    pub fn new(bus: Bus) -> EventsRoute {
        EventsRoute::with_keepalive(bus, KEEPALIVE)
    }

    pub fn with_keepalive(bus: Bus, keepalive: Duration) -> EventsRoute {
        EventsRoute { bus, keepalive }
    }
}

impl Handler for EventsRoute {
    fn handle(&self, req: &Request) -> Option<Response> {
        // Only reached for non-GET (a GET was claimed by `stream`).
        (req.path == "/events").then(|| Response::method_not_allowed("GET"))
    }

    fn stream(&self, req: &Request) -> Option<Streamer> {
        if req.path != "/events" || req.method != "GET" {
            return None;
        }
        // Subscribed before the headers go out: nothing published after the request is missed.
        let rx = self.bus.subscribe();
        let keepalive = self.keepalive;
        Some(Box::new(move |s| Box::pin(sse(s, rx, keepalive))))
    }
}

type Rx = tokio::sync::broadcast::Receiver<Arc<Event>>;

async fn sse(mut s: TcpStream, mut rx: Rx, keepalive: Duration) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n: sosrouter events\n\n";
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    tracing::info!(peer = ?s.peer_addr().ok(), "event stream client connected");
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    loop {
        let chunk = tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => format!("data: {}\n\n", ev.to_json()),
                // A client too slow for SUBSCRIBER_CAPACITY events in a row: say so, keep going.
                Err(RecvError::Lagged(n)) => format!(": lagged, {n} events dropped\n\n"),
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => ": keepalive\n\n".to_string(),
        };
        let write = tokio::time::timeout(keepalive, s.write_all(chunk.as_bytes()));
        if !matches!(write.await, Ok(Ok(()))) {
            break;
        }
    }
    tracing::info!(peer = ?s.peer_addr().ok(), "event stream client gone");
}
