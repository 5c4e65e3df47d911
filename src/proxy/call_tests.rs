//! The call state machine without sockets or clocks: scripted targets, explicit time.

use super::call::{Action, Call, CallSetup, CallState, Forwarded};
use crate::health::Outcome;
use crate::routing::{FailoverCodes, Target, Timers};
use crate::sip::{Limits, Message, build};
use bytes::Bytes;
use proptest::prelude::*;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn target(id: &str, port: u16) -> Arc<Target> {
    Arc::new(Target::for_test(id, port))
}

fn parse(s: String) -> Message {
    Message::parse(Bytes::from(s), &Limits::default()).expect("test message parses")
}

const CALLER_VIA: &str = "SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-caller";

fn caller_invite() -> Message {
    parse(format!(
        "INVITE urn:service:sos SIP/2.0\r\nVia: {CALLER_VIA}\r\nMax-Forwards: 70\r\n\
         From: <sip:+16175550123@a.example>;tag=c1\r\nTo: <urn:service:sos>\r\nCall-ID: c-1\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ))
}

fn forwarded(branch: &str) -> String {
    format!(
        "INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n\
         Via: {CALLER_VIA}\r\nMax-Forwards: 69\r\nFrom: <sip:+16175550123@a.example>;tag=c1\r\n\
         To: <urn:service:sos>\r\nCall-ID: c-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
}

fn response(branch: &str, code: u16) -> Message {
    parse(format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\nVia: {CALLER_VIA}\r\n\
         From: <sip:+16175550123@a.example>;tag=c1\r\nTo: <urn:service:sos>;tag=t{code}\r\n\
         Call-ID: c-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ))
}

fn setup(n: usize, timers: Timers) -> CallSetup {
    let plan: Vec<_> = (0..n)
        .map(|i| target(&format!("t{i}"), 5071 + i as u16))
        .collect();
    CallSetup {
        invite: caller_invite(),
        last_resort: plan.last().map(|t| t.id.clone()),
        plan,
        timers,
        failover: FailoverCodes(vec![
            (408, 408),
            (480, 480),
            (486, 486),
            (500, 599),
            (600, 600),
            (603, 603),
        ]),
        caller_reliable: false,
        to_tag: "px".into(),
        routes_removed: 0,
        overdue: vec![],
        build_invite: Box::new(|_t: &Target, b: &str, _p| Forwarded {
            bytes: Bytes::from(forwarded(b)),
            request_uri: Bytes::from_static(b"urn:service:sos"),
            via: Bytes::from(format!("SIP/2.0/UDP 127.0.0.1:5060;branch={b}")),
        }),
    }
}

/// What a scripted target does with an INVITE, after `delay_ms`.
#[derive(Debug, Clone, Copy)]
enum Script {
    Answer(u64),
    Fail(u16, u64),
    Unreachable(u64),
    RingThenNothing(u64),
    Silent,
}

#[derive(Debug, PartialEq, Eq)]
struct Pending(Instant, usize, u8); // time, target index, what (0 answer, 1 fail, 2 unreachable, 3 ring)
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.cmp(&self.0).then(o.1.cmp(&self.1))
    }
}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// Result of a simulated call.
#[derive(Debug)]
struct Sim {
    final_code: u16,
    final_at: Duration,
    invited: Vec<usize>,
    reports: Vec<(String, Outcome)>,
    cancels: Vec<usize>,
}

