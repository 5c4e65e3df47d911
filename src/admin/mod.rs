//! The operator's admin endpoint: target health and the enable switch over a tiny HTTP/1.1
//! server (hand-written on tokio; one request per connection).
//!
//! Routes (JSON bodies):
//! - `GET /status` -> 200 `{"targets": [status, ...]}` in rules order, each with id, state,
//!   enabled, readiness, since_unix_ms, last_reason and probe/call counters.
//! - `POST /targets/{id}/disable`, `POST /targets/{id}/enable` -> 200 with the target's new
//!   status; 404 for an unknown id; 405 for other methods.
//! - `POST /reload`, and `GET /status` with a `rules` object: see [`rules`] (wired by `app`).
//! - `GET /metrics` -> 200 Prometheus text format 0.0.4 ([`MetricsRoute`]).
//! - `GET /`, `/console.js`, `/console.css`, `/console/state`, `/console/whatif`: the operator
//!   console ([`console`], wired by `app`).
//! - `GET /events` -> 200 `text/event-stream`: one `data: {json}` per alert event, `: keepalive`
//!   comments in between ([`EventsRoute`]).
//! - anything else -> 404.
//! - with a token configured (see `auth`), a POST without `Authorization: Bearer <token>` -> 401.
//!
//! Wiring: `admin::serve(listener, health)`; to add routes later, implement [`Handler`] and call
//! [`serve_with`] with [`HealthRoutes`] plus yours.

pub mod auth;
pub mod console;
mod http;
pub mod rules;
mod telemetry;
/// The one HTTP test client, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/http.rs"]
mod test_http;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_auth;

pub use auth::{Token, TokenError, load_token};
pub use http::{
    BoxFuture, Handler, MAX_BODY_BYTES, MAX_HEAD_BYTES, READ_TIMEOUT, Request, Response, Streamer,
    dispatch, parse_head, serve_with, serve_with_auth,
};
pub use telemetry::{EventsRoute, KEEPALIVE, MetricsRoute};

pub use console::{ConsoleData, ConsoleRoutes, WhatIfQuery};
pub use rules::{RulesControl, RulesRoutes};

use crate::health::Health;
use std::sync::Arc;

/// Serves the health routes on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, health: Health) {
    serve_with(listener, vec![Arc::new(HealthRoutes::new(health))]).await
}

/// As [`serve`]; with a token, POSTs need `Authorization: Bearer <token>` (401 otherwise).
pub async fn serve_auth(listener: tokio::net::TcpListener, health: Health, token: Option<Token>) {
    let routes: Vec<Arc<dyn Handler>> = vec![Arc::new(HealthRoutes::new(health))];
    serve_with_auth(listener, routes, token, crate::tasks::Tasks::new()).await
}

/// `/status` and `/targets/{id}/enable|disable`.
#[derive(Debug, Clone)]
pub struct HealthRoutes {
    health: Health,
}

impl HealthRoutes {
    pub fn new(health: Health) -> HealthRoutes {
        HealthRoutes { health }
    }
}

impl Handler for HealthRoutes {
    fn handle(&self, req: &Request) -> Option<Response> {
        if req.path == "/status" {
            if req.method != "GET" {
                return Some(Response::method_not_allowed("GET"));
            }
            let targets = self.health.snapshot();
            return Some(Response::json(
                200,
                &serde_json::json!({
                    "targets": targets,
                    "systemic": self.health.systemic_status(),
                }),
            ));
        }
        let rest = req.path.strip_prefix("/targets/")?;
        let (id, action) = rest.rsplit_once('/')?;
        let enable = match action {
            "enable" => true,
            "disable" => false,
            _ => return None,
        };
        if id.is_empty() || id.contains('/') {
            return None;
        }
        if req.method != "POST" {
            return Some(Response::method_not_allowed("POST"));
        }
        if !self.health.set_enabled(id, enable) {
            return Some(Response::error(404, &format!("unknown target: {id}")));
        }
        let status = self.health.status(id)?;
        Some(Response::json(200, &status))
    }
}
