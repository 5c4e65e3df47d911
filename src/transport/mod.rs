//! Sockets: bytes in, bytes out. UDP listen sockets, one connected UDP socket per target (so ICMP
//! "port unreachable" is seen at once and attributed to that target), TCP and TLS listeners and
//! connections framed by Content-Length (`stream`: one code path generic over the byte stream;
//! `tls`: the `[tls]` files loaded into rustls configurations). Nothing here parses SIP beyond framing.
//!
//! Receive loops hand every message to a [`Handler`] synchronously; sending never blocks the caller.

mod stream;
mod stream_read;
pub mod tls;
mod udp;

use crate::config::{LimitsSpec, Proto};
use crate::sip::Limits;
use crate::tasks::Tasks;
use bytes::Bytes;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use stream::{ConnId, KEEPALIVE_PING};
pub use tls::{TlsFigures, TlsMaterial};
pub use udp::Backlog;

/// One received message (a UDP datagram or one framed TCP message).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub data: Bytes,
    pub peer: SocketAddr,
    pub proto: Proto,
    /// The TCP or TLS connection it arrived on, so replies go back over it.
    pub conn: Option<ConnId>,
}

/// Where to send: protocol, address, and for TCP and TLS the connection to prefer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub conn: Option<ConnId>,
}

impl Destination {
    pub fn new(proto: Proto, addr: SocketAddr) -> Destination {
        Destination {
            proto,
            addr,
            conn: None,
        }
    }
}

/// What the transport reports upward. Implemented by the proxy.
pub trait Handler: Send + Sync + 'static {
    fn on_message(&self, msg: Incoming);
    /// Nothing can reach `addr` over `proto` right now: ICMP unreachable on UDP, TCP refused/reset/timeout,
    /// a failed TLS handshake.
    fn on_unreachable(&self, proto: Proto, addr: SocketAddr);
}

/// Limits and timers of the transport layer. Defaults and their reasons: `config::protection_defaults`
/// and the `[limits]` section of `routing-rules/lab.toml`.
#[derive(Debug, Clone, Copy)]
pub struct TransportConfig {
    /// Largest message accepted on any transport, in bytes.
    pub max_message_bytes: usize,
    /// Message limits applied while framing TCP (size, header count, line length), before parsing.
    pub limits: Limits,
    /// Accepted TCP connections per source IP; more are closed at accept. Default 64.
    pub tcp_connections_per_source: usize,
    /// A TCP message must be complete this long after its first byte (slowloris). Default 10 s.
    pub tcp_message_deadline: Duration,
    /// TCP connect timeout toward targets. Default 2 s: a PSAP that cannot accept a connection in 2 s
    /// is failed over.
    pub tcp_connect_timeout: Duration,
    /// A TCP connection with no traffic for this long is closed. Default 300 s.
    pub tcp_idle_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig::from_spec(&crate::config::ProtectionSpec::default().limits)
    }
}

impl TransportConfig {
    /// From the rules file's `[limits]`.
    pub fn from_spec(l: &LimitsSpec) -> TransportConfig {
        let ms = Duration::from_millis;
        TransportConfig {
            max_message_bytes: l.max_message_bytes as usize,
            limits: limits_of(l),
            tcp_connections_per_source: l.tcp_connections_per_source as usize,
            tcp_message_deadline: ms(l.tcp_message_deadline_ms),
            tcp_connect_timeout: ms(l.tcp_connect_timeout_ms),
            tcp_idle_timeout: ms(l.tcp_idle_timeout_ms),
        }
    }
}

/// The codec's limits from the rules file's `[limits]` (the proxy parses with the same ones).
pub fn limits_of(l: &LimitsSpec) -> Limits {
    Limits {
        max_message_bytes: l.max_message_bytes as usize,
        max_headers: l.max_headers as usize,
        max_line_bytes: l.max_line_bytes as usize,
    }
}

/// The proxy's sockets. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: TransportConfig,
    udp: Option<udp::UdpSide>,
    tcp: Option<stream::StreamSide>,
    /// Always there (TLS targets need no TLS listener); listens only when given an address.
    tls: stream::StreamSide,
    handler: OnceLock<Arc<dyn Handler>>,
    /// Whether we are behind reading the UDP socket (health holds timeouts then).
    backlog: Arc<Backlog>,
}

/// The listen addresses of [`Transport::bind_all`]; any may be absent, not all of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

impl Transport {
    /// Binds the UDP and the TCP listen address (either may be absent, not both). Fails when one
    /// cannot be bound (the proxy must not half-start).
    pub async fn bind(
        udp_addr: Option<SocketAddr>,
        tcp_addr: Option<SocketAddr>,
        cfg: TransportConfig,
        tasks: Tasks,
    ) -> io::Result<Transport> {
        let addrs = ListenAddrs {
            udp: udp_addr,
            tcp: tcp_addr,
            tls: None,
        };
        Transport::bind_all(addrs, None, cfg, tasks).await
    }

