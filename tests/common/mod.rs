//! Builders for integration tests: fake answering points (`uas(..)`), a fake caller (`Uac`), and a
//! proxy started on loopback with lab-like rules whose targets are the fakes' ports; the shared
//! constants (waits, timers, probe settings) and the one HTTP test client ([`http`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod tls;

use bytes::{Bytes, BytesMut};
use sosrouter::config::Proto;
use sosrouter::sip::{HeaderName, Limits, Message, frame_len};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How a fake answering point treats an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 100, 180, then 200 with a Contact.
    Answer,
    /// 100 then this final code.
    Reply(u16),
    /// Takes the INVITE and never answers (a hung PSAP).
    Silent,
    /// 100 and 180, never answers; a CANCEL gets 200 and the INVITE 487.
    RingForever,
}

/// One request a fake answering point received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub request_uri: String,
    pub from: SocketAddr,
    pub msg: Message,
}

/// What the fake answering points accept: more than the proxy's defaults, since a forwarded request
/// carries the proxy's own Via and Record-Route on top of what the caller sent.
pub const PSAP_LIMITS: Limits = Limits {
    max_message_bytes: 131_072,
    max_headers: 1024,
    max_line_bytes: 16_384,
};

/// A fake answering point on a UDP loopback port. Its behaviour can change while it runs; when
/// muted it drops everything, OPTIONS included (a hung PSAP).
pub struct Uas {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    ctl: Arc<Mutex<(Behaviour, bool)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Uas {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Uas {
    pub async fn start(b: Behaviour) -> Uas {
        Uas::start_on("127.0.0.1:0", b).await
    }

    /// A fake answering point bound to `addr` (e.g. `[::1]:0`).
    pub async fn start_on(addr: &str, b: Behaviour) -> Uas {
        let sock = UdpSocket::bind(addr).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let ctl = Arc::new(Mutex::new((b, false)));
        let task = tokio::spawn(uas_loop(sock, ctl.clone(), log.clone()));
        Uas {
            addr,
            log,
            ctl,
            task,
        }
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        self.ctl.lock().unwrap().0 = b;
    }

    pub fn set_muted(&self, muted: bool) {
        self.ctl.lock().unwrap().1 = muted;
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.method == method)
            .count()
    }
}

async fn uas_loop(
    sock: UdpSocket,
    ctl: Arc<Mutex<(Behaviour, bool)>>,
    log: Arc<Mutex<Vec<Received>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let (b, muted) = *ctl.lock().unwrap();
        if muted {
            continue;
        }
        let Ok(msg) = Message::parse(Bytes::copy_from_slice(&buf[..n]), &PSAP_LIMITS) else {
            continue;
        };
        if !msg.is_request() {
            continue;
        }
        let method = String::from_utf8_lossy(msg.method_bytes().unwrap_or_default()).into_owned();
        let request_uri =
            String::from_utf8_lossy(msg.request_uri().unwrap_or_default()).into_owned();
        log.lock().unwrap().push(Received {
            method: method.clone(),
            request_uri,
            from,
            msg: msg.clone(),
        });
        let contact = format!("<sip:uas@{}>", sock.local_addr().unwrap());
        for m in react(&msg, &method, b, &contact, &log) {
            let _ = sock.try_send_to(&m, from);
        }
    }
}

