//! Property tests of the pure machine against a reference model written differently: the model
//! keeps the raw history of events since the last transition and counts trailing runs in it.

use crate::health::Outcome;
use crate::health::state::{Event, Machine, ProbeFailure, State, Thresholds};
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (200u16..300).prop_map(Event::ProbeOk),
        Just(Event::ProbeFailed(ProbeFailure::Timeout)),
        Just(Event::ProbeFailed(ProbeFailure::TransportError)),
        (300u16..700).prop_map(|c| Event::ProbeFailed(ProbeFailure::Code(c))),
        (100u16..300).prop_map(|c| Event::Call(Outcome::Progress(c))),
        Just(Event::Call(Outcome::TransportError)),
        Just(Event::Call(Outcome::AttemptTimeout)),
        Just(Event::Call(Outcome::RingTimeout)),
        (400u16..700).prop_map(|c| Event::Call(Outcome::FailureResponse(c))),
    ]
}

fn thresholds() -> impl Strategy<Value = Thresholds> {
    (1u32..6, 1u32..6, 1u32..6, any::<bool>()).prop_map(|(d, u, c, probed)| Thresholds {
        down_after_probe_failures: d,
        up_after_probe_successes: u,
        down_after_call_failures: c,
        probed,
        test_calls: false,
        suspect_hold: std::time::Duration::from_secs(1),
    })
}

fn is_probe(e: &Event) -> bool {
    !matches!(e, Event::Call(_))
}
fn is_call(e: &Event) -> bool {
    matches!(e, Event::Call(_))
}
fn is_ok(e: &Event) -> bool {
    match e {
        Event::ProbeOk(_) => true,
        Event::ProbeFailed(_) => false,
        Event::Call(o) => !o.is_failure(),
        Event::Suspect(_) => false,
        Event::TestCall(r) => *r == crate::health::TestResult::Good,
    }
}

/// Length of the trailing run of events of one kind (ignoring the other kind) that match `ok`.
fn trailing(history: &[Event], kind: fn(&Event) -> bool, ok: bool) -> u32 {
    history
        .iter()
        .rev()
        .filter(|e| kind(e))
        .take_while(|e| is_ok(e) == ok)
        .count() as u32
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Safety (no early flip) and liveness (no late flip) of every rule, for random thresholds.
    /// The trailing-run model also checks that a success of one kind resets the failure run of
    /// that kind only (and a failure resets the success run).
    #[test]
    fn invariant1_no_down_before_threshold_failures_no_up_before_threshold_successes(
        th in thresholds(),
        events in proptest::collection::vec(event(), 0..200),
    ) {
        let t0 = Instant::now();
        let mut m = Machine::new(t0);
        let mut history: Vec<Event> = Vec::new(); // since the last transition
        let mut last_call_failed = false;
        let mut down_by_probes = true;
        for (i, ev) in events.iter().enumerate() {
            let before = m.state();
            let now = t0 + Duration::from_millis(i as u64);
            let t = m.on_event(*ev, &th, now);
            history.push(*ev);
            let probe_fails = trailing(&history, is_probe, false);
            let probe_oks = trailing(&history, is_probe, true);
            let call_fails = trailing(&history, is_call, false);
            let prev_call_failed = last_call_failed;
            if is_call(ev) {
                last_call_failed = !is_ok(ev);
            }
            prop_assert_eq!(t.is_some(), m.state() != before);
            if let Some(t) = t {
                prop_assert_eq!((t.from, t.to), (before, m.state()));
                prop_assert_eq!(m.since(), now);
                match (before, m.state()) {
                    (State::Up | State::Suspect, State::Down) => prop_assert!(
                        (is_probe(ev) && probe_fails >= th.down_after_probe_failures)
                            || (is_call(ev) && call_fails >= th.down_after_call_failures),
                        "early down: {:?}", history),
                    // Rule 2: doubt from a failed call; any progress ends it.
                    (State::Up, State::Suspect) => prop_assert!(is_call(ev) && !is_ok(ev)),
                    (State::Suspect, State::Up) => prop_assert!(is_call(ev) && is_ok(ev)),
                    (State::Down, State::Recovering) => prop_assert!(
                        (is_probe(ev) && probe_oks >= th.up_after_probe_successes)
                            || (is_call(ev) && is_ok(ev)),
                        "early recovery: {:?}", history),
                    // Rule 4: back up on call evidence; on probes only when probes took it down
                    // and no call failed since.
                    (State::Recovering, State::Up) => prop_assert!(
                        (is_call(ev) && is_ok(ev))
                            || (is_probe(ev) && probe_oks >= th.up_after_probe_successes
                                && !prev_call_failed && down_by_probes),
                        "early up: {:?}", history),
                    (State::Recovering, State::Down) => prop_assert!(!is_ok(ev)),
                    other => prop_assert!(false, "forbidden transition {:?}", other),
                }
                if m.state() == State::Down {
                    down_by_probes = is_probe(ev);
                }
                let suspicion_only = matches!(
                    (before, m.state()),
                    (State::Up, State::Suspect) | (State::Suspect, State::Up)
                );
                if !suspicion_only {
                    history.clear();
                }
            } else {
                match m.state() {
                    State::Up | State::Suspect => {
                        prop_assert!(probe_fails < th.down_after_probe_failures, "late down");
                        prop_assert!(call_fails < th.down_after_call_failures, "late down");
                    }
                    State::Down => {
                        prop_assert!(probe_oks < th.up_after_probe_successes, "late recovery");
                        prop_assert!(!(is_call(ev) && is_ok(ev)), "late recovery");
                    }
                    State::Recovering => {
                        prop_assert!(history.iter().all(is_ok), "failure kept recovering");
                        prop_assert!(history.iter().all(is_probe), "call kept recovering");
                        prop_assert!(
                            last_call_failed || !down_by_probes
                                || probe_oks < th.up_after_probe_successes,
                            "late up"
                        );
                    }
                }
            }
        }
        let c = m.counters();
        let probes = events.iter().filter(|e| is_probe(e)).count() as u64;
        prop_assert_eq!(c.probes_ok + c.probes_failed, probes);
        prop_assert_eq!(c.calls_ok + c.calls_failed, events.len() as u64 - probes);
    }

    /// In `Up`, failure runs shorter than the threshold separated by one success of the same kind
    /// never take the target down, however many there are.
    #[test]
    fn invariant1_same_kind_success_resets_the_failure_run(
        th in thresholds(),
        runs in proptest::collection::vec((0u32..6, any::<bool>()), 0..50),
    ) {
        let t0 = Instant::now();
        let mut m = Machine::new(t0);
        for (len, probes) in runs {
            let (fail, ok, limit) = if probes {
                (Event::ProbeFailed(ProbeFailure::Timeout), Event::ProbeOk(200),
                 th.down_after_probe_failures)
            } else {
                (Event::Call(Outcome::AttemptTimeout), Event::Call(Outcome::Progress(180)),
                 th.down_after_call_failures)
            };
            for _ in 0..len.min(limit - 1) {
                m.on_event(fail, &th, t0);
            }
            m.on_event(ok, &th, t0);
            prop_assert_eq!(m.state(), State::Up, "a success ends suspicion too");
        }
    }
}

