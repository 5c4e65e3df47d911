//! The shared [`Health`] handle: one [`Machine`] per target id in a `DashMap`, the operator's
//! enable switch, and the reload (re-keying) logic.
//!
//! Outcomes of real calls reach the machines over a channel to one applier task
//! ([`Health::start_applier`], started by the wiring), so the call path never takes a health lock:
//! `report` is one unbounded-channel send. Readiness is read straight from the map (a shard read
//! lock held for one lookup). Without a running applier (pure unit tests, no runtime) `report`
//! applies in place. Probe results are applied by the prober task itself.

use super::domains::{Domains, SystemicReport};
use super::probe::Pending;
use super::state::{
    Cause, Counters, Event, Machine, Reason, State, SuspectWhy, Thresholds, Transition,
};
use super::{Observation, Outcome, TestWhy};
use crate::config::SuspicionSpec;
use crate::routing::{Readiness, Rules, Target, TargetId, TargetKind};
use crate::tasks::Tasks;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use serde::Serialize;
use std::collections::VecDeque;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tracing::{info, trace, warn};

/// Shared health handle. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Health {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    entries: DashMap<TargetId, Entry>,
    /// Which targets exist, in rules order, and who shares whose probes. Swapped whole on reload.
    pub(super) topology: ArcSwap<Topology>,
    /// Probes sent and not yet answered, by Via branch.
    pub(super) pending: DashMap<super::probe::ProbeKey, Pending, super::probe::KeyHash>,
    /// Keys of the pending probes by destination, so a transport error costs per probe.
    pub(super) pending_to: DashMap<std::net::SocketAddr, Vec<super::probe::ProbeKey>>,
    /// Wakes the prober when the target set changed (reload).
    pub(super) changed: Notify,
    /// Told of every transition and operator switch (alert events). Set once by the wiring.
    sink: OnceLock<ChangeSink>,
    /// Call-path observations toward the applier task, once it runs.
    outcomes: OnceLock<tokio::sync::mpsc::UnboundedSender<(Box<str>, Observation)>>,
    /// Asks for a test call (the wiring connects the test-call module). Never blocks.
    test_calls: OnceLock<TestCallSink>,
    /// How late probes go out (set once by the wiring).
    pub(super) probe_lateness: OnceLock<LatenessSink>,
    /// A TLS target's connection figures, for `/status` (set once by the wiring).
    tls: OnceLock<TlsSource>,
    /// When sosrouter itself was last behind reading its sockets (set once by the wiring).
    own_backlog: OnceLock<BacklogSource>,
    /// Timeouts not counted against their target because we were behind then.
    held: std::sync::atomic::AtomicU64,
    /// When the last "held" warning was logged (one a [`HELD_WARN_GAP`] at most).
    held_warned: Mutex<Option<Instant>>,
    /// Whether test calls decide recovery (rule 5 of `state`).
    test_calls_on: AtomicBool,
    /// `[suspicion]` of the rules in force.
    pub(super) suspicion: ArcSwap<SuspicionSpec>,
    /// Failure domains and the systemic alarm; touched by the applier and the prober only.
    domains: Mutex<Domains>,
    /// A transition happened since the systemic alarm was last checked (large target sets only;
    /// see [`Health::systemic_changed`]), and when it was last checked.
    systemic_dirty: AtomicBool,
    systemic_last: Mutex<Option<Instant>>,
}

/// Above this many targets the systemic check, which reads every target's state, runs at most
/// once per [`SYSTEMIC_GAP`] instead of after every transition: 6 000 primaries going down at
/// start-up cost 6 000 x 18 000 state reads, seconds of the prober's time, and made every probe
/// late. Smaller sets keep the check after each transition.
pub(super) const SYSTEMIC_EVERY_TRANSITION_UP_TO: usize = 1000;
/// The shortest time between two systemic checks of a large target set.
pub(super) const SYSTEMIC_GAP: Duration = Duration::from_millis(100);

/// The last instant sosrouter itself was behind reading its sockets, if ever (the transport's
/// [`crate::transport::Backlog`], through the wiring: health never imports transport).
pub type BacklogSource = Arc<dyn Fn() -> Option<Instant> + Send + Sync>;

/// A call's attempt timeout or overdue verdict is held when we were behind this recently: the
/// attempt ran within it (attempt timers are seconds), so its missing reply may be in our own
/// receive buffer or dropped there.
pub(super) const CALL_BACKLOG_LOOKBACK: Duration = Duration::from_secs(5);
/// At most one warning per this long about timeouts held for our own backlog.
const HELD_WARN_GAP: Duration = Duration::from_secs(10);

