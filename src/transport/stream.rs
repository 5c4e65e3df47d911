//! Stream transports, TCP and TLS over TCP, with one code path: a listener for callers, outbound
//! connections to targets (one reused per address), one reader and one writer task per connection,
//! generic over the byte stream. Messages are framed by Content-Length (`sip::frame_len`).
//!
//! A refused, reset or timed-out connection toward a target, and for TLS a failed handshake (a
//! certificate that does not carry the target's `tls_name`, an expired or unknown one, a timeout),
//! is reported as unreachable at once, so the call fails over. TLS failures are counted per target
//! address and logged once per reason; a TLS target that failed is retried with backoff (sends in
//! between fail at once). Outbound connections send a double-CRLF keep-alive ping (RFC 5626
//! §4.4.1) every [`KEEPALIVE_PING`]; a ping received is answered with a CRLF pong.

use super::tls::{LinkStats, TlsFigures, TlsMaterial};
use super::{Handler, TransportConfig};
use crate::config::Proto;
use crate::tasks::Tasks;
use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use dashmap::DashMap;
use socket2::{SockRef, TcpKeepalive};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Identifies one stream connection (TCP or TLS) for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    /// The number inside (used in Record-Route flow tokens).
    pub fn raw(self) -> u64 {
        self.0
    }
    pub fn from_raw(n: u64) -> ConnId {
        ConnId(n)
    }
}

/// One counter for TCP and TLS, so a flow token names one connection whatever its transport.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Messages queued toward one connection before sends start being dropped.
const WRITE_QUEUE: usize = 1024;

/// RFC 5626 §4.4.1: an outbound flow pings with a double CRLF this often (well inside the default
/// 300 s idle timeout, ours and typical peers').
pub const KEEPALIVE_PING: Duration = Duration::from_secs(30);

/// Backoff after a failed TLS connection to a target: first retry after this, doubling.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two tries (a probe interval and a bit: a recovered PSAP is seen quickly).
const BACKOFF_MAX: Duration = Duration::from_secs(2);

struct Conn {
    tx: mpsc::Sender<Bytes>,
    peer: SocketAddr,
}

/// What a TLS side adds to a stream side.
pub(super) struct TlsCtx {
    material: ArcSwapOption<TlsMaterial>,
    /// The name each target address's certificate must carry (`tls_name`).
    names: ArcSwap<HashMap<SocketAddr, Arc<str>>>,
    stats: DashMap<SocketAddr, Arc<LinkStats>>,
    backoff: DashMap<SocketAddr, (u32, Instant)>,
    /// Callers whose handshake failed (no or bad certificate under client_auth, timeout...).
    inbound_failures: AtomicU64,
}

impl TlsCtx {
    pub(super) fn new(material: Option<TlsMaterial>) -> TlsCtx {
        TlsCtx {
            material: ArcSwapOption::from(material.map(Arc::new)),
            names: ArcSwap::from_pointee(HashMap::new()),
            stats: DashMap::new(),
            backoff: DashMap::new(),
            inbound_failures: AtomicU64::new(0),
        }
    }

    fn stats(&self, addr: SocketAddr) -> Arc<LinkStats> {
        self.stats.entry(addr).or_default().clone()
    }

    /// Still waiting out the backoff of an earlier failure toward `addr`.
    fn backing_off(&self, addr: SocketAddr) -> bool {
        self.backoff
            .get(&addr)
            .is_some_and(|b| b.1 > Instant::now())
    }

    fn failed(&self, addr: SocketAddr) {
        let mut b = self.backoff.entry(addr).or_insert((0, Instant::now()));
        b.0 = b.0.saturating_add(1);
        let wait = BACKOFF_BASE
            .saturating_mul(1 << (b.0 - 1).min(16))
            .min(BACKOFF_MAX);
        b.1 = Instant::now() + wait;
    }
}

struct Shared {
    proto: Proto,
    cfg: TransportConfig,
    conns: DashMap<ConnId, Conn>,
    by_addr: DashMap<SocketAddr, ConnId>,
    /// Accepted (inbound) connections per source IP, for `tcp_connections_per_source`.
    per_source: DashMap<IpAddr, usize>,
    tasks: Tasks,
    tls: Option<TlsCtx>,
}

