//! UDP: one shared listen socket, plus one socket per target *connected* to it and bound to the same
//! local address and port (SO_REUSEPORT). The kernel delivers a target's datagrams to its connected
//! socket, and reports ICMP "port unreachable" for what we sent it as `ECONNREFUSED` on that socket:
//! the failover contract's "transport error, fail over at once" needs exactly that, and an
//! unconnected socket never sees it. Every socket has one receive loop per core.

use super::{Handler, Incoming};
use crate::config::Proto;
use crate::tasks::Tasks;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;

pub(super) struct UdpSide {
    main: Arc<UdpSocket>,
    local: SocketAddr,
    /// Connected sockets by target address. Created once per target, never removed (targets are few).
    connected: DashMap<SocketAddr, Arc<UdpSocket>>,
    tasks: Tasks,
}

/// Receive loops per socket: one per core (at most 4), so every runtime thread can read.
fn loops() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4)
}

fn reuse_socket(local: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Bursts of thousands of calls per second: a larger receive buffer absorbs scheduling hiccups.
    let _ = s.set_recv_buffer_size(4 * 1024 * 1024);
    s.bind(&local.into())?;
    Ok(s)
}

impl UdpSide {
    /// Binds the listen socket. SO_REUSEPORT (needed by the connected sockets) would also let a
    /// second process of the same user bind the same port without error, and the kernel would then
    /// split incoming calls between the two: a second sosrouter started by mistake on 5060 would
    /// silently take half the emergency calls with rules of its own. So after binding, the listen
    /// sockets on the port are counted (`/proc/net/udp`): a fixed port already in use is refused;
    /// for port 0, where the kernel may hand out a port another reuseport socket holds, another
    /// port is picked.
    pub(super) fn bind(addr: SocketAddr, tasks: Tasks) -> io::Result<UdpSide> {
        for _ in 0..16 {
            let s = reuse_socket(addr)?;
            let main = UdpSocket::from_std(s.into())?;
            let local = main.local_addr()?;
            match listeners_on(local.port()) {
                Some(n) if n > 1 && addr.port() != 0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("udp {local}: another process already listens on this port"),
                    ));
                }
                Some(n) if n > 1 => continue, // port 0 landed on a shared port: try another
                _ => {}
            }
            return Ok(UdpSide {
                main: Arc::new(main),
                local,
                connected: DashMap::new(),
                tasks,
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free UDP port found",
        ))
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(super) fn start(&self, handler: Arc<dyn Handler>, max: usize) {
        for _ in 0..loops() {
            self.tasks
                .spawn(recv_loop(self.main.clone(), None, handler.clone(), max));
        }
    }

    /// The connected socket toward `target`, created on first use.
    pub(super) fn connected(
        &self,
        target: SocketAddr,
        handler: &Arc<dyn Handler>,
        max: usize,
    ) -> io::Result<Arc<UdpSocket>> {
        if let Some(s) = self.connected.get(&target) {
            return Ok(s.clone());
        }
        if target.is_ipv4() != self.local.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address family differs",
            ));
        }
        let s = reuse_socket(self.local)?;
        s.connect(&target.into())?;
        let sock = Arc::new(UdpSocket::from_std(s.into())?);
        // Another thread may have won the race; keep theirs and drop ours.
        let entry = self
            .connected
            .entry(target)
            .or_insert_with(|| sock.clone())
            .clone();
        if Arc::ptr_eq(&entry, &sock) {
            for _ in 0..loops() {
                self.tasks
                    .spawn(recv_loop(sock.clone(), Some(target), handler.clone(), max));
            }
        }
        Ok(entry)
    }

    pub(super) fn send(&self, to: SocketAddr, data: Bytes, handler: &Arc<dyn Handler>) {
        let conn = self.connected.get(&to).map(|s| s.clone());
        let res = match &conn {
            Some(s) => s.try_send(&data),
            None => self.main.try_send_to(&data, to),
        };
        match res {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The socket buffer is full: finish the send asynchronously rather than block a loop.
                let main = self.main.clone();
                self.tasks.spawn(async move {
                    let r = match conn {
                        Some(s) => s.send(&data).await,
                        None => main.send_to(&data, to).await,
                    };
                    if let Err(e) = r {
                        tracing::debug!(to = %to, error = %e, "udp send failed");
                    }
                });
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                handler.on_unreachable(Proto::Udp, to);
            }
            Err(e) => tracing::debug!(to = %to, error = %e, "udp send failed"),
        }
    }
}

