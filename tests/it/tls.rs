//! SIP over TLS on loopback, with certificates made in the test (`rcgen`): whole dialogs TLS to
//! TLS and UDP to TLS (double Record-Route), PSAPs whose certificate carries the wrong name or has
//! expired failed over at once, mutual authentication refusing a caller without a certificate, a
//! TLS PSAP killed mid-call, and certificates reloaded with the rules.

use crate::common::tls::{Ca, TlsUas};
use crate::common::*;
use sosrouter::config::Proto;
use sosrouter::sip::HeaderName;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The name in the proxy's own certificate (callers check it).
const PROXY_NAME: &str = "sosrouter.lab";

/// A lab CA and the proxy's certificate, written to the test's directory.
struct Lab {
    ca: Ca,
    dir: PathBuf,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let dir = test_dir(name);
        let ca = Ca::new("sosrouter test CA");
        ca.write(&dir);
        ca.leaf(&[PROXY_NAME, "127.0.0.1"]).write(&dir, "proxy");
        Lab { ca, dir }
    }

    /// `[tls]` for the files in `dir`.
    fn tls_section(&self, client_auth: &str) -> String {
        let d = self.dir.display();
        format!(
            "[tls]\ncert_file = \"{d}/proxy.crt\"\nkey_file = \"{d}/proxy.key\"\n\
             ca_file = \"{d}/ca.crt\"\nclient_auth = \"{client_auth}\"\nhandshake_timeout_ms = 5000\n"
        )
    }

    /// Rules listening on UDP and TLS, one target per entry in chain order.
    fn rules(&self, client_auth: &str, targets: &[Target], timers: &str) -> String {
        let mut t = String::new();
        for target in targets {
            t.push_str(&target.toml());
        }
        let chain: Vec<String> = targets.iter().map(|t| format!("\"{}\"", t.id)).collect();
        format!(
            "listen = [\"udp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n\n[defaults]\n{timers}\n\n\
             [health]\nprobe = false\n\n{}\n{t}\n[default_route]\nchain = [{}]\n",
            self.tls_section(client_auth),
            chain.join(", ")
        )
    }
}

struct Target {
    id: &'static str,
    addr: SocketAddr,
    /// Some: a TLS target with this `tls_name`; None: UDP.
    tls_name: Option<&'static str>,
}

impl Target {
    fn toml(&self) -> String {
        let (id, addr) = (self.id, self.addr);
        match self.tls_name {
            Some(n) => format!(
                "[[targets]]\nid = \"{id}\"\nuri = \"sip:{addr}\"\ntransport = \"tls\"\n\
                 tls_name = \"{n}\"\nfailure_domain = \"{id}\"\n\n"
            ),
            None => format!(
                "[[targets]]\nid = \"{id}\"\nuri = \"sip:{addr}\"\nfailure_domain = \"{id}\"\n\n"
            ),
        }
    }
}

fn tls(id: &'static str, addr: SocketAddr, name: &'static str) -> Target {
    Target {
        id,
        addr,
        tls_name: Some(name),
    }
}

fn udp(id: &'static str, addr: SocketAddr) -> Target {
    Target {
        id,
        addr,
        tls_name: None,
    }
}

