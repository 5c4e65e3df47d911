//! The keyed store under reloads, and the handle's readiness and switch.

use super::{settings, sip_target};
use crate::health::state::{Event, ProbeFailure};
use crate::health::{Health, Outcome, State};
use crate::routing::{Readiness, Target};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

const UNIVERSE: usize = 8;

fn targets(present: &[bool], down_after: u32) -> Vec<Arc<Target>> {
    (0..UNIVERSE)
        .filter(|i| present[*i])
        .map(|i| {
            let mut t = (*sip_target(&format!("t{i}"), 5070 + i as u16)).clone();
            t.health.down_after_probe_failures = down_after;
            Arc::new(t)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Probe(usize, bool),
    Call(usize, bool),
    Switch(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..UNIVERSE, any::<bool>()).prop_map(|(i, ok)| Op::Probe(i, ok)),
        (0..UNIVERSE, any::<bool>()).prop_map(|(i, ok)| Op::Call(i, ok)),
        (0..UNIVERSE, any::<bool>()).prop_map(|(i, on)| Op::Switch(i, on)),
    ]
}

fn apply(h: &Health, op: &Op) {
    match *op {
        Op::Probe(i, ok) => {
            let ev = if ok {
                Event::ProbeOk(200)
            } else {
                Event::ProbeFailed(ProbeFailure::Timeout)
            };
            h.apply_probe_result(&format!("t{i}"), ev);
        }
        Op::Call(i, ok) => {
            let o = if ok {
                Outcome::Progress(180)
            } else {
                Outcome::FailureResponse(503)
            };
            h.report(&format!("t{i}"), o);
        }
        Op::Switch(i, on) => {
            h.set_enabled(&format!("t{i}"), on);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn invariant4_health_survives_rules_change_for_every_surviving_target_id(
        old in proptest::collection::vec(any::<bool>(), UNIVERSE),
        new in proptest::collection::vec(any::<bool>(), UNIVERSE),
        ops in proptest::collection::vec(op(), 0..80),
        after in proptest::collection::vec(op(), 0..20),
        new_down_after in 1u32..5,
    ) {
        let h = Health::from_targets(&targets(&old, 2));
        for o in &ops {
            apply(&h, o);
        }
        let before: HashMap<String, _> =
            h.snapshot().into_iter().map(|s| (s.id.clone(), s)).collect();
        let new_targets = targets(&new, new_down_after);
        h.rekey_targets(&new_targets);
        let snap = h.snapshot();
        let ids: Vec<String> = new_targets.iter().map(|t| t.id.to_string()).collect();
        prop_assert_eq!(snap.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), ids);
        for i in 0..UNIVERSE {
            let id = format!("t{i}");
            match (old[i], new[i]) {
                (_, false) => {
                    prop_assert!(h.status(&id).is_none());
                    prop_assert!(!h.set_enabled(&id, false));
                }
                (true, true) => {
                    let now = h.status(&id);
                    prop_assert_eq!(now.as_ref(), before.get(&id));
                }
                (false, true) => {
                    let s = h.status(&id).unwrap();
                    prop_assert_eq!(s.state, State::Up);
                    prop_assert!(s.enabled);
                    prop_assert_eq!(s.counters, Default::default());
                    prop_assert_eq!(s.last_reason, "start-up");
                }
            }
        }
        // The store keeps working after the reload (stale ids are ignored, not resurrected).
        for o in &after {
            apply(&h, o);
        }
        prop_assert_eq!(h.snapshot().len(), new_targets.len());
    }
}

#[test]
fn readiness_is_health_and_switch() {
    let h = Health::from_targets(&[sip_target("a", 5071)]);
    assert_eq!(h.readiness("a"), Readiness::Ready);
    assert_eq!(h.readiness("unknown"), Readiness::Ready, "start-up state");
    for _ in 0..3 {
        h.report("a", Outcome::AttemptTimeout);
    }
    assert_eq!(h.readiness("a"), Readiness::NotReady);
    assert!(h.set_enabled("a", false));
    assert_eq!(h.readiness("a"), Readiness::Disabled);
    assert!(h.set_enabled("a", true));
    assert_eq!(h.readiness("a"), Readiness::NotReady);
    assert!(!h.set_enabled("nope", true));
    let s = h.status("a").unwrap();
    assert_eq!(
        (s.state, s.readiness, s.counters.calls_failed),
        (State::Down, "not_ready", 3)
    );
    assert!(s.last_reason.contains("3 consecutive failed calls"));
}

#[test]
fn disabled_regardless_of_health_and_kept_across_reload() {
    let h = Health::from_targets(&[sip_target("a", 5071)]);
    h.set_enabled("a", false);
    assert_eq!(h.readiness("a"), Readiness::Disabled);
    let mut t = (*sip_target("a", 5072)).clone();
    t.health = settings();
    h.rekey_targets(&[Arc::new(t)]);
    assert_eq!(h.readiness("a"), Readiness::Disabled);
}

#[test]
fn health_is_clone_send_sync_debug() {
    fn check<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    check::<Health>();
    let h = Health::from_targets(&[sip_target("a", 5071)]);
    assert!(format!("{h:?}").contains("targets: 1"));
}

/// What happens to the one target in the half-open invariant test.
#[derive(Debug, Clone)]
enum Step {
    Probe(bool),
    /// A call is routed (and, if it gets the target, holds it until it ends).
    CallStarts,
    /// The oldest call in flight ends with this outcome on the target (progress or not).
    CallEnds(bool),
    Test(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<bool>().prop_map(Step::Probe),
        3 => Just(Step::CallStarts),
        3 => any::<bool>().prop_map(Step::CallEnds),
        1 => (0u8..4).prop_map(Step::Test),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Issue #11 invariant: a recovering target never has more than one real call in flight.
    /// Calls are routed through `readiness_for_call`; a call that got the target while it was
    /// recovering holds it until the call ends (`TrialOver`), whatever happens meanwhile.
    #[test]
    fn invariant5_a_recovering_target_never_has_more_than_one_real_call(
        test_calls: bool,
        steps in proptest::collection::vec(step(), 0..300),
    ) {
        let t = sip_target("t0", 5070);
        let h = Health::from_targets(std::slice::from_ref(&t));
        if test_calls {
            h.set_test_calls(Arc::new(|_: &str, _| {}), true);
        }
        // Calls in flight: whether each took the target while it was recovering.
        let mut calls: std::collections::VecDeque<(bool, Vec<crate::routing::TargetId>)> =
            Default::default();
        for s in steps {
            match s {
                Step::Probe(ok) => {
                    let ev = if ok { Event::ProbeOk(200) } else { Event::ProbeFailed(ProbeFailure::Timeout) };
                    h.apply_probe_result("t0", ev);
                }
                Step::CallStarts => {
                    let recovering = h.status("t0").unwrap().state == State::Recovering;
                    let mut trials = Vec::new();
                    let r = h.readiness_for_call("t0", &mut trials);
                    calls.push_back((recovering && r == Readiness::Ready, trials));
                }
                Step::CallEnds(progress) => {
                    if let Some((_, trials)) = calls.pop_front() {
                        let o = if progress { Outcome::Progress(180) } else { Outcome::AttemptTimeout };
                        h.report("t0", o);
                        for id in trials {
                            h.observe(&id, crate::health::Observation::TrialOver);
                        }
                    }
                }
                Step::Test(r) => {
                    use crate::health::TestResult::*;
                    let r = [Good, CallPathFailed, MediaFailed, Inconclusive][r as usize];
                    h.observe(
                        "t0",
                        crate::health::Observation::TestCall {
                            result: r,
                            placed_ago: std::time::Duration::ZERO,
                        },
                    );
                }
            }
            let trial_calls = calls.iter().filter(|(took, _)| *took).count();
            prop_assert!(trial_calls <= 1, "{} real calls on a recovering target", trial_calls);
        }
    }
}
