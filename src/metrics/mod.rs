//! Metrics for Prometheus at the admin endpoint's `GET /metrics` (text format 0.0.4).
//!
//! [`Metrics`] holds what only the call path sees (calls by route and outcome, attempts by target
//! and outcome, failovers, call setup latency) and reloads; `scrape` adds at scrape time what other
//! parts already count (parse errors, health, events). Names carry the `sosrouter_` prefix and
//! their unit; counters end in `_total`.
//!
//! Hot-path cost: one DashMap shard read lock (`get`) and one relaxed atomic increment per event.
//! Keys are the rules' `Arc<str>` ids, registered by [`Metrics::prepare`] so the call path never
//! allocates; an id registered by nobody (a reload that did not call `prepare`) is inserted once.
//! No guard is held across a second map call or an `.await`.
//!
//! - `text`      — the exposition writer and label escaping.
//! - `histogram` — fixed-bucket latency histogram on atomics.
//! - `scrape`    — the whole `/metrics` page from [`Metrics`], the proxy's [`CallFigures`], health
//!   and the event bus.

mod histogram;
mod scrape;
pub mod text;

pub use histogram::{BOUNDS_SECONDS, Histogram};
pub use scrape::{CallFigures, render};

/// How late each health probe went out against its schedule (recorded by `health`'s prober,
/// one process-wide prober, hence a static; written with the other metrics).
pub static PROBE_LATENESS: Histogram = Histogram::new();

/// How late the runtime lateness ticker (`tasks::Tasks::spawn_lateness_ticker`, every
/// [`RUNTIME_TICK`]) woke: a blocked or overloaded runtime thread shows up here. One per process.
pub static RUNTIME_LATENESS: Histogram = Histogram::new();

/// The lateness ticker's interval.
pub const RUNTIME_TICK: Duration = Duration::from_millis(10);
pub use text::{CONTENT_TYPE, Exposition};

use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a call ended, as `sosrouter_calls_total{outcome}` counts it (once per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
            O::Progress(_) => AttemptOutcome::Progress,
            O::TransportError => AttemptOutcome::TransportError,
            O::AttemptTimeout => AttemptOutcome::AttemptTimeout,
            O::RingTimeout => AttemptOutcome::RingTimeout,
            O::FailureResponse(_) => AttemptOutcome::FailureResponse,
            O::Overdue | O::CutByDeadline | O::CancelledByCaller => return None,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverReason {
    TransportError = 0,
    AttemptTimeout = 1,
    RingTimeout = 2,
    FailureResponse = 3,
    /// The call deadline cut the attempt short to leave time for the last resort.
    Deadline = 4,
}

impl FailoverReason {
    pub const ALL: [FailoverReason; 5] = [
        FailoverReason::TransportError,
        FailoverReason::AttemptTimeout,
        FailoverReason::RingTimeout,
        FailoverReason::FailureResponse,
        FailoverReason::Deadline,
    ];
    pub fn label(self) -> &'static str {
        [
            "transport_error",
            "attempt_timeout",
            "ring_timeout",
            "failure_response",
            "deadline",
        ][self as usize]
    }
}

type Row<const N: usize> = [AtomicU64; N];

/// The call path's metrics. Shared as `Arc<Metrics>`; every method takes `&self` and never blocks
/// beyond a DashMap shard lock.
#[derive(Debug, Default)]
pub struct Metrics {
    calls: DashMap<Arc<str>, Row<4>>,
    attempts: DashMap<Arc<str>, Row<5>>,
    failovers: Row<5>,
    /// From the INVITE's arrival to the first 2xx relayed.
    call_setup: Histogram,
    /// [ok, error].
    reloads: Row<2>,
}

fn bump<const N: usize>(map: &DashMap<Arc<str>, Row<N>>, key: &Arc<str>, i: usize) {
    if let Some(row) = map.get(&**key) {
        row[i].fetch_add(1, Ordering::Relaxed);
        return;
    }
    // First sight of an id nobody registered: insert it once (the guard above is already dropped).
    map.entry(key.clone())
        .or_insert_with(|| std::array::from_fn(|_| AtomicU64::new(0)))[i]
        .fetch_add(1, Ordering::Relaxed);
}

fn register<const N: usize>(map: &DashMap<Arc<str>, Row<N>>, key: &Arc<str>) {
    if !map.contains_key(&**key) {
        map.entry(key.clone())
            .or_insert_with(|| std::array::from_fn(|_| AtomicU64::new(0)));
    }
}

