//! Latency histograms in seconds with the project's fixed buckets, on `prometheus-client`'s
//! [`Histogram`](prometheus_client::metrics::histogram::Histogram): one observation is a short
//! uncontended lock, a bucket search over 15 bounds and two additions; no allocation.

use prometheus_client::metrics::histogram::Histogram as Inner;
use std::time::Duration;

/// Upper bounds in seconds, suited to call setup: 1 ms (a loopback answer) to 30 s (a call that
/// rang through a long chain); beyond that is `+Inf`.
pub const BOUNDS_SECONDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// A histogram of durations over [`BOUNDS_SECONDS`]. Clones share the same counts (register one
/// clone, observe through another).
#[derive(Debug, Clone)]
pub struct Histogram(Inner);

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram(Inner::new(BOUNDS_SECONDS))
    }

    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }

    /// The handle a [`Registry`](prometheus_client::registry::Registry) encodes.
    pub fn metric(&self) -> Inner {
        self.0.clone()
    }
}
