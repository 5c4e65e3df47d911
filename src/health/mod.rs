//! Target health: a pure hysteresis state machine per target fed by OPTIONS probes and by the
//! outcomes of real calls, plus the operator's enable switch. Readiness = healthy && enabled.
//!
//! CONTRACT used by the proxy (keep these names): [`Outcome`], [`Health::readiness`],
//! [`Health::report`].
//!
//! Layout, in the order data flows:
//! - `state`  — the pure per-target state machine (hysteresis), time passed in.
//! - `handle` — [`Health`]: a `DashMap` of machines keyed by target id, enable switch, reload.
//! - `probe`  — OPTIONS built with `sip::build`, the [`ProbeTransport`] seam, replies and timeouts.
//! - `prober` — the one background task that schedules probes with jitter.
//!
//! Wiring: `Health::new(&rules)`; `health.start_applier(&tasks)`;
//! `health.spawn_prober(transport, &tasks)`; the proxy's receive loop calls
//! `health.on_probe_response(branch, status)` for responses with [`is_probe_branch`] and
//! `health.on_transport_error(addr)`; the call path calls `health.report(id, outcome)`; a reload
//! calls `health.rekey(&rules)`.

mod domains;
mod handle;
mod probe;
mod prober;
pub mod state;
#[cfg(test)]
mod tests;

pub use domains::{Evidence, SystemicReport};
pub use handle::{
    BacklogSource, Change, ChangeSink, Health, LatenessSink, TargetStatus, TestCallSink, TlsSource,
    TlsStatus,
};
pub use probe::{PROBE_BRANCH_PREFIX, ProbeIds, ProbeTransport, build_options, is_probe_branch};
pub use prober::{STARTUP_SPREAD, max_jitter, next_delay};
pub use state::{Counters, ProbeFailure, Reason, State, SuspectWhy, Transition};

/// What one call attempt showed about its target: the one typed outcome the pure call machine
/// produces, and health, metrics, the undelivered record and the logs consume (`Display` is the
/// text of the record and the log line).
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
    /// The same, from an attempt that had gone [`Outcome::Overdue`]: the target is alive, only
    /// slow. It ends the suspicion that attempt raised at once (a false alarm).
    LateProgress(u16),
    /// Still no provisional other than 100 after `overdue_factor` x the target's usual time: the
    /// attempt goes on (a slow PSAP still gets its call), the target becomes suspect.
    Overdue,
    /// Cut short by the call deadline to reach the last resort: says nothing about the target.
    CutByDeadline,
    /// The caller cancelled while this attempt ran: says nothing about the target.
    CancelledByCaller,
    /// Health took the target down while this attempt was still trying or ringing (it stopped
    /// answering probes): the attempt was cut and the call failed over at once. Health already
    /// knows, so it counts nothing more against the target.
    TargetDown,
}

impl Outcome {
    /// True when the outcome counts against the target's health (a failed attempt).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::TransportError
                | Outcome::AttemptTimeout
                | Outcome::RingTimeout
                | Outcome::FailureResponse(_)
        )
    }
    /// True when the target showed it takes calls.
    pub fn is_progress(self) -> bool {
        matches!(self, Outcome::Progress(_) | Outcome::LateProgress(_))
    }
    /// The SIP status that came with it, if any.
    pub fn status(self) -> Option<u16> {
        match self {
            Outcome::FailureResponse(c) | Outcome::Progress(c) | Outcome::LateProgress(c) => {
                Some(c)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::TransportError => f.write_str("transport error"),
            Outcome::AttemptTimeout => f.write_str("attempt timeout"),
            Outcome::RingTimeout => f.write_str("ring timeout"),
            Outcome::FailureResponse(c) => write!(f, "failure response {c}"),
            Outcome::Progress(c) if *c >= 200 && *c < 300 => f.write_str("answered"),
            Outcome::Progress(c) if *c >= 300 => f.write_str("final response relayed"),
            Outcome::Progress(c) => write!(f, "progress {c}"),
            Outcome::LateProgress(c) => write!(f, "progress {c} after going overdue"),
            Outcome::Overdue => f.write_str("overdue"),
            Outcome::CutByDeadline => f.write_str("deadline: skipping to the last resort"),
            Outcome::CancelledByCaller => f.write_str("cancelled by caller"),
            Outcome::TargetDown => f.write_str("target went down while the attempt ran"),
        }
    }
}

/// What a test call showed (the test-call module's verdict as health needs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestResult {
    /// Answered, and media came back (or media is not checked).
    Good,
    /// No answer, 408, 5xx or a transport error: the call path is broken.
    CallPathFailed,
    /// Answered, but no media came back.
    MediaFailed,
    /// 486, 600, 403, 404...: says nothing about the target.
    Inconclusive,
}

/// Why health asks for a test call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestWhy {
    /// The target became suspect (overdue attempt, failed calls, its domain, short calls).
    Suspect(state::SuspectWhy),
    /// It is down on call evidence, or recovering: a good test call is how it comes back.
    Recovery,
}

/// Everything the call path tells health about a target, over the one channel to the applier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    Attempt(Outcome),
    /// Time from sending an INVITE to its first provisional other than 100 (or its final).
    FirstProvisional(std::time::Duration),
    /// An answered call ended (BYE) this long after its 2xx.
    CallEnded(std::time::Duration),
    /// A real call's trial of a recovering target is over (released whatever its outcome).
    TrialOver,
    /// A test call's verdict, and how long ago it was placed (rule 9 of `state`).
    TestCall {
        result: TestResult,
        placed_ago: std::time::Duration,
    },
}
