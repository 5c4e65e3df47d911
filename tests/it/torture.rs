//! RFC 4475 torture messages (files in `tests/torture/`) sent to a running proxy over UDP loopback.
//! Every message must be answered the way the table below says, or dropped when no response can be
//! addressed (responses); afterwards no call is stuck and a good emergency call still completes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use crate::common::*;
use bytes::Bytes;
use sosrouter::config::Proto;
use std::time::Duration;
use tokio::net::UdpSocket;

/// What the proxy must do with each file: `Some(code)` answer it so, `None` drop it.
const EXPECTED: &[(&str, Option<u16>)] = &[
    ("valid_3.1.1.1_wsinv", Some(403)), // in-dialog, but not a dialog we Record-Routed
    ("valid_3.1.1.2_intmeth", Some(405)), // unknown method outside a dialog
    ("invalid_3.1.2.1_badinv01", Some(400)),
    ("invalid_3.1.2.2_clerr", Some(400)),
    ("invalid_3.1.2.3_ncl", Some(400)),
    ("invalid_3.1.2.4_scalar02", Some(400)),
    ("invalid_3.1.2.5_scalarlg", None), // a response: never answered
    ("invalid_3.1.2.6_quotbal", Some(400)),
    ("invalid_3.1.2.7_ltgtruri", Some(400)),
    ("invalid_3.1.2.8_lwsruri", Some(400)),
    ("invalid_3.1.2.9_lwsstart", Some(400)),
    ("invalid_3.1.2.10_trws", Some(400)), // trailing SP would be forwarded: refused
    ("invalid_3.1.2.11_escruri", Some(400)),
    ("invalid_3.1.2.12_baddate", Some(100)), // Date is not ours to judge: routed (RFC: may accept)
    ("invalid_3.1.2.13_regbadct", Some(405)), // Contact is not ours to read; REGISTER refused
    ("invalid_3.1.2.14_badaspec", Some(200)), // To is copied, never parsed: liberal accept
    ("invalid_3.1.2.15_baddn", Some(200)),
    ("invalid_3.1.2.16_badvers", Some(400)),
    ("invalid_3.1.2.17_mismatch01", Some(400)),
    ("invalid_3.1.2.18_mismatch02", Some(400)),
    ("invalid_3.1.2.19_bigcode", None),
];

fn load(name: &str) -> Bytes {
    let path = format!("{}/tests/torture/{name}.sip", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Bytes::from(text.replace("\r\n", "\n").replace('\n', "\r\n"))
}

/// Status code and reason of the first response to `msg`, or None after `wait` (only used for
/// drops). Read from the status line alone: a 400 echoes the request's own bad CSeq, so a strict
/// parser would refuse it.
async fn answer(
    sock: &UdpSocket,
    to: std::net::SocketAddr,
    msg: &[u8],
    wait: Duration,
) -> Option<(u16, String)> {
    sock.send_to(msg, to).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let line = text.lines().next()?.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = line.split_once(' ').unwrap_or((line, ""));
    Some((code.parse().ok()?, reason.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_torture_message_is_answered_or_dropped() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = proxy(&lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS), None).await;
    let addr = p.local_addr(Proto::Udp).unwrap();
    let mut failures = Vec::new();
    for &(name, want) in EXPECTED {
        // A fresh socket per message, so a late answer to one is never read as another's.
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let wait = if want.is_some() { WAIT } else { QUIET };
        let got = answer(&sock, addr, &load(name), wait).await;
        let code = got.as_ref().map(|g| g.0);
        let reason = got.map(|g| g.1);
        if code != want {
            failures.push(format!("{name}: want {want:?}, got {code:?} {reason:?}"));
        }
        if code == Some(400) {
            let r = reason.unwrap_or_default();
            assert!(
                r.starts_with("Bad Request ("),
                "{name}: 400 names the problem: {r}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Only baddate (accepted on purpose) reached an answering point.
    let invites: Vec<_> = a
        .received()
        .into_iter()
        .filter(|r| r.method == "INVITE")
        .collect();
    assert_eq!(invites.len(), 1, "only baddate was proxied");
    assert_eq!(
        invites[0].msg.call_id(),
        b"baddate.239423mnsadf3j23lj42--sedfnm234"
    );
    // Nothing stuck, and the proxy still routes a good call.
    eventually(WAIT, "no call in flight", || p.proxy.calls_in_flight() == 0).await;
    let mut uac = Uac::new(Proto::Udp, addr).await;
    let out = uac.call("urn:service:sos", "after-torture", WAIT).await;
    assert_eq!(out.final_code, 200);
}
