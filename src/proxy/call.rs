//! One emergency (or other) INVITE and its serial failover, as a pure state machine: events and `now`
//! in, [`Action`]s out, the next wake-up time on request. No sockets, no clocks, no tasks; the async
//! shell in `task.rs` feeds it and carries out what it returns.
//!
//! # The failover contract
//!
//! Keep this text and the code below in step.
//!
//! 1. A transport error toward the current target (ICMP port unreachable on UDP, TCP refused, reset or
//!    connect timeout) means nothing listens there: fail over at once — also when the target had
//!    already sent a provisional (it died while ringing; no answer can come from a closed port).
//! 2. No provisional response other than 100 within the attempt timer: abandon that branch and fail
//!    over. The target may have seen the INVITE, so if it later sends a provisional it is CANCELled
//!    (RFC 3261 §9.1 forbids a CANCEL before one). The duplicate risk is accepted and logged.
//!    2a. Before that, an attempt with no such provisional after the target's overdue bound (k x
//!    its usual time, from health) makes the target suspect for new calls at once; the attempt
//!    itself keeps its full attempt timer.
//! 3. A provisional (101–199) but no final within the ring timer: CANCEL and fail over.
//!    3a. Health takes the current attempt's target down because it stopped answering (probes
//!    time out, a test call gets no answer, calls time out) while the attempt is still trying or
//!    ringing: CANCEL (or
//!    abandon) and fail over at once, when another target is left to try — a hung PSAP would
//!    otherwise hold a ringing call for the whole ring timer. A late 2xx still answers (point 5).
//! 4. A final response in the route's failover set (default 408, 480, 486, 5xx, 600, 603) fails over;
//!    any other final is the answer and is relayed. A 503 is never relayed as 503 (RFC 3261 §16.7):
//!    when it is the best response, the caller gets 500.
//! 5. Once a 2xx has been relayed there is no failover. A 2xx from any branch is relayed (RFC 3261
//!    §16.7 step 5), even a late one from an abandoned branch — for an emergency call, a human who
//!    picked up wins — and every other live branch is CANCELled.
//! 6. The call deadline bounds the chain: the route's last target (its last resort) is always tried,
//!    and started no later than `deadline - attempt_timeout`. Every other attempt is cut short (CANCEL
//!    or abandon) when it would cross that point; when the time left is less than one more attempt plus
//!    the last resort's, the chain skips to the last resort. Once the last resort is ringing it rings
//!    for its ring timer (cutting it off would help nobody). The shell (`task.rs`, `hold_back`) may
//!    hold a timer back while sosrouter itself is behind (a late wake, or a backlog in its UDP
//!    socket): at most 1 s per call in all, so the deadline moves by at most that.
//! 7. When every target failed, or the deadline passed with the last resort tried, the caller gets the
//!    best final response (RFC 3261 §16.7.6: 6xx, else the lowest class; 408 when none came), and the
//!    call is reported undelivered with every attempt and its reason.
//! 8. A CANCEL from the caller stops failover: the current branch is CANCELled and its final (487)
//!    relayed; if none comes within [`CANCEL_GUARD`], the proxy answers 487 itself.
//!
//! Invariant (checked by proptest): a call with time left before its deadline and an untried target
//! is never answered with a failure.

use super::attempt::{Attempt, Phase};
use crate::config::Proto;
use crate::health::Outcome;
use crate::routing::{FailoverCodes, Target, TargetId, Timers};
use crate::sip::{Editor, Message, build};
use crate::transaction::{Retransmit, T2, T4, TIMEOUT_64T1};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after relaying a CANCEL we wait for the target's 487 before answering it ourselves.
pub const CANCEL_GUARD: Duration = Duration::from_secs(2);
/// How long a finished call stays around to CANCEL or ACK branches that are still settling.
pub const LINGER: Duration = T4;

