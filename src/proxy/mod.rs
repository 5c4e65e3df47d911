//! The transaction-stateful proxy (RFC 3261 §16–17): classifies every received message and hands it
//! to the right place. Initial INVITEs become calls (`call.rs`, with the failover contract, driven by
//! `task.rs`); CANCEL and ACK are matched to them; in-dialog requests are loose-routed through a small
//! relay table; responses go to the call or relay that owns their branch, or are dropped as strays.
//!
//! Keyed hot state lives in `DashMap`s (sharded locks, not lock-free). No guard is held across an
//! `.await` or across a second map call: every access below is one short lookup.

pub mod attempt;
pub mod call;
#[cfg(test)]
mod call_tests;
mod dialogs;
mod expiry;
pub mod forward;
mod overload;
mod relay;
mod task;
pub mod undelivered;

use crate::config::Proto;
use crate::events::Bus;
use crate::health::Health;
use crate::metrics::{CallFigures, Metrics};
use crate::routing::Rules;
use crate::sip::{Limits, Message, build};
use crate::tasks::Tasks;
use crate::transaction::ServerKey;
use crate::transport::{Handler, Incoming, Transport};
use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use forward::{Inbound, Local};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

pub use overload::{Protection, ProtectionCounters, Refusal};
pub use task::CallEvent;

/// Methods we answer `405` for when they arrive outside a dialog (we route calls, not registrations).
const ALLOW: &[u8] = b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK";

/// Settings of the proxy core.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    pub limits: Limits,
    /// Where undelivered calls are appended (JSON lines, synced as written; see `undelivered`). None: log only.
    pub undelivered_path: Option<std::path::PathBuf>,
}

/// A server transaction as the dispatcher sees it.
enum ServerEntry {
    /// A call task owns it. The guard counts it in flight (for overload) until the entry is replaced.
    #[allow(dead_code)] // the guard is held for its Drop
    Active(mpsc::UnboundedSender<CallEvent>, overload::InFlight),
    /// The call ended; retransmissions are answered with `last` (or absorbed) until `until`.
    /// `resend`: timer G/H of a non-2xx final to an unreliable caller, taken over from the call so the
    /// call's state (its INVITE, attempts, channel, task) is freed as soon as nothing else is left.
    Done {
        until: Instant,
        last: Option<Bytes>,
        resend: Option<Resend>,
    },
}

/// Retransmission of a final response until the caller's ACK (timers G and H, RFC 3261 §17.2.1).
#[derive(Debug, Clone, Copy)]
struct Resend {
    to: crate::transport::Destination,
    timer: crate::transaction::Retransmit,
    stop: Instant,
}

/// What the expiry wheel fires: the key of a table entry to check (see `Proxy::expire`).
enum Due {
    Server(ServerKey),
    Relay(Bytes),
}

/// A client branch of a call: who owns it and where it went (for transport errors).
struct Branch {
    tx: mpsc::UnboundedSender<CallEvent>,
    addr: SocketAddr,
}

/// Plain counters, read by tests and by `/metrics` (through [`Proxy::figures`]).
#[derive(Debug, Default)]
pub struct Counters {
    pub parse_errors: AtomicU64,
    pub calls: AtomicU64,
    pub stray_responses: AtomicU64,
    /// Attempt outcomes, by kind (see [`OutcomeKind`]).
    pub outcomes: [AtomicU64; OutcomeKind::COUNT],
    /// Calls no target answered.
    pub undelivered: AtomicU64,
    /// Call timers held back instead of acted on: `[stall, backlog]` (see `task::Hold`).
    pub timers_held: [AtomicU64; 2],
}

/// What the wiring creates, owns and lends the proxy.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// Labelled metrics of the call path (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// Where the call path publishes alert events (undelivered calls).
    pub events: Bus,
    /// Where call tasks and the undelivered-record writer run; shutdown cancels and joins them.
    pub tasks: Tasks,
}

/// Attempt outcome kinds, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    TransportError = 0,
    AttemptTimeout = 1,
    RingTimeout = 2,
    FailureResponse = 3,
    Progress = 4,
    /// An attempt went overdue (the target became suspect; the attempt went on).
    Overdue = 5,
}

