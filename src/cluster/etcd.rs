//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/...`, keys and values base64, 64-bit
//! integers as strings). Every request but the watch has a short timeout; on a failure the client
//! moves to the next endpoint, so one stopped member costs one timeout, not a hang.
//!
//! The watch is the gateway's stream of the gRPC Watch: one JSON object per line, each a
//! `{"result": WatchResponse}` with the same revisions, `compact_revision` and cancel semantics.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long one unary request may take before the endpoint counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd {endpoint}: {source}")]
    Http {
        endpoint: String,
        source: reqwest::Error,
    },
    #[error("etcd {endpoint}: {detail}")]
    Answer { endpoint: String, detail: String },
}

/// One key-value pair as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub lease: i64,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(Kv),
    Delete(String),
}

/// What one line of the watch stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMsg {
    Created,
    /// Events at `revision` (the response header's revision).
    Events {
        revision: i64,
        events: Vec<WatchEvent>,
    },
    /// The start revision was compacted away: re-read everything.
    Compacted(i64),
    /// etcd cancelled the watch for another reason.
    Cancelled(String),
}

/// A comparison of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals this (0: the key does not exist).
    ModRevision(String, i64),
    /// The key does not exist.
    Absent(String),
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<[String]>,
    at: Arc<AtomicUsize>,
}

pub fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

