//! Target health: a pure hysteresis state machine per target fed by OPTIONS probes and by the
//! outcomes of real calls, plus the operator's enable switch. Readiness = healthy && enabled.
//!
//! CONTRACT used by the proxy (keep these names): [`Outcome`], [`Health::readiness`],
//! [`Health::report`].
//!
//! Layout, in the order data flows:
//! - `state`  — the pure per-target state machine (hysteresis), time passed in.
//! - `handle` — [`Health`]: a `DashMap` of machines keyed by target id, enable switch, reload.
//! - `probe`  — OPTIONS built with `rsip`, the [`ProbeTransport`] seam, replies and timeouts.
//! - `prober` — the one background task that schedules probes with jitter.
//!
//! Wiring: `Health::new(&rules)`; `health.start_applier(&tasks)`;
//! `health.spawn_prober(transport, &tasks)`; the proxy's receive loop calls
//! `health.on_probe_response(branch, status)` for responses with [`is_probe_branch`] and
//! `health.on_transport_error(addr)`; the call path calls `health.report(id, outcome)`; a reload
//! calls `health.rekey(&rules)`.

mod handle;
mod probe;
mod prober;
pub mod state;
#[cfg(test)]
mod tests;

pub use handle::{Change, ChangeSink, Health, TargetStatus};
pub use probe::{PROBE_BRANCH_PREFIX, ProbeIds, ProbeTransport, build_options, is_probe_branch};
pub use prober::{STARTUP_SPREAD, max_jitter, next_delay};
pub use state::{Counters, State};

/// What one call attempt showed about its target. Sent by the call path, never blocking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing reached the target: ICMP unreachable, TCP refused or reset.
    TransportError,
    /// No provisional other than 100 within the attempt timer.
    AttemptTimeout,
    /// Provisional but no final within the ring timer.
    RingTimeout,
    /// A final response of the failover class (408, 480, 486, 5xx, ...).
    FailureResponse(u16),
    /// A provisional (18x) or a final that shows the target is taking calls (2xx, or a non-failover final).
    Progress(u16),
}

impl Outcome {
    /// True when the outcome counts against the target's health.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Progress(_))
    }
}
