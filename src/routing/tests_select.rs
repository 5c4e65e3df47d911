//! Route selection, emergency classification, timers and Request-URIs, on a small rules file.

use super::*;

const RULES: &str = r#"listen = ["udp:127.0.0.1:5060"]
[defaults]
attempt_timeout_ms = 800
failover_codes = ["486", "5xx"]
[emergency]
numbers = ["911", "112"]
[[targets]]
id = "a"
uri = "sip:127.0.0.1:5071"
failure_domain = "site-a"
[[targets]]
id = "b"
uri = "sip:[::1]:5072"
transport = "tcp"
failure_domain = "site-b"
[[targets]]
id = "gw"
uri = "sip:127.0.0.1:5073"
transport = "tcp"
failure_domain = "pstn"
[[targets]]
id = "line"
tel = "+15555550100"
gateway = "gw"
failure_domain = "msp"
[[targets]]
id = "named"
uri = "sip:psap@127.0.0.1:5074"
failure_domain = "site-c"
[[routes]]
id = "fire"
chain = ["b", "line"]
service_urns = ["urn:service:sos.fire"]
ring_timeout_ms = 5000
[[routes]]
id = "trunk-v4"
chain = ["a", "line"]
sources = ["192.0.2.0/24", "198.51.100.7"]
dialled = ["911"]
[[routes]]
id = "trunk-v6"
chain = ["b", "line"]
sources = ["2001:db8::/32"]
[[routes]]
id = "north-shore"
chain = ["a", "b", "line"]
caller_prefixes = ["+1978", "+1351"]
failover_codes = []
[[routes]]
id = "tagged"
chain = ["b", "a", "line"]
headers = { "X-Trunk-Group" = "boston", "Priority" = "emergency" }
[[routes]]
id = "sos"
chain = ["a", "b", "line"]
service_urns = ["urn:service:sos"]
[default_route]
chain = ["a", "line"]
call_deadline_ms = 9000
"#;

fn rules() -> Rules {
    let (rules, warnings) = Rules::parse(RULES, "t.toml").unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(warnings.is_empty(), "{warnings:#?}");
    rules
}

fn call(ruri: &str, source: &str) -> CallFacts {
    CallFacts {
        request_uri: ruri.as_bytes().to_vec(),
        caller: None,
        source: source.parse().unwrap(),
        headers: Vec::new(),
    }
}

fn route_of(rules: &Rules, facts: &CallFacts) -> String {
    rules.select(facts).route.id.to_string()
}

#[test]
fn service_urns_match_themselves_and_deeper_labels_only() {
    let r = rules();
    let at = |ruri: &str| route_of(&r, &call(ruri, "127.0.0.1"));
    assert_eq!(at("urn:service:sos.fire"), "fire");
    assert_eq!(at("urn:service:sos.fire.wildland"), "fire");
    assert_eq!(at("URN:Service:SOS.Fire"), "fire");
    assert_eq!(at("urn:service:sos"), "sos");
    assert_eq!(at("urn:service:sos.police"), "sos");
    assert_eq!(at("urn:service:sosx"), "default");
    assert_eq!(at("urn:service:sos.firefighter"), "sos");
    assert_eq!(at("urn:service:counseling"), "default");
    let c = call("urn:service:sos.fire", "127.0.0.1");
    let sel = r.select(&c);
    assert!(sel.emergency);
    let why = sel.explain(&c);
    assert!(
        why.contains("service urn:service:sos.fire matched service_urns urn:service:sos.fire"),
        "{why}"
    );
    assert_eq!(
        sel.reason.to_string(),
        "route `fire`: service matched service_urns urn:service:sos.fire"
    );
}

#[test]
fn emergency_is_a_sos_urn_or_an_exact_emergency_number() {
    let r = rules();
    let em = |ruri: &str| r.is_emergency(&call(ruri, "127.0.0.1"));
    assert!(em("urn:service:sos"));
    assert!(em("urn:service:sos.ambulance"));
    assert!(em("sip:911@127.0.0.1:5060"));
    assert!(em("sip:911;phone-context=+1@127.0.0.1;user=phone"));
    assert!(em("tel:112"));
    assert!(em("<sip:112@[::1]>"));
    assert!(!em("sip:+911@127.0.0.1"));
    assert!(!em("sip:9911@127.0.0.1"));
    assert!(!em("tel:+19785386180"));
    assert!(!em("urn:service:sosx"));
    assert!(!em("urn:service:counseling"));
    assert!(!em("sip:127.0.0.1"));
    assert!(!em("garbage"));
}