fn unb64(v: Option<&Value>) -> Vec<u8> {
    v.and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn kv_of(v: &Value) -> Kv {
    Kv {
        key: String::from_utf8_lossy(&unb64(v.get("key"))).into_owned(),
        value: unb64(v.get("value")),
        mod_revision: int(v.get("mod_revision")),
        create_revision: int(v.get("create_revision")),
        lease: int(v.get("lease")),
    }
}

/// The JSON body of a transaction: every compare must hold, then every put is done.
pub fn txn_body(compares: &[Compare], puts: &[(String, Vec<u8>)]) -> Value {
    let cmp: Vec<Value> = compares
        .iter()
        .map(|c| match c {
            Compare::ModRevision(k, r) => json!({
                "key": b64(k.as_bytes()), "target": "MOD", "result": "EQUAL",
                "mod_revision": r.to_string(),
            }),
            Compare::Absent(k) => json!({
                "key": b64(k.as_bytes()), "target": "CREATE", "result": "EQUAL",
                "create_revision": "0",
            }),
        })
        .collect();
    let ops: Vec<Value> = puts
        .iter()
        .map(|(k, v)| json!({"request_put": {"key": b64(k.as_bytes()), "value": b64(v)}}))
        .collect();
    json!({"compare": cmp, "success": ops})
}

/// Parses one line of the watch stream.
pub fn parse_watch_line(line: &[u8]) -> Option<WatchMsg> {
    let v: Value = serde_json::from_slice(line).ok()?;
    if let Some(e) = v.get("error") {
        return Some(WatchMsg::Cancelled(e.to_string()));
    }
    let r = v.get("result")?;
    let compact = int(r.get("compact_revision"));
    if compact > 0 {
        return Some(WatchMsg::Compacted(compact));
    }
    if r.get("canceled").and_then(Value::as_bool) == Some(true) {
        let why = r
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or("cancelled");
        return Some(WatchMsg::Cancelled(why.to_string()));
    }
    if r.get("created").and_then(Value::as_bool) == Some(true) {
        return Some(WatchMsg::Created);
    }
    let revision = int(r.get("header").and_then(|h| h.get("revision")));
    let events = r
        .get("events")
        .and_then(Value::as_array)
        .map(|evs| {
            evs.iter()
                .filter_map(|e| {
                    let kv = kv_of(e.get("kv")?);
                    Some(match e.get("type").and_then(Value::as_str) {
                        Some("DELETE") => WatchEvent::Delete(kv.key),
                        _ => WatchEvent::Put(kv),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(WatchMsg::Events { revision, events })
}

/// The end of the range of every key that starts with `prefix` (etcd's prefix convention).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Client {
    /// `endpoints`: `http://host:port` of etcd members, tried in turn.
    pub fn new(endpoints: &[String]) -> Result<Client, EtcdError> {
        let http = crate::events::webhook::client_builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| EtcdError::Http {
                endpoint: endpoints.join(","),
                source: e,
            })?;
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(EtcdError::Answer {
                endpoint: String::new(),
                detail: "no etcd endpoint given".into(),
            });
        }
        Ok(Client {
            http,
            endpoints: endpoints.into(),
            at: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        let i = self.at.load(Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i]
    }

    /// Moves to the next endpoint (after a failure).
    pub fn rotate(&self) {
        self.at.fetch_add(1, Ordering::Relaxed);
    }

    /// One unary call, tried once on each endpoint from the current one until one answers.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let mut last = None;
        for _ in 0..self.endpoints.len() {
            let ep = self.endpoint().to_string();
            match self.call_on(&ep, path, body).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::debug!(error = %e, "etcd request failed; next endpoint");
                    last = Some(e);
                    self.rotate();
                }
            }
        }
        Err(last.unwrap_or(EtcdError::Answer {
            endpoint: String::new(),
            detail: "no endpoint".into(),
        }))
    }

    async fn call_on(&self, ep: &str, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let http = |e| EtcdError::Http {
            endpoint: ep.to_string(),
            source: e,
        };
        let resp = self
            .http
            .post(format!("{ep}{path}"))
            .timeout(REQUEST_TIMEOUT)
            .json(body)
            .send()
            .await
            .map_err(http)?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(http)?;
        if !status.is_success() {
            return Err(EtcdError::Answer {
                endpoint: ep.to_string(),
                detail: format!("HTTP {status}: {v}"),
            });
        }
        Ok(v)
    }

    /// Every key under `prefix` (or the one key `key` when `prefix` is false), and the store's
    /// revision at the time of the read.
    pub async fn range(&self, key: &str, prefix: bool) -> Result<(i64, Vec<Kv>), EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes())});
        if prefix {
            body["range_end"] = json!(b64(&prefix_end(key)));
        }
        let v = self.call("/v3/kv/range", &body).await?;
        let rev = int(v.get("header").and_then(|h| h.get("revision")));
        let kvs = v
            .get("kvs")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(kv_of).collect())
            .unwrap_or_default();
        Ok((rev, kvs))
    }

    /// The keys (no values) under `prefix`, and the store's revision.
    pub async fn range_keys(&self, prefix: &str) -> Result<(i64, Vec<String>), EtcdError> {
        let body = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)),
            "keys_only": true});
        let v = self.call("/v3/kv/range", &body).await?;
        let rev = int(v.get("header").and_then(|h| h.get("revision")));
        let keys = v
            .get("kvs")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|kv| kv_of(kv).key).collect())
            .unwrap_or_default();
        Ok((rev, keys))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        Ok(self.range(key, false).await?.1.into_iter().next())
    }

    /// Puts `value` at `key`, bound to `lease` when non-zero.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", &body).await.map(|_| ())
    }

    /// A transaction: true when every compare held and the puts were done.
    pub async fn txn(
        &self,
        compares: &[Compare],
        puts: &[(String, Vec<u8>)],
    ) -> Result<bool, EtcdError> {
        let v = self.call("/v3/kv/txn", &txn_body(compares, puts)).await?;
        Ok(v.get("succeeded").and_then(Value::as_bool) == Some(true))
    }

    /// A new lease of `ttl_s` seconds; its id.
    pub async fn grant(&self, ttl_s: u64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/grant", &json!({"TTL": ttl_s})).await?;
        let id = int(v.get("ID"));
        if id == 0 {
            return Err(EtcdError::Answer {
                endpoint: self.endpoint().to_string(),
                detail: format!("lease grant without an id: {v}"),
            });
        }
        Ok(id)
    }

    /// Renews a lease; its remaining TTL in seconds (0 or less: the lease is gone).
    pub async fn keepalive(&self, lease: i64) -> Result<i64, EtcdError> {
        let v = self
            .call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))
            .await?;
        Ok(int(v.get("result").and_then(|r| r.get("TTL"))))
    }

    /// Opens a watch of every key under `prefix` from `start_revision` on the current endpoint.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let ep = self.endpoint().to_string();
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let resp = self
            .http
            .post(format!("{ep}/v3/watch"))
            .json(&body)
            .send()
            .await
            .map_err(|e| EtcdError::Http {
                endpoint: ep.clone(),
                source: e,
            })?;
        if !resp.status().is_success() {
            return Err(EtcdError::Answer {
                endpoint: ep,
                detail: format!("watch: HTTP {}", resp.status()),
            });
        }
        Ok(Watch {
            resp,
            buf: Vec::new(),
            endpoint: ep,
        })
    }
}

