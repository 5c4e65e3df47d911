//! The integration tests: one crate, so one test binary to link (link time dominates on 2 cores).
//! One module per area, each over real loopback sockets against a proxy started in-process; the
//! builders and shared constants are in `tests/common` (also the home of the one HTTP test client,
//! which the admin unit tests in `src/admin` include too).
//!
//! Run one area with `cargo test --test it telemetry::`, one test with its full path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod admin_safety;
mod bounded;
mod call_path;
mod dispatch_props;
mod health;
mod overload;
mod reload;
mod reload_signal;
mod route;
mod telemetry;
mod testcall_sipp;
mod tls;
mod torture;
mod two_sites;