fn simulate(scripts: &[Script], timers: Timers) -> Sim {
    let t0 = Instant::now();
    let mut out = vec![];
    let mut call = Call::start(setup(scripts.len(), timers), t0, &mut out);
    let mut queue = BinaryHeap::new();
    let mut branches: Vec<(usize, String)> = vec![];
    let mut sim = Sim {
        final_code: 0,
        final_at: Duration::ZERO,
        invited: vec![],
        reports: vec![],
        cancels: vec![],
    };
    let mut now = t0;
    for _ in 0..10_000 {
        for a in out.drain(..) {
            match a {
                Action::SendTarget(t, _, bytes) => {
                    let idx = t.id[1..].parse::<usize>().unwrap();
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    if text.starts_with("CANCEL") {
                        sim.cancels.push(idx);
                    } else if text.starts_with("INVITE") && !branches.iter().any(|(i, _)| *i == idx)
                    {
                        let m = parse(text);
                        let br = String::from_utf8_lossy(m.top_via().unwrap().branch.unwrap())
                            .into_owned();
                        branches.push((idx, br));
                        sim.invited.push(idx);
                        match scripts[idx] {
                            Script::Answer(d) => queue.push(Pending(now + ms(d), idx, 0)),
                            Script::Fail(_, d) => queue.push(Pending(now + ms(d), idx, 1)),
                            Script::Unreachable(d) => queue.push(Pending(now + ms(d), idx, 2)),
                            Script::RingThenNothing(d) => queue.push(Pending(now + ms(d), idx, 3)),
                            Script::Silent => {}
                        }
                    }
                }
                Action::SendCaller(b) => {
                    let m = Message::parse(b, &Limits::default()).unwrap();
                    let code = m.status().unwrap();
                    if code >= 200 && sim.final_code == 0 {
                        sim.final_code = code;
                        sim.final_at = now - t0;
                    }
                }
                Action::Report(t, o) => sim.reports.push((t.to_string(), o)),
                Action::Listen(..) | Action::Undelivered(_) | Action::FirstProvisional(..) => {}
            }
        }
        if call.is_finished(now) {
            break;
        }
        let wake = call.next_wake();
        let ev = queue.peek().map(|p| p.0);
        let next = match (wake, ev) {
            (Some(w), Some(e)) => w.min(e),
            (Some(w), None) => w,
            (None, Some(e)) => e,
            (None, None) => break,
        };
        now = next.max(now);
        if ev == Some(next) {
            let Pending(_, idx, what) = queue.pop().unwrap();
            let br = branches.iter().find(|(i, _)| *i == idx).unwrap().1.clone();
            match (what, scripts[idx]) {
                (0, _) => call.on_response(response(&br, 200), now, &mut out),
                (1, Script::Fail(code, _)) => call.on_response(response(&br, code), now, &mut out),
                (2, _) => call.on_unreachable(
                    format!("127.0.0.1:{}", 5071 + idx).parse().unwrap(),
                    now,
                    &mut out,
                ),
                (3, _) => call.on_response(response(&br, 180), now, &mut out),
                _ => unreachable!(),
            }
        } else {
            call.on_timer(now, &mut out);
        }
    }
    sim
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timers(attempt: u64, ring: u64, deadline: u64) -> Timers {
    Timers {
        attempt_timeout: ms(attempt),
        ring_timeout: ms(ring),
        call_deadline: ms(deadline),
    }
}

/// A call over two scripted targets, started at t0: the call, t0, the first attempt's branch, and
/// the actions so far.
fn start_two(t: Timers) -> (Call, Instant, String, Vec<Action>) {
    let t0 = Instant::now();
    let mut out = vec![];
    let call = Call::start(setup(2, t), t0, &mut out);
    let inv = out.iter().find_map(|a| match a {
        Action::SendTarget(_, _, b) => Some(Message::parse(b.clone(), &Limits::default()).unwrap()),
        _ => None,
    });
    let br = String::from_utf8_lossy(inv.unwrap().top_via().unwrap().branch.unwrap()).into_owned();
    (call, t0, br, out)
}

#[test]
fn first_target_answers() {
    let s = simulate(
        &[Script::Answer(5), Script::Answer(5)],
        timers(1000, 10_000, 30_000),
    );
    assert_eq!(s.final_code, 200);
    assert_eq!(s.invited, vec![0]);
}

#[test]
fn unreachable_fails_over_at_once() {
    let s = simulate(
        &[Script::Unreachable(1), Script::Answer(5)],
        timers(1000, 10_000, 30_000),
    );
    assert_eq!(s.final_code, 200);
    assert_eq!(s.invited, vec![0, 1]);
    assert_eq!(
        s.final_at,
        ms(6),
        "1 ms to the ICMP error, 5 ms to the answer: no timer"
    );
    assert_eq!(s.reports[0], ("t0".into(), Outcome::TransportError));
}

#[test]
fn silent_target_costs_exactly_the_attempt_timer() {
    let s = simulate(
        &[Script::Silent, Script::Answer(5)],
        timers(1000, 10_000, 30_000),
    );
    assert_eq!(s.final_code, 200);
    assert_eq!(s.final_at, ms(1005));
    assert!(
        s.cancels.is_empty(),
        "no CANCEL before a provisional (RFC 3261 §9.1)"
    );
    assert_eq!(s.reports[0], ("t0".into(), Outcome::AttemptTimeout));
}

#[test]
fn ringing_target_is_cancelled_after_the_ring_timer() {
    let s = simulate(
        &[Script::RingThenNothing(10), Script::Answer(5)],
        timers(1000, 3000, 30_000),
    );
    assert_eq!(s.final_code, 200);
    assert_eq!(s.final_at, ms(10 + 3000 + 5));
    assert_eq!(s.cancels, vec![0]);
}

#[test]
fn best_response_503_becomes_500_unreachable_counts_as_503_and_none_becomes_408() {
    let s = simulate(
        &[Script::Fail(503, 1), Script::Fail(486, 1)],
        timers(1000, 3000, 30_000),
    );
    assert_eq!(s.final_code, 486, "4xx beats 5xx (RFC 3261 §16.7.6)");
    let s = simulate(
        &[Script::Fail(503, 1), Script::Fail(503, 1)],
        timers(1000, 3000, 30_000),
    );
    assert_eq!(s.final_code, 500, "503 is never relayed as 503");
    let s = simulate(
        &[Script::Silent, Script::Unreachable(1)],
        timers(100, 3000, 30_000),
    );
    assert_eq!(
        s.final_code, 500,
        "a transport error counts as 503 (RFC 3261 §16.9)"
    );
    let s = simulate(&[Script::Silent, Script::Silent], timers(100, 3000, 30_000));
    assert_eq!(s.final_code, 408, "no response at all, and time did pass");
}

#[test]
fn deadline_skips_to_the_last_resort_and_answers_before_it() {
    // Three silent PSAPs and a silent last resort; 1 s attempts; 2.5 s deadline.
    let s = simulate(
        &[
            Script::Silent,
            Script::Silent,
            Script::Silent,
            Script::Silent,
        ],
        timers(1000, 3000, 2500),
    );
    // At 1 s only the last resort fits (1 s + 1 s > 2.5 s); it fails at 2 s, and with time left the
    // untried backup gets the rest, cut at the deadline.
    assert_eq!(s.invited, vec![0, 3, 1]);
    assert_eq!(s.final_at, ms(2500));
    assert_eq!(s.final_code, 408);
}

#[test]
fn ringing_cut_by_the_deadline_still_reaches_the_last_resort() {
    let s = simulate(
        &[Script::RingThenNothing(10), Script::Answer(5)],
        timers(1000, 60_000, 5000),
    );
    assert_eq!(s.final_code, 200);
    assert_eq!(s.final_at, ms(4000 + 5), "cut at deadline - attempt timer");
    assert_eq!(s.cancels, vec![0]);
    assert!(
        s.reports
            .iter()
            .all(|(t, o)| t != "t0" || !matches!(o, Outcome::RingTimeout)),
        "a cut by the deadline is not the target's fault"
    );
}

#[test]
fn non_failover_final_is_relayed() {
    let s = simulate(
        &[Script::Fail(404, 1), Script::Answer(1)],
        timers(1000, 3000, 30_000),
    );
    assert_eq!(s.final_code, 404);
    assert_eq!(s.invited, vec![0]);
}

#[test]
fn cancel_from_caller_stops_failover() {
    let (mut call, t0, br, mut out) = start_two(timers(1000, 10_000, 30_000));
    out.clear();
    call.on_response(response(&br, 180), t0 + ms(5), &mut out);
    out.clear();
    call.on_caller_cancel(t0 + ms(10), &mut out);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::SendTarget(_, _, b) if b.starts_with(b"CANCEL")))
    );
    out.clear();
    call.on_response(response(&br, 487), t0 + ms(12), &mut out);
    let finals: Vec<u16> = out
        .iter()
        .filter_map(|a| match a {
            Action::SendCaller(b) => Message::parse(b.clone(), &Limits::default()).ok()?.status(),
            _ => None,
        })
        .collect();
    assert_eq!(finals, vec![487]);
    assert_eq!(call.state(), CallState::Completed(487));
}

