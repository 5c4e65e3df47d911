//! The async shell around one call: routes it, owns its `Call` state machine, feeds it events and
//! timers, and carries out its actions. One task and one span per call.

use super::call::{Action, Call, CallSetup, CallState};
use super::forward::{self, Inbound};
use super::{Proxy, ServerEntry, undelivered};
use crate::config::Proto;
use crate::metrics::{AttemptOutcome, CallOutcome, FailoverReason};
use crate::routing::{self, Target};
use crate::sip::Message;
use crate::transaction::{ServerKey, TIMEOUT_64T1};
use crate::transport::Destination;
use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

/// What the dispatcher tells a call.
#[derive(Debug)]
pub enum CallEvent {
    /// Boxed: the event enum sizes every slot of the call's channel (tokio allocates 32 at once),
    /// and an inline `Message` would make that block ~5.6 KB per call instead of ~0.5 KB.
    Response(Box<Message>),
    Unreachable(SocketAddr),
    /// Health took this target down (probes): fail over a call still trying or ringing there.
    TargetDown(crate::routing::TargetId),
    Cancel,
    Retransmit,
    Ack,
}

/// A call's timer that fires later than this behind its deadline says the runtime itself is behind.
const STALL_SLACK: std::time::Duration = std::time::Duration::from_millis(5);

/// The longest a late timer is held back for the receive side to catch up.
const STALL_GRACE_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a timer that fires on time is held back while sosrouter is behind reading its socket.
const BACKLOG_HOLD: std::time::Duration = std::time::Duration::from_millis(250);

/// The most one call's timers are held back in all, for stalls and backlog together: how far the
/// call's deadline can move, and only while sosrouter itself is behind.
const HOLD_BUDGET: std::time::Duration = std::time::Duration::from_millis(1000);

/// Why a call's timer was held back instead of acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// It fired late: the runtime was behind (see [`hold_back`]).
    Stall,
    /// It fired on time, but sosrouter was behind reading its UDP socket
    /// ([`crate::transport::Backlog`]).
    Backlog,
}

/// One wake of a call's timer, as the shell saw it.
struct Wake {
    /// When the timer was due.
    due: tokio::time::Instant,
    /// When it fired.
    fired: tokio::time::Instant,
    /// The wake already held back once, if any.
    graced: Option<tokio::time::Instant>,
    /// The last instant sosrouter was behind reading its UDP socket, if ever.
    behind: Option<tokio::time::Instant>,
    /// What is left of the call's [`HOLD_BUDGET`].
    left: std::time::Duration,
}

/// Whether a call's timer acts now or is held back, and until when. Returns `None`: act now.
///
/// - Fired more than [`STALL_SLACK`] late: the receive loops (tasks of the same runtime) are
///   likely as far behind, and a target's response that arrived before `due` may still sit unread
///   in a socket; acting now would blame the target for the proxy's own stall (fail over, send one
///   more INVITE, mark it suspect: under load, each stall grew into a storm of failovers, 14 866
///   attempt timeouts against an answering target in one 20 s step). Held back as long again as it
///   was late (at most [`STALL_GRACE_MAX`]).
/// - On time, but sosrouter read its UDP socket behind within the last [`Backlog::BEHIND`]
///   (`crate::transport::Backlog`): every datagram waits its turn in that one socket, the
///   target's reply too, and failing over would add an INVITE (and a CANCEL) to a proxy that is
///   already behind. Past the knee on a shared 2-core machine, calls whose primary answered went
///   through the whole chain on their own attempt timers and ended undelivered. Held back
///   [`BACKLOG_HOLD`].
///
/// Each wake is held back at most once, and a call's holds together never exceed [`HOLD_BUDGET`],
/// so a call still moves on while the proxy stays behind. The call keeps listening meanwhile. The
/// shell applies this only while the call is routing (no final sent yet).
///
/// [`Backlog::BEHIND`]: crate::transport::Backlog::BEHIND
fn hold_back(w: &Wake) -> Option<(tokio::time::Instant, Hold)> {
    if w.graced == Some(w.due) {
        return None;
    }
    let late = w.fired.saturating_duration_since(w.due);
    let behind = w
        .behind
        .is_some_and(|b| w.fired.saturating_duration_since(b) <= crate::transport::Backlog::BEHIND);
    let (hold, why) = if late > STALL_SLACK {
        (late.min(STALL_GRACE_MAX), Hold::Stall)
    } else if behind {
        (BACKLOG_HOLD, Hold::Backlog)
    } else {
        return None;
    };
    let hold = hold.min(w.left);
    (!hold.is_zero()).then_some((w.fired + hold, why))
}

