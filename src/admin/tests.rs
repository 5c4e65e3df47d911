//! The admin server over loopback.

use super::{Handler, HealthRoutes, Request, Response, serve, serve_with, test_http};
use crate::health::{Health, Outcome};
use crate::routing::{Readiness, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

fn target(id: &str, port: u16) -> Arc<Target> {
    Arc::new(Target::for_test(id, port))
}

async fn server() -> (SocketAddr, Health) {
    let health = Health::from_targets(&[target("psap-a", 5071), target("psap-b", 5072)]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, health.clone()));
    (addr, health)
}

/// Sends raw bytes, returns (status, headers+body text, parsed JSON body or Null).
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, serde_json::Value) {
    let r = test_http::raw(addr, request).await;
    (r.status, r.text(), r.json())
}

async fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String, serde_json::Value) {
    let r = test_http::request(addr, method, path, &[]).await;
    (r.status, r.text(), r.json())
}

#[tokio::test]
async fn status_lists_every_target_with_state_and_counters() {
    let (addr, health) = server().await;
    for _ in 0..3 {
        health.report("psap-b", Outcome::AttemptTimeout);
    }
    let (code, text, json) = call(addr, "GET", "/status").await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("Content-Type: application/json"));
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0]["id"], "psap-a");
    assert_eq!(targets[0]["state"], "up");
    assert_eq!(targets[0]["enabled"], true);
    assert_eq!(targets[1]["state"], "down");
    assert_eq!(targets[1]["readiness"], "not_ready");
    assert_eq!(targets[1]["counters"]["calls_failed"], 3);
    assert_eq!(targets[1]["counters"]["probes_sent"], 0);
    assert!(targets[1]["since_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(
        targets[1]["last_reason"]
            .as_str()
            .unwrap()
            .contains("failed calls")
    );
}

#[tokio::test]
async fn disable_and_enable_flip_the_switch() {
    let (addr, health) = server().await;
    let (code, _, json) = call(addr, "POST", "/targets/psap-a/disable").await;
    assert_eq!((code, json["enabled"].as_bool()), (200, Some(false)));
    assert_eq!(json["readiness"], "disabled");
    assert_eq!(health.readiness("psap-a"), Readiness::Disabled);
    let (code, _, json) = call(addr, "POST", "/targets/psap-a/enable").await;
    assert_eq!((code, json["enabled"].as_bool()), (200, Some(true)));
    assert_eq!(health.readiness("psap-a"), Readiness::Ready);
}

#[tokio::test]
async fn unknown_ids_wrong_methods_and_other_paths() {
    let (addr, _) = server().await;
    let (code, _, json) = call(addr, "POST", "/targets/nope/disable").await;
    assert_eq!(code, 404);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("unknown target: nope")
    );
    let (code, text, _) = call(addr, "GET", "/targets/psap-a/disable").await;
    assert_eq!(code, 405);
    assert!(text.contains("Allow: POST"));
    let (code, text, _) = call(addr, "DELETE", "/status").await;
    assert_eq!(code, 405);
    assert!(text.contains("Allow: GET"));
    for path in [
        "/",
        "/targets",
        "/targets/psap-a",
        "/targets/psap-a/reboot",
        "/statusx",
    ] {
        assert_eq!(call(addr, "GET", path).await.0, 404, "{path}");
    }
    let (code, _, _) = call(addr, "GET", "/status?pretty=1").await;
    assert_eq!(code, 200, "query string ignored");
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx() {
    let (addr, _) = server().await;
    let (code, _, json) = raw(addr, b"hello\r\n\r\n").await;
    assert_eq!(code, 400);
    assert!(json["error"].as_str().unwrap().contains("request line"));
    assert_eq!(raw(addr, b"GET status HTTP/1.1\r\n\r\n").await.0, 400);
    assert_eq!(raw(addr, b"GET /status HTTP/2.0\r\n\r\n").await.0, 505);
    assert_eq!(
        raw(addr, b"GET /status HTTP/1.1\r\nbroken\r\n\r\n").await.0,
        400
    );
    let big = format!("GET /status HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(raw(addr, big.as_bytes()).await.0, 431);
    let body = b"POST /targets/psap-a/disable HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
    assert_eq!(raw(addr, body).await.0, 413);
    let small = b"POST /targets/psap-a/disable HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(raw(addr, small).await.0, 200);
}

#[tokio::test(start_paused = true)]
async fn slow_clients_get_408() {
    let (addr, _) = server().await;
    let (code, _, _) = raw(addr, b"GET /status HTTP/1.1\r\n").await;
    assert_eq!(code, 408);
}

struct Version;
impl Handler for Version {
    fn handle(&self, req: &Request) -> Option<Response> {
        (req.path == "/version").then(|| Response::json(200, &serde_json::json!({"v": 1})))
    }
}

#[tokio::test]
async fn the_wiring_can_add_routes() {
    let health = Health::from_targets(&[target("psap-a", 5071)]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handlers: Vec<Arc<dyn Handler>> =
        vec![Arc::new(HealthRoutes::new(health)), Arc::new(Version)];
    tokio::spawn(serve_with(listener, handlers));
    assert_eq!(call(addr, "GET", "/version").await.2["v"], 1);
    assert_eq!(call(addr, "GET", "/status").await.0, 200);
}