/// Several of these run on one socket (the listen socket and each connected one), so while one
/// runtime thread is off the CPU or busy, another still reads: a target's responses never wait
/// behind one task.
async fn recv_loop(
    sock: Arc<UdpSocket>,
    target: Option<SocketAddr>,
    handler: Arc<dyn Handler>,
    max: usize,
) {
    // One receive buffer, and each datagram copied out at its exact size. Carving datagrams out of
    // shared blocks saved that copy, but one live message (a call waits up to 64*T1 for an ACK that
    // a vanished caller never sends) then pinned a whole block: the RSS soak measured ~1.2 GB at
    // 300 calls/s with vanishing callers, against ~1 KiB of actual message per call.
    let mut buf = BytesMut::with_capacity(max + 1);
    loop {
        buf.clear();
        match sock.recv_buf_from(&mut buf).await {
            Ok((n, peer)) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                if n > max {
                    tracing::debug!(peer = %peer, bytes = n, "datagram over the size limit dropped");
                    continue;
                }
                handler.on_message(Incoming {
                    data,
                    peer,
                    proto: Proto::Udp,
                    conn: None,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                if let Some(t) = target {
                    handler.on_unreachable(Proto::Udp, t);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp receive error");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }
}

/// Unconnected UDP sockets bound to local `port`, any address, from `/proc/net/udp` and `udp6`
/// (Linux). None when neither file can be read (then nothing is checked).
fn listeners_on(port: u16) -> Option<usize> {
    let mut seen = false;
    let mut n = 0;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        seen = true;
        n += text
            .lines()
            .skip(1)
            .filter(|l| unconnected_on(l, port))
            .count();
    }
    seen.then_some(n)
}

/// One `/proc/net/udp` line: `sl local_address rem_address ...`, addresses as `HEXIP:HEXPORT`.
fn unconnected_on(line: &str, port: u16) -> bool {
    let mut f = line.split_whitespace().skip(1);
    let (Some(local), Some(remote)) = (f.next(), f.next()) else {
        return false;
    };
    let port_of = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    port_of(local) == Some(port) && port_of(remote) == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_udp_lines_are_read() {
        let l =
            "  12: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1 2 0";
        assert!(unconnected_on(l, 5060));
        assert!(!unconnected_on(l, 5061));
        let c =
            "  13: 0100007F:13C4 0100007F:13CF 01 00000000:00000000 00:00000000 00000000 0 0 1 2 0";
        assert!(
            !unconnected_on(c, 5060),
            "a connected socket is not a listener"
        );
    }

    #[tokio::test]
    async fn a_second_listener_on_a_fixed_port_is_refused_and_port_zero_never_shares() {
        let first = UdpSide::bind("127.0.0.1:0".parse().unwrap(), Tasks::new()).unwrap();
        let again = UdpSide::bind(first.local_addr(), Tasks::new());
        let err = again
            .err()
            .expect("a second listener on the same port must be refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        for _ in 0..50 {
            let other = UdpSide::bind("127.0.0.1:0".parse().unwrap(), Tasks::new()).unwrap();
            assert_ne!(other.local_addr().port(), first.local_addr().port());
        }
    }

    struct Count(std::sync::atomic::AtomicUsize, tokio::sync::Notify);
    impl Handler for Count {
        fn on_message(&self, m: Incoming) {
            assert_eq!(m.data.len(), 100, "each datagram copied at its exact size");
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.1.notify_one();
        }
        fn on_unreachable(&self, _: Proto, _: SocketAddr) {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_targets_datagrams_all_arrive_on_its_connected_socket_read_by_several_loops() {
        let side = UdpSide::bind("127.0.0.1:0".parse().unwrap(), Tasks::new()).unwrap();
        let count = Arc::new(Count(Default::default(), Default::default()));
        let h: Arc<dyn Handler> = count.clone();
        side.start(h.clone(), 1500);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        side.connected(peer.local_addr().unwrap(), &h, 1500)
            .unwrap();
        let big = vec![b'x'; 2000];
        peer.send_to(&big, side.local_addr()).unwrap(); // over the limit: dropped, not delivered
        for _ in 0..500 {
            peer.send_to(&[b'a'; 100], side.local_addr()).unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while count.0.load(std::sync::atomic::Ordering::SeqCst) < 500 {
                count.1.notified().await;
            }
        })
        .await
        .expect("all 500 datagrams handled");
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 500);
        assert_eq!(side.connected.len(), 1);
    }
}
