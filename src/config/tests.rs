//! The rules file as an operator writes it: strictness, positions, every error at once.

use super::*;
use std::path::Path;

fn shipped() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("routing-rules");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Inserts `line` after the 0-based line `after` (None: at the top); returns the new line's 1-based number.
fn insert_after(text: &str, after: Option<usize>, line: &str) -> (String, usize) {
    let mut lines: Vec<&str> = text.lines().collect();
    let at = after.map_or(0, |i| i + 1);
    lines.insert(at, line);
    (lines.join("\n"), at + 1)
}

fn errors(text: &str) -> Vec<Diagnostic> {
    let diags = read(text, "t.toml").expect_err("expected refusal");
    diags
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

/// (line, column, message fragment) of each error, for compact assertions.
fn positions(text: &str) -> Vec<(usize, usize, String)> {
    errors(text)
        .into_iter()
        .map(|d| (d.line, d.column, d.message))
        .collect()
}

#[test]
fn an_unknown_key_anywhere_in_a_shipped_file_is_refused_at_its_line() {
    for (name, text) in shipped() {
        let header = |h: &str| text.lines().position(|l| l.trim() == h);
        let places = [
            ("top", None),
            ("[defaults]", header("[defaults]")),
            ("[health]", header("[health]")),
            ("[[targets]]", header("[[targets]]")),
            ("[[routes]]", header("[[routes]]")),
            ("[default_route]", header("[default_route]")),
        ];
        for (place, after) in places {
            if place != "top" && after.is_none() {
                continue;
            }
            let (bad, line) = insert_after(&text, after, "atempt_timeout_msec = 1000");
            let errs = errors(&bad);
            assert_eq!(errs.len(), 1, "{name} {place}: {errs:#?}");
            assert_eq!(
                (errs[0].line, errs[0].column),
                (line, 1),
                "{name} {place}: {errs:#?}"
            );
            assert!(
                errs[0]
                    .message
                    .contains("unknown key `atempt_timeout_msec`"),
                "{}",
                errs[0]
            );
        }
    }
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    let text = "listen = [\"udp:127.0.0.1:5060\"]\n[defaults]\natempt_timeout_ms = 5\n";
    let errs = errors(text);
    let typo = errs
        .iter()
        .find(|d| d.message.contains("atempt"))
        .expect("typo reported");
    assert_eq!((typo.line, typo.column), (3, 1));
    assert!(
        typo.message.contains("did you mean `attempt_timeout_ms`?"),
        "{typo}"
    );
}

const MANY_ERRORS: &str = r#"listen = ["udp:127.0.0.1:5060", "sctp:127.0.0.1:5060"]
bogus = 1
[defaults]
attempt_timeout_ms = "1000"
failover_codes = ["486", "7xx"]
[health]
probe_jitter_percent = 150
[[targets]]
id = "a"
uri = "sip:psap.example.com:5060"
failure_domain = "x"
[[targets]]
id = "a"
uri = "sip:127.0.0.1"
failure_domain = "y"
colour = "red"
[[targets]]
id = "line"
tel = "+1 978 538 6180"
gateway = "nowhere"
failure_domain = "z"
[[targets]]
id = "line2"
tel = "+15555550100"
gateway = "line3"
failure_domain = "z"
[[targets]]
id = "line3"
tel = "+15555550101"
gateway = "a"
failure_domain = "z"
[[targets]]
id = "nofd"
uri = "sip:[::1]:5071"
[[routes]]
id = "r"
chain = []
sources = ["10.0.0.1/8"]
[[routes]]
id = "r"
chain = ["a", "ghost", "a"]
"#;

#[test]
fn a_file_with_many_errors_reports_every_one_at_its_position() {
    let got = positions(MANY_ERRORS);
    let expected: &[(usize, usize, &str)] = &[
        (1, 1, "missing [default_route]"),
        (1, 33, "transport `sctp`"),
        (2, 1, "unknown key `bogus` at the top level"),
        (
            4,
            22,
            "`attempt_timeout_ms` must be an integer, not a string",
        ),
        (5, 26, "`7xx` is not a SIP status code"),
        (7, 24, "`probe_jitter_percent` must be between 0 and 100"),
        (10, 7, "host must be an IP literal"),
        (13, 6, "duplicate target id `a` (first on line 8)"),
        (16, 1, "unknown key `colour` in [[targets]]"),
        (19, 7, "`+1 978 538 6180` is not a phone number"),
        (20, 11, "gateway `nowhere` is not a target id"),
        (25, 11, "gateway `line3` is a tel target"),
        (32, 1, "[[targets]] entry is missing `failure_domain`"),
        (37, 9, "`chain` is empty"),
        (38, 12, "has host bits set; did you mean 10.0.0.0/8?"),
        (40, 6, "duplicate route id `r` (first on line 35)"),
        (41, 15, "unknown target id `ghost`"),
        (41, 24, "target `a` appears twice"),
    ];
    let mut missing = Vec::new();
    for (line, col, frag) in expected {
        if !got
            .iter()
            .any(|(l, c, m)| l == line && c == col && m.contains(frag))
        {
            missing.push((line, col, frag));
        }
    }
    assert!(missing.is_empty(), "missing {missing:?}\ngot {got:?}");
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected extra errors: {got:#?}"
    );
}

const MINIMAL: &str = r#"listen = ["udp:127.0.0.1:5060"]
[[targets]]
id = "a"
uri = "sip:127.0.0.1:5071"
failure_domain = "site-a"
[[targets]]
id = "b"
uri = "sip:127.0.0.1:5072"
failure_domain = "site-a"
[default_route]
chain = ["a", "b"]
"#;

#[test]
fn syntax_errors_are_all_reported_and_stop_the_checks() {
    let text = "listen = [\"udp:127.0.0.1:5060\"\n[defaults]\nattempt_timeout_ms = \nbogus = 1\n";
    let errs = errors(text);
    assert!(
        errs.iter().all(|d| d.message.starts_with("TOML syntax")),
        "{errs:#?}"
    );
    assert!(errs.iter().any(|d| d.line == 3), "{errs:#?}");
    assert!(errs.len() >= 2, "{errs:#?}");
}

#[test]
fn fate_sharing_and_a_chain_longer_than_the_deadline_are_warnings() {
    let text = MINIMAL.replace(
        "[default_route]",
        "[default_route]\ncall_deadline_ms = 1500",
    );
    let (_, warnings) = read(&text, "t.toml").expect("warnings do not refuse a file");
    let got: Vec<_> = warnings
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(warnings.len(), 2, "{got:#?}");
    assert!(warnings.iter().all(|d| d.severity == Severity::Warning));
    assert_eq!((got[0].0, got[0].1), (10, 1), "{got:#?}");
    assert!(
        got[0]
            .2
            .contains("attempt_timeout_ms 1000 x 2 targets exceeds call_deadline_ms 1500")
    );
    assert_eq!((got[1].0, got[1].1), (12, 15), "{got:#?}");
    assert!(
        got[1]
            .2
            .contains("last resort shares fate with the first choice"),
        "{got:#?}"
    );
}

#[test]
fn a_tel_last_resort_shares_fate_through_its_gateway() {
    let text = MINIMAL.replace(
        "[default_route]\nchain = [\"a\", \"b\"]",
        "[[targets]]\nid = \"line\"\ntel = \"+15555550100\"\ngateway = \"b\"\nfailure_domain = \"msp\"\n\
         [default_route]\nchain = [\"a\", \"line\"]",
    );
    let (_, warnings) = read(&text, "t.toml").unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].message.contains("failure_domain `site-a`"),
        "{}",
        warnings[0]
    );
}

