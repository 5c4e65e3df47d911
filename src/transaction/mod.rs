//! RFC 3261 transaction pieces that carry no IO: timer values, branch generation, the key that
//! matches a request to its server transaction (§17.2.3), and the retransmission schedule of
//! timers A, E and G. Time is always passed in.

use crate::sip::{Message, ParseError};
use bytes::{BufMut, Bytes, BytesMut};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// RTT estimate (RFC 3261 §17.1.1.1).
pub const T1: Duration = Duration::from_millis(500);
/// Longest retransmit interval for non-INVITE requests and INVITE responses.
pub const T2: Duration = Duration::from_secs(4);
/// How long the network may hold a message.
pub const T4: Duration = Duration::from_secs(5);
/// 64*T1: how long a transaction may wait for its peer (timers B, F, H; RFC 6026 "Accepted").
pub const TIMEOUT_64T1: Duration = Duration::from_secs(32);

/// The RFC 3261 magic cookie every branch starts with.
pub const MAGIC_COOKIE: &str = "z9hG4bK";
/// Prefix of every branch sosrouter creates: lets it recognise its own Via on a stray response.
pub const OUR_BRANCH_PREFIX: &str = "z9hG4bK-sos";

/// A fresh, unique branch for a new client transaction (one per attempt).
pub fn new_branch() -> String {
    format!("{OUR_BRANCH_PREFIX}{:016x}", rand::random::<u64>())
}

/// A branch derived from other bytes: the same inputs give the same branch within this process, so a
/// retransmitted request is forwarded with the same branch (stateless forwarding, RFC 3261 §16.11).
pub fn derived_branch(kind: char, parts: &[&[u8]]) -> String {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut h = STATE.get_or_init(Default::default).build_hasher();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    format!("{OUR_BRANCH_PREFIX}{kind}{:016x}", h.finish())
}

/// True when a branch was made by sosrouter.
pub fn is_our_branch(branch: &[u8]) -> bool {
    branch.starts_with(OUR_BRANCH_PREFIX.as_bytes())
}

/// Key of a server transaction: top Via branch + sent-by (RFC 3261 §17.2.3). INVITE, its CANCEL
/// and the ACK of a non-2xx final share it, which is what matching CANCEL and ACK needs.
/// For pre-RFC 3261 peers (no magic cookie) the key falls back to Call-ID, CSeq number, From tag and
/// the raw top Via (RFC 2543 matching, simplified).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey(Bytes);

impl ServerKey {
    pub fn of(msg: &Message) -> Result<ServerKey, ParseError> {
        let via = msg.top_via()?;
        let mut k = BytesMut::with_capacity(96);
        match via.branch {
            Some(b) if b.starts_with(MAGIC_COOKIE.as_bytes()) => {
                k.put_slice(b);
                k.put_u8(b' ');
                k.put_slice(via.host);
                k.put_u8(b':');
                k.put_u16(via.port.unwrap_or(0));
            }
            _ => {
                k.put_slice(msg.call_id());
                k.put_u8(b' ');
                k.put_u32(msg.cseq().seq);
                k.put_slice(msg.from_tag().unwrap_or_default());
                k.put_u8(b' ');
                let raw = msg.bytes().get(via.span.clone()).unwrap_or_default();
                k.put_slice(raw);
            }
        }
        Ok(ServerKey(k.freeze()))
    }
}

/// Retransmission schedule of timers A, E and G: first after T1, doubling, capped at `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    next: Instant,
    interval: Duration,
    cap: Duration,
}

impl Retransmit {
    /// `cap`: T2 for non-INVITE requests and INVITE responses (timers E, G); no cap for INVITE (timer A).
    pub fn new(now: Instant, cap: Duration) -> Retransmit {
        Retransmit {
            next: now + T1,
            interval: T1,
            cap,
        }
    }
    /// When the next retransmission is due.
    pub fn due_at(&self) -> Instant {
        self.next
    }
    /// Call when `now >= due_at()`: returns true (retransmit now) and schedules the next one.
    pub fn fire(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.interval = (self.interval * 2).min(self.cap);
        self.next = now + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmit_doubles_up_to_cap() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(t0, T2);
        assert_eq!(r.due_at(), t0 + T1);
        assert!(!r.fire(t0));
        let mut at = r.due_at();
        let mut gaps = vec![];
        for _ in 0..6 {
            assert!(r.fire(at));
            gaps.push(r.due_at() - at);
            at = r.due_at();
        }
        let ms: Vec<u128> = gaps.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![1000, 2000, 4000, 4000, 4000, 4000]);
    }

    #[test]
    fn branches_are_ours_unique_and_derived_ones_stable() {
        let a = new_branch();
        let b = new_branch();
        assert_ne!(a, b);
        assert!(is_our_branch(a.as_bytes()));
        assert!(a.starts_with(MAGIC_COOKIE));
        let d1 = derived_branch('a', &[b"x", b"y"]);
        let d2 = derived_branch('a', &[b"x", b"y"]);
        let d3 = derived_branch('a', &[b"xy"]);
        assert_eq!(d1, d2);
        assert_ne!(d1, d3, "part boundaries matter");
        assert!(!is_our_branch(b"z9hG4bK776asdhds"));
    }
}