/// One stream transport: TCP (`tls` None) or TLS. The listener is optional: a TLS side with no
/// TLS listen address still connects to TLS targets.
pub(super) struct StreamSide {
    listener: std::sync::Mutex<Option<TcpListener>>,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

impl StreamSide {
    pub(super) async fn bind(
        proto: Proto,
        addr: Option<SocketAddr>,
        cfg: TransportConfig,
        tasks: Tasks,
        tls: Option<TlsCtx>,
    ) -> io::Result<StreamSide> {
        let (listener, local) = match addr {
            Some(a) => {
                let l = TcpListener::bind(a).await?;
                let local = l.local_addr()?;
                (Some(l), Some(local))
            }
            None => (None, None),
        };
        Ok(StreamSide {
            listener: std::sync::Mutex::new(listener),
            local,
            shared: Arc::new(Shared {
                proto,
                cfg,
                conns: DashMap::new(),
                by_addr: DashMap::new(),
                per_source: DashMap::new(),
                tasks,
                tls,
            }),
            stop: Arc::new(Notify::new()),
        })
    }

    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    pub(super) fn start(&self, handler: Arc<dyn Handler>) {
        // A poisoned lock still holds the listener: take it anyway rather than never accept.
        let taken = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(listener) = taken else {
            return;
        };
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        self.shared.tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = stop.notified() => return,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        if !shared.claim_source(peer.ip()) {
                            // Closing at once costs the flooder a handshake and us nothing more.
                            tracing::debug!(peer = %peer, limit = shared.cfg.tcp_connections_per_source,
                                "connection refused: per-source connection limit");
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        if shared.tls.is_some() {
                            shared.clone().accept_tls(stream, peer, handler.clone());
                        } else {
                            let (id, rx) = shared.register(peer);
                            let (rd, wr) = stream.into_split();
                            shared
                                .clone()
                                .run(id, rd, wr, peer, handler.clone(), None, rx);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }

    pub(super) fn connections(&self) -> usize {
        self.shared.conns.len()
    }

    pub(super) fn stop_accepting(&self) {
        self.stop.notify_one();
    }

    pub(super) fn send(
        &self,
        to: SocketAddr,
        conn: Option<ConnId>,
        data: Bytes,
        handler: &Arc<dyn Handler>,
    ) {
        let s = &self.shared;
        let id = conn
            .filter(|c| s.conns.contains_key(c))
            .or_else(|| s.by_addr.get(&to).map(|c| *c));
        let id = match id {
            Some(id) => id,
            None => {
                if s.tls.as_ref().is_some_and(|t| t.backing_off(to)) {
                    tracing::trace!(to = %to, "tls target in backoff after a failure; not sent");
                    handler.on_unreachable(s.proto, to);
                    return;
                }
                s.clone().connect(to, handler.clone())
            }
        };
        let tx = s.conns.get(&id).map(|c| c.tx.clone());
        match tx.map(|tx| tx.try_send(data)) {
            Some(Ok(())) => {}
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                tracing::warn!(to = %to, proto = %s.proto, "write queue full; message dropped");
            }
            Some(Err(mpsc::error::TrySendError::Closed(_))) | None => {
                s.forget(id);
                handler.on_unreachable(s.proto, to);
            }
        }
    }

    // --- TLS only ---

    pub(super) fn set_tls_material(&self, material: Option<TlsMaterial>) {
        if let Some(t) = &self.shared.tls {
            t.material.store(material.map(Arc::new));
        }
    }

    pub(super) fn set_tls_names(&self, names: HashMap<SocketAddr, Arc<str>>) {
        if let Some(t) = &self.shared.tls {
            t.names.store(Arc::new(names));
        }
    }

    pub(super) fn tls_figures(&self, addr: SocketAddr) -> Option<TlsFigures> {
        let t = self.shared.tls.as_ref()?;
        Some(t.stats.get(&addr).map(|s| s.figures()).unwrap_or_default())
    }

    pub(super) fn tls_inbound_failures(&self) -> u64 {
        self.shared
            .tls
            .as_ref()
            .map_or(0, |t| t.inbound_failures.load(Ordering::Relaxed))
    }
}

impl Shared {
    fn forget(&self, id: ConnId) {
        if let Some((_, c)) = self.conns.remove(&id) {
            self.by_addr.remove_if(&c.peer, |_, v| *v == id);
        }
    }

