//! One attempt of a call: the INVITE sent to one target on one branch, and what came back.

use super::call::{AttemptRecord, ms};
use crate::routing::Target;
use crate::sip::Message;
use crate::transaction::Retransmit;
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
    /// The INVITE as we sent it (CANCEL and ACK are built from it).
    pub invite: Message,
    pub started: Instant,
    pub phase: Phase,
    /// Expiry of the current phase: attempt timer while Trying, ring timer while Ringing.
    pub phase_timer: Instant,
    /// Timer A over UDP, until any response.
    pub retransmit: Option<Retransmit>,
    /// Any response arrived (provisional or final).
    pub responded: bool,
    /// A provisional (100 included) arrived: a CANCEL may be sent (RFC 3261 §9.1).
    pub provisional_seen: bool,
    /// We want this branch cancelled but may not CANCEL before a provisional.
    pub cancel_pending: bool,
    pub cancel_sent: bool,
    pub final_code: Option<u16>,
}

impl Attempt {
    pub(super) fn new(
        target: Arc<Target>,
        plan_index: usize,
        branch: String,
        invite: Message,
        now: Instant,
        attempt_timeout: Duration,
        reliable: bool,
    ) -> Attempt {
        Attempt {
            target,
            plan_index,
            branch,
            invite,
            started: now,
            phase: Phase::Trying,
            phase_timer: now + attempt_timeout,
            retransmit: (!reliable).then(|| Retransmit::new(now, Duration::MAX)),
            responded: false,
            provisional_seen: false,
            cancel_pending: false,
            cancel_sent: false,
            final_code: None,
        }
    }

    pub(super) fn record(
        &self,
        call_start: Instant,
        now: Instant,
        reason: &str,
        status: Option<u16>,
    ) -> AttemptRecord {
        AttemptRecord {
            target: self.target.id.clone(),
            reason: reason.to_string(),
            status,
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
