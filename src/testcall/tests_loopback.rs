//! Test calls over real loopback sockets against a small fake answering point (SIP UAS + RTP
//! reflector), and the scheduler. Each test waits on the call's own end (bounded by its timers, and
//! by a generous guard that only fails a hung test); the silent-target tests run in paused time.

use super::tests::reply;
use super::*;
use crate::config::{Proto, TestCallMedia};
use crate::routing::{Target, TestCallSettings};
use crate::sip::{Limits, Message, Method, build, frame_len};
use bytes::{Bytes, BytesMut};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// How the fake answering point treats an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// 100, 200 with SDP; RTP reflected when `echo`.
    Answer { echo: bool },
    /// This final response.
    Reply(u16),
    /// Nothing at all.
    Silent,
}

/// A fake answering point on loopback. `calls` collects the Call-ID of every INVITE received.
struct Psap {
    sip: SocketAddr,
    calls: Arc<Mutex<HashSet<String>>>,
}

impl Psap {
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

/// Answers one message; returns what to send back.
fn handle(
    msg: &Message,
    how: Behaviour,
    rtp: SocketAddr,
    calls: &Mutex<HashSet<String>>,
) -> Vec<Bytes> {
    match msg.method() {
        Some(Method::Invite) => {
            calls
                .lock()
                .unwrap()
                .insert(String::from_utf8_lossy(msg.call_id()).into_owned());
            match how {
                Behaviour::Answer { .. } => vec![
                    build::response(msg, 100, "", None, &[]),
                    reply(msg, 200, Some(rtp)),
                ],
                Behaviour::Reply(code) => vec![reply(msg, code, None)],
                Behaviour::Silent => vec![],
            }
        }
        Some(Method::Bye) | Some(Method::Cancel) => vec![build::response(msg, 200, "", None, &[])],
        _ => vec![],
    }
}

async fn rtp_reflector(echo: bool) -> SocketAddr {
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = rtp.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = rtp.recv_from(&mut buf).await {
            if echo {
                let _ = rtp.send_to(&buf[..n], from).await;
            }
        }
    });
    addr
}

async fn udp_psap(how: Behaviour) -> Psap {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sip = sock.local_addr().unwrap();
    let rtp = rtp_reflector(matches!(how, Behaviour::Answer { echo: true })).await;
    let calls = Arc::new(Mutex::new(HashSet::new()));
    let seen = calls.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let Ok(msg) = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default())
            else {
                continue;
            };
            for out in handle(&msg, how, rtp, &seen) {
                let _ = sock.send_to(&out, from).await;
            }
        }
    });
    Psap { sip, calls }
}

async fn tcp_psap(how: Behaviour) -> Psap {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sip = listener.local_addr().unwrap();
    let rtp = rtp_reflector(matches!(how, Behaviour::Answer { echo: true })).await;
    let calls = Arc::new(Mutex::new(HashSet::new()));
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut acc = BytesMut::new();
                while conn.read_buf(&mut acc).await.is_ok_and(|n| n > 0) {
                    while let Ok(Some(n)) = frame_len(&acc, &Limits::default()) {
                        let frame = acc.split_to(n).freeze();
                        let Ok(msg) = Message::parse(frame, &Limits::default()) else {
                            continue;
                        };
                        for out in handle(&msg, how, rtp, &seen) {
                            let _ = conn.write_all(&out).await;
                        }
                    }
                }
            });
        }
    });
    Psap { sip, calls }
}

fn target(id: &str, at: SocketAddr, transport: Proto) -> Target {
    let mut t = Target::for_test(id, at.port());
    t.transport = transport;
    t
}

fn params(timeout_ms: u64) -> CallParams {
    CallParams {
        request_uri: "urn:service:test.sos".into(),
        timeout: Duration::from_millis(timeout_ms),
        media: TestCallMedia::Require,
        rtp_packets: 5,
        bind_ip: None,
        tls: None,
    }
}

/// Runs a test call to its end; a guard fails (never passes) a test that hangs.
async fn call(t: &Target, p: &CallParams) -> (Verdict, Details) {
    let mut early = None;
    let end = tokio::time::timeout(
        Duration::from_secs(30),
        run_test_call(t, p, |v, _| early = Some(v.clone())),
    )
    .await
    .expect("test call did not end");
    assert_eq!(
        early.as_ref(),
        Some(&end.0),
        "the early verdict is the final one"
    );
    end
}

