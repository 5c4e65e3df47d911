//! `sosrouter check FILE...`: validate rules files without running them.

use super::Rules;
use crate::config::{Diagnostic, Severity};
use std::fmt::Write;
use std::path::PathBuf;

/// Validates each file. Returns whether all are valid, and the report: one `file:line:col: severity:
/// message` line per diagnostic, then one summary line per file. Warnings do not make a file invalid.
pub fn check_files(paths: &[PathBuf]) -> (bool, String) {
    check_files_with(paths, &|_| Vec::new())
}

/// As [`check_files`], with `extra` checks of each valid file (the wiring's: the `[tls]` files,
/// which need IO this module does not do); their errors make the file invalid.
pub fn check_files_with(
    paths: &[PathBuf],
    extra: &dyn Fn(&Rules) -> Vec<Diagnostic>,
) -> (bool, String) {
    let mut all_valid = true;
    let mut report = String::new();
    for path in paths {
        let name = path.display();
        let loaded = Rules::load(path).and_then(|(rules, mut warnings)| {
            warnings.extend(extra(&rules));
            warnings.sort_by_key(|d| (d.line, d.column));
            if warnings.iter().any(|d| d.severity == Severity::Error) {
                Err(warnings)
            } else {
                Ok((rules, warnings))
            }
        });
        let (summary, diags) = match loaded {
            Ok((rules, warnings)) => {
                let routes = rules.routes.len();
                let plural = if routes == 1 { "" } else { "s" };
                let mut s = format!(
                    "{} targets, {routes} route{plural} + default",
                    rules.targets.len()
                );
                if !warnings.is_empty() {
                    let _ = write!(s, ", {}", count(&warnings, Severity::Warning, "warning"));
                }
                (format!("{name}: ok ({s})"), warnings)
            }
            Err(diags) => {
                all_valid = false;
                let mut s = count(&diags, Severity::Error, "error");
                if diags.iter().any(|d| d.severity == Severity::Warning) {
                    let _ = write!(s, ", {}", count(&diags, Severity::Warning, "warning"));
                }
                (format!("{name}: INVALID ({s}); not loaded"), diags)
            }
        };
        for d in &diags {
            let _ = writeln!(report, "{d}");
        }
        let _ = writeln!(report, "{summary}");
    }
    (all_valid, report)
}

fn count(diags: &[Diagnostic], severity: Severity, word: &str) -> String {
    let n = diags.iter().filter(|d| d.severity == severity).count();
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}
