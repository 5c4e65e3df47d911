//! The Prometheus text exposition format 0.0.4, written by hand: `# HELP`, `# TYPE`, then samples
//! `name{label="value",...} value`, label values escaped (`\\`, `\"`, `\n`).

use std::fmt::{Display, Write};

/// The Content-Type of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exposition being written. Families must be written whole, one after the other.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family: `kind` is `counter`, `gauge` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family (for histograms, `name` carries the suffix).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v, true));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a HELP text (backslash, newline) or a label value (also the double quote).
pub fn escape(s: &str, quote: bool) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '"' if quote => o.push_str("\\\""),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "a \\ help\nline");
        e.sample("x_total", &[("target", "a\"b\\c\nd"), ("k", "v")], 3);
        assert_eq!(
            e.finish(),
            "# HELP x_total a \\\\ help\\nline\n# TYPE x_total counter\n\
             x_total{target=\"a\\\"b\\\\c\\nd\",k=\"v\"} 3\n"
        );
    }
}
