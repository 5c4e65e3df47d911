//! The compiled rules snapshot and the routing decision: which route a call matches, and the ordered
//! failover plan for it. Pure: no IO, no health import (readiness is passed in as a function).
//!
//! CONTRACT (the proxy is written against these names; keep them).
//!
//! Layout: `compile` (checked rules file -> snapshot), `matching` (conditions, emergency test),
//! `facts` (reading a call's facts from an INVITE), `target` (Request-URI per target), `plan` (the
//! failover order), `check` (`sosrouter check`), `whatif` (`sosrouter route`). The file format is checked in `crate::config`.

use crate::config::{Conditions, Diagnostic, Proto};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

mod check;
mod compile;
mod facts;
mod index;
mod matching;
mod plan;
mod target;
mod testcalls;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_index;
#[cfg(test)]
mod tests_select;
#[cfg(test)]
mod tests_whatif;
pub mod whatif;

pub use check::{check_files, check_files_with};
pub use plan::plan;
pub use testcalls::TestCallSettings;
pub use whatif::{WhatIf, render_text, what_if};

/// Stable target id, as written in the rules file. Health and counters are keyed by it.
pub type TargetId = Arc<str>;

/// What a target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A SIP answering point (or any SIP next hop): `uri = "sip:127.0.0.1:5071"`.
    Sip,
    /// A `tel:` number reached through the gateway target `gateway`.
    Tel { number: String, gateway: TargetId },
}

/// Health probe and passive-health settings, resolved per target (defaults, then per-target overrides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Send OPTIONS probes at all. Default true.
    pub probe: bool,
    /// Interval between probes to one target. Default 1 s.
    pub probe_interval: Duration,
    /// How long a probe may take before it counts as failed. Default 400 ms.
    pub probe_timeout: Duration,
    /// Random spread added to each interval, as a fraction of it in percent. Default 20.
    pub probe_jitter_percent: u32,
    /// Consecutive failed probes that take an up target down. Default 2.
    pub down_after_probe_failures: u32,
    /// Consecutive good probes that bring a down target to probation. Default 2.
    pub up_after_probe_successes: u32,
    /// Consecutive failed real calls that take a target down even while probes pass. Default 3.
    pub down_after_call_failures: u32,
    /// Which OPTIONS reply codes count as "alive" (inclusive ranges). Default 200-299.
    pub alive_codes: Vec<(u16, u16)>,
}

/// One target of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: TargetId,
    pub kind: TargetKind,
    /// The SIP URI as written (for Tel targets: the gateway's URI).
    pub uri: String,
    /// Where requests for this target are sent (for Tel targets: the gateway's address). IP literals only.
    pub next_hop: SocketAddr,
    pub transport: Proto,
    /// TLS targets: the name the target's certificate must carry (we connect to `next_hop`).
    pub tls_name: Option<Arc<str>>,
    /// Failure-domain tags, e.g. ["psap-site-a", "ngcs-east-firewall"]: what the target shares fate
    /// with. Used by the lint in `check` and by health's domain suspicion.
    pub failure_domain: Vec<String>,
    pub health: HealthSettings,
    /// 1-based line of the target's table in the rules file (for messages).
    pub line: usize,
}

impl Target {
    /// The Request-URI to use when sending a call to this target, given the call's original one:
    /// - Tel target: `tel:<number>` (e.g. `tel:+19785386180`).
    /// - Sip target: the original when it is a `urn:` URI (the service URN travels with the call);
    ///   otherwise the target URI, keeping the original user part when the target URI has none
    ///   (`sip:911@127.0.0.1:5060` to `sip:127.0.0.1:5071` gives `sip:911@127.0.0.1:5071`).
    pub fn request_uri_for(&self, original: &[u8]) -> Vec<u8> {
        target::request_uri_for(self, original)
    }
}

#[cfg(test)]
impl Target {
    /// Unit-test fixture: a UDP SIP target on 127.0.0.1:`port` with the default health settings.
    pub(crate) fn for_test(id: &str, port: u16) -> Target {
        Target {
            id: id.into(),
            kind: TargetKind::Sip,
            uri: format!("sip:127.0.0.1:{port}"),
            next_hop: SocketAddr::from(([127, 0, 0, 1], port)),
            transport: Proto::Udp,
            tls_name: None,
            failure_domain: vec!["lab".into()],
            health: HealthSettings::default(),
            line: 1,
        }
    }
}

/// Per-route call timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// No provisional response other than 100 within this: abandon the attempt, next target. Default 1000 ms.
    pub attempt_timeout: Duration,
    /// Provisional received but no final within this: CANCEL, next target. Default 10 000 ms.
    pub ring_timeout: Duration,
    /// Bound on the whole failover chain: the last resort always starts before it. Default 30 000 ms.
    pub call_deadline: Duration,
}

