//! The rules file as read and checked: plain data, every value already valid, every cross-reference
//! resolved. `routing` compiles it into the snapshot the proxy reads.

use super::Proto;
use super::values::Cidr;
use super::walk::Pos;
use std::net::SocketAddr;

/// Defaults for keys an operator may leave out. Units are in the names.
pub mod defaults {
    /// See the failover contract: no provisional other than 100 within this, next target.
    pub const ATTEMPT_TIMEOUT_MS: u64 = 1_000;
    pub const RING_TIMEOUT_MS: u64 = 10_000;
    pub const CALL_DEADLINE_MS: u64 = 30_000;
    pub const FAILOVER_CODES: &[&str] = &["408", "480", "486", "5xx", "600", "603"];
    pub const PROBE: bool = true;
    pub const PROBE_INTERVAL_MS: u64 = 1_000;
    pub const PROBE_TIMEOUT_MS: u64 = 400;
    pub const PROBE_JITTER_PERCENT: u64 = 20;
    pub const DOWN_AFTER_PROBE_FAILURES: u64 = 2;
    pub const UP_AFTER_PROBE_SUCCESSES: u64 = 2;
    pub const DOWN_AFTER_CALL_FAILURES: u64 = 3;
    pub const ALIVE_CODES: &[&str] = &["2xx"];
    /// 911 (North America) and 112 (the GSM number every mobile phone treats as emergency). Other
    /// short codes (999, 000, 110, 119...) are ordinary numbers or extensions in many networks, and
    /// treating a non-emergency call as emergency takes priority from real ones: add them per deployment.
    pub const EMERGENCY_NUMBERS: &[&str] = &["911", "112"];
    /// Upper bound on every timer key, in ms: an hour is already absurd for a call.
    pub const MAX_TIMER_MS: u64 = 3_600_000;
}

/// Timer and failover-code settings; `None` means inherit (route from `[defaults]`, defaults from
/// [`defaults`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerSpec {
    pub attempt_timeout_ms: Option<u64>,
    pub ring_timeout_ms: Option<u64>,
    pub call_deadline_ms: Option<u64>,
    pub failover_codes: Option<Vec<(u16, u16)>>,
}

/// Health settings; `None` means inherit (target from `[health]`, `[health]` from [`defaults`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSpec {
    pub probe: Option<bool>,
    pub probe_interval_ms: Option<u64>,
    pub probe_timeout_ms: Option<u64>,
    pub probe_jitter_percent: Option<u64>,
    pub down_after_probe_failures: Option<u64>,
    pub up_after_probe_successes: Option<u64>,
    pub down_after_call_failures: Option<u64>,
    pub alive_codes: Option<Vec<(u16, u16)>>,
}

impl HealthSpec {
    /// `self` where set, else `base`.
    pub fn or(&self, base: &HealthSpec) -> HealthSpec {
        HealthSpec {
            probe: self.probe.or(base.probe),
            probe_interval_ms: self.probe_interval_ms.or(base.probe_interval_ms),
            probe_timeout_ms: self.probe_timeout_ms.or(base.probe_timeout_ms),
            probe_jitter_percent: self.probe_jitter_percent.or(base.probe_jitter_percent),
            down_after_probe_failures: self
                .down_after_probe_failures
                .or(base.down_after_probe_failures),
            up_after_probe_successes: self
                .up_after_probe_successes
                .or(base.up_after_probe_successes),
            down_after_call_failures: self
                .down_after_call_failures
                .or(base.down_after_call_failures),
            alive_codes: self
                .alive_codes
                .clone()
                .or_else(|| base.alive_codes.clone()),
        }
    }
}

impl TimerSpec {
    /// `self` where set, else `base`.
    pub fn or(&self, base: &TimerSpec) -> TimerSpec {
        TimerSpec {
            attempt_timeout_ms: self.attempt_timeout_ms.or(base.attempt_timeout_ms),
            ring_timeout_ms: self.ring_timeout_ms.or(base.ring_timeout_ms),
            call_deadline_ms: self.call_deadline_ms.or(base.call_deadline_ms),
            failover_codes: self
                .failover_codes
                .clone()
                .or_else(|| base.failover_codes.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `uri = "sip:[user@]ip[:port]"`.
    Sip {
        uri: String,
        user: Option<String>,
        addr: SocketAddr,
    },
    /// `tel = "+1..."` reached through the sip target `gateway`.
    Tel { number: String, gateway: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub id: String,
    pub endpoint: Endpoint,
    /// As written; `None` for tel targets (they use their gateway's) and when left to the default, udp
    /// (`tls` for a `sips:` URI).
    pub transport: Option<Proto>,
    /// For TLS targets: the name the target's certificate must carry.
    pub tls_name: Option<String>,
    /// One or more tags: every shared element the target depends on.
    pub failure_domain: Vec<String>,
    pub description: Option<String>,
    /// Overrides only; resolve with [`HealthSpec::or`] over [`RulesFile::health`].
    pub health: HealthSpec,
    /// Request-URI of this target's test calls; `None`: `urn:service:test.sos`.
    pub test_uri: Option<String>,
    pub pos: Pos,
}

/// Match conditions of a route: AND across kinds, OR within a list; an empty list is no condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Lower case; each matches itself and its `.`-separated sub-services.
    pub service_urns: Vec<String>,
    pub dialled: Vec<String>,
    pub sources: Vec<Cidr>,
    pub caller_prefixes: Vec<String>,
    /// (lower-case name, exact value).
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub id: String,
    pub description: Option<String>,
    pub chain: Vec<String>,
    /// Overrides only; resolve with [`TimerSpec::or`] over [`RulesFile::defaults`].
    pub timers: TimerSpec,
    pub conditions: Conditions,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesFile {
    pub listen: Vec<(Proto, SocketAddr)>,
    /// `[defaults]` with every unset key filled from [`defaults`].
    pub defaults: TimerSpec,
    /// `[health]` with every unset key filled from [`defaults`].
    pub health: HealthSpec,
    pub emergency_numbers: Vec<String>,
    pub targets: Vec<TargetSpec>,
    pub routes: Vec<RouteSpec>,
    pub default_route: RouteSpec,
    /// `[limits]`, `[overload]`, `[[acl]]`, defaults filled in.
    pub protection: super::protect::ProtectionSpec,
    /// `[suspicion]`, defaults filled in.
    pub suspicion: super::suspicion::SuspicionSpec,
    /// `[test_calls]`, defaults filled in.
    pub test_calls: super::testcalls::TestCallSpec,
    /// `[tls]`, when present.
    pub tls: Option<super::tls::TlsSpec>,
}