/// Receives how late each probe went out against its schedule (the wiring feeds a histogram).
pub type LatenessSink = Arc<dyn Fn(Duration) + Send + Sync>;

/// A target's TLS connection figures by target id (None: not a TLS target). The wiring reads them
/// from the transport, which `health` does not import. Must be quick and never block.
pub type TlsSource = Arc<dyn Fn(&str) -> Option<TlsStatus> + Send + Sync>;

/// TLS connections toward one target, as `/status` and `/metrics` show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsStatus {
    /// Connections open now.
    pub connections: u64,
    /// Handshakes completed since start.
    pub handshakes: u64,
    /// Handshakes that failed (certificate refused, name mismatch, expired, timeout, reset).
    pub handshake_failures: u64,
    /// Why the last one failed; null once a handshake completes.
    pub last_failure: Option<String>,
}

/// Receives test-call requests: (target id, why). Must be quick and never block.
pub type TestCallSink = Arc<dyn Fn(&str, TestWhy) + Send + Sync>;

/// A change health announces, after its map guard is dropped. Health does not know who listens
/// (the wiring turns these into alert events), so it imports nothing of them.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Health {
        target: &'a str,
        transition: Transition,
    },
    Operator {
        target: &'a str,
        enabled: bool,
    },
    /// A shared failure was seen (a failure domain turned suspect or failing, or too large a share
    /// of all targets is down or suspect), or it healed (`report.active == false`).
    Systemic(&'a SystemicReport),
}

/// Receives [`Change`]s. Called on the thread that caused the change (a call task, the prober or
/// the admin endpoint), so it must be quick and never block.
pub type ChangeSink = Arc<dyn Fn(Change<'_>) + Send + Sync>;

struct Entry {
    machine: Machine,
    thresholds: Thresholds,
    /// Operator switch, independent of health. Kept across reloads.
    enabled: bool,
    /// Wall-clock time the current state was entered, for the admin endpoint.
    since_wall: SystemTime,
    /// Recent times to first provisional (µs), newest last, and the overdue bound they give.
    latency: VecDeque<u32>,
    overdue_after: Option<Duration>,
    /// Answered calls: the last few (true = short) and the longer-run totals.
    recent_calls: VecDeque<bool>,
    answered: u64,
    short: u64,
    /// A real call holds the half-open trial slot (rule 5 of `state`).
    trial: bool,
    /// When a recovery test call was last asked for.
    last_test: Option<Instant>,
}

impl Entry {
    fn new(target: &Target, now: Instant) -> Entry {
        Entry {
            machine: Machine::new(now),
            thresholds: Thresholds::from(&target.health),
            enabled: true,
            since_wall: SystemTime::now(),
            latency: VecDeque::new(),
            overdue_after: None,
            recent_calls: VecDeque::new(),
            answered: 0,
            short: 0,
            trial: false,
            last_test: None,
        }
    }

    /// Adds a time to first provisional and recomputes the overdue bound: `factor` x the 90th
    /// percentile of the last `samples`, never under `floor`.
    fn sample_latency(&mut self, d: Duration, s: &SuspicionSpec) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        self.latency.push_back(us);
        while self.latency.len() > s.latency_samples.max(1) as usize {
            self.latency.pop_front();
        }
        self.overdue_after = overdue_bound(&self.latency, s);
    }

    /// Records an answered call's end; true when the short-call signal fires (rule 2 of `state`).
    fn call_ended(&mut self, short: bool, s: &SuspicionSpec) -> bool {
        let window = s.short_call_window.max(1) as usize;
        let in_window_before = self.recent_calls.iter().filter(|&&b| b).count() as u64;
        let older_answered = self.answered.saturating_sub(self.recent_calls.len() as u64);
        let older_short = self.short.saturating_sub(in_window_before);
        self.answered += 1;
        self.short += u64::from(short);
        self.recent_calls.push_back(short);
        while self.recent_calls.len() > window {
            self.recent_calls.pop_front();
        }
        let shorts = self.recent_calls.iter().filter(|&&b| b).count() as u64;
        // Baseline: the share of short calls before this window. None known (a fresh target, a
        // load test that hangs up at once): no rise can be told, so no signal.
        let baseline_ok = older_answered > 0
            && older_short * 100 < s.short_call_baseline_percent * older_answered;
        short && shorts >= s.short_call_trigger && baseline_ok
    }
}

