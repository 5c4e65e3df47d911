//! Who may change things over the admin endpoint. The endpoint can switch answering points off, so:
//! 1. it listens on loopback unless a bearer token is configured (enforced in `app::start`);
//! 2. when a token is configured, every mutating request (anything but GET/HEAD) must carry
//!    `Authorization: Bearer <token>`, or gets 401; reads stay open so dashboards keep working.
//!
//! The token comes from `--admin-token-file PATH` or the `SOSROUTER_ADMIN_TOKEN` environment
//! variable (a file wins: it keeps the secret out of `ps` and shell history).

use super::{Request, Response};
use std::path::Path;

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

/// None: the request may proceed. Some: the 401 to send instead.
pub fn check(token: Option<&Token>, req: &Request) -> Option<Response> {
    let token = token?;
    if req.method == "GET" || req.method == "HEAD" {
        return None;
    }
    let presented = req
        .authorization
        .as_deref()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if token.matches(p) => None,
        Some(_) => Some(unauthorized("bad bearer token")),
        None => Some(unauthorized(
            "this endpoint changes state: send Authorization: Bearer <token>",
        )),
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = Response::error(401, msg);
    r.headers
        .push(("WWW-Authenticate", "Bearer realm=\"sosrouter\"".to_string()));
    r
}
