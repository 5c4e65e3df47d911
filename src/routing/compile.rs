//! From the checked rules file to the snapshot the proxy reads on every call. Infallible: `config`
//! has already refused anything that would not compile.

use super::{FailoverCodes, HealthSettings, Listen, Route, Rules, Target, TargetKind, Timers};
use crate::config::{Endpoint, HealthSpec, Proto, RouteSpec, RulesFile, TimerSpec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn compile(file: RulesFile, source: &str) -> Rules {
    let sip_targets: HashMap<&str, _> = file
        .targets
        .iter()
        .filter_map(|t| match &t.endpoint {
            Endpoint::Sip { uri, addr, .. } => Some((
                t.id.as_str(),
                (uri.clone(), *addr, t.transport, t.tls_name.clone()),
            )),
            Endpoint::Tel { .. } => None,
        })
        .collect();
    let mut targets = Vec::new();
    for t in &file.targets {
        let (kind, (uri, next_hop, transport, tls_name)) = match &t.endpoint {
            Endpoint::Sip { uri, addr, .. } => (
                TargetKind::Sip,
                (uri.clone(), *addr, t.transport, t.tls_name.clone()),
            ),
            Endpoint::Tel { number, gateway } => {
                let kind = TargetKind::Tel {
                    number: number.clone(),
                    gateway: gateway.as_str().into(),
                };
                (kind, sip_targets[gateway.as_str()].clone())
            }
        };
        targets.push(Arc::new(Target {
            id: t.id.as_str().into(),
            kind,
            uri,
            next_hop,
            transport: transport.unwrap_or(Proto::Udp),
            tls_name: tls_name.map(Arc::from),
            failure_domain: t.failure_domain.clone(),
            health: health(&t.health.or(&file.health)),
            line: t.pos.line,
        }));
    }
    let by_id = targets.iter().map(|t| (t.id.clone(), t.clone())).collect();
    let route = |r: &RouteSpec| Arc::new(compile_route(r, &file.defaults, &by_id));
    let routes: Vec<Arc<Route>> = file.routes.iter().map(route).collect();
    let mut header_names: Vec<String> = routes
        .iter()
        .flat_map(|r| {
            r.conditions
                .headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
        })
        .collect();
    header_names.sort();
    header_names.dedup();
    Rules {
        index: super::index::Index::build(&routes),
        header_names,
        listen: file
            .listen
            .iter()
            .map(|&(transport, addr)| Listen { transport, addr })
            .collect(),
        routes,
        default_route: route(&file.default_route),
        targets,
        source: source.to_string(),
        emergency_numbers: file.emergency_numbers,
        protection: Arc::new(file.protection),
        suspicion: Arc::new(file.suspicion),
        test_calls: Arc::new(super::testcalls::compile(&file.test_calls, &file.targets)),
        tls: file.tls.map(Arc::new),
        by_id,
    }
}

fn compile_route(
    r: &RouteSpec,
    defaults: &TimerSpec,
    by_id: &HashMap<Arc<str>, Arc<Target>>,
) -> Route {
    let t = r.timers.or(defaults);
    let ms = |v: Option<u64>| Duration::from_millis(v.unwrap_or_default());
    Route {
        id: r.id.as_str().into(),
        // Share the target's id allocation: chains are compared and hashed on every call.
        chain: r
            .chain
            .iter()
            .map(|id| by_id[id.as_str()].id.clone())
            .collect(),
        timers: Timers {
            attempt_timeout: ms(t.attempt_timeout_ms),
            ring_timeout: ms(t.ring_timeout_ms),
            call_deadline: ms(t.call_deadline_ms),
        },
        failover: FailoverCodes(t.failover_codes.unwrap_or_default()),
        line: r.pos.line,
        description: r.description.clone(),
        conditions: r.conditions.clone(),
    }
}

/// `h` is fully resolved (defaults filled in by `config`).
fn health(h: &HealthSpec) -> HealthSettings {
    let n = |v: Option<u64>| u32::try_from(v.unwrap_or_default()).unwrap_or(u32::MAX);
    HealthSettings {
        probe: h.probe.unwrap_or(true),
        probe_interval: Duration::from_millis(h.probe_interval_ms.unwrap_or_default()),
        probe_timeout: Duration::from_millis(h.probe_timeout_ms.unwrap_or_default()),
        probe_jitter_percent: n(h.probe_jitter_percent),
        down_after_probe_failures: n(h.down_after_probe_failures),
        up_after_probe_successes: n(h.up_after_probe_successes),
        down_after_call_failures: n(h.down_after_call_failures),
        alive_codes: h.alive_codes.clone().unwrap_or_default(),
    }
}

/// The built-in defaults (`crate::config::defaults`), for code that builds targets without a file.
impl Default for HealthSettings {
    fn default() -> Self {
        use crate::config::defaults as d;
        health(&HealthSpec {
            probe: Some(d::PROBE),
            probe_interval_ms: Some(d::PROBE_INTERVAL_MS),
            probe_timeout_ms: Some(d::PROBE_TIMEOUT_MS),
            probe_jitter_percent: Some(d::PROBE_JITTER_PERCENT),
            down_after_probe_failures: Some(d::DOWN_AFTER_PROBE_FAILURES),
            up_after_probe_successes: Some(d::UP_AFTER_PROBE_SUCCESSES),
            down_after_call_failures: Some(d::DOWN_AFTER_CALL_FAILURES),
            alive_codes: Some(codes(d::ALIVE_CODES)),
        })
    }
}

/// 1 s attempt, 10 s ring, 30 s deadline.
impl Default for Timers {
    fn default() -> Self {
        use crate::config::defaults as d;
        Timers {
            attempt_timeout: Duration::from_millis(d::ATTEMPT_TIMEOUT_MS),
            ring_timeout: Duration::from_millis(d::RING_TIMEOUT_MS),
            call_deadline: Duration::from_millis(d::CALL_DEADLINE_MS),
        }
    }
}

/// 408, 480, 486, 5xx, 600, 603.
impl Default for FailoverCodes {
    fn default() -> Self {
        FailoverCodes(codes(crate::config::defaults::FAILOVER_CODES))
    }
}

fn codes(list: &[&str]) -> Vec<(u16, u16)> {
    list.iter()
        .filter_map(|c| crate::config::parse_code(c).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_of_the_snapshot_types_match_a_file_that_sets_nothing() {
        let text = "listen = [\"udp:127.0.0.1:5060\"]\n[[targets]]\nid = \"a\"\nuri = \"sip:127.0.0.1\"\n\
                    failure_domain = \"x\"\n[default_route]\nchain = [\"a\"]\n";
        let (rules, _) = Rules::parse(text, "t.toml").unwrap();
        assert_eq!(rules.target("a").unwrap().health, HealthSettings::default());
        assert_eq!(rules.default_route.timers, Timers::default());
        assert_eq!(rules.default_route.failover, FailoverCodes::default());
        assert!(
            FailoverCodes::default().fails_over(503) && !FailoverCodes::default().fails_over(404)
        );
    }
}
