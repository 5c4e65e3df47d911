//! The operator's admin endpoint: target health, the enable switch, reloads, metrics and the event
//! stream, over HTTP/1.1 with axum (hyper 1.x).
//!
//! Routes (JSON bodies unless said otherwise):
//! - `GET /status` -> 200 `{"targets": [status, ...], "systemic": {...}, "rules": {...}}`: every
//!   target in rules order (id, state, enabled, readiness, since_unix_ms, last_reason, counters),
//!   the systemic alarm, and the `rules` object when a reloader is mounted ([`rules`]).
//! - `POST /targets/{id}/disable`, `POST /targets/{id}/enable` -> 200 with the target's new
//!   status; 404 for an unknown id.
//! - `POST /reload` -> 200 or 422 ([`rules`]; mounted with a reloader).
//! - `GET /metrics` -> 200 Prometheus text format ([`telemetry`]; mounted with a renderer).
//! - `GET /events` -> 200 `text/event-stream`: one SSE event per alert event with `id: <seq>`,
//!   keep-alive comments, `Last-Event-ID` resume from the bus's replay ring ([`telemetry`]).
//! - `GET /`, `/index.html`, `/console.js`, `/console.css`, `/favicon.svg`, `/console/state`,
//!   `/console/whatif`: the operator console ([`console`]; mounted with a [`ConsoleData`]).
//! - a known path with another method -> 405 with `Allow`; anything else -> 404.
//! - with a token configured, 401 without `Authorization: Bearer <token>`: for every request that
//!   is not a read, and for reads too unless `--admin-token-for-reads false` ([`auth`]).
//!
//! Where things are:
//! - [`router`] is the ONE place routes are assembled: to add a route, add it there (its handler a
//!   thin axum wrapper over a plain function, as the ones below). Routes need no protection of
//!   their own: [`serve`] wraps the whole router in the token gate, the body limit, the response
//!   timeout and JSON error bodies ([`http::protect`]).
//! - [`serve`] (in `http`) runs the server on the app's [`Tasks`]: a connection cap, a header read
//!   timeout, a write timeout, graceful shutdown on the tasks' cancellation.
//!
//! Wiring (`app`): `serve(listener, router(admin), access, Limits::default(), &tasks)`.

pub mod auth;
pub mod console;
mod http;
pub mod rules;
pub mod telemetry;
/// The one HTTP test client, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/http.rs"]
mod test_http;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_auth;

pub use auth::{Access, Token, TokenError, load_token};
pub use console::{ConsoleData, WhatIfQuery};
pub use http::{Limits, MAX_CONNECTIONS, protect, serve};
pub use rules::RulesControl;
pub use telemetry::KEEPALIVE;

use crate::events::Bus;
use crate::health::Health;
use crate::tasks::Tasks;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

/// Renders the `/metrics` page (supplied by the wiring, so admin stays ignorant of where the
/// numbers live).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What the routes read and act on. Cheap to clone (axum clones it per request).
#[derive(Clone)]
pub struct Admin {
    pub health: Health,
    /// `/reload` and the `rules` object of `/status`; None: neither.
    pub rules: Option<Arc<dyn RulesControl>>,
    /// `/metrics`; None: no such route.
    pub metrics: Option<MetricsRender>,
    /// `/events`; None: no such route.
    pub events: Option<Bus>,
    /// The operator console (`GET /` and its JSON); None: no console.
    pub console: Option<Arc<dyn ConsoleData>>,
    /// Time between keep-alive comments on an idle event stream ([`KEEPALIVE`]).
    pub keepalive: Duration,
    /// The app's tasks: blocking reloads run on them, and event streams end on their cancellation.
    pub tasks: Tasks,
    /// Slots for event streams: an open stream holds one; none free, `GET /events` gets a 503.
    /// Fewer than the connection cap, so streams can never take every connection ([`MAX_STREAMS`]).
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// Admin connections event streams can never take, so an operator's `POST /targets/{id}/disable`
/// or `/reload` still gets in when every stream slot is held (with no cap of their own, 256
/// streams took every connection and the POST got a 503).
pub const KEPT_FOR_REQUESTS: usize = 64;

/// Event streams served at once by default: the connection cap less [`KEPT_FOR_REQUESTS`] (192).
pub const MAX_STREAMS: usize = MAX_CONNECTIONS - KEPT_FOR_REQUESTS;

impl Admin {
    /// Health routes only; add the others with the fields.
    pub fn new(health: Health, tasks: Tasks) -> Admin {
        Admin {
            health,
            rules: None,
            metrics: None,
            events: None,
            console: None,
            keepalive: KEEPALIVE,
            tasks,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        }
    }
}

/// Every route of the admin endpoint, unprotected: [`serve`] adds the gate and the limits.
pub fn router(admin: Admin) -> Router {
    let mut r = Router::new()
        .route("/status", get(status_route))
        .route("/targets/{id}/enable", post(enable_route))
        .route("/targets/{id}/disable", post(disable_route));
    if admin.rules.is_some() {
        r = r.route("/reload", post(rules::reload_route));
    }
    if admin.metrics.is_some() {
        r = r.route("/metrics", get(telemetry::metrics_route));
    }
    if admin.events.is_some() {
        r = r.route("/events", get(telemetry::events_route));
    }
    if admin.console.is_some() {
        r = console::routes(r);
    }
    r.fallback(not_found).with_state(admin)
}

/// An error answer: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The body of `GET /status`.
pub fn status(admin: &Admin) -> serde_json::Value {
    let mut body = serde_json::json!({
        "targets": admin.health.snapshot(),
        "systemic": admin.health.systemic_status(),
    });
    if let Some(rules) = &admin.rules {
        body["rules"] = rules.status();
    }
    body
}

/// Flips the operator switch of target `id`: its new status, or None for an unknown id.
pub fn switch(health: &Health, id: &str, enable: bool) -> Option<serde_json::Value> {
    if !health.set_enabled(id, enable) {
        return None;
    }
    let status = health.status(id)?;
    serde_json::to_value(status).ok()
}

/// One `/status` render at a time (see [`status_route`]).
static STATUS_RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// `GET /status`, rendered AND serialized in the background, one at a time: it lists every target,
/// and at 18 000 targets a client polling it every few milliseconds during a reload (the reload
/// drill did) held the runtime threads long enough to delay calls by seconds. Serializing the page
/// of 18 001 targets on the runtime thread still delayed calls: the reload drill (polling every
/// 50 ms) had 27-145 calls over 50 ms in four runs that way, and 0, 1, 4, 4 and 184 in five with
/// the page written in the background.
async fn status_route(State(admin): State<Admin>) -> Response {
    let Ok(_one) = STATUS_RENDERING.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "status closed");
    };
    let tasks = admin.tasks.clone();
    match tasks
        .spawn_blocking(move || serde_json::to_vec(&status(&admin)))
        .await
    {
        Ok(Ok(body)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("status not serialized: {e}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("status render did not finish: {e}"),
        ),
    }
}

async fn enable_route(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    switch_route(&admin, &id, true)
}

async fn disable_route(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    switch_route(&admin, &id, false)
}

fn switch_route(admin: &Admin, id: &str, enable: bool) -> Response {
    match switch(&admin.health, id, enable) {
        Some(status) => Json(status).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("unknown target: {id}")),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no such resource: {}", uri.path()),
    )
}