#[tokio::test]
async fn udp_answer_with_echo_is_good() {
    let psap = udp_psap(Behaviour::Answer { echo: true }).await;
    let (v, d) = call(&target("p", psap.sip, Proto::Udp), &params(4000)).await;
    assert_eq!(v, Verdict::Good, "{d:?}");
    assert_eq!((d.status, d.rtp_sent), (Some(200), 5));
    assert!(d.rtp_echoed >= 1 && d.media_checked, "{d:?}");
    assert_eq!(d.bye_status, Some(200));
}

#[tokio::test]
async fn udp_answer_without_echo_is_media_failed() {
    let psap = udp_psap(Behaviour::Answer { echo: false }).await;
    let (v, d) = call(&target("p", psap.sip, Proto::Udp), &params(4000)).await;
    assert_eq!(v, Verdict::MediaFailed, "{d:?}");
    assert_eq!((d.rtp_sent, d.rtp_echoed), (5, 0));
}

#[tokio::test]
async fn busy_is_inconclusive_and_503_fails_the_call_path() {
    let psap = udp_psap(Behaviour::Reply(486)).await;
    let (v, _) = call(&target("p", psap.sip, Proto::Udp), &params(4000)).await;
    assert_eq!(v, Verdict::Inconclusive(486));
    let psap = udp_psap(Behaviour::Reply(503)).await;
    let (v, _) = call(&target("p", psap.sip, Proto::Udp), &params(4000)).await;
    assert_eq!(v, Verdict::CallPathFailed(PathFailure::Status(503)));
}

#[tokio::test(start_paused = true)]
async fn silence_fails_the_call_path_after_the_timeout() {
    let psap = udp_psap(Behaviour::Silent).await;
    let t = target("p", psap.sip, Proto::Udp);
    let (v, d) = call(&t, &params(4000)).await;
    assert_eq!(v, Verdict::CallPathFailed(PathFailure::NoResponse));
    assert!(d.elapsed_ms >= 4000, "{d:?}");
    assert_eq!(psap.calls(), 1);
}

#[tokio::test]
async fn closed_port_fails_the_call_path_at_once() {
    // A port nobody listens on: bind, note it, close.
    let port = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    // A timeout far longer than the guard: only the ICMP error can end this call in time.
    let (v, d) = call(&target("p", port, Proto::Udp), &params(600_000)).await;
    assert!(
        matches!(v, Verdict::CallPathFailed(PathFailure::Transport(_))),
        "{v:?} {d:?}"
    );
    eprintln!("closed UDP port: {v} after {} ms", d.elapsed_ms);
    // TCP: the connection is refused.
    let (v, _) = call(&target("p", port, Proto::Tcp), &params(600_000)).await;
    assert!(
        matches!(v, Verdict::CallPathFailed(PathFailure::Transport(_))),
        "{v:?}"
    );
}

#[tokio::test]
async fn bind_ip_is_the_source_of_sip_and_rtp() {
    let psap = udp_psap(Behaviour::Answer { echo: true }).await;
    let mut p = params(4000);
    p.bind_ip = Some("127.0.0.1".parse().unwrap());
    let (v, d) = call(&target("p", psap.sip, Proto::Udp), &p).await;
    assert_eq!(v, Verdict::Good, "{d:?}");
    let tcp = tcp_psap(Behaviour::Answer { echo: true }).await;
    let (v, d) = call(&target("p", tcp.sip, Proto::Tcp), &p).await;
    assert_eq!(v, Verdict::Good, "{d:?}");
}

#[tokio::test]
async fn tcp_answer_with_echo_is_good() {
    let psap = tcp_psap(Behaviour::Answer { echo: true }).await;
    let (v, d) = call(&target("p", psap.sip, Proto::Tcp), &params(4000)).await;
    assert_eq!(v, Verdict::Good, "{d:?}");
    assert!(d.rtp_echoed >= 1);
    assert_eq!(d.bye_status, Some(200));
}

fn settings(max_in_flight: usize, timeout_ms: u64) -> Arc<TestCallSettings> {
    let mut s = TestCallSettings::default();
    s.max_in_flight = max_in_flight;
    s.timeout = Duration::from_millis(timeout_ms);
    Arc::new(s)
}