    /// As [`Transport::bind`], with a TLS listener when `addrs.tls` is given (it needs `tls` with a
    /// certificate) and TLS toward targets whenever `tls` is given.
    pub async fn bind_all(
        addrs: ListenAddrs,
        tls: Option<TlsMaterial>,
        cfg: TransportConfig,
        tasks: Tasks,
    ) -> io::Result<Transport> {
        if addrs.udp.is_none() && addrs.tcp.is_none() && addrs.tls.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listen address",
            ));
        }
        if addrs.tls.is_some() && !tls.as_ref().is_some_and(|m| m.has_server_certificate()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TLS listen address needs [tls] cert_file and key_file",
            ));
        }
        let backlog = Arc::new(Backlog::default());
        let udp = match addrs.udp {
            Some(a) => Some(udp::UdpSide::bind(a, tasks.clone(), backlog.clone())?),
            None => None,
        };
        let tcp = match addrs.tcp {
            Some(a) => {
                Some(stream::StreamSide::bind(Proto::Tcp, Some(a), cfg, tasks.clone(), None).await?)
            }
            None => None,
        };
        let tls_ctx = stream::TlsCtx::new(tls);
        let tls =
            stream::StreamSide::bind(Proto::Tls, addrs.tls, cfg, tasks, Some(tls_ctx)).await?;
        Ok(Transport {
            inner: Arc::new(Inner {
                cfg,
                udp,
                tcp,
                tls,
                handler: OnceLock::new(),
                backlog,
            }),
        })
    }

    /// Starts the receive loops. Call once.
    pub fn start(&self, handler: Arc<dyn Handler>) {
        if self.inner.handler.set(handler.clone()).is_err() {
            return;
        }
        if let Some(u) = &self.inner.udp {
            u.start(handler.clone(), self.inner.cfg.max_message_bytes);
        }
        if let Some(t) = &self.inner.tcp {
            t.start(handler.clone());
        }
        self.inner.tls.start(handler);
    }

    /// The last instant this process was behind reading its UDP socket (see [`Backlog`]), if ever.
    pub fn last_behind(&self) -> Option<std::time::Instant> {
        self.inner.backlog.last_behind()
    }

    /// The UDP socket's backlog mark (tests mark it behind: a real backlog cannot build up under
    /// paused time, where reading takes no time).
    #[doc(hidden)]
    pub fn backlog(&self) -> Arc<Backlog> {
        self.inner.backlog.clone()
    }

    /// The local address of the listener for `proto` (what goes into our Via and Record-Route).
    pub fn local_addr(&self, proto: Proto) -> Option<SocketAddr> {
        match proto {
            Proto::Udp => self.inner.udp.as_ref().map(|u| u.local_addr()),
            Proto::Tcp => self.inner.tcp.as_ref().and_then(|t| t.local_addr()),
            Proto::Tls => self.inner.tls.local_addr(),
        }
    }

    /// Sends without blocking. Errors that mean "unreachable" are reported to the handler.
    pub fn send(&self, dst: Destination, data: Bytes) {
        let Some(handler) = self.inner.handler.get() else {
            return;
        };
        match dst.proto {
            Proto::Udp => match &self.inner.udp {
                Some(u) => u.send(dst.addr, data),
                None => handler.on_unreachable(dst.proto, dst.addr),
            },
            Proto::Tcp => match &self.inner.tcp {
                Some(t) => t.send(dst.addr, dst.conn, data, handler),
                None => handler.on_unreachable(dst.proto, dst.addr),
            },
            Proto::Tls => self.inner.tls.send(dst.addr, dst.conn, data, handler),
        }
    }

    /// Replaces the TLS certificates and trust (reload); connections already up keep theirs.
    pub fn set_tls_material(&self, material: Option<TlsMaterial>) {
        self.inner.tls.set_tls_material(material);
    }

    /// The name each TLS target's certificate must carry, by its address (`tls_name`).
    pub fn set_tls_names(&self, names: std::collections::HashMap<SocketAddr, Arc<str>>) {
        self.inner.tls.set_tls_names(names);
    }

    /// TLS connections and handshakes toward `addr` (zeros when none was tried yet).
    pub fn tls_figures(&self, addr: SocketAddr) -> Option<TlsFigures> {
        self.inner.tls.tls_figures(addr)
    }

    /// Handshakes with callers that failed (no or bad client certificate, timeout, garbage).
    pub fn tls_inbound_failures(&self) -> u64 {
        self.inner.tls.tls_inbound_failures()
    }

    /// Open TLS connections, both directions.
    pub fn tls_connections(&self) -> usize {
        self.inner.tls.connections()
    }

    /// Open TCP connections, both directions (for tests and soak checks).
    pub fn tcp_connections(&self) -> usize {
        self.inner.tcp.as_ref().map_or(0, |t| t.connections())
    }

    /// Stops accepting new TCP and TLS connections (graceful shutdown).
    pub fn stop_accepting(&self) {
        if let Some(t) = &self.inner.tcp {
            t.stop_accepting();
        }
        self.inner.tls.stop_accepting();
    }
}