fn script() -> impl Strategy<Value = Script> {
    prop_oneof![
        (0u64..300).prop_map(Script::Answer),
        (
            prop::sample::select(vec![408u16, 480, 486, 500, 503, 600, 603]),
            0u64..300
        )
            .prop_map(|(c, d)| Script::Fail(c, d)),
        (0u64..50).prop_map(Script::Unreachable),
        (0u64..300).prop_map(Script::RingThenNothing),
        Just(Script::Silent),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Issue invariant 3: for any interleaving of outcomes, a call with time left before its
    /// deadline and an untried target is never answered with a failure; and the last resort is
    /// always tried before a failure is given.
    #[test]
    fn invariant3_no_failure_while_time_left_and_untried_target(
        scripts in prop::collection::vec(script(), 1..6),
        attempt in 50u64..1500,
        ring in 100u64..5000,
        deadline in 500u64..8000,
    ) {
        let n = scripts.len();
        let s = simulate(&scripts, timers(attempt, ring, deadline));
        prop_assert!(s.final_code >= 200, "the call always ends: {s:?}");
        let mut uniq = s.invited.clone();
        uniq.sort_unstable();
        uniq.dedup();
        prop_assert_eq!(uniq.len(), s.invited.len(), "no target invited twice");
        if s.final_code >= 300 {
            let all_tried = s.invited.len() == n;
            let past_deadline = s.final_at >= ms(deadline);
            prop_assert!(all_tried || past_deadline, "failure with time left and untried targets: {s:?}");
            prop_assert!(s.invited.contains(&(n - 1)), "last resort not tried: {s:?}");
        }
        if s.final_code == 200 {
            prop_assert!(s.invited.iter().any(|&i| matches!(scripts[i], Script::Answer(_))));
        }
    }
}

#[test]
fn the_200_to_our_cancel_does_not_answer_the_call() {
    let (mut call, t0, br, mut out) = start_two(timers(1000, 3000, 30_000));
    call.on_response(response(&br, 180), t0 + ms(5), &mut out);
    call.on_timer(t0 + ms(3005), &mut out); // ring timer: CANCEL, next target
    let cancel_ok = String::from_utf8_lossy(response(&br, 200).bytes())
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    call.on_response(parse(cancel_ok), t0 + ms(3006), &mut out);
    assert_eq!(
        call.state(),
        CallState::Routing,
        "a CANCEL's 200 shares the branch, not the meaning"
    );
}

#[test]
fn a_target_that_dies_while_ringing_fails_over_at_once() {
    let (mut call, t0, br, mut out) = start_two(timers(1000, 10_000, 30_000));
    call.on_response(response(&br, 180), t0 + ms(5), &mut out);
    out.clear();
    // A probe (or another call) to the dead port draws ICMP unreachable.
    call.on_unreachable("127.0.0.1:5071".parse().unwrap(), t0 + ms(300), &mut out);
    assert_eq!(
        sent(&out, b"INVITE"),
        vec!["t1"],
        "the backup is tried at once, not after the ring timer"
    );
    assert!(
        sent(&out, b"CANCEL").is_empty(),
        "nobody to CANCEL at a closed port"
    );
}

fn sent(out: &[Action], method: &[u8]) -> Vec<String> {
    out.iter()
        .filter_map(|a| match a {
            Action::SendTarget(t, _, b) if b.starts_with(method) => Some(t.id.to_string()),
            _ => None,
        })
        .collect()
}

/// Contract point 3a: a hung PSAP (probes time out) holding a ringing call hands it on at once.
#[test]
fn a_ringing_target_that_health_takes_down_is_cancelled_and_failed_over() {
    let (mut call, t0, br, mut out) = start_two(timers(1000, 10_000, 30_000));
    call.on_response(response(&br, 180), t0 + ms(5), &mut out);
    out.clear();
    call.on_target_down("t1", t0 + ms(2000), &mut out);
    assert!(
        out.is_empty(),
        "another target's fall is not this call's business"
    );
    call.on_target_down("t0", t0 + ms(2000), &mut out);
    assert_eq!(
        sent(&out, b"CANCEL"),
        vec!["t0"],
        "the ringing branch is CANCELled"
    );
    assert_eq!(
        sent(&out, b"INVITE"),
        vec!["t1"],
        "and the backup tried at once"
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Report(t, Outcome::TargetDown) if &**t == "t0"))
    );
    assert_eq!(call.records()[0].outcome, Outcome::TargetDown);
    // A late 2xx from the cut branch still answers the call (contract point 5).
    out.clear();
    call.on_response(response(&br, 200), t0 + ms(2100), &mut out);
    assert_eq!(call.state(), CallState::Answered);
}