/// Builds the INVITE for one attempt from (target, branch, transport toward the target).
pub type BuildInvite = Box<dyn Fn(&Target, &str, Proto) -> Forwarded + Send>;

/// The largest datagram UDP can carry over IPv4 (65 535 - 20 - 8). A forwarded INVITE larger than this
/// (the caller's, accepted under the inbound limits, plus our Via and Record-Route) goes over TCP to
/// the same address instead (RFC 3261 §18.1.1), with a TCP Via: it could not be sent at all otherwise.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// One forwarded INVITE and what it changed in the caller's (so nothing we built is parsed again).
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub bytes: Bytes,
    /// The Request-URI it carries.
    pub request_uri: Bytes,
    /// Our Via value on top of it (`SIP/2.0/UDP host:port;branch=...;rport`).
    pub via: Bytes,
}

/// Everything a call needs from the routing decision and the wiring.
pub struct CallSetup {
    /// The INVITE as received from the caller.
    pub invite: Message,
    /// Targets in the order to try them (ready first; see `routing::plan`).
    pub plan: Vec<Arc<Target>>,
    /// The route's last resort (its chain's last id).
    pub last_resort: Option<TargetId>,
    pub timers: Timers,
    pub failover: FailoverCodes,
    /// Reliable transport toward the caller (TCP): no response retransmissions.
    pub caller_reliable: bool,
    /// How many leading Route entries of the caller's INVITE name us (removed when forwarding).
    pub routes_removed: usize,
    /// Per plan index: after how long without a provisional other than 100 an attempt is overdue
    /// (the target becomes suspect, the attempt goes on). Missing or None: never.
    pub overdue: Vec<Option<Duration>>,
    /// To-tag for responses the proxy generates itself.
    pub to_tag: String,
    /// Builds the INVITE for one attempt: (target, branch) -> bytes. Supplied by the wiring because
    /// it knows our addresses and the inbound transport.
    pub build_invite: BuildInvite,
}

/// The timers of one call (see [`Call::timers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Timer A/E of attempt i (UDP): resend its INVITE.
    Retransmit(usize),
    /// Attempt i is overdue (contract point 2a).
    Overdue(usize),
    /// Timer G: resend our non-2xx final to an unreliable caller.
    FinalRetransmit,
    /// Timer H: stop resending it.
    FinalGiveUp,
    /// The caller's CANCEL got no 487 from the target in time: answer 487 ourselves.
    CancelGuard,
    /// The current attempt's attempt or ring timer, or its deadline bound (contract points 2, 3, 6).
    AttemptExpiry(usize),
    /// Branches still settling after the call ended get this long.
    Linger,
}

/// What the shell must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send bytes to a target over the attempt's transport (INVITE, CANCEL, ACK).
    SendTarget(Arc<Target>, Proto, Bytes),
    /// Send bytes to the caller over the transport the INVITE came on.
    SendCaller(Bytes),
    /// Route responses carrying this branch to this call; transport errors toward the address too.
    Listen(String, SocketAddr),
    /// Tell health (and metrics) what an attempt showed.
    Report(TargetId, Outcome),
    /// Time from an attempt's INVITE to its first provisional other than 100 (or its final): the
    /// sample health keeps the target's usual time from (overdue suspicion).
    FirstProvisional(TargetId, Duration),
    /// No target answered: record the call for a call-back.
    Undelivered(Vec<AttemptRecord>),
}

/// What happened to one attempt, for logs and the undelivered record: the same typed outcome health
/// and metrics get (its `Display` is the record's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub target: TargetId,
    pub outcome: Outcome,
    /// Time from the call's start to the attempt's start, and the attempt's length, in milliseconds.
    pub started_ms: u64,
    pub elapsed_ms: u64,
}

/// Where the call as a whole stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Trying targets.
    Routing,
    /// A 2xx was relayed.
    Answered,
    /// A non-2xx final was sent to the caller.
    Completed(u16),
}

