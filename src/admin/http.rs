//! The admin server: hyper 1.x HTTP/1.1 connections serving an axum [`Router`], with our own accept
//! loop so every bound is ours to set.
//!
//! Bounds ([`Limits`]):
//! - at most `max_connections` at once; one more is answered 503 and closed at once;
//! - one request per connection (no keep-alive: an idle connection never holds a slot);
//! - a request head within `header_timeout`, or the connection is closed; at most 8 KiB (431
//!   beyond);
//! - a body of at most `max_body` bytes (413; the admin API takes none);
//! - a handler's answer within `response_timeout` (408), every write within `write_timeout`, or
//!   the connection is closed (a client that stops reading an event stream is let go).
//!
//! Shutdown: when the tasks' token fires the accept loop ends and every connection is asked to
//! finish its request in flight (event streams end on the same token), at most [`GRACE`].

use super::auth::{self, Access};
use crate::tasks::Tasks;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, warn};

/// Largest request head hyper buffers (its minimum): a larger head gets 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a connection may take to finish after shutdown began.
pub const GRACE: Duration = Duration::from_millis(500);

/// The server's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (event streams included). The default leaves room for 100
    /// event-stream clients (issue 14's load figure) with slots to spare for the operator's
    /// requests: at 64, 64 streams took every slot and a `POST /targets/{id}/disable` got 503.
    pub max_connections: usize,
    /// A request head must arrive within this, or the connection is closed.
    pub header_timeout: Duration,
    /// A handler must answer within this (408). An event stream answers at once.
    pub response_timeout: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// Largest request body accepted (413).
    pub max_body: usize,
}

/// Admin connections served at once by default ([`Limits::max_connections`]).
pub const MAX_CONNECTIONS: usize = 256;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_body: 4 * 1024,
        }
    }
}

/// Wraps every route of `router` in the token gate, the body limit, the response timeout, and
/// JSON bodies for the errors the layers and axum answer themselves (404, 405, 408, 413).
pub fn protect(router: Router, access: Access, limits: Limits) -> Router {
    router
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.response_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            auth::gate,
        ))
        // Outermost, so the 401 of the gate and the 408 of the timeout get a JSON body too.
        .layer(axum::middleware::map_response(json_errors))
}

/// An error answer that is not JSON (the empty 405 of axum, the 408 and 413 of the layers) gets
/// `{"error": "<reason>"}`.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return res;
    }
    let (mut parts, _) = res.into_parts();
    let reason = status.canonical_reason().unwrap_or("error");
    // axum sets `Allow` on a 405 after this layer has run: point at it.
    let msg = if status == StatusCode::METHOD_NOT_ALLOWED {
        "method not allowed; the Allow header lists the methods".to_string()
    } else {
        reason.to_lowercase()
    };
    let body = serde_json::json!({ "error": msg }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Serves `router` (protected by [`protect`]) on `listener` until the tasks' token fires. The
/// accept loop and every connection run on `tasks`.
pub fn serve(listener: TcpListener, router: Router, access: Access, limits: Limits, tasks: &Tasks) {
    let app = protect(router, access, limits);
    let t = tasks.clone();
    tasks.spawn_watching(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let stop = t.token().clone();
        loop {
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!(%peer, "admin connection refused: at the connection cap");
                refuse(stream);
                continue;
            };
            let app = app.clone();
            let stop = stop.clone();
            t.spawn_watching(async move {
                connection(stream, app, limits, stop).await;
                drop(permit);
            });
        }
    });
}

/// At the cap: a 503 if the socket takes it without waiting, then close. Never waits (the accept
/// loop must not): what of the request has arrived is read first, so that the close is less
/// likely to be a reset that discards the 503 at the client.
fn refuse(stream: TcpStream) {
    let mut sink = [0u8; 1024];
    let _ = stream.try_read(&mut sink);
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n",
    );
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    stop: tokio_util::sync::CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut io = TimeoutStream::new(stream);
    io.set_write_timeout(Some(limits.write_timeout));
    let io = TokioIo::new(Box::pin(io));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false)
        .title_case_headers(true);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = ended {
        debug!(error = %e, "admin connection ended with an error");
    }
}
