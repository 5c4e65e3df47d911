//! The per-target hysteresis state machine. Pure: no IO, no clock; `now` is passed in and every
//! change of state is returned as a [`Transition`] value (pingora's "report the flip" habit).
//!
//! States and rules (thresholds come from [`HealthSettings`]):
//!
//! 1. Start-up state is `Up`. A route must work the moment the proxy starts; the prober sends the
//!    first OPTIONS within ~50 ms, so a dead target is found after `down_after_probe_failures`
//!    probes (about 1-2 s with defaults). Starting `Down` would refuse calls to healthy targets
//!    until the first probes return, which is worse for an emergency call than one failed attempt.
//! 2. `Up -> Down` after `down_after_probe_failures` consecutive probe failures, or after
//!    `down_after_call_failures` consecutive failed calls even while probes pass ("pings answer,
//!    calls fail"). A probe success resets the probe-failure run; a call `Progress` resets the
//!    call-failure run. Each kind only resets its own kind.
//! 3. `Down -> Probation` after `up_after_probe_successes` consecutive probe successes; a probe
//!    failure resets that run. A target without probes (`probe = false`) has no other evidence than
//!    calls, so for it a call `Progress` while `Down` moves it to `Probation`.
//! 4. `Probation` counts as READY for routing: ready targets are tried first, so if probation were
//!    not ready no call would ever reach the target to prove it. One failure of either kind sends it
//!    straight back `Down`. It becomes `Up` when a real call shows progress, or - so a target that
//!    gets no calls does not stay in probation forever - after another `up_after_probe_successes`
//!    consecutive probe successes, but only when the last call it saw did not fail (probes cannot
//!    vouch for a call path that was seen failing; such a target stays in probation, ready, until a
//!    call proves it).
//! 5. Every transition resets the consecutive runs: each state counts its own evidence afresh.

use super::Outcome;
use crate::routing::HealthSettings;
use serde::Serialize;
use std::fmt;
use std::time::Instant;

/// Health state of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    Down,
    /// On the way back from `Down`: ready for calls, but one failure sends it back.
    Probation,
}

impl State {
    /// Whether routing may treat the target as ready (see rule 4 above).
    pub fn is_ready(self) -> bool {
        !matches!(self, State::Down)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Up => "up",
            State::Down => "down",
            State::Probation => "probation",
        })
    }
}

/// Why a probe failed. A locally generated timeout is never "an answer".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFailure {
    /// No final reply within `probe_timeout` (our own timer).
    Timeout,
    /// The target answered with a code outside `alive_codes`.
    Code(u16),
    /// ICMP unreachable or TCP refused toward the target's address.
    TransportError,
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Timeout => f.write_str("timeout"),
            ProbeFailure::Code(c) => write!(f, "reply {c}"),
            ProbeFailure::TransportError => f.write_str("transport error"),
        }
    }
}

/// One observation about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A probe got a reply in `alive_codes` (the code).
    ProbeOk(u16),
    ProbeFailed(ProbeFailure),
    /// The outcome of a real call attempt.
    Call(Outcome),
}

/// Why the last transition happened. `Copy`, so it costs nothing under the map lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The state every target starts in (rule 1).
    Startup,
    ProbeFailures {
        count: u32,
        last: ProbeFailure,
    },
    CallFailures {
        count: u32,
        last: Outcome,
    },
    ProbeSuccesses {
        count: u32,
    },
    CallProgress(u16),
    ProbeFailedInProbation(ProbeFailure),
    CallFailedInProbation(Outcome),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Startup => f.write_str("start-up"),
            Reason::ProbeFailures { count, last } => {
                write!(f, "{count} consecutive probe failures, last: {last}")
            }
            Reason::CallFailures { count, last } => {
                write!(f, "{count} consecutive failed calls, last: {last:?}")
            }
            Reason::ProbeSuccesses { count } => write!(f, "{count} consecutive probe successes"),
            Reason::CallProgress(code) => write!(f, "call progressed ({code})"),
            Reason::ProbeFailedInProbation(p) => write!(f, "probe failed in probation: {p}"),
            Reason::CallFailedInProbation(o) => write!(f, "call failed in probation: {o:?}"),
        }
    }
}

/// A change of state, reported once by [`Machine::on_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: Reason,
}

