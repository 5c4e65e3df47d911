//! OPTIONS probes: building them (with `rsip`), the transport seam the wiring implements, and
//! matching replies, transport errors and timeouts to the probes still pending.
//!
//! A probe is identified by its Via branch, `z9hG4bK-sosprobe-<random>`. The proxy's receive loop
//! hands every response whose top Via branch passes [`is_probe_branch`] to
//! [`Health::on_probe_response`] instead of the call path.

use super::Health;
use super::state::{Event, ProbeFailure};
use crate::config::Proto;
use crate::routing::{Target, TargetId};
use bytes::Bytes;
use std::net::SocketAddr;
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

/// A probe sent and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// The probed (SIP) target; results also go to the Tel targets sharing it.
    pub(super) host: TargetId,
    pub(super) to: SocketAddr,
    pub(super) alive_codes: Vec<(u16, u16)>,
}

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

/// Builds the OPTIONS request for `target` from `local` (our sent-by address), written straight
/// into one string (it runs for every probe: 20 000 a second at size; building it through typed
/// `rsip` headers cost a URI parse and a dozen allocations each time). The Request-URI is the
/// target's URI as the rules wrote it (validated when the rules were compiled); should it hold a
/// character that cannot stand in a request line, `sip:<next_hop>` is used instead.
pub fn build_options(target: &Target, local: SocketAddr, ids: &ProbeIds) -> String {
    use std::fmt::Write;
    let uri = target.uri.as_str();
    let next_hop;
    let uri = if uri.is_empty() || uri.bytes().any(|b| b <= b' ' || b == 0x7f) {
        next_hop = format!("sip:{}", target.next_hop);
        next_hop.as_str()
    } else {
        uri
    };
    let via_transport = match target.transport {
        Proto::Udp => "UDP",
        Proto::Tcp => "TCP",
    };
    let mut m = String::with_capacity(320 + 2 * uri.len());
    let _ = write!(
        m,
        "OPTIONS {uri} SIP/2.0\r\n\
         Via: SIP/2.0/{via_transport} {local};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:sosrouter@{local}>;tag={tag}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        branch = ids.branch,
        tag = ids.from_tag,
        call_id = ids.call_id,
    );
    m
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
        let Ok(branch) = std::str::from_utf8(branch) else {
            return;
        };
        let Some((_, p)) = self.take_pending(branch) else {
            trace!(
                branch,
                status, "probe reply without a pending probe ignored"
            );
            return;
        };
        let ev = if is_alive(&p.alive_codes, status) {
            Event::ProbeOk(status)
        } else {
            Event::ProbeFailed(ProbeFailure::Code(status))
        };
        self.apply_probe_result(&p.host, ev);
    }

    /// ICMP unreachable or TCP refused toward `addr`: every probe pending toward it fails now.
    pub fn on_transport_error(&self, addr: SocketAddr) {
        let Some((_, branches)) = self.inner.pending_to.remove(&addr) else {
            return;
        };
        for branch in branches {
            if let Some((_, p)) = self.inner.pending.remove(&branch) {
                self.apply_probe_result(&p.host, Event::ProbeFailed(ProbeFailure::TransportError));
            }
        }
    }

    /// Removes a pending probe (and its entry by destination).
    fn take_pending(&self, branch: &str) -> Option<(String, Pending)> {
        let taken = self.inner.pending.remove(branch)?;
        if let Some(mut v) = self.inner.pending_to.get_mut(&taken.1.to) {
            v.retain(|b| b != branch);
            let empty = v.is_empty();
            drop(v);
            if empty {
                self.inner
                    .pending_to
                    .remove_if(&taken.1.to, |_, v| v.is_empty());
            }
        }
        Some(taken)
    }

    /// The probe with this branch reached its deadline: a failure if still pending (a reply or a
    /// transport error may have resolved it already).
    pub(super) fn expire_probe(&self, branch: &str) {
        if let Some((_, p)) = self.take_pending(branch) {
            self.apply_probe_result(&p.host, Event::ProbeFailed(ProbeFailure::Timeout));
        }
    }

    /// Registers a probe as pending, then counts it as sent. Returns its deadline.
    pub(super) fn add_pending(&self, branch: String, target: &Target, now: Instant) -> Instant {
        let deadline = now + target.health.probe_timeout.max(Duration::from_millis(1));
        let pending = Pending {
            host: target.id.clone(),
            to: target.next_hop,
            alive_codes: target.health.alive_codes.clone(),
        };
        self.inner
            .pending_to
            .entry(target.next_hop)
            .or_default()
            .push(branch.clone());
        self.inner.pending.insert(branch, pending);
        self.count_probe_sent(&target.id);
        deadline
    }
}
