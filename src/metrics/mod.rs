//! Metrics for Prometheus at the admin endpoint's `GET /metrics` (text format 0.0.4), kept and
//! written by `prometheus-client`.
//!
//! [`Metrics`] holds what only the call path sees (calls by route and outcome, attempts by target
//! and outcome, failovers, call setup latency) and reloads; `scrape` adds at scrape time what other
//! parts already count (parse errors, health, events). Names carry the `sosrouter_` prefix and
//! their unit; counters end in `_total`.
//!
//! Hot-path cost: one DashMap shard read lock (`get`) and one relaxed atomic increment per event.
//! The call path never looks a label set up in a `Family` (that hashes the labels and takes the
//! family's lock): [`Metrics::prepare`] fetches each route's and target's counters from their
//! families once and keeps the handles (clones share the count) under the rules' `Arc<str>` ids,
//! so the call path never allocates; an id registered by nobody (a reload that did not call
//! `prepare`) is fetched once. No guard is held across a second map call or an `.await`.
//! `benches/metrics.rs` measures one call's metrics this way, through `Family` lookups, and with
//! the hand-written atomics this module had before.
//!
//! - `histogram` — latency histograms in seconds with the fixed buckets.
//! - `scrape`    — the whole `/metrics` page from [`Metrics`], the proxy's [`CallFigures`], health
//!   and the event bus.
//!
//! # Adding a metric
//!
//! - Counted on a hot path (a counter or histogram the code bumps): add a field to [`Metrics`]
//!   (`Counter`, `Family<Labels, Counter>` or [`Histogram`]), register a clone of it in
//!   [`Metrics::new`] with `register(&mut registry, "sosrouter_..._total", "Help.", x.clone())`
//!   (write the full name: the `_total` is taken off for `prometheus-client`, which adds it back),
//!   and give `Metrics` a method that bumps it. Parts that do not know `Metrics` (health, transport)
//!   get a closure from `app`, as `health.set_probe_lateness` does.
//! - Already counted elsewhere (a plain atomic another module owns): read it at scrape time in
//!   `scrape::render` with one `single(...)` or `family(...)` line; the call path pays nothing.
//! - A histogram of seconds: [`Histogram::new`] (buckets [`BOUNDS_SECONDS`]) and `.metric()` to
//!   register it; a process-wide one may be a `static` `LazyLock<Histogram>` like [`PROBE_LATENESS`]
//!   plus one `register` line in [`Metrics::new`].

mod histogram;
mod scrape;

pub use histogram::{BOUNDS_SECONDS, Histogram};
pub use scrape::{CallFigures, render};

/// The Content-Type of a scrape (Prometheus text format 0.0.4).
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How late each health probe went out against its schedule (recorded by `health`'s prober,
/// one process-wide prober, hence a static; registered with the other metrics).
pub static PROBE_LATENESS: LazyLock<Histogram> = LazyLock::new(Histogram::new);

/// How late the runtime lateness ticker (`tasks::Tasks::spawn_lateness_ticker`, every
/// [`RUNTIME_TICK`]) woke: a blocked or overloaded runtime thread shows up here. One per process.
pub static RUNTIME_LATENESS: LazyLock<Histogram> = LazyLock::new(Histogram::new);

/// The lateness ticker's interval.
pub const RUNTIME_TICK: Duration = Duration::from_millis(10);

use dashmap::DashMap;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Metric, Registry};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Registers `metric` under its full exposition name: a counter's `_total` is taken off (the
/// crate adds it back) and the help's final period too (the crate adds one).
pub(crate) fn register(reg: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    let name = name.strip_suffix("_total").unwrap_or(name);
    reg.register(name, help.strip_suffix('.').unwrap_or(help), metric);
}

/// How a call ended, as `sosrouter_calls_total{outcome}` counts it (once per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// A 2xx was relayed to the caller.
    Answered = 0,
    /// Every target failed: the caller got the best failure and the call is in the undelivered record.
    Failed = 1,
    /// The caller CANCELled before an answer.
    Cancelled = 2,
    /// A target's final response outside the failover set (e.g. 404, 403) was relayed as the answer.
    Rejected = 3,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 4] = [
        CallOutcome::Answered,
        CallOutcome::Failed,
        CallOutcome::Cancelled,
        CallOutcome::Rejected,
    ];
    pub fn label(self) -> &'static str {
        ["answered", "failed", "cancelled", "rejected"][self as usize]
    }
}