pub struct Call {
    setup: CallSetup,
    started: Instant,
    deadline: Instant,
    attempts: Vec<Attempt>,
    /// Plan indices already tried.
    tried: Vec<bool>,
    current: Option<usize>,
    state: CallState,
    /// Best failover-class final so far: (code, response) — response None when we only know a code.
    best: Option<(u16, Option<Message>)>,
    caller_cancelled: bool,
    cancel_guard: Option<Instant>,
    /// Last response sent to the caller (resent on an INVITE retransmission).
    last_to_caller: Option<Bytes>,
    /// Timer G/H for a non-2xx final toward an unreliable caller.
    final_retransmit: Option<(Retransmit, Instant)>,
    ended_at: Option<Instant>,
    records: Vec<AttemptRecord>,
}

impl Call {
    /// Starts the call: 100 Trying to the caller and the first attempt.
    pub fn start(setup: CallSetup, now: Instant, out: &mut Vec<Action>) -> Call {
        let n = setup.plan.len();
        let deadline = now + setup.timers.call_deadline;
        let mut call = Call {
            setup,
            started: now,
            deadline,
            attempts: Vec::new(),
            tried: vec![false; n],
            current: None,
            state: CallState::Routing,
            best: None,
            caller_cancelled: false,
            cancel_guard: None,
            last_to_caller: None,
            final_retransmit: None,
            ended_at: None,
            records: Vec::new(),
        };
        let trying = build::response(&call.setup.invite, 100, "Trying", None, &[]);
        call.last_to_caller = Some(trying.clone());
        out.push(Action::SendCaller(trying));
        call.next_attempt(now, out);
        call
    }

    pub fn state(&self) -> CallState {
        self.state
    }

    /// The last response sent to the caller (what an INVITE retransmission gets after the call).
    pub fn last_to_caller(&self) -> Option<Bytes> {
        self.last_to_caller.clone()
    }

    pub fn records(&self) -> &[AttemptRecord] {
        &self.records
    }

    /// The caller retransmitted the INVITE: repeat the last response.
    pub fn on_caller_retransmit(&mut self, out: &mut Vec<Action>) {
        if let Some(b) = &self.last_to_caller {
            out.push(Action::SendCaller(b.clone()));
        }
    }

    /// The caller ACKed our non-2xx final: stop retransmitting it.
    pub fn on_caller_ack(&mut self) {
        self.final_retransmit = None;
    }

    /// The caller CANCELled (the 200 to the CANCEL is the dispatcher's job).
    pub fn on_caller_cancel(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state != CallState::Routing || self.caller_cancelled {
            return;
        }
        self.caller_cancelled = true;
        self.cancel_guard = Some(now + CANCEL_GUARD);
        if let Some(i) = self.current {
            self.cancel_branch(i, out);
        }
    }

    /// Nothing can reach `addr` (transport error): fails every attempt to it that got no response yet.
    pub fn on_unreachable(&mut self, addr: SocketAddr, now: Instant, out: &mut Vec<Action>) {
        for i in 0..self.attempts.len() {
            let a = &mut self.attempts[i];
            if a.target.next_hop != addr || a.phase == Phase::Done || a.final_code.is_some() {
                continue;
            }
            // Nothing listens there any more: no branch to it, ringing or not, can be answered, and
            // there is nobody left to CANCEL.
            let live = matches!(a.phase, Phase::Trying | Phase::Ringing);
            a.phase = Phase::Done;
            a.retransmit = None;
            a.cancel_pending = false;
            if live
                && self.current == Some(i)
                && self.state == CallState::Routing
                && !self.caller_cancelled
            {
                let t = a.target.id.clone();
                out.push(Action::Report(t, Outcome::TransportError));
                self.fail_attempt(i, Outcome::TransportError, now);
                // RFC 3261 §16.9: a transport error counts as a 503 from that branch (so a call whose
                // every target is unreachable ends 500, never 408: no time passed).
                self.keep_best(503, None);
                self.next_attempt(now, out);
            }
        }
    }

