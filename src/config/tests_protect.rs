//! `[limits]`, `[overload]` and `[[acl]]`: defaults when absent, values when present, and errors at
//! their lines.

use super::*;

const BASE: &str = r#"listen = ["udp:127.0.0.1:5060"]

[[targets]]
id = "a"
uri = "sip:127.0.0.1:5071"
failure_domain = "x"

[default_route]
chain = ["a"]
"#;

fn with(extra: &str) -> Result<RulesFile, Vec<Diagnostic>> {
    read(&format!("{BASE}\n{extra}"), "t.toml").map(|(f, _)| f)
}

fn first_error(extra: &str) -> (usize, String) {
    let diags = with(extra).expect_err("expected refusal");
    let d = diags
        .iter()
        .find(|d| d.severity == Severity::Error)
        .unwrap();
    (d.line, d.message.clone())
}

#[test]
fn absent_sections_mean_the_documented_defaults() {
    let f = with("").unwrap();
    assert_eq!(f.protection, ProtectionSpec::default());
    assert_eq!(f.protection.overload.non_emergency_calls_max, 2000);
    assert_eq!(f.protection.limits.tcp_message_deadline_ms, 10_000);
}

#[test]
fn values_are_read() {
    let f = with(
        "[limits]\ntcp_connections_per_source = 3\ntcp_message_deadline_ms = 500\n\
         [overload]\nnon_emergency_calls_max = 5\ncalls_max = 50\ntrusted_sources = [\"10.0.0.0/8\"]\n\
         [[acl]]\nlisten = \"udp:127.0.0.1:5060\"\nallow = [\"192.0.2.0/24\"]\nemergency_from_unlisted = \"reject\"\n",
    )
    .unwrap();
    let p = f.protection;
    assert_eq!(p.limits.tcp_connections_per_source, 3);
    assert_eq!(p.overload.calls_max, 50);
    assert_eq!(p.overload.trusted_sources.len(), 1);
    assert_eq!(p.acl.len(), 1);
    assert_eq!(p.acl[0].emergency_from_unlisted, UnlistedEmergency::Reject);
}

#[test]
fn mistakes_are_refused_at_their_line() {
    // BASE is 9 lines and a blank one separates it from the extra text: extra line 1 is line 11.
    let (line, msg) = first_error("[limits]\nmax_headerz = 10\n");
    assert_eq!(line, 12);
    assert!(msg.contains("max_headerz"), "{msg}");
    let (line, msg) = first_error("[overload]\nnon_emergency_calls_max = 10\ncalls_max = 5\n");
    assert_eq!(line, 11);
    assert!(msg.contains("emergency calls would be shed"), "{msg}");
    let (line, msg) = first_error(
        "[[acl]]\nlisten = \"udp:127.0.0.1:5060\"\nallow = []\nemergency_from_unlisted = \"maybe\"\n",
    );
    assert_eq!(line, 14);
    assert!(msg.contains("\"accept\" or \"reject\""), "{msg}");
    let (line, msg) = first_error("[[acl]]\nlisten = \"tcp:127.0.0.1:5060\"\nallow = []\n");
    assert_eq!(line, 12);
    assert!(msg.contains("not one of the `listen` addresses"), "{msg}");
    let (_, msg) = first_error("[limits]\nmax_message_bytes = 10\n");
    assert!(msg.contains("between 1024"), "{msg}");
}
