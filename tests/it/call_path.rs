//! The call path over real loopback sockets: a fake caller, the proxy, fake answering points.
//! Each scenario runs with the caller on UDP and on TCP (answering points on UDP, as in the lab).
//! No assertion here is about wall-clock time: which target answered and *why* the proxy failed over
//! (its outcome counters) say whether a timer or a transport error moved the call. Scenarios where
//! no timer should fire use `NO_TIMERS`; those that need one to fire (a silent or ringing primary)
//! run under paused tokio time, so the backup's prompt answer can never lose a race to a 300 ms
//! timer on a loaded machine.

use crate::common::*;
use sosrouter::config::Proto;
use sosrouter::proxy::OutcomeKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;

macro_rules! both_transports {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn udp() {
                super::$name(Proto::Udp).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                super::$name(Proto::Tcp).await
            }
        }
    };
    // Under paused time (timers on the test's clock; see the module doc).
    ($name:ident, paused) => {
        mod $name {
            use super::*;
            #[tokio::test(start_paused = true)]
            async fn udp() {
                super::$name(Proto::Udp).await
            }
            #[tokio::test(start_paused = true)]
            async fn tcp() {
                super::$name(Proto::Tcp).await
            }
        }
    };
}

fn caller_addr(p: &sosrouter::app::Running, proto: Proto) -> std::net::SocketAddr {
    p.local_addr(proto)
        .expect("proxy listens on this transport")
}

async fn full_dialog_through_record_route(proto: Proto) {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, NO_TIMERS), None).await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, proto));
    let out = uac.call(&ruri, "dialog-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert!(out.provisional.contains(&100), "100 Trying from the proxy");
    assert!(out.provisional.contains(&180), "180 relayed");
    // The response reaches the caller without the proxy's Via: only the caller's remains.
    assert_eq!(out.final_msg.vias().unwrap().len(), 1);
    let bye = uac.ack_and_bye(&out.final_msg, "dialog-1").await;
    assert_eq!(bye, 200);
    eventually(WAIT, "ACK and BYE at the primary", || {
        a.count("ACK") == 1 && a.count("BYE") == 1
    })
    .await;
    // ACK and BYE came through the proxy (Record-Route), not straight from the caller.
    for r in a.received() {
        assert_ne!(r.from, uac.local, "{} bypassed the proxy", r.method);
    }
    assert_eq!(b.count("INVITE"), 0);
    assert_eq!(a.received()[0].request_uri, format!("sip:911@{}", a.addr));
}
both_transports!(full_dialog_through_record_route);

async fn urn_service_sos_keeps_its_request_uri(proto: Proto) {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, NO_TIMERS), None).await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let out = uac.call("urn:service:sos.fire", "urn-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert_eq!(a.received()[0].request_uri, "urn:service:sos.fire");
}
both_transports!(urn_service_sos_keeps_its_request_uri);

async fn cancel_before_answer(proto: Proto) {
    let a = Uas::start(Behaviour::RingForever).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, NO_TIMERS), None).await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, proto));
    let inv = uac.invite(&ruri, "cancel-1", "z9hG4bK-uac-cancel-1");
    uac.send(&inv).await;
    // Wait for the 180, then CANCEL.
    loop {
        let m = uac.recv(WAIT).await.expect("180");
        if m.status() == Some(180) {
            break;
        }
    }
    uac.cancel(&ruri, "cancel-1").await;
    let mut got = vec![];
    while got.len() < 2 {
        let m = uac.recv(WAIT).await.expect("200 to CANCEL and 487");
        if let Some(c) = m.status()
            && c >= 200
        {
            got.push((m.cseq().method, c));
        }
    }
    assert!(
        got.contains(&(sosrouter::sip::Method::Cancel, 200)),
        "{got:?}"
    );
    assert!(
        got.contains(&(sosrouter::sip::Method::Invite, 487)),
        "{got:?}"
    );
    eventually(WAIT, "CANCEL at the primary", || a.count("CANCEL") == 1).await;
    assert_eq!(b.count("INVITE"), 0, "a cancelled call must not fail over");
}
both_transports!(cancel_before_answer);

async fn primary_port_closed_fails_over_without_timer(proto: Proto) {
    let dead = dead_port().await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(dead, b.addr, g.addr, NO_TIMERS), None).await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, proto));
    let out = uac.call(&ruri, "dead-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert_eq!(b.count("INVITE"), 1);
    let c = &p.proxy.counters;
    assert_eq!(
        c.outcome(OutcomeKind::TransportError),
        1,
        "ICMP unreachable seen"
    );
    assert_eq!(
        c.outcome(OutcomeKind::AttemptTimeout),
        0,
        "no timer was involved"
    );
}
both_transports!(primary_port_closed_fails_over_without_timer);

