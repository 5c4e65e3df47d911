//! UDP: one shared socket per listen address, with several receive loops on it (so both cores
//! work), and its ICMP errors read from the socket's error queue (`IP_RECVERR`).
//!
//! The failover contract's "transport error, fail over at once" needs ICMP "port unreachable" for
//! what we sent a target. An unconnected socket is told nothing of it by default; with
//! `IP_RECVERR` (`IPV6_RECVERR`) the kernel queues each ICMP error with the destination of the
//! datagram that drew it, and one task per socket reads that queue ([`error_loop`]) and reports
//! the destination unreachable. Earlier, one socket per target was *connected* to it and bound to
//! the listen address and port (SO_REUSEPORT): the kernel then keeps every one of those sockets
//! in the one hash slot of that address and port and scans them all for each datagram received
//! (for calls as well as probe replies), so the cost of every packet grew with the number of
//! targets: 1.2 ms per datagram at 12 000 targets, measured (`testbeds/run scale`).

use super::{Handler, Incoming};
use crate::config::Proto;
use crate::tasks::Tasks;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;

pub(super) struct UdpSide {
    main: Arc<UdpSocket>,
    local: SocketAddr,
    tasks: Tasks,
    backlog: Arc<Backlog>,
}

/// Whether this process is behind on reading its UDP socket. A receive loop that finds the socket
/// empty (or waited for it) marks it drained; one that reads a datagram when the socket has not been
/// drained for over [`Backlog::BEHIND`] marks the process behind. Behind, replies sit in our own
/// receive buffer or are dropped by the kernel when it is full: a probe or a call attempt that
/// times out then says nothing about its target (health holds such verdicts, `health::handle`).
/// Measured in a stair past the knee on a shared 2-core machine: the proxy's socket dropped 40 000
/// datagrams a second while every PSAP's probes timed out, all three targets of the chain were taken
/// down and calls ended undelivered. Costs one clock read per datagram. A datagram that waited over
/// [`Backlog::BEHIND`] in our own in-order queue of its source ([`InOrder`]: all of a SIPp caller's
/// calls, or all of one PSAP's replies, come from one address) marks it too: the socket itself may
/// drain into that queue while its datagrams still wait.
pub struct Backlog {
    origin: Instant,
    /// Nanoseconds since `origin` when a loop last saw the socket drained.
    drained: AtomicU64,
    /// Nanoseconds since `origin`, plus one, when a loop last read while behind; 0: never.
    behind: AtomicU64,
}

impl Default for Backlog {
    fn default() -> Backlog {
        Backlog::new(now())
    }
}

/// The transport's clock for the backlog: tokio's, as health's (paused-time tests drive both).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Backlog {
    /// Reading for this long without the socket ever being empty is being behind. Far above the
    /// time one turn of the loops takes at any rate this proxy sustains (a budget of 128 datagrams,
    /// a few ms), far below a probe timeout.
    pub const BEHIND: Duration = Duration::from_millis(100);

    pub fn new(origin: Instant) -> Backlog {
        Backlog {
            origin,
            drained: AtomicU64::new(0),
            behind: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A loop found the socket empty at `at` (or had waited for it until `at`).
    pub fn mark_drained(&self, at: Instant) {
        self.drained.fetch_max(self.nanos(at), Ordering::Relaxed);
    }

    /// A loop read a datagram at `at`.
    pub fn mark_read(&self, at: Instant) {
        let n = self.nanos(at);
        let since = n.saturating_sub(self.drained.load(Ordering::Relaxed));
        if since > Backlog::BEHIND.as_nanos() as u64 {
            self.mark_behind(at);
        }
    }

    /// Marks the process behind at `at`, as a read that found a backlog would (for tests).
    #[doc(hidden)]
    pub fn mark_behind(&self, at: Instant) {
        self.behind
            .fetch_max(self.nanos(at).saturating_add(1), Ordering::Relaxed);
    }

    /// The last instant a loop read while behind, if ever.
    pub fn last_behind(&self) -> Option<Instant> {
        match self.behind.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.origin + Duration::from_nanos(n - 1)),
        }
    }
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
    recv_errors(&s, local)?;
    Ok(s)
}

