//! The prober: ONE background task with ONE timer structure: a binary heap keyed by due time of
//! every probe to send, and FIFO queues of probe deadlines (one per probe timeout value). A
//! wake-up pops only what is due, so a probe costs O(log n) however many hosts there are and its
//! deadline O(1); nothing scans the host set except a reload.
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
//! 5. Probes go out in batches: a wake-up sends every probe due within the next [`PROBE_BATCH`]
//!    (early by at most that, never late by choice) and expires the deadlines already due, and the
//!    next wake-up is at least [`PROBE_BATCH`] later (a deadline fires at most that late). With
//!    2 000 hosts the prober wakes about 100 times a second instead of once per probe and per
//!    deadline: each wake-up of a task costs the runtime an `epoll_wait` return and often a
//!    thread wake, which was most of what idle probing cost beyond the `sendto` itself. A host's
//!    next probe is still due one interval (plus jitter) after its previous one was DUE, so the
//!    phases, and the spread over the interval, hold at that granularity.
//!
//! How late each probe went out is recorded in `sosrouter_probe_lateness_seconds`.

use super::Health;
use super::probe::{ProbeKey, ProbeTransport, probe_request, probe_uri};
use crate::routing::{HealthSettings, Target, TargetId};
use crate::tasks::Tasks;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
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

/// What is due: a probe of the host in `slot` (if its schedule is still generation `generation`;
/// else it was removed or re-added), or the deadline of the pending probe with this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Probe {
        slot: u32,
        generation: u64,
    },
    Deadline(ProbeKey),
    /// A deadline already held back once for a stall of the prober (see [`deadline_grace`]).
    HeldDeadline(ProbeKey),
}

/// The prober's batch (rule 5): a wake-up sends the probes due within this much, and the next
/// wake-up is at least this much later.
pub const PROBE_BATCH: Duration = Duration::from_millis(10);

/// A probe deadline that comes due later than this says the prober's runtime itself is behind.
const STALL_SLACK: Duration = Duration::from_millis(5);

/// The longest a late probe deadline is held back for the receive side to catch up.
const STALL_GRACE_MAX: Duration = Duration::from_millis(500);

/// A probe deadline due at `due` came due to the prober at `fired`. When that is more than
/// [`STALL_SLACK`] late, the receive loops (tasks of the same runtime, short of CPU too) are likely
/// as far behind: the reply may sit unread in the socket, and failing the probe now would blame
/// the target for the proxy's own stall. In the reload drill every backup went down that way
/// within two seconds of a reload that kept the runtime short of CPU (3 208 of 6 000, while their
/// responder answered), and the calls routed to them failed. So such a deadline is held back
/// once, as long again as it was late (at most [`STALL_GRACE_MAX`]); returns the new deadline.
/// `None`: act now. The same rule as the call timers' (`proxy/task.rs`).
fn deadline_grace(due: Instant, fired: Instant) -> Option<Instant> {
    let late = fired.saturating_duration_since(due);
    if late <= STALL_SLACK {
        return None;
    }
    Some(fired + late.min(STALL_GRACE_MAX))
}

/// One probe timer in the heap, ordered by due time, then by insertion: never by its content
/// (ties are the rule with thousands of hosts).
#[derive(Debug)]
struct Timer {
    at: Instant,
    seq: u64,
    slot: u32,
    generation: u64,
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

/// Where the earliest timer is (in tie order: deadline queues, held deadlines, probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Queue(usize),
    Held,
    Probe,
}

/// A scheduled host: its target (settings may change on reload), the generation of its schedule
/// and the Request-URI of its probes (worked out once, not per probe).
struct Scheduled {
    target: Arc<Target>,
    generation: u64,
    uri: Box<str>,
}

/// The prober's timers. Probes: one heap of (due time, slot), the hosts in a slab by slot (a
/// popped timer finds its host by index, not by hashing its id). Deadlines: a probe's deadline is
/// its send time plus the host's probe timeout, and send times only grow, so the deadlines of one
/// timeout value come due in the order they were made: one FIFO queue per distinct timeout (a
/// handful), O(1) to add and to pop, instead of as many heap entries as probes in flight.
pub(super) struct Schedule {
    heap: BinaryHeap<Reverse<Timer>>,
    slots: Vec<Option<Scheduled>>,
    free: Vec<u32>,
    by_id: HashMap<TargetId, u32>,
    deadlines: Vec<(Duration, VecDeque<(Instant, ProbeKey)>)>,
    /// Deadlines held back once for a stall ([`deadline_grace`]); empty unless the prober ran late.
    held: BinaryHeap<Reverse<(Instant, ProbeKey)>>,
    generation: u64,
    seq: u64,
}

