//! Sockets: bytes in, bytes out. UDP listen sockets, one connected UDP socket per target (so ICMP
//! "port unreachable" is seen at once and attributed to that target), TCP listeners and connections
//! framed by Content-Length. Nothing here parses SIP beyond framing.
//!
//! Receive loops hand every message to a [`Handler`] synchronously; sending never blocks the caller.

mod tcp;
mod tcp_read;
mod udp;

use crate::config::{LimitsSpec, Proto};
use crate::sip::Limits;
use crate::tasks::Tasks;
use bytes::Bytes;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use tcp::ConnId;

/// One received message (a UDP datagram or one framed TCP message).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub data: Bytes,
    pub peer: SocketAddr,
    pub proto: Proto,
    /// The TCP connection it arrived on, so replies go back over it.
    pub conn: Option<ConnId>,
}

/// Where to send: protocol, address, and for TCP the connection to prefer.
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
    /// Nothing can reach `addr` over `proto` right now: ICMP unreachable on UDP, TCP refused/reset/timeout.
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
    tcp: Option<tcp::TcpSide>,
    handler: OnceLock<Arc<dyn Handler>>,
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
        if udp_addr.is_none() && tcp_addr.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listen address",
            ));
        }
        let udp = match udp_addr {
            Some(a) => Some(udp::UdpSide::bind(a, tasks.clone())?),
            None => None,
        };
        let tcp = match tcp_addr {
            Some(a) => Some(tcp::TcpSide::bind(a, cfg, tasks).await?),
            None => None,
        };
        Ok(Transport {
            inner: Arc::new(Inner {
                cfg,
                udp,
                tcp,
                handler: OnceLock::new(),
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
            t.start(handler);
        }
    }

    /// The local address of the listener for `proto` (what goes into our Via and Record-Route).
    pub fn local_addr(&self, proto: Proto) -> Option<SocketAddr> {
        match proto {
            Proto::Udp => self.inner.udp.as_ref().map(|u| u.local_addr()),
            Proto::Tcp => self.inner.tcp.as_ref().map(|t| t.local_addr()),
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
        }
    }

    /// Open TCP connections, both directions (for tests and soak checks).
    pub fn tcp_connections(&self) -> usize {
        self.inner.tcp.as_ref().map_or(0, |t| t.connections())
    }

    /// Stops accepting new TCP connections (graceful shutdown).
    pub fn stop_accepting(&self) {
        if let Some(t) = &self.inner.tcp {
            t.stop_accepting();
        }
    }
}