    /// A new connection's id and write queue, findable by id and by peer address from now on.
    fn register(&self, peer: SocketAddr) -> (ConnId, mpsc::Receiver<Bytes>) {
        let id = ConnId(NEXT_CONN.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.conns.insert(id, Conn { tx, peer });
        self.by_addr.insert(peer, id);
        (id, rx)
    }

    /// The server side of a caller's TLS handshake, then the connection as any other.
    fn accept_tls(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, handler: Arc<dyn Handler>) {
        let tasks = self.tasks.clone();
        tasks.spawn(async move {
            let Some(tls) = &self.tls else { return };
            let server = tls.material.load_full().and_then(|m| {
                m.server
                    .clone()
                    .map(|s| (tokio_rustls::TlsAcceptor::from(s), m.handshake_timeout))
            });
            let Some((acceptor, timeout)) = server else {
                tracing::warn!(peer = %peer, "tls connection refused: no certificate loaded");
                self.release_source(peer.ip());
                return;
            };
            let reason = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let (id, rx) = self.register(peer);
                    let (rd, wr) = tokio::io::split(s);
                    self.run(id, rd, wr, peer, handler, None, rx);
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("handshake not finished in {} ms", timeout.as_millis()),
            };
            tls.inbound_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %peer, reason = %reason, "tls handshake with a caller failed");
            self.release_source(peer.ip());
        });
    }

