//! The per-target health state machine. Pure: no IO, no clock; `now` is passed in and every
//! change of state is returned as a [`Transition`] value (pingora's "report the flip" habit).
//!
//! States and rules (thresholds come from [`HealthSettings`] and `[suspicion]`):
//!
//! 1. Start-up state is `Up`. A route must work the moment the proxy starts; the prober sends the
//!    first OPTIONS within ~50 ms, so a dead target is found after `down_after_probe_failures`
//!    probes (about 1-2 s with defaults).
//! 2. `Up -> Suspect` at once on doubt from the call path: an attempt overdue (no provisional other
//!    than 100 after k x the target's usual time), a failed call, its failure domain turning suspect,
//!    or a rise of short calls. A suspect target is tried after ready, unsuspected ones, and gets a
//!    test call. `Suspect -> Up` when a real call to it progresses or a test call is good — with
//!    one damping rule for overdue suspicion (rule 8).
//! 3. `Up/Suspect -> Down` after `down_after_probe_failures` consecutive probe failures, after
//!    `down_after_call_failures` consecutive failed calls even while probes pass ("pings answer,
//!    calls fail"), or at once on a failed test call (call path or media). A probe success resets
//!    the probe-failure run; a call `Progress` resets the call-failure run.
//! 4. `Down -> Recovering` after `up_after_probe_successes` consecutive probe successes, or when a
//!    real call to it progresses (a down target is still tried when all else failed). A target down
//!    on call evidence NEVER returns to `Up` on OPTIONS alone: `Recovering -> Up` takes a good test
//!    call or a real call's progress; only a target that went down on probe evidence, with no call
//!    failing since, also returns on another run of probe successes.
//! 5. A recovering target is not ready while test calls decide (test calls on, last one not
//!    inconclusive). Where test calls are off or inconclusive it is half-open: exactly one real call
//!    at a time may try it (the handle keeps that slot), the others treat it as not ready.
//!    One failure of either kind sends it back `Down`.
//! 6. A good test call brings any state to `Up`; a failed one any state to `Down`; an inconclusive
//!    one changes nothing but opens half-open trials.
//! 7. Entering `Down` or `Recovering` resets the consecutive runs: each counts its evidence afresh
//!    (`Up <-> Suspect` does not, so three failed calls still take a suspect target down).
//! 8. Suspicion raised by an overdue attempt ends at once when that attempt itself progresses
//!    (`LateProgress`: a false alarm) or a test call is good; another call's progress ends it only
//!    once it has lasted `suspect_hold`. After a false alarm, overdue attempts raise no new
//!    suspicion for `suspect_hold`. So a slow but alive target (an overloaded PSAP, our own busy
//!    runtime) flips `Up <-> Suspect` at most about once per `suspect_hold`, not once per call.
//! 9. A failed test call placed while the target did not answer probes, before it entered
//!    `Recovering` (a hung PSAP: placed while it was stopped, timed out after it came back), says
//!    nothing of it now and is dropped ([`Machine::judge_test_call`]): it would send a recovered
//!    target back down. One placed while probes passed is evidence like any other (a PSAP that
//!    swallows INVITEs answers OPTIONS all along).
use super::{Outcome, TestResult};
use crate::routing::HealthSettings;
use serde::Serialize;
use std::fmt;
use std::time::{Duration, Instant};

/// Default of `[suspicion] suspect_hold_ms` (rule 8).
pub const SUSPECT_HOLD: Duration = Duration::from_secs(1);

/// Health state of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    /// Up, but the call path has given cause for doubt (rule 2): tried after unsuspected targets.
    Suspect,
    Down,
    /// On the way back from `Down`: test calls decide, or one real call at a time (rule 5).
    Recovering,
}

impl State {
    /// Whether routing may send any call it likes (Up, or Suspect behind the unsuspected).
    pub fn is_ready(self) -> bool {
        matches!(self, State::Up | State::Suspect)
    }
}

/// Why a target became suspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuspectWhy {
    /// An attempt is overdue: no provisional other than 100 after k x its usual time.
    Overdue,
    /// A real call to it failed (timeout, failure response, transport error).
    FailedCall,
    /// Enough targets of one of its failure domains failed calls lately.
    Domain,
    /// A clear rise of answered calls that end within `short_call_ms` (dead media?).
    ShortCalls,
}

impl fmt::Display for SuspectWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SuspectWhy::Overdue => "attempt overdue",
            SuspectWhy::FailedCall => "a call failed",
            SuspectWhy::Domain => "its failure domain is suspect",
            SuspectWhy::ShortCalls => "rise of short calls",
        })
    }
}

