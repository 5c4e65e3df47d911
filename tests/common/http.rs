//! The one HTTP/1.1 test client: the admin endpoint, `/metrics`, the token gate. Used by the
//! integration tests (`tests/common`) and, through `#[path]`, by the admin unit tests in
//! `src/admin`, so both sides read replies the same way. Only tokio, std and serde_json.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One reply, read to the end of the connection.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code; 0 when there is no `HTTP/1.x NNN` status line.
    pub status: u16,
    /// Status line and header lines, without the blank line.
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON; Null when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The value of header `name` (any case: HTTP header names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Head and body as received, for assertion messages.
    pub fn text(&self) -> String {
        format!("{}\r\n\r\n{}", self.head, self.body)
    }
}

/// Sends `request` byte for byte and reads until the server closes. A reset after some bytes
/// arrived ends the reply too: a server that answers an oversized request and closes without
/// reading the rest may reset the connection after its answer.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut chunk).await {
        bytes.extend_from_slice(&chunk[..n]);
    }
    let out = String::from_utf8(bytes).expect("an HTTP reply in UTF-8");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `method path` with the given header lines (`"Name: value"`), an empty body and
/// `Connection: close`.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[]).await
}