/// The topology of a rules file, with its routes (for the systemic report).
fn topology_of(rules: &Rules) -> Topology {
    let mut topo = Topology::new(&rules.targets);
    topo.routes = rules
        .routes
        .iter()
        .chain(std::iter::once(&rules.default_route))
        .map(|r| (r.id.clone(), r.chain.clone()))
        .collect();
    topo
}

/// The overdue bound of a latency window (None when the window is empty or the factor is 0).
pub(super) fn overdue_bound(window: &VecDeque<u32>, s: &SuspicionSpec) -> Option<Duration> {
    if window.is_empty() || s.overdue_factor == 0 {
        return None;
    }
    let mut v: Vec<u32> = window.iter().copied().collect();
    v.sort_unstable();
    let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
    let floor = Duration::from_millis(s.overdue_floor_ms);
    let usual = Duration::from_micros(u64::from(p90)).max(floor);
    Some(usual * u32::try_from(s.overdue_factor).unwrap_or(u32::MAX))
}

/// The target set as the prober and probe results need it.
pub(crate) struct Topology {
    pub(super) order: Vec<TargetId>,
    /// SIP targets to send OPTIONS to: those with `probe = true`, and every gateway that a probed
    /// Tel target uses (a Tel target is reached through its gateway, so the gateway's probe is
    /// the Tel target's probe: one OPTIONS per gateway per interval, shared).
    pub(super) probe_hosts: Vec<Arc<Target>>,
    /// gateway id -> probed Tel targets that share its probe results.
    pub(super) dependents: HashMap<TargetId, Vec<TargetId>>,
    /// Every route's id and chain, for the systemic report ("routes now served by ...").
    pub(super) routes: Vec<(Arc<str>, Vec<TargetId>)>,
    /// Failure-domain tags of each target.
    pub(super) domains_of: HashMap<TargetId, Vec<String>>,
}

impl Topology {
    fn new(targets: &[Arc<Target>]) -> Topology {
        let mut dependents: HashMap<TargetId, Vec<TargetId>> = HashMap::new();
        for t in targets {
            if let TargetKind::Tel { gateway, .. } = &t.kind
                && t.health.probe
            {
                dependents
                    .entry(gateway.clone())
                    .or_default()
                    .push(t.id.clone());
            }
        }
        let probe_hosts = targets
            .iter()
            .filter(|t| t.kind == TargetKind::Sip)
            .filter(|t| t.health.probe || dependents.contains_key(&t.id))
            .cloned()
            .collect();
        Topology {
            order: targets.iter().map(|t| t.id.clone()).collect(),
            probe_hosts,
            dependents,
            routes: Vec::new(),
            domains_of: targets
                .iter()
                .map(|t| (t.id.clone(), t.failure_domain.clone()))
                .collect(),
        }
    }
}

/// One target's health as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub id: String,
    pub state: State,
    pub enabled: bool,
    /// Readiness as routing sees it: "ready", "not_ready" or "disabled".
    pub readiness: &'static str,
    /// When the current state was entered, Unix time in milliseconds.
    pub since_unix_ms: u64,
    pub last_reason: String,
    pub counters: Counters,
    /// TLS targets only: their connections and handshakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
}