/// What took a target down (rule 4: call evidence needs call evidence to come back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Probes,
    Calls,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Up => "up",
            State::Suspect => "suspect",
            State::Down => "down",
            State::Recovering => "recovering",
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
    /// Doubt from outside the target's own calls (its domain) or from call timing.
    Suspect(SuspectWhy),
    TestCall(TestResult),
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
    ProbeFailedInRecovery(ProbeFailure),
    CallFailedInRecovery(Outcome),
    Suspected(SuspectWhy),
    TestCall(TestResult),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Startup => f.write_str("start-up"),
            Reason::ProbeFailures { count, last } => {
                write!(f, "{count} consecutive probe failures, last: {last}")
            }
            Reason::CallFailures { count, last } => {
                write!(f, "{count} consecutive failed calls, last: {last}")
            }
            Reason::ProbeSuccesses { count } => write!(f, "{count} consecutive probe successes"),
            Reason::CallProgress(code) => write!(f, "call progressed ({code})"),
            Reason::ProbeFailedInRecovery(p) => write!(f, "probe failed while recovering: {p}"),
            Reason::CallFailedInRecovery(o) => write!(f, "call failed while recovering: {o}"),
            Reason::Suspected(w) => write!(f, "suspect: {w}"),
            Reason::TestCall(TestResult::Good) => f.write_str("test call answered, media good"),
            Reason::TestCall(TestResult::CallPathFailed) => {
                f.write_str("test call failed: call path")
            }
            Reason::TestCall(TestResult::MediaFailed) => f.write_str("test call failed: no media"),
            Reason::TestCall(TestResult::Inconclusive) => f.write_str("test call inconclusive"),
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
    /// Whether the target receives probe results (its own, or its gateway's). See rule 4.
    pub probed: bool,
    /// Whether test calls decide recovery (rule 5); set by the wiring from `[test_calls]`.
    pub test_calls: bool,
    /// Rule 8; set by the handle from `[suspicion]`.
    pub suspect_hold: Duration,
}