    /// Starts an outbound connection; messages sent meanwhile wait in its queue.
    fn connect(self: Arc<Self>, to: SocketAddr, handler: Arc<dyn Handler>) -> ConnId {
        let (id, rx) = self.register(to);
        let tasks = self.tasks.clone();
        tasks.spawn(async move {
            let timeout = self.cfg.tcp_connect_timeout;
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(to)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(to = %to, proto = %self.proto, error = %e, "connect failed");
                    return self.fail_outbound(id, to, &handler, None);
                }
                Err(_) => {
                    tracing::debug!(to = %to, proto = %self.proto, "connect timed out");
                    return self.fail_outbound(id, to, &handler, None);
                }
            };
            tune_outbound(&stream);
            let Some(tls) = &self.tls else {
                let (rd, wr) = stream.into_split();
                return self.run(id, rd, wr, to, handler, Some(None), rx);
            };
            let Some(material) = tls.material.load_full() else {
                let why = "no [tls] configuration loaded".to_string();
                return self.fail_outbound(id, to, &handler, Some(why));
            };
            let name = tls.names.load().get(&to).cloned();
            match super::tls::connect_client(&material, name.as_deref(), stream).await {
                Ok(s) => {
                    let stats = tls.stats(to);
                    if stats.opened() {
                        tracing::info!(to = %to, "tls handshake with the target completes again");
                    }
                    tls.backoff.remove(&to);
                    let (rd, wr) = tokio::io::split(s);
                    self.run(id, rd, wr, to, handler, Some(Some(stats)), rx);
                }
                Err(e) => self.fail_outbound(id, to, &handler, Some(e.to_string())),
            }
        });
        id
    }

    /// An outbound connection that never came up: counted (TLS handshakes), backed off (TLS),
    /// reported unreachable so whatever waits on it fails over now.
    fn fail_outbound(
        &self,
        id: ConnId,
        to: SocketAddr,
        handler: &Arc<dyn Handler>,
        handshake: Option<String>,
    ) {
        self.forget(id);
        if let Some(tls) = &self.tls {
            tls.failed(to);
            if let Some(why) = handshake
                && tls.stats(to).failed(&why)
            {
                let name = tls.names.load().get(&to).cloned();
                tracing::warn!(to = %to, tls_name = ?name.as_deref(), reason = %why,
                    "tls handshake with a target failed; failing over (logged once per reason)");
            }
        }
        handler.on_unreachable(self.proto, to);
    }

    /// Runs one established connection: a writer task draining `rx` (pinging when `outbound`) and
    /// a reader task framing messages up to `handler`. `outbound`: Some for connections we opened,
    /// with the TLS figures to update when it closes.
    #[allow(clippy::too_many_arguments)]
    fn run<R, W>(
        self: Arc<Self>,
        id: ConnId,
        mut rd: R,
        mut wr: W,
        peer: SocketAddr,
        handler: Arc<dyn Handler>,
        outbound: Option<Option<Arc<LinkStats>>>,
        mut rx: mpsc::Receiver<Bytes>,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        // A peer that stops reading must not pin the writer task and its queue forever.
        let stall = self.cfg.tcp_idle_timeout;
        let pong = self.conns.get(&id).map(|c| c.tx.clone());
        let ping = outbound.is_some();
        let tasks = self.tasks.clone();
        tasks.spawn(async move {
            let start = Instant::now() + KEEPALIVE_PING;
            let mut keepalive = tokio::time::interval_at(start, KEEPALIVE_PING);
            keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let data = tokio::select! {
                    d = rx.recv() => match d {
                        Some(d) => d,
                        None => break,
                    },
                    _ = keepalive.tick(), if ping => Bytes::from_static(b"\r\n\r\n"),
                };
                let write = async {
                    wr.write_all(&data).await?;
                    wr.flush().await
                };
                match tokio::time::timeout(stall, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "write failed");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "write stalled; connection dropped");
                        break;
                    }
                }
            }
            let _ = wr.shutdown().await;
        });
        tasks.spawn(async move {
            let proto = self.proto;
            let reason = super::stream_read::read_loop(
                &mut rd,
                (peer, id, proto),
                &self.cfg,
                &*handler,
                pong.as_ref(),
            )
            .await;
            drop(pong);
            tracing::debug!(peer = %peer, %proto, reason = %reason, "connection closed");
            self.forget(id);
            match outbound {
                Some(stats) => {
                    if let Some(s) = stats {
                        s.closed();
                    }
                    // Whatever we sent and got no answer for will get none over this connection.
                    handler.on_unreachable(proto, peer);
                }
                None => self.release_source(peer.ip()),
            }
        });
    }

    /// Counts an accepted connection against its source; false (and nothing counted) at the limit.
    fn claim_source(&self, ip: IpAddr) -> bool {
        let mut n = self.per_source.entry(ip).or_insert(0);
        if *n >= self.cfg.tcp_connections_per_source {
            return false;
        }
        *n += 1;
        true
    }

    fn release_source(&self, ip: IpAddr) {
        self.per_source.remove_if_mut(&ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// A dead peer must be noticed in seconds, not after the kernel's default 15 minutes of retries.
fn tune_outbound(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = SockRef::from(stream);
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(2))
        .with_retries(3);
    let _ = sock.set_tcp_keepalive(&ka);
    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(5)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keepalive and user timeout that make a dead target show in seconds are really set.
    #[tokio::test]
    async fn outbound_connections_get_keepalive_and_user_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        tune_outbound(&s);
        let sock = SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(5));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(5))
        );
        assert!(s.nodelay().unwrap());
    }

    /// Backoff after TLS failures doubles from 100 ms and stops growing at 2 s.
    #[tokio::test(start_paused = true)]
    async fn tls_backoff_doubles_up_to_its_cap() {
        let t = TlsCtx::new(None);
        let a: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        assert!(!t.backing_off(a));
        t.failed(a);
        assert!(t.backing_off(a));
        tokio::time::advance(Duration::from_millis(101)).await;
        assert!(!t.backing_off(a));
        t.failed(a);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(t.backing_off(a), "second failure waits 200 ms");
        for _ in 0..10 {
            t.failed(a);
        }
        tokio::time::advance(BACKOFF_MAX).await;
        assert!(!t.backing_off(a), "never longer than the cap");
    }
}
