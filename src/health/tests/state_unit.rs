//! Explicit event sequences through the pure machine.

use crate::health::Outcome;
use crate::health::TestResult;
use crate::health::state::{
    Event, Machine, ProbeFailure, Reason, State, SuspectWhy, Thresholds, Transition,
};
use std::time::{Duration, Instant};

const OK: Event = Event::ProbeOk(200);
const TIMEOUT: Event = Event::ProbeFailed(ProbeFailure::Timeout);
const CALL_OK: Event = Event::Call(Outcome::Progress(180));
const CALL_503: Event = Event::Call(Outcome::FailureResponse(503));

fn th() -> Thresholds {
    Thresholds {
        down_after_probe_failures: 2,
        up_after_probe_successes: 2,
        down_after_call_failures: 3,
        probed: true,
        test_calls: false,
        suspect_hold: Duration::from_secs(1),
    }
}

/// Feeds the events one second apart; returns the states after each.
fn run(m: &mut Machine, th: &Thresholds, events: &[Event]) -> Vec<State> {
    let t0 = m.since();
    events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            m.on_event(*ev, th, t0 + Duration::from_secs(i as u64 + 1));
            m.state()
        })
        .collect()
}

#[test]
fn starts_up_with_startup_reason() {
    let m = Machine::new(Instant::now());
    assert_eq!(m.state(), State::Up);
    assert_eq!(m.last_reason(), Reason::Startup);
    assert!(State::Up.is_ready() && State::Suspect.is_ready());
    assert!(!State::Recovering.is_ready() && !State::Down.is_ready());
}

#[test]
fn down_after_two_probe_failures_and_transition_reported_once() {
    let mut m = Machine::new(Instant::now());
    let now = m.since();
    assert_eq!(m.on_event(TIMEOUT, &th(), now), None);
    let t = m.on_event(TIMEOUT, &th(), now);
    let reason = Reason::ProbeFailures {
        count: 2,
        last: ProbeFailure::Timeout,
    };
    let expected = Transition {
        from: State::Up,
        to: State::Down,
        reason,
    };
    assert_eq!(t, Some(expected));
    assert_eq!(m.on_event(TIMEOUT, &th(), now), None, "no second report");
    assert_eq!(m.counters().transitions, 1);
}

#[test]
fn probe_success_resets_probe_failure_run() {
    let mut m = Machine::new(Instant::now());
    let states = run(&mut m, &th(), &[TIMEOUT, OK, TIMEOUT, OK, TIMEOUT]);
    assert!(states.iter().all(|s| *s == State::Up));
}

#[test]
fn calls_fail_while_pings_answer() {
    let mut m = Machine::new(Instant::now());
    let states = run(&mut m, &th(), &[CALL_503, OK, CALL_503, OK, CALL_503]);
    assert_eq!(states.last(), Some(&State::Down));
    assert!(matches!(
        m.last_reason(),
        Reason::CallFailures { count: 3, .. }
    ));
}

#[test]
fn call_progress_resets_call_failure_run_but_probe_success_does_not() {
    let mut m = Machine::new(Instant::now());
    let states = run(
        &mut m,
        &th(),
        &[CALL_503, CALL_503, CALL_OK, CALL_503, CALL_503],
    );
    // A failed call makes it suspect at once; progress clears that; two failures never take it down.
    assert_eq!(
        states,
        [
            State::Suspect,
            State::Suspect,
            State::Up,
            State::Suspect,
            State::Suspect
        ]
    );
    let mut m = Machine::new(Instant::now());
    let states = run(&mut m, &th(), &[CALL_503, CALL_503, OK, CALL_503]);
    assert_eq!(states.last(), Some(&State::Down));
}

#[test]
fn recovery_goes_through_probation_then_a_call_brings_it_up() {
    let mut m = Machine::new(Instant::now());
    let states = run(&mut m, &th(), &[TIMEOUT, TIMEOUT, OK, TIMEOUT, OK, OK]);
    assert_eq!(
        states,
        [
            State::Up,
            State::Down,
            State::Down,
            State::Down,
            State::Down,
            State::Recovering
        ]
    );
    run(&mut m, &th(), &[CALL_OK]);
    assert_eq!(m.state(), State::Up);
    assert_eq!(m.last_reason(), Reason::CallProgress(180));
}

#[test]
fn one_failure_in_probation_sends_it_back_down() {
    for failure in [TIMEOUT, CALL_503, Event::Call(Outcome::AttemptTimeout)] {
        let mut m = Machine::new(Instant::now());
        run(&mut m, &th(), &[TIMEOUT, TIMEOUT, OK, OK]);
        assert_eq!(m.state(), State::Recovering);
        run(&mut m, &th(), &[failure]);
        assert_eq!(m.state(), State::Down, "{failure:?}");
    }
}

