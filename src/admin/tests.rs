//! The admin server over loopback: routes, errors, bounds, the event stream and its resume.

use super::{Access, Admin, Limits, router, serve, test_http};
use crate::events::{Bus, Event};
use crate::health::{Health, Outcome};
use crate::routing::{Readiness, Target};
use crate::tasks::Tasks;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn target(id: &str, port: u16) -> Arc<Target> {
    Arc::new(Target::for_test(id, port))
}

/// Serves `app` with `limits` and no token on a free loopback port.
async fn serve_on(app: axum::Router, limits: Limits, tasks: &Tasks) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, app, Access::default(), limits, tasks);
    addr
}

async fn server() -> (SocketAddr, Health) {
    let health = Health::from_targets(&[target("psap-a", 5071), target("psap-b", 5072)]);
    let tasks = Tasks::new();
    let app = router(Admin::new(health.clone(), tasks.clone()));
    (serve_on(app, Limits::default(), &tasks).await, health)
}

/// Sends raw bytes, returns (status, headers+body text, parsed JSON body or Null).
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, serde_json::Value) {
    let r = test_http::raw(addr, request).await;
    (r.status, r.text(), r.json())
}

async fn call(addr: SocketAddr, method: &str, path: &str) -> test_http::Reply {
    test_http::request(addr, method, path, &[]).await
}

#[tokio::test]
async fn status_lists_every_target_with_state_and_counters() {
    let (addr, health) = server().await;
    for _ in 0..3 {
        health.report("psap-b", Outcome::AttemptTimeout);
    }
    let r = call(addr, "GET", "/status").await;
    let (code, text, json) = (r.status, r.text(), r.json());
    assert_eq!(code, 200, "{text}");
    assert_eq!(r.header("content-type"), Some("application/json"));
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
    assert!(json.get("systemic").is_some(), "{json}");
}

#[tokio::test]
async fn disable_and_enable_flip_the_switch() {
    let (addr, health) = server().await;
    let json = call(addr, "POST", "/targets/psap-a/disable").await.json();
    assert_eq!(json["enabled"].as_bool(), Some(false));
    assert_eq!(json["readiness"], "disabled");
    assert_eq!(health.readiness("psap-a"), Readiness::Disabled);
    let r = call(addr, "POST", "/targets/psap-a/enable").await;
    assert_eq!((r.status, r.json()["enabled"].as_bool()), (200, Some(true)));
    assert_eq!(health.readiness("psap-a"), Readiness::Ready);
}

#[tokio::test]
async fn unknown_ids_wrong_methods_and_other_paths() {
    let (addr, _) = server().await;
    let r = call(addr, "POST", "/targets/nope/disable").await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("unknown target: nope")
    );
    let r = call(addr, "GET", "/targets/psap-a/disable").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"), "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("Allow"),
        "{}",
        r.text()
    );
    let r = call(addr, "DELETE", "/status").await;
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap().contains("GET"), "{}", r.text());
    for path in [
        "/",
        "/targets",
        "/targets/psap-a",
        "/targets/psap-a/reboot",
        "/statusx",
        "/reload",
        "/events",
        "/metrics",
    ] {
        let r = call(addr, "GET", path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("no such resource")
        );
    }
    assert_eq!(
        call(addr, "GET", "/status?pretty=1").await.status,
        200,
        "query string ignored"
    );
}

/// Malformed requests are refused by hyper itself (400, 431 with no body); the sizes we set give
/// 431 and 413.
#[tokio::test]
async fn bad_requests_get_a_clear_4xx() {
    let (addr, _) = server().await;
    assert_eq!(raw(addr, b"hello\r\n\r\n").await.0, 400);
    assert_eq!(raw(addr, b"GET /status HTTP/2.0\r\n\r\n").await.0, 400);
    assert_eq!(
        raw(addr, b"GET /status HTTP/1.1\r\nbroken\r\n\r\n").await.0,
        400
    );
    let dup = b"POST /targets/psap-a/disable HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}";
    assert_eq!(raw(addr, dup).await.0, 400, "conflicting Content-Length");
    let big = format!("GET /status HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(raw(addr, big.as_bytes()).await.0, 431);
    let body = b"POST /targets/psap-a/disable HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
    let (code, text, json) = raw(addr, body).await;
    assert_eq!(code, 413, "{text}");
    assert!(json["error"].is_string(), "{text}");
    let small = b"POST /targets/psap-a/disable HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(raw(addr, small).await.0, 200);
}

/// A client that never finishes its request head is let go after the header timeout (hyper
/// closes the connection without an answer).
#[tokio::test(start_paused = true)]
async fn slow_clients_are_let_go() {
    let (addr, _) = server().await;
    let t = tokio::time::Instant::now();
    let r = test_http::raw(addr, b"GET /status HTTP/1.1\r\n").await;
    assert_eq!(r.status, 0, "closed without an answer: {}", r.text());
    let waited = t.elapsed();
    let limit = Limits::default().header_timeout;
    assert!(waited >= limit && waited < limit * 2, "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_gets_408() {
    let tasks = Tasks::new();
    let app = router(Admin::new(Health::from_targets(&[]), tasks.clone())).route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never"
        }),
    );
    let addr = serve_on(app, Limits::default(), &tasks).await;
    let r = call(addr, "GET", "/slow").await;
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(r.json()["error"].is_string());
}