async fn primary_503_fails_over_to_backup(proto: Proto) {
    let a = Uas::start(Behaviour::Reply(503)).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, NO_TIMERS), None).await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, proto));
    let out = uac.call(&ruri, "503-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert_eq!(b.count("INVITE"), 1);
    eventually(WAIT, "hop-by-hop ACK of the 503", || a.count("ACK") == 1).await;
    assert_eq!(p.proxy.counters.outcome(OutcomeKind::FailureResponse), 1);
}
both_transports!(primary_503_fails_over_to_backup);

async fn primary_silent_fails_over_after_attempt_timer(proto: Proto) {
    let a = Uas::start(Behaviour::Silent).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, proto));
    let out = uac.call(&ruri, "silent-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert!(a.count("INVITE") >= 1);
    assert_eq!(b.count("INVITE"), 1);
    assert_eq!(p.proxy.counters.outcome(OutcomeKind::AttemptTimeout), 1);
    assert_eq!(
        p.proxy.figures().timers_held_backlog,
        0,
        "never behind: nothing held"
    );
    // Silent means no provisional: RFC 3261 §9.1 forbids a CANCEL.
    assert_eq!(a.count("CANCEL"), 0);
}
both_transports!(primary_silent_fails_over_after_attempt_timer, paused);

/// Past the knee every datagram waits its turn in the proxy's one UDP socket, a target's reply too:
/// a call timer that fires while sosrouter is behind reading it is held back (bounded per call), so
/// the call neither blames its target nor adds a failover INVITE to a proxy already behind. A real
/// backlog cannot build up under paused time (reading takes none), so the test marks it.
#[tokio::test(start_paused = true)]
async fn a_call_timer_is_held_while_sosrouter_is_behind_on_its_socket_then_fails_over() {
    let a = Uas::start(Behaviour::Silent).await;
    let b = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, b.addr, FAST_TIMERS), None).await;
    let backlog = p.proxy.udp_backlog();
    let behind = tokio::spawn(async move {
        loop {
            backlog.mark_behind(tokio::time::Instant::now().into_std());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut uac = Uac::new(Proto::Udp, caller_addr(&p, Proto::Udp)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, Proto::Udp));
    let start = tokio::time::Instant::now();
    let out = uac.call(&ruri, "held-1", WAIT).await;
    let took = start.elapsed();
    behind.abort();
    assert_eq!(
        out.final_code, 200,
        "still failed over: the hold is bounded"
    );
    assert_eq!(b.count("INVITE"), 1);
    let held = p.proxy.figures().timers_held_backlog;
    assert!(held >= 1, "the attempt timer was held ({held})");
    // FAST_TIMERS: attempt timer 300 ms, held 250 ms (a paused clock never fires a timer early).
    assert!(
        took >= Duration::from_millis(550),
        "failed over after {took:?}, before the attempt timer and its hold"
    );
    assert_eq!(p.proxy.figures().timers_held_stall, 0);
}

async fn primary_rings_forever_is_cancelled_then_backup(proto: Proto) {
    let a = Uas::start(Behaviour::RingForever).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, proto));
    let out = uac.call(&ruri, "ring-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    eventually(WAIT, "CANCEL and ACK of 487 at the primary", || {
        a.count("CANCEL") == 1 && a.count("ACK") == 1
    })
    .await;
    assert_eq!(b.count("INVITE"), 1);
    assert_eq!(p.proxy.counters.outcome(OutcomeKind::RingTimeout), 1);
}
both_transports!(primary_rings_forever_is_cancelled_then_backup, paused);

async fn both_psaps_down_business_line_gets_tel_uri(proto: Proto) {
    let a = dead_port().await;
    let b = Uas::start(Behaviour::Reply(480)).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a, b.addr, g.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, proto));
    let out = uac.call(&ruri, "both-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    let inv = g
        .received()
        .into_iter()
        .find(|r| r.method == "INVITE")
        .expect("gateway INVITE");
    assert_eq!(inv.request_uri, "tel:+15555550100");
    let bye = uac.ack_and_bye(&out.final_msg, "both-1").await;
    assert_eq!(bye, 200);
}
both_transports!(both_psaps_down_business_line_gets_tel_uri);

