//! A fixed-bucket histogram of durations on atomics: one observation is a bucket search over 15
//! bounds and three relaxed increments, no lock and no allocation.

use super::text::Exposition;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds, suited to call setup: 1 ms (a loopback answer) to 30 s (a call that
/// rang through a long chain); beyond that is `+Inf`.
pub const BOUNDS_SECONDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

#[derive(Debug)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram; `const` so one can live in a `static`.
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_SECONDS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS_SECONDS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BOUNDS_SECONDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
    }

    /// Writes `name_bucket`, `name_sum` and `name_count` samples. `_count` is the cumulative total
    /// of the buckets read, so it always equals the `+Inf` bucket even under concurrent observes.
    pub fn render(&self, e: &mut Exposition, name: &str) {
        let bucket = format!("{name}_bucket");
        let mut total = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            let le = match BOUNDS_SECONDS.get(i) {
                Some(v) => v.to_string(),
                None => "+Inf".to_string(),
            };
            e.sample(&bucket, &[("le", &le)], total);
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        e.sample(&format!("{name}_sum"), &[], sum);
        e.sample(&format!("{name}_count"), &[], total);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}
