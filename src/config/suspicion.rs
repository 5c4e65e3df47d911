//! The optional `[suspicion]` section: how sosrouter learns of silent failures (a target, or an
//! element shared by several, that answers OPTIONS while calls die). Every key is optional; absent
//! keys keep the defaults below. See the README's health section for what each one does.

use super::walk::Ctx;
use toml::de::DeTable;

/// The section's keys, in the order the file documents them.
const KEYS: &[&str] = &[
    "overdue_factor",
    "overdue_floor_ms",
    "latency_samples",
    "domain_suspect_after",
    "domain_window_ms",
    "short_call_ms",
    "short_call_window",
    "short_call_trigger",
    "short_call_baseline_percent",
    "systemic_share_percent",
    "recovery_test_interval_ms",
    "suspect_hold_ms",
];

/// Silent-failure detection settings, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspicionSpec {
    /// An attempt with no provisional other than 100 after `overdue_factor` x the target's usual
    /// first-provisional time (its windowed 90th percentile) makes the target suspect. 0: off.
    pub overdue_factor: u64,
    /// Floor of that usual time, ms: a target that answers in 1 ms is not overdue at 4 ms.
    pub overdue_floor_ms: u64,
    /// How many recent first-provisional times the estimate is taken over.
    pub latency_samples: u64,
    /// Distinct targets of one failure domain failing real or test calls within `domain_window_ms`
    /// that make the whole domain suspect.
    pub domain_suspect_after: u64,
    pub domain_window_ms: u64,
    /// An answered call that ends (BYE) within this of its 2xx is short (dead media, most likely).
    pub short_call_ms: u64,
    /// Short-call signal: `short_call_trigger` short calls among a target's last `short_call_window`
    /// answered calls, while its own longer-run share of short calls is under
    /// `short_call_baseline_percent`, make it suspect.
    pub short_call_window: u64,
    pub short_call_trigger: u64,
    pub short_call_baseline_percent: u64,
    /// A systemic event is raised when more than this share of all targets is down or suspect.
    pub systemic_share_percent: u64,
    /// A target down on call evidence gets a test call this often until one succeeds, ms; the
    /// targets of one failure domain get one this often between them (`testcall::schedule`).
    pub recovery_test_interval_ms: u64,
    /// Damping of overdue suspicion (rule 8 of `health::state`): another call's progress ends it
    /// only after this long, and after a false alarm overdue attempts raise none for this long.
    pub suspect_hold_ms: u64,
}

impl Default for SuspicionSpec {
    fn default() -> Self {
        SuspicionSpec {
            overdue_factor: 4,
            overdue_floor_ms: 40,
            latency_samples: 32,
            domain_suspect_after: 3,
            domain_window_ms: 10_000,
            short_call_ms: 5_000,
            short_call_window: 5,
            short_call_trigger: 3,
            short_call_baseline_percent: 20,
            systemic_share_percent: 50,
            recovery_test_interval_ms: 1_000,
            suspect_hold_ms: 1_000,
        }
    }
}

pub(crate) fn read_suspicion(ctx: &mut Ctx, doc: &DeTable) -> SuspicionSpec {
    let mut s = SuspicionSpec::default();
    let Some((t, span)) = ctx.table(doc, "suspicion") else {
        return s;
    };
    ctx.check_keys(t, "in [suspicion]", KEYS);
    let keys: [(&mut u64, &str, u64, u64); 12] = [
        (&mut s.overdue_factor, "overdue_factor", 0, 1000),
        (&mut s.overdue_floor_ms, "overdue_floor_ms", 1, 60_000),
        (&mut s.latency_samples, "latency_samples", 1, 4096),
        (&mut s.domain_suspect_after, "domain_suspect_after", 1, 1000),
        (&mut s.domain_window_ms, "domain_window_ms", 100, 3_600_000),
        (&mut s.short_call_ms, "short_call_ms", 0, 600_000),
        (&mut s.short_call_window, "short_call_window", 1, 1000),
        (&mut s.short_call_trigger, "short_call_trigger", 1, 1000),
        (
            &mut s.short_call_baseline_percent,
            "short_call_baseline_percent",
            0,
            100,
        ),
        (
            &mut s.systemic_share_percent,
            "systemic_share_percent",
            1,
            100,
        ),
        (
            &mut s.recovery_test_interval_ms,
            "recovery_test_interval_ms",
            100,
            3_600_000,
        ),
        (&mut s.suspect_hold_ms, "suspect_hold_ms", 0, 600_000),
    ];
    for (slot, key, min, max) in keys {
        if let Some(v) = ctx.integer(t, key, min, max) {
            *slot = v;
        }
    }
    if s.short_call_trigger > s.short_call_window {
        ctx.error(
            &span,
            "[suspicion]: short_call_trigger exceeds short_call_window: the signal could never fire",
        );
    }
    s
}