async fn everything_down_gets_final_and_undelivered_record(proto: Proto) {
    let a = Uas::start(Behaviour::Silent).await;
    let b = Uas::start(Behaviour::Reply(503)).await;
    let g = dead_port().await;
    let dir = std::env::temp_dir().join(format!("sosrouter-test-{}-{proto}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("undelivered.jsonl");
    let _ = std::fs::remove_file(&path);
    let p = proxy(
        &lab_rules(a.addr, b.addr, g, FAST_TIMERS),
        Some(path.clone()),
    )
    .await;
    let mut uac = Uac::new(proto, caller_addr(&p, proto)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, proto));
    let out = uac.call(&ruri, "down-1", WAIT).await;
    // The best response was a 503, which is never relayed as 503 (RFC 3261 §16.7).
    assert_eq!(out.final_code, 500);
    let text = file_with_line(&path).await;
    let rec: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(rec["call_id"], "down-1");
    assert_eq!(rec["emergency"], true);
    assert!(
        rec["p_asserted_identity"]
            .as_str()
            .unwrap()
            .contains("+16175550123")
    );
    assert!(rec["geolocation"].as_str().unwrap().contains("cid:loc-1"));
    let attempts = rec["attempts"].as_array().unwrap();
    let targets: Vec<&str> = attempts
        .iter()
        .map(|a| a["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["psap-primary", "psap-backup", "business-line"]);
    assert_eq!(attempts[0]["reason"], "attempt timeout");
    assert_eq!(attempts[1]["status"], 503);
    assert_eq!(attempts[2]["reason"], "transport error");
}
both_transports!(everything_down_gets_final_and_undelivered_record, paused);

#[tokio::test]
async fn options_to_the_proxy_is_answered_200() {
    let a = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, a.addr, a.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Udp, caller_addr(&p, Proto::Udp)).await;
    let m = format!(
        "OPTIONS sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {1};branch=z9hG4bK-opt1\r\nMax-Forwards: 70\r\n\
         From: <sip:lb@{1}>;tag=x\r\nTo: <sip:{0}>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        caller_addr(&p, Proto::Udp),
        uac.local
    );
    uac.send(m.as_bytes()).await;
    let r = uac.recv(WAIT).await.expect("response");
    assert_eq!(r.status(), Some(200));
    assert_eq!(a.count("OPTIONS"), 0, "answered by the proxy itself");
}

#[tokio::test]
async fn max_forwards_zero_gets_483() {
    let a = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, a.addr, a.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Udp, caller_addr(&p, Proto::Udp)).await;
    let inv = uac.invite("urn:service:sos", "mf-1", "z9hG4bK-mf1");
    let inv = String::from_utf8(inv.to_vec())
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    uac.send(inv.as_bytes()).await;
    let r = uac.recv(WAIT).await.expect("response");
    assert_eq!(r.status(), Some(483));
    assert_eq!(a.count("INVITE"), 0);
}

/// Paused time: the silent primary's attempt timer fires on the test's clock (see the module doc).
#[tokio::test(start_paused = true)]
async fn invite_retransmission_is_absorbed() {
    let a = Uas::start(Behaviour::Silent).await;
    let b = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, b.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Udp, caller_addr(&p, Proto::Udp)).await;
    let inv = uac.invite("urn:service:sos", "rtx-1", "z9hG4bK-rtx1");
    uac.send(&inv).await;
    uac.send(&inv).await;
    uac.send(&inv).await;
    let out = uac.await_final(WAIT).await;
    assert_eq!(out.final_code, 200);
    assert_eq!(
        p.proxy
            .counters
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(b.count("INVITE"), 1, "one call, one INVITE to the backup");
}

#[tokio::test]
async fn stray_response_is_dropped() {
    let a = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, a.addr, a.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Udp, caller_addr(&p, Proto::Udp)).await;
    let m = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {0};branch=z9hG4bK-nobody\r\nFrom: <sip:a@b>;tag=1\r\n\
         To: <sip:c@d>;tag=2\r\nCall-ID: stray-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        uac.local
    );
    uac.send(m.as_bytes()).await;
    eventually(WAIT, "stray counted", || {
        p.proxy
            .counters
            .stray_responses
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    assert!(uac.recv(QUIET).await.is_none());
}

/// IPv6 end to end: listen on [::1], answering points on [::1], caller over UDP and TCP; the full
/// dialog goes through the Record-Route with bracketed hosts in Via, Record-Route and Request-URI.
async fn ipv6_full_dialog(proto: Proto) {
    let a = Uas::start_on("[::1]:0", Behaviour::Reply(503)).await;
    let b = Uas::start_on("[::1]:0", Behaviour::Answer).await;
    let g = Uas::start_on("[::1]:0", Behaviour::Answer).await;
    let rules = lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS).replace(
        r#"listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]"#,
        r#"listen = ["udp:[::1]:0", "tcp:[::1]:0"]"#,
    );
    let p = proxy(&rules, None).await;
    let addr = caller_addr(&p, proto);
    assert!(addr.is_ipv6());
    let mut uac = Uac::new(proto, addr).await;
    let ruri = format!("sip:911@{addr}");
    let out = uac.call(&ruri, "v6-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert_eq!(b.received()[0].request_uri, format!("sip:911@{}", b.addr));
    let bye = uac.ack_and_bye(&out.final_msg, "v6-1").await;
    assert_eq!(bye, 200);
    eventually(WAIT, "BYE at the backup", || b.count("BYE") == 1).await;
}
both_transports!(ipv6_full_dialog);

/// The caller's INVITE with `extra` more header fields (each `X-Pad-N: ` + `pad` bytes) before
/// Content-Type, so the fields and bytes the inbound limits measure are exactly known.
fn padded_invite(uac: &Uac, ruri: &str, call_id: &str, extra: usize, pad: usize) -> Vec<u8> {
    let inv = uac.invite(ruri, call_id, &format!("z9hG4bK-uac-{call_id}"));
    let text = String::from_utf8(inv.to_vec()).unwrap();
    let at = text.find("Content-Type:").unwrap();
    let mut out = text[..at].to_string();
    for i in 0..extra {
        out.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(pad)));
    }
    out.push_str(&text[at..]);
    out.into_bytes()
}

