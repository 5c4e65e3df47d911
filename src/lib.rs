//! sosrouter: a SIP call-routing failover proxy that stands in front of emergency answering points.
//!
//! # Layout
//!
//! One line per module, in the order a message flows through them:
//!
//! - `transport`   — UDP, TCP and TLS sockets: bytes in, bytes out; TCP and TLS share one stream
//!   path framed by Content-Length (`transport/stream.rs`); `transport/tls.rs` loads the `[tls]`
//!   files (rustls) and counts handshakes per target.
//! - `sip`         — our own codec: scan, parse into offsets, edit by splicing, build responses.
//! - `transaction` — RFC 3261 transaction keys and timers, sans-IO (time passed in).
//! - `proxy`       — the stateful proxy: classify, admit (ACL, emergency-first overload, per-source
//!   rates: `proxy/overload.rs`), Via/Max-Forwards/Record-Route, CANCEL, and the per-call failover
//!   state machine (the failover contract lives in `proxy/call.rs`; one typed outcome per attempt,
//!   one timer table per call; `proxy/task.rs` holds a call's timers back, bounded, while the
//!   runtime or the UDP socket is behind). `proxy/expiry.rs` expires finished transactions per entry;
//!   `proxy/dialogs.rs` keeps answered calls until their BYE (short-call signal).
//! - `routing`     — the compiled rules snapshot, route matching and the failover plan (pure);
//!   `routing::whatif` answers `sosrouter route`.
//! - `health`      — probes (sent in 10 ms batches by one prober task, on a thread of its own in
//!   `sosrouter run`: `health/prober.rs`), call
//!   outcomes and test-call verdicts feeding one state machine per
//!   target (up, suspect, down, recovering; `health/state.rs`), overdue estimates, half-open trials;
//!   failure domains and the systemic alarm (`health/domains.rs`); readiness.
//! - `testcall`    — sosrouter's own test calls to a target (RFC 6881 §15): INVITE to
//!   `urn:service:test.sos` from sockets of its own, RTP loopback check, BYE; a typed verdict per call;
//!   a scheduler that dedups per target, caps and jitters them, and paces recovery test calls per
//!   failure domain. Over UDP, TCP and TLS. Pure machine in `testcall/machine.rs`.
//! - `metrics`     — Prometheus counters, gauges and histograms on `prometheus-client` (`GET /metrics`).
//! - `events`      — alert events (health, operator, reload, undelivered): a never-blocking bus
//!   with sequence numbers and a replay ring, and the webhook (reqwest on rustls; its client
//!   builder is the crate's one HTTP client, also used by `sosrouter route --admin`).
//! - `admin`       — the operator's HTTP endpoint on axum: target status, the enable switch,
//!   `/reload`, metrics, the resumable SSE event stream and the operator console at `GET /`
//!   (`admin/console.rs` + `admin/console/`); `admin::router` assembles every route,
//!   `admin::serve` adds the token gate and the bounds.
//! - `config`      — the operator-facing TOML rules file with positions and diagnostics (pure);
//!   also home of [`config::Proto`], the transport protocol every layer names.
//! - `tasks`       — [`tasks::Tasks`]: the one task tracker and cancellation token every background
//!   task runs on; background work (reloads, admin pages) on threads at nice 10; a task on a
//!   thread of its own (the prober); the runtime lateness ticker.
//! - `cluster`     — active/active nodes through etcd (its JSON gateway, on a background task,
//!   never on the call path): numbered rules versions moved by compare-and-swap (`rules push`,
//!   `history`, `rollback`), each node's running version, health hints under a lease; a peer's
//!   doubt makes a target suspect here (and asks for a test call), never down.
//! - `app`         — wiring: creates and owns the event bus, the metrics registry and the tasks,
//!   builds every part from the rules and runs them; graceful shutdown drains calls, then cancels
//!   and joins every task. The only module that knows them all. `app::reload` swaps in a new rules
//!   file (SIGHUP, file watcher, `/reload`).
//!
//! Dependency direction (each module imports only those listed; `main` uses `app` and `routing`):
//!
//! - `sip`, `config`, `events` and `tasks` import nothing of the crate;
//! - `transaction` uses `sip`; `routing` uses `config` and `sip` (never `health`);
//! - `transport` uses `config`, `sip` and `tasks`: it reports up through its `Handler` and knows
//!   neither the rules nor the proxy;
//! - `health` uses `config`, `routing`, `sip` (to build OPTIONS) and `tasks`; never `transport`
//!   (probes leave through the `ProbeTransport` seam; whether we are behind reading our own socket,
//!   `transport::Backlog`, comes in through a closure the wiring sets, and timeouts are held
//!   meanwhile), never `metrics` (probe lateness and alarms
//!   leave through sinks the wiring sets), never `testcall` (test calls are asked for through a sink);
//! - `testcall` uses `config`, `routing`, `sip`, `tasks`, `transaction` and `transport` (the `[tls]`
//!   client side, for test calls to TLS targets);
//! - `metrics` reads `health`, `events` and `routing` at scrape time; never `proxy` (the proxy
//!   hands in its `CallFigures`);
//! - `cluster` uses `events`, `health` and `tasks`; it swaps rules through its `RulesSink`, which
//!   the wiring implements (it never imports `routing` or `app`);
//! - `proxy` uses every module but `admin`, `app`, `cluster` and `testcall`; `admin` uses `events`, `health`, `metrics`
//!   and `tasks`, never `proxy`;
//! - only `app` (and `main`) import `app`.
//!
//! Check: `grep -rnE 'crate::(proxy|app)\b' src/metrics src/transport src/health src/admin` and
//! `grep -rnE 'crate::(metrics|testcall)\b' src/health` print nothing.

pub mod admin;
pub mod app;
pub mod cluster;
pub mod config;
pub mod events;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod sip;
pub mod tasks;
pub mod testcall;
pub mod transaction;
pub mod transport;