/// What a fake answering point sends back for one request it logged (any transport).
pub fn react(
    msg: &Message,
    method: &str,
    b: Behaviour,
    contact: &str,
    log: &Mutex<Vec<Received>>,
) -> Vec<Bytes> {
    let mut out = Vec::new();
    {
        let msg = msg.clone();
        let contact = contact.to_string();
        let mut send = |m: Bytes| out.push(m);
        match (method, b) {
            ("INVITE", Behaviour::Answer) => {
                send(response(&msg, 100, "Trying", None, None));
                send(response(&msg, 180, "Ringing", Some("uas1"), None));
                send(response(&msg, 200, "OK", Some("uas1"), Some(&contact)));
            }
            ("INVITE", Behaviour::Reply(code)) => {
                send(response(&msg, 100, "Trying", None, None));
                send(response(&msg, code, "Failure", Some("uas1"), None));
            }
            ("INVITE", Behaviour::RingForever) => {
                send(response(&msg, 100, "Trying", None, None));
                send(response(&msg, 180, "Ringing", Some("uas1"), None));
            }
            ("INVITE", Behaviour::Silent) => {}
            ("CANCEL", _) => {
                send(response(&msg, 200, "OK", Some("uas1"), None));
                // The INVITE it cancels has the same branch: answer it 487.
                let invite = log
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .find(|r| r.method == "INVITE" && same_branch(&r.msg, &msg))
                    .map(|r| r.msg.clone());
                if let Some(inv) = invite {
                    send(response(
                        &inv,
                        487,
                        "Request Terminated",
                        Some("uas1"),
                        None,
                    ));
                }
            }
            ("ACK", _) => {}
            _ => send(response(&msg, 200, "OK", Some("uas1"), None)),
        }
    }
    out
}

fn same_branch(a: &Message, b: &Message) -> bool {
    a.top_via().ok().and_then(|v| v.branch.map(|x| x.to_vec()))
        == b.top_via().ok().and_then(|v| v.branch.map(|x| x.to_vec()))
}