#[test]
fn probation_without_calls_graduates_on_further_probe_successes() {
    let mut m = Machine::new(Instant::now());
    let states = run(&mut m, &th(), &[TIMEOUT, TIMEOUT, OK, OK, OK, OK]);
    assert_eq!(states[3], State::Recovering);
    assert_eq!(states[4], State::Recovering);
    assert_eq!(states[5], State::Up);
}

#[test]
fn probation_after_failed_calls_needs_a_real_call() {
    let mut m = Machine::new(Instant::now());
    run(&mut m, &th(), &[CALL_503, CALL_503, CALL_503, OK, OK]);
    assert_eq!(m.state(), State::Recovering);
    run(&mut m, &th(), &[OK, OK, OK, OK]);
    assert_eq!(
        m.state(),
        State::Recovering,
        "probes cannot vouch for calls"
    );
    run(&mut m, &th(), &[CALL_OK]);
    assert_eq!(m.state(), State::Up);
}

#[test]
fn unprobed_target_comes_back_through_calls() {
    let th = Thresholds {
        probed: false,
        ..th()
    };
    let mut m = Machine::new(Instant::now());
    let states = run(
        &mut m,
        &th,
        &[CALL_503, CALL_503, CALL_503, CALL_OK, CALL_OK],
    );
    assert_eq!(
        &states[2..],
        [State::Down, State::Recovering, State::Up].as_slice()
    );
}

#[test]
fn a_real_calls_progress_brings_a_down_target_back_through_recovering() {
    let mut m = Machine::new(Instant::now());
    let states = run(&mut m, &th(), &[TIMEOUT, TIMEOUT, CALL_OK, CALL_OK]);
    assert_eq!(
        &states[1..],
        [State::Down, State::Recovering, State::Up].as_slice()
    );
}

#[test]
fn down_on_call_evidence_never_returns_on_probes_alone() {
    let mut m = Machine::new(Instant::now());
    let mut ev = vec![CALL_503, CALL_503, CALL_503];
    ev.extend([OK; 20]);
    let states = run(&mut m, &th(), &ev);
    assert_eq!(states[2], State::Down);
    assert_eq!(
        m.state(),
        State::Recovering,
        "probes move it to recovering, never up"
    );
    // A good test call (or a real call's progress) brings it back.
    let t = m.on_event(Event::TestCall(TestResult::Good), &th(), Instant::now());
    assert_eq!(t.map(|t| t.to), Some(State::Up));
}

#[test]
fn a_failed_test_call_takes_it_down_an_inconclusive_one_opens_half_open_trials() {
    let mut th = th();
    th.test_calls = true;
    let mut m = Machine::new(Instant::now());
    m.on_event(
        Event::TestCall(TestResult::CallPathFailed),
        &th,
        Instant::now(),
    );
    assert_eq!(m.state(), State::Down);
    run(&mut m, &th, &[OK, OK]);
    assert_eq!(m.state(), State::Recovering);
    assert!(!m.half_open(&th), "test calls decide");
    m.on_event(
        Event::TestCall(TestResult::Inconclusive),
        &th,
        Instant::now(),
    );
    assert!(m.half_open(&th), "inconclusive: one real call at a time");
    m.on_event(
        Event::TestCall(TestResult::MediaFailed),
        &th,
        Instant::now(),
    );
    assert_eq!(m.state(), State::Down);
}

#[test]
fn overdue_and_domain_make_an_up_target_suspect_and_progress_clears_it() {
    let mut m = Machine::new(Instant::now());
    let t = m.on_event(Event::Call(Outcome::Overdue), &th(), Instant::now());
    assert_eq!(t.map(|t| (t.from, t.to)), Some((State::Up, State::Suspect)));
    assert_eq!(m.last_reason(), Reason::Suspected(SuspectWhy::Overdue));
    run(&mut m, &th(), &[CALL_OK]);
    assert_eq!(m.state(), State::Up);
    m.on_event(Event::Suspect(SuspectWhy::Domain), &th(), Instant::now());
    assert_eq!(m.state(), State::Suspect);
    // Cut short by the deadline or cancelled: no evidence either way.
    m.on_event(Event::Call(Outcome::CutByDeadline), &th(), Instant::now());
    m.on_event(
        Event::Call(Outcome::CancelledByCaller),
        &th(),
        Instant::now(),
    );
    assert_eq!(m.state(), State::Suspect);
}

#[test]
fn counters_count_every_kind() {
    let mut m = Machine::new(Instant::now());
    m.probe_sent();
    m.probe_sent();
    run(&mut m, &th(), &[OK, TIMEOUT, CALL_OK, CALL_503]);
    let c = m.counters();
    assert_eq!(
        (
            c.probes_sent,
            c.probes_ok,
            c.probes_failed,
            c.calls_ok,
            c.calls_failed
        ),
        (2, 1, 1, 1, 1)
    );
}