#[test]
fn missing_sections_and_keys_are_reported_at_the_start() {
    let got = positions("[[targets]]\nid = \"a\"\n");
    assert!(
        got.iter()
            .any(|(l, c, m)| (*l, *c) == (1, 1) && m.contains("missing `listen`"))
    );
    assert!(
        got.iter()
            .any(|(l, c, m)| (*l, *c) == (1, 1) && m.contains("missing [default_route]"))
    );
    assert!(
        got.iter()
            .any(|(l, _, m)| *l == 1 && m.contains("needs `uri")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|(l, _, m)| *l == 1 && m.contains("missing `failure_domain`")),
        "{got:#?}"
    );
}

#[test]
fn defaults_fill_every_unset_key_and_overrides_win() {
    let (file, _) = read(MINIMAL, "t.toml").unwrap();
    assert_eq!(file.defaults.attempt_timeout_ms, Some(1000));
    assert_eq!(file.defaults.ring_timeout_ms, Some(10_000));
    assert_eq!(file.defaults.call_deadline_ms, Some(30_000));
    let codes = vec![
        (408, 408),
        (480, 480),
        (486, 486),
        (500, 599),
        (600, 600),
        (603, 603),
    ];
    assert_eq!(file.defaults.failover_codes, Some(codes));
    assert_eq!(file.health.alive_codes, Some(vec![(200, 299)]));
    assert_eq!(file.health.probe_timeout_ms, Some(400));
    assert_eq!(file.emergency_numbers, ["911", "112"]);
    let text = MINIMAL.replacen(
        "[[targets]]",
        "[defaults]\nring_timeout_ms = 4000\n[[targets]]",
        1,
    );
    let (file, _) = read(&text, "t.toml").unwrap();
    assert_eq!(file.defaults.ring_timeout_ms, Some(4000));
    assert_eq!(file.defaults.attempt_timeout_ms, Some(1000));
}