impl From<&HealthSettings> for Thresholds {
    fn from(s: &HealthSettings) -> Thresholds {
        Thresholds {
            down_after_probe_failures: s.down_after_probe_failures.max(1),
            up_after_probe_successes: s.up_after_probe_successes.max(1),
            down_after_call_failures: s.down_after_call_failures.max(1),
            probed: s.probe,
            test_calls: false,
            suspect_hold: SUSPECT_HOLD,
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
    /// Consecutive runs in the current state (rule 7).
    probe_failures: u32,
    probe_successes: u32,
    call_failures: u32,
    /// The last call outcome seen was a failure (rule 4). Survives transitions.
    last_call_failed: bool,
    /// What took it down, while Down or Recovering.
    cause: Cause,
    /// A test call came back inconclusive since it went down: half-open trials allowed (rule 5).
    inconclusive: bool,
    /// Until when overdue attempts raise no suspicion (rule 8: after a false alarm).
    overdue_quiet_until: Option<Instant>,
    /// When a probe last failed (rule 9).
    last_probe_failure: Option<Instant>,
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
            cause: Cause::Probes,
            inconclusive: false,
            overdue_quiet_until: None,
            last_probe_failure: None,
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
    /// What took it down (meaningful while Down or Recovering).
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// Rule 9: what a test call placed at `placed` with `result` says of the target now; None:
    /// nothing (drop it: not even "inconclusive", which would open half-open trials).
    pub fn judge_test_call(&self, result: TestResult, placed: Instant) -> Option<TestResult> {
        let failed = matches!(result, TestResult::CallPathFailed | TestResult::MediaFailed);
        let unreachable_then = self.last_probe_failure.is_some_and(|f| f >= placed);
        if failed && self.state == State::Recovering && placed < self.since && unreachable_then {
            None
        } else {
            Some(result)
        }
    }

    /// Recovering and allowed one real call at a time (rule 5).
    pub fn half_open(&self, th: &Thresholds) -> bool {
        self.state == State::Recovering && (!th.test_calls || self.inconclusive)
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
                    Down if enough => self.enter(Recovering, Reason::ProbeSuccesses { count }, now),
                    Recovering
                        if enough && self.cause == Cause::Probes && !self.last_call_failed =>
                    {
                        self.enter(Up, Reason::ProbeSuccesses { count }, now)
                    }
                    _ => None,
                }
            }
            Event::ProbeFailed(last) => {
                self.counters.probes_failed += 1;
                self.last_probe_failure = Some(now);
                self.probe_successes = 0;
                self.probe_failures = self.probe_failures.saturating_add(1);
                let count = self.probe_failures;
                match self.state {
                    Up | Suspect if count >= th.down_after_probe_failures => {
                        self.go_down(Cause::Probes, Reason::ProbeFailures { count, last }, now)
                    }
                    Recovering => {
                        self.go_down(Cause::Probes, Reason::ProbeFailedInRecovery(last), now)
                    }
                    _ => None,
                }
            }
            Event::Call(last) if last.is_failure() => {
                self.counters.calls_failed += 1;
                self.last_call_failed = true;
                self.call_failures = self.call_failures.saturating_add(1);
                let count = self.call_failures;
                match self.state {
                    Up | Suspect if count >= th.down_after_call_failures => {
                        self.go_down(Cause::Calls, Reason::CallFailures { count, last }, now)
                    }
                    Up => self.enter(Suspect, Reason::Suspected(SuspectWhy::FailedCall), now),
                    Recovering => {
                        self.go_down(Cause::Calls, Reason::CallFailedInRecovery(last), now)
                    }
                    _ => None,
                }
            }
            Event::Call(o @ (Outcome::Progress(code) | Outcome::LateProgress(code))) => {
                self.counters.calls_ok += 1;
                self.last_call_failed = false;
                self.call_failures = 0;
                let late = matches!(o, Outcome::LateProgress(_));
                let overdue_suspicion = self.last_reason == Reason::Suspected(SuspectWhy::Overdue);
                match self.state {
                    // Rule 8: another call's progress ends overdue suspicion only once it held.
                    Suspect
                        if overdue_suspicion
                            && !late
                            && now.saturating_duration_since(self.since) < th.suspect_hold =>
                    {
                        None
                    }
                    Suspect => {
                        if late && overdue_suspicion {
                            self.overdue_quiet_until = Some(now + th.suspect_hold);
                        }
                        self.enter(Up, Reason::CallProgress(code), now)
                    }
                    Recovering => self.enter(Up, Reason::CallProgress(code), now),
                    Down => self.enter(Recovering, Reason::CallProgress(code), now),
                    Up => None,
                }
            }
            Event::Call(Outcome::Overdue) => {
                if self.overdue_quiet_until.is_some_and(|q| now < q) {
                    return None; // rule 8: just after a false alarm
                }
                self.suspect(SuspectWhy::Overdue, now)
            }
            Event::Call(_) => None, // cut by the deadline, cancelled: no evidence
            Event::Suspect(why) => self.suspect(why, now),
            Event::TestCall(r) => match r {
                TestResult::Good => {
                    self.last_call_failed = false;
                    self.call_failures = 0;
                    match self.state {
                        Up => None,
                        _ => self.enter(Up, Reason::TestCall(r), now),
                    }
                }
                TestResult::CallPathFailed | TestResult::MediaFailed => {
                    self.last_call_failed = true;
                    self.go_down(Cause::Calls, Reason::TestCall(r), now)
                }
                TestResult::Inconclusive => {
                    self.inconclusive = true;
                    None
                }
            },
        }
    }

    fn suspect(&mut self, why: SuspectWhy, now: Instant) -> Option<Transition> {
        match self.state {
            State::Up => self.enter(State::Suspect, Reason::Suspected(why), now),
            _ => None,
        }
    }

    /// Enters Down (or stays there, refreshing the cause: a failed test call while Down is news
    /// about the call path, so it restarts the recovery count).
    fn go_down(&mut self, cause: Cause, reason: Reason, now: Instant) -> Option<Transition> {
        if self.state == State::Down {
            if cause == Cause::Calls {
                self.cause = cause;
            }
            self.probe_successes = 0;
            return None;
        }
        self.cause = cause;
        self.inconclusive = false;
        self.enter(State::Down, reason, now)
    }

    fn enter(&mut self, to: State, reason: Reason, now: Instant) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        self.since = now;
        self.last_reason = reason;
        let suspicion_only = matches!(
            (from, to),
            (State::Up, State::Suspect) | (State::Suspect, State::Up)
        );
        if !suspicion_only {
            self.probe_failures = 0;
            self.probe_successes = 0;
            self.call_failures = 0;
        }
        self.counters.transitions += 1;
        Some(Transition { from, to, reason })
    }
}
