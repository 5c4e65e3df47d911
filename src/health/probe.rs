//! OPTIONS probes: building them (with our own [`crate::sip::build::options`]), the transport seam the wiring implements, and
//! matching replies, transport errors and timeouts to the probes still pending.
//!
//! A probe is identified by its Via branch, `z9hG4bK-sosprobe-<random>`. The proxy's receive loop
//! hands every response whose top Via branch passes [`is_probe_branch`] to
//! [`Health::on_probe_response`] instead of the call path.

use super::Health;
use super::state::{Event, ProbeFailure};
use crate::config::Proto;
use crate::routing::Target;
use bytes::Bytes;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::trace;

/// Prefix of the Via branch of every probe (RFC 3261 magic cookie first).
pub const PROBE_BRANCH_PREFIX: &str = "z9hG4bK-sosprobe-";

/// Whether a top Via branch belongs to one of our probes.
pub fn is_probe_branch(branch: &[u8]) -> bool {
    branch.starts_with(PROBE_BRANCH_PREFIX.as_bytes())
}

/// How the prober sends bytes. Implemented by the wiring over the proxy's sockets, so `health`
/// never imports `transport`. `send` must not block: queue or drop (a dropped probe simply times
/// out and counts as failed, which is what a lost datagram would do too).
pub trait ProbeTransport: Send + Sync + 'static {
    /// Our address for the Via sent-by of a probe over `transport`.
    fn local_addr(&self, transport: Proto) -> SocketAddr;
    fn send(&self, transport: Proto, to: SocketAddr, bytes: Bytes);
}

/// A probe sent and not yet answered: the probed (SIP) target (results also go to the Tel
/// targets sharing it), its address and alive codes as they were when it was sent.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) target: Arc<Target>,
    /// When it was sent: a timeout while we were behind reading our own socket since then is held.
    pub(super) sent: Instant,
}

/// The key of a pending probe: the 64 random bits its branch ends with (16 hex digits).
pub(super) type ProbeKey = u64;

