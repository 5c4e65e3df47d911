//! The operator console at `GET /`: one page compiled into the binary (`console/index.html`,
//! `console.js`, `console.css`; no CDN, no build step), served with
//! `Content-Security-Policy: default-src 'self'`, plus the JSON the page needs beyond `/status`
//! and `/events`.
//!
//! Routes:
//! - `GET /`, `GET /console.js`, `GET /console.css`, `GET /favicon.svg` -> the page ([`asset`]).
//! - `GET /console/state` -> 200 `{"routes": [...], "traffic": {...}, "undelivered": [...],
//!   "systemic": {...}}` ([`state`]).
//! - `GET /console/whatif?caller=..&uri=..|dialled=..` -> 200 the `sosrouter route --json` answer
//!   plus `text` (its text rendering); 400 `{"error": ...}` for a bad question ([`whatif`]).
//!
//! The data comes from the wiring through [`ConsoleData`], so admin imports nothing of the proxy.
//! Handler logic is in pure functions ([`asset`], [`state`], [`whatif`]) that map a query to
//! `(status, body)`, so any HTTP server can mount them.

use super::{Handler, Request, Response};
use serde::Deserialize;
use std::sync::Arc;

/// The page's policy: everything from this origin only (no inline script or style).
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");
const FAVICON: &str = include_str!("console/favicon.svg");

/// Undelivered records the console shows (newest first).
pub const UNDELIVERED_SHOWN: usize = 50;

/// What the console needs of the running proxy beyond health (implemented by the wiring).
pub trait ConsoleData: Send + Sync + 'static {
    /// Every route in match order then the default route: `{id, line, description, default,
    /// chain: [target id...], last_resort}`; and `targets`: `{id, uri, transport,
    /// failure_domain}` in rules order. Returned as `{"routes": [...], "targets": [...]}`.
    fn routes(&self) -> serde_json::Value;
    /// Calls, failovers and undelivered calls per bucket over the last minutes:
    /// `{"bucket_ms": N, "buckets": [{"end_unix_ms", "calls", "failovers", "undelivered"}...]}`,
    /// oldest first (the last bucket is still filling).
    fn traffic(&self) -> serde_json::Value;
    /// The last `limit` undelivered-call records (callback data: P-Asserted-Identity, From,
    /// Contact, Geolocation, attempts), newest first.
    fn undelivered(&self, limit: usize) -> serde_json::Value;
    /// The systemic alarm's status (as `/status` `systemic`).
    fn systemic(&self) -> serde_json::Value;
    /// Routes a call as the proxy would now (health's readiness): the `sosrouter route --json`
    /// answer plus `text`. Err: why the question cannot be answered.
    fn what_if(&self, q: &WhatIfQuery) -> Result<serde_json::Value, String>;
}

/// The what-if form: exactly one of `uri` and `dialled`; `caller` optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WhatIfQuery {
    pub caller: Option<String>,
    pub uri: Option<String>,
    pub dialled: Option<String>,
}

impl WhatIfQuery {
    /// From a URL query string (`caller=%2B1555&dialled=911`); empty values count as absent.
    pub fn parse(query: &str) -> WhatIfQuery {
        let mut q = WhatIfQuery::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            let slot = match k.as_ref() {
                "caller" => &mut q.caller,
                "uri" => &mut q.uri,
                "dialled" => &mut q.dialled,
                _ => continue,
            };
            *slot = Some(v.to_string());
        }
        q
    }
}

/// A static file of the page: `(content type, body)`, or None for another path.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/console.js" => Some(("text/javascript; charset=utf-8", CONSOLE_JS)),
        "/console.css" => Some(("text/css; charset=utf-8", CONSOLE_CSS)),
        "/favicon.svg" => Some(("image/svg+xml", FAVICON)),
        _ => None,
    }
}

/// `GET /console/state`.
pub fn state(data: &dyn ConsoleData) -> (u16, serde_json::Value) {
    let mut body = data.routes();
    if let Some(o) = body.as_object_mut() {
        o.insert("traffic".into(), data.traffic());
        o.insert("undelivered".into(), data.undelivered(UNDELIVERED_SHOWN));
        o.insert("systemic".into(), data.systemic());
    }
    (200, body)
}

/// `GET /console/whatif?QUERY`.
pub fn whatif(data: &dyn ConsoleData, query: &str) -> (u16, serde_json::Value) {
    let q = WhatIfQuery::parse(query);
    if q.uri.is_some() == q.dialled.is_some() {
        return (
            400,
            serde_json::json!({"error": "give exactly one of a URI and a dialled number"}),
        );
    }
    match data.what_if(&q) {
        Ok(v) => (200, v),
        Err(e) => (400, serde_json::json!({ "error": e })),
    }
}

/// The console's routes on the hand-written server.
#[derive(Clone)]
pub struct ConsoleRoutes {
    data: Arc<dyn ConsoleData>,
}

impl ConsoleRoutes {
    pub fn new(data: Arc<dyn ConsoleData>) -> ConsoleRoutes {
        ConsoleRoutes { data }
    }
}

