//! The async shell of one test call: its own sockets, the clock, and carrying out the machine's actions.
//!
//! Sockets: over UDP a SIP socket bound to an ephemeral port and *connected* to the target's next hop,
//! so an ICMP port unreachable comes back as an error on it (that is how a closed port fails the call
//! at once) and only the target's datagrams reach it; over TCP a connection of its own, framed by
//! Content-Length (`sip::frame_len`). The RTP socket is bound to the same local IP, ephemeral port,
//! and left unconnected: an RFC 6849 loopback server or a media relay may answer from another port.

use super::machine::{Action, Setup, TestCall};
use super::message::Ids;
use super::{Details, PathFailure, Verdict};
use crate::config::{Proto, TestCallMedia};
use crate::routing::{Target, TestCallSettings};
use crate::sip::{Limits, Message, frame_len};
use crate::transport::{TlsMaterial, tls::connect_client};
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tracing::{debug, trace};

/// What one test call needs besides the target.
#[derive(Debug, Clone)]
pub struct CallParams {
    pub request_uri: String,
    /// INVITE to final response (and the TCP connect).
    pub timeout: Duration,
    pub media: TestCallMedia,
    pub rtp_packets: u32,
    /// Local IP to send from (SIP and RTP). `None`: the one the OS picks toward the target. Set it
    /// to the proxy's listen IP where answering points allow only that address.
    pub bind_ip: Option<IpAddr>,
    /// The `[tls]` trust and client certificate, for a TLS target (None: a TLS target's test call
    /// is not placed).
    pub tls: Option<TlsMaterial>,
}

impl CallParams {
    /// From the rules' `[test_calls]`; `None` when the target gets no test calls (a tel target
    /// without `test_uri`, see [`TestCallSettings::uri_for`]).
    pub fn for_target(s: &TestCallSettings, target: &Target) -> Option<CallParams> {
        Some(CallParams {
            request_uri: s.uri_for(target)?.to_string(),
            timeout: s.timeout,
            media: s.media,
            rtp_packets: s.rtp_packets,
            bind_ip: None,
            tls: None,
        })
    }
}

/// The SIP side of the call.
enum Sip {
    Udp(UdpSocket),
    Tcp(TcpStream, BytesMut),
    Tls(Box<TlsStream<TcpStream>>, BytesMut),
}

impl Sip {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sip::Udp(s) => s.send(bytes).await.map(|_| ()),
            Sip::Tcp(s, _) => s.write_all(bytes).await,
            Sip::Tls(s, _) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    /// The next messages: one datagram, or every complete message in the stream's buffer after
    /// one read.
    async fn recv(&mut self, buf: &mut [u8], limits: &Limits) -> io::Result<Vec<Bytes>> {
        match self {
            Sip::Udp(s) => {
                let n = s.recv(buf).await?;
                Ok(vec![Bytes::copy_from_slice(&buf[..n])])
            }
            Sip::Tcp(s, acc) => read_frames(s, acc, limits).await,
            Sip::Tls(s, acc) => read_frames(s, acc, limits).await,
        }
    }

    fn is_datagram(&self) -> bool {
        matches!(self, Sip::Udp(_))
    }
}