#[test]
fn a_trying_target_taken_down_is_abandoned_without_a_cancel() {
    let (mut call, t0, _br, mut out) = start_two(timers(1000, 10_000, 30_000));
    out.clear();
    call.on_target_down("t0", t0 + ms(300), &mut out);
    assert!(
        sent(&out, b"CANCEL").is_empty(),
        "no CANCEL before a provisional (§9.1)"
    );
    assert_eq!(sent(&out, b"INVITE"), vec!["t1"]);
}

#[test]
fn the_last_target_left_keeps_ringing_when_it_is_taken_down() {
    let (mut call, t0, br, mut out) = start_two(timers(1000, 10_000, 30_000));
    call.on_response(response(&br, 503), t0 + ms(5), &mut out); // t0 fails: t1 (last resort) now
    let br1 = out
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Listen(b, _) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    call.on_response(response(&br1, 180), t0 + ms(10), &mut out);
    out.clear();
    call.on_target_down("t1", t0 + ms(2000), &mut out);
    assert!(
        out.is_empty(),
        "nothing left to fail over to: it may still answer"
    );
    assert_eq!(call.state(), CallState::Routing);
}

/// Issue #12: an INVITE accepted under any inbound limits is forwarded to every target of the plan,
/// however close to those limits it is (our Via and Record-Route are never measured against them),
/// and the CANCEL and ACK of each attempt are well formed without parsing what we sent.
mod forwarding_props {
    use super::*;
    use crate::config::Proto;
    use crate::proxy::forward::{self, Inbound, Local};
    use crate::transport::ConnId;