/// A UAS response (RFC 3261 §8.2.6, §12.1.1): Vias, Record-Route (for 18x/2xx), From, To with tag,
/// Call-ID, CSeq, Contact.
pub fn response(
    req: &Message,
    code: u16,
    reason: &str,
    tag: Option<&str>,
    contact: Option<&str>,
) -> Bytes {
    let raw = req.bytes();
    let mut out = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
    for h in req.headers() {
        let copy = match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => true,
            HeaderName::RecordRoute => (101..300).contains(&code),
            _ => false,
        };
        if copy {
            out.extend_from_slice(&raw[h.line_span.clone()]);
        }
    }
    let to = req.header(HeaderName::To).unwrap();
    out.extend_from_slice(b"To: ");
    out.extend_from_slice(&to);
    if let (Some(t), None) = (tag, req.to_tag())
        && code > 100
    {
        out.extend_from_slice(format!(";tag={t}").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(c) = contact {
        out.extend_from_slice(format!("Contact: {c}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Bytes::from(out)
}

/// A port with nothing listening (bound, then closed), so datagrams to it draw ICMP unreachable.
pub async fn dead_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.local_addr().unwrap()
}

/// Rules text for the lab chain primary -> backup -> business line (tel: through the gateway),
/// with the given addresses and timers.
pub fn lab_rules(
    primary: SocketAddr,
    backup: SocketAddr,
    gateway: SocketAddr,
    timers: &str,
) -> String {
    lab_rules_with_health(primary, backup, gateway, timers, "probe = false")
}

/// As [`lab_rules`], with these `[health]` settings.
pub fn lab_rules_with_health(
    primary: SocketAddr,
    backup: SocketAddr,
    gateway: SocketAddr,
    timers: &str,
    health: &str,
) -> String {
    format!(
        r#"
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]

[defaults]
{timers}

[health]
{health}

[[targets]]
id = "psap-primary"
uri = "sip:{primary}"
failure_domain = "psap-a"

[[targets]]
id = "psap-backup"
uri = "sip:{backup}"
failure_domain = "psap-b"

[[targets]]
id = "pstn-gateway"
uri = "sip:{gateway}"
failure_domain = "pstn"

[[targets]]
id = "business-line"
tel = "+15555550100"
gateway = "pstn-gateway"
failure_domain = "pstn"

[default_route]
chain = ["psap-primary", "psap-backup", "business-line"]
"#
    )
}

/// Liveness bound: how long a test waits for something that happens in milliseconds (a response, a
/// counter, a state change) before it fails loudly. Never a timing assertion: a pass does not
/// depend on it, only how long a broken build hangs.
pub const WAIT: Duration = Duration::from_secs(15);

/// How long a test listens for something that must *not* arrive (a response to a message the
/// proxy drops). Such a check can only pass wrongly on a slow run, never fail wrongly.
pub const QUIET: Duration = Duration::from_millis(300);

/// Probes every 100 ms; down after 2 failed probes or 3 failed calls, back after 2 good probes.
pub const FAST_PROBES: &str = "probe = true\nprobe_interval_ms = 100\nprobe_timeout_ms = 50\n\
    probe_jitter_percent = 10\ndown_after_probe_failures = 2\nup_after_probe_successes = 2\n\
    down_after_call_failures = 3";

/// Timers short enough that a test which needs one to fire (a silent or ringing target) is quick.
/// Tests where no timer should fire use [`NO_TIMERS`].
pub const FAST_TIMERS: &str =
    "attempt_timeout_ms = 300\nring_timeout_ms = 600\ncall_deadline_ms = 5000";
/// Timers so long that a failover within a test's timeout cannot have come from a timer.
pub const NO_TIMERS: &str =
    "attempt_timeout_ms = 30000\nring_timeout_ms = 30000\ncall_deadline_ms = 120000";

/// Logs to the test's output when RUST_LOG is set (e.g. RUST_LOG=sosrouter=debug).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Starts a proxy on loopback with these rules.
pub async fn proxy(
    rules: &str,
    undelivered: Option<std::path::PathBuf>,
) -> sosrouter::app::Running {
    proxy_with(rules, undelivered, None).await
}

/// Starts a proxy, optionally with its admin endpoint on `admin` (e.g. 127.0.0.1:0).
pub async fn proxy_with(
    rules: &str,
    undelivered: Option<std::path::PathBuf>,
    admin: Option<SocketAddr>,
) -> sosrouter::app::Running {
    init_logs();
    let (rules, _warnings) = match sosrouter::routing::Rules::parse(rules, "test.toml") {
        Ok(r) => r,
        Err(d) => panic!("test rules refused: {d:?}"),
    };
    let opts = sosrouter::app::RunOptions {
        undelivered_path: undelivered,
        admin,
        ..Default::default()
    };
    sosrouter::app::start(rules, &opts).await.unwrap()
}

/// A byte stream a fake caller talks over: TCP, or TLS over TCP.
pub trait SipStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> SipStream for T {}

/// A fake caller over UDP, TCP or TLS.
pub struct Uac {
    proto: Proto,
    udp: Option<UdpSocket>,
    tcp: Option<Box<dyn SipStream>>,
    buf: BytesMut,
    pub proxy: SocketAddr,
    pub local: SocketAddr,
    cseq: u32,
}

/// What the caller saw of a call.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub provisional: Vec<u16>,
    pub final_code: u16,
    pub final_msg: Message,
}

impl Uac {
    pub async fn new(proto: Proto, proxy: SocketAddr) -> Uac {
        match proto {
            Proto::Udp => {
                let bind = if proxy.is_ipv6() {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                };
                let s = UdpSocket::bind(bind).await.unwrap();
                let local = s.local_addr().unwrap();
                Uac {
                    proto,
                    udp: Some(s),
                    tcp: None,
                    buf: BytesMut::new(),
                    proxy,
                    local,
                    cseq: 1,
                }
            }
            Proto::Tcp => {
                let s = TcpStream::connect(proxy).await.unwrap();
                let local = s.local_addr().unwrap();
                Uac {
                    proto,
                    udp: None,
                    tcp: Some(Box::new(s)),
                    buf: BytesMut::new(),
                    proxy,
                    local,
                    cseq: 1,
                }
            }
            Proto::Tls => panic!("a TLS caller needs its client configuration: Uac::tls"),
        }
    }

    /// A caller over TLS to the proxy's TLS address, checking the proxy's certificate carries
    /// `name`. Err: the handshake failed (as the client saw it; with TLS 1.3 a server refusing
    /// the client's certificate shows only on the first read).
    pub async fn tls(
        proxy: SocketAddr,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> std::io::Result<Uac> {
        let s = TcpStream::connect(proxy).await?;
        let local = s.local_addr()?;
        let name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(std::io::Error::other)?;
        let s = tokio_rustls::TlsConnector::from(client)
            .connect(name, s)
            .await?;
        Ok(Uac {
            proto: Proto::Tls,
            udp: None,
            tcp: Some(Box::new(s)),
            buf: BytesMut::new(),
            proxy,
            local,
            cseq: 1,
        })
    }

    /// A UDP caller bound to `ip` (any 127.0.0.0/8 address works on Linux loopback), so tests can
    /// have callers from different sources.
    pub async fn udp_from(ip: &str, proxy: SocketAddr) -> Uac {
        let s = UdpSocket::bind((ip, 0)).await.unwrap();
        let local = s.local_addr().unwrap();
        Uac {
            proto: Proto::Udp,
            udp: Some(s),
            tcp: None,
            buf: BytesMut::new(),
            proxy,
            local,
            cseq: 1,
        }
    }

    pub async fn send(&mut self, m: &[u8]) {
        match self.proto {
            Proto::Udp => {
                self.udp
                    .as_ref()
                    .unwrap()
                    .send_to(m, self.proxy)
                    .await
                    .unwrap();
            }
            Proto::Tcp | Proto::Tls => {
                let s = self.tcp.as_mut().unwrap();
                s.write_all(m).await.unwrap();
                s.flush().await.unwrap();
            }
        }
    }

    /// The next message, or None after `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<Message> {
        tokio::time::timeout(wait, self.recv_inner())
            .await
            .ok()
            .flatten()
    }

    async fn recv_inner(&mut self) -> Option<Message> {
        match self.proto {
            Proto::Udp => {
                let mut b = vec![0u8; 65536];
                let (n, _) = self.udp.as_ref().unwrap().recv_from(&mut b).await.ok()?;
                Message::parse(Bytes::copy_from_slice(&b[..n]), &Limits::default()).ok()
            }
            Proto::Tcp | Proto::Tls => loop {
                if let Ok(Some(n)) = frame_len(&self.buf, &Limits::default()) {
                    let f = self.buf.split_to(n).freeze();
                    if f.iter().all(|c| *c == b'\r' || *c == b'\n') {
                        continue;
                    }
                    return Message::parse(f, &Limits::default()).ok();
                }
                let s = self.tcp.as_mut().unwrap();
                if s.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            },
        }
    }

    fn transport_token(&self) -> &'static str {
        self.proto.via_token()
    }

    /// An emergency INVITE to `ruri` with PAI, Geolocation and an SDP body.
    pub fn invite(&self, ruri: &str, call_id: &str, branch: &str) -> Bytes {
        let sdp = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
        Bytes::from(format!(
            "INVITE {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+16175550123@carrier.example>;tag=caller1\r\n\
             To: <{ruri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:caller@{local};transport={tl}>\r\n\
             P-Asserted-Identity: <sip:+16175550123@carrier.example;user=phone>\r\n\
             Geolocation: <cid:loc-1@carrier.example>\r\n\
             Resource-Priority: esnet.1\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            t = self.transport_token(),
            tl = self.transport_token().to_ascii_lowercase(),
            local = self.local,
            len = sdp.len(),
        ))
    }

    /// Sends an INVITE and collects responses until a final (or `wait` passes: panics).
    pub async fn call(&mut self, ruri: &str, call_id: &str, wait: Duration) -> Outcome {
        let branch = format!("z9hG4bK-uac-{call_id}");
        let inv = self.invite(ruri, call_id, &branch);
        self.send(&inv).await;
        self.await_final(wait).await
    }

    pub async fn await_final(&mut self, wait: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + wait;
        let mut provisional = vec![];
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv(left).await.expect("no final response in time");
            let Some(code) = m.status() else { continue };
            if m.cseq().method != sosrouter::sip::Method::Invite {
                continue;
            }
            if code < 200 {
                provisional.push(code);
            } else {
                return Outcome {
                    provisional,
                    final_code: code,
                    final_msg: m,
                };
            }
        }
    }

    /// After a 2xx: ACK and BYE along the route set (Record-Route reversed), expecting 200 to BYE.
    pub async fn ack_and_bye(&mut self, ok: &Message, call_id: &str) -> u16 {
        let mut routes: Vec<String> = ok
            .header_values(HeaderName::RecordRoute)
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        routes.reverse();
        let contact = ok.header(HeaderName::Contact).expect("2xx without Contact");
        let target = Message::addr_spec(&contact)
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap();
        let to = String::from_utf8_lossy(&ok.header(HeaderName::To).unwrap()).into_owned();
        let route_lines: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        for (method, seq) in [("ACK", 1), ("BYE", 2)] {
            self.cseq = seq;
            let m = format!(
                "{method} {target} SIP/2.0\r\n\
                 Via: SIP/2.0/{t} {local};branch=z9hG4bK-{method}-{call_id};rport\r\n\
                 Max-Forwards: 70\r\n\
                 {route_lines}\
                 From: <sip:+16175550123@carrier.example>;tag=caller1\r\n\
                 To: {to}\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: {seq} {method}\r\n\
                 Content-Length: 0\r\n\r\n",
                t = self.transport_token(),
                local = self.local,
            );
            self.send(m.as_bytes()).await;
        }
        loop {
            let m = self
                .recv(Duration::from_secs(5))
                .await
                .expect("no response to BYE");
            if m.cseq().method == sosrouter::sip::Method::Bye {
                return m.status().unwrap();
            }
        }
    }

    /// CANCEL for the INVITE sent with `call_id` (same branch, RFC 3261 §9.1).
    pub async fn cancel(&mut self, ruri: &str, call_id: &str) {
        let m = format!(
            "CANCEL {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {local};branch=z9hG4bK-uac-{call_id};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+16175550123@carrier.example>;tag=caller1\r\n\
             To: <{ruri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 CANCEL\r\n\
             Content-Length: 0\r\n\r\n",
            t = self.transport_token(),
            local = self.local,
        );
        self.send(m.as_bytes()).await;
    }
}

