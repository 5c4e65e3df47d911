//! sosrouter: a SIP call-routing failover proxy that stands in front of emergency answering points.
//!
//! # Layout
//!
//! One line per module, in the order a message flows through them:
//!
//! - `transport`   — UDP and TCP sockets: bytes in, bytes out; TCP framing by Content-Length.
//! - `sip`         — our own codec: scan, parse into offsets, edit by splicing, build responses.
//! - `transaction` — RFC 3261 transaction keys and timers, sans-IO (time passed in).
//! - `proxy`       — the stateful proxy: classify, admit (ACL, emergency-first overload, per-source
//!   rates: `proxy/overload.rs`), Via/Max-Forwards/Record-Route, CANCEL, and the per-call failover
//!   state machine (the failover contract lives in `proxy/call.rs`).
//! - `routing`     — the compiled rules snapshot, route matching and the failover plan (pure);
//!   `routing::whatif` answers `sosrouter route`.
//! - `health`      — probes and passive outcomes feeding per-target hysteresis; readiness.
//! - `metrics`     — Prometheus counters, gauges and the call setup histogram (`GET /metrics`).
//! - `events`      — alert events (health, operator, reload, undelivered): a never-blocking bus,
//!   the `GET /events` stream and the webhook. Imports nothing of the crate.
//! - `admin`       — the operator's HTTP endpoint: target status, the enable switch, `/reload`,
//!   metrics and the event stream.
//! - `config`      — the operator-facing TOML rules file with positions and diagnostics (pure).
//! - `app`         — wiring: builds every part from the rules and runs them; the only module that
//!   knows them all. `app::reload` swaps in a new rules file (SIGHUP, file watcher, `/reload`).
//!
//! Dependency direction: `sip` and `config` import nothing of the crate; `transaction` uses only
//! `sip`; `routing` never imports `health`; `health` never imports `transport`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod events;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod sip;
pub mod tasks;
pub mod transaction;
pub mod transport;
