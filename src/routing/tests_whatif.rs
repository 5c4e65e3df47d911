//! `sosrouter route`'s answer: the same route and plan as the call path, rendered and serialized.

use super::whatif::{readiness_from_word, readiness_word};
use super::*;
use std::collections::HashMap;

const RULES: &str = r#"listen = ["udp:127.0.0.1:5060"]
[emergency]
numbers = ["911"]
[[targets]]
id = "psap-a"
uri = "sip:127.0.0.1:5071"
failure_domain = "site-a"
[[targets]]
id = "psap-b"
uri = "sip:127.0.0.1:5072"
transport = "tcp"
failure_domain = "site-b"
[[targets]]
id = "gw"
uri = "sip:127.0.0.1:5073"
failure_domain = "pstn"
[[targets]]
id = "line"
tel = "+15555550100"
gateway = "gw"
failure_domain = "pstn"
[[routes]]
id = "fire"
description = "fire calls go to site B first"
service_urns = ["urn:service:sos.fire"]
chain = ["psap-b", "psap-a", "line"]
attempt_timeout_ms = 500
failover_codes = ["486", "5xx", "603"]
[default_route]
chain = ["psap-a", "psap-b", "line"]
"#;

fn rules() -> Rules {
    Rules::parse(RULES, "w.toml").expect("valid").0
}

fn call(uri: &str) -> CallFacts {
    CallFacts {
        request_uri: uri.as_bytes().to_vec(),
        caller: Some("+16175550123".into()),
        source: "127.0.0.1".parse().unwrap(),
        headers: Vec::new(),
    }
}

fn ready(_: &str) -> Readiness {
    Readiness::Ready
}

#[test]
fn the_answer_names_the_route_why_and_every_target_in_order() {
    let r = rules();
    let w = what_if(&r, &call("urn:service:sos.fire"), &ready, "supposed");
    assert_eq!(w.route, "fire");
    assert!(w.emergency);
    assert!(w.reason.contains("fire"), "{}", w.reason);
    assert_eq!(
        w.description.as_deref(),
        Some("fire calls go to site B first")
    );
    assert_eq!(
        (w.attempt_timeout_ms, w.ring_timeout_ms, w.call_deadline_ms),
        (500, 10_000, 30_000)
    );
    assert_eq!(w.failover_codes, ["486", "5xx", "603"]);
    let ids: Vec<&str> = w.plan.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["psap-b", "psap-a", "line"]);
    let b = &w.plan[0];
    assert_eq!(
        (b.position, b.kind, b.transport.as_str()),
        (1, "sip", "tcp")
    );
    assert_eq!(
        b.request_uri, "urn:service:sos.fire",
        "the service URN travels with the call"
    );
    let line = &w.plan[2];
    assert_eq!(
        (line.kind, line.request_uri.as_str()),
        ("tel", "tel:+15555550100")
    );
    assert_eq!(line.next_hop, "127.0.0.1:5073");
    assert_eq!(line.gateway.as_deref(), Some("gw"));
    assert!(line.last_resort && !b.last_resort);
}

#[test]
fn supposed_readiness_reorders_the_plan_as_the_proxy_would() {
    let r = rules();
    let sup: HashMap<&str, Readiness> = [
        ("psap-a", Readiness::Disabled),
        ("psap-b", Readiness::NotReady),
    ]
    .into();
    let readiness = |id: &str| sup.get(id).copied().unwrap_or(Readiness::Ready);
    let c = call("sip:911@127.0.0.1:5060");
    let w = what_if(&r, &c, &readiness, "supposed");
    let ids: Vec<&str> = w.plan.iter().map(|s| s.id.as_str()).collect();
    let sel = r.select(&c);
    let plan: Vec<String> = plan(&r, &sel.route, &readiness)
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, plan);
    assert_eq!(ids, ["line", "psap-b", "psap-a"]);
    let words: Vec<&str> = w.plan.iter().map(|s| s.readiness).collect();
    assert_eq!(words, ["ready", "not_ready", "disabled"]);
    assert_eq!(w.route, "default");
    assert!(w.emergency, "911 is an emergency number");
    assert_eq!(w.plan[2].request_uri, "sip:911@127.0.0.1:5071");
}

#[test]
fn json_has_one_object_with_the_documented_fields() {
    let r = rules();
    let w = what_if(&r, &call("sip:411@127.0.0.1:5060"), &ready, "supposed");
    let v = serde_json::to_value(&w).unwrap();
    assert_eq!(v["route"], "default");
    assert_eq!(v["emergency"], false);
    assert_eq!(v["caller"], "+16175550123");
    assert_eq!(v["plan"].as_array().unwrap().len(), 3);
    for key in [
        "id",
        "kind",
        "request_uri",
        "next_hop",
        "transport",
        "failure_domain",
        "readiness",
        "last_resort",
    ] {
        assert!(!v["plan"][0][key].is_null(), "plan entry lacks {key}: {v}");
    }
    assert_eq!(v["plan"][0]["readiness"], "ready");
    assert_eq!(v["failover_codes"][0], "408");
}

#[test]
fn text_shows_route_reason_timers_and_one_line_per_target() {
    let r = rules();
    let sup = |id: &str| {
        if id == "psap-b" {
            Readiness::NotReady
        } else {
            Readiness::Ready
        }
    };
    let text = render_text(&what_if(
        &r,
        &call("urn:service:sos.fire"),
        &sup,
        "supposed",
    ));
    assert!(text.contains("emergency: EMERGENCY"), "{text}");
    assert!(text.contains("route:     fire (line"), "{text}");
    assert!(text.contains("why:       route `fire`"), "{text}");
    assert!(
        text.contains("attempt 500 ms, ring 10000 ms, deadline 30000 ms"),
        "{text}"
    );
    let plan: Vec<&str> = text.lines().skip_while(|l| *l != "plan:").skip(1).collect();
    assert_eq!(plan.len(), 3, "{text}");
    assert!(
        plan[0].contains("1. psap-a") && plan[0].contains("ready"),
        "{text}"
    );
    assert!(
        plan[1].contains("line") && plan[1].contains("via gw") && plan[1].contains("(last resort)"),
        "{text}"
    );
    assert!(
        plan[2].contains("psap-b")
            && plan[2].contains("not_ready")
            && plan[2].contains("tcp/127.0.0.1:5072"),
        "{text}"
    );
}

#[test]
fn readiness_words_round_trip() {
    for r in [Readiness::Ready, Readiness::NotReady, Readiness::Disabled] {
        assert_eq!(readiness_from_word(readiness_word(r)), Some(r));
    }
    assert_eq!(readiness_from_word("up"), None);
}
