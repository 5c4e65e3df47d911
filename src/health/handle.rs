//! The shared [`Health`] handle: one [`Machine`] per target id in a `DashMap`, the operator's
//! enable switch, and the reload (re-keying) logic.
//!
//! Outcomes of real calls reach the machines over a channel to one applier task
//! ([`Health::start_applier`], started by the wiring), so the call path never takes a health lock:
//! `report` is one unbounded-channel send. Readiness is read straight from the map (a shard read
//! lock held for one lookup). Without a running applier (pure unit tests, no runtime) `report`
//! applies in place. Probe results are applied by the prober task itself.

use super::Outcome;
use super::probe::Pending;
use super::state::{Counters, Event, Machine, Reason, State, Thresholds, Transition};
use crate::routing::{Readiness, Rules, Target, TargetId, TargetKind};
use arc_swap::ArcSwap;
use dashmap::DashMap;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
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
    pub(super) pending: DashMap<String, Pending>,
    /// Branches of the pending probes by destination, so a transport error costs per probe.
    pub(super) pending_to: DashMap<std::net::SocketAddr, Vec<String>>,
    /// Wakes the prober when the target set changed (reload).
    pub(super) changed: Notify,
    /// Told of every transition and operator switch (alert events). Set once by the wiring.
    sink: OnceLock<ChangeSink>,
    /// Call outcomes toward the applier task, once it runs.
    outcomes: OnceLock<tokio::sync::mpsc::UnboundedSender<(Box<str>, Outcome)>>,
}

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
}

impl Entry {
    fn new(target: &Target, now: Instant) -> Entry {
        Entry {
            machine: Machine::new(now),
            thresholds: Thresholds::from(&target.health),
            enabled: true,
            since_wall: SystemTime::now(),
        }
    }
}

/// The target set as the prober and probe results need it.
pub(super) struct Topology {
    pub(super) order: Vec<TargetId>,
    /// SIP targets to send OPTIONS to: those with `probe = true`, and every gateway that a probed
    /// Tel target uses (a Tel target is reached through its gateway, so the gateway's probe is
    /// the Tel target's probe: one OPTIONS per gateway per interval, shared).
    pub(super) probe_hosts: Vec<Arc<Target>>,
    /// gateway id -> probed Tel targets that share its probe results.
    pub(super) dependents: HashMap<TargetId, Vec<TargetId>>,
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
}

/// The clock of the health module: tokio's, so paused-time tests drive it.
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Health {
    pub fn new(rules: &Rules) -> Health {
        Health::from_targets(&rules.targets)
    }

    /// Same as [`Health::new`] from the target list alone (tests build targets, not rules).
    pub fn from_targets(targets: &[Arc<Target>]) -> Health {
        let now = now();
        let entries = DashMap::new();
        for t in targets {
            entries.insert(t.id.clone(), Entry::new(t, now));
        }
        let inner = Inner {
            entries,
            topology: ArcSwap::from_pointee(Topology::new(targets)),
            pending: DashMap::new(),
            pending_to: DashMap::new(),
            changed: Notify::new(),
            sink: OnceLock::new(),
            outcomes: OnceLock::new(),
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
            Some(e) if !e.machine.state().is_ready() => Readiness::NotReady,
            _ => Readiness::Ready,
        }
    }

    /// Reports an attempt's outcome. Never blocks and takes no lock once the applier runs (see the
    /// module doc).
    pub fn report(&self, id: &str, outcome: Outcome) {
        match self.inner.outcomes.get() {
            Some(tx) => {
                let _ = tx.send((id.into(), outcome));
            }
            None => {
                self.apply(id, Event::Call(outcome));
            }
        }
    }

    /// Starts the one task that applies call outcomes (call once, inside a runtime). It holds only a
    /// weak reference: it ends when the last `Health` handle is dropped.
    pub fn start_applier(&self) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Box<str>, Outcome)>();
        if self.inner.outcomes.set(tx).is_err() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some((id, outcome)) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                Health { inner }.apply(&id, Event::Call(outcome));
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
        self.rekey_targets(&rules.targets);
    }

    /// [`Health::rekey`] from the target list alone.
    pub fn rekey_targets(&self, targets: &[Arc<Target>]) {
        let keep: HashSet<&str> = targets.iter().map(|t| &*t.id).collect();
        self.inner.entries.retain(|id, _| keep.contains(&**id));
        let now = now();
        for t in targets {
            self.inner
                .entries
                .entry(t.id.clone())
                .and_modify(|e| e.thresholds = Thresholds::from(&t.health))
                .or_insert_with(|| Entry::new(t, now));
        }
        self.inner.topology.store(Arc::new(Topology::new(targets)));
        self.inner.changed.notify_one();
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
        } else if e.machine.state().is_ready() {
            "ready"
        } else {
            "not_ready"
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
            let t = e.machine.on_event(ev, &th, now());
            if t.is_some() {
                e.since_wall = SystemTime::now();
            }
            t
        };
        if let Some(t) = &transition {
            log_transition(id, t);
            self.announce(Change::Health {
                target: id,
                transition: *t,
            });
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
    if t.to == State::Down {
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
