//! The operator-facing rules file: TOML with positions, strict keys, every error collected with its
//! line. Imports nothing of the crate; `routing` compiles what this reads into the rules snapshot.
//!
//! Stages: `walk` (spanned TOML, positions, typed getters) -> `read` and `routes` (each table and value, with
//! `values` for the small syntaxes) -> `validate` (cross-references, lints, defaults) -> `model`.
//! Syntax errors stop before `read`: a document the parser had to patch up gives misleading errors.

use std::fmt;

mod model;
mod protect;
mod read;
mod routes;
mod suspicion;
mod testcalls;
mod tls;
mod validate;
mod values;
mod walk;

pub use model::{
    Conditions, Endpoint, HealthSpec, RouteSpec, RulesFile, TargetSpec, TimerSpec, defaults,
};
pub use protect::{
    AclSpec, LimitsSpec, OverloadSpec, ProtectionSpec, UnlistedEmergency,
    defaults as protection_defaults,
};
pub use suspicion::SuspicionSpec;
pub use testcalls::{TestCallMedia, TestCallSpec, defaults as test_call_defaults};
pub use tls::{ClientAuth, FileRef, TlsSpec, defaults as tls_defaults};
pub use values::{Cidr, DEFAULT_SIP_PORT, parse_code};
pub use walk::Pos;

/// Reads and checks a rules file. Ok: the file with defaults filled in, and any warnings. Err: every
/// error and warning, sorted by position.
pub fn read(text: &str, file: &str) -> Result<(RulesFile, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut ctx = walk::Ctx::new(text, file);
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
    for e in &syntax {
        ctx.error(
            &e.span().unwrap_or(0..0),
            format!("TOML syntax: {}", e.message()),
        );
    }
    let rules = if syntax.is_empty() {
        let raw = read::read_document(&mut ctx, doc.get_ref());
        validate::validate(&mut ctx, raw)
    } else {
        None
    };
    let mut diags = ctx.diags;
    diags.sort_by_key(|d| (d.line, d.column));
    match rules {
        Some(rules) if !diags.iter().any(|d| d.severity == Severity::Error) => Ok((rules, diags)),
        _ => Err(diags),
    }
}

/// The transport protocol toward a target or of a listen address (`udp`, `tcp` or `tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
    /// SIP over TLS over TCP (RFC 3261 §26.2): framed like TCP, encrypted and authenticated.
    Tls,
}

impl Proto {
    /// A stream transport (TCP or TLS): reliable, framed by Content-Length, connection-oriented.
    pub fn is_stream(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Tls)
    }

    /// The Via transport token (`SIP/2.0/<token>`).
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }

    /// The lower-case name (`udp`, `tcp`, `tls`), as in the rules file and `transport=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a rules file, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `lab.toml:12:5: error: unknown key `atempt_timeout_ms``
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, sev, self.message
        )
    }
}
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_protect;
#[cfg(test)]
mod tests_testcalls;
#[cfg(test)]
mod tests_tls;