#[test]
fn conditions_of_different_kinds_must_all_match() {
    let r = rules();
    assert_eq!(
        route_of(&r, &call("sip:911@127.0.0.1", "192.0.2.9")),
        "trunk-v4"
    );
    assert_eq!(route_of(&r, &call("tel:911", "198.51.100.7")), "trunk-v4");
    assert_eq!(
        route_of(&r, &call("sip:911@127.0.0.1", "198.51.100.8")),
        "default"
    );
    assert_eq!(
        route_of(&r, &call("sip:912@127.0.0.1", "192.0.2.9")),
        "default"
    );
    assert_eq!(
        route_of(&r, &call("sip:911@127.0.0.1", "::ffff:192.0.2.9")),
        "trunk-v4"
    );
    let c = call("sip:911@127.0.0.1", "192.0.2.9");
    let sel = r.select(&c);
    assert_eq!(
        sel.reason.to_string(),
        "route `trunk-v4`: dialled 911 matched dialled; source matched sources 192.0.2.0/24"
    );
    assert_eq!(
        sel.explain(&c),
        "route `trunk-v4`: dialled 911 matched dialled; source 192.0.2.9 matched sources 192.0.2.0/24"
    );
}

#[test]
fn ipv6_sources_match_their_block() {
    let r = rules();
    assert_eq!(
        route_of(&r, &call("sip:alice@127.0.0.1", "2001:db8:5::1")),
        "trunk-v6"
    );
    assert_eq!(
        route_of(&r, &call("sip:alice@127.0.0.1", "2001:db9::1")),
        "default"
    );
}

#[test]
fn caller_prefixes_match_the_caller_number() {
    let r = rules();
    let mut c = call("sip:911@127.0.0.1", "127.0.0.1");
    assert_eq!(route_of(&r, &c), "default");
    c.caller = Some("+19785551234".into());
    assert_eq!(route_of(&r, &c), "north-shore");
    c.caller = Some("+13515551234".into());
    assert_eq!(route_of(&r, &c), "north-shore");
    c.caller = Some("19785551234".into());
    assert_eq!(route_of(&r, &c), "default");
}

#[test]
fn header_conditions_need_every_header_with_its_exact_value() {
    let r = rules();
    let mut c = call("sip:alice@127.0.0.1", "127.0.0.1");
    c.headers = vec![
        ("x-trunk-group".into(), b" boston ".to_vec()),
        ("priority".into(), b"emergency".to_vec()),
    ];
    assert_eq!(route_of(&r, &c), "tagged");
    c.headers[1].1 = b"urgent".to_vec();
    assert_eq!(route_of(&r, &c), "default");
    c.headers.push(("priority".into(), b"emergency".to_vec()));
    assert_eq!(
        route_of(&r, &c),
        "tagged",
        "any header of the name may carry the value"
    );
    c.headers[0].1 = b"Boston".to_vec();
    assert_eq!(route_of(&r, &c), "default", "values are compared exactly");
}

#[test]
fn the_first_matching_route_in_file_order_wins() {
    let r = rules();
    // Matches "fire" and "sos" (and "trunk-v6" by source): "fire" comes first.
    assert_eq!(
        route_of(&r, &call("urn:service:sos.fire", "2001:db8::1")),
        "fire"
    );
    // Matches "trunk-v6" (source) and "sos" (urn): "trunk-v6" comes first.
    assert_eq!(
        route_of(&r, &call("urn:service:sos", "2001:db8::1")),
        "trunk-v6"
    );
    let c = call("sip:bob@127.0.0.1", "127.0.0.1");
    let sel = r.select(&c);
    assert_eq!(&*sel.route.id, "default");
    assert_eq!(sel.explain(&c), "no route matched; default route");
    assert_eq!(sel.reason.to_string(), "no route matched; default route");
    assert!(!sel.emergency);
}

#[test]
fn a_route_without_conditions_matches_every_call() {
    let text = RULES.replace(
        "[default_route]",
        "[[routes]]\nid = \"all\"\nchain = [\"a\"]\n[default_route]",
    );
    let (r, _) = Rules::parse(&text, "t.toml").unwrap();
    let c = call("sip:bob@127.0.0.1", "127.0.0.1");
    let sel = r.select(&c);
    assert_eq!(&*sel.route.id, "all");
    assert!(
        sel.explain(&c).contains("no conditions"),
        "{}",
        sel.explain(&c)
    );
    assert!(
        sel.reason.to_string().contains("no conditions"),
        "{}",
        sel.reason
    );
}

#[test]
fn timers_and_failover_codes_come_from_defaults_unless_the_route_overrides() {
    let r = rules();
    let route = |id: &str| r.routes.iter().find(|x| &*x.id == id).unwrap().clone();
    let fire = route("fire");
    assert_eq!(fire.timers.attempt_timeout, Duration::from_millis(800));
    assert_eq!(fire.timers.ring_timeout, Duration::from_millis(5000));
    assert_eq!(fire.timers.call_deadline, Duration::from_millis(30_000));
    assert!(
        fire.failover.fails_over(486)
            && fire.failover.fails_over(503)
            && !fire.failover.fails_over(480)
    );
    assert!(
        !route("north-shore").failover.fails_over(503),
        "an empty list fails over on no final response"
    );
    assert_eq!(
        r.default_route.timers.call_deadline,
        Duration::from_millis(9000)
    );
    assert_eq!(
        r.default_route.timers.ring_timeout,
        Duration::from_millis(10_000)
    );
    assert_eq!(fire.line, 30);
}

