//! Rules as the proxy sees them: the shipped files, route selection, timers, plans.

use super::*;
use crate::config::Severity;
use std::path::{Path, PathBuf};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("routing-rules")
}

fn shipped_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(rules_dir())
        .expect("routing-rules/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn lab() -> Rules {
    Rules::load(&rules_dir().join("lab.toml"))
        .expect("lab.toml is valid")
        .0
}

fn call(request_uri: &str) -> CallFacts {
    CallFacts {
        request_uri: request_uri.as_bytes().to_vec(),
        caller: None,
        source: "127.0.0.1".parse().unwrap(),
        headers: Vec::new(),
    }
}

#[test]
fn every_shipped_rules_file_is_valid_without_warnings() {
    let files = shipped_files();
    assert!(
        files.len() >= 2,
        "expected lab.toml and massachusetts.toml, found {files:?}"
    );
    for file in &files {
        match Rules::load(file) {
            Ok((rules, warnings)) => {
                assert!(
                    warnings.is_empty(),
                    "{}: unexpected warnings {warnings:#?}",
                    file.display()
                );
                assert!(!rules.targets.is_empty() && !rules.listen.is_empty());
            }
            Err(diags) => panic!("{} is invalid:\n{}", file.display(), lines(&diags)),
        }
    }
    let (ok, report) = check_files(&files);
    assert!(ok, "{report}");
    assert_eq!(
        report.lines().filter(|l| l.contains(": ok (")).count(),
        files.len(),
        "{report}"
    );
}

fn lines(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

#[test]
fn lab_topology_is_primary_backup_then_business_line_over_udp() {
    let rules = lab();
    let ids = |r: &Route| r.chain.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let expected = ["psap-primary", "psap-backup", "business-line"];
    assert_eq!(ids(&rules.default_route), expected);
    for route in &rules.routes {
        assert_eq!(ids(route), expected);
    }
    let addr = |id: &str| rules.target(id).unwrap().next_hop.to_string();
    assert_eq!(addr("psap-primary"), "127.0.0.1:5071");
    assert_eq!(addr("psap-backup"), "127.0.0.1:5072");
    assert_eq!(addr("business-line"), "127.0.0.1:5073");
    let line = rules.target("business-line").unwrap();
    assert_eq!(line.uri, "sip:127.0.0.1:5073");
    assert!(matches!(&line.kind, TargetKind::Tel { gateway, .. } if &**gateway == "pstn-gateway"));
    assert!(rules.targets.iter().all(|t| t.transport == Proto::Udp));
    assert_ne!(
        rules.target("psap-primary").unwrap().failure_domain,
        line.failure_domain
    );
    let listen: Vec<_> = rules
        .listen
        .iter()
        .map(|l| format!("{}:{}", l.transport, l.addr))
        .collect();
    assert_eq!(listen, ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]);
    assert!(rules.select(&call("urn:service:sos.fire")).emergency);
    assert!(rules.select(&call("sip:911@127.0.0.1")).emergency);
    assert!(!rules.select(&call("sip:alice@127.0.0.1")).emergency);
}

#[test]
fn check_files_reports_positions_and_a_summary_per_file() {
    let dir = std::env::temp_dir().join(format!("sosrouter-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(rules_dir().join("lab.toml")).unwrap();
    std::fs::write(&bad, format!("listne = 1\n{text}")).unwrap();
    let (ok, report) = check_files(&[rules_dir().join("lab.toml"), bad.clone()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok);
    let expected = format!(
        "{}:1:1: error: unknown key `listne` at the top level (did you mean `listen`?)",
        bad.display()
    );
    assert!(report.lines().any(|l| l == expected), "{report}");
    assert!(
        report.contains("lab.toml: ok (4 targets, 1 route + default)"),
        "{report}"
    );
    assert!(
        report.contains("bad.toml: INVALID (1 error); not loaded"),
        "{report}"
    );
    assert!(
        Rules::load(Path::new("/nonexistent/rules.toml")).unwrap_err()[0].severity
            == Severity::Error
    );
}