impl Schedule {
    fn new() -> Schedule {
        Schedule {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            deadlines: Vec::new(),
            held: BinaryHeap::new(),
            generation: 0,
            seq: 0,
        }
    }

    /// Holds a deadline back until `until` (once: it then fails the probe if still pending).
    fn hold(&mut self, until: Instant, key: ProbeKey) {
        self.held.push(Reverse((until, key)));
    }

    fn push_probe(&mut self, at: Instant, slot: u32, generation: u64) {
        self.seq += 1;
        self.heap.push(Reverse(Timer {
            at,
            seq: self.seq,
            slot,
            generation,
        }));
    }

    /// Adds the deadline of a probe to a host whose probe timeout is `timeout`.
    fn push_deadline(&mut self, timeout: Duration, at: Instant, key: ProbeKey) {
        let q = match self.deadlines.iter().position(|(t, _)| *t == timeout) {
            Some(i) => &mut self.deadlines[i].1,
            None => {
                self.deadlines.push((timeout, VecDeque::new()));
                let last = self.deadlines.len() - 1;
                &mut self.deadlines[last].1
            }
        };
        // Kept in due order even if a caller's clock went backwards (never in practice: O(1)).
        let mut i = q.len();
        while i > 0 && q[i - 1].0 > at {
            i -= 1;
        }
        q.insert(i, (at, key));
    }

    /// The host in `slot` if its schedule is still `generation`.
    fn host(&self, slot: u32, generation: u64) -> Option<&Scheduled> {
        self.slots
            .get(slot as usize)?
            .as_ref()
            .filter(|s| s.generation == generation)
    }

    /// Makes the scheduled hosts those of `hosts`, by id (rule 4).
    fn sync(&mut self, hosts: &[Arc<Target>], now: Instant) {
        let keep: HashMap<&TargetId, &Arc<Target>> = hosts.iter().map(|h| (&h.id, h)).collect();
        let slots = &mut self.slots;
        let free = &mut self.free;
        self.by_id.retain(|id, slot| {
            let Some(s) = slots.get_mut(*slot as usize) else {
                return false;
            };
            match keep.get(id) {
                Some(t) => {
                    if let Some(s) = s {
                        if s.target.uri != t.uri || s.target.next_hop != t.next_hop {
                            s.uri = probe_uri(t);
                        }
                        s.target = Arc::clone(t);
                    }
                    true
                }
                None => {
                    *s = None;
                    free.push(*slot);
                    false
                }
            }
        });
        let new: Vec<&Arc<Target>> = hosts
            .iter()
            .filter(|h| !self.by_id.contains_key(&h.id))
            .collect();
        let n = new.len();
        for (i, t) in new.into_iter().enumerate() {
            self.generation += 1;
            let generation = self.generation;
            let entry = Scheduled {
                target: Arc::clone(t),
                generation,
                uri: probe_uri(t),
            };
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.slots[slot as usize] = Some(entry);
                    slot
                }
                None => {
                    self.slots.push(Some(entry));
                    u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                }
            };
            self.by_id.insert(t.id.clone(), slot);
            self.push_probe(now + first_offset(&t.health, i, n), slot, generation);
        }
        // Drop the timers of removed hosts now when they are many, so the heap stays O(hosts).
        if self.heap.len() > 2 * self.by_id.len() + 1024 {
            let slots = &self.slots;
            self.heap.retain(|Reverse(t)| {
                slots
                    .get(t.slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.generation == t.generation)
            });
        }
    }

    #[cfg(test)]
    fn next_due(&self) -> Option<Instant> {
        self.next_wake(Duration::ZERO)
    }

    /// When the prober must wake next, probes being sent up to `early` ahead of their time: the
    /// earliest deadline, or the earliest probe less `early`.
    fn next_wake(&self, early: Duration) -> Option<Instant> {
        let deadlines = self
            .deadlines
            .iter()
            .filter_map(|(_, q)| q.front().map(|d| d.0));
        let held = self.held.peek().map(|Reverse((at, _))| *at);
        let probe = self
            .heap
            .peek()
            .map(|Reverse(t)| t.at.checked_sub(early).unwrap_or(t.at));
        deadlines.chain(held).chain(probe).min()
    }

    /// The earliest entry that is due and where it is: deadlines (queues and held ones) due at or
    /// before `now`, probes due at or before `probes_until`. Deadlines win ties (a probe's reply
    /// window closes before the next probe of the same instant goes out), then held ones, then
    /// probes.
    fn earliest(&self, now: Instant, probes_until: Instant) -> Option<(Instant, Source)> {
        let queues = self
            .deadlines
            .iter()
            .enumerate()
            .filter_map(|(i, (_, q))| q.front().map(|d| (d.0, Source::Queue(i))));
        let held = self.held.peek().map(|Reverse((at, _))| (*at, Source::Held));
        let probe = self
            .heap
            .peek()
            .map(|Reverse(t)| (t.at, Source::Probe))
            .filter(|(at, _)| *at <= probes_until);
        queues
            .chain(held)
            .filter(|(at, _)| *at <= now)
            .chain(probe)
            .min_by_key(|(at, src)| (*at, *src))
    }

    /// Pops the earliest entry due: a deadline due at or before `now`, a probe due at or before
    /// `probes_until` (rule 5: `now` plus the batch).
    fn pop_due(&mut self, now: Instant, probes_until: Instant) -> Option<(Instant, Due)> {
        let (at, src) = self.earliest(now, probes_until)?;
        match src {
            Source::Queue(i) => {
                let (_, key) = self.deadlines[i].1.pop_front()?;
                Some((at, Due::Deadline(key)))
            }
            Source::Held => {
                let Reverse((_, key)) = self.held.pop()?;
                Some((at, Due::HeldDeadline(key)))
            }
            Source::Probe => {
                let Reverse(t) = self.heap.pop()?;
                Some((
                    at,
                    Due::Probe {
                        slot: t.slot,
                        generation: t.generation,
                    },
                ))
            }
        }
    }

    /// Probe timers in the heap (tests: removed hosts' timers do not pile up).
    #[cfg(test)]
    fn timers(&self) -> usize {
        self.heap.len()
    }
}

