//! The prober: ONE background task with ONE timer structure, a binary heap keyed by due time,
//! holding every probe to send and every probe deadline. A wake-up pops only what is due, so a
//! probe costs O(log n) however many hosts there are; nothing scans the host set except a reload.
//! The decisions (when next, with how much jitter) are small pure functions; the task only sleeps,
//! sends and feeds results to [`Health`].
//!
//! Schedule, per probe host:
//! 1. At start-up the first round is staggered by index: host `i` of `n` is first probed at
//!    `i * probe_interval / n`, so probes are spread evenly over the interval however many hosts.
//!    A reload that adds hosts staggers the new ones the same way (one new host: at once).
//! 2. After each probe the next one is due `probe_interval` plus a random jitter in
//!    `0..=probe_interval * probe_jitter_percent / 100` (jitter percent capped at 100) after the
//!    time it was DUE, so each host keeps its own phase and lateness does not accumulate.
//! 3. Healthy and unhealthy hosts are probed alike: probes are what brings a down target back.
//! 4. A reload adds and removes hosts by id; a kept host keeps its phase (and takes its new
//!    settings). A removed host's heap entries are dropped when they come due.
//!
//! How late each probe went out is recorded in `sosrouter_probe_lateness_seconds`.

use super::Health;
use super::probe::{ProbeIds, ProbeTransport, build_options};
use crate::routing::{HealthSettings, Target, TargetId};
use crate::tasks::Tasks;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, trace};

/// Former start-up spread of first probes; kept for callers. First probes are now staggered over
/// the probe interval (rule 1).
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
    interval(s) + random_upto(max_jitter(s))
}

fn interval(s: &HealthSettings) -> Duration {
    s.probe_interval.max(Duration::from_millis(10))
}

/// Offset of the first probe of host `i` of `n` new hosts (rule 1).
pub fn first_offset(s: &HealthSettings, i: usize, n: usize) -> Duration {
    let n = n.max(1) as u128;
    let i = (i as u128).min(n - 1);
    let nanos = interval(s).as_nanos() * i / n;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// What a heap entry is due for.
#[derive(Debug)]
enum Due {
    /// Probe host `id` if its schedule is still generation `gen` (else: removed or re-added).
    Probe { id: TargetId, generation: u64 },
    /// Fail the probe with this branch if it is still pending.
    Deadline(String),
}

/// One heap entry, ordered by due time, then by insertion: never by its content (comparing
/// branches and ids on every tie cost a string compare per heap step, and ties are the rule:
/// every probe sent in one wake-up has the same deadline).
#[derive(Debug)]
struct Timer {
    at: Instant,
    seq: u64,
    due: Due,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A scheduled host: its target (settings may change on reload) and the generation of its schedule.
struct Scheduled {
    target: Arc<Target>,
    generation: u64,
}

/// The prober's timers: one heap of (due time, what) and the hosts by id.
pub(super) struct Schedule {
    heap: BinaryHeap<Reverse<Timer>>,
    hosts: HashMap<TargetId, Scheduled>,
    generation: u64,
    seq: u64,
}

impl Schedule {
    fn new() -> Schedule {
        Schedule {
            heap: BinaryHeap::new(),
            hosts: HashMap::new(),
            generation: 0,
            seq: 0,
        }
    }

    fn push(&mut self, at: Instant, due: Due) {
        self.seq += 1;
        self.heap.push(Reverse(Timer {
            at,
            seq: self.seq,
            due,
        }));
    }

    /// Makes the scheduled hosts those of `hosts`, by id (rule 4).
    fn sync(&mut self, hosts: &[Arc<Target>], now: Instant) {
        let mut keep: HashMap<&TargetId, &Arc<Target>> = HashMap::with_capacity(hosts.len());
        for h in hosts {
            keep.insert(&h.id, h);
        }
        self.hosts.retain(|id, s| match keep.get(id) {
            Some(t) => {
                s.target = Arc::clone(t);
                true
            }
            None => false,
        });
        let new: Vec<&Arc<Target>> = hosts
            .iter()
            .filter(|h| !self.hosts.contains_key(&h.id))
            .collect();
        let n = new.len();
        for (i, t) in new.into_iter().enumerate() {
            self.generation += 1;
            let at = now + first_offset(&t.health, i, n);
            let generation = self.generation;
            self.push(
                at,
                Due::Probe {
                    id: t.id.clone(),
                    generation,
                },
            );
            self.hosts.insert(
                t.id.clone(),
                Scheduled {
                    target: Arc::clone(t),
                    generation: self.generation,
                },
            );
        }
        // Drop the entries of removed hosts now when they are many, so the heap stays O(hosts).
        if self.heap.len() > 4 * self.hosts.len() + 1024 {
            let hosts = &self.hosts;
            self.heap.retain(|Reverse(t)| match &t.due {
                Due::Probe { id, generation } => {
                    hosts.get(id).is_some_and(|s| s.generation == *generation)
                }
                Due::Deadline(_) => true,
            });
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Pops the next entry due at or before `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(Instant, Due)> {
        if self.next_due()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(t)| (t.at, t.due))
    }
}

impl Health {
    /// Starts the prober on `tasks`. Call once, after the proxy's sockets are bound. The task runs
    /// until `tasks` is cancelled (at shutdown).
    pub fn spawn_prober(&self, transport: Arc<dyn ProbeTransport>, tasks: &Tasks) {
        let health = self.clone();
        tasks.spawn(async move { health.run_prober(transport).await });
    }

    async fn run_prober(self, transport: Arc<dyn ProbeTransport>) {
        let mut sched = Schedule::new();
        sched.sync(&self.inner.topology.load().probe_hosts, Instant::now());
        loop {
            let now = Instant::now();
            while let Some((at, due)) = sched.pop_due(now) {
                match due {
                    Due::Deadline(branch) => self.expire_probe(&branch),
                    Due::Probe { id, generation } => {
                        let Some(s) = sched.hosts.get(&id).filter(|s| s.generation == generation)
                        else {
                            continue; // removed by a reload
                        };
                        let host = Arc::clone(&s.target);
                        if let Some(sink) = self.inner.probe_lateness.get() {
                            sink(now.saturating_duration_since(at));
                        }
                        let (deadline, branch) = self.send_probe(&host, &*transport, now);
                        sched.push(deadline, Due::Deadline(branch));
                        let mut next = at + next_delay(&host.health);
                        if next <= now {
                            next = now + next_delay(&host.health);
                        }
                        sched.push(next, Due::Probe { id, generation });
                    }
                }
            }
            let mut wake = sched.next_due().unwrap_or(now + Duration::from_secs(3600));
            if self.flush_systemic() {
                wake = wake.min(now + super::handle::SYSTEMIC_GAP);
            }
            tokio::select! {
                _ = sleep_until(wake) => {}
                _ = self.inner.changed.notified() => {
                    debug!("prober: target set changed");
                    sched.sync(&self.inner.topology.load().probe_hosts, Instant::now());
                }
            }
        }
    }

    /// Sends one OPTIONS to `host`, registers it as pending; returns its deadline.
    fn send_probe(
        &self,
        host: &Target,
        transport: &dyn ProbeTransport,
        now: Instant,
    ) -> (Instant, String) {
        let ids = ProbeIds::random();
        let local = transport.local_addr(host.transport);
        let bytes = build_options(host, local, &ids);
        trace!(target = %host.id, branch = %ids.branch, "sending probe");
        let deadline = self.add_pending(ids.branch.clone(), host, now);
        transport.send(host.transport, host.next_hop, bytes.into());
        (deadline, ids.branch)
    }
}
