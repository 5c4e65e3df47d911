//! The whole `/metrics` page. The only part of `metrics` that reads other modules: health's
//! per-target snapshot and the event bus, read at scrape time so the call path pays nothing for
//! them; the proxy's plain counters come in as [`CallFigures`] (metrics never imports the proxy).

use super::Metrics;
use super::text::Exposition;
use crate::events::Bus;
use crate::health::{Health, State};
use std::sync::atomic::Ordering;

/// The proxy's plain counters at scrape time (`Proxy::figures`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallFigures {
    /// Initial INVITEs that started a call.
    pub calls: u64,
    /// Calls whose server transaction is still owned by a call task.
    pub in_flight: u64,
    /// Calls no target answered.
    pub undelivered: u64,
    /// Received messages that did not parse.
    pub parse_errors: u64,
    /// Responses that matched nothing.
    pub stray_responses: u64,
}

/// Renders every family, in a fixed order.
pub fn render(calls: &CallFigures, metrics: &Metrics, health: &Health, bus: &Bus) -> String {
    let mut e = Exposition::default();
    metrics.render_into(&mut e);
    e.single(
        "sosrouter_calls_received_total",
        "counter",
        "Initial INVITEs that started a call.",
        calls.calls,
    );
    e.single(
        "sosrouter_calls_in_flight",
        "gauge",
        "Calls whose server transaction is still owned by a call task.",
        calls.in_flight,
    );
    e.single(
        "sosrouter_undelivered_calls_total",
        "counter",
        "Calls no target answered (written to the undelivered record).",
        calls.undelivered,
    );
    e.single(
        "sosrouter_parse_errors_total",
        "counter",
        "Received SIP messages that did not parse and were dropped.",
        calls.parse_errors,
    );
    e.single(
        "sosrouter_stray_responses_total",
        "counter",
        "Responses that matched no call, relay or probe and were dropped.",
        calls.stray_responses,
    );
    render_targets(&mut e, health);
    render_events(&mut e, bus);
    e.finish()
}

fn render_targets(e: &mut Exposition, health: &Health) {
    let targets = health.snapshot();
    e.family(
        "sosrouter_target_up",
        "gauge",
        "1 when the target's health makes it ready (up or probation), 0 when down.",
    );
    for t in &targets {
        let up = u8::from(t.state.is_ready());
        e.sample("sosrouter_target_up", &[("target", &t.id)], up);
    }
    e.family(
        "sosrouter_target_state",
        "gauge",
        "1 for the target's current health state, 0 for the others.",
    );
    for t in &targets {
        for s in [State::Up, State::Down, State::Recovering] {
            let name = s.to_string();
            let v = u8::from(t.state == s);
            e.sample(
                "sosrouter_target_state",
                &[("target", &t.id), ("state", &name)],
                v,
            );
        }
    }
    e.family(
        "sosrouter_target_enabled",
        "gauge",
        "1 when the operator switch lets calls reach the target, 0 when disabled.",
    );
    for t in &targets {
        let v = u8::from(t.enabled);
        e.sample("sosrouter_target_enabled", &[("target", &t.id)], v);
    }
    e.family(
        "sosrouter_target_transitions_total",
        "counter",
        "Health state changes of the target.",
    );
    for t in &targets {
        let v = t.counters.transitions;
        e.sample(
            "sosrouter_target_transitions_total",
            &[("target", &t.id)],
            v,
        );
    }
    e.family(
        "sosrouter_probes_total",
        "counter",
        "OPTIONS probes on behalf of the target by result (sent, ok, failed).",
    );
    for t in &targets {
        let c = &t.counters;
        for (result, v) in [
            ("sent", c.probes_sent),
            ("ok", c.probes_ok),
            ("failed", c.probes_failed),
        ] {
            e.sample(
                "sosrouter_probes_total",
                &[("target", &t.id), ("result", result)],
                v,
            );
        }
    }
    render_tls(e, &targets);
}

/// TLS targets only: connections open now and handshakes failed, per target.
fn render_tls(e: &mut Exposition, targets: &[crate::health::TargetStatus]) {
    let tls: Vec<_> = targets
        .iter()
        .filter_map(|t| Some((t.id.as_str(), t.tls.as_ref()?)))
        .collect();
    if tls.is_empty() {
        return;
    }
    e.family(
        "sosrouter_tls_connections",
        "gauge",
        "TLS connections open toward the target.",
    );
    for (id, f) in &tls {
        e.sample(
            "sosrouter_tls_connections",
            &[("target", id)],
            f.connections,
        );
    }
    e.family(
        "sosrouter_tls_handshake_failures_total",
        "counter",
        "TLS handshakes toward the target that failed (certificate refused, wrong name, expired, timeout).",
    );
    for (id, f) in &tls {
        e.sample(
            "sosrouter_tls_handshake_failures_total",
            &[("target", id)],
            f.handshake_failures,
        );
    }
}

fn render_events(e: &mut Exposition, bus: &Bus) {
    e.single(
        "sosrouter_events_published_total",
        "counter",
        "Alert events published (health, operator, reload, undelivered).",
        bus.published(),
    );
    let stats = bus.webhook_stats();
    let n = |f: fn(&crate::events::WebhookStats) -> &std::sync::atomic::AtomicU64| {
        stats.as_ref().map_or(0, |s| f(s).load(Ordering::Relaxed))
    };
    e.family(
        "sosrouter_webhook_events_total",
        "counter",
        "Events the webhook delivered, gave up on after every retry, or dropped from its full queue.",
    );
    for (result, v) in [
        ("delivered", n(|s| &s.delivered)),
        ("failed", n(|s| &s.failed)),
        ("dropped", n(|s| &s.dropped)),
    ] {
        e.sample("sosrouter_webhook_events_total", &[("result", result)], v);
    }
    e.single(
        "sosrouter_webhook_failed_tries_total",
        "counter",
        "Single webhook POSTs that failed (each retry counts).",
        n(|s| &s.failed_tries),
    );
}