fn now() -> std::time::Instant {
    // tokio's clock, so tests with paused time drive the state machine too.
    tokio::time::Instant::now().into_std()
}

/// `place` is the call's place in the in-flight count, taken by admission; it stays in the server
/// table with the call (dropped at once if a retransmission already owns the call).
pub(super) fn spawn_call(
    proxy: Arc<Proxy>,
    msg: Message,
    inb: Inbound,
    key: ServerKey,
    mf: u32,
    place: super::overload::InFlight,
) {
    let arrived = now(); // call setup latency counts from here (just after the parse)
    let (tx, rx) = mpsc::unbounded_channel();
    match proxy.server.entry(key.clone()) {
        Entry::Occupied(_) => return, // a retransmission raced us; the first copy owns the call
        Entry::Vacant(v) => {
            v.insert(ServerEntry::Active(tx.clone(), place));
        }
    }
    // Calls keep the rules snapshot they started with, whatever a reload does meanwhile.
    let rules = proxy.rules.load_full();
    let facts = rules.facts(&msg, inb.src.ip());
    let sel = rules.select(&facts);
    let health = proxy.health.clone();
    // A half-open recovering target lets one call at a time try it: this call may take that slot
    // (given back when the call ends, whatever happened).
    let trials = std::cell::RefCell::new(Vec::new());
    let plan = routing::plan(&rules, &sel.route, &|id| {
        health.readiness_for_call(id, &mut trials.borrow_mut())
    });
    let trials = trials.into_inner();
    let overdue = plan.iter().map(|t| health.overdue_after(&t.id)).collect();
    let (popped, _) = forward::our_routes(&msg, &proxy.local);
    let call_id = String::from_utf8_lossy(msg.call_id()).into_owned();
    let span = tracing::info_span!("call", call_id = %call_id, route = %sel.route.id, emergency = sel.emergency);
    span.in_scope(|| {
        let order: Vec<&str> = plan.iter().map(|t| &*t.id).collect();
        tracing::debug!(reason = %sel.reason, plan = ?order, "routed");
    });
    let local = proxy.local;
    let orig = msg.clone();
    let build_invite = Box::new(move |t: &Target, branch: &str, proto: Proto| {
        forward::invite_for_attempt(&orig, &inb, &local, t, proto, branch, mf, popped)
    });
    let setup = CallSetup {
        invite: msg,
        plan,
        last_resort: sel.route.chain.last().cloned(),
        timers: sel.route.timers,
        failover: sel.route.failover.clone(),
        caller_reliable: inb.proto.is_stream(),
        routes_removed: popped,
        overdue,
        to_tag: format!("sos{:08x}", rand::random::<u32>()),
        build_invite,
    };
    let ctx = Ctx {
        proxy,
        inb,
        tx,
        branches: Vec::new(),
        trials,
        answered_by: None,
        route: sel.route.id.clone(),
        emergency: sel.emergency,
        tally: Tally {
            arrived: Some(arrived),
            ..Tally::default()
        },
    };
    let tasks = ctx.proxy.tasks.clone();
    tasks.spawn(run(ctx, setup, key, rx).instrument(span));
}