impl Health {
    /// Starts the prober on `tasks`. Call once, after the proxy's sockets are bound. The task runs
    /// until `tasks` is cancelled (at shutdown).
    pub fn spawn_prober(&self, transport: Arc<dyn ProbeTransport>, tasks: &Tasks) {
        let health = self.clone();
        tasks.spawn(async move { health.run_prober(transport).await });
    }

    /// [`Health::spawn_prober`] on a thread of its own, `sos-prober` (what `sosrouter run`
    /// does): sending thousands of probes a second and expiring their deadlines then never
    /// queues on the runtime threads that carry the calls. The replies still come in on the
    /// proxy's receive loops, which hand them to [`Health`].
    pub fn spawn_prober_on_thread(&self, transport: Arc<dyn ProbeTransport>, tasks: &Tasks) {
        let health = self.clone();
        tasks.spawn_on_thread(
            "sos-prober",
            async move { health.run_prober(transport).await },
        );
    }

    async fn run_prober(self, transport: Arc<dyn ProbeTransport>) {
        let mut sched = Schedule::new();
        sched.sync(&self.inner.topology.load().probe_hosts, Instant::now());
        // The instant the prober meant to wake at: a deadline that waited for the batch is not late.
        let mut planned = Instant::now();
        loop {
            let now = Instant::now();
            while let Some((at, due)) = sched.pop_due(now, now + PROBE_BATCH) {
                match due {
                    Due::Deadline(key) => match deadline_grace(at.max(planned), now) {
                        Some(until) => sched.hold(until, key),
                        None => self.expire_probe(key),
                    },
                    Due::HeldDeadline(key) => self.expire_probe(key),
                    Due::Probe { slot, generation } => {
                        let Some(s) = sched.host(slot, generation) else {
                            continue; // removed by a reload
                        };
                        let host = Arc::clone(&s.target);
                        if let Some(sink) = self.inner.probe_lateness.get() {
                            sink(now.saturating_duration_since(at));
                        }
                        let key = self.send_probe(&host, &s.uri, &*transport, now);
                        sched.push_deadline(
                            Health::probe_timeout(&host),
                            now + Health::probe_timeout(&host),
                            key,
                        );
                        let mut next = at + next_delay(&host.health);
                        if next <= now {
                            next = now + next_delay(&host.health);
                        }
                        sched.push_probe(next, slot, generation);
                    }
                }
            }
            let mut wake = sched
                .next_wake(PROBE_BATCH)
                .map_or(now + Duration::from_secs(3600), |w| {
                    w.max(now + PROBE_BATCH)
                });
            if self.flush_systemic() {
                wake = wake.min(now + super::handle::SYSTEMIC_GAP);
            }
            planned = wake;
            tokio::select! {
                _ = sleep_until(wake) => {}
                _ = self.inner.changed.notified() => {
                    debug!("prober: target set changed");
                    planned = Instant::now();
                    sched.sync(&self.inner.topology.load().probe_hosts, planned);
                }
            }
        }
    }

