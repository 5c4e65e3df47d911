//! The pure machine, driven by hand: responses built from our own INVITE, time passed in.

use super::machine::{BYE_WAIT, ECHO_WAIT, LINGER};
use super::message::{Ids, answer_media};
use super::*;
use crate::config::{Proto, TestCallMedia};
use crate::sip::{Limits, Message, Method, build};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const RTP_AT: &str = "127.0.0.1:7000";

/// A response to `req` from the fake answering point; with `sdp`, its body (media at `media`).
pub(super) fn reply(req: &Message, code: u16, sdp_media: Option<SocketAddr>) -> Bytes {
    let contact: &[u8] = b"Contact: <sip:psap@127.0.0.1:5071>";
    let head = build::response(req, code, "", Some(b"psap"), &[contact]);
    let Some(media) = sdp_media else {
        return head;
    };
    let sdp = format!(
        "v=0\r\no=psap 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=sendrecv\r\n",
        ip = media.ip(),
        port = media.port()
    );
    let text = String::from_utf8_lossy(&head).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
    );
    Bytes::from(text)
}

fn parse(b: Bytes) -> Message {
    Message::parse(b, &Limits::default()).unwrap()
}

fn setup(transport: Proto, media: TestCallMedia) -> Setup {
    Setup {
        request_uri: "urn:service:test.sos".into(),
        transport,
        local: "127.0.0.1:40000".parse().unwrap(),
        rtp_local: "127.0.0.1:40002".parse().unwrap(),
        timeout: Duration::from_secs(4),
        media,
        rtp_packets: 5,
        ids: Ids {
            call_id: "tc-1".into(),
            from_tag: "ft".into(),
            branch: "z9hG4bK-sostest-1".into(),
            ssrc: 0x1234,
        },
    }
}

struct Run {
    call: TestCall,
    invite: Message,
    t0: Instant,
    out: Vec<Action>,
}

fn start(transport: Proto, media: TestCallMedia) -> Run {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let call = TestCall::start(setup(transport, media), t0, &mut out).unwrap();
    let invite = match out.as_slice() {
        [Action::Sip(b)] => parse(b.clone()),
        other => panic!("{other:?}"),
    };
    out.clear();
    Run {
        call,
        invite,
        t0,
        out,
    }
}

impl Run {
    fn respond(&mut self, code: u16, media: Option<&str>, at: Duration) {
        let m = parse(reply(&self.invite, code, media.map(|m| m.parse().unwrap())));
        self.call.on_sip(m, self.t0 + at, &mut self.out);
    }
    fn tick(&mut self, at: Duration) {
        self.call.tick(self.t0 + at, &mut self.out);
    }
    fn verdicts(&self) -> Vec<Verdict> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::Verdict(v, _) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }
    /// Methods (or status codes as "SIP/2.0 nnn") of the SIP messages sent.
    fn sent(&self) -> Vec<String> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::Sip(b) => {
                    let m = parse(b.clone());
                    Some(match m.method_bytes() {
                        Some(meth) => String::from_utf8_lossy(meth).into_owned(),
                        None => format!("{}", m.status().unwrap_or(0)),
                    })
                }
                _ => None,
            })
            .collect()
    }
    fn rtp(&self) -> Vec<(Bytes, SocketAddr)> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::Rtp(b, to) => Some((b.clone(), *to)),
                _ => None,
            })
            .collect()
    }
    fn sent_message(&self, method: &str) -> Message {
        self.out
            .iter()
            .find_map(|a| match a {
                Action::Sip(b) => {
                    Some(parse(b.clone())).filter(|m| m.method_bytes() == Some(method.as_bytes()))
                }
                _ => None,
            })
            .unwrap()
    }
}

