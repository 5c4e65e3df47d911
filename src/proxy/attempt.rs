//! One attempt of a call: the INVITE sent to one target on one branch, and what came back.

use super::call::Forwarded;
use super::call::{AttemptRecord, ms};
use crate::config::Proto;
use crate::routing::Target;
use crate::sip::build::Leg;
use crate::transaction::Retransmit;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Sent; nothing but (maybe) 100 Trying back. The attempt timer runs.
    Trying,
    /// A provisional other than 100 arrived. The ring timer runs.
    Ringing,
    /// Given up by us (timer, deadline, another branch answered); may still need a CANCEL or an ACK.
    Abandoned,
    /// A final response arrived, or a transport error: nothing left to do.
    Done,
}

pub(super) struct Attempt {
    pub target: Arc<Target>,
    /// Index of the target in the call's plan.
    pub plan_index: usize,
    pub branch: String,
    /// The transport this attempt uses toward the target (the target's, or TCP when the INVITE is too
    /// large for one datagram).
    pub proto: Proto,
    /// The INVITE as we sent it (retransmitted by timer A).
    pub sent: Bytes,
    /// What the INVITE changed in the caller's: CANCEL and ACK are built from these and the caller's
    /// INVITE, never by parsing `sent` (which carries our own additions, outside any inbound limit).
    pub request_uri: Bytes,
    pub via: Bytes,
    pub started: Instant,
    pub phase: Phase,
    /// Expiry of the current phase: attempt timer while Trying, ring timer while Ringing.
    pub phase_timer: Instant,
    /// Timer A over UDP, until any response.
    pub retransmit: Option<Retransmit>,
    /// A provisional (100 included) arrived: a CANCEL may be sent (RFC 3261 §9.1).
    pub provisional_seen: bool,
    /// We want this branch cancelled but may not CANCEL before a provisional.
    pub cancel_pending: bool,
    pub cancel_sent: bool,
    pub final_code: Option<u16>,
    /// When the attempt becomes overdue (no provisional other than 100 yet): the target is then
    /// reported suspect, and the attempt goes on under its attempt timer.
    pub overdue_at: Option<Instant>,
    /// It went overdue (reported): its progress, if any, is [`Outcome::LateProgress`].
    ///
    /// [`Outcome::LateProgress`]: crate::health::Outcome::LateProgress
    pub went_overdue: bool,
}

impl Attempt {
    pub(super) fn new(
        target: Arc<Target>,
        plan_index: usize,
        branch: String,
        proto: Proto,
        fwd: Forwarded,
        now: Instant,
        attempt_timeout: Duration,
    ) -> Attempt {
        let reliable = proto.is_stream();
        Attempt {
            target,
            plan_index,
            branch,
            proto,
            sent: fwd.bytes,
            request_uri: fwd.request_uri,
            via: fwd.via,
            started: now,
            phase: Phase::Trying,
            phase_timer: now + attempt_timeout,
            retransmit: (!reliable).then(|| Retransmit::new(now, Duration::MAX)),
            provisional_seen: false,
            cancel_pending: false,
            cancel_sent: false,
            final_code: None,
            overdue_at: None,
            went_overdue: false,
        }
    }

    /// What CANCEL and ACK need to know of the INVITE we sent.
    pub(super) fn leg(&self, routes_removed: usize) -> Leg<'_> {
        Leg {
            request_uri: &self.request_uri,
            via: std::borrow::Cow::Borrowed(&self.via),
            routes_removed,
        }
    }

    pub(super) fn record(
        &self,
        call_start: Instant,
        now: Instant,
        outcome: crate::health::Outcome,
    ) -> AttemptRecord {
        AttemptRecord {
            target: self.target.id.clone(),
            outcome,
            started_ms: ms(self.started.saturating_duration_since(call_start)),
            elapsed_ms: ms(now.saturating_duration_since(self.started)),
        }
    }

    /// Still owed a CANCEL or waiting for the final of one we sent.
    pub(super) fn is_settling(&self) -> bool {
        self.phase == Phase::Abandoned
            && self.final_code.is_none()
            && (self.cancel_sent || self.cancel_pending)
    }
}