fn suspicion_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => Just(Event::Call(Outcome::Overdue)),
        3 => (180u16..200).prop_map(|c| Event::Call(Outcome::Progress(c))),
        3 => (180u16..200).prop_map(|c| Event::Call(Outcome::LateProgress(c))),
        1 => Just(Event::ProbeOk(200)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Rule 8 (damping): however overdue attempts and progress interleave (an overloaded but alive
    /// target), overdue suspicion starts at most once per `suspect_hold`, while each suspicion
    /// still needs only one overdue attempt outside the quiet time.
    #[test]
    fn overdue_suspicion_starts_at_most_once_per_hold(
        steps in proptest::collection::vec((0u64..400, suspicion_event()), 1..300),
    ) {
        let th = Thresholds {
            down_after_probe_failures: 2,
            up_after_probe_successes: 2,
            down_after_call_failures: 3,
            probed: true,
            test_calls: true,
            suspect_hold: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let mut m = Machine::new(t0);
        let mut now = t0;
        let mut starts: Vec<Instant> = Vec::new();
        let mut quiet_until = t0; // the model's quiet time after a false alarm
        for (dt, ev) in steps {
            now += Duration::from_millis(dt);
            let before = m.state();
            let t = m.on_event(ev, &th, now);
            if let Some(t) = t {
                if t.to == State::Suspect {
                    starts.push(now);
                }
                if t.from == State::Suspect && matches!(ev, Event::Call(Outcome::LateProgress(_))) {
                    quiet_until = now + th.suspect_hold;
                }
            }
            if before == State::Up && ev == Event::Call(Outcome::Overdue) && now >= quiet_until {
                prop_assert_eq!(m.state(), State::Suspect, "an overdue attempt outside the quiet time");
            }
        }
        for w in starts.windows(2) {
            prop_assert!(w[1] - w[0] >= th.suspect_hold, "suspicion restarted after {:?}", w[1] - w[0]);
        }
    }
}