/// Which final responses fail over (inclusive ranges). Default 408, 480, 486, 500-599, 600, 603.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverCodes(pub Vec<(u16, u16)>);

impl FailoverCodes {
    pub fn fails_over(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= code && code <= hi)
    }
}

/// One route: match conditions and an ordered chain.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: Arc<str>,
    /// Target ids in failover order; the last one is the route's last resort.
    pub chain: Vec<TargetId>,
    pub timers: Timers,
    pub failover: FailoverCodes,
    /// 1-based line of the route's table in the rules file.
    pub line: usize,
    /// Operator's note from the file, for `sosrouter route` and logs.
    description: Option<String>,
    conditions: Conditions,
}

impl Route {
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
}

/// Readiness of a target as health and the operator switch see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Up, but doubted (an overdue attempt, a failed call, its domain, short calls): tried after
    /// the ready, unsuspected targets.
    Suspect,
    /// Health says down, or recovering (test calls decide, or its one trial call is taken).
    NotReady,
    /// The operator switched it off. Tried only when nothing else remains.
    Disabled,
}

/// The facts about a call that routes match on, taken from the INVITE and where it came from.
#[derive(Debug, Clone)]
pub struct CallFacts {
    pub request_uri: Vec<u8>,
    /// Caller number or user: from P-Asserted-Identity, else From (user part of the URI; tel number).
    pub caller: Option<String>,
    pub source: IpAddr,
    /// (lower-case header name, value) of every header, for header-value conditions.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl CallFacts {
    /// Reads the facts from a parsed request and its source address.
    pub fn from_message(msg: &crate::sip::Message, source: IpAddr) -> CallFacts {
        facts::from_message(msg, source, None)
    }
}

/// The routing decision for one call.
#[derive(Debug, Clone)]
pub struct Selection {
    pub route: Arc<Route>,
    /// True when the call is an emergency call (service URN `urn:service:sos*`, or a dialled emergency
    /// number). Only emergency calls get the failover guarantees' priority treatment.
    pub emergency: bool,
    /// Why this route matched, typed (which pattern of each condition kind matched); formatted
    /// only when displayed. [`Selection::explain`] gives the full text with the call's values.
    pub reason: Why,
}

impl Selection {
    /// The human-readable why, naming the call's values ("route `fire`: service
    /// urn:service:sos.fire matched service_urns urn:service:sos.fire", "no route matched; default
    /// route"). For `sosrouter route`, what-if and logs; not computed on the call path.
    pub fn explain(&self, call: &CallFacts) -> String {
        match self.reason.hits {
            None => DEFAULT_WHY.to_string(),
            Some(_) => {
                let why = matching::matches(&self.route.conditions, call).unwrap_or_default();
                format!("route `{}`: {why}", self.route.id)
            }
        }
    }
}

const DEFAULT_WHY: &str = "no route matched; default route";

/// Why a route was selected: the route and which of its patterns matched (`None`: the default
/// route). Cheap to build; `Display` names the patterns (not the call's values).
#[derive(Debug, Clone)]
pub struct Why {
    route: Arc<Route>,
    hits: Option<index::Hits>,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(h) = self.hits else {
            return f.write_str(DEFAULT_WHY);
        };
        let c = &self.route.conditions;
        write!(f, "route `{}`:", self.route.id)?;
        let mut sep = " ";
        let pick =
            |list_len: usize, i: Option<u32>| i.map(|i| i as usize).filter(|&i| i < list_len);
        if let Some(i) = pick(c.service_urns.len(), h.service_urn) {
            write!(f, "{sep}service matched service_urns {}", c.service_urns[i])?;
            sep = "; ";
        }
        if let Some(i) = pick(c.dialled.len(), h.dialled) {
            write!(f, "{sep}dialled {} matched dialled", c.dialled[i])?;
            sep = "; ";
        }
        if let Some(i) = pick(c.sources.len(), h.source) {
            write!(f, "{sep}source matched sources {}", c.sources[i])?;
            sep = "; ";
        }
        if let Some(i) = pick(c.caller_prefixes.len(), h.caller_prefix) {
            write!(
                f,
                "{sep}caller matched caller_prefixes {}",
                c.caller_prefixes[i]
            )?;
            sep = "; ";
        }
        for (name, value) in &c.headers {
            write!(f, "{sep}header {name}: {value} matched headers")?;
            sep = "; ";
        }
        if sep == " " {
            f.write_str(" no conditions (matches every call)")?;
        }
        Ok(())
    }
}

/// Where the proxy listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: Proto,
    pub addr: SocketAddr,
}