impl Metrics {
    /// Registers target and route ids (at start and after each reload), so their series exist at
    /// zero and the call path only ever reads the maps. Ids removed by a reload keep their counts
    /// (counters never go backwards).
    pub fn prepare<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a Arc<str>>,
        routes: impl IntoIterator<Item = &'a Arc<str>>,
    ) {
        for t in targets {
            register(&self.attempts, t);
        }
        for r in routes {
            register(&self.calls, r);
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
        bump(&self.calls, route, o as usize);
    }

    pub fn attempt(&self, target: &Arc<str>, o: AttemptOutcome) {
        bump(&self.attempts, target, o as usize);
    }

    pub fn failover(&self, r: FailoverReason) {
        self.failovers[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn call_setup(&self, d: Duration) {
        self.call_setup.observe(d);
    }

    /// Counts a rules reload: applied (`ok`) or refused. Called by the reload code.
    pub fn reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Current value of one `calls_total` series (tests, status pages).
    pub fn calls(&self, route: &str, o: CallOutcome) -> u64 {
        self.calls
            .get(route)
            .map_or(0, |r| r[o as usize].load(Ordering::Relaxed))
    }

    pub fn attempts(&self, target: &str, o: AttemptOutcome) -> u64 {
        self.attempts
            .get(target)
            .map_or(0, |r| r[o as usize].load(Ordering::Relaxed))
    }

    pub fn failovers(&self, r: FailoverReason) -> u64 {
        self.failovers[r as usize].load(Ordering::Relaxed)
    }

    pub fn reloads(&self, ok: bool) -> u64 {
        self.reloads[usize::from(!ok)].load(Ordering::Relaxed)
    }

    /// Writes this struct's families.
    pub fn render_into(&self, e: &mut Exposition) {
        let calls = sorted(&self.calls);
        e.family(
            "sosrouter_calls_total",
            "counter",
            "Calls by route and how they ended.",
        );
        for (route, row) in &calls {
            for o in CallOutcome::ALL {
                let labels = [("route", &**route), ("outcome", o.label())];
                e.sample("sosrouter_calls_total", &labels, row[o as usize]);
            }
        }
        let attempts = sorted(&self.attempts);
        e.family(
            "sosrouter_attempts_total",
            "counter",
            "Attempt outcomes by target; progress is counted once per attempt (an attempt that rang and then timed out counts under progress and ring_timeout).",
        );
        for (target, row) in &attempts {
            for o in AttemptOutcome::ALL {
                let labels = [("target", &**target), ("outcome", o.label())];
                e.sample("sosrouter_attempts_total", &labels, row[o as usize]);
            }
        }
        e.family(
            "sosrouter_failovers_total",
            "counter",
            "Calls moved on to their next target, by why.",
        );
        for r in FailoverReason::ALL {
            let v = self.failovers(r);
            e.sample("sosrouter_failovers_total", &[("reason", r.label())], v);
        }
        e.family(
            "sosrouter_call_setup_seconds",
            "histogram",
            "Time from the INVITE's arrival to the first 2xx relayed to the caller.",
        );
        self.call_setup.render(e, "sosrouter_call_setup_seconds");
        e.family(
            "sosrouter_probe_lateness_seconds",
            "histogram",
            "How late each health probe was sent against its schedule.",
        );
        PROBE_LATENESS.render(e, "sosrouter_probe_lateness_seconds");
        e.family(
            "sosrouter_runtime_lateness_seconds",
            "histogram",
            "How late a task sleeping 10 ms at a time woke (a stalled runtime thread shows here).",
        );
        RUNTIME_LATENESS.render(e, "sosrouter_runtime_lateness_seconds");
        e.family(
            "sosrouter_reloads_total",
            "counter",
            "Rules reloads by result.",
        );
        for ok in [true, false] {
            let result = if ok { "ok" } else { "error" };
            e.sample(
                "sosrouter_reloads_total",
                &[("result", result)],
                self.reloads(ok),
            );
        }
    }
}

/// A map's rows as plain numbers, sorted by key (stable output; read one entry at a time).
fn sorted<const N: usize>(map: &DashMap<Arc<str>, Row<N>>) -> Vec<(Arc<str>, [u64; N])> {
    let mut v: Vec<_> = map
        .iter()
        .map(|e| {
            let row = std::array::from_fn(|i| e.value()[i].load(Ordering::Relaxed));
            (e.key().clone(), row)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
