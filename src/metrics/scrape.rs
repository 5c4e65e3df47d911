//! The whole `/metrics` page. The only part of `metrics` that reads other modules: health's
//! per-target snapshot and the event bus, read at scrape time so the call path pays nothing for
//! them; the proxy's plain counters come in as [`CallFigures`] (metrics never imports the proxy).
//! These values are counted elsewhere, so they go into a registry made for the one scrape.

use super::Metrics;
use crate::events::Bus;
use crate::health::{Health, State};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
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
    /// Call timers held back because they fired late (the runtime was behind).
    pub timers_held_stall: u64,
    /// Call timers held back because sosrouter was behind reading its UDP socket.
    pub timers_held_backlog: u64,
}

/// Label sets of the scrape-time families, in written order.
type Labels = Vec<(&'static str, String)>;

/// One scrape-time family: rows of values counted elsewhere, written straight to the encoder in
/// order (no `Family` map: at 30 000 targets building one per scrape hashed and allocated every
/// label set again, seconds of a runtime thread).
#[derive(Debug)]
struct Rows {
    /// The exposition name without a counter's `_total` (the encoder adds it back).
    name: String,
    help: String,
    counter: bool,
    /// `None` for a single value without labels.
    rows: Vec<(Option<Labels>, u64)>,
}

/// Every scrape-time family, in written order: one collector of the scrape's registry.
#[derive(Debug, Default)]
struct Scraped(Vec<Rows>);

impl Scraped {
    /// A value another part counts: a counter when `name` ends in `_total`, a gauge otherwise.
    fn single(&mut self, name: &str, help: &str, v: u64) {
        self.push(name, help, vec![(None, v)]);
    }

    /// A labelled family of values counted elsewhere (kind chosen by the name, as in [`Scraped::single`]).
    fn family(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
        let rows = rows.into_iter().map(|(l, v)| (Some(l), v)).collect();
        self.push(name, help, rows);
    }

    fn push(&mut self, name: &str, help: &str, rows: Vec<(Option<Labels>, u64)>) {
        let counter = name.ends_with("_total");
        self.0.push(Rows {
            name: name.strip_suffix("_total").unwrap_or(name).to_string(),
            help: help.strip_suffix('.').unwrap_or(help).to_string(),
            counter,
            rows,
        });
    }
}

impl Collector for Scraped {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let ty = if f.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut me = enc.encode_descriptor(&f.name, &f.help, None, ty)?;
            if let [(None, v)] = f.rows.as_slice() {
                if f.counter {
                    ConstCounter::new(*v).encode(me)?;
                } else {
                    ConstGauge::new(*v).encode(me)?;
                }
                continue;
            }
            for (labels, v) in &f.rows {
                let Some(l) = labels else { continue };
                if f.counter {
                    ConstCounter::new(*v).encode(me.encode_family(l)?)?;
                } else {
                    ConstGauge::new(*v).encode(me.encode_family(l)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Renders every family: [`Metrics`]' first, then the scrape-time ones in a fixed order.
/// (Called by the admin server's `GET /metrics` route through the closure `app` gives it.)
pub fn render(calls: &CallFigures, metrics: &Metrics, health: &Health, bus: &Bus) -> String {
    let mut reg = Scraped::default();
    reg.single(
        "sosrouter_calls_received_total",
        "Initial INVITEs that started a call.",
        calls.calls,
    );
    reg.single(
        "sosrouter_calls_in_flight",
        "Calls whose server transaction is still owned by a call task.",
        calls.in_flight,
    );
    reg.single(
        "sosrouter_undelivered_calls_total",
        "Calls no target answered (written to the undelivered record).",
        calls.undelivered,
    );
    reg.single(
        "sosrouter_parse_errors_total",
        "Received SIP messages that did not parse and were dropped.",
        calls.parse_errors,
    );
    reg.single(
        "sosrouter_stray_responses_total",
        "Responses that matched no call, relay or probe and were dropped.",
        calls.stray_responses,
    );
    reg.family(
        "sosrouter_call_timers_held_total",
        "Call timers held back instead of failing over: fired late (stall), or sosrouter was behind reading its UDP socket (backlog).",
        [
            (vec![("why", "stall".to_string())], calls.timers_held_stall),
            (vec![("why", "backlog".to_string())], calls.timers_held_backlog),
        ],
    );
    reg.single(
        "sosrouter_health_verdicts_held_total",
        "Probe and call timeouts not counted against their target because sosrouter itself was behind reading its sockets then.",
        health.verdicts_held(),
    );
    targets(&mut reg, health);
    events(&mut reg, bus);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(reg));
    let reg = registry;
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; an encoder error would leave a shorter page, never a panic.
    let _ = metrics.render_into(&mut out);
    let _ = prometheus_text::encode(&mut out, &reg);
    out
}

fn targets(reg: &mut Scraped, health: &Health) {
    let targets = health.snapshot();
    let one = |id: &str| vec![("target", id.to_string())];
    reg.family(
        "sosrouter_target_up",
        "1 when the target's health makes it ready (up or probation), 0 when down.",
        targets
            .iter()
            .map(|t| (one(&t.id), u64::from(t.state.is_ready()))),
    );
    reg.family(
        "sosrouter_target_state",
        "1 for the target's current health state, 0 for the others.",
        targets.iter().flat_map(|t| {
            [State::Up, State::Down, State::Recovering].map(|s| {
                let labels = vec![("target", t.id.to_string()), ("state", s.to_string())];
                (labels, u64::from(t.state == s))
            })
        }),
    );
    reg.family(
        "sosrouter_target_enabled",
        "1 when the operator switch lets calls reach the target, 0 when disabled.",
        targets.iter().map(|t| (one(&t.id), u64::from(t.enabled))),
    );
    reg.family(
        "sosrouter_target_transitions_total",
        "Health state changes of the target.",
        targets.iter().map(|t| (one(&t.id), t.counters.transitions)),
    );
    reg.family(
        "sosrouter_probes_total",
        "OPTIONS probes on behalf of the target by result (sent, ok, failed).",
        targets.iter().flat_map(|t| {
            let c = &t.counters;
            [
                ("sent", c.probes_sent),
                ("ok", c.probes_ok),
                ("failed", c.probes_failed),
            ]
            .map(|(result, v)| {
                let labels = vec![("target", t.id.to_string()), ("result", result.to_string())];
                (labels, v)
            })
        }),
    );
    // TLS targets only: connections open now and handshakes failed, per target.
    let tls: Vec<_> = targets
        .iter()
        .filter_map(|t| Some((t.id.as_str(), t.tls.as_ref()?)))
        .collect();
    if !tls.is_empty() {
        reg.family(
            "sosrouter_tls_connections",
            "TLS connections open toward the target.",
            tls.iter().map(|(id, f)| (one(id), f.connections)),
        );
        reg.family(
            "sosrouter_tls_handshake_failures_total",
            "TLS handshakes toward the target that failed (certificate refused, wrong name, expired, timeout).",
            tls.iter().map(|(id, f)| (one(id), f.handshake_failures)),
        );
    }
}

fn events(reg: &mut Scraped, bus: &Bus) {
    reg.single(
        "sosrouter_events_published_total",
        "Alert events published (health, operator, reload, undelivered).",
        bus.published(),
    );
    let stats = bus.webhook_stats();
    let n = |f: fn(&crate::events::WebhookStats) -> &std::sync::atomic::AtomicU64| {
        stats.as_ref().map_or(0, |s| f(s).load(Ordering::Relaxed))
    };
    reg.family(
        "sosrouter_webhook_events_total",
        "Events the webhook delivered, gave up on after every retry, or dropped from its full queue.",
        [
            ("delivered", n(|s| &s.delivered)),
            ("failed", n(|s| &s.failed)),
            ("dropped", n(|s| &s.dropped)),
        ]
        .map(|(result, v)| (vec![("result", result.to_string())], v)),
    );
    reg.single(
        "sosrouter_webhook_failed_tries_total",
        "Single webhook POSTs that failed (each retry counts).",
        n(|s| &s.failed_tries),
    );
}