#[tokio::test]
async fn the_wiring_can_add_routes() {
    let tasks = Tasks::new();
    let health = Health::from_targets(&[target("psap-a", 5071)]);
    let app = router(Admin::new(health, tasks.clone())).route(
        "/version",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"v": 1})) }),
    );
    let addr = serve_on(app, Limits::default(), &tasks).await;
    assert_eq!(call(addr, "GET", "/version").await.json()["v"], 1);
    assert_eq!(call(addr, "GET", "/status").await.status, 200);
}

/// An event-stream client on a raw socket, reading the dechunked SSE text.
struct Sse {
    s: TcpStream,
    buf: String,
}

/// One SSE event: its `id:`, `event:` and `data:` (None when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    id: Option<u64>,
    event: Option<String>,
    data: String,
}

impl Sse {
    async fn open(addr: SocketAddr, last_event_id: Option<u64>) -> Sse {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let last = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let req = format!("GET /events HTTP/1.1\r\nHost: x\r\n{last}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut sse = Sse {
            s,
            buf: String::new(),
        };
        let head = sse.until("\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("Content-Type: text/event-stream"), "{head}");
        sse
    }

    /// Reads until `end`; returns the text up to it (consumed).
    async fn until(&mut self, end: &str) -> String {
        loop {
            if let Some(i) = self.buf.find(end) {
                let out = self.buf[..i].to_string();
                self.buf.drain(..i + end.len());
                return out;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), self.s.read(&mut chunk))
                .await
                .expect("an event within 30 s")
                .unwrap();
            assert!(n > 0, "event stream closed");
            self.buf.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        }
    }

    /// The next event that carries data (comments and keep-alives skipped). The body is chunked:
    /// a chunk-size line precedes each SSE event, and is skipped as an unknown line.
    async fn next(&mut self) -> Frame {
        loop {
            let block = self.until("\n\n").await;
            let mut f = Frame {
                id: None,
                event: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    f.id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    f.event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    f.data = v.to_string();
                }
            }
            if !f.data.is_empty() {
                return f;
            }
        }
    }
}

async fn events_server(bus: &Bus, limits: Limits) -> (SocketAddr, Tasks) {
    let tasks = Tasks::new();
    let admin = Admin {
        events: Some(bus.clone()),
        keepalive: Duration::from_millis(200),
        ..Admin::new(Health::from_targets(&[]), tasks.clone())
    };
    let addr = serve_on(router(admin), limits, &tasks).await;
    (addr, tasks)
}

