//! Cross-references and lints, once every value has been read: ids, chains, gateways, fate sharing.

use super::Proto;
use super::model::{Endpoint, HealthSpec, RulesFile, TargetSpec, TimerSpec, defaults};
use super::read::{ReadFile, ReadTarget};
use super::routes::ReadRoute;
use super::values::parse_code;
use super::walk::Ctx;
use std::collections::HashMap;

/// Checks `file` and, when it holds no error, returns it with defaults filled in.
pub(crate) fn validate(ctx: &mut Ctx, file: ReadFile) -> Option<RulesFile> {
    let mut seen = HashMap::new();
    for (transport, addr, span) in &file.listen {
        if let Some(first) = seen.insert((transport, addr), span.clone()) {
            let line = ctx.pos(first.start).line;
            ctx.error(
                span,
                format!("{transport}:{addr} is listed twice (first on line {line})"),
            );
        }
    }
    let targets = check_targets(ctx, &file.targets);
    check_tls(ctx, &file);
    let defaults = file.defaults.or(&builtin_timers());
    let health = file.health.or(&builtin_health());
    let mut route_ids: HashMap<&str, usize> = HashMap::new();
    for route in file.routes.iter().chain(&file.default_route) {
        if let Some(line) = route_ids.insert(&route.spec.id, route.spec.pos.line) {
            ctx.error(
                &route.id_span,
                format!(
                    "duplicate route id `{}` (first on line {line})",
                    route.spec.id
                ),
            );
        }
        check_route(ctx, route, &targets, &defaults);
    }
    if ctx.has_errors() {
        return None;
    }
    Some(RulesFile {
        listen: file.listen.into_iter().map(|(t, a, _)| (t, a)).collect(),
        defaults,
        health,
        emergency_numbers: file.emergency_numbers,
        targets: file.targets.into_iter().filter_map(|t| t.spec).collect(),
        routes: file.routes.into_iter().map(|r| r.spec).collect(),
        default_route: file.default_route?.spec,
        protection: file.protection,
        suspicion: file.suspicion,
        test_calls: file.test_calls,
        tls: file.tls.map(|(t, _)| t),
    })
}

/// TLS listen addresses need our certificate and key; TLS targets need a CA to check theirs by.
fn check_tls(ctx: &mut Ctx, file: &ReadFile) {
    let tls = file.tls.as_ref().map(|(t, _)| t);
    for (transport, addr, span) in &file.listen {
        if *transport == Proto::Tls && tls.is_none_or(|t| t.cert_file.is_none()) {
            ctx.error(
                span,
                format!("listening on tls:{addr} needs [tls] with `cert_file` and `key_file`"),
            );
        }
    }
    for t in &file.targets {
        let is_tls = t
            .spec
            .as_ref()
            .is_some_and(|s| s.transport == Some(Proto::Tls));
        if is_tls && tls.is_none_or(|t| t.ca_file.is_none()) {
            ctx.error(
                &t.id_span,
                format!(
                    "target `{}` uses TLS: set [tls] `ca_file` (the CA that signed its certificate)",
                    t.id
                ),
            );
        }
    }
}

fn codes(list: &[&str]) -> Vec<(u16, u16)> {
    list.iter().filter_map(|c| parse_code(c).ok()).collect()
}

fn builtin_timers() -> TimerSpec {
    TimerSpec {
        attempt_timeout_ms: Some(defaults::ATTEMPT_TIMEOUT_MS),
        ring_timeout_ms: Some(defaults::RING_TIMEOUT_MS),
        call_deadline_ms: Some(defaults::CALL_DEADLINE_MS),
        failover_codes: Some(codes(defaults::FAILOVER_CODES)),
    }
}

fn builtin_health() -> HealthSpec {
    HealthSpec {
        probe: Some(defaults::PROBE),
        probe_interval_ms: Some(defaults::PROBE_INTERVAL_MS),
        probe_timeout_ms: Some(defaults::PROBE_TIMEOUT_MS),
        probe_jitter_percent: Some(defaults::PROBE_JITTER_PERCENT),
        down_after_probe_failures: Some(defaults::DOWN_AFTER_PROBE_FAILURES),
        up_after_probe_successes: Some(defaults::UP_AFTER_PROBE_SUCCESSES),
        down_after_call_failures: Some(defaults::DOWN_AFTER_CALL_FAILURES),
        alive_codes: Some(codes(defaults::ALIVE_CODES)),
    }
}