impl OutcomeKind {
    pub const COUNT: usize = 6;
    pub fn of(o: crate::health::Outcome) -> Option<OutcomeKind> {
        use crate::health::Outcome as O;
        Some(match o {
            O::TransportError => OutcomeKind::TransportError,
            O::AttemptTimeout => OutcomeKind::AttemptTimeout,
            O::RingTimeout => OutcomeKind::RingTimeout,
            O::FailureResponse(_) => OutcomeKind::FailureResponse,
            O::Progress(_) | O::LateProgress(_) => OutcomeKind::Progress,
            O::Overdue => OutcomeKind::Overdue,
            O::CutByDeadline | O::CancelledByCaller | O::TargetDown => return None,
        })
    }
}

impl Counters {
    pub fn outcome(&self, k: OutcomeKind) -> u64 {
        self.outcomes[k as usize].load(Ordering::Relaxed)
    }
}

pub struct Proxy {
    rules: Arc<ArcSwap<Rules>>,
    health: Health,
    transport: Transport,
    local: Local,
    cfg: ProxyConfig,
    server: DashMap<ServerKey, ServerEntry>,
    branches: DashMap<Bytes, Branch>,
    /// Branches by target address not yet told of a transport error: ICMP attribution costs
    /// O(attempts to that target), and each branch hears of it once.
    by_addr: DashMap<SocketAddr, std::collections::HashSet<Bytes>>,
    relays: relay::Relays,
    /// Answered calls until their BYE (short-call signal for health).
    answered: dialogs::Answered,
    /// Per-entry expiry of finished transactions and relays (and timer G of retired calls).
    expiry: Arc<expiry::Wheel<Due>>,
    undelivered: undelivered::Sink,
    /// Set on shutdown: new calls are refused with 503 so the caller's network tries another proxy.
    draining: std::sync::atomic::AtomicBool,
    pub counters: Counters,
    metrics: Arc<Metrics>,
    events: Bus,
    tasks: Tasks,
    /// Admission control: ACL, overload shedding, per-source rate limits (see `overload.rs`).
    pub protection: Protection,
}

/// Sizes of the proxy's tables, for tests and soak checks that state returns to empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableSizes {
    /// Server transactions, active and finished (finished ones linger 64*T1 to absorb retransmissions).
    pub server: usize,
    pub branches: usize,
    pub relays: usize,
    /// Answered calls waiting for their BYE (short-call signal).
    pub answered: usize,
    /// Per-source rate-limit entries.
    pub sources: usize,
}

