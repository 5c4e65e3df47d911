//! Codec micro-benchmarks: parse a realistic emergency INVITE (with SDP) and the 180/200 that come
//! back, the forwarding edit of the INVITE, and a response the proxy builds itself. The
//! `parse_vs_rsip` group parses the same INVITE with `rsip` (the crate our parser replaced on the
//! call path), so the README's claim about the ratio can be checked.
//!
//! Run: `cargo bench --bench codec` (figures are only comparable within one run on one machine).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic on a broken fixture

mod common;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sosrouter::sip::{Editor, Limits, Message, Source, build};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    for (name, raw) in [
        ("invite_sip911", common::invite("sip:911@127.0.0.1:5060")),
        ("invite_urn", common::invite("urn:service:sos")),
        ("response_180", common::response(180)),
        ("response_200_sdp", common::response(200)),
    ] {
        let buf = Bytes::from(raw);
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| Message::parse(black_box(buf.clone()), &limits).expect("parses"))
        });
    }
    g.finish();
}

/// Ours and rsip on the same INVITE (sip: Request-URI: rsip does not take urn:). Both get the bytes;
/// ours a `Bytes` (a reference-count increment), rsip a byte slice.
fn parse_vs_rsip(c: &mut Criterion) {
    let limits = Limits::default();
    let raw = common::invite("sip:911@127.0.0.1:5060");
    let buf = Bytes::from(raw.clone());
    rsip::SipMessage::try_from(&raw[..]).expect("rsip parses the bench INVITE");
    let mut g = c.benchmark_group("parse_vs_rsip");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("sosrouter", |b| {
        b.iter(|| Message::parse(black_box(buf.clone()), &limits).expect("parses"))
    });
    g.bench_function("rsip", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(&raw[..])).expect("parses"))
    });
    g.finish();
}

/// The edit of `proxy::forward::invite_for_attempt` for a UDP caller and a UDP target: stamp the
/// caller's Via, push ours, Max-Forwards, Request-URI, Record-Route, and produce the bytes.
fn forward_edit(c: &mut Criterion) {
    let limits = Limits::default();
    let msg = Message::parse(
        Bytes::from(common::invite("sip:911@127.0.0.1:5060")),
        &limits,
    )
    .expect("parses");
    let src = Source {
        ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        port: 5061,
    };
    let mut g = c.benchmark_group("edit");
    g.bench_function("forward_invite", |b| {
        b.iter(|| {
            let mut e = Editor::new(black_box(&msg));
            e.stamp_top_via(src)
                .push_via(b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sr-7f3a9c01;rport")
                .set_max_forwards(69)
                .set_request_uri(b"sip:911@127.0.0.1:5071")
                .push_record_route(b"<sip:127.0.0.1:5060;transport=udp;lr>");
            e.finish()
        })
    });
    // The relay of a response upstream: pop our Via.
    let resp = Message::parse(Bytes::from(common::response(200)), &limits).expect("parses");
    g.bench_function("relay_response_pop_via", |b| {
        b.iter(|| {
            let mut e = Editor::new(black_box(&resp));
            e.pop_via();
            e.finish()
        })
    });
    g.finish();
}

/// Responses the proxy originates: 100 Trying (every call) and a 480 with a To tag and a header.
fn build_response(c: &mut Criterion) {
    let limits = Limits::default();
    let msg = Message::parse(
        Bytes::from(common::invite("sip:911@127.0.0.1:5060")),
        &limits,
    )
    .expect("parses");
    let mut g = c.benchmark_group("build");
    g.bench_function("response_100", |b| {
        b.iter(|| build::response(black_box(&msg), 100, "Trying", None, &[]))
    });
    g.bench_function("response_480_tag", |b| {
        b.iter(|| {
            build::response(
                black_box(&msg),
                480,
                "",
                Some(b"sr-9c01"),
                &[b"Retry-After: 5"],
            )
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machines are shared; compare figures within one run only.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = parse, parse_vs_rsip, forward_edit, build_response
}
criterion_main!(benches);
