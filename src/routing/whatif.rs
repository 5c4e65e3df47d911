//! `sosrouter route`: "where would this call go, and in what order?" Pure: the caller passes the
//! call's facts and a readiness function (supposed, or read from a running proxy), and gets the
//! same answer the proxy's call path computes (`Rules::select` then [`super::plan`]), as a
//! serializable value with a text rendering.

use super::{CallFacts, FailoverCodes, Readiness, Rules, TargetKind};
use serde::Serialize;
use std::fmt::Write;

/// The answer, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhatIf {
    /// The facts routed on, echoed so the operator sees what was asked.
    pub request_uri: String,
    pub caller: Option<String>,
    pub source: String,
    pub route: String,
    /// Line of the route's table in the rules file.
    pub route_line: usize,
    pub description: Option<String>,
    /// Why this route matched (`Selection::reason`).
    pub reason: String,
    pub emergency: bool,
    pub attempt_timeout_ms: u64,
    pub ring_timeout_ms: u64,
    pub call_deadline_ms: u64,
    /// Final responses that fail over: "408", "5xx", or "lo-hi".
    pub failover_codes: Vec<String>,
    /// Where readiness came from: "supposed" or the admin URL read.
    pub readiness_from: String,
    /// Targets in the order the proxy would try them.
    pub plan: Vec<Step>,
}

/// One target of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// 1-based position in the plan.
    pub position: usize,
    pub id: String,
    /// "sip" or "tel".
    pub kind: &'static str,
    /// The Request-URI this target would be sent.
    pub request_uri: String,
    /// Where the INVITE goes (for tel targets, the gateway's address).
    pub next_hop: String,
    /// The gateway a tel target goes through.
    pub gateway: Option<String>,
    pub transport: String,
    pub failure_domain: String,
    /// "ready", "not_ready" or "disabled" (the admin endpoint's words).
    pub readiness: &'static str,
    /// The route chain's last target: always started before the call deadline.
    pub last_resort: bool,
}

pub fn readiness_word(r: Readiness) -> &'static str {
    match r {
        Readiness::Ready => "ready",
        Readiness::Suspect => "suspect",
        Readiness::NotReady => "not_ready",
        Readiness::Disabled => "disabled",
    }
}

/// The inverse of [`readiness_word`].
pub fn readiness_from_word(w: &str) -> Option<Readiness> {
    match w {
        "ready" => Some(Readiness::Ready),
        "suspect" => Some(Readiness::Suspect),
        // Half-open: one call at a time may try it; the what-if cannot hold that slot.
        "not_ready" | "half_open" => Some(Readiness::NotReady),
        "disabled" => Some(Readiness::Disabled),
        _ => None,
    }
}

fn codes(f: &FailoverCodes) -> Vec<String> {
    f.0.iter()
        .map(|&(lo, hi)| match (lo, hi) {
            _ if lo == hi => lo.to_string(),
            _ if lo % 100 == 0 && hi == lo + 99 => format!("{}xx", lo / 100),
            _ => format!("{lo}-{hi}"),
        })
        .collect()
}

/// Routes `call` as the proxy would, with `readiness` standing in for health.
pub fn what_if(
    rules: &Rules,
    call: &CallFacts,
    readiness: &dyn Fn(&str) -> Readiness,
    readiness_from: &str,
) -> WhatIf {
    let sel = rules.select(call);
    let route = &sel.route;
    let plan = super::plan(rules, route, readiness);
    let last = route.chain.last();
    let steps = plan
        .iter()
        .enumerate()
        .map(|(i, t)| Step {
            position: i + 1,
            id: t.id.to_string(),
            kind: match t.kind {
                TargetKind::Sip => "sip",
                TargetKind::Tel { .. } => "tel",
            },
            request_uri: String::from_utf8_lossy(&t.request_uri_for(&call.request_uri))
                .into_owned(),
            next_hop: t.next_hop.to_string(),
            gateway: match &t.kind {
                TargetKind::Tel { gateway, .. } => Some(gateway.to_string()),
                TargetKind::Sip => None,
            },
            transport: t.transport.to_string(),
            failure_domain: t.failure_domain.join(","),
            readiness: readiness_word(readiness(&t.id)),
            last_resort: last == Some(&t.id),
        })
        .collect();
    WhatIf {
        request_uri: String::from_utf8_lossy(&call.request_uri).into_owned(),
        caller: call.caller.clone(),
        source: call.source.to_string(),
        route: route.id.to_string(),
        route_line: route.line,
        description: route.description().map(str::to_string),
        reason: sel.explain(call),
        emergency: sel.emergency,
        attempt_timeout_ms: route.timers.attempt_timeout.as_millis() as u64,
        ring_timeout_ms: route.timers.ring_timeout.as_millis() as u64,
        call_deadline_ms: route.timers.call_deadline.as_millis() as u64,
        failover_codes: codes(&route.failover),
        readiness_from: readiness_from.to_string(),
        plan: steps,
    }
}

/// The text an operator reads: the call, the route and why, the timers, then one line per target.
pub fn render_text(w: &WhatIf) -> String {
    let mut s = String::new();
    let caller = w.caller.as_deref().unwrap_or("-");
    let _ = writeln!(
        s,
        "call:      {} from {caller} (source {})",
        w.request_uri, w.source
    );
    let kind = if w.emergency {
        "EMERGENCY"
    } else {
        "not emergency"
    };
    let _ = writeln!(s, "emergency: {kind}");
    let _ = writeln!(s, "route:     {} (line {})", w.route, w.route_line);
    if let Some(d) = &w.description {
        let _ = writeln!(s, "           {d}");
    }
    let _ = writeln!(s, "why:       {}", w.reason);
    let _ = writeln!(
        s,
        "timers:    attempt {} ms, ring {} ms, deadline {} ms",
        w.attempt_timeout_ms, w.ring_timeout_ms, w.call_deadline_ms
    );
    let _ = writeln!(s, "failover:  {}", w.failover_codes.join(", "));
    let _ = writeln!(s, "readiness: {}", w.readiness_from);
    let _ = writeln!(s, "plan:");
    for t in &w.plan {
        let via = t
            .gateway
            .as_ref()
            .map_or(String::new(), |g| format!(" via {g}"));
        let last = if t.last_resort { "  (last resort)" } else { "" };
        let _ = writeln!(
            s,
            "  {}. {:<16} {:<9} {} -> {}/{}{via}  domain {}{last}",
            t.position, t.id, t.readiness, t.request_uri, t.transport, t.next_hop, t.failure_domain
        );
    }
    s
}