/// The thresholds of one target, taken from its [`HealthSettings`]. Zero is raised to 1: a
/// threshold of 0 would flip on no evidence at all (the config validator should reject it anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub down_after_probe_failures: u32,
    pub up_after_probe_successes: u32,
    pub down_after_call_failures: u32,
    /// Whether the target receives probe results (its own, or its gateway's). See rule 3.
    pub probed: bool,
}

impl From<&HealthSettings> for Thresholds {
    fn from(s: &HealthSettings) -> Thresholds {
        Thresholds {
            down_after_probe_failures: s.down_after_probe_failures.max(1),
            up_after_probe_successes: s.up_after_probe_successes.max(1),
            down_after_call_failures: s.down_after_call_failures.max(1),
            probed: s.probe,
        }
    }
}

/// Cumulative counters of one target, for the admin endpoint. Never reset (not even by a reload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub probes_sent: u64,
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub calls_ok: u64,
    pub calls_failed: u64,
    pub transitions: u64,
}

/// The health of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    state: State,
    since: Instant,
    last_reason: Reason,
    /// Consecutive runs in the current state (rule 5).
    probe_failures: u32,
    probe_successes: u32,
    call_failures: u32,
    /// The last call outcome seen was a failure (rule 4). Survives transitions.
    last_call_failed: bool,
    counters: Counters,
}

impl Machine {
    /// A target in the start-up state (rule 1).
    pub fn new(now: Instant) -> Machine {
        Machine {
            state: State::Up,
            since: now,
            last_reason: Reason::Startup,
            probe_failures: 0,
            probe_successes: 0,
            call_failures: 0,
            last_call_failed: false,
            counters: Counters::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    /// When the current state was entered.
    pub fn since(&self) -> Instant {
        self.since
    }
    pub fn last_reason(&self) -> Reason {
        self.last_reason
    }
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counts a probe sent on this target's behalf (no state change: only its result matters).
    pub fn probe_sent(&mut self) {
        self.counters.probes_sent += 1;
    }

    /// Feeds one observation; returns the transition when the state changed.
    pub fn on_event(&mut self, ev: Event, th: &Thresholds, now: Instant) -> Option<Transition> {
        use State::*;
        match ev {
            Event::ProbeOk(_) => {
                self.counters.probes_ok += 1;
                self.probe_failures = 0;
                self.probe_successes = self.probe_successes.saturating_add(1);
                let count = self.probe_successes;
                let enough = count >= th.up_after_probe_successes;
                match self.state {
                    Down if enough => self.enter(Probation, Reason::ProbeSuccesses { count }, now),
                    Probation if enough && !self.last_call_failed => {
                        self.enter(Up, Reason::ProbeSuccesses { count }, now)
                    }
                    _ => None,
                }
            }
            Event::ProbeFailed(last) => {
                self.counters.probes_failed += 1;
                self.probe_successes = 0;
                self.probe_failures = self.probe_failures.saturating_add(1);
                let count = self.probe_failures;
                match self.state {
                    Up if count >= th.down_after_probe_failures => {
                        self.enter(Down, Reason::ProbeFailures { count, last }, now)
                    }
                    Probation => self.enter(Down, Reason::ProbeFailedInProbation(last), now),
                    _ => None,
                }
            }
            Event::Call(last) if last.is_failure() => {
                self.counters.calls_failed += 1;
                self.last_call_failed = true;
                self.call_failures = self.call_failures.saturating_add(1);
                let count = self.call_failures;
                match self.state {
                    Up if count >= th.down_after_call_failures => {
                        self.enter(Down, Reason::CallFailures { count, last }, now)
                    }
                    Probation => self.enter(Down, Reason::CallFailedInProbation(last), now),
                    _ => None,
                }
            }
            Event::Call(outcome) => {
                let code = match outcome {
                    Outcome::Progress(code) => code,
                    _ => 0,
                };
                self.counters.calls_ok += 1;
                self.last_call_failed = false;
                self.call_failures = 0;
                match self.state {
                    Probation => self.enter(Up, Reason::CallProgress(code), now),
                    Down if !th.probed => self.enter(Probation, Reason::CallProgress(code), now),
                    _ => None,
                }
            }
        }
    }

    fn enter(&mut self, to: State, reason: Reason, now: Instant) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        self.since = now;
        self.last_reason = reason;
        self.probe_failures = 0;
        self.probe_successes = 0;
        self.call_failures = 0;
        self.counters.transitions += 1;
        Some(Transition { from, to, reason })
    }
}
