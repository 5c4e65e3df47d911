//! `POST /reload` and the `rules` object of `GET /status`.
//!
//! The reload itself lives in the wiring module (`app::reload`), which knows every part; this
//! module sees it only through [`RulesControl`], so `admin` keeps importing nothing above `health`.
//!
//! - `POST /reload` -> 200 `{"ok": true, "version": N, "hash": "...", "warnings": [...]}`, or 422
//!   `{"ok": false, "errors": ["file:line:col: error: ..."], "warnings": [...]}` (the old rules keep
//!   serving).
//! - `GET /status` -> 200 `{"targets": [...], "rules": {version, source, hash, loaded_unix_ms,
//!   last_reload_error}}`. This handler answers `/status` before [`super::HealthRoutes`] does, with
//!   the same `targets` array.

use super::{Handler, Request, Response};
use crate::health::Health;
use std::sync::Arc;

/// What the admin endpoint needs of the reloader. Both return JSON-ready values.
pub trait RulesControl: Send + Sync + 'static {
    /// Reloads the rules file now (blocking; short). Ok: the 200 body; Err: the 422 body.
    fn reload(&self) -> Result<serde_json::Value, serde_json::Value>;
    /// The `rules` object of `/status`.
    fn status(&self) -> serde_json::Value;
}

/// `/reload` and `/status` with the rules object.
#[derive(Clone)]
pub struct RulesRoutes {
    health: Health,
    control: Arc<dyn RulesControl>,
}

impl RulesRoutes {
    pub fn new(health: Health, control: Arc<dyn RulesControl>) -> RulesRoutes {
        RulesRoutes { health, control }
    }
}

impl Handler for RulesRoutes {
    fn handle(&self, req: &Request) -> Option<Response> {
        match req.path.as_str() {
            "/status" => {
                if req.method != "GET" {
                    return Some(Response::method_not_allowed("GET"));
                }
                let body = serde_json::json!({
                    "targets": self.health.snapshot(),
                    "rules": self.control.status(),
                });
                Some(Response::json(200, &body))
            }
            "/reload" => {
                if req.method != "POST" {
                    return Some(Response::method_not_allowed("POST"));
                }
                Some(match self.control.reload() {
                    Ok(body) => Response::json(200, &body),
                    Err(body) => Response::json(422, &body),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Fake(AtomicBool);

    impl RulesControl for Fake {
        fn reload(&self) -> Result<serde_json::Value, serde_json::Value> {
            if self.0.load(Ordering::Relaxed) {
                Ok(json!({"ok": true, "version": 2}))
            } else {
                Err(json!({"ok": false, "errors": ["t.toml:3:1: error: bad"]}))
            }
        }
        fn status(&self) -> serde_json::Value {
            json!({"version": 1})
        }
    }

    fn req(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            body: Vec::new(),
            authorization: None,
        }
    }

    #[test]
    fn reload_answers_200_or_422_and_status_carries_rules() {
        let fake = Arc::new(Fake(AtomicBool::new(true)));
        let routes = RulesRoutes::new(Health::from_targets(&[]), fake.clone());
        let ok = routes.handle(&req("POST", "/reload")).unwrap();
        assert_eq!(ok.status, 200);
        fake.0.store(false, Ordering::Relaxed);
        let bad = routes.handle(&req("POST", "/reload")).unwrap();
        assert_eq!(bad.status, 422);
        let v: serde_json::Value = serde_json::from_str(&bad.body).unwrap();
        assert_eq!(v["errors"][0], "t.toml:3:1: error: bad");
        assert_eq!(routes.handle(&req("GET", "/reload")).unwrap().status, 405);
        let st = routes.handle(&req("GET", "/status")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&st.body).unwrap();
        assert_eq!(v["rules"]["version"], 1);
        assert!(v["targets"].is_array());
        assert!(routes.handle(&req("GET", "/other")).is_none());
    }
}