fn reason(f: &Frame) -> String {
    let v: serde_json::Value = serde_json::from_str(&f.data).unwrap();
    v["reason"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn events_carry_ids_and_a_reconnect_gets_exactly_the_missed_ones() {
    let bus = Bus::with_ring(8);
    let (addr, _tasks) = events_server(&bus, Limits::default()).await;
    let mut first = Sse::open(addr, None).await;
    for i in 1..=3 {
        bus.publish(Event::reload(true, &format!("r{i}")));
    }
    for i in 1..=3 {
        let f = first.next().await;
        assert_eq!((f.id, reason(&f)), (Some(i), format!("r{i}")), "{f:?}");
    }
    drop(first); // the browser blinks
    for i in 4..=5 {
        bus.publish(Event::reload(true, &format!("r{i}")));
    }
    let mut again = Sse::open(addr, Some(3)).await;
    for i in 4..=5 {
        let f = again.next().await;
        assert_eq!((f.id, reason(&f)), (Some(i), format!("r{i}")), "{f:?}");
    }
    bus.publish(Event::reload(true, "r6"));
    let f = again.next().await;
    assert_eq!(
        f.id,
        Some(6),
        "live after the backlog, nothing twice: {f:?}"
    );

    // Too far behind for the ring (8): told what was lost first, then everything kept.
    for i in 7..=12 {
        bus.publish(Event::reload(true, &format!("r{i}")));
    }
    let mut late = Sse::open(addr, Some(1)).await;
    let lost = late.next().await;
    assert_eq!(
        (lost.event.as_deref(), lost.id),
        (Some("lost"), None),
        "{lost:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&lost.data).unwrap();
    assert_eq!(v["lost"], 3, "2, 3 and 4 fell out of the ring: {v}");
    for i in 5..=12 {
        assert_eq!(late.next().await.id, Some(i));
    }
}

#[tokio::test]
async fn the_connection_cap_refuses_one_more_and_frees_a_slot_when_one_leaves() {
    let bus = Bus::default();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (addr, _tasks) = events_server(&bus, limits).await;
    let a = Sse::open(addr, None).await;
    let _b = Sse::open(addr, None).await;
    // Refused at once: a 503, or (when the reset of the close overtakes it) just the close.
    let mut c = TcpStream::connect(addr).await.unwrap();
    let _ = c
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 503"), "{got}");
    drop(a);
    // The server notices the gone stream at its next write (a keep-alive, every 200 ms here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if test_http::get(addr, "/status").await.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_ends_the_server_and_its_open_streams() {
    let bus = Bus::default();
    let (addr, tasks) = events_server(&bus, Limits::default()).await;
    let mut s = Sse::open(addr, None).await;
    bus.publish(Event::reload(true, "r1"));
    assert_eq!(s.next().await.id, Some(1));
    assert!(
        tasks.cancel_and_join(Duration::from_secs(1)).await,
        "every admin task ended"
    );
    // The stream ended cleanly: the chunked body's last chunk, then the close.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.s.read_to_end(&mut rest)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_on_a_quiet_stream_goes_at_once_those_after_a_write_together() {
    use super::telemetry::{COALESCE, stream_after};
    use futures_util::StreamExt;
    let bus = Bus::default();
    let mut s = Box::pin(stream_after(
        &bus,
        None,
        tokio_util::sync::CancellationToken::new(),
    ));
    let text = |ev: Option<Result<axum::response::sse::Event, std::convert::Infallible>>| match ev {
        Some(Ok(ev)) => format!("{ev:?}"),
        other => panic!("stream ended: {other:?}"),
    };
    assert!(text(s.next().await).contains("sosrouter events"));
    // Quiet for a window since the greeting: an alarm goes out at once.
    tokio::time::sleep(COALESCE).await;
    let t0 = tokio::time::Instant::now();
    bus.publish(Event::reload(true, "r1"));
    assert!(text(s.next().await).contains("r1"));
    assert_eq!(t0.elapsed(), Duration::ZERO, "a quiet stream does not wait");
    // Right after a write: what comes within the window goes out together at its end.
    bus.publish(Event::reload(true, "r2"));
    let later = async {
        tokio::time::sleep(COALESCE / 2).await;
        bus.publish(Event::reload(true, "r3"));
    };
    let ((), two) = tokio::join!(later, s.next());
    assert!(text(two).contains("r2"));
    assert_eq!(t0.elapsed(), COALESCE, "waits out the window after a write");
    assert!(text(s.next().await).contains("r3"));
    assert_eq!(
        t0.elapsed(),
        COALESCE,
        "the one published within it comes along"
    );
    tokio::time::sleep(COALESCE).await;
    let t1 = tokio::time::Instant::now();
    bus.publish(Event::reload(true, "r4"));
    assert!(text(s.next().await).contains("r4"));
    assert_eq!(t1.elapsed(), Duration::ZERO, "quiet again: at once");
}

/// Event streams have a cap of their own below the connection cap: with every stream slot held, a
/// further stream gets a 503 (with Retry-After) while the operator's requests still get in; a
/// slot comes back when its client goes.
#[tokio::test]
async fn event_streams_cannot_take_the_connections_the_operator_needs() {
    let bus = Bus::with_ring(8);
    let tasks = Tasks::new();
    let health = Health::from_targets(&[target("psap-a", 5071)]);
    let admin = Admin {
        events: Some(bus.clone()),
        keepalive: Duration::from_millis(100),
        streams: Arc::new(tokio::sync::Semaphore::new(2)),
        ..Admin::new(health.clone(), tasks.clone())
    };
    let limits = Limits {
        max_connections: 4,
        ..Limits::default()
    };
    let addr = serve_on(router(admin), limits, &tasks).await;
    let first = Sse::open(addr, None).await;
    let _second = Sse::open(addr, None).await;
    let (code, text, body) = raw(addr, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("Retry-After: 5"), "{text}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many event streams"),
        "{body}"
    );
    let r = call(addr, "POST", "/targets/psap-a/disable").await;
    assert_eq!(r.status, 200, "the operator's switch gets in: {}", r.text());
    assert!(!health.status("psap-a").unwrap().enabled);
    // The first client goes; its slot comes back once the server notices (next keep-alive write).
    drop(first);
    let mut reopened = None;
    for _ in 0..400 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        if &head == b"HTTP/1.1 200" {
            reopened = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a stream slot came back");
}
