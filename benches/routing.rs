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

/// Rules of `routes` PSAP routes with `per_route` caller prefixes each (`+1NNNNPPP`), every route
/// also matching `urn:service:sos`, as the scale testbed generates them.
fn generated(routes: usize, per_route: usize) -> Rules {
    let mut t = String::from(
        "listen = [\"udp:127.0.0.1:5060\"]\n[[targets]]\nid = \"a\"\n\
                              uri = \"sip:127.0.0.1:5071\"\nfailure_domain = \"x\"\n",
    );
    for r in 0..routes {
        let prefixes: Vec<String> = (0..per_route)
            .map(|p| format!("\"+1{r:04}{p:03}\""))
            .collect();
        t.push_str(&format!(
            "[[routes]]\nid = \"r{r}\"\nchain = [\"a\"]\nservice_urns = [\"urn:service:sos\"]\n\
             caller_prefixes = [{}]\n",
            prefixes.join(", ")
        ));
    }
    t.push_str("[default_route]\nchain = [\"a\"]\n");
    match Rules::parse(&t, "generated.toml") {
        Ok((rules, _)) => rules,
        Err(errors) => panic!("generated rules do not load: {:?}", &errors[..1]),
    }
}

/// `Rules::select` against the number of caller prefixes; the caller matches the LAST route's last
/// prefix (the worst case of first-match). Goal (#17): 100 000 within 2x of 10.
fn select_at_scale(c: &mut Criterion) {
    let mut g = c.benchmark_group("select_prefixes");
    for (routes, per_route) in [(1, 10), (10, 100), (1000, 100)] {
        let rules = generated(routes, per_route);
        let caller = format!("+1{:04}{:03}5551234", routes - 1, per_route - 1);
        let call = CallFacts {
            request_uri: b"urn:service:sos".to_vec(),
            caller: Some(caller),
            source: "192.0.2.77".parse::<IpAddr>().expect("an IP"),
            headers: Vec::new(),
        };
        let want = format!("r{}", routes - 1);
        assert_eq!(&*rules.select(&call).route.id, want.as_str());
        g.bench_function(format!("{}", routes * per_route), |b| {
            b.iter(|| rules.select(black_box(&call)))
        });
        g.bench_function(format!("linear/{}", routes * per_route), |b| {
            b.iter(|| rules.select_linear(black_box(&call)))
        });
    }
    g.finish();
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
    targets = lab, massachusetts, call_facts, select_at_scale
}
criterion_main!(benches);
