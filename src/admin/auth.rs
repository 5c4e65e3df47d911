//! Who may use the admin endpoint. It can switch answering points off, and its reads carry
//! personal data (callers' numbers and locations in `/events` and undelivered calls), so:
//! 1. it listens on loopback unless a bearer token is configured (enforced in `app::start`);
//! 2. when a token is configured, every mutating request (anything but GET/HEAD) must carry
//!    `Authorization: Bearer <token>`, or gets 401;
//! 3. with a token, reads need it too ([`Access::reads`], the `--admin-token-for-reads` option,
//!    on by default); turned off, reads stay open for a dashboard on the same host.
//!
//! The token comes from `--admin-token-file PATH` or the `SOSROUTER_ADMIN_TOKEN` environment
//! variable (a file wins: it keeps the secret out of `ps` and shell history).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::Arc;

/// Why a token could not be loaded; startup stops on any of these.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the admin token is empty")]
    Empty,
    #[error("the admin token must be printable ASCII without spaces")]
    BadChars,
}

/// A bearer token. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    pub fn new(s: &str) -> Result<Token, TokenError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TokenError::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadChars);
        }
        Ok(Token(s.to_string()))
    }

    /// The token itself, for a client that presents it (`sosrouter route --admin`).
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        diff == 0 && a.len() == b.len()
    }
}

/// The token from `file` if given, else from `env` (the value of `SOSROUTER_ADMIN_TOKEN`).
pub fn load_token(file: Option<&Path>, env: Option<&str>) -> Result<Option<Token>, TokenError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        return Token::new(&text).map(Some);
    }
    env.map(Token::new).transpose()
}

/// The token gate's settings.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// None: no token, everything open (loopback only).
    pub token: Option<Token>,
    /// With a token: reads (GET/HEAD) need it too. Ignored without a token.
    pub reads: bool,
}

impl Access {
    /// A token (or none) with reads gated, the default.
    pub fn new(token: Option<Token>) -> Access {
        Access { token, reads: true }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not ours.
    Wrong,
}

/// Ok: the request may proceed. Err: it needs the token it did not bring.
pub fn check(access: &Access, method: &Method, authorization: Option<&str>) -> Result<(), Denied> {
    let Some(token) = &access.token else {
        return Ok(());
    };
    let read = method == Method::GET || method == Method::HEAD;
    if read && !access.reads {
        return Ok(());
    }
    let presented = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if token.matches(p) => Ok(()),
        Some(_) => Err(Denied::Wrong),
        None => Err(Denied::Missing),
    }
}

/// The gate as axum middleware: 401 with `WWW-Authenticate: Bearer` before any route runs.
pub async fn gate(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // The console's static page and files hold no personal data: a browser loads them before the
    // operator has typed the token (everything the page then reads carries it).
    let public = req.method() == Method::GET && super::console::is_public_asset(req.uri().path());
    match check(&access, req.method(), authorization) {
        _ if public => next.run(req).await,
        Ok(()) => next.run(req).await,
        Err(why) => {
            let msg = match why {
                Denied::Wrong => "bad bearer token",
                Denied::Missing if access.reads => {
                    "this endpoint needs the admin token: send Authorization: Bearer <token>"
                }
                Denied::Missing => {
                    "this endpoint changes state: send Authorization: Bearer <token>"
                }
            };
            let mut r = super::error(StatusCode::UNAUTHORIZED, msg).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sosrouter\""),
            );
            r
        }
    }
}