/// Waits (in paused time: lets the clock run) until `cond` holds, at most `limit`.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "condition not reached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn scheduler_dedups_per_target_and_caps_in_flight() {
    let psaps = [
        udp_psap(Behaviour::Silent).await,
        udp_psap(Behaviour::Silent).await,
        udp_psap(Behaviour::Silent).await,
    ];
    let targets: Vec<Arc<Target>> = psaps
        .iter()
        .enumerate()
        .map(|(i, p)| Arc::new(target(&format!("t{i}"), p.sip, Proto::Udp)))
        .collect();
    let mut plan = Plan::new(settings(2, 1000), targets.clone());
    plan.jitter = Duration::ZERO;
    let (tc, mut reports) = TestCalls::spawn(plan, &crate::tasks::Tasks::new());
    assert!(tc.request(targets[0].clone(), TestReason::Overdue));
    assert!(tc.request(targets[0].clone(), TestReason::FailedCalls));
    assert!(tc.request(targets[1].clone(), TestReason::DomainSuspect));
    assert!(tc.request(targets[2].clone(), TestReason::DomainSuspect));
    // Two calls start; the third waits for a slot (each silent call takes 1 s + linger).
    until(Duration::from_millis(500), || {
        psaps[0].calls() + psaps[1].calls() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(psaps[2].calls(), 0, "over the global cap");
    let mut got = Vec::new();
    while got.len() < 3 {
        let r = tokio::time::timeout(Duration::from_secs(30), reports.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.verdict, Verdict::CallPathFailed(PathFailure::NoResponse));
        got.push((r.target.to_string(), r.reason));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("t0".to_string(), TestReason::Overdue),
            ("t1".to_string(), TestReason::DomainSuspect),
            ("t2".to_string(), TestReason::DomainSuspect),
        ]
    );
    assert_eq!(
        psaps.iter().map(Psap::calls).collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
    // Once its call has ended, a target can be tested again.
    until(Duration::from_secs(10), || {
        tc.request(targets[0].clone(), TestReason::Recovering);
        psaps[0].calls() == 2
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn scheduler_periodic_and_disabled() {
    let psap = udp_psap(Behaviour::Reply(486)).await;
    let t = Arc::new(target("p", psap.sip, Proto::Udp));
    let mut s = (*settings(8, 1000)).clone();
    s.interval = Some(Duration::from_secs(10));
    let mut plan = Plan::new(Arc::new(s.clone()), vec![t.clone()]);
    plan.jitter = Duration::ZERO;
    let (tc, mut reports) = TestCalls::spawn(plan.clone(), &crate::tasks::Tasks::new());
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(30), reports.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.reason, r.verdict),
            (TestReason::Periodic, Verdict::Inconclusive(486))
        );
    }
    // Disabled: requests are accepted by the channel but no call is placed.
    s.enabled = false;
    plan.settings = Arc::new(s);
    tc.update(plan);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let before = psap.calls();
    assert!(tc.request(t.clone(), TestReason::Operator));
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(psap.calls(), before);
    assert!(reports.try_recv().is_err());
}

fn in_domain(id: &str, psap: &Psap, domain: &str) -> Arc<Target> {
    let mut t = target(id, psap.sip, Proto::Udp);
    t.failure_domain = vec![domain.into()];
    Arc::new(t)
}

#[tokio::test(start_paused = true)]
async fn recovery_test_calls_through_one_failure_domain_start_one_per_pace() {
    let shared = [
        udp_psap(Behaviour::Silent).await,
        udp_psap(Behaviour::Silent).await,
        udp_psap(Behaviour::Silent).await,
    ];
    let alone = udp_psap(Behaviour::Silent).await;
    let mut targets: Vec<Arc<Target>> = shared
        .iter()
        .enumerate()
        .map(|(i, p)| in_domain(&format!("s{i}"), p, "firewall"))
        .collect();
    targets.push(in_domain("alone", &alone, "own"));
    let mut plan = Plan::new(settings(8, 3000), targets.clone());
    plan.jitter = Duration::ZERO;
    plan.recovery_pace = Duration::from_secs(1);
    let (tc, _reports) = TestCalls::spawn(plan, &crate::tasks::Tasks::new());
    let t0 = tokio::time::Instant::now();
    for t in &targets {
        assert!(tc.request(t.clone(), TestReason::Recovering));
    }
    let behind_firewall = || shared.iter().map(Psap::calls).sum::<usize>();
    until(Duration::from_millis(200), || {
        behind_firewall() == 1 && alone.calls() == 1
    })
    .await;
    tokio::time::sleep_until(t0 + Duration::from_millis(900)).await;
    assert_eq!(
        behind_firewall(),
        1,
        "one per pace through the shared domain"
    );
    until(Duration::from_millis(400), || behind_firewall() == 2).await;
    tokio::time::sleep_until(t0 + Duration::from_millis(1900)).await;
    assert_eq!(behind_firewall(), 2);
    until(Duration::from_millis(400), || behind_firewall() == 3).await;
    assert_eq!(
        shared.iter().map(Psap::calls).collect::<Vec<_>>(),
        vec![1, 1, 1],
        "each target its turn, in the order they asked"
    );
    // Other reasons are never paced: a suspect domain tests every target at once.
    let more = [
        udp_psap(Behaviour::Silent).await,
        udp_psap(Behaviour::Silent).await,
    ];
    for (i, p) in more.iter().enumerate() {
        tc.request(
            in_domain(&format!("m{i}"), p, "firewall"),
            TestReason::DomainSuspect,
        );
    }
    until(Duration::from_millis(200), || {
        more.iter().all(|p| p.calls() == 1)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_good_test_call_through_a_domain_releases_its_held_recovery_test_calls_at_once() {
    let healed = udp_psap(Behaviour::Answer { echo: true }).await;
    let held = [
        udp_psap(Behaviour::Silent).await,
        udp_psap(Behaviour::Silent).await,
    ];
    let mut targets = vec![in_domain("healed", &healed, "firewall")];
    targets.extend(
        held.iter()
            .enumerate()
            .map(|(i, p)| in_domain(&format!("h{i}"), p, "firewall")),
    );
    let mut plan = Plan::new(settings(8, 3000), targets.clone());
    plan.jitter = Duration::ZERO;
    plan.recovery_pace = Duration::from_secs(1);
    let (tc, mut reports) = TestCalls::spawn(plan, &crate::tasks::Tasks::new());
    for t in &targets {
        assert!(tc.request(t.clone(), TestReason::Recovering));
    }
    let r = tokio::time::timeout(Duration::from_millis(900), reports.recv())
        .await
        .expect("the first target's test call ends within the pace")
        .unwrap();
    assert_eq!((&*r.target, r.verdict), ("healed", Verdict::Good));
    assert_eq!(
        held.iter().map(Psap::calls).sum::<usize>(),
        0,
        "held so far"
    );
    // Paced, the second would start at 1 s and the third at 2 s: both start now.
    until(Duration::from_millis(100), || {
        held.iter().all(|p| p.calls() == 1)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_good_test_call_through_a_domain_supersedes_the_calls_placed_into_the_fault() {
    let hung = udp_psap(Behaviour::Silent).await;
    let healed = udp_psap(Behaviour::Answer { echo: true }).await;
    let (hung_t, healed_t) = (
        in_domain("hung", &hung, "firewall"),
        in_domain("healed", &healed, "firewall"),
    );
    let mut plan = Plan::new(settings(8, 3000), vec![hung_t.clone(), healed_t.clone()]);
    plan.jitter = Duration::ZERO;
    plan.recovery_pace = Duration::from_secs(1);
    let (tc, mut reports) = TestCalls::spawn(plan, &crate::tasks::Tasks::new());
    let t0 = tokio::time::Instant::now();
    tc.request(hung_t.clone(), TestReason::Recovering);
    until(Duration::from_millis(100), || hung.calls() == 1).await;
    tc.request(healed_t.clone(), TestReason::Recovering);
    // The healed one's turn comes at 1 s; its good verdict re-places the hung one's call (placed
    // at 0, into the fault) at once, long before that one's 3 s timeout.
    let r = tokio::time::timeout(Duration::from_secs(2), reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&*r.target, r.verdict), ("healed", Verdict::Good));
    until(Duration::from_millis(100), || hung.calls() == 2).await;
    assert!(t0.elapsed() < Duration::from_millis(1500));
    // The first call's timeout (at 3 s) reports nothing; the second one's (at ~4.1 s) does.
    let r = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*r.target, "hung");
    assert!(
        t0.elapsed() > Duration::from_secs(4),
        "the superseded call's verdict went nowhere"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_the_scheduler_and_a_test_call_in_flight() {
    let psap = udp_psap(Behaviour::Silent).await;
    let t = Arc::new(target("silent", psap.sip, Proto::Udp));
    let mut plan = Plan::new(settings(2, 60_000), vec![t.clone()]);
    plan.jitter = Duration::ZERO;
    let tasks = crate::tasks::Tasks::new();
    let (tc, mut reports) = TestCalls::spawn(plan, &tasks);
    assert!(tc.request(t, TestReason::Overdue));
    until(Duration::from_millis(500), || psap.calls() == 1).await;
    assert_eq!(tasks.len(), 2, "the scheduler and the call, tracked");
    // The call would wait 60 s for an answer: shutdown does not.
    assert!(tasks.cancel_and_join(Duration::from_secs(1)).await);
    assert!(tasks.is_joined());
    assert!(
        reports.recv().await.is_none(),
        "no verdict from a cancelled call, and the scheduler is gone"
    );
}
