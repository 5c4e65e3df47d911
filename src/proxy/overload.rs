//! Admission of new calls: trunk ACL, emergency-first overload shedding and per-source rate limits.
//! Runs once per initial INVITE, never per message (retransmissions, ACK, responses skip it).
//!
//! Order of the checks, cheapest and most specific first:
//! 1. ACL of the listen address (a `[[acl]]` for the transport): unlisted sources get 403, except an
//!    emergency call under `emergency_from_unlisted = "accept"` (the default), which is routed and
//!    logged: a wrong ACL must never be what blocks a 911 call.
//! 2. Overload, one atomic load: calls in flight at or over `non_emergency_calls_max` refuse
//!    non-emergency INVITEs with 503 + Retry-After; emergency calls are refused only at `calls_max`,
//!    the hard ceiling that keeps memory bounded. The gap between the two is headroom reserved for
//!    emergency calls.
//! 3. Rate limit per source IP (pike-like token buckets, one DashMap entry operation): a normal and a
//!    much larger emergency bucket, each refilled at its rate with one second of burst. Trusted
//!    trunks (`trusted_sources`) are exempt. Idle entries are reaped by `sweep`.
//!
//! Signal choice: calls in flight (server transactions owned by a task) is what costs memory and
//! timers here, is exact, and is read with one atomic load. CPU or queue delay would be noisier and
//! lag the flood; a call count reacts on the very INVITE that crosses the limit.

use crate::config::{ProtectionSpec, Proto, UnlistedEmergency};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A bucket holds one second of its rate: short bursts pass, sustained floods do not.
const BURST: Duration = Duration::from_secs(1);

/// Why a call was refused, and how to say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("source not on the listen address's allowlist")]
    NotListed,
    #[error("overloaded: non-emergency calls shed")]
    Shed,
    #[error("overloaded: hard call limit reached")]
    Full,
    #[error("per-source rate limit exceeded")]
    RateLimited,
}

impl Refusal {
    /// Status code and reason phrase for the caller.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::NotListed => (403, "Source Not Allowed"),
            Refusal::Shed | Refusal::Full => (503, "Overloaded"),
            Refusal::RateLimited => (503, "Rate Limited"),
        }
    }
}

/// Counts of refusals, for tests and metrics. Separate from `Counters` on purpose (owned here).
#[derive(Debug, Default)]
pub struct ProtectionCounters {
    pub acl_refused: AtomicU64,
    /// Emergency calls from unlisted sources that were routed anyway.
    pub acl_emergency_accepted: AtomicU64,
    pub shed: AtomicU64,
    pub full: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Malformed requests answered with a salvaged 400.
    pub bad_requests_answered: AtomicU64,
}

/// Holds one call's place in the in-flight count; dropped with its server-table entry.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Bucket {
    normal: f64,
    emergency: f64,
    last: Instant,
}

#[derive(Default)]
pub struct Protection {
    in_flight: Arc<AtomicUsize>,
    shedding: AtomicBool,
    buckets: DashMap<IpAddr, Bucket>,
    /// Entries in `buckets`, kept here because `DashMap::len` locks every shard.
    tracked: AtomicUsize,
    pub counters: ProtectionCounters,
}

impl Protection {
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Per-source rate-limit entries currently tracked.
    pub fn sources_tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Decides whether a new call may start. See the module doc for the order of checks. An
    /// admitted call gets its place in the in-flight count, held until the guard is dropped.
    pub(crate) fn admit(
        &self,
        spec: &ProtectionSpec,
        proto: Proto,
        src: IpAddr,
        emergency: bool,
        now: Instant,
    ) -> Result<InFlight, Refusal> {
        let c = &self.counters;
        if let Some(acl) = spec.acl.iter().find(|a| a.transport == proto)
            && !acl.allow.iter().any(|n| n.contains(src))
        {
            if !emergency || acl.emergency_from_unlisted == UnlistedEmergency::Reject {
                c.acl_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%src, %proto, emergency, "call from unlisted source refused");
                return Err(Refusal::NotListed);
            }
            c.acl_emergency_accepted.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%src, %proto, "emergency call from a source not on the ACL: routed anyway");
        }
        let o = &spec.overload;
        // Take the place first, then judge by the count before it: receive loops admitting at
        // once each see the others' places, so the limits hold exactly. (Reading the count and
        // entering later let two loops both pass at limit - 1.) A refusal drops the place.
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) as u64;
        let place = InFlight(self.in_flight.clone());
        self.track_shedding(n, o.non_emergency_calls_max);
        if n >= o.calls_max {
            c.full.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%src, emergency, calls = n, "call refused: hard call limit");
            return Err(Refusal::Full);
        }
        if !emergency && n >= o.non_emergency_calls_max {
            c.shed.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Shed);
        }
        if o.trusted_sources.iter().any(|t| t.contains(src)) {
            return Ok(place);
        }
        if self.take_token(spec, src, emergency, now) {
            Ok(place)
        } else {
            c.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%src, emergency, "call refused: source over its rate");
            Err(Refusal::RateLimited)
        }
    }

    /// Logs overload on and off once per transition, with hysteresis (off below 90 % of the limit).
    fn track_shedding(&self, n: u64, limit: u64) {
        let on = self.shedding.load(Ordering::Relaxed);
        if !on && n >= limit {
            if !self.shedding.swap(true, Ordering::Relaxed) {
                tracing::warn!(calls = n, limit, "overload: shedding non-emergency calls");
            }
        } else if on && n < limit - limit / 10 && self.shedding.swap(false, Ordering::Relaxed) {
            tracing::warn!(calls = n, limit, "overload over: accepting all calls");
        }
    }

    /// One entry operation: refill the source's buckets and take one token from the right one.
    fn take_token(
        &self,
        spec: &ProtectionSpec,
        src: IpAddr,
        emergency: bool,
        now: Instant,
    ) -> bool {
        let o = &spec.overload;
        let (rate_n, rate_e) = (
            o.source_invites_per_s as f64,
            o.source_emergency_invites_per_s as f64,
        );
        let burst = BURST.as_secs_f64();
        match self.buckets.entry(src) {
            Entry::Occupied(mut e) => {
                let b = e.get_mut();
                let dt = now.saturating_duration_since(b.last).as_secs_f64();
                b.last = now;
                b.normal = (b.normal + dt * rate_n).min(rate_n * burst);
                b.emergency = (b.emergency + dt * rate_e).min(rate_e * burst);
                let slot = if emergency {
                    &mut b.emergency
                } else {
                    &mut b.normal
                };
                if *slot >= 1.0 {
                    *slot -= 1.0;
                    true
                } else {
                    false
                }
            }
            Entry::Vacant(v) => {
                if self.tracked.load(Ordering::Relaxed) as u64 >= o.sources_tracked_max {
                    // Too many sources to track (a spoofed flood): keep emergency calls flowing,
                    // shed the rest until the sweep frees entries.
                    return emergency;
                }
                self.tracked.fetch_add(1, Ordering::Relaxed);
                v.insert(Bucket {
                    normal: rate_n * burst - f64::from(!emergency),
                    emergency: rate_e * burst - f64::from(emergency),
                    last: now,
                });
                true
            }
        }
    }

    /// Removes sources idle for a whole burst window: their buckets are full again, so forgetting
    /// them changes no decision.
    pub fn sweep(&self, now: Instant) {
        self.buckets.retain(|_, b| {
            let keep = now.saturating_duration_since(b.last) < BURST;
            if !keep {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
    }
}
