//! `[test_calls]` and a target's `test_uri`: defaults when absent, values when present, errors at
//! their lines, and what the snapshot makes of them.

use super::*;
use crate::routing::Rules;

const BASE: &str = r#"listen = ["udp:127.0.0.1:5060"]

[[targets]]
id = "a"
uri = "sip:127.0.0.1:5071"
failure_domain = "x"
test_uri = "sip:test@127.0.0.1:5071"

[[targets]]
id = "b"
uri = "sip:127.0.0.1:5072"
failure_domain = "y"

[[targets]]
id = "line"
tel = "+15555550100"
gateway = "b"
failure_domain = "y"

[default_route]
chain = ["a", "b", "line"]
"#;

fn with(extra: &str) -> Result<RulesFile, Vec<Diagnostic>> {
    super::tests_protect::read_with(BASE, extra)
}

fn first_error(extra: &str) -> (usize, String) {
    super::tests_protect::first_error_with(BASE, extra)
}

#[test]
fn absent_section_means_the_documented_defaults() {
    let f = with("").unwrap();
    assert_eq!(f.test_calls, TestCallSpec::default());
    assert!(f.test_calls.enabled);
    assert_eq!(f.test_calls.timeout_ms, 4000);
    assert_eq!(f.test_calls.max_in_flight, 8);
    assert_eq!(f.test_calls.media, TestCallMedia::Require);
    assert_eq!((f.test_calls.interval_ms, f.test_calls.rtp_packets), (0, 5));
    assert_eq!(
        f.targets[0].test_uri.as_deref(),
        Some("sip:test@127.0.0.1:5071")
    );
    assert_eq!(f.targets[1].test_uri, None);
}

#[test]
fn values_are_read_and_compiled() {
    let text = format!(
        "{BASE}\n[test_calls]\nenabled = false\ntimeout_ms = 2500\nmax_in_flight = 3\nmedia = \"ignore\"\n\
         interval_ms = 60000\nrtp_packets = 10\n"
    );
    let (rules, _) = Rules::parse(&text, "t.toml").unwrap();
    let s = &rules.test_calls;
    assert!(!s.enabled);
    assert_eq!(s.timeout, std::time::Duration::from_millis(2500));
    assert_eq!((s.max_in_flight, s.rtp_packets), (3, 10));
    assert_eq!(s.media, TestCallMedia::Ignore);
    assert_eq!(s.interval, Some(std::time::Duration::from_secs(60)));
    let uri = |id: &str| s.uri_for(rules.target(id).unwrap()).map(str::to_string);
    assert_eq!(uri("a").as_deref(), Some("sip:test@127.0.0.1:5071"));
    assert_eq!(uri("b").as_deref(), Some("urn:service:test.sos"));
    assert_eq!(
        uri("line"),
        None,
        "a business line gets no test call unless it names one"
    );
    let (rules, _) = Rules::parse(BASE, "t.toml").unwrap();
    assert_eq!(rules.test_calls.interval, None);
}

#[test]
fn mistakes_are_refused_at_their_line() {
    // BASE is 21 lines and a blank one separates it from the extra text: extra line 1 is line 23.
    let (line, msg) = first_error("[test_calls]\ntimout_ms = 10\n");
    assert_eq!(line, 24);
    assert!(msg.contains("did you mean `timeout_ms`"), "{msg}");
    let (line, msg) = first_error("[test_calls]\nmedia = \"maybe\"\n");
    assert_eq!(line, 24);
    assert!(msg.contains("\"require\" or \"ignore\""), "{msg}");
    let (_, msg) = first_error("[test_calls]\ninterval_ms = 500\n");
    assert!(msg.contains("0 (off) or at least 1000"), "{msg}");
    let (_, msg) = first_error("[test_calls]\nmax_in_flight = 0\n");
    assert!(msg.contains("between 1 and 1000"), "{msg}");
    let (_, msg) = first_error("[test_calls]\nrtp_packets = 0\n");
    assert!(msg.contains("between 1 and 100"), "{msg}");
    let bad_uri = BASE.replace("sip:test@127.0.0.1:5071", "http://x");
    let diags = read(&bad_uri, "t.toml").expect_err("bad test_uri");
    assert_eq!(diags[0].line, 7);
    assert!(
        diags[0].message.contains("`test_uri` must be"),
        "{}",
        diags[0].message
    );
    let spaced = BASE.replace("sip:test@127.0.0.1:5071", "sip:a b@x");
    assert!(read(&spaced, "t.toml").is_err());
}
