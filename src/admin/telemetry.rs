//! `GET /metrics` and `GET /events`: telemetry read by monitoring, never on the call path.
//!
//! The event stream is server-sent events (axum's `Sse`):
//! - each alert event is one SSE event: `id: <seq>` (the bus's sequence number) and
//!   `data: <the event's JSON>`;
//! - `: keepalive` comments every [`KEEPALIVE`] while idle, so proxies in between keep the
//!   connection and a gone client is noticed by a failed write;
//! - a client that reconnects with `Last-Event-ID: N` (browsers' `EventSource` do) first gets every
//!   event after N still in the bus's replay ring, then the live ones, each exactly once;
//! - an event on a quiet stream goes out at once; events that come less than [`COALESCE`] after
//!   the last write go out together when it has passed (one write per client per `COALESCE`
//!   instead of one per event: each write to each client is a system call, most of what 100
//!   stream clients cost the proxy; `testbeds/run sse-load` measures it);
//! - when events the client should have had are gone (fell out of the ring, an id from before a
//!   restart, or a client too slow for the live feed), it gets `event: lost` with
//!   `data: {"lost": N | null, "reason": ...}` (null: how many is unknown) at that point, and no `id:`.
//!
//! The stream ends when the app shuts down.

use super::Admin;
use crate::events::{Bus, Event, Resumed};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Time between keep-alive comments on an idle event stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a stream waits after an event for more, to send them in one write.
pub const COALESCE: Duration = Duration::from_millis(250);
/// Most events sent in one write; a stream that has this many waiting sends the next ones at once.
const MAX_BATCH: usize = 256;

/// One `/metrics` render at a time: scrapes that come while one renders wait for it instead of
/// each taking a thread of their own.
static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// `GET /metrics`. The page is rendered on the blocking pool, one at a time: at tens of thousands
/// of targets a render takes tens of milliseconds, which on a runtime thread would delay calls
/// and probes by as much (a scraper that gave up and asked again used to pile renders up).
pub(super) async fn metrics_route(State(admin): State<Admin>) -> Response {
    let Some(render) = admin.metrics else {
        return super::error(StatusCode::NOT_FOUND, "no metrics");
    };
    let Ok(_one) = RENDERING.acquire().await else {
        return super::error(StatusCode::SERVICE_UNAVAILABLE, "metrics closed");
    };
    let page = match admin.tasks.spawn_blocking(move || render()).await {
        Ok(page) => page,
        Err(e) => {
            return super::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("metrics render did not finish: {e}"),
            );
        }
    };
    let mut r = page.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}

/// `GET /events`.
pub(super) async fn events_route(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    let Some(bus) = admin.events else {
        return super::error(StatusCode::NOT_FOUND, "no events");
    };
    let Ok(slot) = admin.streams.clone().try_acquire_owned() else {
        tracing::warn!("event stream refused: every stream slot is taken");
        let mut r = super::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams open; try again later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let last = last_event_id(&headers);
    // The slot is held for as long as the stream is (dropped with it when the client goes).
    let events = stream_after(&bus, last, admin.tasks.token().clone()).map(move |e| {
        let _held = &slot;
        e
    });
    tracing::info!(last_event_id = ?last, "event stream client connected");
    let keepalive = KeepAlive::new().interval(admin.keepalive).text("keepalive");
    let mut r = Sse::new(events).keep_alive(keepalive).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The `Last-Event-ID` a reconnecting client sends; None when absent or not a number.
pub fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One SSE event per alert event, after `last` (see the module doc), until `stop` fires or the bus
/// is gone.
pub fn stream_after(
    bus: &Bus,
    last: Option<u64>,
    stop: CancellationToken,
) -> impl Stream<Item = Result<sse::Event, Infallible>> + Send + 'static {
    // Subscribed before the headers go out: nothing published after the request is missed.
    let Resumed { backlog, lost, rx } = bus.subscribe_after(last);
    let mut first: VecDeque<sse::Event> = VecDeque::with_capacity(backlog.len() + 2);
    first.push_back(sse::Event::default().comment("sosrouter events"));
    if let Some(n) = lost {
        first.push_back(lost_event(
            n,
            "events after your Last-Event-ID are no longer kept",
        ));
    }
    first.extend(backlog.iter().map(to_sse));
    // Batches of events, each sent in one write: the greeting and the backlog, then the live ones.
    // A stream quiet for COALESCE sends the next event at once (an alarm never waits); one that
    // wrote less than COALESCE ago waits out the rest of it and sends what came meanwhile along
    // (at most MAX_BATCH), so a busy feed costs one write per client per COALESCE.
    let live = stream::unfold(
        (first, rx, false, None::<Instant>),
        |(first, mut rx, behind, last)| async move {
            if !first.is_empty() {
                return Some((first, (VecDeque::new(), rx, false, Some(Instant::now()))));
            }
            let mut batch = VecDeque::new();
            if !behind {
                batch.push_back(match rx.recv().await {
                    Ok(ev) => to_sse(&ev),
                    Err(RecvError::Lagged(n)) => fell_behind(n),
                    Err(RecvError::Closed) => return None,
                });
                if let Some(at) = last {
                    tokio::time::sleep_until(at + COALESCE).await;
                }
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(ev) => batch.push_back(to_sse(&ev)),
                    Err(TryRecvError::Lagged(n)) => batch.push_back(fell_behind(n)),
                    // Closed: the next recv says so and ends the stream.
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            let full = batch.len() >= MAX_BATCH;
            Some((batch, (VecDeque::new(), rx, full, Some(Instant::now()))))
        },
    );
    live.flat_map(|batch| stream::iter(batch.into_iter().map(Ok::<_, Infallible>)))
        .take_until(stop.cancelled_owned())
}

/// A client too slow for SUBSCRIBER_CAPACITY events in a row: say so, keep going.
fn fell_behind(n: u64) -> sse::Event {
    lost_event(Some(n), "this stream fell behind")
}

fn to_sse(ev: &Arc<Event>) -> sse::Event {
    sse::Event::default()
        .id(ev.seq.to_string())
        .data(ev.to_json())
}

fn lost_event(n: Option<u64>, reason: &str) -> sse::Event {
    let data = serde_json::json!({ "lost": n, "reason": reason });
    sse::Event::default().event("lost").data(data.to_string())
}