impl Proxy {
    pub fn new(
        rules: Arc<ArcSwap<Rules>>,
        health: Health,
        transport: Transport,
        cfg: ProxyConfig,
        services: Services,
    ) -> Arc<Proxy> {
        let local = Local {
            udp: transport.local_addr(Proto::Udp),
            tcp: transport.local_addr(Proto::Tcp),
            tls: transport.local_addr(Proto::Tls),
        };
        let undelivered = undelivered::Sink::new(cfg.undelivered_path.clone(), &services.tasks);
        let expiry = Arc::new(expiry::Wheel::new(tokio::time::Instant::now().into_std()));
        let proxy = Arc::new(Proxy {
            rules,
            health,
            transport,
            local,
            cfg,
            server: DashMap::new(),
            branches: DashMap::new(),
            by_addr: DashMap::new(),
            relays: relay::Relays::default(),
            answered: dialogs::Answered::new(100_000),
            expiry: expiry.clone(),
            undelivered,
            draining: Default::default(),
            counters: Counters::default(),
            metrics: services.metrics,
            events: services.events,
            tasks: services.tasks,
            protection: Protection::default(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            proxy
                .tasks
                .spawn(drive_expiry(expiry, Arc::downgrade(&proxy)));
        }
        proxy
    }

    /// Expires what is due (finished transactions, relays; per entry, see `expiry.rs`) and reaps idle
    /// rate-limit entries. The expiry task does the first on its own; the wiring calls this every second.
    pub fn sweep(&self, now: Instant) {
        self.expire(now);
        self.protection.sweep(now);
    }

    /// The UDP socket's backlog mark (see [`crate::transport::Transport::backlog`]; for tests).
    #[doc(hidden)]
    pub fn udp_backlog(&self) -> Arc<crate::transport::Backlog> {
        self.transport.backlog()
    }

    /// The plain counters `/metrics` shows beside the labelled ones.
    pub fn figures(&self) -> CallFigures {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        CallFigures {
            calls: n(&c.calls),
            in_flight: self.calls_in_flight() as u64,
            undelivered: n(&c.undelivered),
            parse_errors: n(&c.parse_errors),
            stray_responses: n(&c.stray_responses),
            timers_held_stall: n(&c.timers_held[0]),
            timers_held_backlog: n(&c.timers_held[1]),
        }
    }

    /// Counts a call timer held back (`task::hold_back`).
    fn count_hold(&self, why: task::Hold) {
        let i = match why {
            task::Hold::Stall => 0,
            task::Hold::Backlog => 1,
        };
        self.counters.timers_held[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Handles every wheel item due at `now`: each costs one lookup in its table.
    fn expire(&self, now: Instant) {
        for item in self.expiry.take_due(now) {
            match item {
                Due::Server(key) => self.expire_server(key, now),
                Due::Relay(branch) => {
                    if let Some(until) = self.relays.expire(&branch, now) {
                        self.expiry.schedule(until, Due::Relay(branch));
                    }
                }
            }
        }
    }

    fn expire_server(&self, key: ServerKey, now: Instant) {
        let gone = self.server.remove_if(
            &key,
            |_, e| matches!(e, ServerEntry::Done { until, .. } if *until <= now),
        );
        if gone.is_some() {
            return;
        }
        let mut send = None;
        let next = match self.server.get_mut(&key).as_deref_mut() {
            Some(ServerEntry::Done {
                until,
                last,
                resend,
            }) => {
                if let Some(r) = resend {
                    if now >= r.stop {
                        *resend = None;
                    } else if r.timer.fire(now) {
                        send = last.clone().map(|b| (r.to, b));
                    }
                }
                let due = resend.map(|r| r.timer.due_at().min(r.stop));
                Some(due.map_or(*until, |d| d.min(*until)))
            }
            // Active again (a new call reused the key) or gone: its own owner schedules it.
            _ => None,
        };
        if let Some((to, b)) = send {
            self.transport.send(to, b);
        }
        if let Some(next) = next {
            self.expiry.schedule(next, Due::Server(key));
        }
    }

    /// A call ended: its server transaction becomes a finished entry, expired by the wheel.
    fn finish_call(
        &self,
        key: ServerKey,
        last: Option<Bytes>,
        resend: Option<Resend>,
        now: Instant,
    ) {
        let until = now + crate::transaction::TIMEOUT_64T1;
        // Kept 32 s: an exact-size copy (responses are built with room to spare, ~2x their length).
        let last = last.map(|b| Bytes::copy_from_slice(&b));
        let first = resend.map_or(until, |r| r.timer.due_at().min(r.stop).min(until));
        self.server.insert(
            key.clone(),
            ServerEntry::Done {
                until,
                last,
                resend,
            },
        );
        self.expiry.schedule(first, Due::Server(key));
    }

    /// A call listens on `branch` for responses from `addr`.
    fn add_branch(&self, branch: Bytes, tx: mpsc::UnboundedSender<CallEvent>, addr: SocketAddr) {
        self.branches.insert(branch.clone(), Branch { tx, addr });
        self.by_addr.entry(addr).or_default().insert(branch);
    }

    fn remove_branch(&self, branch: &Bytes) {
        let Some((_, b)) = self.branches.remove(branch) else {
            return;
        };
        if let dashmap::mapref::entry::Entry::Occupied(mut e) = self.by_addr.entry(b.addr) {
            e.get_mut().remove(branch);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Health took target `id` down because it stopped answering probes: every call with a live
    /// branch at its address hears of it (the call decides whether its current attempt is there;
    /// contract point 3a of `call.rs`). Tel targets share their gateway's address, hence the id.
    pub fn target_down(&self, id: &str) {
        let Some(addr) = self.rules.load().target(id).map(|t| t.next_hop) else {
            return;
        };
        let owners: Vec<_> = match self.by_addr.get(&addr) {
            Some(set) => set
                .iter()
                .filter_map(|k| self.branches.get(k).map(|b| b.tx.clone()))
                .collect(),
            None => return,
        };
        let tid: crate::routing::TargetId = id.into();
        for tx in owners {
            let _ = tx.send(CallEvent::TargetDown(tid.clone()));
        }
    }

    /// Current table sizes (each a full count over the map's shards: not for the hot path).
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            server: self.server.len(),
            branches: self.branches.len(),
            relays: self.relays.len(),
            answered: self.answered.len(),
            sources: self.protection.sources_tracked(),
        }
    }

    /// Refuse new calls from now on (graceful shutdown).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Calls (server transactions) still owned by a task.
    pub fn calls_in_flight(&self) -> usize {
        self.server
            .iter()
            .filter(|e| matches!(e.value(), ServerEntry::Active(..)))
            .count()
    }

    fn reply(&self, req: &Message, inb: &Inbound, code: u16, reason: &str, extra: &[&[u8]]) {
        let tag = crate::transaction::derived_branch('t', &[req.call_id()]);
        let tag = tag.get(tag.len() - 12..).unwrap_or("sos").to_string();
        let resp = build::response(req, code, reason, Some(tag.as_bytes()), extra);
        self.transport.send(inb.reply_to(), resp);
    }

    fn on_request(self: &Arc<Self>, msg: Message, inb: Inbound) {
        use crate::sip::Method;
        let Some(method) = msg.method() else { return };
        let key = match ServerKey::of(&msg) {
            Ok(k) => k,
            Err(e) => return self.salvage(&msg.bytes().clone(), &inb, &e),
        };
        if let Some(problem) = crate::sip::strict::request_problem(&msg) {
            if method != Method::Ack {
                self.salvage(&msg.bytes().clone(), &inb, &problem);
            }
            return;
        }
        match method {
            Method::Ack => return self.on_ack(msg, inb, key),
            Method::Cancel => return self.on_cancel(msg, inb, key),
            _ => {}
        }
        let mf = match msg.max_forwards() {
            Ok(mf) => mf,
            Err(_) => return self.reply(&msg, &inb, 400, "Bad Max-Forwards", &[]),
        };
        let in_dialog = msg.to_tag().is_some();
        if method == Method::Options && !in_dialog {
            // Keep-alives and probes addressed to sosrouter itself.
            let extra: &[&[u8]] = &[ALLOW, b"Accept: application/sdp"];
            return self.reply(&msg, &inb, 200, "OK", extra);
        }
        if mf == Some(0) {
            return self.reply(&msg, &inb, 483, "Too Many Hops", &[]);
        }
        let mf = mf.map_or(70, |m| m - 1);
        if method == Method::Invite && !in_dialog {
            return self.on_initial_invite(msg, inb, key, mf);
        }
        if !in_dialog {
            return self.reply(&msg, &inb, 405, "Method Not Allowed", &[ALLOW]);
        }
        self.relay_request(msg, inb, mf);
    }

    fn on_initial_invite(self: &Arc<Self>, msg: Message, inb: Inbound, key: ServerKey, mf: u32) {
        match self.server.get(&key).map(|e| match e.value() {
            ServerEntry::Active(tx, _) => Ok(tx.clone()),
            ServerEntry::Done { last, .. } => Err(last.clone()),
        }) {
            Some(Ok(tx)) => {
                let _ = tx.send(CallEvent::Retransmit);
                return;
            }
            Some(Err(last)) => {
                if let Some(b) = last {
                    self.transport.send(inb.reply_to(), b);
                }
                return;
            }
            None => {}
        }
        if self.draining.load(Ordering::Relaxed) {
            return self.reply(&msg, &inb, 503, "Shutting Down", &[b"Retry-After: 5"]);
        }
        let rules = self.rules.load();
        let emergency = rules.is_emergency_uri(msg.request_uri().unwrap_or_default());
        let now = tokio::time::Instant::now().into_std();
        let spec = &rules.protection;
        let place = match self
            .protection
            .admit(spec, inb.proto, inb.src.ip(), emergency, now)
        {
            Ok(place) => place,
            Err(why) => {
                let (code, reason) = why.status();
                let retry = format!("Retry-After: {}", spec.overload.retry_after_s);
                let extra: &[&[u8]] = if code == 503 {
                    &[retry.as_bytes()]
                } else {
                    &[]
                };
                return self.reply(&msg, &inb, code, reason, extra);
            }
        };
        drop(rules);
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        task::spawn_call(self.clone(), msg, inb, key, mf, place);
    }

    /// Answers a request the parser (or a later typed read) refused with a 400 naming the problem,
    /// when enough headers survive to address one; otherwise it is dropped. See `sip::salvage`.
    fn salvage(&self, raw: &Bytes, inb: &Inbound, problem: &dyn std::fmt::Display) {
        let problem = problem.to_string();
        match crate::sip::salvage::bad_request(raw, &problem, &self.cfg.limits) {
            Some(resp) => {
                let c = &self.protection.counters.bad_requests_answered;
                c.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %inb.src, reason = %problem, "malformed request answered 400");
                // To the packet's source, not a Via address: a forged Via must not aim it elsewhere.
                self.transport.send(inb.reply_to(), resp);
            }
            None => {
                tracing::debug!(peer = %inb.src, reason = %problem, "malformed message dropped");
            }
        }
    }

    fn on_ack(self: &Arc<Self>, msg: Message, inb: Inbound, key: ServerKey) {
        let owner = self.server.get_mut(&key).map(|mut e| match e.value_mut() {
            ServerEntry::Active(tx, _) => Some(tx.clone()),
            ServerEntry::Done { resend, .. } => {
                *resend = None; // the caller has our final: timer G stops
                None
            }
        });
        match owner {
            Some(Some(tx)) => {
                let _ = tx.send(CallEvent::Ack);
            }
            Some(None) => {} // ACK of a final we already sent: absorbed hop by hop
            None if msg.to_tag().is_some() => self.relay_request(msg, inb, 70),
            None => {}
        }
    }

    fn on_cancel(self: &Arc<Self>, msg: Message, inb: Inbound, key: ServerKey) {
        let owner = self.server.get(&key).map(|e| match e.value() {
            ServerEntry::Active(tx, _) => Some(tx.clone()),
            ServerEntry::Done { .. } => None,
        });
        match owner {
            Some(tx) => {
                self.reply(&msg, &inb, 200, "OK", &[]);
                if let Some(tx) = tx {
                    let _ = tx.send(CallEvent::Cancel);
                }
            }
            None => self.reply(&msg, &inb, 481, "Call/Transaction Does Not Exist", &[]),
        }
    }

    fn on_response(&self, msg: Message) {
        let Ok(via) = msg.top_via() else { return };
        let Some(branch) = via.branch else { return };
        if crate::health::is_probe_branch(branch) {
            self.health
                .on_probe_response(branch, msg.status().unwrap_or(0));
            return;
        }
        if let Some(b) = self.branches.get(branch).map(|b| b.tx.clone()) {
            let _ = b.send(CallEvent::Response(Box::new(msg)));
            return;
        }
        if self.relays.relay_response(&msg, &self.transport) {
            return;
        }
        let invite_2xx = matches!(msg.status(), Some(200..=299))
            && msg.cseq().method == crate::sip::Method::Invite;
        if invite_2xx && crate::transaction::is_our_branch(branch) {
            // A 2xx retransmission after its call ended: forwarded statelessly (RFC 3261 §16.7).
            if let Some(dst) = forward::response_hop(&msg) {
                let mut e = crate::sip::Editor::new(&msg);
                e.pop_via();
                if dst.proto.is_stream() {
                    e.ensure_content_length();
                }
                self.transport.send(dst, e.finish());
            }
            return;
        }
        self.counters
            .stray_responses
            .fetch_add(1, Ordering::Relaxed);
        tracing::trace!(status = ?msg.status(), "stray response dropped");
    }

    fn relay_request(&self, msg: Message, inb: Inbound, mf: u32) {
        let (popped, last_ours) = forward::our_routes(&msg, &self.local);
        if popped > 0 && msg.method() == Some(crate::sip::Method::Bye) {
            let now = tokio::time::Instant::now().into_std();
            if let Some((target, lasted)) = self.answered.ended(msg.call_id(), now) {
                let obs = crate::health::Observation::CallEnded(lasted);
                self.health.observe(&target, obs);
            }
        }
        let is_ack = msg.method() == Some(crate::sip::Method::Ack);
        if popped == 0 {
            // Not a dialog we Record-Routed: refuse rather than relay for anyone.
            if !is_ack {
                self.reply(&msg, &inb, 403, "Not A Dialog Routed Here", &[]);
            }
            return;
        }
        let Some(dst) = forward::next_hop(&msg, popped, last_ours.as_deref()) else {
            if !is_ack {
                self.reply(&msg, &inb, 404, "No Route To Next Hop", &[]);
            }
            return;
        };
        let kept = self
            .relays
            .forward(&msg, &inb, &self.local, dst, popped, mf, &self.transport);
        if let Some((branch, until)) = kept {
            self.expiry.schedule(until, Due::Relay(branch));
        }
    }
}

/// The expiry task: sleeps until the wheel's next item (or an earlier one is scheduled), then expires
/// what is due. Ends when the proxy is dropped.
async fn drive_expiry(wheel: Arc<expiry::Wheel<Due>>, proxy: std::sync::Weak<Proxy>) {
    use tokio::time::{Instant as TInstant, sleep_until};
    // At most this long asleep, so the task notices that the proxy is gone.
    const NAP: std::time::Duration = std::time::Duration::from_secs(1);
    loop {
        let now = TInstant::now();
        let wake = wheel
            .next_due()
            .map_or(now + NAP, |d| TInstant::from_std(d).min(now + NAP));
        tokio::select! {
            _ = sleep_until(wake) => {}
            _ = wheel.sooner.notified() => {}
        }
        let Some(p) = proxy.upgrade() else { return };
        p.expire(TInstant::now().into_std());
    }
}

/// The transport's view of the proxy (the call path needs an `Arc<Proxy>` to spawn call tasks).
pub struct Dispatcher(pub Arc<Proxy>);

impl Handler for Dispatcher {
    fn on_message(&self, m: Incoming) {
        let this = &self.0;
        let inb = Inbound {
            proto: m.proto,
            src: m.peer,
            conn: m.conn,
        };
        match Message::parse(m.data.clone(), &this.cfg.limits) {
            Ok(msg) if msg.is_request() => this.on_request(msg, inb),
            Ok(msg) => this.on_response(msg),
            Err(e) => {
                this.counters.parse_errors.fetch_add(1, Ordering::Relaxed);
                this.salvage(&m.data, &inb, &e);
            }
        }
    }

    fn on_unreachable(&self, proto: Proto, addr: SocketAddr) {
        let this = &self.0;
        // Taken, not copied: an unreachable target fails every attempt to it that got no response,
        // so a branch needs telling once (before this, each ICMP was sent to every call that ever
        // tried the target and was still alive, ~1 000 channel messages per error under the soak).
        let branches = this
            .by_addr
            .remove(&addr)
            .map(|(_, v)| v)
            .unwrap_or_default();
        let owners: Vec<_> = branches
            .iter()
            .filter_map(|k| this.branches.get(k).map(|b| b.tx.clone()))
            .collect();
        for tx in owners {
            let _ = tx.send(CallEvent::Unreachable(addr));
        }
        this.health.on_transport_error(addr);
        tracing::debug!(%proto, %addr, "unreachable");
    }
}