#[test]
fn invite_is_a_test_call_with_an_offer() {
    let r = start(Proto::Udp, TestCallMedia::Require);
    let inv = &r.invite;
    assert_eq!(inv.method(), Some(Method::Invite));
    assert_eq!(inv.request_uri(), Some(&b"urn:service:test.sos"[..]));
    let via = inv.top_via().unwrap();
    assert_eq!(via.branch, Some(&b"z9hG4bK-sostest-1"[..]));
    assert_eq!(via.port, Some(40000));
    let body = std::str::from_utf8(inv.body()).unwrap();
    assert!(body.contains("m=audio 40002 RTP/AVP 0\r\n"), "{body}");
    assert!(body.contains("a=sendrecv"), "{body}");
    assert_eq!(answer_media(inv.body()), Some(r.call_sdp_addr()));
}

impl Run {
    fn call_sdp_addr(&self) -> SocketAddr {
        "127.0.0.1:40002".parse().unwrap()
    }
}

#[test]
fn answered_with_echo_is_good_then_bye() {
    let mut r = start(Proto::Udp, TestCallMedia::Require);
    r.respond(100, None, Duration::from_millis(10));
    r.respond(200, Some(RTP_AT), Duration::from_millis(50));
    assert_eq!(r.sent(), vec!["ACK"]);
    let ack = r.sent_message("ACK");
    assert_eq!(ack.request_uri(), Some(&b"sip:psap@127.0.0.1:5071"[..]));
    assert_eq!(ack.to_tag(), Some(&b"psap"[..]));
    // Packet 0 goes at once, then one every 20 ms.
    assert_eq!(r.rtp().len(), 1);
    for i in 1..5 {
        r.tick(Duration::from_millis(50 + 20 * i));
    }
    let rtp = r.rtp();
    assert_eq!(rtp.len(), 5);
    assert!(rtp.iter().all(|(_, to)| *to == RTP_AT.parse().unwrap()));
    // Two echoes, from the media address; the rest never come: good after the echo wait.
    let at = r.t0 + Duration::from_millis(140);
    for (p, _) in &rtp[..2] {
        r.call.on_rtp(RTP_AT.parse().unwrap(), p, at, &mut r.out);
    }
    assert!(r.verdicts().is_empty());
    r.tick(Duration::from_millis(130) + ECHO_WAIT);
    assert_eq!(r.verdicts(), vec![Verdict::Good]);
    assert!(r.sent().contains(&"BYE".to_string()));
    let d = r.call.details().clone();
    assert_eq!((d.rtp_sent, d.rtp_echoed, d.status), (5, 2, Some(200)));
    assert!(d.media_checked);
    // The BYE's 200 ends the call.
    let bye = r.sent_message("BYE");
    assert_eq!(bye.cseq().seq, 2);
    let ok = parse(build::response(&bye, 200, "", None, &[]));
    r.call.on_sip(ok, at, &mut r.out);
    assert!(r.call.is_done());
    assert_eq!(r.call.details().bye_status, Some(200));
}

#[test]
fn all_echoes_back_ends_the_media_check_early() {
    let mut r = start(Proto::Udp, TestCallMedia::Require);
    r.respond(200, Some(RTP_AT), Duration::ZERO);
    r.tick(Duration::from_millis(80));
    let at = r.t0 + Duration::from_millis(81);
    for (p, _) in r.rtp() {
        r.call
            .on_rtp("127.0.0.1:9".parse().unwrap(), &p, at, &mut r.out);
    }
    assert_eq!(r.verdicts(), vec![Verdict::Good]);
}

#[test]
fn answered_without_echo_is_media_failed() {
    let mut r = start(Proto::Udp, TestCallMedia::Require);
    r.respond(200, Some(RTP_AT), Duration::ZERO);
    // Foreign RTP from elsewhere does not count.
    let stray = super::rtp::packet(99, 0);
    r.call
        .on_rtp("127.0.0.1:9".parse().unwrap(), &stray, r.t0, &mut r.out);
    r.tick(Duration::from_millis(80));
    r.tick(Duration::from_millis(80) + ECHO_WAIT);
    assert_eq!(r.verdicts(), vec![Verdict::MediaFailed]);
    assert!(Verdict::MediaFailed.counts_against_target());
    // An unanswered BYE is given up after its bound.
    r.tick(Duration::from_millis(80) + ECHO_WAIT + BYE_WAIT);
    assert!(r.call.is_done());
}