impl UdpSide {
    /// Binds the listen socket. SO_REUSEPORT (kept from when connected sockets shared the port) would also let a
    /// second process of the same user bind the same port without error, and the kernel would then
    /// split incoming calls between the two: a second sosrouter started by mistake on 5060 would
    /// silently take half the emergency calls with rules of its own. So after binding, the listen
    /// sockets on the port are counted (`/proc/net/udp`): a fixed port already in use is refused;
    /// for port 0, where the kernel may hand out a port another reuseport socket holds, another
    /// port is picked.
    pub(super) fn bind(
        addr: SocketAddr,
        tasks: Tasks,
        backlog: Arc<Backlog>,
    ) -> io::Result<UdpSide> {
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
                tasks,
                backlog,
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
        let order = Arc::new(InOrder::default());
        for _ in 0..loops() {
            self.tasks.spawn(recv_loop(
                self.main.clone(),
                handler.clone(),
                order.clone(),
                self.backlog.clone(),
                max,
            ));
        }
        self.tasks.spawn(error_loop(self.main.clone(), handler));
    }

    pub(super) fn send(&self, to: SocketAddr, data: Bytes) {
        let mut res = self.main.try_send_to(&data, to);
        if matches!(&res, Err(e) if is_icmp_error(e)) {
            // The socket's pending error (an ICMP error about an earlier datagram, to any
            // destination: the error queue tells whose) failed this send before it left; it is
            // cleared now, so send again.
            res = self.main.try_send_to(&data, to);
        }
        match res {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The socket buffer is full: finish the send asynchronously rather than block a loop.
                let main = self.main.clone();
                self.tasks.spawn(async move {
                    if let Err(e) = main.send_to(&data, to).await {
                        tracing::debug!(to = %to, error = %e, "udp send failed");
                    }
                });
            }
            Err(e) => tracing::debug!(to = %to, error = %e, "udp send failed"),
        }
    }
}

/// Datagrams of one source are handled in the order the socket gave them, whichever loop read
/// them. Several loops read one socket (one per core): without this, a 200 could overtake the 180
/// its answering point sent just before it (the loop that read the 180 still on it when another
/// reads the 200), and the 180 would come after the final and be dropped. A loop claims a datagram
/// under the socket's read lock, in read order: when another loop is busy with the same source, the
/// datagram is queued behind that one, and that loop handles the queue before it lets the source go.
#[derive(Default)]
struct InOrder {
    read: std::sync::Mutex<()>,
    /// Per source being handled: what queued behind it, each with when it was read.
    busy: DashMap<SocketAddr, VecDeque<(Incoming, Instant)>>,
}

impl InOrder {
    /// Some: this loop owns the datagram's source now and must [`InOrder::run`] it. None: queued
    /// behind the loop that owns the source.
    fn claim(&self, m: Incoming, read_at: Instant) -> Option<Incoming> {
        match self.busy.entry(m.peer) {
            dashmap::mapref::entry::Entry::Occupied(mut e) => {
                e.get_mut().push_back((m, read_at));
                None
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(VecDeque::new());
                Some(m)
            }
        }
    }

    /// Handles a claimed datagram, then what was queued behind it, then lets the source go. Each
    /// datagram spends a unit of the task's coop budget (see [`recv_loop`]): a source that sends
    /// faster than one loop handles it (all of a SIPp caller's calls come from one address) would
    /// otherwise keep this loop, and the runtime thread under it, here for as long as it sends.
    /// A queued datagram that waited over [`Backlog::BEHIND`] marks the process behind.
    async fn run(&self, handler: &dyn Handler, backlog: &Backlog, m: Incoming) {
        let peer = m.peer;
        handler.on_message(m);
        loop {
            tokio::task::consume_budget().await;
            let next = self.busy.get_mut(&peer).and_then(|mut q| q.pop_front());
            match next {
                Some((m, read_at)) => {
                    let at = now();
                    if at.saturating_duration_since(read_at) > Backlog::BEHIND {
                        backlog.mark_behind(at);
                    }
                    handler.on_message(m)
                }
                None => {
                    if self.busy.remove_if(&peer, |_, q| q.is_empty()).is_some() {
                        return;
                    }
                }
            }
        }
    }
}

