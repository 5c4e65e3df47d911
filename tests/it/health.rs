//! Health on the call path over real loopback sockets: probes take a hung PSAP out, real call
//! outcomes take out a PSAP that answers pings but fails calls, recovery brings traffic back, and the
//! operator's switch (through the admin HTTP endpoint) keeps calls off a target.
//!
//! Every test here but the last (the binary's prober thread, which has a clock of its own) runs
//! under paused tokio time: probes, their timeouts, call timers and the pauses
//! between calls all run on the test's clock, which moves only when every task waits. So how many
//! probe rounds pass between two calls is the same on every run, however loaded the machine, and
//! a responsive fake never looks silent to a 300 ms timer. Bounds on waiting are liveness bounds.
//! Whether a call waited on a timer is read from the proxy's outcome counters.

use crate::common::*;
use sosrouter::config::Proto;
use sosrouter::health::State;
use sosrouter::proxy::OutcomeKind;

/// The lab chain on fake answering points (the primary behaving as `primary`), fast probes and
/// timers, once the primary has been probed twice.
async fn lab_probed(primary: Behaviour) -> (Uas, Uas, Uas, sosrouter::app::Running) {
    lab_probed_with(primary, FAST_TIMERS).await
}

/// As [`lab_probed`], with these call timers.
async fn lab_probed_with(
    primary: Behaviour,
    timers: &str,
) -> (Uas, Uas, Uas, sosrouter::app::Running) {
    let a = Uas::start(primary).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let rules = lab_rules_with_health(a.addr, b.addr, g.addr, timers, FAST_PROBES);
    let p = proxy(&rules, None).await;
    eventually(WAIT, "primary probed", || a.count("OPTIONS") >= 2).await;
    (a, b, g, p)
}

fn state(p: &sosrouter::app::Running, id: &str) -> State {
    p.health.status(id).expect("known target").state
}

async fn call_ok(p: &sosrouter::app::Running, call_id: &str) {
    let addr = p.local_addr(Proto::Udp).unwrap();
    let mut uac = Uac::new(Proto::Udp, addr).await;
    let out = uac.call("urn:service:sos", call_id, WAIT).await;
    assert_eq!(out.final_code, 200, "call {call_id}");
}

#[tokio::test(start_paused = true)]
async fn a_primary_that_stops_answering_is_skipped_by_new_calls() {
    let (a, b, _g, p) = lab_probed(Behaviour::Answer).await;
    call_ok(&p, "before").await;
    assert_eq!(a.count("INVITE"), 1);

    a.set_muted(true); // hung: answers nothing, OPTIONS included
    eventually(WAIT, "primary down by probes", || {
        state(&p, "psap-primary") == State::Down
    })
    .await;
    for i in 0..5 {
        call_ok(&p, &format!("after-{i}")).await;
    }
    assert_eq!(a.count("INVITE"), 1, "no new call touched the hung primary");
    assert_eq!(b.count("INVITE"), 5);
    assert_eq!(
        p.proxy.counters.outcome(OutcomeKind::AttemptTimeout),
        0,
        "nobody waited on a timer"
    );
}

#[tokio::test(start_paused = true)]
async fn pings_answer_calls_fail_goes_down_by_call_outcomes_then_recovers() {
    let (a, b, _g, p) = lab_probed(Behaviour::Reply(503)).await;
    call_ok(&p, "fail-0").await;
    assert_eq!(real_invites(&a), 1);
    // One failed call makes it suspect and draws a test call, which fails too (503): down on call
    // evidence although pings answer.
    eventually(WAIT, "primary down by a failed test call", || {
        state(&p, "psap-primary") == State::Down
    })
    .await;
    assert!(test_invites(&a) >= 1, "the primary got a test call");
    // Probes still pass, but a target down on call evidence never comes back on OPTIONS alone:
    // no real call reaches it while its test calls fail.
    for i in 0..20 {
        call_ok(&p, &format!("more-{i}")).await;
    }
    assert_eq!(
        real_invites(&a),
        1,
        "no real call went to the failing primary"
    );
    assert_eq!(
        b.count("INVITE"),
        21,
        "every call was answered by the backup"
    );

    // Recovery: the primary answers again; a good test call brings it back, then real calls go to it.
    a.set_behaviour(Behaviour::Answer);
    eventually(WAIT, "primary up on a good test call", || {
        state(&p, "psap-primary") == State::Up
    })
    .await;
    let b_before = b.count("INVITE");
    for i in 0..5 {
        call_ok(&p, &format!("back-{i}")).await;
    }
    assert_eq!(
        b.count("INVITE"),
        b_before,
        "after recovery calls go to the primary again"
    );
    assert_eq!(real_invites(&a), 6);
}