#[test]
fn media_ignored_or_not_offered_is_good_at_once() {
    let mut r = start(Proto::Udp, TestCallMedia::Ignore);
    r.respond(200, Some(RTP_AT), Duration::ZERO);
    assert_eq!(r.verdicts(), vec![Verdict::Good]);
    assert!(r.rtp().is_empty());
    assert_eq!(r.sent(), vec!["ACK", "BYE"]);
    let mut r = start(Proto::Udp, TestCallMedia::Require);
    r.respond(200, None, Duration::ZERO);
    assert_eq!(r.verdicts(), vec![Verdict::Good]);
    assert!(!r.call.details().media_checked);
}

#[test]
fn finals_are_classified_and_acked() {
    for (code, want) in [
        (486, Verdict::Inconclusive(486)),
        (404, Verdict::Inconclusive(404)),
        (600, Verdict::Inconclusive(600)),
        (302, Verdict::Inconclusive(302)),
        (408, Verdict::CallPathFailed(PathFailure::Status(408))),
        (503, Verdict::CallPathFailed(PathFailure::Status(503))),
    ] {
        let mut r = start(Proto::Udp, TestCallMedia::Require);
        r.respond(code, None, Duration::from_millis(30));
        assert_eq!(r.verdicts(), vec![want.clone()], "{code}");
        assert_eq!(r.sent(), vec!["ACK"], "{code}");
        assert_eq!(
            want.counts_against_target(),
            code == 408 || (500..600).contains(&code)
        );
        // A retransmitted final is ACKed again while lingering; then the call ends.
        r.out.clear();
        r.respond(code, None, Duration::from_millis(600));
        assert_eq!(r.sent(), vec!["ACK"]);
        assert!(r.verdicts().is_empty());
        r.tick(Duration::from_millis(30) + LINGER);
        assert!(r.call.is_done());
    }
}

#[test]
fn silence_retransmits_then_fails_without_cancel() {
    let mut r = start(Proto::Udp, TestCallMedia::Require);
    let mut at = Duration::ZERO;
    while at < Duration::from_secs(4) {
        at += Duration::from_millis(100);
        r.tick(at);
    }
    let sent = r.sent();
    // Timer A: 0.5, 1.5, 3.5 s.
    assert_eq!(
        sent.iter().filter(|m| *m == "INVITE").count(),
        3,
        "{sent:?}"
    );
    assert!(!sent.contains(&"CANCEL".to_string()));
    assert_eq!(
        r.verdicts(),
        vec![Verdict::CallPathFailed(PathFailure::NoResponse)]
    );
    // A late 180 gets the CANCEL the timeout could not send; a late 200 is ACKed and hung up.
    r.out.clear();
    r.respond(180, None, at + Duration::from_millis(10));
    assert_eq!(r.sent(), vec!["CANCEL"]);
    r.out.clear();
    r.respond(200, Some(RTP_AT), at + Duration::from_millis(20));
    assert_eq!(r.sent(), vec!["ACK", "BYE"]);
    assert!(r.verdicts().is_empty());
}

#[test]
fn ringing_without_answer_is_cancelled() {
    let mut r = start(Proto::Tcp, TestCallMedia::Require);
    r.respond(180, None, Duration::from_millis(100));
    r.tick(Duration::from_secs(4));
    assert_eq!(r.sent(), vec!["CANCEL"], "no retransmission over TCP");
    assert_eq!(
        r.verdicts(),
        vec![Verdict::CallPathFailed(PathFailure::NoAnswer(180))]
    );
    r.out.clear();
    r.respond(487, None, Duration::from_millis(4100));
    assert_eq!(r.sent(), vec!["ACK"]);
}

