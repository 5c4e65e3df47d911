//! Property: no datagram, however mangled, stops the running proxy from routing a good call.
//! Arbitrary bytes and mutations of a valid emergency INVITE (byte flips, cuts, splices, repeated
//! headers) are sent over UDP loopback; then a good call must still complete and nothing may be
//! left in flight. Case count is bounded (PROPTEST_CASES overrides it for longer local runs).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use crate::common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sosrouter::config::Proto;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn mutation(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    let edits = prop::collection::vec((0..len, any::<u8>(), 0u8..5), 1..8);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1500),
        edits.prop_map(move |edits| {
            let mut m = valid.clone();
            for (at, byte, kind) in edits {
                let at = at.min(m.len());
                match kind {
                    0 if at < m.len() => m[at] = byte,
                    1 => m.insert(at, byte),
                    2 if at < m.len() => {
                        m.remove(at);
                    }
                    3 => m.truncate(at),
                    _ => {
                        // Repeat a slice (duplicated headers, folded lines, long lines).
                        let end = (at + usize::from(byte)).min(m.len());
                        let piece = m[at..end].to_vec();
                        m.splice(at..at, piece);
                    }
                }
            }
            m
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mangled_datagrams_never_stop_the_proxy() {
    let (a, b, g) = (
        Uas::start(Behaviour::Answer).await,
        Uas::start(Behaviour::Answer).await,
        Uas::start(Behaviour::Answer).await,
    );
    // A panic inside a receive loop would only kill that loop (others keep serving): count them.
    // The hook is process-wide and the other integration tests run in this process too, so a
    // failing assertion of theirs (in tests/) is not counted: only panics in the proxy or below.
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info
            .location()
            .is_some_and(|l| l.file().starts_with("tests/"))
        {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS), None).await;
    let addr = p.local_addr(Proto::Udp).unwrap();
    let uac = Uac::new(Proto::Udp, addr).await;
    let valid = uac
        .invite("urn:service:sos", "mangle", "z9hG4bK-mangle")
        .to_vec();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = tokio::task::block_in_place(|| {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let sent = std::cell::Cell::new(0u64);
        runner
            .run(&mutation(valid), |m| {
                sock.send_to(&m, addr).unwrap();
                sent.set(sent.get() + 1);
                // Pace a little so the kernel buffer does not simply drop the flood.
                if sent.get().is_multiple_of(200) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            })
            .unwrap();
        sent.get()
    });
    eprintln!("mangled datagrams sent: {sent}");
    let mut uac = Uac::new(Proto::Udp, addr).await;
    let out = uac.call("urn:service:sos", "after-mangling", WAIT).await;
    assert_eq!(out.final_code, 200);
    // Mutated INVITEs that parsed became calls; all of them end.
    eventually(WAIT * 4, "no call in flight", || {
        p.proxy.calls_in_flight() == 0
    })
    .await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked");
    let c = &p.proxy.counters;
    eprintln!(
        "processed: parse errors {}, calls {}, 400s salvaged {}",
        c.parse_errors.load(Ordering::Relaxed),
        c.calls.load(Ordering::Relaxed),
        p.proxy
            .protection
            .counters
            .bad_requests_answered
            .load(Ordering::Relaxed)
    );
}