/// Issue #11: a primary that keeps answering OPTIONS but swallows INVITEs is suspect as soon as one
/// attempt is overdue (4 x its usual time to ringing, at least 50 ms: here 200 ms, inside the 300 ms
/// attempt timer): new calls go to the backup at once, and its failed test call takes it down.
#[tokio::test(start_paused = true)]
async fn a_primary_swallowing_invites_is_suspect_at_its_first_overdue_attempt() {
    let (a, _b, _g, p) = lab_probed(Behaviour::Answer).await;
    for i in 0..3 {
        call_ok(&p, &format!("warm-{i}")).await; // its usual time to ringing is now known
    }
    a.set_behaviour(Behaviour::Silent); // OPTIONS still answered, INVITEs swallowed
    call_ok(&p, "first").await; // waits out its attempt timer, then the backup answers
    assert_eq!(p.proxy.counters.outcome(OutcomeKind::Overdue), 1);
    assert_ne!(state(&p, "psap-primary"), State::Up);
    for i in 0..10 {
        call_ok(&p, &format!("after-{i}")).await;
    }
    assert_eq!(
        real_invites(&a),
        4,
        "no new call went to the suspect primary"
    );
    assert_eq!(
        p.proxy.counters.outcome(OutcomeKind::AttemptTimeout),
        1,
        "only the first call waited"
    );
    eventually(WAIT, "down at its failed test call", || {
        state(&p, "psap-primary") == State::Down
    })
    .await;
}

