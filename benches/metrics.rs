//! What one call's metrics cost on the call path, three ways (issue 14: keep a hand-written
//! writer only if it is measurably cheaper):
//!
//! - `prometheus_client_cached` — `sosrouter::metrics::Metrics` as it is: `prometheus-client`
//!   counters and histogram, the call path holding each id's counter handles in a DashMap;
//! - `prometheus_client_family` — the same crate used naively: `Family::get_or_create` with a
//!   label struct (an `Arc` clone, hashing, the family's read lock) per event;
//! - `handwritten` — the atomics this module had before (a DashMap of per-id `AtomicU64` rows and
//!   a fixed-bucket histogram of three relaxed increments), kept here only as the baseline.
//!
//! Two calls: `answered` (one attempt that answered: attempt, call, setup time) and `failover`
//! (the primary fails, the backup answers: two attempts, one failover, call, setup time).
//!
//! Run: `cargo bench --bench metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic on a broken fixture

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;
use sosrouter::metrics::{AttemptOutcome, BOUNDS_SECONDS, CallOutcome, FailoverReason, Metrics};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const SETUP: Duration = Duration::from_millis(42);

/// The ids a lab rules file registers (4 targets, 2 routes), as `Arc<str>` like the rules'.
fn ids() -> (Vec<Arc<str>>, Vec<Arc<str>>) {
    let t = [
        "psap-primary",
        "psap-backup",
        "business-line",
        "pstn-gateway",
    ];
    let r = ["sos", "default"];
    (
        t.iter().map(|s| Arc::from(*s)).collect(),
        r.iter().map(|s| Arc::from(*s)).collect(),
    )
}

/// The metrics recorder interface the three variants share.
trait Record {
    fn attempt(&self, target: &Arc<str>, o: AttemptOutcome);
    fn failover(&self, r: FailoverReason);
    fn call(&self, route: &Arc<str>, o: CallOutcome);
    fn setup(&self, d: Duration);
}

impl Record for Metrics {
    fn attempt(&self, target: &Arc<str>, o: AttemptOutcome) {
        Metrics::attempt(self, target, o)
    }
    fn failover(&self, r: FailoverReason) {
        Metrics::failover(self, r)
    }
    fn call(&self, route: &Arc<str>, o: CallOutcome) {
        Metrics::call(self, route, o)
    }
    fn setup(&self, d: Duration) {
        Metrics::call_setup(self, d)
    }
}

/// `prometheus-client` used without handles: one `Family` lookup per event.
mod family {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Label(pub &'static str);
    impl EncodeLabelValue for Label {
        fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
            EncodeLabelValue::encode(&self.0, e)
        }
    }
    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    pub struct Call {
        route: Arc<str>,
        outcome: Label,
    }
    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    pub struct Attempt {
        target: Arc<str>,
        outcome: Label,
    }
    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    pub struct Failover {
        reason: Label,
    }

    pub struct Naive {
        pub calls: Family<Call, Counter>,
        pub attempts: Family<Attempt, Counter>,
        pub failovers: Family<Failover, Counter>,
        pub setup: PcHistogram,
    }

    impl Naive {
        pub fn new() -> Naive {
            Naive {
                calls: Family::default(),
                attempts: Family::default(),
                failovers: Family::default(),
                setup: PcHistogram::new(BOUNDS_SECONDS),
            }
        }
    }

    impl Record for Naive {
        fn attempt(&self, target: &Arc<str>, o: AttemptOutcome) {
            let l = Attempt {
                target: target.clone(),
                outcome: Label(o.label()),
            };
            self.attempts.get_or_create(&l).inc();
        }
        fn failover(&self, r: FailoverReason) {
            let l = Failover {
                reason: Label(r.label()),
            };
            self.failovers.get_or_create(&l).inc();
        }
        fn call(&self, route: &Arc<str>, o: CallOutcome) {
            let l = Call {
                route: route.clone(),
                outcome: Label(o.label()),
            };
            self.calls.get_or_create(&l).inc();
        }
        fn setup(&self, d: Duration) {
            self.setup.observe(d.as_secs_f64());
        }
    }
}