/// Headers every console answer carries: the page's policy, and no caching of live data.
fn console_headers(mut r: Response) -> Response {
    r.headers.push(("Content-Security-Policy", CSP.to_string()));
    r.headers
        .push(("X-Content-Type-Options", "nosniff".to_string()));
    r.headers.push(("Cache-Control", "no-store".to_string()));
    r
}

impl Handler for ConsoleRoutes {
    fn handle(&self, req: &Request) -> Option<Response> {
        let page = asset(&req.path);
        let api = matches!(req.path.as_str(), "/console/state" | "/console/whatif");
        if page.is_none() && !api {
            return None;
        }
        if req.method != "GET" {
            return Some(Response::method_not_allowed("GET"));
        }
        let json = |(status, body): (u16, serde_json::Value)| Response::json(status, &body);
        let r = match page {
            Some((ctype, body)) => Response::text(200, ctype, body.to_string()),
            None if req.path == "/console/state" => json(state(self.data.as_ref())),
            None => json(whatif(self.data.as_ref(), &req.query)),
        };
        Some(console_headers(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fake;

    impl ConsoleData for Fake {
        fn routes(&self) -> serde_json::Value {
            json!({"routes": [{"id": "r", "chain": ["a", "b"], "last_resort": "b"}], "targets": []})
        }
        fn traffic(&self) -> serde_json::Value {
            json!({"bucket_ms": 10000, "buckets": []})
        }
        fn undelivered(&self, limit: usize) -> serde_json::Value {
            json!([{ "limit": limit }])
        }
        fn systemic(&self) -> serde_json::Value {
            json!({"active": false})
        }
        fn what_if(&self, q: &WhatIfQuery) -> Result<serde_json::Value, String> {
            match &q.dialled {
                Some(d) if d == "0" => Err("no".into()),
                _ => Ok(json!({"q": [q.caller, q.uri, q.dialled]})),
            }
        }
    }

    fn req(method: &str, path: &str, query: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            body: Vec::new(),
            authorization: None,
        }
    }

    #[test]
    fn page_and_assets_carry_the_policy() {
        let routes = ConsoleRoutes::new(Arc::new(Fake));
        for (path, ctype) in [
            ("/", "text/html"),
            ("/console.js", "text/javascript"),
            ("/console.css", "text/css"),
        ] {
            let r = routes.handle(&req("GET", path, "")).unwrap();
            assert_eq!(r.status, 200, "{path}");
            let h = |n: &str| {
                r.headers
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.clone())
            };
            assert!(h("Content-Type").unwrap().starts_with(ctype), "{path}");
            assert!(
                h("Content-Security-Policy")
                    .unwrap()
                    .starts_with("default-src 'self'")
            );
        }
        let page = routes.handle(&req("GET", "/", "")).unwrap().body;
        // No inline script or style: the policy would block them.
        assert!(page.contains("<script src=\"/console.js\""));
        assert!(!page.contains("<script>") && !page.contains("<style") && !page.contains("style="));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no CDN"
        );
        assert_eq!(asset("/favicon.svg").map(|a| a.0), Some("image/svg+xml"));
        assert_eq!(routes.handle(&req("POST", "/", "")).unwrap().status, 405);
        assert!(routes.handle(&req("GET", "/status", "")).is_none());
    }

    #[test]
    fn state_gathers_every_part() {
        let (status, v) = state(&Fake);
        assert_eq!(status, 200);
        assert_eq!(v["routes"][0]["chain"], json!(["a", "b"]));
        assert_eq!(v["traffic"]["bucket_ms"], 10000);
        assert_eq!(v["undelivered"][0]["limit"], UNDELIVERED_SHOWN);
        assert_eq!(v["systemic"]["active"], false);
        let routes = ConsoleRoutes::new(Arc::new(Fake));
        let r = routes.handle(&req("GET", "/console/state", "")).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            routes
                .handle(&req("POST", "/console/state", ""))
                .unwrap()
                .status,
            405
        );
    }

    #[test]
    fn whatif_decodes_the_form_and_needs_one_of_uri_and_dialled() {
        let (s, v) = whatif(&Fake, "caller=%2B15551234&dialled=911&x=1");
        assert_eq!(s, 200);
        assert_eq!(v["q"], json!(["+15551234", null, "911"]));
        let (s, v) = whatif(&Fake, "uri=urn%3Aservice%3Asos&dialled=");
        assert_eq!(s, 200);
        assert_eq!(v["q"], json!([null, "urn:service:sos", null]));
        assert_eq!(whatif(&Fake, "caller=1").0, 400);
        assert_eq!(whatif(&Fake, "uri=a&dialled=b").0, 400);
        let (s, v) = whatif(&Fake, "dialled=0");
        assert_eq!((s, v["error"].as_str()), (400, Some("no")));
        let routes = ConsoleRoutes::new(Arc::new(Fake));
        let r = routes
            .handle(&req("GET", "/console/whatif", "dialled=112"))
            .unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.contains("112"));
    }
}