/// One read from a stream, then every complete message in its buffer (Content-Length framing).
async fn read_frames(
    s: &mut (impl AsyncRead + Unpin),
    acc: &mut BytesMut,
    limits: &Limits,
) -> io::Result<Vec<Bytes>> {
    if s.read_buf(acc).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by the target",
        ));
    }
    let mut out = Vec::new();
    loop {
        match frame_len(acc, limits) {
            Ok(Some(n)) => {
                let frame = acc.split_to(n).freeze();
                if frame.iter().any(|b| !matches!(b, b'\r' | b'\n')) {
                    out.push(frame);
                }
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                acc.advance(acc.len());
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

/// Where the call's SIP socket binds: `bind_ip` if given, else any address of the target's family.
fn bind_addr(bind_ip: Option<IpAddr>, target: SocketAddr) -> SocketAddr {
    let any = match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(bind_ip.unwrap_or(any), 0)
}

/// Opens the SIP side. Err: the verdict (a refused or timed-out connection fails the call path; a
/// local socket we cannot open is ours).
async fn open(target: &Target, p: &CallParams) -> Result<(Sip, SocketAddr), Verdict> {
    let to = target.next_hop;
    let local_err = |e: io::Error| Verdict::NotPlaced(format!("SIP socket: {e}"));
    match target.transport {
        Proto::Udp => {
            let s = UdpSocket::bind(bind_addr(p.bind_ip, to))
                .await
                .map_err(local_err)?;
            s.connect(to).await.map_err(local_err)?;
            let local = s.local_addr().map_err(local_err)?;
            Ok((Sip::Udp(s), local))
        }
        Proto::Tcp | Proto::Tls => {
            let path = |why: String| Verdict::CallPathFailed(PathFailure::Transport(why));
            let tls = match (target.transport, &p.tls) {
                (Proto::Tls, None) => {
                    return Err(Verdict::NotPlaced(
                        "a TLS target, and no [tls] loaded".into(),
                    ));
                }
                (Proto::Tls, Some(m)) => Some(m),
                _ => None,
            };
            let connect = async {
                let socket = match to {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                if let Some(ip) = p.bind_ip {
                    socket.bind(SocketAddr::new(ip, 0))?;
                }
                socket.connect(to).await
            };
            let s = match tokio::time::timeout(p.timeout, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(path(format!("connect to {to}: {e}"))),
                Err(_) => return Err(path(format!("connect to {to} timed out"))),
            };
            let _ = s.set_nodelay(true);
            let local = s.local_addr().map_err(local_err)?;
            let acc = BytesMut::with_capacity(4096);
            let Some(material) = tls else {
                return Ok((Sip::Tcp(s, acc), local));
            };
            // A handshake that fails (untrusted or wrong certificate, refused client
            // certificate) fails the call path: real calls would fail the same way.
            match connect_client(material, target.tls_name.as_deref(), s).await {
                Ok(t) => Ok((Sip::Tls(Box::new(t), acc), local)),
                Err(e) => Err(path(format!("tls to {to}: {e}"))),
            }
        }
    }
}

/// Places one test call to `target` and runs it to its end (BYE answered or bounded, late messages
/// handled). `on_verdict` is called once, as soon as the verdict is known (before the BYE). Returns
/// the verdict and the details as they stand at the end (with the BYE's status).
pub async fn run_test_call(
    target: &Target,
    params: &CallParams,
    mut on_verdict: impl FnMut(&Verdict, &Details),
) -> (Verdict, Details) {
    let started = Instant::now();
    let mut details = Details::default();
    let (mut sip, local) = match open(target, params).await {
        Ok(x) => x,
        Err(v) => {
            details.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            on_verdict(&v, &details);
            return (v, details);
        }
    };
    let rtp = match UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await {
        Ok(s) => s,
        Err(e) => {
            let v = Verdict::NotPlaced(format!("RTP socket: {e}"));
            on_verdict(&v, &details);
            return (v, details);
        }
    };
    let rtp_local = rtp.local_addr().unwrap_or(SocketAddr::new(local.ip(), 0));
    let setup = Setup {
        request_uri: params.request_uri.clone(),
        transport: target.transport,
        local,
        rtp_local,
        timeout: params.timeout,
        media: params.media,
        rtp_packets: params.rtp_packets,
        ids: Ids::random(),
    };
    let mut out = Vec::new();
    let mut call = match TestCall::start(setup, now(), &mut out) {
        Ok(c) => c,
        Err(why) => {
            let v = Verdict::NotPlaced(why);
            on_verdict(&v, &details);
            return (v, details);
        }
    };
    let limits = Limits::default();
    let mut sip_buf = vec![0u8; 65_536];
    let mut rtp_buf = vec![0u8; 2048];
    let (mut sip_open, mut rtp_open) = (true, true);
    loop {
        while !out.is_empty() {
            for action in std::mem::take(&mut out) {
                match action {
                    Action::Sip(bytes) => {
                        trace!(target = %target.id, "test call sends {} bytes", bytes.len());
                        if let Err(e) = sip.send(&bytes).await {
                            sip_open = sip.is_datagram();
                            call.on_transport_error(&e.to_string(), now(), &mut out);
                        }
                    }
                    Action::Rtp(bytes, to) => {
                        let _ = rtp.send_to(&bytes, to).await;
                    }
                    Action::Verdict(v, d) => on_verdict(&v, &d),
                }
            }
        }
        if call.is_done() {
            break;
        }
        let wake = call
            .next_wake()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => call.tick(now(), &mut out),
            r = sip.recv(&mut sip_buf, &limits), if sip_open => match r {
                Ok(frames) => {
                    for f in frames {
                        match Message::parse(f, &limits) {
                            Ok(m) => call.on_sip(m, now(), &mut out),
                            Err(e) => debug!(target = %target.id, "test call: unparsable message ignored: {e}"),
                        }
                    }
                }
                Err(e) => {
                    // A connected UDP socket reports ICMP errors once; a stream is over for good.
                    sip_open = sip.is_datagram();
                    call.on_transport_error(&e.to_string(), now(), &mut out);
                }
            },
            r = rtp.recv_from(&mut rtp_buf), if rtp_open => match r {
                Ok((n, from)) => call.on_rtp(from, &rtp_buf[..n], now(), &mut out),
                Err(_) => rtp_open = false,
            },
        }
    }
    let details = call.details().clone();
    match call.verdict() {
        Some(v) => (v.clone(), details),
        // Unreachable by the machine's contract (every path to done gives a verdict); say so if not.
        None => (
            Verdict::NotPlaced("test call ended without a verdict".into()),
            details,
        ),
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}