struct Ctx {
    proxy: Arc<Proxy>,
    inb: Inbound,
    tx: mpsc::UnboundedSender<CallEvent>,
    branches: Vec<Bytes>,
    /// Half-open trial slots this call holds (given back when it ends).
    trials: Vec<crate::routing::TargetId>,
    /// The target whose 2xx answered the call.
    answered_by: Option<crate::routing::TargetId>,
    route: Arc<str>,
    emergency: bool,
    tally: Tally,
}

/// What the shell remembers of a call for metrics: enough to count each call's outcome once and
/// to tell a failover from a first attempt. No allocation.
#[derive(Default)]
struct Tally {
    arrived: Option<std::time::Instant>,
    /// Attempts started so far (each `Listen`); every one after the first is a failover.
    attempts: u32,
    /// Why the last attempt failed, when it did, in the batch of actions being executed.
    last_failure: Option<FailoverReason>,
    /// The target whose progress was counted last: an 18x and the 2xx that follows count once.
    last_progress: Option<crate::routing::TargetId>,
    cancelled: bool,
    undelivered: bool,
    counted: bool,
}

async fn run(
    mut ctx: Ctx,
    setup: CallSetup,
    key: ServerKey,
    mut rx: mpsc::UnboundedReceiver<CallEvent>,
) {
    let invite = setup.invite.clone();
    let mut out = Vec::new();
    let mut call = Call::start(setup, now(), &mut out);
    ctx.execute(&mut out, &invite);
    ctx.count_outcome(call.state());
    let mut resend = None;
    // The wake held back (see `hold_back`) and until when; what is left of the call's budget.
    let mut grace: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
    let mut hold_left = HOLD_BUDGET;
    loop {
        if call.is_finished(now()) {
            break;
        }
        // Only timer G/H left: the dispatcher's table retransmits the final; the call's state goes.
        if let Some((timer, stop)) = call.final_retransmit_only(now()) {
            let to = ctx.inb.reply_to();
            resend = Some(super::Resend { to, timer, stop });
            break;
        }
        let wake = call.next_wake();
        let due = tokio::time::Instant::from_std(wake.unwrap_or_else(|| now() + TIMEOUT_64T1));
        let sleep_to = match grace {
            Some((held, until)) if held == due => until,
            _ => due,
        };
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let t = now();
                match ev {
                    CallEvent::Response(m) => call.on_response(*m, t, &mut out),
                    CallEvent::Unreachable(a) => call.on_unreachable(a, t, &mut out),
                    CallEvent::TargetDown(id) => call.on_target_down(&id, t, &mut out),
                    CallEvent::Cancel => {
                        ctx.tally.cancelled = true;
                        call.on_caller_cancel(t, &mut out)
                    }
                    CallEvent::Retransmit => call.on_caller_retransmit(&mut out),
                    CallEvent::Ack => call.on_caller_ack(),
                }
            }
            _ = tokio::time::sleep_until(sleep_to) => {
                let fired = tokio::time::Instant::now();
                // Only while the call is routing: its attempt timers are what blame a target.
                let held = matches!(call.state(), CallState::Routing)
                    .then(|| {
                        hold_back(&Wake {
                            due,
                            fired,
                            graced: grace.map(|g| g.0),
                            behind: ctx.proxy.transport.last_behind().map(Into::into),
                            left: hold_left,
                        })
                    })
                    .flatten();
                match held {
                    Some((until, why)) => {
                        hold_left = hold_left.saturating_sub(until - fired);
                        ctx.proxy.count_hold(why);
                        grace = Some((due, until));
                        continue;
                    }
                    None => call.on_timer(now(), &mut out),
                }
            }
        }
        ctx.execute(&mut out, &invite);
        ctx.count_outcome(call.state());
    }
    for b in &ctx.branches {
        ctx.proxy.remove_branch(b);
    }
    for id in ctx.trials.drain(..) {
        ctx.proxy
            .health
            .observe(&id, crate::health::Observation::TrialOver);
    }
    // After a 2xx the UAS itself retransmits it (RFC 6026), so a retransmitted INVITE is only
    // absorbed; keeping the relayed 2xx (with its SDP) for 32 s per call would only cost memory.
    let last = match call.state() {
        super::call::CallState::Answered => None,
        _ => call.last_to_caller(),
    };
    ctx.proxy.finish_call(key, last, resend, now());
    tracing::debug!(state = ?call.state(), "call ended");
}