    /// Health took target `id` down (probes stopped getting answers): contract point 3a.
    pub fn on_target_down(&mut self, id: &str, now: Instant, out: &mut Vec<Action>) {
        let Some(i) = self.current else { return };
        let a = &self.attempts[i];
        if &*a.target.id != id
            || !matches!(a.phase, Phase::Trying | Phase::Ringing)
            || self.state != CallState::Routing
            || self.caller_cancelled
            || self.choose_next(now).is_none()
        {
            return;
        }
        tracing::info!(target = %id, "target went down while the attempt ran: failing over");
        out.push(Action::Report(a.target.id.clone(), Outcome::TargetDown));
        self.fail_attempt(i, Outcome::TargetDown, now);
        self.cancel_branch(i, out);
        self.next_attempt(now, out);
    }

    /// A response on one of our branches.
    pub fn on_response(&mut self, msg: Message, now: Instant, out: &mut Vec<Action>) {
        let Some(code) = msg.status() else { return };
        // A CANCEL shares the INVITE's branch; its response is hop-by-hop and ends here.
        if msg.cseq().method != crate::sip::Method::Invite {
            return;
        }
        let Some(i) = self.attempt_of(&msg) else {
            return;
        };
        tracing::debug!(target = %self.attempts[i].target.id, status = code, "response");
        if code < 200 {
            self.on_provisional(i, code, &msg, now, out);
        } else if code < 300 {
            self.on_2xx(i, code, &msg, now, out);
        } else {
            self.on_failure_final(i, code, msg, now, out);
        }
    }

    fn attempt_of(&self, msg: &Message) -> Option<usize> {
        let via = msg.top_via().ok()?;
        let branch = via.branch?;
        self.attempts
            .iter()
            .position(|a| a.branch.as_bytes() == branch)
    }

    fn on_provisional(
        &mut self,
        i: usize,
        code: u16,
        msg: &Message,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let ring = self.setup.timers.ring_timeout;
        let a = &mut self.attempts[i];
        a.provisional_seen = true;
        a.retransmit = None; // any provisional stops timer A
        if a.cancel_pending && !a.cancel_sent {
            // An abandoned branch finally answered: now it may be CANCELled (RFC 3261 §9.1).
            a.cancel_pending = false;
            a.cancel_sent = true;
            let cancel = build::cancel(&self.setup.invite, &a.leg(self.setup.routes_removed));
            out.push(Action::SendTarget(a.target.clone(), a.proto, cancel));
            return;
        }
        if code == 100 || a.phase != Phase::Trying && a.phase != Phase::Ringing {
            return; // 100 Trying is not progress (the failover contract, point 2).
        }
        if a.phase == Phase::Trying {
            a.phase = Phase::Ringing;
            a.phase_timer = now + ring;
            a.overdue_at = None;
            let t = a.target.id.clone();
            out.push(Action::FirstProvisional(
                t.clone(),
                now.saturating_duration_since(a.started),
            ));
            out.push(Action::Report(t, progress(a, code)));
        }
        if self.current == Some(i) && self.state == CallState::Routing && !self.caller_cancelled {
            let relayed = self.relay(msg);
            self.last_to_caller = Some(relayed.clone());
            out.push(Action::SendCaller(relayed));
        }
    }

