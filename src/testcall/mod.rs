//! Test calls: sosrouter places its own call to a target (RFC 6881 §15, the NENA i3 test call) to
//! prove that its call path, and its media, work — OPTIONS only prove that something answers pings.
//!
//! One test call:
//! 1. INVITE to the target's next hop with Request-URI `urn:service:test.sos` (or the target's
//!    `test_uri`) and an SDP offer (PCMU, sendrecv) for an RTP socket of our own. The INVITE leaves
//!    from a SIP socket of our own (UDP: ephemeral port, connected to the target so ICMP errors come
//!    back; TCP: our own connection), so its responses never pass the proxy's dispatcher.
//! 2. On 200: ACK, then (media `require` and the answer offers media) a few RTP packets 20 ms apart to
//!    the answer's `c=`/`m=audio` address, counting those that come back (RFC 6849 loopback; SIPp
//!    `-rtp_echo` reflects them unchanged), then BYE, waiting a bounded time for its 200.
//! 3. The [`Verdict`] comes out as soon as it is known; the call lingers only to finish cleanly.
//!
//! Wiring (for `app` and `health`): `let (calls, reports) = TestCalls::spawn(Plan::new(
//! rules.test_calls.clone(), rules.targets.clone()), &tasks)` once (the scheduler and every test
//! call run on the app's tasks); `calls.update(Plan::new(..))` after a
//! reload; `calls.request(target, TestReason::Recovering)` from anywhere (never blocks); one task reads
//! `reports` ([`Report`]: target, reason, [`Verdict`], [`Details`]) and feeds health.
//!
//! Layout: `machine` (the pure state machine: events and `now` in, actions out), `message` (the
//! requests and the SDP), `rtp` (packets), `shell` (sockets and timers for one call), `schedule`
//! (the [`TestCalls`] handle: one task that dedups per target, caps, jitters, paces recovery test
//! calls per failure domain and runs periodic calls).

use crate::routing::TargetId;
use std::fmt;

mod machine;
mod message;
mod rtp;
mod schedule;
mod shell;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_loopback;

pub use machine::{Action, Setup, TestCall};
pub use message::Ids;
pub use schedule::{Plan, TestCalls};
pub use shell::{CallParams, run_test_call};

/// Why a test call's path failed. Each of these counts against the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathFailure {
    /// No response at all (not even 100) within the timeout.
    NoResponse,
    /// Only provisional responses (the highest one given) within the timeout; the call was CANCELled
    /// when it had one.
    NoAnswer(u16),
    /// A final response that says the path or the target failed: 408 or 5xx.
    Status(u16),
    /// Nothing could reach the target: ICMP unreachable, TCP refused, reset or closed.
    Transport(String),
}

impl fmt::Display for PathFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathFailure::NoResponse => f.write_str("no response within the timeout"),
            PathFailure::NoAnswer(p) => write!(f, "{p} but no answer within the timeout"),
            PathFailure::Status(c) => write!(f, "answered {c}"),
            PathFailure::Transport(why) => write!(f, "transport error: {why}"),
        }
    }
}

/// What a test call proved about a target.
///
/// Final responses: 2xx answers the call; 408 and every 5xx are [`Verdict::CallPathFailed`]; every
/// other final (3xx, 4xx but 408, 6xx: 403, 404, 480, 486, 488, 600, 603 ...) is
/// [`Verdict::Inconclusive`]: a UA on the path took a decision about this particular call (busy,
/// test calls not accepted or rationed, our offer refused, redirected), which says the SIP path works
/// but not whether a real call would be answered. It never counts against the target, nor for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Answered; media came back, or media was not checked (`media = "ignore"`, or the answer offered
    /// none: then `Details::media_checked` is false).
    Good,
    /// Answered, but none of our RTP packets came back.
    MediaFailed,
    /// The call did not get through (see [`PathFailure`]).
    CallPathFailed(PathFailure),
    /// A final response that says nothing about the target's health (the code).
    Inconclusive(u16),
    /// We could not place the call (no local socket, our own INVITE refused by our parser). Our
    /// problem, not the target's: counts neither way.
    NotPlaced(String),
}

impl Verdict {
    /// The target failed the test: call path or media. What health may count against it.
    pub fn counts_against_target(&self) -> bool {
        matches!(self, Verdict::CallPathFailed(_) | Verdict::MediaFailed)
    }
    /// The test call proved the target good: what may bring it back from down.
    pub fn is_good(&self) -> bool {
        matches!(self, Verdict::Good)
    }
    /// The call path worked (the call was answered), whatever the media did.
    pub fn call_path_ok(&self) -> bool {
        matches!(self, Verdict::Good | Verdict::MediaFailed)
    }
    pub fn is_inconclusive(&self) -> bool {
        matches!(self, Verdict::Inconclusive(_))
    }
    /// Short label for logs and metrics: `good`, `media_failed`, `call_path_failed`, `inconclusive`,
    /// `not_placed`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::MediaFailed => "media_failed",
            Verdict::CallPathFailed(_) => "call_path_failed",
            Verdict::Inconclusive(_) => "inconclusive",
            Verdict::NotPlaced(_) => "not_placed",
        }
    }
    /// The verdict a final response gives before any media check (2xx: `Good`).
    pub fn of_final(code: u16) -> Verdict {
        match code {
            200..=299 => Verdict::Good,
            408 | 500..=599 => Verdict::CallPathFailed(PathFailure::Status(code)),
            _ => Verdict::Inconclusive(code),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Good => f.write_str("good"),
            Verdict::MediaFailed => f.write_str("media failed: no RTP came back"),
            Verdict::CallPathFailed(why) => write!(f, "call path failed: {why}"),
            Verdict::Inconclusive(code) => write!(f, "inconclusive: answered {code}"),
            Verdict::NotPlaced(why) => write!(f, "not placed: {why}"),
        }
    }
}

/// Why a test call was asked for (for logs and the evidence of a systemic event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestReason {
    /// An attempt went overdue (no provisional within k x the target's usual time).
    Overdue,
    /// Real calls failed at the target.
    FailedCalls,
    /// Too many answered calls ended short (dead media?).
    ShortCalls,
    /// The target's failure domain turned suspect.
    DomainSuspect,
    /// The target is down and comes back only on a good test call.
    Recovering,
    /// `interval_ms` is set: the periodic check.
    Periodic,
    /// An operator asked.
    Operator,
}

impl fmt::Display for TestReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TestReason::Overdue => "overdue attempt",
            TestReason::FailedCalls => "failed calls",
            TestReason::ShortCalls => "short calls",
            TestReason::DomainSuspect => "suspect domain",
            TestReason::Recovering => "recovering",
            TestReason::Periodic => "periodic",
            TestReason::Operator => "operator",
        })
    }
}

/// What a test call saw, beyond its verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The final response code, if one came.
    pub status: Option<u16>,
    /// The highest provisional seen (100 included).
    pub provisional: Option<u16>,
    /// INVITE sent to final response, ms.
    pub answer_ms: Option<u64>,
    /// Whether media was checked (media `require` and the answer offered it).
    pub media_checked: bool,
    pub rtp_sent: u32,
    pub rtp_echoed: u32,
    /// The BYE's final response (None: not sent, or not answered within its bound).
    pub bye_status: Option<u16>,
    /// Start to verdict, ms.
    pub elapsed_ms: u64,
}

/// One finished test call, as the scheduler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub target: TargetId,
    pub reason: TestReason,
    pub verdict: Verdict,
    pub details: Details,
}