#[test]
fn codes_are_single_codes_or_classes() {
    assert_eq!(parse_code("408"), Ok((408, 408)));
    assert_eq!(parse_code("5xx"), Ok((500, 599)));
    assert_eq!(parse_code("6XX"), Ok((600, 699)));
    for bad in ["700", "099", "40", "4x8", "x00", "4080", "", "+48"] {
        assert!(parse_code(bad).is_err(), "{bad}");
    }
}

#[test]
fn target_uris_are_ip_literals_with_a_default_port() {
    use values::parse_sip_uri;
    let addr = |s: &str| parse_sip_uri(s).map(|(_, a)| a.to_string());
    assert_eq!(addr("sip:127.0.0.1"), Ok("127.0.0.1:5060".into()));
    assert_eq!(addr("sip:127.0.0.1:5071"), Ok("127.0.0.1:5071".into()));
    assert_eq!(addr("sip:[::1]"), Ok("[::1]:5060".into()));
    assert_eq!(
        addr("sip:[2001:db8::5]:5072"),
        Ok("[2001:db8::5]:5072".into())
    );
    assert_eq!(
        parse_sip_uri("sip:psap@192.0.2.1").unwrap().0.as_deref(),
        Some("psap")
    );
    // sips: (TLS only; the default port is 5061) is accepted since TLS targets exist.
    assert_eq!(addr("sips:192.0.2.1"), Ok("192.0.2.1:5061".into()));
    for bad in [
        "sip:psap.example.com",
        "sips:psap.example.com",
        "sip:::1",
        "sip:192.0.2.1;transport=tcp",
        "tel:+1",
        "sip:1.2.3.4:0",
    ] {
        assert!(parse_sip_uri(bad).is_err(), "{bad}");
    }
}

#[test]
fn cidr_blocks_match_v4_v6_and_v4_mapped_sources() {
    let c = |s: &str| Cidr::parse(s).unwrap();
    let ip = |s: &str| s.parse().unwrap();
    assert!(c("192.0.2.0/24").contains(ip("192.0.2.77")));
    assert!(!c("192.0.2.0/24").contains(ip("192.0.3.1")));
    assert!(c("192.0.2.0/24").contains(ip("::ffff:192.0.2.1")));
    assert!(c("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
    assert!(!c("2001:db8::/32").contains(ip("2001:db9::1")));
    assert!(!c("2001:db8::/32").contains(ip("192.0.2.1")));
    assert!(c("0.0.0.0/0").contains(ip("203.0.113.9")));
    assert!(c("198.51.100.7").contains(ip("198.51.100.7")));
    assert!(!c("198.51.100.7").contains(ip("198.51.100.8")));
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    assert!(
        Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8")
    );
    assert!(Cidr::parse("example.com/8").is_err());
}

#[test]
fn the_default_route_refuses_conditions() {
    let text = MINIMAL.replace(
        "chain = [\"a\", \"b\"]",
        "chain = [\"a\", \"b\"]\ndialled = [\"911\"]",
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!((errs[0].line, errs[0].column), (12, 11));
    assert!(
        errs[0]
            .message
            .contains("[default_route] takes no conditions"),
        "{}",
        errs[0]
    );
}