/// INVITEs a fake answering point got from real calls, and from sosrouter's test calls.
fn real_invites(u: &Uas) -> usize {
    u.received()
        .iter()
        .filter(|r| r.method == "INVITE" && !r.request_uri.contains("test.sos"))
        .count()
}
fn test_invites(u: &Uas) -> usize {
    u.received()
        .iter()
        .filter(|r| r.method == "INVITE" && r.request_uri.contains("test.sos"))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_disabled_target_gets_no_calls_while_others_are_ready() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let rules = lab_rules_with_health(a.addr, b.addr, g.addr, FAST_TIMERS, FAST_PROBES);
    let p = proxy_with(&rules, None, Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = p.admin.expect("admin endpoint");
    let (code, body) = admin_call(admin, "POST", "/targets/psap-primary/disable").await;
    assert_eq!(code, 200, "{body}");
    for i in 0..5 {
        call_ok(&p, &format!("dis-{i}")).await;
    }
    assert_eq!(a.count("INVITE"), 0);
    assert_eq!(b.count("INVITE"), 5);
    let (code, json) = admin_call(admin, "GET", "/status").await;
    assert_eq!(code, 200);
    let targets = json["targets"].as_array().expect("targets array");
    let primary = targets
        .iter()
        .find(|t| t["id"] == "psap-primary")
        .expect("primary listed");
    assert_eq!(primary["enabled"], false, "{json}");
    let (code, _) = admin_call(admin, "POST", "/targets/nobody/disable").await;
    assert_eq!(code, 404);
    // Everything else down: the disabled target is still tried rather than failing an emergency call.
    b.set_behaviour(Behaviour::Reply(503));
    g.set_behaviour(Behaviour::Reply(503));
    call_ok(&p, "last-chance").await;
    assert_eq!(a.count("INVITE"), 1);
    let (code, _) = admin_call(admin, "POST", "/targets/psap-primary/enable").await;
    assert_eq!(code, 200);
}

/// Failover contract 3a over real sockets: the primary rings, then hangs (answers nothing, OPTIONS
/// included). Once probes take it down the ringing call goes to the backup at once; with a 30 s ring
/// timer, a final within the 15 s wait can only come from that.
#[tokio::test(start_paused = true)]
async fn a_call_ringing_at_a_primary_that_hangs_is_answered_by_the_backup() {
    let (a, b, _g, p) = lab_probed_with(Behaviour::RingForever, NO_TIMERS).await;
    let addr = p.local_addr(Proto::Udp).unwrap();
    let mut uac = Uac::new(Proto::Udp, addr).await;
    let inv = uac.invite(
        "urn:service:sos",
        "ringing-hang",
        "z9hG4bK-uac-ringing-hang",
    );
    uac.send(&inv).await;
    eventually(WAIT, "primary rings", || a.count("INVITE") == 1).await;
    a.set_muted(true);
    let out = uac.await_final(WAIT).await;
    assert_eq!(out.final_code, 200, "answered");
    assert!(
        out.provisional.contains(&180),
        "the primary's ringing was relayed first"
    );
    assert_eq!(b.count("INVITE"), 1, "the backup answered it");
    assert_eq!(state(&p, "psap-primary"), State::Down);
    assert_eq!(
        p.proxy.counters.outcome(OutcomeKind::RingTimeout),
        0,
        "no ring timer fired"
    );
}

/// Issue #11, item 6 over real sockets: three PSAPs behind one shared element (`failure_domain` lists
/// it) answer OPTIONS but swallow INVITEs. One emergency call tries each in turn (all fail on their
/// attempt timers) and reaches the business line; the three distinct failures raise ONE systemic
/// event naming the shared domain, its targets, the route now served by its last resort, and the
/// sentence for the public notice; `/status` shows the domain suspect and every PSAP suspect.
#[tokio::test(start_paused = true)]
async fn three_psaps_behind_one_shared_element_failing_calls_raise_one_systemic_alarm() {
    let psaps = [
        Uas::start(Behaviour::Silent).await,
        Uas::start(Behaviour::Silent).await,
        Uas::start(Behaviour::Silent).await,
    ];
    let g = Uas::start(Behaviour::Answer).await;
    let [a, b, c] = [psaps[0].addr, psaps[1].addr, psaps[2].addr];
    let gw = g.addr;
    let rules = format!(
        r#"
listen = ["udp:127.0.0.1:0"]

[defaults]
{FAST_TIMERS}

[health]
{FAST_PROBES}

[[targets]]
id = "psap-a"
uri = "sip:{a}"
failure_domain = ["site-a", "ngcs-east-firewall"]

[[targets]]
id = "psap-b"
uri = "sip:{b}"
failure_domain = ["site-b", "ngcs-east-firewall"]

[[targets]]
id = "psap-c"
uri = "sip:{c}"
failure_domain = ["site-c", "ngcs-east-firewall"]

[[targets]]
id = "pstn-gateway"
uri = "sip:{gw}"
failure_domain = "pstn"

[[targets]]
id = "business-line"
tel = "+15555550100"
gateway = "pstn-gateway"
failure_domain = "pstn"

[[routes]]
id = "north-shore"
service_urns = ["urn:service:sos"]
chain = ["psap-a", "psap-b", "psap-c", "business-line"]

[default_route]
chain = ["psap-a", "psap-b", "psap-c", "business-line"]
"#
    );
    let p = proxy(&rules, None).await;
    eventually(WAIT, "PSAPs probed", || {
        psaps.iter().all(|u| u.count("OPTIONS") >= 2)
    })
    .await;
    let mut events = p.events.subscribe();
    call_ok(&p, "through-the-firewall").await;
    assert_eq!(g.count("INVITE"), 1, "the business line answered");

    let mut systemic = vec![];
    while let Ok(ev) = tokio::time::timeout(QUIET, events.recv()).await {
        let ev = ev.unwrap();
        if ev.kind == sosrouter::events::Kind::Systemic {
            systemic.push(ev);
        }
    }
    assert_eq!(systemic.len(), 1, "one alarm: {systemic:?}");
    let ev = &systemic[0];
    assert_eq!(ev.target.as_deref(), Some("ngcs-east-firewall"));
    assert_eq!(ev.new.as_deref(), Some("raised"));
    for id in ["psap-a", "psap-b", "psap-c"] {
        assert!(ev.reason.contains(id), "sentence names {id}: {}", ev.reason);
        assert_eq!(state(&p, id), State::Suspect, "{id}");
    }
    assert!(ev.reason.contains("ngcs-east-firewall"), "{}", ev.reason);
    assert!(
        ev.reason.contains("north-shore"),
        "names the route: {}",
        ev.reason
    );
    let detail = ev.detail.as_ref().unwrap().to_string();
    assert!(
        detail.contains("last resort"),
        "route served by its last resort: {detail}"
    );
    assert!(detail.contains("attempt timeout"), "evidence: {detail}");
    let status = p.health.systemic_status().to_string();
    assert!(status.contains("ngcs-east-firewall"), "{status}");
    assert!(
        !status.contains("site-a"),
        "only the shared domain turned: {status}"
    );
}

/// `sosrouter run` probes from a thread of its own (`RunOptions::prober_thread`). Real time here:
/// that thread's clock is not the test's. Its probes reach a live target and go unanswered by a
/// dead one, which goes down; shutdown ends its task with every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_prober_on_a_thread_of_its_own_probes_and_ends_with_the_proxy() {
    let a = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let dead = dead_port().await;
    let rules = lab_rules_with_health(a.addr, dead, g.addr, FAST_TIMERS, FAST_PROBES);
    let (rules, _) = sosrouter::routing::Rules::parse(&rules, "test.toml").unwrap();
    let opts = sosrouter::app::RunOptions {
        prober_thread: true,
        ..Default::default()
    };
    let p = sosrouter::app::start(rules, &opts).await.unwrap();
    eventually(WAIT, "the live target probed", || a.count("OPTIONS") >= 2).await;
    eventually(WAIT, "the dead target down", || {
        state(&p, "psap-backup") == State::Down
    })
    .await;
    assert_eq!(state(&p, "psap-primary"), State::Up);
    assert!(
        p.shutdown(std::time::Duration::ZERO).await,
        "every task ended"
    );
    assert!(
        p.tasks.is_joined(),
        "the prober's task ended with the others: it sends no more probes"
    );
}