/// Unique ids and sound gateways. Returns the targets by id.
fn check_targets<'a>(ctx: &mut Ctx, targets: &'a [ReadTarget]) -> HashMap<&'a str, &'a ReadTarget> {
    let mut by_id: HashMap<&str, &ReadTarget> = HashMap::new();
    for t in targets {
        if let Some(first) = by_id.get(t.id.as_str()) {
            let line = first.line;
            ctx.error(
                &t.id_span,
                format!("duplicate target id `{}` (first on line {line})", t.id),
            );
        } else {
            by_id.insert(&t.id, t);
        }
    }
    for t in targets {
        let Some((gateway, span)) = &t.gateway else {
            continue;
        };
        match by_id.get(gateway.as_str()) {
            None => ctx.error(span, format!("gateway `{gateway}` is not a target id")),
            Some(g) if g.is_tel => ctx.error(
                span,
                format!("gateway `{gateway}` is a tel target; a gateway must be a sip target (uri = \"sip:...\")"),
            ),
            Some(_) => {}
        }
    }
    by_id
}

fn check_route(
    ctx: &mut Ctx,
    route: &ReadRoute,
    targets: &HashMap<&str, &ReadTarget>,
    defaults: &TimerSpec,
) {
    let chain = &route.spec.chain;
    let mut resolved = Vec::new();
    // Lints on a chain that is already wrong would only repeat the error in other words.
    let mut sound = !chain.is_empty();
    for (i, (id, span)) in chain.iter().zip(&route.chain_spans).enumerate() {
        if chain[..i].contains(id) {
            sound = false;
            ctx.error(
                span,
                format!(
                    "target `{id}` appears twice in the chain of route `{}`",
                    route.spec.id
                ),
            );
        }
        match targets.get(id.as_str()) {
            Some(t) => resolved.extend(&t.spec),
            None => ctx.error(
                span,
                format!(
                    "unknown target id `{id}` in the chain of route `{}`",
                    route.spec.id
                ),
            ),
        }
    }
    if !sound || resolved.len() != chain.len() {
        return;
    }
    let id = &route.spec.id;
    let (first, last) = (resolved[0], resolved[resolved.len() - 1]);
    if chain.len() == 1 {
        ctx.warning(
            &route.chain_span,
            format!("route `{id}` has a single target: no failover is possible"),
        );
    } else if let Some(shared) = domains(first, targets)
        .into_iter()
        .find(|d| domains(last, targets).contains(d))
    {
        ctx.warning(
            &route.chain_spans[chain.len() - 1],
            format!(
                "route `{id}`: last resort shares fate with the first choice: `{}` and `{}` are both in failure_domain `{shared}`",
                last.id, first.id
            ),
        );
    }
    let timers = route.spec.timers.or(defaults);
    let (attempt, deadline) = (
        timers.attempt_timeout_ms.unwrap_or(0),
        timers.call_deadline_ms.unwrap_or(0),
    );
    if attempt.saturating_mul(chain.len() as u64) > deadline {
        ctx.warning(
            &route.span,
            format!(
                "route `{id}`: attempt_timeout_ms {attempt} x {} targets exceeds call_deadline_ms {deadline}; \
                 the deadline will skip targets to reach the last resort",
                chain.len()
            ),
        );
    }
}

/// The failure domains a target depends on: its own, and its gateway's for a tel target.
fn domains<'a>(t: &'a TargetSpec, targets: &HashMap<&str, &'a ReadTarget>) -> Vec<&'a str> {
    let mut out: Vec<&str> = t.failure_domain.iter().map(String::as_str).collect();
    if let Endpoint::Tel { gateway, .. } = &t.endpoint {
        let gateway = targets.get(gateway.as_str()).and_then(|g| g.spec.as_ref());
        out.extend(
            gateway
                .into_iter()
                .flat_map(|g| g.failure_domain.iter().map(String::as_str)),
        );
    }
    out
}
