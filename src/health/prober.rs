//! The prober: ONE background task with deadlines (pingora's background loop) that sends OPTIONS
//! to every probe host and fails the probes that time out. The decisions (when next, with how much
//! jitter) are small pure functions; the task only sleeps, sends and feeds results to [`Health`].
//!
//! Schedule, per probe host:
//! 1. At start-up (and when a reload adds a host) the first probe goes out after a random delay in
//!    `0..=STARTUP_SPREAD` (50 ms), so a restart does not send every probe in one burst.
//! 2. After each probe the next one is due after `probe_interval` plus a random jitter in
//!    `0..=probe_interval * probe_jitter_percent / 100` (jitter percent capped at 100).
//! 3. Healthy and unhealthy hosts are probed alike: probes are what brings a down target back.

use super::Health;
use super::probe::{ProbeIds, ProbeTransport, build_options};
use crate::routing::{HealthSettings, TargetId};
use crate::tasks::Tasks;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, trace};

/// Largest random delay of the first probe to a host (rule 1).
pub const STARTUP_SPREAD: Duration = Duration::from_millis(50);

/// Upper bound of the jitter added to one interval (rule 2).
pub fn max_jitter(s: &HealthSettings) -> Duration {
    s.probe_interval * s.probe_jitter_percent.min(100) / 100
}

/// A uniformly random duration in `0..=max`.
fn random_upto(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=nanos))
}

/// The delay until the next probe to a host (rule 2). An interval of zero is raised to 10 ms so a
/// bad setting cannot make the prober spin.
pub fn next_delay(s: &HealthSettings) -> Duration {
    s.probe_interval.max(Duration::from_millis(10)) + random_upto(max_jitter(s))
}

impl Health {
    /// Starts the prober on `tasks`. Call once, after the proxy's sockets are bound. The task runs
    /// until `tasks` is cancelled (at shutdown).
    pub fn spawn_prober(&self, transport: Arc<dyn ProbeTransport>, tasks: &Tasks) {
        let health = self.clone();
        tasks.spawn(async move { health.run_prober(transport).await });
    }

    async fn run_prober(self, transport: Arc<dyn ProbeTransport>) {
        let mut due: HashMap<TargetId, Instant> = HashMap::new();
        loop {
            let now = Instant::now();
            self.expire_probes(now);
            let topo = self.inner.topology.load_full();
            due.retain(|id, _| topo.probe_hosts.iter().any(|t| &t.id == id));
            for host in &topo.probe_hosts {
                let at = *due
                    .entry(host.id.clone())
                    .or_insert_with(|| now + random_upto(STARTUP_SPREAD));
                if at > now {
                    continue;
                }
                let ids = ProbeIds::random();
                let local = transport.local_addr(host.transport);
                let bytes = build_options(host, local, &ids);
                trace!(target = %host.id, branch = %ids.branch, "sending probe");
                self.add_pending(ids.branch, host, now);
                transport.send(host.transport, host.next_hop, bytes.into());
                due.insert(host.id.clone(), now + next_delay(&host.health));
            }
            let wake = due
                .values()
                .copied()
                .chain(self.next_probe_deadline())
                .min()
                .unwrap_or(now + Duration::from_secs(1));
            tokio::select! {
                _ = sleep_until(wake) => {}
                _ = self.inner.changed.notified() => debug!("prober: target set changed"),
            }
        }
    }
}
