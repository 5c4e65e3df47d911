//! TCP: a listener for callers, outbound connections to targets (reused per address), one reader
//! and one writer task per connection. Messages are framed by Content-Length (`sip::frame_len`).
//! A refused, reset or timed-out connection toward a target is reported as unreachable at once.

use super::{Handler, TransportConfig};
use crate::config::Proto;
use crate::tasks::Tasks;
use bytes::Bytes;
use dashmap::DashMap;
use socket2::{SockRef, TcpKeepalive};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// Identifies one TCP connection for the life of the process.
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

/// Messages queued toward one connection before sends start being dropped.
const WRITE_QUEUE: usize = 1024;

struct Conn {
    tx: mpsc::Sender<Bytes>,
    peer: SocketAddr,
}

struct Shared {
    cfg: TransportConfig,
    conns: DashMap<ConnId, Conn>,
    by_addr: DashMap<SocketAddr, ConnId>,
    /// Accepted (inbound) connections per source IP, for `tcp_connections_per_source`.
    per_source: DashMap<IpAddr, usize>,
    next_id: AtomicU64,
    tasks: Tasks,
}

pub(super) struct TcpSide {
    listener: std::sync::Mutex<Option<TcpListener>>,
    local: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

impl TcpSide {
    pub(super) async fn bind(
        addr: SocketAddr,
        cfg: TransportConfig,
        tasks: Tasks,
    ) -> io::Result<TcpSide> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok(TcpSide {
            listener: std::sync::Mutex::new(Some(listener)),
            local,
            shared: Arc::new(Shared {
                cfg,
                conns: DashMap::new(),
                by_addr: DashMap::new(),
                per_source: DashMap::new(),
                next_id: AtomicU64::new(1),
                tasks,
            }),
            stop: Arc::new(Notify::new()),
        })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
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
                                "tcp connection refused: per-source connection limit");
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        let (id, rx) = shared.register(peer);
                        shared
                            .clone()
                            .run(id, stream, peer, handler.clone(), false, rx);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "tcp accept failed");
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
            None => s.clone().connect(to, handler.clone()),
        };
        let tx = s.conns.get(&id).map(|c| c.tx.clone());
        match tx.map(|tx| tx.try_send(data)) {
            Some(Ok(())) => {}
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                tracing::warn!(to = %to, "tcp write queue full; message dropped");
            }
            Some(Err(mpsc::error::TrySendError::Closed(_))) | None => {
                s.forget(id);
                handler.on_unreachable(Proto::Tcp, to);
            }
        }
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
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.conns.insert(id, Conn { tx, peer });
        self.by_addr.insert(peer, id);
        (id, rx)
    }

    /// Starts an outbound connection; messages sent meanwhile wait in its queue.
    fn connect(self: Arc<Self>, to: SocketAddr, handler: Arc<dyn Handler>) -> ConnId {
        let (id, rx) = self.register(to);
        let tasks = self.tasks.clone();
        tasks.spawn(async move {
            let timeout = self.cfg.tcp_connect_timeout;
            match tokio::time::timeout(timeout, TcpStream::connect(to)).await {
                Ok(Ok(stream)) => {
                    tune_outbound(&stream);
                    self.run(id, stream, to, handler, true, rx);
                }
                Ok(Err(e)) => {
                    tracing::debug!(to = %to, error = %e, "tcp connect failed");
                    self.forget(id);
                    handler.on_unreachable(Proto::Tcp, to);
                }
                Err(_) => {
                    tracing::debug!(to = %to, "tcp connect timed out");
                    self.forget(id);
                    handler.on_unreachable(Proto::Tcp, to);
                }
            }
        });
        id
    }

    fn run(
        self: Arc<Self>,
        id: ConnId,
        stream: TcpStream,
        peer: SocketAddr,
        handler: Arc<dyn Handler>,
        outbound: bool,
        mut rx: mpsc::Receiver<Bytes>,
    ) {
        let (mut rd, mut wr) = stream.into_split();
        // A peer that stops reading must not pin the writer task and its queue forever.
        let stall = self.cfg.tcp_idle_timeout;
        let tasks = self.tasks.clone();
        tasks.spawn(async move {
            while let Some(data) = rx.recv().await {
                match tokio::time::timeout(stall, wr.write_all(&data)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "tcp write failed");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "tcp write stalled; connection dropped");
                        break;
                    }
                }
            }
        });
        tasks.spawn(async move {
            let reason = super::tcp_read::read_loop(&mut rd, peer, id, &self.cfg, &*handler).await;
            tracing::debug!(peer = %peer, reason = %reason, "tcp connection closed");
            self.forget(id);
            if outbound {
                // Whatever we sent and got no answer for will get none over this connection.
                handler.on_unreachable(Proto::Tcp, peer);
            } else {
                self.release_source(peer.ip());
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
}
