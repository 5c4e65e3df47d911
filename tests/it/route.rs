//! `sosrouter route` agrees with the proxy: for the same rules and the same call, the plan it
//! prints starts with the target the proxy sends the INVITE to, and with a target down (readiness
//! read from the running proxy's admin endpoint) it lists the targets in the order the proxy tries them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use crate::common::*;
use sosrouter::app::route::{RouteArgs, route};
use sosrouter::config::Proto;
use sosrouter::health::Outcome;
use sosrouter::routing::{Rules, WhatIf};

/// The lab rules plus a fire route (backup first) and a dialled-number route (business line first).
/// No call timer fires (`NO_TIMERS`): which target took a call is asserted.
fn rules_text(a: &Uas, b: &Uas, g: &Uas) -> String {
    lab_rules(a.addr, b.addr, g.addr, NO_TIMERS)
        + r#"
[[routes]]
id = "fire"
service_urns = ["urn:service:sos.fire"]
chain = ["psap-backup", "psap-primary", "business-line"]

[[routes]]
id = "by-number"
dialled = ["911"]
chain = ["business-line", "psap-primary", "psap-backup"]
"#
}

/// What `sosrouter route` answers.
async fn ask(rules: &str, args: RouteArgs) -> WhatIf {
    let rules = Rules::parse(rules, "route.toml").unwrap().0;
    route(&rules, &args).await.unwrap()
}

fn ids(w: &WhatIf) -> Vec<String> {
    w.plan.iter().map(|s| s.id.clone()).collect()
}

fn uri(u: &str) -> RouteArgs {
    RouteArgs {
        uri: Some(u.into()),
        caller: Some("+16175550123".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_names_the_target_the_proxy_sends_the_call_to() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let text = rules_text(&a, &b, &g);
    let p = proxy(&text, None).await;
    let addr = p.local_addr(Proto::Udp).unwrap();
    let who = |before: (usize, usize, usize)| {
        let now = (a.count("INVITE"), b.count("INVITE"), g.count("INVITE"));
        match (now.0 - before.0, now.1 - before.1, now.2 - before.2) {
            (1, 0, 0) => "psap-primary",
            (0, 1, 0) => "psap-backup",
            (0, 0, 1) => "business-line",
            other => panic!("one call, several targets: {other:?}"),
        }
    };
    let counts = || (a.count("INVITE"), b.count("INVITE"), g.count("INVITE"));
    let cases = [
        (
            "urn:service:sos".to_string(),
            uri("urn:service:sos"),
            "default",
        ),
        (
            "urn:service:sos.fire".to_string(),
            uri("urn:service:sos.fire"),
            "fire",
        ),
        (
            format!("sip:911@{addr}"),
            RouteArgs {
                dialled: Some("911".into()),
                ..Default::default()
            },
            "by-number",
        ),
    ];
    for (i, (ruri, args, route_id)) in cases.into_iter().enumerate() {
        let w = ask(&text, args).await;
        assert_eq!(w.route, route_id);
        assert!(w.emergency);
        let before = counts();
        let mut uac = Uac::new(Proto::Udp, addr).await;
        let out = uac.call(&ruri, &format!("agree-{i}"), WAIT).await;
        assert_eq!(out.final_code, 200);
        assert_eq!(
            who(before),
            w.plan[0].id,
            "{ruri}: route says {:?}",
            ids(&w)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_target_down_route_reads_the_proxy_and_gives_its_order() {
    let a = Uas::start(Behaviour::Reply(503)).await;
    let b = Uas::start(Behaviour::Reply(503)).await;
    let g = Uas::start(Behaviour::Reply(503)).await;
    let text = rules_text(&a, &b, &g);
    let dir = test_dir("route-order");
    let undelivered = dir.join("undelivered.jsonl");
    let p = proxy_with(
        &text,
        Some(undelivered.clone()),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    for _ in 0..3 {
        p.health.report("psap-backup", Outcome::TransportError);
    }
    // Outcomes reach health over a channel: wait until the applier has taken them in.
    eventually(WAIT, "backup down", || {
        p.health.status("psap-backup").unwrap().state == sosrouter::health::State::Down
    })
    .await;
    let w = ask(
        &text,
        RouteArgs {
            admin: Some(format!("http://{}", p.admin.unwrap())),
            ..uri("urn:service:sos.fire")
        },
    )
    .await;
    assert_eq!(ids(&w), ["psap-primary", "business-line", "psap-backup"]);
    assert_eq!(w.plan[2].readiness, "not_ready");
    // Every target fails, so the undelivered record lists the attempts in the order tried.
    let mut uac = Uac::new(Proto::Udp, p.local_addr(Proto::Udp).unwrap()).await;
    uac.call("urn:service:sos.fire", "order-1", WAIT).await;
    eventually(WAIT, "undelivered record", || {
        std::fs::read_to_string(&undelivered).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let line = std::fs::read_to_string(&undelivered).unwrap();
    let rec: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let tried: Vec<String> = rec["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tried,
        ids(&w),
        "the proxy tried them in the order route printed"
    );
    // Supposed readiness gives the same answer without a running proxy.
    let supposed = ask(
        &text,
        RouteArgs {
            down: vec!["psap-backup".into()],
            ..uri("urn:service:sos.fire")
        },
    )
    .await;
    assert_eq!(ids(&supposed), ids(&w));
}