/// The clock of the health module: tokio's, so paused-time tests drive it.
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Health {
    pub fn new(rules: &Rules) -> Health {
        let h = Health::with_topology(&rules.targets, topology_of(rules));
        h.inner.suspicion.store(rules.suspicion.clone());
        h.rekey_entries(&rules.targets); // thresholds that come from [suspicion]
        h
    }

    /// Same as [`Health::new`] from the target list alone (tests build targets, not rules).
    pub fn from_targets(targets: &[Arc<Target>]) -> Health {
        Health::with_topology(targets, Topology::new(targets))
    }

    fn with_topology(targets: &[Arc<Target>], topology: Topology) -> Health {
        let now = now();
        let entries = DashMap::new();
        for t in targets {
            entries.insert(t.id.clone(), Entry::new(t, now));
        }
        let inner = Inner {
            entries,
            topology: ArcSwap::from_pointee(topology),
            pending: DashMap::with_hasher(super::probe::KeyHash::default()),
            pending_to: DashMap::new(),
            changed: Notify::new(),
            sink: OnceLock::new(),
            outcomes: OnceLock::new(),
            test_calls: OnceLock::new(),
            probe_lateness: OnceLock::new(),
            tls: OnceLock::new(),
            own_backlog: OnceLock::new(),
            held: std::sync::atomic::AtomicU64::new(0),
            held_warned: Mutex::new(None),
            test_calls_on: AtomicBool::new(false),
            suspicion: ArcSwap::from_pointee(SuspicionSpec::default()),
            domains: Mutex::new(Domains::default()),
            systemic_dirty: AtomicBool::new(false),
            systemic_last: Mutex::new(None),
        };
        Health {
            inner: Arc::new(inner),
        }
    }

    /// Readiness of a target by id. Never blocks. An id health does not know yet (a reload that
    /// routing saw first) is in the start-up state, hence `Ready`.
    pub fn readiness(&self, id: &str) -> Readiness {
        match self.inner.entries.get(id) {
            Some(e) if !e.enabled => Readiness::Disabled,
            Some(e) => match e.machine.state() {
                State::Up => Readiness::Ready,
                State::Suspect => Readiness::Suspect,
                State::Down | State::Recovering => Readiness::NotReady,
            },
            None => Readiness::Ready,
        }
    }

    /// Readiness for routing one call. A half-open recovering target (rule 5 of `state`) is Ready
    /// for exactly one call at a time: that call takes the slot and its id is pushed to `trials`;
    /// the call must give it back with [`Observation::TrialOver`] when it ends.
    pub fn readiness_for_call(&self, id: &str, trials: &mut Vec<TargetId>) -> Readiness {
        let r = self.readiness(id);
        if r != Readiness::NotReady {
            return r;
        }
        let Some(mut e) = self.inner.entries.get_mut(id) else {
            return r;
        };
        let th = e.thresholds;
        if e.machine.half_open(&th) && !e.trial {
            e.trial = true;
            trials.push(id.into());
            return Readiness::Ready;
        }
        r
    }

    /// How long an attempt to `id` may go without a provisional other than 100 before the target
    /// becomes suspect (None: no estimate yet, or overdue detection off).
    pub fn overdue_after(&self, id: &str) -> Option<Duration> {
        self.inner.entries.get(id).and_then(|e| e.overdue_after)
    }

    /// Reports an attempt's outcome. Never blocks and takes no lock once the applier runs (see the
    /// module doc).
    pub fn report(&self, id: &str, outcome: Outcome) {
        self.observe(id, Observation::Attempt(outcome));
    }

    /// Tells health what the call path saw. Never blocks, takes no lock once the applier runs
    /// (but a short one to rate-limit the warning when a verdict is held). An attempt that timed out or went overdue while sosrouter itself was behind reading its
    /// sockets is not counted against the target (the call still failed over).
    pub fn observe(&self, id: &str, obs: Observation) {
        if let Observation::Attempt(o @ (Outcome::AttemptTimeout | Outcome::Overdue)) = obs {
            let now = now();
            let since = now.checked_sub(CALL_BACKLOG_LOOKBACK).unwrap_or(now);
            if self.held_for_own_backlog(
                since,
                id,
                if o == Outcome::Overdue {
                    "overdue"
                } else {
                    "attempt timeout"
                },
            ) {
                return;
            }
        }
        match self.inner.outcomes.get() {
            Some(tx) => {
                let _ = tx.send((id.into(), obs));
            }
            None => self.apply_observation(id, obs),
        }
    }

    /// Where health learns that sosrouter itself is behind reading its sockets (the wiring sets it
    /// once, to the transport's backlog).
    pub fn set_own_backlog(&self, source: BacklogSource) -> bool {
        self.inner.own_backlog.set(source).is_ok()
    }

    /// Probe and call timeouts not counted against their targets because sosrouter was behind.
    pub fn verdicts_held(&self) -> u64 {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// True (and counted, and warned of at most once per [`HELD_WARN_GAP`]) when we were behind
    /// reading our own sockets at some instant since `since`: a timeout of something sent since
    /// then may be our own backlog, not the target's silence.
    pub(super) fn held_for_own_backlog(&self, since: Instant, id: &str, what: &str) -> bool {
        let behind = self
            .inner
            .own_backlog
            .get()
            .and_then(|f| f())
            .is_some_and(|at| at >= since);
        if !behind {
            return false;
        }
        let n = self.inner.held.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now();
        let mut last = self
            .inner
            .held_warned
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| now.saturating_duration_since(t) >= HELD_WARN_GAP) {
            *last = Some(now);
            warn!(
                target_id = %id, what, held_so_far = n,
                "sosrouter is behind reading its own sockets: timeouts are not counted against targets meanwhile"
            );
        }
        true
    }

    /// Where each probe's lateness goes (the wiring sets it once: `sosrouter_probe_lateness_seconds`).
    pub fn set_probe_lateness(&self, sink: LatenessSink) -> bool {
        self.inner.probe_lateness.set(sink).is_ok()
    }

    /// Where `/status` reads TLS targets' connection figures (the wiring sets it once).
    pub fn set_tls_source(&self, source: TlsSource) -> bool {
        self.inner.tls.set(source).is_ok()
    }

    /// Where test-call requests go (the wiring sets it once); `on`: test calls decide recovery.
    pub fn set_test_calls(&self, sink: TestCallSink, on: bool) -> bool {
        self.test_calls_decide(on);
        self.inner.test_calls.set(sink).is_ok()
    }

    /// Whether test calls decide recovery (rule 5 of `state`), after a reload of `[test_calls]`.
    pub fn test_calls_decide(&self, on: bool) {
        self.inner.test_calls_on.store(on, Ordering::Relaxed);
        for mut e in self.inner.entries.iter_mut() {
            e.thresholds.test_calls = on;
        }
    }

    fn request_test(&self, id: &str, why: TestWhy) {
        if let Some(sink) = self.inner.test_calls.get() {
            sink(id, why);
        }
    }

    /// Another node reports `id` down or suspect (cluster health hints). It only raises doubt
    /// here: an up target turns suspect and this node's own test call is asked for; a target in any
    /// other state is left as it is, and nothing here ever takes a target down (the paths from two
    /// sites differ). True when the target turned suspect. Called by the cluster task, never by a call.
    pub fn peer_suspect(&self, id: &str) -> bool {
        let up = self
            .inner
            .entries
            .get(id)
            .is_some_and(|e| e.machine.state() == State::Up);
        if !up {
            return false;
        }
        // No reason of its own in `state` (kept untouched): a peer's report is outside evidence,
        // as a failure domain's is, so it enters suspect the same way and asks for the test call.
        let turned = self
            .apply(id, Event::Suspect(SuspectWhy::Domain))
            .is_some_and(|t| t.to == State::Suspect);
        if turned {
            self.request_test(id, TestWhy::Suspect(SuspectWhy::Domain));
        }
        turned
    }

    /// Every observation lands here, on the applier task (or in place without one).
    pub(super) fn apply_observation(&self, id: &str, obs: Observation) {
        let s = self.inner.suspicion.load();
        match obs {
            Observation::Attempt(o) => {
                // Domain evidence first: when this failure makes a shared element suspect, the
                // domain's alarm is raised before the share-of-targets check sees the same targets.
                if o.is_failure() || o == Outcome::Overdue {
                    self.domain_evidence(id, &o.to_string());
                }
                self.apply(id, Event::Call(o));
            }
            Observation::FirstProvisional(d) => {
                if let Some(mut e) = self.inner.entries.get_mut(id) {
                    e.sample_latency(d, &s);
                }
            }
            Observation::CallEnded(d) => {
                let short = d < Duration::from_millis(s.short_call_ms);
                let fired = self
                    .inner
                    .entries
                    .get_mut(id)
                    .is_some_and(|mut e| e.call_ended(short, &s));
                if fired {
                    // The transition to suspect asks for the test call (with media).
                    self.apply(id, Event::Suspect(SuspectWhy::ShortCalls));
                    self.domain_evidence(id, "short calls");
                }
            }
            Observation::TrialOver => {
                if let Some(mut e) = self.inner.entries.get_mut(id) {
                    e.trial = false;
                }
            }
            Observation::TestCall { result, placed_ago } => {
                let placed = now().checked_sub(placed_ago).unwrap_or_else(now);
                let judged = self
                    .inner
                    .entries
                    .get(id)
                    .map_or(Some(result), |e| e.machine.judge_test_call(result, placed));
                let Some(r) = judged else {
                    info!(target = %id, "test call placed while the target was unreachable failed after it came back: dropped");
                    return;
                };
                self.apply(id, Event::TestCall(r));
                if matches!(
                    r,
                    super::TestResult::CallPathFailed | super::TestResult::MediaFailed
                ) {
                    self.domain_evidence(id, &format!("test call: {r:?}"));
                }
            }
        }
    }

    /// A failure of `id` counts toward each of its failure domains; a domain that reaches
    /// `domain_suspect_after` distinct targets in its window turns suspect: every target of it
    /// becomes suspect and gets a test call. Then the systemic alarm is re-checked.
    fn domain_evidence(&self, id: &str, what: &str) {
        let topo = self.inner.topology.load();
        let s = self.inner.suspicion.load();
        let Some(tags) = topo.domains_of.get(id) else {
            return;
        };
        let turned = {
            let mut d = self.inner.domains.lock().unwrap_or_else(|e| e.into_inner());
            d.evidence(tags, id, what, now(), SystemTime::now(), &s)
        };
        for domain in turned {
            warn!(domain = %domain, "failure domain suspect: every target in it gets a test call");
            let members: Vec<TargetId> = topo
                .domains_of
                .iter()
                .filter(|(_, t)| t.contains(&domain))
                .map(|(id, _)| id.clone())
                .collect();
            for m in members {
                self.apply(&m, Event::Suspect(SuspectWhy::Domain));
                self.request_test(&m, TestWhy::Suspect(SuspectWhy::Domain));
            }
        }
        self.systemic_changed();
    }

    /// Something the systemic alarm reads changed: check it now (up to
    /// [`SYSTEMIC_EVERY_TRANSITION_UP_TO`] targets), or at most once per [`SYSTEMIC_GAP`]; a check
    /// left pending runs at the prober's next wake-up ([`Health::flush_systemic`]).
    fn systemic_changed(&self) {
        if self.inner.topology.load().order.len() <= SYSTEMIC_EVERY_TRANSITION_UP_TO {
            self.check_systemic();
            return;
        }
        self.inner.systemic_dirty.store(true, Ordering::Release);
        self.flush_systemic();
    }

    /// Runs a pending systemic check when the last one is at least [`SYSTEMIC_GAP`] old. Returns
    /// true when a check is still pending (the prober then wakes again within the gap).
    pub(super) fn flush_systemic(&self) -> bool {
        if !self.inner.systemic_dirty.load(Ordering::Acquire) {
            return false;
        }
        let now = now();
        {
            let mut last = self
                .inner
                .systemic_last
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|l| now.saturating_duration_since(l) < SYSTEMIC_GAP) {
                return true;
            }
            *last = Some(now);
        }
        self.inner.systemic_dirty.store(false, Ordering::Release);
        self.check_systemic();
        false
    }

    /// Raises or clears the systemic alarm from the current states (see `domains`).
    fn check_systemic(&self) {
        let topo = self.inner.topology.load();
        let s = self.inner.suspicion.load();
        let states: HashMap<TargetId, State> = topo
            .order
            .iter()
            .filter_map(|id| Some((id.clone(), self.inner.entries.get(id)?.machine.state())))
            .collect();
        let reports = {
            let mut d = self.inner.domains.lock().unwrap_or_else(|e| e.into_inner());
            d.systemic(&topo, &states, &s, SystemTime::now())
        };
        for r in &reports {
            if r.active {
                tracing::error!(domain = ?r.domain, sentence = %r.sentence, "SYSTEMIC failure");
            } else {
                warn!(domain = ?r.domain, sentence = %r.sentence, "systemic failure cleared");
            }
            self.announce(Change::Systemic(r));
        }
    }

    /// Domain and systemic state for `/status`.
    pub fn systemic_status(&self) -> serde_json::Value {
        let d = self.inner.domains.lock().unwrap_or_else(|e| e.into_inner());
        d.status()
    }

    /// Starts the one task that applies call outcomes (call once, inside a runtime). It holds only a
    /// weak reference: it ends when the last `Health` handle is dropped.
    pub fn start_applier(&self, tasks: &Tasks) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Box<str>, Observation)>();
        if self.inner.outcomes.set(tx).is_err() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tasks.spawn(async move {
            while let Some((id, obs)) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                Health { inner }.apply_observation(&id, obs);
            }
        });
    }

    /// The operator switch. Returns false when the id is unknown.
    pub fn set_enabled(&self, id: &str, enabled: bool) -> bool {
        let changed = match self.inner.entries.get_mut(id) {
            None => return false,
            Some(mut e) => std::mem::replace(&mut e.enabled, enabled) != enabled,
        };
        if changed {
            info!(target = %id, enabled, "operator switch changed");
            self.announce(Change::Operator {
                target: id,
                enabled,
            });
        }
        true
    }

    /// Sets who is told of transitions and operator switches. Only the first call takes effect
    /// (returns false after that).
    pub fn set_change_sink(&self, sink: ChangeSink) -> bool {
        self.inner.sink.set(sink).is_ok()
    }

    fn announce(&self, c: Change<'_>) {
        if let Some(sink) = self.inner.sink.get() {
            sink(c);
        }
    }

    /// Re-keys for new rules: every id still present keeps its state, counters and switch (with
    /// the new thresholds); removed ids are dropped; new ids start in the start-up state.
    pub fn rekey(&self, rules: &Rules) {
        self.inner.suspicion.store(rules.suspicion.clone());
        self.rekey_entries(&rules.targets);
        self.inner.topology.store(Arc::new(topology_of(rules)));
        self.inner.changed.notify_one();
    }

    /// [`Health::rekey`] from the target list alone.
    pub fn rekey_targets(&self, targets: &[Arc<Target>]) {
        self.rekey_entries(targets);
        self.inner.topology.store(Arc::new(Topology::new(targets)));
        self.inner.changed.notify_one();
    }

    fn rekey_entries(&self, targets: &[Arc<Target>]) {
        let keep: HashSet<&str> = targets.iter().map(|t| &*t.id).collect();
        self.inner.entries.retain(|id, _| keep.contains(&**id));
        let now = now();
        let on = self.inner.test_calls_on.load(Ordering::Relaxed);
        let hold = Duration::from_millis(self.inner.suspicion.load().suspect_hold_ms);
        for t in targets {
            let mut e = self
                .inner
                .entries
                .entry(t.id.clone())
                .or_insert_with(|| Entry::new(t, now));
            e.thresholds = Thresholds::from(&t.health);
            e.thresholds.test_calls = on;
            e.thresholds.suspect_hold = hold;
        }
    }

    /// Every target's status, in rules order.
    pub fn snapshot(&self) -> Vec<TargetStatus> {
        let order = self.inner.topology.load().order.clone();
        order.iter().filter_map(|id| self.status(id)).collect()
    }

    /// One target's status, or None for an unknown id.
    pub fn status(&self, id: &str) -> Option<TargetStatus> {
        let e = self.inner.entries.get(id)?;
        let readiness = if !e.enabled {
            "disabled"
        } else {
            match e.machine.state() {
                State::Up => "ready",
                State::Suspect => "suspect",
                State::Recovering if e.machine.half_open(&e.thresholds) => "half_open",
                _ => "not_ready",
            }
        };
        Some(TargetStatus {
            id: id.to_string(),
            state: e.machine.state(),
            enabled: e.enabled,
            readiness,
            since_unix_ms: e
                .since_wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            last_reason: e.machine.last_reason().to_string(),
            counters: e.machine.counters(),
            tls: self.inner.tls.get().and_then(|f| f(id)),
        })
    }

    /// Feeds one event to one target; logs the transition once, after the guard is dropped.
    pub(super) fn apply(&self, id: &str, ev: Event) -> Option<Transition> {
        let transition = {
            let Some(mut e) = self.inner.entries.get_mut(id) else {
                trace!(target = %id, ?ev, "event for unknown target ignored");
                return None;
            };
            let th = e.thresholds;
            let now = now();
            let t = e.machine.on_event(ev, &th, now);
            if t.is_some() {
                e.since_wall = SystemTime::now();
            }
            // Down on call evidence, or recovering while test calls decide: ask for a test call,
            // at most once per `recovery_test_interval_ms` (probe results call this every interval).
            let wants_test = th.test_calls
                && (matches!(e.machine.state(), State::Recovering)
                    || e.machine.state() == State::Down && e.machine.cause() == Cause::Calls);
            let every =
                Duration::from_millis(self.inner.suspicion.load().recovery_test_interval_ms);
            let due = wants_test
                && e.last_test
                    .is_none_or(|l| now.saturating_duration_since(l) >= every);
            if due {
                e.last_test = Some(now);
            }
            (t, due)
        };
        let (transition, test_due) = transition;
        if let Some(t) = &transition {
            log_transition(id, t);
            self.announce(Change::Health {
                target: id,
                transition: *t,
            });
            if let (State::Suspect, Reason::Suspected(why)) = (t.to, t.reason)
                && why != SuspectWhy::Domain
            {
                self.request_test(id, TestWhy::Suspect(why));
            }
        }
        if test_due {
            self.request_test(id, TestWhy::Recovery);
        }
        if transition.is_some() {
            self.systemic_changed();
        }
        transition
    }

    /// Applies a probe result of `host` to the host (when it is probed itself) and to every Tel
    /// target sharing its probes.
    pub(super) fn apply_probe_result(&self, host: &str, ev: Event) {
        self.for_probe_group(host, |id| {
            self.apply(id, ev);
        });
    }

    /// Counts a probe sent on behalf of `host` and its dependents.
    pub(super) fn count_probe_sent(&self, host: &str) {
        self.for_probe_group(host, |id| {
            if let Some(mut e) = self.inner.entries.get_mut(id) {
                e.machine.probe_sent();
            }
        });
    }

    fn for_probe_group(&self, host: &str, mut f: impl FnMut(&str)) {
        let host_probed = self
            .inner
            .entries
            .get(host)
            .is_some_and(|e| e.thresholds.probed);
        if host_probed {
            f(host);
        }
        let topo = self.inner.topology.load();
        for id in topo.dependents.get(host).into_iter().flatten() {
            f(id);
        }
    }
}

