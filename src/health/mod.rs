//! Target health: a pure hysteresis state machine per target fed by OPTIONS probes and by the
//! outcomes of real calls, plus the operator's enable switch. Readiness = healthy && enabled.
//!
//! CONTRACT used by the proxy (keep these names): [`Outcome`], [`Health::readiness`],
//! [`Health::report`]. (STUB: always ready; the health issue replaces the inside.)

use crate::routing::{Readiness, Rules};

/// What one call attempt showed about its target. Sent by the call path, never blocking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing reached the target: ICMP unreachable, TCP refused or reset.
    TransportError,
    /// No provisional other than 100 within the attempt timer.
    AttemptTimeout,
    /// Provisional but no final within the ring timer.
    RingTimeout,
    /// A final response of the failover class (408, 480, 486, 5xx, ...).
    FailureResponse(u16),
    /// A provisional (18x) or a final that shows the target is taking calls (2xx, or a non-failover final).
    Progress(u16),
}

impl Outcome {
    /// True when the outcome counts against the target's health.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Progress(_))
    }
}

/// Shared health handle. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {}

impl Health {
    pub fn new(_rules: &Rules) -> Health {
        Health {}
    }
    /// Readiness of a target by id. Never blocks.
    pub fn readiness(&self, _id: &str) -> Readiness {
        Readiness::Ready
    }
    /// Reports an attempt's outcome. Never blocks.
    pub fn report(&self, _id: &str, _outcome: Outcome) {}
}

pub mod state;
#[cfg(test)]
mod tests;
