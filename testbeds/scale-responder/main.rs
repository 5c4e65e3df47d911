//! The scale testbed's probe responder (`testbeds/run scale`), in Rust so that the testbed's own cost
//! stays small next to the proxy it measures.
//!
//! `scale-responder ANSWER_BASE N_ANSWER SILENT_BASE N_SILENT SECONDS READY_FILE`
//!
//! Answers every SIP request sent to `0.0.0.0:ANSWER_BASE..+N_ANSWER` with a 200 (Via, From, Call-ID,
//! CSeq copied, To with a tag), from the address it was sent to (`IP_PKTINFO`: one socket per port
//! serves the thousands of loopback addresses the generated rules use); binds
//! `SILENT_BASE..+N_SILENT` and never reads them (a silent host: no ICMP error). Writes `ready` to
//! READY_FILE once bound, and the requests answered so far per source port to READY_FILE.counts
//! (JSON, rewritten each second). Stops by itself after SECONDS.
//!
//! The Python responder in `testbeds/sostest/scale.py` does the same (`SCALE_RESPONDER=python`); at
//! 1 000 routes it took 4-5 % of a core on the two cores the proxy and SIPp share, as much as the
//! proxy's own probing, and the knee at that size paid for it.

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 {
        eprintln!(
            "usage: scale-responder ANSWER_BASE N_ANSWER SILENT_BASE N_SILENT SECONDS READY_FILE"
        );
        std::process::exit(2);
    }
    let num = |i: usize| -> u64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!(
                "scale-responder: argument {} is not a number: {}",
                i + 1,
                args[i]
            );
            std::process::exit(2)
        })
    };
    let (ab, na, sb, ns, secs) = (num(0), num(1), num(2), num(3), num(4));
    let ready = args[5].clone();
    let end = Instant::now() + Duration::from_secs(secs);
    let port = |p: u64| u16::try_from(p).unwrap_or_else(|_| fail(&format!("no such port: {p}")));
    let mut answer = Vec::new();
    for p in ab..ab + na {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port(p)))
            .unwrap_or_else(|e| fail(&format!("bind 0.0.0.0:{p}: {e}")));
        let _ = setsockopt(&s, sockopt::RcvBuf, &(4 << 20));
        setsockopt(&s, sockopt::Ipv4PacketInfo, &true)
            .unwrap_or_else(|e| fail(&format!("IP_PKTINFO on port {p}: {e}")));
        // Wake twice a second to see the end, however quiet the port is.
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        answer.push(s);
    }
    let mut silent = Vec::new();
    for p in sb..sb + ns {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port(p)))
            .unwrap_or_else(|e| fail(&format!("bind 0.0.0.0:{p}: {e}")));
        let _ = setsockopt(&s, sockopt::RcvBuf, &4096);
        silent.push(s);
    }
    if let Err(e) = std::fs::write(&ready, "ready\n") {
        fail(&format!("write {ready}: {e}"));
    }
    let by_port: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
    let answered = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = answer
        .into_iter()
        .map(|s| {
            let (by_port, answered) = (by_port.clone(), answered.clone());
            std::thread::spawn(move || serve(&s, end, &by_port, &answered))
        })
        .collect();
    let counts = format!("{ready}.counts");
    while Instant::now() < end {
        let text = {
            let m = by_port.lock().unwrap_or_else(|p| p.into_inner());
            let fields: Vec<String> = m.iter().map(|(p, n)| format!("\"{p}\": {n}")).collect();
            format!("{{{}}}", fields.join(", "))
        };
        let tmp = format!("{counts}.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &counts);
        }
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
    }
    for t in threads {
        let _ = t.join();
    }
    drop(silent);
    println!("answered {}", answered.load(Ordering::Relaxed));
}

fn fail(why: &str) -> ! {
    eprintln!("scale-responder: {why}");
    std::process::exit(1)
}

/// Answers the requests of one socket until `end`.
fn serve(s: &UdpSocket, end: Instant, by_port: &Mutex<HashMap<u16, u64>>, answered: &AtomicU64) {
    let mut buf = vec![0u8; 65535];
    let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo);
    let mut mine: HashMap<u16, u64> = HashMap::new();
    let mut flushed = Instant::now();
    while Instant::now() < end {
        if let Some(peer) = answer_one(s, &mut buf, &mut cmsg) {
            answered.fetch_add(1, Ordering::Relaxed);
            *mine.entry(peer).or_default() += 1;
        }
        if flushed.elapsed() >= Duration::from_millis(200) {
            flushed = Instant::now();
            let mut m = by_port.lock().unwrap_or_else(|p| p.into_inner());
            for (p, n) in mine.drain() {
                *m.entry(p).or_default() += n;
            }
        }
    }
    let mut m = by_port.lock().unwrap_or_else(|p| p.into_inner());
    for (p, n) in mine.drain() {
        *m.entry(p).or_default() += n;
    }
}

/// Reads one datagram (or times out) and answers it when it is a SIP request: the source port of
/// what was answered.
#[allow(clippy::ptr_arg)] // nix's recvmsg takes the control buffer as `&mut Vec<u8>`
fn answer_one(s: &UdpSocket, buf: &mut [u8], cmsg: &mut Vec<u8>) -> Option<u16> {
    let (n, peer, asked) = {
        let mut iov = [IoSliceMut::new(buf)];
        // An error is the read timeout (or a signal): the caller looks at the clock again.
        let msg =
            recvmsg::<SockaddrIn>(s.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty()).ok()?;
        let asked = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|m| match m {
                ControlMessageOwned::Ipv4PacketInfo(i) => Some(i.ipi_addr),
                _ => None,
            })
        });
        (msg.bytes, msg.address?, asked)
    };
    let reply = reply(&buf[..n])?;
    // Sent from the address the request was sent to.
    let info = asked.map(|addr| nix::libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: addr,
        ipi_addr: nix::libc::in_addr { s_addr: 0 },
    });
    let cm: Vec<ControlMessage> = info.iter().map(ControlMessage::Ipv4PacketInfo).collect();
    let iov = [std::io::IoSlice::new(&reply)];
    sendmsg(s.as_raw_fd(), &iov, &cm, MsgFlags::empty(), Some(&peer)).ok()?;
    Some(peer.port())
}

/// A 200 to a SIP request (Via, From, Call-ID, CSeq copied; To copied with a tag added when it has
/// none), or None for a response or something that is not SIP.
fn reply(req: &[u8]) -> Option<Vec<u8>> {
    if req.is_empty() || req.starts_with(b"SIP/2.0") {
        return None;
    }
    let head = match req.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &req[..i],
        None => req,
    };
    let mut out = Vec::with_capacity(head.len() + 64);
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let name = line[..name_end].trim_ascii().to_ascii_lowercase();
        match name.as_slice() {
            b"via" | b"v" | b"from" | b"f" | b"call-id" | b"i" | b"cseq" => {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
            b"to" | b"t" => {
                out.extend_from_slice(line);
                if !line.windows(5).any(|w| w == b";tag=") {
                    out.extend_from_slice(b";tag=scale");
                }
                out.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(out)
}