    /// Generous limits for the fake targets' side: a forwarded INVITE carries our additions.
    const TARGET_SIDE: Limits = Limits {
        max_message_bytes: 1 << 20,
        max_headers: 4096,
        max_line_bytes: 1 << 16,
    };

    fn invite_text(extra: usize, pad: usize, routes: usize, body: usize) -> String {
        let mut s = String::from(
            "INVITE sip:911@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-caller;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:+16175550123@a.example>;tag=c1\r\n\
             To: <sip:911@127.0.0.1>\r\nCall-ID: prop-1\r\nCSeq: 7 INVITE\r\n",
        );
        // Leading Route entries name us (removed when forwarding); one more names the next hop.
        for _ in 0..routes {
            s.push_str("Route: <sip:127.0.0.1:5060;lr>\r\n");
        }
        s.push_str("Route: <sip:10.9.9.9;lr>\r\n");
        for i in 0..extra {
            s.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(pad)));
        }
        s.push_str(&format!(
            "Content-Length: {body}\r\n\r\n{}",
            "b".repeat(body)
        ));
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn every_target_receives_an_accepted_invite(
            extra in 0usize..400,
            pad in 0usize..400,
            routes in 0usize..3,
            body in 0usize..70_000,
            header_slack in 0usize..3,
            byte_slack in 0usize..64,
            caller_tcp: bool,
            target_tcp in prop::collection::vec(any::<bool>(), 3),
        ) {
            let text = invite_text(extra, pad, routes, body);
            // Inbound limits at (or just above) this very INVITE: the inbound stage accepts it.
            let fields = text.split("\r\n\r\n").next().unwrap().lines().count() - 1;
            let limits = Limits {
                max_message_bytes: text.len() + byte_slack,
                max_headers: fields + header_slack,
                max_line_bytes: 8_192,
            };
            prop_assume!(text.len() <= 65_535);
            let orig = Message::parse(Bytes::from(text), &limits).expect("accepted inbound");
            let local = Local {
                udp: Some("127.0.0.1:5060".parse().unwrap()),
                tcp: Some("127.0.0.1:5060".parse().unwrap()),
                tls: None,
            };
            let inb = Inbound {
                proto: if caller_tcp { Proto::Tcp } else { Proto::Udp },
                src: "127.0.0.1:7000".parse().unwrap(),
                conn: caller_tcp.then(|| ConnId::from_raw(3)),
            };
            let (popped, _) = forward::our_routes(&orig, &local);
            prop_assert_eq!(popped, routes);
            let plan: Vec<Arc<Target>> = target_tcp
                .iter()
                .enumerate()
                .map(|(i, &tcp)| {
                    let mut t = Target::for_test(&format!("t{i}"), 5071 + i as u16);
                    if tcp {
                        t.transport = Proto::Tcp;
                    }
                    Arc::new(t)
                })
                .collect();
            let orig2 = orig.clone();
            let mut s = setup(3, timers(1000, 3000, 30_000));
            s.invite = orig.clone();
            s.plan = plan.clone();
            s.last_resort = plan.last().map(|t| t.id.clone());
            s.routes_removed = popped;
            s.build_invite = Box::new(move |t: &Target, b: &str, p: Proto| {
                forward::invite_for_attempt(&orig2, &inb, &local, t, p, b, 69, popped)
            });
            let t0 = Instant::now();
            let mut out = vec![];
            let mut call = Call::start(s, t0, &mut out);
            let mut reached = vec![];
            // Each target answers 503 to its INVITE: the call fails over through the whole plan.
            for _ in 0..10 {
                let sent: Vec<_> = out
                    .drain(..)
                    .filter_map(|a| match a {
                        Action::SendTarget(t, p, b) => Some((t, p, b)),
                        _ => None,
                    })
                    .collect();
                let mut answered = false;
                for (t, p, b) in sent {
                    let m = Message::parse(b.clone(), &TARGET_SIDE).expect("what we send parses");
                    let method = m.method_bytes().unwrap_or_default().to_vec();
                    if method == b"ACK" {
                        prop_assert_eq!(m.cseq().seq, 7);
                        prop_assert_eq!(m.routes().len(), 1, "the caller's Route set, ours removed");
                        continue;
                    }
                    prop_assert_eq!(&method[..], b"INVITE");
                    prop_assert!(p == Proto::Tcp || b.len() <= super::super::call::MAX_UDP_PAYLOAD);
                    prop_assert_eq!(m.body().len(), body);
                    // Every field of the caller's, less our Route entries, plus our Via and
                    // Record-Route (two when the transports differ).
                    let rr = if inb.proto == Proto::Udp && p == Proto::Udp { 1 } else { 2 };
                    prop_assert_eq!(m.headers().len(), orig.headers().len() - routes + 1 + rr);
                    reached.push(t.id.clone());
                    let resp = build::response(&m, 503, "Service Unavailable", Some(b"x"), &[]);
                    let resp = Message::parse(resp, &TARGET_SIDE).unwrap();
                    call.on_response(resp, t0, &mut out);
                    answered = true;
                }
                if !answered {
                    break;
                }
            }
            let ids: Vec<_> = plan.iter().map(|t| t.id.clone()).collect();
            prop_assert_eq!(reached, ids, "every target of the plan got the INVITE, in order");
            prop_assert_eq!(call.state(), CallState::Completed(500));
        }
    }
}