#[test]
fn tel_targets_use_their_gateway_and_health_defaults_apply() {
    let r = rules();
    let line = r.target("line").unwrap();
    assert_eq!(line.next_hop, "127.0.0.1:5073".parse().unwrap());
    assert_eq!(line.transport, Proto::Tcp);
    assert_eq!(line.uri, "sip:127.0.0.1:5073");
    assert_eq!(r.target("a").unwrap().transport, Proto::Udp);
    assert_eq!(
        r.target("b").unwrap().next_hop,
        "[::1]:5072".parse().unwrap()
    );
    let h = &r.target("a").unwrap().health;
    assert!(h.probe);
    assert_eq!(
        (h.probe_interval, h.probe_timeout),
        (Duration::from_secs(1), Duration::from_millis(400))
    );
    assert_eq!(
        (
            h.probe_jitter_percent,
            h.down_after_probe_failures,
            h.up_after_probe_successes
        ),
        (20, 2, 2)
    );
    assert_eq!(
        (h.down_after_call_failures, h.alive_codes.clone()),
        (3, vec![(200, 299)])
    );
}

#[test]
fn per_target_health_overrides_only_what_it_names() {
    let text = RULES.replace(
        "failure_domain = \"site-a\"\n",
        "failure_domain = \"site-a\"\nhealth = { probe_timeout_ms = 900, alive_codes = [\"2xx\", \"404\"] }\n",
    );
    let (r, _) = Rules::parse(&text, "t.toml").unwrap();
    let h = &r.target("a").unwrap().health;
    assert_eq!(h.probe_timeout, Duration::from_millis(900));
    assert_eq!(h.alive_codes, vec![(200, 299), (404, 404)]);
    assert_eq!(h.probe_interval, Duration::from_secs(1));
    assert_eq!(
        r.target("b").unwrap().health.probe_timeout,
        Duration::from_millis(400)
    );
}

#[test]
fn request_uri_for_each_kind_of_target() {
    let r = rules();
    let ruri = |id: &str, orig: &str| {
        String::from_utf8(r.target(id).unwrap().request_uri_for(orig.as_bytes())).unwrap()
    };
    assert_eq!(ruri("line", "urn:service:sos"), "tel:+15555550100");
    assert_eq!(ruri("line", "sip:911@127.0.0.1"), "tel:+15555550100");
    assert_eq!(ruri("a", "urn:service:sos.fire"), "urn:service:sos.fire");
    assert_eq!(
        ruri("a", "sip:911@127.0.0.1:5060"),
        "sip:911@127.0.0.1:5071"
    );
    assert_eq!(
        ruri("a", "sip:911;phone-context=+1@127.0.0.1;user=phone"),
        "sip:911;phone-context=+1@127.0.0.1:5071"
    );
    assert_eq!(ruri("a", "tel:911"), "sip:911@127.0.0.1:5071");
    assert_eq!(ruri("a", "sip:127.0.0.1"), "sip:127.0.0.1:5071");
    assert_eq!(ruri("b", "sip:911@127.0.0.1"), "sip:911@[::1]:5072");
    assert_eq!(
        ruri("named", "sip:911@127.0.0.1"),
        "sip:psap@127.0.0.1:5074"
    );
}

#[test]
fn the_rules_facts_keep_only_the_headers_a_route_names_and_select_the_same() {
    let r = rules();
    let invite = |trunk: &str| {
        let text = format!(
            "INVITE sip:alice@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1\r\n\
             From: <sip:+16175550100@10.0.0.1>;tag=1\r\n\
             To: <sip:alice@127.0.0.1>\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 INVITE\r\n\
             x-TRUNK-group: {trunk}\r\n\
             Subject: not named by any route\r\n\
             PRIORITY:  emergency\r\n\
             Content-Length: 0\r\n\r\n"
        );
        crate::sip::Message::parse(text.into(), &crate::sip::Limits::default()).unwrap()
    };
    let source: IpAddr = "127.0.0.1".parse().unwrap();
    for (trunk, route) in [("boston", "tagged"), ("worcester", "default")] {
        let msg = invite(trunk);
        let all = CallFacts::from_message(&msg, source);
        let kept = r.facts(&msg, source);
        assert_eq!(all.headers.len(), 9);
        assert_eq!(
            kept.headers,
            vec![
                ("x-trunk-group".to_string(), trunk.as_bytes().to_vec()),
                ("priority".to_string(), b"emergency".to_vec()),
            ],
            "only the named headers, names lower-cased, in message order"
        );
        assert_eq!(route_of(&r, &all), route, "trunk {trunk}");
        assert_eq!(route_of(&r, &kept), route, "trunk {trunk}");
        assert_eq!(kept.caller, all.caller);
        assert_eq!(kept.request_uri, all.request_uri);
    }
}