#[test]
fn transport_error_fails_the_call_path_at_once() {
    let mut r = start(Proto::Udp, TestCallMedia::Require);
    r.call
        .on_transport_error("connection refused", r.t0, &mut r.out);
    assert!(matches!(
        r.verdicts().as_slice(),
        [Verdict::CallPathFailed(PathFailure::Transport(_))]
    ));
    assert!(r.call.is_done());
}

#[test]
fn remote_bye_is_answered_and_spares_ours() {
    let mut r = start(Proto::Udp, TestCallMedia::Require);
    r.respond(200, Some(RTP_AT), Duration::ZERO);
    let bye: &'static str = "BYE sip:sosrouter@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKpsap\r\n\
         From: <urn:service:test.sos>;tag=psap\r\nTo: <sip:sosrouter@127.0.0.1:40000>;tag=ft\r\n\
         Call-ID: tc-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
    r.out.clear();
    r.call
        .on_sip(parse(Bytes::from_static(bye.as_bytes())), r.t0, &mut r.out);
    assert_eq!(r.sent(), vec!["200"]);
    r.tick(Duration::from_millis(80) + ECHO_WAIT);
    assert_eq!(r.verdicts(), vec![Verdict::MediaFailed]);
    assert!(!r.sent().contains(&"BYE".to_string()));
    assert!(r.call.is_done());
}

#[test]
fn other_calls_and_branches_are_ignored() {
    let mut r = start(Proto::Udp, TestCallMedia::Require);
    let text = String::from_utf8_lossy(&reply(&r.invite, 503, None)).replace("tc-1", "other");
    r.call.on_sip(parse(Bytes::from(text)), r.t0, &mut r.out);
    let text = String::from_utf8_lossy(&reply(&r.invite, 503, None))
        .replace("z9hG4bK-sostest-1", "z9hG4bK-sostest-2");
    r.call.on_sip(parse(Bytes::from(text)), r.t0, &mut r.out);
    assert!(r.out.is_empty());
}

#[test]
fn answer_media_reads_c_and_m() {
    let a = |s: &str| answer_media(s.as_bytes());
    let ip4 = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n";
    assert_eq!(a(ip4), Some("10.0.0.1:4000".parse().unwrap()));
    let media_level = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.3\r\n\
                       m=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n";
    assert_eq!(a(media_level), Some("10.0.0.2:4000".parse().unwrap()));
    assert_eq!(
        a("c=IN IP6 ::1\r\nm=audio 4000 RTP/AVP 0\r\n"),
        Some("[::1]:4000".parse().unwrap())
    );
    assert_eq!(a("c=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n"), None);
    assert_eq!(a("c=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n"), None);
    assert_eq!(a("c=IN IP4 10.0.0.1\r\n"), None);
    assert_eq!(a(""), None);
    assert_eq!(a("c=IN IP4 bogus\r\nm=audio 4000 RTP/AVP 0\r\n"), None);
}

#[test]
fn verdict_helpers() {
    assert!(Verdict::Good.is_good() && Verdict::Good.call_path_ok());
    assert!(Verdict::MediaFailed.call_path_ok() && !Verdict::MediaFailed.is_good());
    let inc = Verdict::Inconclusive(486);
    assert!(inc.is_inconclusive() && !inc.counts_against_target() && !inc.is_good());
    assert!(!Verdict::NotPlaced("x".into()).counts_against_target());
    assert_eq!(Verdict::of_final(204), Verdict::Good);
    assert_eq!(Verdict::of_final(480), Verdict::Inconclusive(480));
    assert_eq!(
        Verdict::of_final(599),
        Verdict::CallPathFailed(PathFailure::Status(599))
    );
    assert_eq!(
        Verdict::CallPathFailed(PathFailure::NoAnswer(180)).to_string(),
        "call path failed: 180 but no answer within the timeout"
    );
}