/// Contract point 2a: an attempt with no ringing after its overdue bound reports the target
/// overdue (suspect) at once, and keeps its full attempt timer; ringing in time reports nothing.
#[test]
fn an_overdue_attempt_reports_at_its_bound_and_keeps_its_attempt_timer() {
    let t0 = Instant::now();
    let mut s = setup(2, timers(1000, 3000, 30_000));
    s.overdue = vec![Some(ms(200)), Some(ms(200))];
    let mut out = vec![];
    let mut call = Call::start(s, t0, &mut out);
    assert_eq!(
        call.next_wake(),
        Some(t0 + ms(200)),
        "the overdue bound is the next timer"
    );
    out.clear();
    call.on_timer(t0 + ms(199), &mut out);
    assert!(!out.iter().any(|a| matches!(a, Action::Report(..))));
    call.on_timer(t0 + ms(200), &mut out);
    let reports: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Report(t, o) => Some((t.to_string(), *o)),
            _ => None,
        })
        .collect();
    assert_eq!(reports, vec![("t0".to_string(), Outcome::Overdue)]);
    assert!(
        !out.iter().any(|a| matches!(a, Action::SendTarget(t, _, b) if &*t.id == "t1" && b.starts_with(b"INVITE"))),
        "the overdue attempt goes on: no failover yet"
    );
    out.clear();
    call.on_timer(t0 + ms(1000), &mut out);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Report(_, Outcome::AttemptTimeout)))
    );
    assert!(out.iter().any(
        |a| matches!(a, Action::SendTarget(t, _, b) if &*t.id == "t1" && b.starts_with(b"INVITE"))
    ));
    // t1 rings in time: never overdue, and its first-provisional time is reported.
    let br = out
        .iter()
        .find_map(|a| match a {
            Action::SendTarget(t, _, b) if &*t.id == "t1" && b.starts_with(b"INVITE") => {
                let m = Message::parse(b.clone(), &Limits::default()).unwrap();
                Some(String::from_utf8_lossy(m.top_via().unwrap().branch.unwrap()).into_owned())
            }
            _ => None,
        })
        .unwrap();
    out.clear();
    call.on_response(response(&br, 180), t0 + ms(1050), &mut out);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::FirstProvisional(t, d) if &**t == "t1" && *d == ms(50)))
    );
    out.clear();
    call.on_timer(t0 + ms(1200), &mut out);
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Report(_, Outcome::Overdue)))
    );
}