/// The key of a probe branch, or None when the branch is not one we could have sent.
pub(super) fn probe_key(branch: &str) -> Option<ProbeKey> {
    let hex = branch.strip_prefix(PROBE_BRANCH_PREFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Hashes a [`ProbeKey`] as itself: the keys are random, so they are spread already, and a reply
/// can only look a key up, never add one (SipHash of a branch string was a measurable share of
/// each probe at 20 000 probes a second).
#[derive(Default, Clone, Copy)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The pending probes' map hasher.
pub(super) type KeyHash = BuildHasherDefault<KeyHasher>;

/// Identifiers of one probe; random so a stray or forged reply cannot answer another probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeIds {
    pub branch: String,
    pub from_tag: String,
    pub call_id: String,
}

impl ProbeIds {
    pub fn random() -> ProbeIds {
        ProbeIds {
            branch: format!("{PROBE_BRANCH_PREFIX}{:016x}", rand::random::<u64>()),
            from_tag: format!("{:08x}", rand::random::<u32>()),
            call_id: format!("sosprobe-{:016x}", rand::random::<u64>()),
        }
    }
}

/// Builds the OPTIONS request for `target` from `local` (our sent-by address).
/// If the target URI is not a SIP URI we can write as the Request-URI (it was validated by config,
/// so this is defensive), the Request-URI falls back to `sip:<next_hop>`.
pub fn build_options(target: &Target, local: SocketAddr, ids: &ProbeIds) -> String {
    let uri = probe_uri(target);
    let bytes = options_bytes(
        target,
        &uri,
        local,
        &ids.branch,
        &ids.from_tag,
        &ids.call_id,
    );
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The Request-URI (and To URI) of `target`'s probes: its URI, or `sip:<next_hop>` when that is
/// not a SIP URI we can write. Worked out once per target by the prober, not per probe.
pub(super) fn probe_uri(target: &Target) -> Box<str> {
    if writable_sip_uri(&target.uri) {
        target.uri.as_str().into()
    } else {
        format!("sip:{}", target.next_hop).into()
    }
}

/// The prober's probe: OPTIONS to `target` at `uri` whose branch ends with `key`, with a random
/// From tag and Call-ID, written with one allocation for the three identifiers.
pub(super) fn probe_request(target: &Target, uri: &str, local: SocketAddr, key: ProbeKey) -> Bytes {
    let mut ids = String::with_capacity(PROBE_BRANCH_PREFIX.len() + 16 + 8 + 9 + 16);
    let _ = write!(
        ids,
        "{PROBE_BRANCH_PREFIX}{key:016x}{:08x}sosprobe-{:016x}",
        rand::random::<u32>(),
        rand::random::<u64>()
    );
    let (branch, rest) = ids.split_at(PROBE_BRANCH_PREFIX.len() + 16);
    let (tag, call_id) = rest.split_at(8);
    options_bytes(target, uri, local, branch, tag, call_id)
}

fn options_bytes(
    target: &Target,
    request_uri: &str,
    local: SocketAddr,
    branch: &str,
    from_tag: &str,
    call_id: &str,
) -> Bytes {
    let transport = match target.transport {
        Proto::Udp => "UDP",
        Proto::Tcp => "TCP",
        Proto::Tls => "TLS",
    };
    crate::sip::build::options(&crate::sip::build::Options {
        request_uri,
        transport,
        local,
        branch,
        from_user: "sosrouter",
        from_tag,
        call_id,
        cseq: 1,
    })
}

/// A sip: or sips: URI our parser reads, with nothing that would break the request line or the
/// To header (whitespace, control characters, `<`, `>`).
fn writable_sip_uri(uri: &str) -> bool {
    use crate::sip::{Uri, UriScheme};
    let clean = uri
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    clean
        && Uri::parse(uri.as_bytes()).is_some_and(|u| {
            matches!(u.scheme, UriScheme::Sip | UriScheme::Sips) && u.host.is_some()
        })
}

/// Whether `code` is in one of the inclusive ranges.
pub(super) fn is_alive(alive_codes: &[(u16, u16)], code: u16) -> bool {
    alive_codes.iter().any(|&(lo, hi)| lo <= code && code <= hi)
}

impl Health {
    /// A response to one of our probes arrived (top Via branch passed [`is_probe_branch`]).
    /// Provisional replies (1xx) are not an answer yet and are ignored; finals resolve the probe:
    /// alive when in the target's `alive_codes`, a failure otherwise. Unknown branches (late
    /// replies after the timeout, duplicates) are ignored.
    pub fn on_probe_response(&self, branch: &[u8], status: u16) {
        if status < 200 {
            return;
        }
        let Some(key) = std::str::from_utf8(branch).ok().and_then(probe_key) else {
            return;
        };
        let Some(p) = self.take_pending(key) else {
            trace!(key, status, "probe reply without a pending probe ignored");
            return;
        };
        let ev = if is_alive(&p.target.health.alive_codes, status) {
            Event::ProbeOk(status)
        } else {
            Event::ProbeFailed(ProbeFailure::Code(status))
        };
        self.apply_probe_result(&p.target.id, ev);
    }

    /// ICMP unreachable or TCP refused toward `addr`: every probe pending toward it fails now.
    pub fn on_transport_error(&self, addr: SocketAddr) {
        let Some((_, branches)) = self.inner.pending_to.remove(&addr) else {
            return;
        };
        for key in branches {
            if let Some((_, p)) = self.inner.pending.remove(&key) {
                self.apply_probe_result(
                    &p.target.id,
                    Event::ProbeFailed(ProbeFailure::TransportError),
                );
            }
        }
    }

    /// Removes a pending probe (and its entry by destination).
    fn take_pending(&self, key: ProbeKey) -> Option<Pending> {
        let (_, taken) = self.inner.pending.remove(&key)?;
        let to = taken.target.next_hop;
        if let Some(mut v) = self.inner.pending_to.get_mut(&to) {
            v.retain(|k| *k != key);
            let empty = v.is_empty();
            drop(v);
            if empty {
                self.inner.pending_to.remove_if(&to, |_, v| v.is_empty());
            }
        }
        Some(taken)
    }

    /// The probe with this key reached its deadline: a failure if still pending (a reply or a
    /// transport error may have resolved it already).
    pub(super) fn expire_probe(&self, key: ProbeKey) {
        if let Some(p) = self.take_pending(key) {
            if self.held_for_own_backlog(p.sent.into_std(), &p.target.id, "probe timeout") {
                return;
            }
            self.apply_probe_result(&p.target.id, Event::ProbeFailed(ProbeFailure::Timeout));
        }
    }

    /// How long after sending a probe to `target` fails unanswered.
    pub(super) fn probe_timeout(target: &Target) -> Duration {
        target.health.probe_timeout.max(Duration::from_millis(1))
    }

    /// Registers a probe as pending, then counts it as sent. Returns its deadline.
    pub(super) fn add_pending(&self, key: ProbeKey, target: &Arc<Target>, now: Instant) -> Instant {
        let deadline = now + Health::probe_timeout(target);
        self.inner
            .pending_to
            .entry(target.next_hop)
            .or_default()
            .push(key);
        self.inner.pending.insert(
            key,
            Pending {
                target: Arc::clone(target),
                sent: now,
            },
        );
        self.count_probe_sent(&target.id);
        deadline
    }
}