/// Waits until `f` holds, polling; panics after `wait` (a liveness bound, not a timing assertion).
pub async fn eventually(wait: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + wait;
    while !f() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The text of `path` once it holds a complete line (a record the proxy's writer thread appended);
/// panics after `WAIT`. Polls in real time on a blocking thread: a running blocking task holds a
/// paused test clock still, so this also works under `start_paused` (where `eventually` would run
/// its whole virtual `WAIT` out before the writer thread got the CPU).
pub async fn file_with_line(path: &std::path::Path) -> String {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && text.ends_with('\n')
            {
                return text;
            }
            assert!(
                std::time::Instant::now() < until,
                "no complete record in {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .unwrap()
}

/// A fresh directory for one test's files (rules, undelivered record), under the system temp dir.
pub fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sosrouter-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces a rules file the way an operator's tooling should: write beside it, then rename, so
/// nothing ever reads half a file.
pub fn write_rules(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts a proxy from a rules file (as `sosrouter run` does), with the admin endpoint on a free
/// loopback port and, when `watch` is given, the file watcher.
pub async fn proxy_from_file(
    path: &std::path::Path,
    undelivered: Option<std::path::PathBuf>,
    watch: Option<sosrouter::app::WatchSettings>,
) -> sosrouter::app::Running {
    init_logs();
    let opts = sosrouter::app::RunOptions {
        rules_path: path.to_path_buf(),
        undelivered_path: undelivered,
        admin: Some("127.0.0.1:0".parse().unwrap()),
        watch_rules: watch,
        ..Default::default()
    };
    sosrouter::app::start_from_file(&opts).await.unwrap()
}

/// One admin HTTP request; the status code and the JSON body (Null when not JSON).
pub async fn admin_call(addr: SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    let r = http::request(addr, method, path, &[]).await;
    (r.status, r.json())
}

/// The lab rules with the default chain's first two targets swapped (backup first).
pub fn swap_primary_and_backup(rules: &str) -> String {
    let old = r#"chain = ["psap-primary", "psap-backup", "business-line"]"#;
    assert!(rules.contains(old), "not the lab default chain");
    rules.replace(
        old,
        r#"chain = ["psap-backup", "psap-primary", "business-line"]"#,
    )
}
