//! A tiny HTTP/1.1 server on tokio: one request per connection, bounded sizes, no framework.
//! Rejects early and in stages: request size, request line, version, headers, body size.
//! Handlers never see the socket: they map a parsed [`Request`] to a [`Response`].

use super::auth::Token;
use crate::tasks::Tasks;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// Largest request head (request line and headers) we read. 8 KiB, plenty for an admin call.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest body we accept (the admin API takes none; small ones are read and ignored).
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// A client must send its whole request within this, or gets 408. 5 s.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string (after `?`, still percent-encoded); empty when none.
    pub query: String,
    pub body: Vec<u8>,
    /// The `Authorization` header's value, if any (checked by `auth::check`).
    pub authorization: Option<String>,
}

/// A response; the body is JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    /// 200-style response with `value` serialized as JSON.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        let body = serde_json::to_string_pretty(value)
            .unwrap_or_else(|e| format!("{{\"error\":\"serialize: {e}\"}}"));
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// An error response: `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    /// 405 with the methods the resource allows.
    pub fn method_not_allowed(allow: &'static str) -> Response {
        let mut r = Response::error(405, &format!("method not allowed; use {allow}"));
        r.headers.push(("Allow", allow.to_string()));
        r
    }

    /// A non-JSON response (e.g. the Prometheus text format) with its Content-Type.
    pub fn text(status: u16, content_type: &str, body: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        // JSON unless a handler set its own Content-Type.
        let typed = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n{}Content-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            if typed {
                ""
            } else {
                "Content-Type: application/json\r\n"
            },
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A streaming response (server-sent events): takes over the connection once the request is read
/// and writes the status line, headers and body itself, for as long as it likes.
pub type Streamer = Box<dyn FnOnce(TcpStream) -> BoxFuture + Send>;
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Something that answers some paths. Return None for paths that are not yours.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Option<Response>;

    /// Claims the connection for a streaming response; asked before [`Handler::handle`]. Most
    /// handlers never stream.
    fn stream(&self, _req: &Request) -> Option<Streamer> {
        None
    }
}

/// The first handler that claims the request answers it; nobody: 404.
pub fn dispatch(handlers: &[Arc<dyn Handler>], req: &Request) -> Response {
    handlers
        .iter()
        .find_map(|h| h.handle(req))
        .unwrap_or_else(|| Response::error(404, &format!("no such resource: {}", req.path)))
}

/// Accepts connections forever, one task per connection, one request per connection. No token.
/// The connection tasks run on a task set of their own (for tests and embedding).
pub async fn serve_with(listener: TcpListener, handlers: Vec<Arc<dyn Handler>>) {
    serve_with_auth(listener, handlers, None, Tasks::new()).await
}

/// As [`serve_with`]; with a token, mutating requests must carry it (see `auth`). Connection tasks
/// run on `tasks` (so shutdown cancels and joins them).
pub async fn serve_with_auth(
    listener: TcpListener,
    handlers: Vec<Arc<dyn Handler>>,
    token: Option<Token>,
    tasks: Tasks,
) {
    let handlers: Arc<[Arc<dyn Handler>]> = handlers.into();
    let token = Arc::new(token);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let handlers = handlers.clone();
                let token = token.clone();
                tasks.spawn(async move {
                    if let Err(e) = connection(stream, &handlers, token.as_ref().as_ref()).await {
                        debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    handlers: &[Arc<dyn Handler>],
    token: Option<&Token>,
) -> std::io::Result<()> {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Response::error(408, "request not received in time"),
        Ok(Err(r)) => r,
        Ok(Ok(req)) => match super::auth::check(token, &req) {
            // Authorization first: a stream (GET /events) must not bypass it either.
            Some(denied) => denied,
            None => match handlers.iter().find_map(|h| h.stream(&req)) {
                Some(streamer) => {
                    streamer(stream).await;
                    return Ok(());
                }
                None => dispatch(handlers, &req),
            },
        },
    };
    stream.write_all(&response.to_bytes()).await?;
    stream.shutdown().await
}

/// Reads one request, or the error response to send.
async fn read_request(stream: &mut TcpStream) -> Result<Request, Response> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(Response::error(431, "request head larger than 8 KiB"));
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Response::error(400, "incomplete request")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let (method, path, content_length) = parse_head(&buf[..head_end])?;
    let mut body = buf[head_end..].to_vec();
    if content_length > MAX_BODY_BYTES {
        return Err(Response::error(413, "request body larger than 4 KiB"));
    }
    while body.len() < content_length {
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Response::error(400, "incomplete body")),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(content_length);
    let authorization = header_value(&buf[..head_end], "authorization");
    let query = query_of(&buf[..head_end]);
    Ok(Request {
        method,
        path,
        query,
        body,
        authorization,
    })
}

/// The query string of a head that `parse_head` accepted.
fn query_of(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    target
        .iter()
        .position(|&b| b == b'?')
        .map(|i| String::from_utf8_lossy(&target[i + 1..]).into_owned())
        .unwrap_or_default()
}

/// The first value of header `name` (lower case) in a head that `parse_head` accepted.
fn header_value(head: &[u8], name: &str) -> Option<String> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Parses the request line and the headers we care about (Content-Length).
pub fn parse_head(head: &[u8]) -> Result<(String, String, usize), Response> {
    let head =
        std::str::from_utf8(head).map_err(|_| Response::error(400, "request is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::error(400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Response::error(400, "malformed method"));
    }
    if !target.starts_with('/') {
        return Err(Response::error(
            400,
            "request target must be an absolute path",
        ));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Response::error(505, "only HTTP/1.0 and HTTP/1.1"));
    }
    let mut content_length = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Response::error(400, "malformed header line"));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| Response::error(400, "bad Content-Length"))?;
        }
    }
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok((method.to_string(), path, content_length))
}
