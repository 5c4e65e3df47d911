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

use serde::Deserialize;

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

/// The console's static files: public (no personal data in them), so a browser can load the page
/// before the operator types the token; everything the page then reads needs the token as usual.
pub fn is_public_asset(path: &str) -> bool {
    asset(path).is_some()
}

/// Headers every console answer carries: the page's policy, and no caching of live data.
fn console_headers(r: &mut axum::response::Response) {
    use axum::http::HeaderValue;
    use axum::http::header;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The console's routes, mounted by [`super::router`] when the wiring supplies a [`ConsoleData`].
pub(super) fn routes(r: axum::Router<super::Admin>) -> axum::Router<super::Admin> {
    use axum::routing::get;
    r.route("/", get(asset_route))
        .route("/index.html", get(asset_route))
        .route("/console.js", get(asset_route))
        .route("/console.css", get(asset_route))
        .route("/favicon.svg", get(asset_route))
        .route("/console/state", get(state_route))
        .route("/console/whatif", get(whatif_route))
}

async fn asset_route(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r = match asset(uri.path()) {
        Some((ctype, body)) => ([(axum::http::header::CONTENT_TYPE, ctype)], body).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    console_headers(&mut r);
    r
}

fn json_answer((status, body): (u16, serde_json::Value)) -> axum::response::Response {
    use axum::response::IntoResponse;
    let code = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (code, axum::Json(body)).into_response();
    console_headers(&mut r);
    r
}

async fn state_route(
    axum::extract::State(admin): axum::extract::State<super::Admin>,
) -> axum::response::Response {
    match &admin.console {
        Some(data) => json_answer(state(data.as_ref())),
        None => json_answer((404, serde_json::json!({"error": "no console"}))),
    }
}

async fn whatif_route(
    axum::extract::State(admin): axum::extract::State<super::Admin>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> axum::response::Response {
    match &admin.console {
        Some(data) => json_answer(whatif(data.as_ref(), q.as_deref().unwrap_or(""))),
        None => json_answer((404, serde_json::json!({"error": "no console"}))),
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

    #[test]
    fn page_and_assets_are_public_and_inline_free() {
        for (path, ctype) in [
            ("/", "text/html"),
            ("/console.js", "text/javascript"),
            ("/console.css", "text/css"),
        ] {
            let (t, _) = asset(path).unwrap();
            assert!(t.starts_with(ctype), "{path}");
            assert!(is_public_asset(path));
        }
        let page = asset("/").unwrap().1;
        // No inline script or style: the policy would block them.
        assert!(page.contains("<script src=\"/console.js\""));
        assert!(!page.contains("<script>") && !page.contains("<style") && !page.contains("style="));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no CDN"
        );
        assert_eq!(asset("/favicon.svg").map(|a| a.0), Some("image/svg+xml"));
        assert!(!is_public_asset("/status") && !is_public_asset("/console/state"));
        assert!(CSP.starts_with("default-src 'self'"));
    }

    #[test]
    fn state_gathers_every_part() {
        let (status, v) = state(&Fake);
        assert_eq!(status, 200);
        assert_eq!(v["routes"][0]["chain"], json!(["a", "b"]));
        assert_eq!(v["traffic"]["bucket_ms"], 10000);
        assert_eq!(v["undelivered"][0]["limit"], UNDELIVERED_SHOWN);
        assert_eq!(v["systemic"]["active"], false);
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
    }
}