fn log_transition(id: &str, t: &Transition) {
    let reason: &Reason = &t.reason;
    if matches!(t.to, State::Down | State::Suspect) {
        warn!(target = %id, old = %t.from, new = %t.to, reason = %reason, "target health changed");
    } else {
        info!(target = %id, old = %t.from, new = %t.to, reason = %reason, "target health changed");
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("targets", &self.inner.entries.len())
            .field("pending_probes", &self.inner.pending.len())
            .finish()
    }
}

#[cfg(test)]
mod short_call_tests {
    use super::*;

    /// Issue #11, item 5: 3 short calls among the last 5 answered fire the signal only while the
    /// target's earlier share of short calls is under the baseline (20 %).
    #[test]
    fn a_rise_of_short_calls_over_the_baseline_fires_once_it_is_clear() {
        let s = SuspicionSpec::default();
        let t = Target::for_test("p", 5071);
        let mut e = Entry::new(&t, Instant::now());
        for _ in 0..20 {
            assert!(!e.call_ended(false, &s), "long calls never fire");
        }
        assert!(!e.call_ended(true, &s));
        assert!(!e.call_ended(true, &s));
        assert!(
            e.call_ended(true, &s),
            "3 of the last 5 short, baseline 0 %"
        );
        // A target whose calls are always short (its normal, or a load test's) never fires, from
        // its very first calls on.
        let mut e = Entry::new(&t, Instant::now());
        for i in 0..20 {
            assert!(
                !e.call_ended(true, &s),
                "short call {i} of a fresh target fired"
            );
        }
        assert!(!e.call_ended(true, &s), "baseline 100 % short: no rise");
    }