#[derive(Debug, Clone)]
enum Ev {
    Respond(u16, bool),
    Advance(u64),
    EchoLast,
    Stray,
    TransportError,
    RemoteBye,
    ByeOk,
}

fn ev() -> impl proptest::strategy::Strategy<Value = Ev> {
    use proptest::prelude::*;
    let codes = prop::sample::select(vec![100u16, 180, 183, 200, 302, 408, 486, 487, 503, 600]);
    prop_oneof![
        (codes, any::<bool>()).prop_map(|(c, sdp)| Ev::Respond(c, sdp)),
        (0u64..3000).prop_map(Ev::Advance),
        Just(Ev::EchoLast),
        Just(Ev::Stray),
        Just(Ev::TransportError),
        Just(Ev::RemoteBye),
        Just(Ev::ByeOk),
    ]
}

proptest::proptest! {
    /// Whatever the target does and in whatever order: exactly one verdict by the time the call is
    /// done, never two; RTP only after a 2xx and never more than `rtp_packets`; and the call always
    /// ends within timeout + echo wait + BYE wait + linger of quiet time.
    #[test]
    fn one_verdict_and_always_ends(events in proptest::collection::vec(ev(), 0..40), tcp in proptest::bool::ANY) {
        let transport = if tcp { Proto::Tcp } else { Proto::Udp };
        let mut r = start(transport, TestCallMedia::Require);
        let mut at = Duration::ZERO;
        let mut answered = false;
        for e in events {
            match e {
                Ev::Respond(code, sdp) => {
                    answered |= (200..300).contains(&code) && r.call.verdict().is_none();
                    r.respond(code, sdp.then_some(RTP_AT), at);
                }
                Ev::Advance(ms) => {
                    at += Duration::from_millis(ms);
                    r.tick(at);
                }
                Ev::EchoLast => {
                    if let Some((p, _)) = r.rtp().last() {
                        r.call.on_rtp(RTP_AT.parse().unwrap(), &p.clone(), r.t0 + at, &mut r.out);
                    }
                }
                Ev::Stray => {
                    let p = super::rtp::packet(1, 1);
                    r.call.on_rtp("127.0.0.1:9".parse().unwrap(), &p, r.t0 + at, &mut r.out);
                }
                Ev::TransportError => r.call.on_transport_error("refused", r.t0 + at, &mut r.out),
                Ev::RemoteBye => {
                    let bye = "BYE sip:sosrouter@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKp\r\n\
                               From: <urn:service:test.sos>;tag=psap\r\nTo: <sip:x@y>;tag=ft\r\nCall-ID: tc-1\r\n\
                               CSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n";
                    r.call.on_sip(parse(Bytes::from_static(bye.as_bytes())), r.t0 + at, &mut r.out);
                }
                Ev::ByeOk => {
                    let bye = r.out.iter().rev().find_map(|a| match a {
                        Action::Sip(b) => Some(parse(b.clone())).filter(|m| m.method() == Some(Method::Bye)),
                        _ => None,
                    });
                    if let Some(bye) = bye {
                        let ok = parse(build::response(&bye, 200, "", None, &[]));
                        r.call.on_sip(ok, r.t0 + at, &mut r.out);
                    }
                }
            }
            proptest::prop_assert!(r.verdicts().len() <= 1);
            proptest::prop_assert!(r.rtp().len() <= 5);
            proptest::prop_assert!(r.rtp().is_empty() || answered);
        }
        // Quiet time: the call ends on its own.
        let mut guard = 0;
        while !r.call.is_done() {
            let next = r.call.next_wake().expect("a call not done has a wake-up");
            at = at.max(next - r.t0);
            r.tick(at);
            guard += 1;
            proptest::prop_assert!(guard < 200, "call never ends");
        }
        proptest::prop_assert_eq!(r.verdicts().len(), 1);
        proptest::prop_assert!(r.rtp().len() <= 5);
    }
}
