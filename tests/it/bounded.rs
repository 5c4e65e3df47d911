//! Bounded state: faulty callers, answering points and TCP peers must not leave anything behind.
//! Calls whose caller vanished, targets that never answer, half-sent TCP messages and stalled
//! trickles all end, and every table returns to empty. Counts are bounded; no timing assertions
//! (waits are liveness bounds only).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use crate::common::*;
use sosrouter::config::Proto;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lab rules with short call timers and tight TCP limits.
fn rules(a: &Uas, b: &Uas, g: &Uas) -> String {
    let limits = "[limits]\ntcp_message_deadline_ms = 500\ntcp_idle_timeout_ms = 5000\n\
                  tcp_connections_per_source = 3\n[overload]\ntrusted_sources = [\"127.0.0.0/8\"]";
    format!(
        "{}\n{limits}\n",
        lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS)
    )
}

/// Reads until EOF; true when the proxy closed the connection within `WAIT`.
async fn closed_by_proxy(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_calls_free_every_table() {
    let a = Uas::start(Behaviour::RingForever).await;
    let b = Uas::start(Behaviour::Silent).await;
    let g = Uas::start(Behaviour::Silent).await;
    let p = proxy(&rules(&a, &b, &g), None).await;
    let addr = p.local_addr(Proto::Tcp).unwrap();
    // 1. Callers that vanish mid-call (TCP closed right after the INVITE), while the primary rings
    //    forever and the others never answer: every attempt times out, the call ends undelivered.
    for i in 0..30 {
        let mut uac = Uac::new(Proto::Tcp, addr).await;
        let inv = uac.invite(
            "urn:service:sos",
            &format!("vanish-{i}"),
            &format!("z9hG4bK-v{i}"),
        );
        uac.send(&inv).await;
        drop(uac);
    }
    // 2. Half-finished TCP messages: a start line and a few headers, then silence.
    let mut halves = Vec::new();
    for i in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let part =
            format!("INVITE urn:service:sos SIP/2.0\r\nCall-ID: half-{i}\r\nVia: SIP/2.0/TCP x");
        s.write_all(part.as_bytes()).await.unwrap();
        halves.push(s);
    }
    for s in &mut halves {
        assert!(
            closed_by_proxy(s).await,
            "a half-sent message was not dropped"
        );
    }
    // The halves were accepted after the 30 (one accept queue), so every one of the 30 is accepted
    // by now. A connection leaves the count only after its reader handed on every message it
    // read, so with none left every INVITE has started its call; with no call in flight, each
    // one has also ended (a call counts its outcome before it leaves the table).
    eventually(WAIT, "connections closed and calls ended", || {
        p.transport.tcp_connections() == 0 && p.proxy.calls_in_flight() == 0
    })
    .await;
    // Some of the 30 connections met the per-source limit (3) at accept and never started a call;
    // every call that did start ended undelivered (recorded), none is left hanging.
    let c = &p.proxy.counters;
    let (calls, undelivered) = (c.calls.load(Relaxed), c.undelivered.load(Relaxed));
    assert!(calls >= 3, "{c:?}");
    assert_eq!(undelivered, calls, "{c:?}");
    let sizes = p.proxy.table_sizes();
    assert_eq!(sizes.branches, 0, "{sizes:?}");
    // Finished transactions linger 64*T1 to absorb retransmissions; the sweeper then frees them.
    p.proxy.sweep(Instant::now() + Duration::from_secs(40));
    let sizes = p.proxy.table_sizes();
    assert_eq!(
        sizes,
        Default::default(),
        "tables empty after the linger time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_partial_message_is_cut_at_its_deadline() {
    let (a, b, g) = (
        Uas::start(Behaviour::Answer).await,
        Uas::start(Behaviour::Answer).await,
        Uas::start(Behaviour::Answer).await,
    );
    let p = proxy(&rules(&a, &b, &g), None).await;
    let mut s = TcpStream::connect(p.local_addr(Proto::Tcp).unwrap())
        .await
        .unwrap();
    s.write_all(b"OPTIONS sip:x SIP/2.0\r\nX-Slow: ")
        .await
        .unwrap();
    // One byte every 100 ms never looks idle (idle timeout 5 s), but the message never completes.
    let trickle = async {
        for _ in 0..100 {
            if s.write_all(b"a").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        trickle.await,
        "the proxy kept a trickling half message open for 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_source_are_limited() {
    let (a, b, g) = (
        Uas::start(Behaviour::Answer).await,
        Uas::start(Behaviour::Answer).await,
        Uas::start(Behaviour::Answer).await,
    );
    let p = proxy(&rules(&a, &b, &g), None).await;
    let addr = p.local_addr(Proto::Tcp).unwrap();
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(Uac::new(Proto::Tcp, addr).await);
    }
    eventually(WAIT, "three accepted", || {
        p.transport.tcp_connections() == 3
    })
    .await;
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_by_proxy(&mut fourth).await,
        "a 4th connection from one source was kept"
    );
    // The first three still work.
    let out = kept[0].call("urn:service:sos", "limit-ok", WAIT).await;
    assert_eq!(out.final_code, 200);
    // Closing one frees its place.
    drop(kept.pop());
    eventually(WAIT, "place freed", || p.transport.tcp_connections() == 2).await;
    let mut again = Uac::new(Proto::Tcp, addr).await;
    assert_eq!(
        again
            .call("urn:service:sos", "limit-again", WAIT)
            .await
            .final_code,
        200
    );
}