    #[test]
    fn the_overdue_bound_is_k_times_the_p90_never_under_the_floor() {
        let s = SuspicionSpec::default();
        let fast: VecDeque<u32> = (0..32).map(|_| 2_000).collect(); // 2 ms
        assert_eq!(
            overdue_bound(&fast, &s),
            Some(Duration::from_millis(4 * 40))
        );
        let mut slow: VecDeque<u32> = (0..32).map(|i| 100_000 + i * 1_000).collect(); // 100-131 ms
        assert_eq!(
            overdue_bound(&slow, &s),
            Some(Duration::from_millis(4 * 128))
        );
        slow.clear();
        assert_eq!(
            overdue_bound(&slow, &s),
            None,
            "no estimate yet: never overdue"
        );
    }
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    /// Cluster hints: a peer's "down" or "suspect" makes an up target suspect here and asks for
    /// this node's own test call, once; repeating it never takes the target down.
    #[test]
    fn a_peers_report_makes_an_up_target_suspect_and_tested_never_down() {
        let h = Health::from_targets(&[Arc::new(Target::for_test("p", 5071))]);
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let a = asked.clone();
        h.set_test_calls(
            Arc::new(move |id: &str, _| a.lock().unwrap().push(id.to_string())),
            true,
        );
        assert!(h.peer_suspect("p"));
        assert_eq!(h.status("p").unwrap().state, State::Suspect);
        assert_eq!(*asked.lock().unwrap(), vec!["p".to_string()]);
        for _ in 0..10 {
            assert!(!h.peer_suspect("p"), "already suspect: nothing more");
        }
        assert_eq!(h.status("p").unwrap().state, State::Suspect);
        assert_eq!(asked.lock().unwrap().len(), 1, "one test call asked");
        assert!(!h.peer_suspect("unknown"));
    }
}