impl Ctx {
    fn execute(&mut self, out: &mut Vec<Action>, invite: &Message) {
        for a in out.drain(..) {
            match a {
                Action::SendTarget(t, proto, b) => self
                    .proxy
                    .transport
                    .send(Destination::new(proto, t.next_hop), b),
                Action::SendCaller(b) => self.proxy.transport.send(self.inb.reply_to(), b),
                Action::Listen(branch, addr) => {
                    let k = Bytes::from(branch.into_bytes());
                    let tx = self.tx.clone();
                    self.proxy.add_branch(k.clone(), tx, addr);
                    self.branches.push(k);
                    self.count_attempt_start();
                }
                Action::Report(id, o) => {
                    if o == crate::health::Outcome::TargetDown {
                        self.tally.last_failure = Some(FailoverReason::TargetDown);
                    }
                    if let Some(k) = super::OutcomeKind::of(o) {
                        self.proxy.counters.outcomes[k as usize]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let Some(kind) = AttemptOutcome::of(o) {
                        self.count_report(&id, kind);
                    }
                    if o.is_progress()
                        && matches!(o.status(), Some(200..=299))
                        && self.answered_by.is_none()
                    {
                        self.answered_by = Some(id.clone());
                        let keep = std::time::Duration::from_millis(
                            self.proxy.rules.load().suspicion.short_call_ms,
                        );
                        let at = now();
                        let call_id = invite.call_id();
                        self.proxy.answered.answered(call_id, id.clone(), at, keep);
                    }
                    self.proxy.health.report(&id, o);
                }
                Action::FirstProvisional(id, d) => {
                    let obs = crate::health::Observation::FirstProvisional(d);
                    self.proxy.health.observe(&id, obs);
                }
                Action::Undelivered(recs) => {
                    let c = &self.proxy.counters.undelivered;
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.tally.undelivered = true;
                    self.publish_undelivered(invite, &recs);
                    let rec = undelivered::record(invite, &self.route, self.emergency, &recs);
                    self.proxy.undelivered.record(rec);
                }
            }
        }
    }
}

/// Metrics and events of one call (see `crate::metrics`): a few atomic increments per event.
impl Ctx {
    fn count_attempt_start(&mut self) {
        let t = &mut self.tally;
        if t.attempts > 0 {
            // No failure reported just before this attempt: the deadline cut the last one short.
            let why = t.last_failure.take().unwrap_or(FailoverReason::Deadline);
            self.proxy.metrics.failover(why);
        }
        t.attempts += 1;
        t.last_failure = None;
    }

    fn count_report(&mut self, id: &crate::routing::TargetId, kind: AttemptOutcome) {
        let t = &mut self.tally;
        if kind == AttemptOutcome::Progress {
            if t.last_progress.as_ref() == Some(id) {
                return;
            }
            t.last_progress = Some(id.clone());
        }
        t.last_failure = kind.failover_reason().or(t.last_failure);
        self.proxy.metrics.attempt(id, kind);
    }

    /// Counts the call's outcome once, when it leaves `Routing`.
    fn count_outcome(&mut self, state: CallState) {
        let t = &mut self.tally;
        if t.counted || state == CallState::Routing {
            return;
        }
        t.counted = true;
        let m = &self.proxy.metrics;
        let outcome = match state {
            CallState::Answered => {
                if let Some(a) = t.arrived {
                    m.call_setup(now().saturating_duration_since(a));
                }
                CallOutcome::Answered
            }
            _ if t.undelivered => CallOutcome::Failed,
            _ if t.cancelled => CallOutcome::Cancelled,
            _ => CallOutcome::Rejected,
        };
        m.call(&self.route, outcome);
    }