async fn recv_loop(
    sock: Arc<UdpSocket>,
    handler: Arc<dyn Handler>,
    order: Arc<InOrder>,
    backlog: Arc<Backlog>,
    max: usize,
) {
    // One receive buffer, and each datagram copied out at its exact size. Carving datagrams out of
    // shared blocks saved that copy, but one live message (a call waits up to 64*T1 for an ACK that
    // a vanished caller never sends) then pinned a whole block: the RSS soak measured ~1.2 GB at
    // 300 calls/s with vanishing callers, against ~1 KiB of actual message per call.
    let mut buf = BytesMut::with_capacity(max + 1);
    // The socket was empty when the loop last waited for it (at the start: nothing read yet).
    let mut waited = true;
    loop {
        // `readable()` of a socket that is still readable returns at once and, unlike tokio's own
        // receive calls, spends none of the task's coop budget; nor does `try_recv_buf_from`. Under
        // load the socket never drains, so without this the loop never gave its runtime thread
        // back: the call tasks it spawned and woke, their timers and every other task queued on that
        // thread waited until the socket happened to be empty. Now the loop yields after at most a
        // budget's worth of datagrams (tokio's 128), like any tokio I/O. (Runtime lateness of
        // 0.5-5 s past the knee remained after this change: that has another cause, not found yet.)
        tokio::task::consume_budget().await;
        if let Err(e) = sock.readable().await {
            tracing::debug!(error = %e, "udp readiness error");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            continue;
        }
        if std::mem::take(&mut waited) {
            backlog.mark_drained(now());
        }
        buf.clear();
        let mut failed = false;
        let claimed = {
            let _read = order.read.lock().unwrap_or_else(|e| e.into_inner());
            match sock.try_recv_buf_from(&mut buf) {
                Ok((n, peer)) => {
                    let at = now();
                    backlog.mark_read(at);
                    if n > max {
                        tracing::debug!(peer = %peer, bytes = n, "datagram over the size limit dropped");
                        continue;
                    }
                    order.claim(
                        Incoming {
                            data: Bytes::copy_from_slice(&buf[..n]),
                            peer,
                            proto: Proto::Udp,
                            conn: None,
                        },
                        at,
                    )
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    backlog.mark_drained(now());
                    waited = true;
                    continue;
                }
                // The socket's pending ICMP error; its destination comes from the error queue.
                Err(e) if is_icmp_error(&e) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive error");
                    failed = true;
                    None
                }
            }
        };
        if let Some(m) = claimed {
            order.run(&*handler, &backlog, m).await;
        } else if failed {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// Errors an ICMP error about an earlier datagram leaves pending on the socket.
fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// Asks the kernel to queue ICMP errors on the socket (`IP_RECVERR` / `IPV6_RECVERR`).
fn recv_errors(s: &Socket, local: SocketAddr) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let r = if local.is_ipv4() {
        setsockopt(s, sockopt::Ipv4RecvErr, &true)
    } else {
        setsockopt(s, sockopt::Ipv6RecvErr, &true)
    };
    r.map_err(io::Error::from)
}

/// What one error-queue entry says: the destination it is about, when it means "nothing reached
/// it" (port, host or network unreachable; not "message too big").
fn unreachable_destination(errno: u32, origin: u8, dest: Option<SocketAddr>) -> Option<SocketAddr> {
    use nix::libc;
    let icmp = origin == libc::SO_EE_ORIGIN_ICMP || origin == libc::SO_EE_ORIGIN_ICMP6;
    let errno = i32::try_from(errno).ok()?;
    let unreachable = [libc::ECONNREFUSED, libc::EHOSTUNREACH, libc::ENETUNREACH].contains(&errno);
    if icmp && unreachable { dest } else { None }
}

/// Reads one entry of the socket's error queue: Ok(None) when it was not an unreachable.
fn read_error_queue(sock: &UdpSocket) -> io::Result<Option<SocketAddr>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 64];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let dest = msg.address.and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| SocketAddr::from((v4.ip(), v4.port())))
            .or_else(|| {
                a.as_sockaddr_in6()
                    .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
            })
    });
    let mut found = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        let (errno, origin) = match c {
            ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
                (e.ee_errno, e.ee_origin)
            }
            _ => continue,
        };
        found = found.or(unreachable_destination(errno, origin, dest));
    }
    Ok(found)
}