fn header_fields(msg: &[u8]) -> usize {
    let head = &msg[..msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap()];
    head.split(|&b| b == b'\n').count() - 1 // minus the start line
}

/// Issue #12: an INVITE the inbound limits accept is always forwarded, however close to those limits
/// it is: what the proxy adds (Via, Record-Route) is its own and never measured against them. Up to
/// the header limit over UDP; one field more is refused with 400 (not 408: no time passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_at_the_header_limit_are_forwarded() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Udp, caller_addr(&p, Proto::Udp)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, Proto::Udp));
    let base = header_fields(&padded_invite(&uac, &ruri, "x", 0, 8));
    let max = sosrouter::sip::Limits::default().max_headers;
    let mut forwarded = 0;
    for (n, extra) in [100, 110, 115, max - base - 1, max - base]
        .into_iter()
        .enumerate()
    {
        let call_id = format!("big-{n}");
        let inv = padded_invite(&uac, &ruri, &call_id, extra, 8);
        assert_eq!(header_fields(&inv), base + extra);
        uac.send(&inv).await;
        let out = uac.await_final(WAIT).await;
        assert_eq!(out.final_code, 200, "{} header fields", base + extra);
        forwarded += 1;
        eventually(WAIT, "the primary got the whole INVITE", || {
            a.count("INVITE") == forwarded
        })
        .await;
        let got = a
            .received()
            .into_iter()
            .rev()
            .find(|r| r.method == "INVITE");
        let got = got.unwrap().msg;
        // Ours on top of the caller's fields: Via and Record-Route.
        assert_eq!(
            header_fields(got.bytes()),
            base + extra + 2,
            "every field of the caller reached the primary, plus our Via and Record-Route"
        );
    }
    assert_eq!(b.count("INVITE") + g.count("INVITE"), 0, "no failover");
    // One field over the inbound limit: refused at once with 400, never forwarded.
    let inv = padded_invite(&uac, &ruri, "over", max - base + 1, 8);
    uac.send(&inv).await;
    let out = uac.await_final(WAIT).await;
    assert_eq!(out.final_code, 400);
    assert_eq!(a.count("INVITE"), forwarded);
}

/// A fake answering point's TCP side on the UDP one's port: answers every INVITE 100/180/200 on the
/// connection it came on, and counts them with their size.
async fn tcp_psap(l: tokio::net::TcpListener) -> Arc<Mutex<Vec<usize>>> {
    use sosrouter::sip::{Message, frame_len};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = bytes::BytesMut::new();
                loop {
                    while let Ok(Some(n)) = frame_len(&buf, &PSAP_LIMITS) {
                        let f = buf.split_to(n).freeze();
                        let Ok(m) = Message::parse(f, &PSAP_LIMITS) else {
                            continue;
                        };
                        if m.method_bytes() != Some(&b"INVITE"[..]) {
                            continue;
                        }
                        log.lock().unwrap().push(m.bytes().len());
                        for (code, tag) in [(100, None), (180, Some("t1")), (200, Some("t1"))] {
                            let r = response(&m, code, "X", tag, Some("<sip:psap@127.0.0.1>"));
                            let _ = s.write_all(&r).await;
                        }
                    }
                    if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
            });
        }
    });
    seen
}