    fn publish_undelivered(&self, invite: &Message, recs: &[super::call::AttemptRecord]) {
        let reason = recs
            .iter()
            .map(|r| format!("{}: {}", r.target, r.outcome))
            .collect::<Vec<_>>()
            .join("; ");
        let call_id = String::from_utf8_lossy(invite.call_id());
        let ev = crate::events::Event::undelivered(&self.route, &call_id, &reason);
        self.proxy.events.publish(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    fn wake(due: Instant, fired: Instant) -> Wake {
        Wake {
            due,
            fired,
            graced: None,
            behind: None,
            left: HOLD_BUDGET,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_on_time_acts_at_once() {
        let due = Instant::now();
        assert_eq!(hold_back(&wake(due, due)), None);
        assert_eq!(hold_back(&wake(due, due + STALL_SLACK)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_timer_is_held_back_once_as_long_as_it_was_late() {
        let due = Instant::now();
        let fired = due + Duration::from_millis(80);
        let (until, why) = hold_back(&wake(due, fired)).expect("80 ms late: held back");
        assert_eq!(
            (until, why),
            (fired + Duration::from_millis(80), Hold::Stall)
        );
        let again = Wake {
            graced: Some(due),
            ..wake(due, until + Duration::from_millis(300))
        };
        assert_eq!(
            hold_back(&again),
            None,
            "the same wake is never held back twice"
        );
        let other = due + Duration::from_millis(10);
        let w = Wake {
            graced: Some(due),
            ..wake(other, other + Duration::from_millis(50))
        };
        assert!(hold_back(&w).is_some(), "a different wake may be held back");
    }

    #[tokio::test(start_paused = true)]
    async fn the_hold_back_is_bounded() {
        let due = Instant::now();
        let fired = due + Duration::from_secs(5);
        assert_eq!(
            hold_back(&wake(due, fired)),
            Some((fired + STALL_GRACE_MAX, Hold::Stall))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_on_time_is_held_while_sosrouter_is_behind_on_its_socket() {
        let due = Instant::now() + Duration::from_secs(1);
        let behind = |ago: u64| Wake {
            behind: Some(due - Duration::from_millis(ago)),
            ..wake(due, due)
        };
        assert_eq!(
            hold_back(&behind(0)),
            Some((due + BACKLOG_HOLD, Hold::Backlog)),
            "behind just now: a reply may wait in our own socket"
        );
        assert_eq!(hold_back(&behind(100)).map(|h| h.1), Some(Hold::Backlog));
        assert_eq!(
            hold_back(&behind(101)),
            None,
            "caught up since: what is in the socket has been read"
        );
        let late_too = Wake {
            fired: due + Duration::from_millis(40),
            behind: Some(due),
            ..wake(due, due)
        };
        assert_eq!(
            hold_back(&late_too),
            Some((due + Duration::from_millis(80), Hold::Stall)),
            "late and behind: the stall rule, as long again as it was late"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_held_back_no_longer_than_its_budget_in_all() {
        let mut due = Instant::now() + Duration::from_secs(1);
        let mut left = HOLD_BUDGET;
        let mut holds = 0;
        // Behind for good, wake after wake (a Timer A retransmit, the attempt timer...).
        while let Some((until, _)) = hold_back(&Wake {
            behind: Some(due),
            left,
            ..wake(due, due)
        }) {
            left -= until - due;
            holds += 1;
            due = until + Duration::from_millis(10);
            assert!(holds < 100, "the holds never end");
        }
        assert_eq!(left, Duration::ZERO);
        let most = (HOLD_BUDGET.as_millis()).div_ceil(BACKLOG_HOLD.as_millis());
        assert_eq!(holds as u128, most);
        assert_eq!(
            hold_back(&Wake {
                left: Duration::ZERO,
                ..wake(due, due + Duration::from_millis(300))
            }),
            None,
            "a late timer acts once the budget is spent"
        );
    }
}