/// Reads the socket's error queue for as long as the socket lives: each ICMP unreachable is
/// reported for the destination of the datagram that drew it.
async fn error_loop(sock: Arc<UdpSocket>, handler: Arc<dyn Handler>) {
    loop {
        match sock
            .async_io(Interest::ERROR, || read_error_queue(&sock))
            .await
        {
            Ok(Some(dest)) => handler.on_unreachable(Proto::Udp, dest),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "udp error queue read failed");
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

    /// Records what it handles, in order.
    struct Record {
        seen: std::sync::Mutex<Vec<(SocketAddr, String)>>,
    }

    impl Handler for Record {
        fn on_message(&self, m: Incoming) {
            let text = String::from_utf8_lossy(&m.data).into_owned();
            self.seen.lock().unwrap().push((m.peer, text));
        }
        fn on_unreachable(&self, _: Proto, _: SocketAddr) {}
    }

    fn dgram(peer: SocketAddr, text: &'static str) -> Incoming {
        Incoming {
            data: Bytes::from_static(text.as_bytes()),
            peer,
            proto: Proto::Udp,
            conn: None,
        }
    }

    #[tokio::test]
    async fn a_sources_datagrams_are_handled_in_read_order_whichever_loop_read_them() {
        let (psap, other): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5071".parse().unwrap(),
            "127.0.0.1:5072".parse().unwrap(),
        );
        let order = InOrder::default();
        let h = Record {
            seen: std::sync::Mutex::new(Vec::new()),
        };
        // Loop 1 reads the 180 and owns the PSAP; before it has handled it, loop 2 reads the 200
        // (queued behind the 180) and another source's datagram (its own to handle).
        let ringing = order
            .claim(dgram(psap, "180"), now())
            .expect("first: owned");
        assert!(
            order.claim(dgram(psap, "200"), now()).is_none(),
            "queued behind the 180"
        );
        let theirs = order
            .claim(dgram(other, "INVITE"), now())
            .expect("another source: not held");
        let backlog = Backlog::default();
        order.run(&h, &backlog, theirs).await;
        order.run(&h, &backlog, ringing).await;
        let seen = h.seen.lock().unwrap().clone();
        let psap_order: Vec<&str> = seen
            .iter()
            .filter(|(p, _)| *p == psap)
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(psap_order, ["180", "200"]);
        assert_eq!(seen.len(), 3);
        assert!(order.busy.is_empty(), "every source let go");
        // Let go: the next datagram of the PSAP is owned by whoever reads it.
        assert!(order.claim(dgram(psap, "BYE"), now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_datagram_that_waited_long_behind_its_source_marks_the_process_behind() {
        let psap: SocketAddr = "127.0.0.1:5071".parse().unwrap();
        let order = InOrder::default();
        let h = Record {
            seen: std::sync::Mutex::new(Vec::new()),
        };
        let backlog = Backlog::default();
        let first = order.claim(dgram(psap, "180"), now()).unwrap();
        assert!(order.claim(dgram(psap, "200"), now()).is_none());
        tokio::time::advance(Backlog::BEHIND).await;
        order.run(&h, &backlog, first).await;
        assert_eq!(
            backlog.last_behind(),
            None,
            "waited 100 ms: not over the limit"
        );

        let first = order.claim(dgram(psap, "ACK"), now()).unwrap();
        assert!(order.claim(dgram(psap, "BYE"), now()).is_none());
        tokio::time::advance(Backlog::BEHIND + Duration::from_millis(1)).await;
        order.run(&h, &backlog, first).await;
        assert_eq!(
            backlog.last_behind(),
            Some(now()),
            "the socket drained into the queue, but the BYE waited there over 100 ms"
        );
        assert_eq!(h.seen.lock().unwrap().len(), 4);
    }

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
        let first = UdpSide::bind(
            "127.0.0.1:0".parse().unwrap(),
            Tasks::new(),
            Default::default(),
        )
        .unwrap();
        let again = UdpSide::bind(first.local_addr(), Tasks::new(), Default::default());
        let err = again
            .err()
            .expect("a second listener on the same port must be refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        for _ in 0..50 {
            let other = UdpSide::bind(
                "127.0.0.1:0".parse().unwrap(),
                Tasks::new(),
                Default::default(),
            )
            .unwrap();
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
    async fn a_peers_datagrams_all_arrive_read_by_several_loops() {
        let side = UdpSide::bind(
            "127.0.0.1:0".parse().unwrap(),
            Tasks::new(),
            Default::default(),
        )
        .unwrap();
        let count = Arc::new(Count(Default::default(), Default::default()));
        let h: Arc<dyn Handler> = count.clone();
        side.start(h.clone(), 1500);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let big = vec![b'x'; 2000];
        peer.send_to(&big, side.local_addr()).unwrap(); // over the limit: dropped, not delivered
        // 150: well inside the default receive buffer, so none can be dropped by the kernel.
        for _ in 0..150 {
            peer.send_to(&[b'a'; 100], side.local_addr()).unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while count.0.load(std::sync::atomic::Ordering::SeqCst) < 150 {
                count.1.notified().await;
            }
        })
        .await
        .expect("all 150 datagrams handled");
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 150);
    }

    /// Feeds the socket one more datagram for each it handles, up to `limit`: a socket that never
    /// drains, as under overload.
    struct Flood {
        handled: std::sync::atomic::AtomicUsize,
        limit: usize,
        feeder: std::net::UdpSocket,
        to: SocketAddr,
    }
    impl Handler for Flood {
        fn on_message(&self, _: Incoming) {
            let n = self
                .handled
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            if n < self.limit {
                self.feeder.send_to(b"more", self.to).unwrap();
            }
        }
        fn on_unreachable(&self, _: Proto, _: SocketAddr) {}
    }

    /// One runtime thread: a receive loop that never gave it back would run the whole flood before
    /// any other task of the thread (a call's task, a timer) got a turn.
    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_that_never_drains_does_not_keep_the_runtime_thread_from_other_tasks() {
        use std::sync::atomic::Ordering::SeqCst;
        let side = UdpSide::bind(
            "127.0.0.1:0".parse().unwrap(),
            Tasks::new(),
            Default::default(),
        )
        .unwrap();
        let flood = Arc::new(Flood {
            handled: Default::default(),
            limit: 20_000,
            feeder: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            to: side.local_addr(),
        });
        side.start(flood.clone(), 1500);
        for _ in 0..4 {
            flood.feeder.send_to(b"first", side.local_addr()).unwrap();
        }
        // Let the loops start on the flood, then ask for a turn.
        while flood.handled.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let f2 = flood.clone();
        let at_our_turn = tokio::spawn(async move { f2.handled.load(SeqCst) })
            .await
            .unwrap();
        assert!(
            at_our_turn <= (loops() + 1) * 128,
            "another task got a turn only after {at_our_turn} datagrams"
        );
    }

    #[test]
    fn the_backlog_is_behind_only_after_reading_that_long_without_the_socket_ever_empty() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let b = Backlog::new(t0);
        b.mark_drained(ms(0));
        b.mark_read(ms(50));
        b.mark_read(ms(100));
        assert_eq!(b.last_behind(), None, "100 ms is not over the limit");
        b.mark_read(ms(160));
        assert_eq!(b.last_behind(), Some(ms(160)));
        // Drained again: an idle socket's next datagram, however long after, is not a backlog (the
        // loop marks the socket drained when it wakes from waiting for it, then reads).
        b.mark_drained(ms(170));
        b.mark_drained(ms(5000 + 170));
        b.mark_read(ms(5000 + 170));
        assert_eq!(b.last_behind(), Some(ms(160)));
        b.mark_drained(ms(5200));
        b.mark_read(ms(5250));
        assert_eq!(
            b.last_behind(),
            Some(ms(160)),
            "the last instant behind stays"
        );
        // A drained mark from a loop that lags never moves the mark back.
        b.mark_drained(ms(100));
        b.mark_read(ms(5300));
        assert_eq!(b.last_behind(), Some(ms(160)));
    }

    /// Handles each datagram slowly (1 ms), so a socket filled beforehand stays unread for long.
    struct Slow(std::sync::atomic::AtomicUsize);
    impl Handler for Slow {
        fn on_message(&self, _: Incoming) {
            std::thread::sleep(Duration::from_millis(1));
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        fn on_unreachable(&self, _: Proto, _: SocketAddr) {}
    }

    /// Binds a side, queues one 100-byte datagram from each of `peers` (before the loops start),
    /// then starts the loops with the [`Slow`] handler and waits until every datagram is handled.
    /// Returns the side's backlog mark.
    async fn handle_slowly(peers: &[std::net::UdpSocket]) -> Arc<Backlog> {
        use std::sync::atomic::Ordering::SeqCst;
        let backlog = Arc::new(Backlog::default());
        let side = UdpSide::bind(
            "127.0.0.1:0".parse().unwrap(),
            Tasks::new(),
            backlog.clone(),
        )
        .unwrap();
        for peer in peers {
            peer.send_to(&[b'a'; 100], side.local_addr()).unwrap();
        }
        let slow = Arc::new(Slow(Default::default()));
        side.start(slow.clone(), 1500);
        while slow.0.load(SeqCst) < peers.len() {
            tokio::task::yield_now().await;
        }
        backlog
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_backlog_of_one_source_marks_the_process_behind() {
        // 300 datagrams of one source (a SIPp caller) at 1 ms each: however far the loops read
        // ahead into the source's in-order queue, one of them waits over 100 ms, in the socket or
        // in that queue.
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peers: Vec<_> = (0..300).map(|_| peer.try_clone().unwrap()).collect();
        let backlog = handle_slowly(&peers).await;
        assert!(
            backlog.last_behind().is_some(),
            "behind while the queue lasted"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_read_for_long_without_ever_draining_marks_the_process_behind() {
        // Queued before the loops start: 300 datagrams at 1 ms each keep the socket non-empty for
        // 300 ms (well inside the receive buffer, so the kernel drops none). Each from a source of
        // its own: datagrams of one source would be read ahead into its in-order queue.
        let peers: Vec<_> = (0..300)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let backlog = handle_slowly(&peers).await;
        let at = backlog
            .last_behind()
            .expect("behind while the queue lasted");
        assert!(at <= now());
    }
}