/// The whole compiled rules file: read on every call, replaced whole on reload (one ArcSwap).
#[derive(Debug, Clone)]
pub struct Rules {
    pub listen: Vec<Listen>,
    pub targets: Vec<Arc<Target>>,
    pub routes: Vec<Arc<Route>>,
    /// The mandatory default route (also in `routes`? no: kept apart, used when nothing else matches).
    pub default_route: Arc<Route>,
    /// Source file name as given, for messages.
    pub source: String,
    /// `[limits]`, `[overload]` and `[[acl]]` (see `config::ProtectionSpec`).
    pub protection: Arc<crate::config::ProtectionSpec>,
    /// `[suspicion]`: silent-failure detection (see `config::SuspicionSpec`).
    pub suspicion: Arc<crate::config::SuspicionSpec>,
    /// `[test_calls]` and each target's test Request-URI (see `crate::testcall`).
    pub test_calls: Arc<TestCallSettings>,
    /// `[tls]`: certificate, key and CA files (read by `transport::tls`), client auth, timeout.
    pub tls: Option<Arc<crate::config::TlsSpec>>,
    by_id: HashMap<Arc<str>, Arc<Target>>,
    /// Candidate routes of a call (built from `routes` at compile time).
    index: index::Index,
    /// Dialled numbers that make a call emergency, matched exactly (see `[emergency]`).
    emergency_numbers: Vec<String>,
    /// Lower-case names of the headers any route's `headers` condition names (sorted, once each).
    header_names: Vec<String>,
}

impl Rules {
    /// Parses and validates rules text. Ok: the rules and any warnings. Err: every error (and warning).
    pub fn parse(text: &str, source: &str) -> Result<(Rules, Vec<Diagnostic>), Vec<Diagnostic>> {
        let (file, warnings) = crate::config::read(text, source)?;
        Ok((compile::compile(file, source), warnings))
    }

    /// Reads and parses a file. An unreadable file is one error at 1:1.
    pub fn load(path: &std::path::Path) -> Result<(Rules, Vec<Diagnostic>), Vec<Diagnostic>> {
        let source = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Rules::parse(&text, &source),
            Err(e) => Err(vec![Diagnostic {
                file: source,
                line: 1,
                column: 1,
                severity: crate::config::Severity::Error,
                message: format!("cannot read the file: {e}"),
            }]),
        }
    }

    pub fn target(&self, id: &str) -> Option<&Arc<Target>> {
        self.by_id.get(id)
    }

    /// The facts of a call as these rules read them: like [`CallFacts::from_message`], but with
    /// only the headers some route names (the others cannot change [`Rules::select`]).
    pub fn facts(&self, msg: &crate::sip::Message, source: IpAddr) -> CallFacts {
        facts::from_message(msg, source, Some(&self.header_names))
    }

    /// The route for a call: the first route in file order whose conditions all match, else the
    /// default. Only the candidates the index yields are tested, so the cost does not grow with the
    /// number of routes and prefixes.
    pub fn select(&self, call: &CallFacts) -> Selection {
        let emergency = self.is_emergency(call);
        let dest = matching::dest(&call.request_uri);
        for (i, hint) in self.index.candidates(call, &dest) {
            let Some(route) = self.routes.get(i as usize) else {
                continue;
            };
            if let Some(hits) = index::holds_hinted(&route.conditions, call, &dest, hint) {
                return self.selected(route, Some(hits), emergency);
            }
        }
        self.selected(&self.default_route, None, emergency)
    }

    /// The reference: every route in file order, each tested with the full matcher. Same answer
    /// as [`Rules::select`] (proved by a property test), at a cost that grows with the rules.
    pub fn select_linear(&self, call: &CallFacts) -> Selection {
        let emergency = self.is_emergency(call);
        let dest = matching::dest(&call.request_uri);
        for route in &self.routes {
            if matching::matches(&route.conditions, call).is_some() {
                let hits = index::holds(&route.conditions, call, &dest).unwrap_or_default();
                return self.selected(route, Some(hits), emergency);
            }
        }
        self.selected(&self.default_route, None, emergency)
    }

    fn selected(
        &self,
        route: &Arc<Route>,
        hits: Option<index::Hits>,
        emergency: bool,
    ) -> Selection {
        Selection {
            route: route.clone(),
            emergency,
            reason: Why {
                route: route.clone(),
                hits,
            },
        }
    }

    /// Whether a call is an emergency call (see [`Selection::emergency`]).
    pub fn is_emergency(&self, call: &CallFacts) -> bool {
        matching::is_emergency(&call.request_uri, &self.emergency_numbers)
    }

    /// Whether a Request-URI alone makes a call emergency; the cheap test the overload shedder
    /// runs before any routing work.
    pub fn is_emergency_uri(&self, request_uri: &[u8]) -> bool {
        matching::is_emergency(request_uri, &self.emergency_numbers)
    }

    /// Dialled numbers that make a call emergency (`[emergency] numbers`).
    pub fn emergency_numbers(&self) -> &[String] {
        &self.emergency_numbers
    }
}