/// Issue #12: a TCP caller's INVITE up to the message size limit is forwarded. Toward a UDP target
/// one that no longer fits a datagram once our Via and Record-Route are on it goes over TCP to the
/// same address (RFC 3261 §18.1.1) instead of being lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_invites_up_to_the_size_limit_are_forwarded() {
    // A TCP port whose number is free on UDP too (the answering point listens on both).
    let (a, l) = loop {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break (
                Uas::start_on(&format!("127.0.0.1:{port}"), Behaviour::Answer).await,
                l,
            );
        }
    };
    let a_tcp = tcp_psap(l).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Tcp, caller_addr(&p, Proto::Tcp)).await;
    let ruri = format!("sip:911@{}", caller_addr(&p, Proto::Tcp));
    let max = sosrouter::sip::Limits::default().max_message_bytes;
    // Fields of ~1 KB, then one last field sized so the INVITE is exactly `size` bytes.
    let base = padded_invite(&uac, &ruri, "huge-x", 0, 0).len();
    for (n, size) in [20_000, 65_400, max].into_iter().enumerate() {
        let call_id = format!("huge-{n}");
        let fields = (size - base) / 1_020 - 1;
        let inv = padded_invite(&uac, &ruri, &call_id, fields, 1_000);
        let text = String::from_utf8(inv.clone()).unwrap();
        let at = text.find("Content-Type:").unwrap();
        let last = "X-Last: \r\n".len();
        let pad = size - inv.len() - last;
        let inv = format!(
            "{}X-Last: {}\r\n{}",
            &text[..at],
            "q".repeat(pad),
            &text[at..]
        )
        .into_bytes();
        assert_eq!(inv.len(), size);
        uac.send(&inv).await;
        let out = uac.await_final(WAIT).await;
        assert_eq!(out.final_code, 200, "{size}-byte INVITE");
    }
    let udp = a.count("INVITE");
    let tcp = a_tcp.lock().unwrap().clone();
    assert_eq!(udp + tcp.len(), 3, "each INVITE reached the primary once");
    assert!(
        tcp.iter().all(|&n| n > 65_400),
        "only INVITEs too large for a datagram went over TCP: {tcp:?}"
    );
    assert_eq!(
        tcp.len(),
        2,
        "65 400 and {max} bytes plus ours do not fit a datagram"
    );
    assert_eq!(b.count("INVITE") + g.count("INVITE"), 0, "no failover");
}

/// A finished call toward a UDP caller that does not ACK: the call's task retires at once (nothing left
/// to settle), and the finished-transaction table retransmits the final (timer G), answers a
/// retransmitted INVITE with it, and stops at the caller's ACK.
#[tokio::test]
async fn retired_call_still_retransmits_its_final_until_the_ack() {
    let (a, b, g) = (dead_port().await, dead_port().await, dead_port().await);
    let p = proxy(&lab_rules(a, b, g, FAST_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Udp, caller_addr(&p, Proto::Udp)).await;
    let inv = uac.invite("urn:service:sos", "retire-1", "z9hG4bK-retire1");
    uac.send(&inv).await;
    let out = uac.await_final(WAIT).await;
    let code = out.final_code;
    assert!(code >= 300, "undelivered: {code}");
    eventually(WAIT, "call task retired", || p.proxy.calls_in_flight() == 0).await;
    let again = uac.recv(WAIT).await.expect("timer G retransmission");
    assert_eq!(again.status(), Some(code));
    uac.send(&inv).await;
    let mut answered = false;
    for _ in 0..3 {
        if uac.recv(WAIT).await.and_then(|m| m.status()) == Some(code) {
            answered = true;
            break;
        }
    }
    assert!(answered, "a retransmitted INVITE gets the final");
    let to = again
        .header(sosrouter::sip::HeaderName::To)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .expect("To");
    let ack = String::from_utf8_lossy(&inv)
        .replace(
            "INVITE urn:service:sos SIP/2.0",
            "ACK urn:service:sos SIP/2.0",
        )
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace("To: <urn:service:sos>", &format!("To: {to}"));
    let ack = ack
        .split("Content-Type")
        .next()
        .unwrap_or_default()
        .to_string();
    uac.send(format!("{ack}Content-Length: 0\r\n\r\n").as_bytes())
        .await;
    // Timer G runs to T2 = 4 s: after the ACK, nothing more within 9 s (the next would be due by then).
    let mut extra = 0;
    while let Some(m) = uac.recv(Duration::from_secs(9)).await {
        if m.status() == Some(code) {
            extra += 1;
        }
        assert!(extra <= 1, "retransmissions went on after the ACK");
    }
    assert_eq!(p.proxy.calls_in_flight(), 0);
}
