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
    read_with(BASE, extra)
}

fn first_error(extra: &str) -> (usize, String) {
    first_error_with(BASE, extra)
}

/// `base` rules plus `extra` lines, read: shared by the tests of each optional section.
pub(super) fn read_with(base: &str, extra: &str) -> Result<RulesFile, Vec<Diagnostic>> {
    read(&format!("{base}\n{extra}"), "t.toml").map(|(f, _)| f)
}

/// The first error (line, message) of a file that must be refused.
pub(super) fn first_error_with(base: &str, extra: &str) -> (usize, String) {
    let diags = read_with(base, extra).expect_err("expected refusal");
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

#[test]
fn suspicion_defaults_values_and_errors_at_their_lines() {
    use crate::config::SuspicionSpec;
    assert_eq!(with("").unwrap().suspicion, SuspicionSpec::default());
    let f = with("[suspicion]\noverdue_factor = 0\ndomain_suspect_after = 5\n").unwrap();
    assert_eq!(f.suspicion.overdue_factor, 0);
    assert_eq!(f.suspicion.domain_suspect_after, 5);
    assert_eq!(
        f.suspicion.short_call_ms, 5_000,
        "unset keys keep their defaults"
    );
    let (line, msg) = first_error("[suspicion]\nshort_call_trigger = 6\nshort_call_window = 5\n");
    assert!(
        msg.contains("short_call_trigger exceeds short_call_window"),
        "{msg}"
    );
    assert!(line > 1);
    let (_, msg) = first_error("[suspicion]\noverdue_floor = 40\n");
    assert!(msg.contains("overdue_floor"), "{msg}");
    let (_, msg) = first_error("[suspicion]\nsystemic_share_percent = 0\n");
    assert!(msg.contains("between 1 and 100"), "{msg}");
}

#[test]
fn failure_domain_takes_a_tag_or_a_list_never_empty() {
    let base = BASE.replace(
        "failure_domain = \"x\"",
        "failure_domain = [\"site-a\", \"fw\"]",
    );
    let f = read_with(&base, "").unwrap();
    assert_eq!(f.targets[0].failure_domain, ["site-a", "fw"]);
    let bad = BASE.replace("failure_domain = \"x\"", "failure_domain = []");
    let (_, msg) = first_error_with(&bad, "");
    assert!(msg.contains("must not be empty"), "{msg}");
}