/// What an attempt showed, as `sosrouter_attempts_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// An 18x, a 2xx or a final outside the failover set: the target is taking calls.
    Progress = 0,
    TransportError = 1,
    AttemptTimeout = 2,
    RingTimeout = 3,
    FailureResponse = 4,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 5] = [
        AttemptOutcome::Progress,
        AttemptOutcome::TransportError,
        AttemptOutcome::AttemptTimeout,
        AttemptOutcome::RingTimeout,
        AttemptOutcome::FailureResponse,
    ];
    pub fn label(self) -> &'static str {
        [
            "progress",
            "transport_error",
            "attempt_timeout",
            "ring_timeout",
            "failure_response",
        ][self as usize]
    }
    /// The attempt outcome metric of a typed outcome; None for outcomes that end no attempt
    /// (overdue) or say nothing of the target (deadline, caller's CANCEL).
    pub fn of(o: crate::health::Outcome) -> Option<AttemptOutcome> {
        use crate::health::Outcome as O;
        Some(match o {
            O::Progress(_) | O::LateProgress(_) => AttemptOutcome::Progress,
            O::TransportError => AttemptOutcome::TransportError,
            O::AttemptTimeout => AttemptOutcome::AttemptTimeout,
            O::RingTimeout => AttemptOutcome::RingTimeout,
            O::FailureResponse(_) => AttemptOutcome::FailureResponse,
            O::Overdue | O::CutByDeadline | O::CancelledByCaller | O::TargetDown => return None,
        })
    }
    /// The failover this outcome causes when another target is tried next.
    pub fn failover_reason(self) -> Option<FailoverReason> {
        match self {
            AttemptOutcome::Progress => None,
            AttemptOutcome::TransportError => Some(FailoverReason::TransportError),
            AttemptOutcome::AttemptTimeout => Some(FailoverReason::AttemptTimeout),
            AttemptOutcome::RingTimeout => Some(FailoverReason::RingTimeout),
            AttemptOutcome::FailureResponse => Some(FailoverReason::FailureResponse),
        }
    }
}

/// Why a call moved on to its next target (`sosrouter_failovers_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailoverReason {
    TransportError = 0,
    AttemptTimeout = 1,
    RingTimeout = 2,
    FailureResponse = 3,
    /// The call deadline cut the attempt short to leave time for the last resort.
    Deadline = 4,
    /// Health took the target down (probes) while the attempt was trying or ringing.
    TargetDown = 5,
}

impl FailoverReason {
    pub const ALL: [FailoverReason; 6] = [
        FailoverReason::TransportError,
        FailoverReason::AttemptTimeout,
        FailoverReason::RingTimeout,
        FailoverReason::FailureResponse,
        FailoverReason::Deadline,
        FailoverReason::TargetDown,
    ];
    pub fn label(self) -> &'static str {
        [
            "transport_error",
            "attempt_timeout",
            "ring_timeout",
            "failure_response",
            "deadline",
            "target_down",
        ][self as usize]
    }
}

macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.label(), e)
            }
        }
    )*};
}
label_value!(CallOutcome, AttemptOutcome, FailoverReason);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    route: Arc<str>,
    outcome: CallOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    target: Arc<str>,
    outcome: AttemptOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailoverLabels {
    reason: FailoverReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// One id's counters, one per outcome, fetched from their family once.
type Row<const N: usize> = [Counter; N];

/// The call path's metrics. Shared as `Arc<Metrics>`; every method takes `&self` and never blocks
/// beyond a DashMap shard lock (or the histogram's own short lock).
#[derive(Debug)]
pub struct Metrics {
    /// Every family below, encoded at scrape time.
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    /// The call path's handles into `calls` and `attempts`, by id.
    calls_by_route: DashMap<Arc<str>, Row<4>>,
    attempts_by_target: DashMap<Arc<str>, Row<5>>,
    /// By `FailoverReason as usize`.
    failovers: Row<6>,
    /// From the INVITE's arrival to the first 2xx relayed.
    call_setup: Histogram,
    /// [ok, error].
    reloads: Row<2>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Fetches (creating at zero) the counters of `N` label sets of one family.
fn row<L, const N: usize>(family: &Family<L, Counter>, labels: impl Fn(usize) -> L) -> Row<N>
where
    L: Clone + std::hash::Hash + Eq,
{
    std::array::from_fn(|i| family.get_or_create_owned(&labels(i)))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut reg = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        register(
            &mut reg,
            "sosrouter_calls_total",
            "Calls by route and how they ended.",
            calls.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        register(
            &mut reg,
            "sosrouter_attempts_total",
            "Attempt outcomes by target; progress is counted once per attempt (an attempt that rang and then timed out counts under progress and ring_timeout).",
            attempts.clone(),
        );
        let failovers = Family::<FailoverLabels, Counter>::default();
        register(
            &mut reg,
            "sosrouter_failovers_total",
            "Calls moved on to their next target, by why.",
            failovers.clone(),
        );
        let call_setup = Histogram::new();
        register(
            &mut reg,
            "sosrouter_call_setup_seconds",
            "Time from the INVITE's arrival to the first 2xx relayed to the caller.",
            call_setup.metric(),
        );
        register(
            &mut reg,
            "sosrouter_probe_lateness_seconds",
            "How late each health probe was sent against its schedule.",
            PROBE_LATENESS.metric(),
        );
        register(
            &mut reg,
            "sosrouter_runtime_lateness_seconds",
            "How late the runtime's 10 ms ticker woke: a stalled or starved runtime shows up here.",
            RUNTIME_LATENESS.metric(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        register(
            &mut reg,
            "sosrouter_reloads_total",
            "Rules reloads by result.",
            reloads.clone(),
        );
        Metrics {
            registry: reg,
            failovers: row(&failovers, |i| FailoverLabels {
                reason: FailoverReason::ALL[i],
            }),
            reloads: row(&reloads, |i| ReloadLabels {
                result: ["ok", "error"][i],
            }),
            calls,
            attempts,
            calls_by_route: DashMap::new(),
            attempts_by_target: DashMap::new(),
            call_setup,
        }
    }

    fn call_row(&self, route: &Arc<str>) -> Row<4> {
        row(&self.calls, |i| CallLabels {
            route: route.clone(),
            outcome: CallOutcome::ALL[i],
        })
    }

    fn attempt_row(&self, target: &Arc<str>) -> Row<5> {
        row(&self.attempts, |i| AttemptLabels {
            target: target.clone(),
            outcome: AttemptOutcome::ALL[i],
        })
    }

    /// Registers target and route ids (at start and after each reload), so their series exist at
    /// zero and the call path only ever reads the maps. Ids removed by a reload keep their counts
    /// (counters never go backwards).
    pub fn prepare<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a Arc<str>>,
        routes: impl IntoIterator<Item = &'a Arc<str>>,
    ) {
        for t in targets {
            if !self.attempts_by_target.contains_key(&**t) {
                let row = self.attempt_row(t);
                self.attempts_by_target.entry(t.clone()).or_insert(row);
            }
        }
        for r in routes {
            if !self.calls_by_route.contains_key(&**r) {
                let row = self.call_row(r);
                self.calls_by_route.entry(r.clone()).or_insert(row);
            }
        }
    }

    /// [`Metrics::prepare`] from rules.
    pub fn prepare_rules(&self, rules: &crate::routing::Rules) {
        let routes = rules
            .routes
            .iter()
            .chain(std::iter::once(&rules.default_route));
        self.prepare(rules.targets.iter().map(|t| &t.id), routes.map(|r| &r.id));
    }

    pub fn call(&self, route: &Arc<str>, o: CallOutcome) {
        if let Some(row) = self.calls_by_route.get(&**route) {
            row[o as usize].inc();
            return;
        }
        // First sight of an id nobody registered (the guard above is already dropped); a race
        // with another first sight is harmless: both rows hold the family's same counters.
        let row = self.call_row(route);
        row[o as usize].inc();
        self.calls_by_route.entry(route.clone()).or_insert(row);
    }

    pub fn attempt(&self, target: &Arc<str>, o: AttemptOutcome) {
        if let Some(row) = self.attempts_by_target.get(&**target) {
            row[o as usize].inc();
            return;
        }
        let row = self.attempt_row(target);
        row[o as usize].inc();
        self.attempts_by_target.entry(target.clone()).or_insert(row);
    }

    pub fn failover(&self, r: FailoverReason) {
        self.failovers[r as usize].inc();
    }

    pub fn call_setup(&self, d: Duration) {
        self.call_setup.observe(d);
    }

    /// Counts a rules reload: applied (`ok`) or refused. Called by the reload code.
    pub fn reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].inc();
    }

    /// Current value of one `calls_total` series (tests, status pages).
    pub fn calls(&self, route: &str, o: CallOutcome) -> u64 {
        self.calls_by_route
            .get(route)
            .map_or(0, |r| r[o as usize].get())
    }

    pub fn attempts(&self, target: &str, o: AttemptOutcome) -> u64 {
        self.attempts_by_target
            .get(target)
            .map_or(0, |r| r[o as usize].get())
    }

    pub fn failovers(&self, r: FailoverReason) -> u64 {
        self.failovers[r as usize].get()
    }

    pub fn reloads(&self, ok: bool) -> u64 {
        self.reloads[usize::from(!ok)].get()
    }

    /// Writes this struct's families in the text format.
    pub fn render_into(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::prometheus_text::encode(out, &self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;

    /// The exact text of a small registry: full names kept (`_total` once), one period ending
    /// each help, help and label values escaped, histogram buckets cumulative up to `+Inf`.
    #[test]
    fn a_small_registry_renders_exactly() {
        let mut reg = Registry::default();
        let c = Counter::<u64>::default();
        c.inc_by(3);
        register(
            &mut reg,
            "sosrouter_x_total",
            "Things \\ counted\non two lines.",
            c,
        );
        let f = Family::<AttemptLabels, Counter>::default();
        let labels = AttemptLabels {
            target: "a\"b\\c\nd".into(),
            outcome: AttemptOutcome::RingTimeout,
        };
        f.get_or_create(&labels).inc();
        register(&mut reg, "sosrouter_attempts_total", "Attempts", f);
        let h = Histogram::new();
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_secs(40));
        register(&mut reg, "sosrouter_h_seconds", "H.", h.metric());
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        let mut want = String::from(
            "# HELP sosrouter_x_total Things \\\\ counted\\non two lines.\n\
             # TYPE sosrouter_x_total counter\n\
             sosrouter_x_total 3\n\
             # HELP sosrouter_attempts_total Attempts.\n\
             # TYPE sosrouter_attempts_total counter\n\
             sosrouter_attempts_total{target=\"a\\\"b\\\\c\\nd\",outcome=\"ring_timeout\"} 1\n\
             # HELP sosrouter_h_seconds H.\n\
             # TYPE sosrouter_h_seconds histogram\n",
        );
        let counts = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2];
        let les = [
            "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
            "5", "10", "20", "30", "+Inf",
        ];
        for (le, n) in les.iter().zip(counts) {
            want.push_str(&format!("sosrouter_h_seconds_bucket{{le=\"{le}\"}} {n}\n"));
        }
        want.push_str("sosrouter_h_seconds_sum 40.002\nsosrouter_h_seconds_count 2\n");
        assert_eq!(out, want);
    }

    #[test]
    fn the_call_path_counts_through_its_handles_into_the_families() {
        let m = Metrics::new();
        let (a, r): (Arc<str>, Arc<str>) = ("psap-a".into(), "sos".into());
        m.prepare([&a], [&r]);
        m.attempt(&a, AttemptOutcome::Progress);
        let late: Arc<str> = "added-late".into(); // an id nobody prepared
        m.attempt(&late, AttemptOutcome::TransportError);
        m.attempt(&late, AttemptOutcome::TransportError);
        m.call(&r, CallOutcome::Answered);
        m.failover(FailoverReason::Deadline);
        m.reload(false);
        assert_eq!(m.attempts("psap-a", AttemptOutcome::Progress), 1);
        assert_eq!(m.attempts("added-late", AttemptOutcome::TransportError), 2);
        assert_eq!(m.calls("sos", CallOutcome::Answered), 1);
        assert_eq!(m.failovers(FailoverReason::Deadline), 1);
        assert_eq!((m.reloads(true), m.reloads(false)), (0, 1));
        let mut page = String::new();
        m.render_into(&mut page).unwrap();
        for line in [
            "sosrouter_attempts_total{target=\"psap-a\",outcome=\"progress\"} 1",
            "sosrouter_attempts_total{target=\"psap-a\",outcome=\"ring_timeout\"} 0",
            "sosrouter_attempts_total{target=\"added-late\",outcome=\"transport_error\"} 2",
            "sosrouter_calls_total{route=\"sos\",outcome=\"answered\"} 1",
            "sosrouter_failovers_total{reason=\"deadline\"} 1",
            "sosrouter_reloads_total{result=\"error\"} 1",
            "sosrouter_reloads_total{result=\"ok\"} 0",
            "# TYPE sosrouter_call_setup_seconds histogram",
            "# TYPE sosrouter_probe_lateness_seconds histogram",
        ] {
            assert!(page.lines().any(|l| l == line), "no `{line}` in:\n{page}");
        }
    }
}