    fn on_2xx(&mut self, i: usize, code: u16, msg: &Message, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendCaller(self.relay(msg)));
        let first = self.attempts[i].final_code.is_none();
        if self.attempts[i].phase == Phase::Trying {
            let a = &self.attempts[i];
            let d = now.saturating_duration_since(a.started);
            out.push(Action::FirstProvisional(a.target.id.clone(), d));
        }
        self.attempts[i].overdue_at = None;
        self.attempts[i].final_code = Some(code);
        self.attempts[i].phase = Phase::Done;
        self.attempts[i].retransmit = None;
        if first {
            let a = &self.attempts[i];
            out.push(Action::Report(a.target.id.clone(), progress(a, code)));
        }
        if self.state != CallState::Routing {
            return; // a 2xx retransmission or a second 2xx: relayed, nothing else (contract point 5).
        }
        if self.current != Some(i) {
            tracing::info!(target = %self.attempts[i].target.id, "late 2xx from an abandoned branch answers the call");
        }
        self.state = CallState::Answered;
        self.ended_at = Some(now);
        self.records
            .push(self.attempts[i].record(self.started, now, Outcome::Progress(code)));
        self.current = None;
        for j in 0..self.attempts.len() {
            if j != i {
                self.cancel_branch(j, out);
            }
        }
    }

    fn on_failure_final(
        &mut self,
        i: usize,
        code: u16,
        msg: Message,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // A non-2xx final is ACKed hop by hop (RFC 3261 §17.1.1.3), retransmissions too.
        let a = &mut self.attempts[i];
        let ack =
            build::ack_for_non2xx(&self.setup.invite, &a.leg(self.setup.routes_removed), &msg);
        out.push(Action::SendTarget(a.target.clone(), a.proto, ack));
        if a.final_code.is_some() {
            return;
        }
        a.final_code = Some(code);
        a.retransmit = None;
        let was_live = matches!(a.phase, Phase::Trying | Phase::Ringing);
        a.phase = Phase::Done;
        if self.current != Some(i) || self.state != CallState::Routing {
            return;
        }
        if self.caller_cancelled {
            // Contract point 8: the 487 (or whatever final) of the cancelled branch ends the call.
            self.records.push(self.attempts[i].record(
                self.started,
                now,
                Outcome::CancelledByCaller,
            ));
            let relayed = self.relay(&msg);
            self.send_final(relayed, code, now, out);
            return;
        }
        if !was_live {
            return;
        }
        if self.setup.failover.fails_over(code) {
            self.fail_attempt(i, Outcome::FailureResponse(code), now);
            out.push(Action::Report(
                self.attempts[i].target.id.clone(),
                Outcome::FailureResponse(code),
            ));
            self.keep_best(code, Some(msg));
            self.next_attempt(now, out);
        } else {
            let a = &self.attempts[i];
            out.push(Action::Report(a.target.id.clone(), progress(a, code)));
            self.records
                .push(self.attempts[i].record(self.started, now, Outcome::Progress(code)));
            let relayed = self.relay(&msg);
            self.send_final(relayed, code, now, out);
        }
    }

    /// Every timer of the call, with its due time: the one table both [`Call::next_wake`] and
    /// [`Call::on_timer`] read, so a timer cannot be scheduled without being handled, or the reverse.
    fn timers(&self) -> Vec<(Instant, Timer)> {
        let mut t = Vec::with_capacity(2 * self.attempts.len() + 4);
        for (i, a) in self.attempts.iter().enumerate() {
            if let Some(r) = &a.retransmit {
                t.push((r.due_at(), Timer::Retransmit(i)));
            }
            if let Some(o) = a.overdue_at {
                t.push((o, Timer::Overdue(i)));
            }
        }
        if let Some((r, h)) = &self.final_retransmit {
            t.push((*h, Timer::FinalGiveUp));
            t.push((r.due_at(), Timer::FinalRetransmit));
        }
        if let Some(g) = self.cancel_guard {
            t.push((g, Timer::CancelGuard));
        }
        if let (Some(i), CallState::Routing) = (self.current, self.state)
            && !self.caller_cancelled
        {
            t.push((self.expiry_of(i), Timer::AttemptExpiry(i)));
        }
        if let Some(e) = self.ended_at {
            t.push((e + LINGER, Timer::Linger));
        }
        t
    }

    /// Fires every timer due at `now`, in table order (a final given up before it is resent; an
    /// attempt found overdue before it expires).
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        let due: Vec<Timer> = self
            .timers()
            .into_iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, k)| k)
            .collect();
        for k in due {
            self.fire(k, now, out);
        }
    }

    fn fire(&mut self, k: Timer, now: Instant, out: &mut Vec<Action>) {
        match k {
            Timer::Retransmit(i) => {
                let a = &mut self.attempts[i];
                if let Some(r) = &mut a.retransmit
                    && r.fire(now)
                {
                    out.push(Action::SendTarget(
                        a.target.clone(),
                        a.proto,
                        a.sent.clone(),
                    ));
                }
            }
            Timer::Overdue(i) => {
                // Contract point 2a: overdue. The target is suspect for new calls; this attempt
                // keeps its full attempt timer (a slow but alive PSAP still gets this call).
                let a = &mut self.attempts[i];
                a.overdue_at = None;
                if a.phase == Phase::Trying {
                    a.went_overdue = true;
                    tracing::info!(target = %a.target.id, "attempt overdue: target suspect");
                    out.push(Action::Report(a.target.id.clone(), Outcome::Overdue));
                }
            }
            Timer::FinalGiveUp => self.final_retransmit = None, // timer H
            Timer::FinalRetransmit => {
                if let Some((r, _)) = &mut self.final_retransmit
                    && r.fire(now)
                    && let Some(b) = &self.last_to_caller
                {
                    out.push(Action::SendCaller(b.clone()));
                }
            }
            Timer::CancelGuard => {
                // Cleared whatever the state: a guard left behind would wake the call at once, forever.
                self.cancel_guard = None;
                if self.state == CallState::Routing {
                    let tag = Some(self.setup.to_tag.as_bytes());
                    let resp =
                        build::response(&self.setup.invite, 487, "Request Terminated", tag, &[]);
                    self.send_final(resp, 487, now, out);
                }
            }
            Timer::AttemptExpiry(i) => self.expire_attempt(i, now, out),
            Timer::Linger => {} // nothing to do: `is_finished` lets the shell drop the call
        }
    }

    /// The current attempt's timer ran out (attempt or ring timer, or the deadline bound).
    fn expire_attempt(&mut self, i: usize, now: Instant, out: &mut Vec<Action>) {
        // An earlier timer of this same batch may have ended the attempt or the call.
        if self.current != Some(i) || self.state != CallState::Routing || self.caller_cancelled {
            return;
        }
        let expiry = self.expiry_of(i);
        if now < expiry {
            return;
        }
        let cut_by_deadline = expiry < self.attempts[i].phase_timer;
        let outcome = match (cut_by_deadline, self.attempts[i].phase) {
            (true, _) => Outcome::CutByDeadline,
            (false, Phase::Ringing) => Outcome::RingTimeout,
            (false, _) => Outcome::AttemptTimeout,
        };
        if outcome.is_failure() {
            out.push(Action::Report(self.attempts[i].target.id.clone(), outcome));
        }
        self.fail_attempt(i, outcome, now);
        self.cancel_branch(i, out);
        self.next_attempt(now, out);
    }

    /// When the current attempt expires: its phase timer, cut at the last resort's latest start.
    fn expiry_of(&self, i: usize) -> Instant {
        let a = &self.attempts[i];
        match self.bound_for(a.plan_index) {
            Some(b) => a.phase_timer.min(b),
            None => a.phase_timer,
        }
    }

    /// Latest instant an attempt on plan index `p` may run to (contract point 6); None: unbounded
    /// (the last resort itself runs on its own timers).
    fn bound_for(&self, p: usize) -> Option<Instant> {
        match self.last_resort_index() {
            Some(lr) if lr == p => None,
            Some(lr) if !self.tried[lr] => Some(
                self.deadline
                    .checked_sub(self.setup.timers.attempt_timeout)
                    .unwrap_or(self.started),
            ),
            _ => Some(self.deadline),
        }
    }

    fn last_resort_index(&self) -> Option<usize> {
        let lr = self.setup.last_resort.as_ref()?;
        self.setup.plan.iter().position(|t| &t.id == lr)
    }

    /// Which plan index to try next (contract point 6), or None when nothing may be tried.
    fn choose_next(&self, now: Instant) -> Option<usize> {
        let mut untried = (0..self.setup.plan.len()).filter(|&p| !self.tried[p]);
        let first = untried.next()?;
        match self.last_resort_index().filter(|&lr| !self.tried[lr]) {
            Some(lr) => {
                let need = self.setup.timers.attempt_timeout * 2;
                if first != lr && now + need > self.deadline {
                    Some(lr)
                } else {
                    Some(first)
                }
            }
            None if now < self.deadline => Some(first),
            None => None,
        }
    }

    fn next_attempt(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.current = None;
        match self.choose_next(now) {
            Some(p) => self.start_attempt(p, now, out),
            None => self.give_up(now, out),
        }
    }

    fn start_attempt(&mut self, p: usize, now: Instant, out: &mut Vec<Action>) {
        self.tried[p] = true;
        let target = self.setup.plan[p].clone();
        let branch = crate::transaction::new_branch();
        // Built once per attempt and never parsed again: what we add is ours, and the caller's INVITE
        // already passed the inbound limits. Nothing here can fail, so no target is ever skipped.
        let mut proto = target.transport;
        let mut fwd = (self.setup.build_invite)(&target, &branch, proto);
        if proto == Proto::Udp && fwd.bytes.len() > MAX_UDP_PAYLOAD {
            tracing::info!(target = %target.id, bytes = fwd.bytes.len(), "INVITE too large for UDP: sent over TCP");
            proto = Proto::Tcp;
            fwd = (self.setup.build_invite)(&target, &branch, proto);
        }
        tracing::debug!(target = %target.id, branch = %branch, "attempt started");
        out.push(Action::Listen(branch.clone(), target.next_hop));
        out.push(Action::SendTarget(target.clone(), proto, fwd.bytes.clone()));
        let mut attempt = Attempt::new(
            target,
            p,
            branch,
            proto,
            fwd,
            now,
            self.setup.timers.attempt_timeout,
        );
        let overdue = self.setup.overdue.get(p).copied().flatten();
        attempt.overdue_at = overdue
            .filter(|d| *d < self.setup.timers.attempt_timeout)
            .map(|d| now + d);
        self.attempts.push(attempt);
        self.current = Some(self.attempts.len() - 1);
    }

    /// Records a failed attempt (health is told by the caller of this, which knows the outcome).
    fn fail_attempt(&mut self, i: usize, outcome: Outcome, now: Instant) {
        let a = &mut self.attempts[i];
        a.retransmit = None;
        a.overdue_at = None;
        tracing::info!(target = %a.target.id, outcome = %outcome, "attempt failed, failing over");
        let rec = a.record(self.started, now, outcome);
        self.records.push(rec);
    }

    /// Contract point 7.
    fn give_up(&mut self, now: Instant, out: &mut Vec<Action>) {
        let resp = match self.best.take() {
            Some((503, _)) => build::response(
                &self.setup.invite,
                500,
                "Server Internal Error",
                Some(self.setup.to_tag.as_bytes()),
                &[],
            ),
            Some((_, Some(msg))) => self.relay(&msg),
            Some((code, None)) => build::response(
                &self.setup.invite,
                code,
                build::reason_phrase(code),
                Some(self.setup.to_tag.as_bytes()),
                &[],
            ),
            None => build::response(
                &self.setup.invite,
                408,
                "Request Timeout",
                Some(self.setup.to_tag.as_bytes()),
                &[],
            ),
        };
        let code = status_of(&resp).unwrap_or(500);
        out.push(Action::Undelivered(self.records.clone()));
        self.send_final(resp, code, now, out);
    }

    fn keep_best(&mut self, code: u16, msg: Option<Message>) {
        let better = match &self.best {
            None => true,
            Some((b, _)) => rank(code) < rank(*b),
        };
        if better {
            self.best = Some((code, msg));
        }
    }

    fn send_final(&mut self, bytes: Bytes, code: u16, now: Instant, out: &mut Vec<Action>) {
        self.state = CallState::Completed(code);
        self.current = None;
        self.ended_at = Some(now);
        self.cancel_guard = None;
        self.last_to_caller = Some(bytes.clone());
        if !self.setup.caller_reliable {
            self.final_retransmit = Some((Retransmit::new(now, T2), now + TIMEOUT_64T1));
        }
        out.push(Action::SendCaller(bytes));
        for j in 0..self.attempts.len() {
            self.cancel_branch(j, out);
        }
    }

    /// Stops a branch: CANCEL when it sent a provisional, else remember to CANCEL when one shows up.
    fn cancel_branch(&mut self, i: usize, out: &mut Vec<Action>) {
        let a = &mut self.attempts[i];
        a.retransmit = None;
        if a.phase == Phase::Done || a.cancel_sent {
            return;
        }
        a.phase = Phase::Abandoned;
        if a.provisional_seen {
            a.cancel_sent = true;
            a.cancel_pending = false;
            let cancel = build::cancel(&self.setup.invite, &a.leg(self.setup.routes_removed));
            out.push(Action::SendTarget(a.target.clone(), a.proto, cancel));
        } else {
            a.cancel_pending = true;
        }
    }

    fn relay(&self, msg: &Message) -> Bytes {
        let mut e = Editor::new(msg);
        e.pop_via();
        if self.setup.caller_reliable {
            e.ensure_content_length();
        }
        e.finish()
    }

    /// When the shell must wake us next, if ever.
    pub fn next_wake(&self) -> Option<Instant> {
        self.timers().into_iter().map(|(at, _)| at).min()
    }

    /// The shell may drop the call: the caller has its final and nothing is left to settle.
    pub fn is_finished(&self, now: Instant) -> bool {
        let Some(ended) = self.ended_at else {
            return false;
        };
        if self.final_retransmit.is_some() {
            return false;
        }
        let settling = self.attempts.iter().any(|a| a.is_settling());
        !settling || now >= ended + LINGER
    }
}