fn record_routes(m: &sosrouter::sip::Message) -> Vec<String> {
    m.header_values(HeaderName::RecordRoute)
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn top_via(m: &sosrouter::sip::Message) -> String {
    String::from_utf8_lossy(&m.header_values(HeaderName::Via)[0]).into_owned()
}

#[tokio::test]
async fn tls_caller_to_tls_psap_full_dialog() {
    let lab = Lab::new("tls-dialog");
    let psap = TlsUas::start(&lab.ca.leaf(&["psap-a.lab"]), Behaviour::Answer).await;
    let backup = Uas::start(Behaviour::Answer).await;
    let targets = [
        tls("psap-primary", psap.addr, "psap-a.lab"),
        udp("psap-backup", backup.addr),
    ];
    let p = proxy(&lab.rules("none", &targets, NO_TIMERS), None).await;
    let at = p.local_addr(Proto::Tls).unwrap();
    let mut uac = Uac::tls(at, lab.ca.client(None), PROXY_NAME).await.unwrap();

    let out = uac.call("urn:service:sos", "tls-dialog-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    let rr = record_routes(&out.final_msg);
    assert!(
        !rr.is_empty() && rr.iter().all(|r| r.contains("transport=tls")),
        "{rr:?}"
    );
    assert_eq!(uac.ack_and_bye(&out.final_msg, "tls-dialog-1").await, 200);
    eventually(WAIT, "ACK and BYE at the PSAP", || {
        psap.count("ACK") == 1 && psap.count("BYE") == 1
    })
    .await;

    let invite = &psap.received()[0];
    assert_eq!(invite.method, "INVITE");
    assert!(
        top_via(&invite.msg).starts_with("SIP/2.0/TLS "),
        "{}",
        top_via(&invite.msg)
    );
    // One connection to the PSAP carried the INVITE, the ACK and the BYE.
    assert_eq!(psap.handshakes(), 1);
    assert_eq!(backup.count("INVITE"), 0);
    let status = p.health.status("psap-primary").unwrap().tls.unwrap();
    assert_eq!((status.connections, status.handshakes), (1, 1));
    assert_eq!(status.handshake_failures, 0);
}

#[tokio::test]
async fn udp_caller_to_tls_psap_and_back_with_double_record_route() {
    let lab = Lab::new("tls-udp-caller");
    let psap = TlsUas::start(&lab.ca.leaf(&["psap-a.lab"]), Behaviour::Answer).await;
    let backup = Uas::start(Behaviour::Answer).await;
    let targets = [
        tls("psap-primary", psap.addr, "psap-a.lab"),
        udp("psap-backup", backup.addr),
    ];
    let p = proxy(&lab.rules("none", &targets, NO_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Udp, p.local_addr(Proto::Udp).unwrap()).await;

    let out = uac.call("urn:service:sos", "tls-udp-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    // RFC 5658: the PSAP-facing entry (TLS) on top, the caller-facing one (UDP) below it.
    let at_psap = record_routes(&psap.received()[0].msg);
    assert_eq!(at_psap.len(), 2, "{at_psap:?}");
    assert!(at_psap[0].contains("transport=tls"), "{at_psap:?}");
    assert!(at_psap[1].contains("transport=udp"), "{at_psap:?}");
    assert_eq!(record_routes(&out.final_msg), at_psap);

    assert_eq!(uac.ack_and_bye(&out.final_msg, "tls-udp-1").await, 200);
    eventually(WAIT, "ACK and BYE at the PSAP over TLS", || {
        psap.count("ACK") == 1 && psap.count("BYE") == 1
    })
    .await;
    assert_eq!(psap.handshakes(), 1);
}

#[tokio::test]
async fn psaps_with_a_wrong_name_or_an_expired_certificate_are_failed_over_at_once() {
    let lab = Lab::new("tls-bad-certs");
    let wrong = TlsUas::start(&lab.ca.leaf(&["other.lab"]), Behaviour::Answer).await;
    let expired = TlsUas::start(&lab.ca.expired_leaf(&["psap-b.lab"]), Behaviour::Answer).await;
    let backup = Uas::start(Behaviour::Answer).await;
    let targets = [
        tls("psap-wrong-name", wrong.addr, "psap-a.lab"),
        tls("psap-expired", expired.addr, "psap-b.lab"),
        udp("psap-backup", backup.addr),
    ];
    // Timers of 30 s: a failover inside this test can only come from the transport error.
    let rules = lab.rules("none", &targets, NO_TIMERS);
    let p = proxy_with(&rules, None, Some("127.0.0.1:0".parse().unwrap())).await;
    let mut uac = Uac::new(Proto::Udp, p.local_addr(Proto::Udp).unwrap()).await;

    let out = uac.call("urn:service:sos", "tls-bad-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert_eq!(backup.count("INVITE"), 1);
    assert_eq!((wrong.handshakes(), expired.handshakes()), (0, 0));
    assert_eq!(wrong.count("INVITE") + expired.count("INVITE"), 0);

    let w = p.health.status("psap-wrong-name").unwrap().tls.unwrap();
    let e = p.health.status("psap-expired").unwrap().tls.unwrap();
    assert_eq!((w.handshake_failures, e.handshake_failures), (1, 1));
    assert_eq!((w.connections, e.connections), (0, 0));
    let why_w = w.last_failure.unwrap().to_ascii_lowercase();
    let why_e = e.last_failure.unwrap().to_ascii_lowercase();
    assert!(why_w.contains("name"), "{why_w}");
    assert!(why_e.contains("expired"), "{why_e}");

    let (code, _) = admin_call(p.admin.unwrap(), "GET", "/status").await;
    assert_eq!(code, 200);
    let metrics = http::request(p.admin.unwrap(), "GET", "/metrics", &[]).await;
    let text = metrics.text();
    for id in ["psap-wrong-name", "psap-expired"] {
        let line = format!("sosrouter_tls_handshake_failures_total{{target=\"{id}\"}} 1");
        assert!(text.contains(&line), "no `{line}` in /metrics");
    }
}

#[tokio::test]
async fn client_auth_require_refuses_a_caller_without_a_certificate() {
    let lab = Lab::new("tls-client-auth");
    let psap = Uas::start(Behaviour::Answer).await;
    let backup = Uas::start(Behaviour::Answer).await;
    let targets = [
        udp("psap-primary", psap.addr),
        udp("psap-backup", backup.addr),
    ];
    let p = proxy(&lab.rules("require", &targets, NO_TIMERS), None).await;
    let at = p.local_addr(Proto::Tls).unwrap();

    // Without a certificate: under TLS 1.3 the client may finish its side of the handshake before
    // the server refuses; either way nothing it sends gets through and the connection ends.
    let no_cert = lab.ca.client(None);
    let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(PROXY_NAME).unwrap();
    if let Ok(mut s) = tokio_rustls::TlsConnector::from(no_cert)
        .connect(name, tcp)
        .await
    {
        let uac = Uac::new(Proto::Udp, p.local_addr(Proto::Udp).unwrap()).await;
        let _ = s
            .write_all(&uac.invite("urn:service:sos", "no-cert-1", "z9hG4bK-nc"))
            .await;
        let mut buf = vec![0u8; 4096];
        let read = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "refused caller got {read:?}"
        );
    }
    eventually(WAIT, "the refused handshake counted", || {
        p.transport.tls_inbound_failures() == 1
    })
    .await;
    assert_eq!(psap.count("INVITE"), 0);

    // With a certificate from the CA: the call goes through.
    let caller = lab.ca.leaf(&["carrier-edge.lab"]);
    let mut uac = Uac::tls(at, lab.ca.client(Some(&caller)), PROXY_NAME)
        .await
        .unwrap();
    let out = uac.call("urn:service:sos", "cert-1", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert_eq!(psap.count("INVITE"), 1);
}

#[tokio::test]
async fn a_tls_psap_killed_mid_call_fails_the_next_call_over_at_once() {
    let lab = Lab::new("tls-killed");
    let psap = TlsUas::start(&lab.ca.leaf(&["psap-a.lab"]), Behaviour::Answer).await;
    let backup = Uas::start(Behaviour::Answer).await;
    let targets = [
        tls("psap-primary", psap.addr, "psap-a.lab"),
        udp("psap-backup", backup.addr),
    ];
    let p = proxy(&lab.rules("none", &targets, NO_TIMERS), None).await;
    let mut uac = Uac::new(Proto::Udp, p.local_addr(Proto::Udp).unwrap()).await;
    let first = uac.call("urn:service:sos", "killed-1", WAIT).await;
    assert_eq!(first.final_code, 200);
    assert_eq!(psap.count("INVITE"), 1);

    psap.kill();
    eventually(WAIT, "the proxy saw the connection close", || {
        p.transport.tls_figures(psap.addr).unwrap().connections == 0
    })
    .await;
    // Timers of 30 s: the next call reaches the backup only through the transport error.
    let second = uac.call("urn:service:sos", "killed-2", WAIT).await;
    assert_eq!(second.final_code, 200);
    assert_eq!(backup.count("INVITE"), 1);
    assert_eq!(psap.count("INVITE"), 1);
}

/// Writes `text` as the rules file of `dir`.
fn rules_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rules.toml");
    write_rules(&path, text);
    path
}

#[tokio::test]
async fn certificates_reload_with_the_rules_and_a_bad_file_keeps_the_old_ones() {
    let lab = Lab::new("tls-reload");
    let psap = Uas::start(Behaviour::Answer).await;
    let targets = [udp("psap-primary", psap.addr)];
    let path = rules_file(&lab.dir, &lab.rules("none", &targets, NO_TIMERS));
    let p = proxy_from_file(&path, None, None).await;
    let at = p.local_addr(Proto::Tls).unwrap();

    // A broken key file refuses the reload, at the line of `key_file`.
    std::fs::write(lab.dir.join("proxy.key"), "not a key\n").unwrap();
    let refused = p.reloader.reload("test").unwrap_err();
    let key_line = 1 + std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("key_file"))
        .unwrap();
    assert!(
        refused
            .errors
            .iter()
            .any(|e| e.contains(&format!(":{key_line}:"))),
        "{:?}",
        refused.errors
    );
    // The old certificate keeps serving.
    let mut uac = Uac::tls(at, lab.ca.client(None), PROXY_NAME).await.unwrap();
    assert_eq!(
        uac.call("urn:service:sos", "reload-1", WAIT)
            .await
            .final_code,
        200
    );

    // A certificate from a new CA: refused by a client trusting only that CA until reloaded.
    let ca2 = Ca::new("second CA");
    let only_ca2 = ca2.client(None);
    assert!(Uac::tls(at, only_ca2.clone(), PROXY_NAME).await.is_err());
    ca2.leaf(&[PROXY_NAME]).write(&lab.dir, "proxy");
    p.reloader.reload("test").unwrap();
    let mut uac2 = Uac::tls(at, only_ca2, PROXY_NAME).await.unwrap();
    assert_eq!(
        uac2.call("urn:service:sos", "reload-2", WAIT)
            .await
            .final_code,
        200
    );
}

#[tokio::test]
async fn test_calls_reach_tls_psaps_over_tls_and_check_their_name() {
    use sosrouter::health::{Outcome, State};
    let lab = Lab::new("tls-testcall");
    let good = TlsUas::start(&lab.ca.leaf(&["psap-a.lab"]), Behaviour::Answer).await;
    let misnamed = TlsUas::start(&lab.ca.leaf(&["someone-else.lab"]), Behaviour::Answer).await;
    let targets = [
        tls("psap-a", good.addr, "psap-a.lab"),
        tls("psap-b", misnamed.addr, "psap-b.lab"),
    ];
    let text = lab.rules("none", &targets, NO_TIMERS) + "\n[test_calls]\nmedia = \"ignore\"\n";
    let p = proxy_from_file(&rules_file(&lab.dir, &text), None, None).await;
    // A failed call makes each suspect; each gets a test call over TLS.
    p.health.report("psap-a", Outcome::TransportError);
    p.health.report("psap-b", Outcome::TransportError);
    eventually(WAIT, "the good PSAP's test call answered over TLS", || {
        let s = p.health.status("psap-a").unwrap();
        s.state == State::Up && s.last_reason.contains("test call answered")
    })
    .await;
    assert!(
        good.received()
            .iter()
            .any(|r| r.method == "INVITE" && r.request_uri == "urn:service:test.sos")
    );
    // The other one's certificate does not carry its tls_name: the handshake fails, and so does
    // the call path, as real calls would.
    eventually(WAIT, "the misnamed PSAP down on its test call", || {
        let s = p.health.status("psap-b").unwrap();
        s.state == State::Down && s.last_reason.contains("test call failed")
    })
    .await;
    assert_eq!(misnamed.count("INVITE"), 0);
}