/// The hand-written atomics `src/metrics` had before it moved to `prometheus-client` (the
/// recording half; the writer is gone), as the baseline.
mod handwritten {
    use super::*;
    use dashmap::DashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    type Row<const N: usize> = [AtomicU64; N];

    fn bump<const N: usize>(map: &DashMap<Arc<str>, Row<N>>, key: &Arc<str>, i: usize) {
        if let Some(row) = map.get(&**key) {
            row[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        map.entry(key.clone())
            .or_insert_with(|| std::array::from_fn(|_| AtomicU64::new(0)))[i]
            .fetch_add(1, Ordering::Relaxed);
    }

    #[derive(Default)]
    pub struct Old {
        calls: DashMap<Arc<str>, Row<4>>,
        attempts: DashMap<Arc<str>, Row<5>>,
        failovers: Row<5>,
        buckets: [AtomicU64; BOUNDS_SECONDS.len() + 1],
        sum_micros: AtomicU64,
    }

    impl Old {
        pub fn prepare(&self, targets: &[Arc<str>], routes: &[Arc<str>]) {
            for t in targets {
                self.attempts
                    .insert(t.clone(), std::array::from_fn(|_| AtomicU64::new(0)));
            }
            for r in routes {
                self.calls
                    .insert(r.clone(), std::array::from_fn(|_| AtomicU64::new(0)));
            }
        }
    }

    impl Record for Old {
        fn attempt(&self, target: &Arc<str>, o: AttemptOutcome) {
            bump(&self.attempts, target, o as usize);
        }
        fn failover(&self, r: FailoverReason) {
            self.failovers[r as usize].fetch_add(1, Ordering::Relaxed);
        }
        fn call(&self, route: &Arc<str>, o: CallOutcome) {
            bump(&self.calls, route, o as usize);
        }
        fn setup(&self, d: Duration) {
            let s = d.as_secs_f64();
            let i = BOUNDS_SECONDS
                .iter()
                .position(|b| s <= *b)
                .unwrap_or(BOUNDS_SECONDS.len());
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
            let us = d.as_micros().min(u64::MAX as u128) as u64;
            self.sum_micros.fetch_add(us, Ordering::Relaxed);
        }
    }
}

fn answered<R: Record>(m: &R, t: &[Arc<str>], r: &[Arc<str>]) {
    m.attempt(&t[0], AttemptOutcome::Progress);
    m.call(&r[0], CallOutcome::Answered);
    m.setup(black_box(SETUP));
}

fn failover<R: Record>(m: &R, t: &[Arc<str>], r: &[Arc<str>]) {
    m.attempt(&t[0], AttemptOutcome::FailureResponse);
    m.failover(FailoverReason::FailureResponse);
    m.attempt(&t[1], AttemptOutcome::Progress);
    m.call(&r[0], CallOutcome::Answered);
    m.setup(black_box(SETUP));
}

/// One benchmark group per call shape, the three recorders side by side.
fn group<A: Record, B: Record, C: Record>(
    c: &mut Criterion,
    name: &str,
    (cached, naive, old): (&A, &B, &C),
    failed_first: bool,
    (t, r): (&[Arc<str>], &[Arc<str>]),
) {
    fn call<R: Record>(m: &R, failed_first: bool, t: &[Arc<str>], r: &[Arc<str>]) {
        if failed_first {
            failover(m, t, r)
        } else {
            answered(m, t, r)
        }
    }
    let mut g = c.benchmark_group(format!("metrics_one_call/{name}"));
    g.bench_function("prometheus_client_cached", |b| {
        b.iter(|| call(black_box(cached), failed_first, t, r))
    });
    g.bench_function("prometheus_client_family", |b| {
        b.iter(|| call(black_box(naive), failed_first, t, r))
    });
    g.bench_function("handwritten", |b| {
        b.iter(|| call(black_box(old), failed_first, t, r))
    });
    g.finish();
}

fn one_call(c: &mut Criterion) {
    let (t, r) = ids();
    let cached = Metrics::new();
    cached.prepare(&t, &r);
    let naive = family::Naive::new();
    let old = handwritten::Old::default();
    old.prepare(&t, &r);
    let all = (&cached, &naive, &old);
    group(c, "answered", all, false, (&t, &r));
    group(c, "failover", all, true, (&t, &r));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = one_call
}
criterion_main!(benches);