/// What a response showing progress tells health: from an attempt that went overdue, that the
/// suspicion it raised was a false alarm.
fn progress(a: &Attempt, code: u16) -> Outcome {
    if a.went_overdue {
        Outcome::LateProgress(code)
    } else {
        Outcome::Progress(code)
    }
}

/// RFC 3261 §16.7.6 preference: 6xx first, then 4xx, 5xx, 3xx (lower rank is better).
fn rank(code: u16) -> u8 {
    match code / 100 {
        6 => 0,
        4 => 1,
        5 => 2,
        _ => 3,
    }
}

fn status_of(resp: &Bytes) -> Option<u16> {
    let s = resp.get(8..11)?;
    std::str::from_utf8(s).ok()?.parse().ok()
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

// ---- Memory (#12 part 4): lets the shell retire a call whose only work left is timer G/H. ----
impl Call {
    /// The call has ended and nothing is left to settle but the retransmission of its non-2xx final
    /// to an unreliable caller: that schedule (timer G, and H as its end), so the shell can hand the
    /// final to the dispatcher's finished-transaction table and drop the call's state.
    pub fn final_retransmit_only(&self, now: Instant) -> Option<(Retransmit, Instant)> {
        let ended = self.ended_at?;
        let settling = self.attempts.iter().any(|a| a.is_settling());
        if settling && now < ended + LINGER {
            return None;
        }
        self.final_retransmit
    }
}