/// An open watch stream.
pub struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
    endpoint: String,
}

impl Watch {
    /// The next message; Err when the stream broke or ended.
    pub async fn next(&mut self) -> Result<WatchMsg, EtcdError> {
        loop {
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if let Some(m) = parse_watch_line(&line) {
                    return Ok(m);
                }
            }
            let chunk = self.resp.chunk().await.map_err(|e| EtcdError::Http {
                endpoint: self.endpoint.clone(),
                source: e,
            })?;
            match chunk {
                Some(c) => {
                    self.buf.extend_from_slice(&c);
                    // A line this long is not a watch response we can use: drop the stream.
                    if self.buf.len() > 16 << 20 {
                        return Err(EtcdError::Answer {
                            endpoint: self.endpoint.clone(),
                            detail: "watch line over 16 MiB".into(),
                        });
                    }
                    // A last line without a newline is complete JSON too.
                    if let Ok(m) = serde_json::from_slice::<Value>(&self.buf)
                        && m.is_object()
                    {
                        let line = std::mem::take(&mut self.buf);
                        if let Some(m) = parse_watch_line(&line) {
                            return Ok(m);
                        }
                    }
                }
                None => {
                    return Err(EtcdError::Answer {
                        endpoint: self.endpoint.clone(),
                        detail: "watch stream ended".into(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_byte_plus_one() {
        assert_eq!(prefix_end("/sos/"), b"/sos0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn watch_lines_as_etcd_3_4_writes_them() {
        let created = br#"{"result":{"header":{"revision":"3"},"created":true}}"#;
        assert_eq!(parse_watch_line(created), Some(WatchMsg::Created));
        let put = br#"{"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"L2EveQ==","create_revision":"4","mod_revision":"4","version":"1","value":"dg=="}}]}}"#;
        let Some(WatchMsg::Events { revision, events }) = parse_watch_line(put) else {
            panic!("not events");
        };
        assert_eq!(revision, 4);
        assert_eq!(
            events,
            vec![WatchEvent::Put(Kv {
                key: "/a/y".into(),
                value: b"v".to_vec(),
                mod_revision: 4,
                create_revision: 4,
                lease: 0,
            })]
        );
        let del = br#"{"result":{"header":{"revision":"5"},"events":[{"type":"DELETE","kv":{"key":"L2EveQ==","mod_revision":"5"}}]}}"#;
        assert!(matches!(
            parse_watch_line(del),
            Some(WatchMsg::Events { revision: 5, events }) if events == vec![WatchEvent::Delete("/a/y".into())]
        ));
        let compacted =
            br#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"7"}}"#;
        assert_eq!(parse_watch_line(compacted), Some(WatchMsg::Compacted(7)));
        assert_eq!(parse_watch_line(b"not json"), None);
    }

    #[test]
    fn a_txn_compares_then_puts() {
        let body = txn_body(
            &[
                Compare::ModRevision("/c".into(), 12),
                Compare::Absent("/v/2".into()),
            ],
            &[("/v/2".into(), b"x".to_vec())],
        );
        assert_eq!(body["compare"][0]["target"], "MOD");
        assert_eq!(body["compare"][0]["mod_revision"], "12");
        assert_eq!(body["compare"][1]["target"], "CREATE");
        assert_eq!(body["compare"][1]["create_revision"], "0");
        assert_eq!(
            body["success"][0]["request_put"]["key"],
            b64(b"/v/2").as_str()
        );
    }
}