    /// Sends one OPTIONS to `host` (Request-URI `uri`), registers it as pending; returns its key.
    fn send_probe(
        &self,
        host: &Arc<Target>,
        uri: &str,
        transport: &dyn ProbeTransport,
        now: Instant,
    ) -> ProbeKey {
        let key: ProbeKey = rand::random();
        let local = transport.local_addr(host.transport);
        let bytes = probe_request(host, uri, local, key);
        trace!(target = %host.id, key, "sending probe");
        self.add_pending(key, host, now);
        transport.send(host.transport, host.next_hop, bytes);
        key
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;
    use crate::health::tests::sip_target;

    fn with_timeout(id: &str, port: u16, timeout_ms: u64) -> Arc<Target> {
        let mut t = (*sip_target(id, port)).clone();
        t.health.probe_timeout = Duration::from_millis(timeout_ms);
        t.health.probe_jitter_percent = 0;
        Arc::new(t)
    }

    /// Pops everything due at `now`, in order.
    fn drain(s: &mut Schedule, now: Instant) -> Vec<(Instant, Due)> {
        std::iter::from_fn(|| s.pop_due(now, now)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_of_several_timeouts_come_due_in_time_order_with_the_probes() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        let a = with_timeout("a", 5071, 400);
        s.sync(&[a], t0);
        let ms = Duration::from_millis;
        // Probes sent at 0, 10 and 20 ms with timeouts 400, 100 and 400 ms.
        s.push_deadline(ms(400), t0 + ms(400), 1);
        s.push_deadline(ms(100), t0 + ms(110), 2);
        s.push_deadline(ms(400), t0 + ms(420), 3);
        assert_eq!(s.deadlines.len(), 2, "one queue per timeout value");
        assert_eq!(s.next_due(), Some(t0), "the first probe is due at once");
        let due = drain(&mut s, t0 + ms(1000));
        let order: Vec<(Duration, Due)> = due.iter().map(|(at, d)| (*at - t0, *d)).collect();
        assert_eq!(
            order,
            vec![
                (
                    ms(0),
                    Due::Probe {
                        slot: 0,
                        generation: 1
                    }
                ),
                (ms(110), Due::Deadline(2)),
                (ms(400), Due::Deadline(1)),
                (ms(420), Due::Deadline(3)),
            ]
        );
        assert_eq!(s.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_and_a_probe_at_the_same_instant_pop_deadline_first_and_nothing_early() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        s.sync(
            &[with_timeout("a", 5071, 400)],
            t0 + Duration::from_millis(400),
        );
        s.push_deadline(
            Duration::from_millis(400),
            t0 + Duration::from_millis(400),
            7,
        );
        let before = t0 + Duration::from_millis(399);
        assert!(s.pop_due(before, before).is_none());
        let due = drain(&mut s, t0 + Duration::from_millis(400));
        assert_eq!(due[0].1, Due::Deadline(7));
        assert!(matches!(due[1].1, Due::Probe { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_host_is_not_probed_and_its_slot_serves_a_new_host() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        let a = with_timeout("a", 5071, 400);
        let b = with_timeout("b", 5072, 400);
        s.sync(&[a.clone(), b.clone()], t0);
        let first = drain(&mut s, t0);
        assert_eq!(first.len(), 1, "a at once, b half an interval later");
        // Reload: a goes, c comes; c takes a's slot with a new generation.
        let c = with_timeout("c", 5073, 400);
        s.sync(&[b.clone(), c.clone()], t0);
        let Due::Probe { slot, generation } = first[0].1 else {
            panic!("a probe")
        };
        assert!(
            s.host(slot, generation).is_none(),
            "a's old timer finds nobody"
        );
        let live: Vec<String> = drain(&mut s, t0 + Duration::from_secs(1))
            .into_iter()
            .filter_map(|(_, d)| match d {
                Due::Probe { slot, generation } => {
                    s.host(slot, generation).map(|h| h.target.id.to_string())
                }
                Due::Deadline(_) | Due::HeldDeadline(_) => None,
            })
            .collect();
        assert_eq!(
            live,
            vec!["c", "b"],
            "c at once (one new host), b at its phase"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timers_of_removed_hosts_do_not_pile_up_over_many_reloads() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        for round in 0..50u16 {
            let hosts: Vec<_> = (0..100u16)
                .map(|i| with_timeout(&format!("r{round}-{i}"), 20000 + i, 400))
                .collect();
            s.sync(&hosts, t0);
        }
        assert_eq!(s.by_id.len(), 100);
        assert!(s.timers() <= 2 * 100 + 1024, "{}", s.timers());
        assert!(s.slots.len() <= 200, "slots reused: {}", s.slots.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_the_prober_reaches_late_is_held_back_once_as_long_again() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(deadline_grace(t0, t0 + ms(5)), None, "on time: fail now");
        assert_eq!(deadline_grace(t0, t0 + ms(80)), Some(t0 + ms(160)));
        assert_eq!(
            deadline_grace(t0, t0 + ms(3000)),
            Some(t0 + ms(3500)),
            "at most 500 ms more"
        );
        // Held deadlines come due in their own time order, before a probe of the same instant.
        let mut s = Schedule::new();
        s.sync(&[with_timeout("a", 5071, 400)], t0 + ms(160));
        s.hold(t0 + ms(160), 9);
        s.hold(t0 + ms(100), 8);
        let due: Vec<Due> = drain(&mut s, t0 + ms(160))
            .into_iter()
            .map(|d| d.1)
            .collect();
        assert_eq!(
            due,
            vec![
                Due::HeldDeadline(8),
                Due::HeldDeadline(9),
                Due::Probe {
                    slot: 0,
                    generation: 1
                }
            ]
        );
    }

    /// The prober itself: a deadline it reaches 1 s late (its thread blocked) is held back, so a
    /// reply that was waiting in the socket and is read just after still counts as an answer.
    #[tokio::test(start_paused = true)]
    async fn a_reply_read_after_a_prober_stall_still_counts() {
        use crate::health::State;
        let a = with_timeout("a", 5071, 400);
        let h = Health::from_targets(std::slice::from_ref(&a));
        let sent: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        struct Rec(Arc<std::sync::Mutex<Vec<String>>>);
        impl ProbeTransport for Rec {
            fn local_addr(&self, _: crate::config::Proto) -> std::net::SocketAddr {
                "127.0.0.1:5060".parse().unwrap()
            }
            fn send(&self, _: crate::config::Proto, _: std::net::SocketAddr, b: bytes::Bytes) {
                self.0
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&b).into_owned());
            }
        }
        h.spawn_prober(Arc::new(Rec(sent.clone())), &crate::tasks::Tasks::new());
        tokio::time::sleep(Duration::from_millis(1)).await; // the first probe is out
        let text = sent.lock().unwrap()[0].clone();
        let start = text.find("branch=").unwrap() + 7;
        let branch = text[start..start + PROBE_BRANCH_LEN].to_string();
        // The runtime stalls for 1 s (the clock jumps without the prober running), then the
        // receive side reads the reply before the prober's held-back deadline.
        tokio::time::advance(Duration::from_millis(1000)).await;
        for _ in 0..8 {
            tokio::task::yield_now().await; // the prober runs, 600 ms late for the deadline
        }
        h.on_probe_response(branch.as_bytes(), 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let st = h.status("a").unwrap();
        assert_eq!(st.counters.probes_ok, 1, "{st:?}");
        assert_eq!(st.counters.probes_failed, 0, "{st:?}");
        assert_eq!(st.state, State::Up);
    }

    /// Length of a probe branch: the prefix and 16 hex digits.
    const PROBE_BRANCH_LEN: usize = crate::health::PROBE_BRANCH_PREFIX.len() + 16;

    #[test]
    fn probe_keys_come_only_from_our_branches() {
        use crate::health::probe::probe_key;
        assert_eq!(probe_key("z9hG4bK-sosprobe-00000000000000ff"), Some(255));
        assert_eq!(probe_key("z9hG4bK-sosprobe-unknown"), None);
        assert_eq!(probe_key("z9hG4bK-sosprobe-+0000000000000ff"), None);
        assert_eq!(probe_key("z9hG4bK-sosprobe-00000000000000ff0"), None);
        assert_eq!(probe_key("z9hG4bK-other-00000000000000ff"), None);
    }
}
