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