#[test]
fn since_moves_only_on_transitions() {
    let t0 = Instant::now();
    let mut m = Machine::new(t0);
    m.on_event(TIMEOUT, &th(), t0 + Duration::from_secs(1));
    assert_eq!(m.since(), t0);
    m.on_event(TIMEOUT, &th(), t0 + Duration::from_secs(2));
    assert_eq!(m.since(), t0 + Duration::from_secs(2));
}

/// Rule 8: overdue suspicion ends at once on the overdue attempt's own progress (a false alarm),
/// after which overdue attempts raise none for the hold; another call's progress ends it only once
/// the hold has passed; a good test call ends it at once.
#[test]
fn overdue_suspicion_is_damped() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let overdue = Event::Call(Outcome::Overdue);
    let mut m = Machine::new(t0);
    m.on_event(overdue, &th(), ms(10));
    assert_eq!(m.state(), State::Suspect);
    m.on_event(CALL_OK, &th(), ms(20));
    assert_eq!(
        m.state(),
        State::Suspect,
        "another call's progress, 10 ms in: held"
    );
    m.on_event(Event::Call(Outcome::LateProgress(180)), &th(), ms(30));
    assert_eq!(
        m.state(),
        State::Up,
        "the overdue attempt itself progressed: false alarm"
    );
    m.on_event(overdue, &th(), ms(500));
    assert_eq!(m.state(), State::Up, "quiet just after a false alarm");
    m.on_event(overdue, &th(), ms(1031));
    assert_eq!(m.state(), State::Suspect, "the quiet is over");
    m.on_event(CALL_OK, &th(), ms(2031));
    assert_eq!(
        m.state(),
        State::Up,
        "another call's progress once the hold has passed"
    );
    m.on_event(overdue, &th(), ms(2040));
    assert_eq!(m.state(), State::Suspect, "no quiet after a real recovery");
    m.on_event(Event::TestCall(TestResult::Good), &th(), ms(2050));
    assert_eq!(m.state(), State::Up, "a good test call ends it at once");
    // Suspicion for another reason is not held: a failed call's suspicion ends on progress.
    m.on_event(CALL_503, &th(), ms(2060));
    assert_eq!(m.state(), State::Suspect);
    m.on_event(CALL_OK, &th(), ms(2061));
    assert_eq!(m.state(), State::Up);
}

#[test]
fn a_test_call_placed_while_the_target_was_unreachable_that_fails_after_it_came_back_is_dropped() {
    // Rule 9: the hung primary's test call, placed while it answered nothing (probes failing),
    // times out after the primary was restored and entered recovering.
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut th = th();
    th.test_calls = true;
    let mut m = Machine::new(ms(0));
    m.on_event(Event::TestCall(TestResult::CallPathFailed), &th, ms(0));
    assert_eq!(m.state(), State::Down);
    let placed_while_hung = ms(500);
    m.on_event(Event::ProbeFailed(ProbeFailure::Timeout), &th, ms(800));
    m.on_event(OK, &th, ms(1000));
    m.on_event(OK, &th, ms(2000));
    assert_eq!(m.state(), State::Recovering);
    for failed in [TestResult::CallPathFailed, TestResult::MediaFailed] {
        assert_eq!(m.judge_test_call(failed, placed_while_hung), None);
        assert_eq!(
            m.judge_test_call(failed, ms(900)),
            Some(failed),
            "placed once it answered probes again: it counts"
        );
    }
    assert_eq!(
        m.judge_test_call(TestResult::Good, placed_while_hung),
        Some(TestResult::Good),
        "a good one is good whenever placed"
    );
    // A PSAP that swallows INVITEs answers probes all along: its failed test call, placed while
    // it was down, still counts once it is recovering.
    let mut swallows = Machine::new(ms(0));
    swallows.on_event(Event::TestCall(TestResult::CallPathFailed), &th, ms(0));
    swallows.on_event(OK, &th, ms(1000));
    swallows.on_event(OK, &th, ms(2000));
    assert_eq!(swallows.state(), State::Recovering);
    assert_eq!(
        swallows.judge_test_call(TestResult::CallPathFailed, ms(500)),
        Some(TestResult::CallPathFailed)
    );
    // Outside recovering, a failure counts whenever it was placed.
    let mut up = Machine::new(ms(0));
    up.on_event(Event::ProbeFailed(ProbeFailure::Timeout), &th, ms(800));
    assert_eq!(
        up.judge_test_call(TestResult::CallPathFailed, ms(500)),
        Some(TestResult::CallPathFailed)
    );
}
