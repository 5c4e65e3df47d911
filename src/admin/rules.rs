//! `POST /reload` and the `rules` object of `GET /status`.
//!
//! The reload itself lives in the wiring module (`app::reload`), which knows every part; this
//! module sees it only through [`RulesControl`], so `admin` keeps importing nothing above `health`.
//!
//! - `POST /reload` -> 200 `{"ok": true, "version": N, "hash": "...", "warnings": [...]}`, or 422
//!   `{"ok": false, "errors": ["file:line:col: error: ..."], "warnings": [...]}` (the old rules keep
//!   serving).
//! - `GET /status` -> 200 `{"targets": [...], "rules": {version, source, hash, loaded_unix_ms,
//!   last_reload_error}, ...}` ([`super::status`] adds [`RulesControl::status`]).

use super::Admin;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What the admin endpoint needs of the reloader. Both return JSON-ready values.
pub trait RulesControl: Send + Sync + 'static {
    /// Reloads the rules file now (blocking; short). Ok: the 200 body; Err: the 422 body.
    fn reload(&self) -> Result<serde_json::Value, serde_json::Value>;
    /// The `rules` object of `/status`.
    fn status(&self) -> serde_json::Value;
}

/// The answer to `POST /reload`: 200 with the new version, or 422 with every error.
pub fn reload(control: &dyn RulesControl) -> (StatusCode, serde_json::Value) {
    match control.reload() {
        Ok(body) => (StatusCode::OK, body),
        Err(body) => (StatusCode::UNPROCESSABLE_ENTITY, body),
    }
}

/// `POST /reload`: the reload reads and compiles a file, so it runs on the blocking pool.
pub(super) async fn reload_route(State(admin): State<Admin>) -> Response {
    let Some(control) = admin.rules.clone() else {
        return super::error(StatusCode::NOT_FOUND, "no reloader");
    };
    let done = admin
        .tasks
        .spawn_blocking(move || reload(control.as_ref()))
        .await;
    match done {
        Ok((code, body)) => (code, Json(body)).into_response(),
        Err(e) => super::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reload did not finish: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use serde_json::json;
    use std::sync::Arc;
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

    #[test]
    fn reload_answers_200_or_422_and_status_carries_rules() {
        let fake = Arc::new(Fake(AtomicBool::new(true)));
        assert_eq!(reload(fake.as_ref()).0, StatusCode::OK);
        fake.0.store(false, Ordering::Relaxed);
        let (code, body) = reload(fake.as_ref());
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0], "t.toml:3:1: error: bad");
        let mut admin = Admin::new(Health::from_targets(&[]), crate::tasks::Tasks::new());
        assert!(super::super::status(&admin).get("rules").is_none());
        admin.rules = Some(fake);
        let v = super::super::status(&admin);
        assert_eq!(v["rules"]["version"], 1);
        assert!(v["targets"].is_array());
    }
}
