//! Routing-decision micro-benchmarks: `Rules::select` (first matching route) and `routing::plan`
//! (the chain ordered by readiness) for a realistic call, on the lab rules and on the statewide
//! Massachusetts rules (a dozen source-trunk and caller-prefix routes tried before a match).
//!
//! Run: `cargo bench --bench routing`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic on a broken fixture

mod common;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use sosrouter::routing::{CallFacts, Readiness, Rules, plan};
use sosrouter::sip::{Limits, Message};
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

fn rules(file: &str) -> Rules {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("routing-rules")
        .join(file);
    match Rules::load(&path) {
        Ok((rules, _warnings)) => rules,
        Err(errors) => panic!("{} does not load: {errors:?}", path.display()),
    }
}

/// The facts of the testbed INVITE as the proxy reads them, from `source`.
fn facts(ruri: &str, source: &str) -> CallFacts {
    let msg =
        Message::parse(Bytes::from(common::invite(ruri)), &Limits::default()).expect("parses");
    CallFacts::from_message(&msg, source.parse::<IpAddr>().expect("an IP"))
}

fn all_ready(_: &str) -> Readiness {
    Readiness::Ready
}

fn bench_rules(c: &mut Criterion, name: &str, rules: &Rules, cases: &[(&str, CallFacts)]) {
    let mut g = c.benchmark_group(format!("route_{name}"));
    for (case, call) in cases {
        g.bench_function(format!("select/{case}"), |b| {
            b.iter(|| rules.select(black_box(call)))
        });
        let sel = rules.select(call);
        let first = sel.route.chain[0].clone();
        let first_down = move |id: &str| {
            if *id == *first {
                Readiness::NotReady
            } else {
                Readiness::Ready
            }
        };
        g.bench_function(format!("plan_all_ready/{case}"), |b| {
            b.iter(|| plan(rules, black_box(&sel.route), &all_ready))
        });
        g.bench_function(format!("plan_first_down/{case}"), |b| {
            b.iter(|| plan(rules, black_box(&sel.route), &first_down))
        });
        g.bench_function(format!("select_and_plan/{case}"), |b| {
            b.iter(|| {
                let sel = rules.select(black_box(call));
                plan(rules, &sel.route, &all_ready)
            })
        });
    }
    g.finish();
}

fn lab(c: &mut Criterion) {
    let rules = rules("lab.toml");
    let cases = [
        ("urn", facts("urn:service:sos", "127.0.0.1")),
        (
            "sip911_default",
            facts("sip:911@127.0.0.1:5060", "127.0.0.1"),
        ),
    ];
    bench_rules(c, "lab", &rules, &cases);
}

fn massachusetts(c: &mut Criterion) {
    let rules = rules("massachusetts.toml");
    let cases = [
        // A Boston caller (+1617) on a shared trunk: every source-trunk route is tried first.
        ("caller_prefix", facts("urn:service:sos", "192.0.2.77")),
        // A call from the North Shore's originating trunks: the first route matches.
        ("source_trunk", facts("urn:service:sos", "198.51.100.200")),
    ];
    bench_rules(c, "massachusetts", &rules, &cases);
}

/// Reading a call's facts from the parsed INVITE (done once per call before `select`).
fn call_facts(c: &mut Criterion) {
    let msg = Message::parse(
        Bytes::from(common::invite("urn:service:sos")),
        &Limits::default(),
    )
    .expect("parses");
    let src: IpAddr = "127.0.0.1".parse().expect("an IP");
    c.bench_function("call_facts/from_message", |b| {
        b.iter(|| CallFacts::from_message(black_box(&msg), src))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lab, massachusetts, call_facts
}
criterion_main!(benches);
