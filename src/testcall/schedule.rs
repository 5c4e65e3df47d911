//! When test calls run: one task owns every decision, fed by a channel, so that asking for a test call
//! ([`TestCalls::request`]) never blocks and never takes a lock anything else takes.
//!
//! The task, per request:
//! 1. drops it when test calls are disabled, or the target gets none (a tel target without
//!    `test_uri`), or that target already has a test call in flight or waiting (at most one each);
//! 2. starts it when fewer than `max_in_flight` test calls run, else queues it (first come, first
//!    served) until one ends;
//! 3. each call first sleeps a random jitter in `0..=Plan::jitter` (test calls asked for together,
//!    as a suspect domain does, do not reach the answering points in one burst), then runs;
//! 4. the verdict is reported as soon as it is known; the target's slot frees when the call has
//!    ended (BYE answered or bounded).
//!
//! With `interval_ms` set, the task also asks for a test call to every target once per interval (the
//! first at a random point of the first interval, so targets do not all go at once).
//!
//! Recovery test calls of targets that share a failure domain are paced ([`Plan::recovery_pace`]):
//! at most one starts through each domain per pace, to the target whose last one is oldest, and
//! the others are held. When an element shared by many answering points fails (a firewall in front
//! of every PSAP), every PSAP behind it is down and wants its recovery test call: unpaced, they
//! would fill `max_in_flight` with calls that each wait out the whole timeout, and the test call
//! that could see the element healed would queue behind them (the statewide "100 then nothing"
//! drill: 5.6 s to the last region back). Paced, the domain is tried once per pace through one of
//! its targets, whichever that is (a PSAP rations test calls: each gets one per pace x targets),
//! and a good test call of any target of the domain releases every held one at once: the element
//! works again, so each target behind it is tested now and comes back on its own verdict. A test
//! call of the domain still in flight that started before the good one is superseded: its INVITE
//! went into the fault, so it is placed again now, and the old one ends quietly (it still CANCELs
//! and hangs up as it must; its verdict goes nowhere). Targets of no domain are not paced (each
//! asks at most once per `recovery_test_interval_ms` anyway).

use super::shell::{CallParams, run_test_call};
use super::{Report, TestReason, Verdict};
use crate::routing::{Target, TargetId, TestCallSettings};
use crate::tasks::Tasks;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Requests waiting for the task; beyond this `request` refuses (the task is far behind).
const QUEUE: usize = 1024;
/// Default most random delay before a test call.
pub const DEFAULT_JITTER: Duration = Duration::from_millis(200);
/// Default [`Plan::recovery_pace`] (the default `recovery_test_interval_ms`).
pub const DEFAULT_RECOVERY_PACE: Duration = Duration::from_secs(1);
/// A held recovery request that its target has not renewed for this long (at least; 3 paces when
/// that is longer) is dropped: health renews it every `recovery_test_interval_ms` while it wants one.
const HELD_FOR: Duration = Duration::from_secs(10);

/// What the scheduler works from; replaced whole on reload ([`TestCalls::update`]).
#[derive(Debug, Clone)]
pub struct Plan {
    pub settings: Arc<TestCallSettings>,
    /// Every target of the rules (periodic test calls go to each one that can take them).
    pub targets: Vec<Arc<Target>>,
    /// Most random delay before each test call. Default [`DEFAULT_JITTER`].
    pub jitter: Duration,
    /// Local IP test calls send from (see [`CallParams::bind_ip`]). Default `None`.
    pub bind_ip: Option<IpAddr>,
    /// At most one recovery test call starts through each failure domain per this time (module
    /// doc); zero: not paced. The wiring sets `[suspicion] recovery_test_interval_ms`.
    pub recovery_pace: Duration,
    /// The `[tls]` trust and client certificate, for test calls to TLS targets.
    pub tls: Option<crate::transport::TlsMaterial>,
}

impl Plan {
    pub fn new(settings: Arc<TestCallSettings>, targets: Vec<Arc<Target>>) -> Plan {
        Plan {
            settings,
            targets,
            jitter: DEFAULT_JITTER,
            bind_ip: None,
            recovery_pace: DEFAULT_RECOVERY_PACE,
            tls: None,
        }
    }
}

/// The handle: cheap to clone, every method non-blocking.
#[derive(Clone)]
pub struct TestCalls {
    requests: mpsc::Sender<(Arc<Target>, TestReason)>,
    plan: Arc<watch::Sender<Plan>>,
}

impl TestCalls {
    /// Starts the scheduler task on `tasks`, and each test call on it too (shutdown cancels them
    /// with every other task). Reports (one per test call that ran) come out of the receiver.
    pub fn spawn(plan: Plan, tasks: &Tasks) -> (TestCalls, mpsc::UnboundedReceiver<Report>) {
        let (requests, rx) = mpsc::channel(QUEUE);
        let (plan_tx, plan_rx) = watch::channel(plan);
        let (reports, reports_rx) = mpsc::unbounded_channel();
        tasks.spawn(run(rx, plan_rx, reports, tasks.clone()));
        let handle = TestCalls {
            requests,
            plan: Arc::new(plan_tx),
        };
        (handle, reports_rx)
    }

    /// Asks for a test call to `target`. Never blocks. True when the request was queued for the
    /// scheduler (which may still drop it: disabled, one already in flight for the target, a tel
    /// target without `test_uri`); false when the scheduler is gone or far behind.
    pub fn request(&self, target: Arc<Target>, why: TestReason) -> bool {
        self.requests.try_send((target, why)).is_ok()
    }

    /// New settings and targets (after a reload). Calls in flight finish under the old ones.
    pub fn update(&self, plan: Plan) {
        self.plan.send_replace(plan);
    }
}

struct Sched {
    /// Where the test calls run (the app's tasks: cancelled and joined at shutdown).
    tasks: Tasks,
    plan: Plan,
    in_flight: HashMap<TargetId, Flight>,
    /// Numbers the calls, so that a superseded call's end does not free its successor's slot.
    next_call: u64,
    waiting: VecDeque<(Arc<Target>, TestReason, CallParams)>,
    /// Next periodic test call per target.
    periodic: HashMap<TargetId, (Instant, Arc<Target>)>,
    pace: Pace,
    done: mpsc::UnboundedSender<Done>,
    reports: mpsc::UnboundedSender<Report>,
}

/// A test call with no verdict yet.
struct Flight {
    call: u64,
    target: Arc<Target>,
    why: TestReason,
    params: CallParams,
    started: Instant,
    /// Set when superseded: the verdict is not reported.
    quiet: Arc<std::sync::atomic::AtomicBool>,
}

/// A call has its verdict (or ended without one).
struct Done {
    call: u64,
    target: Arc<Target>,
    good: bool,
    started: Instant,
}

/// The paced recovery test calls of failure domains (module doc).
#[derive(Default)]
struct Pace {
    /// When a recovery test call last started through each domain.
    domain_started: HashMap<String, Instant>,
    /// When each target's last recovery test call started: who has waited longest goes first.
    target_started: HashMap<TargetId, Instant>,
    /// Requests held back while their domain's pace was spent, in the order first asked.
    held: Vec<Held>,
}

struct Held {
    target: Arc<Target>,
    params: CallParams,
    first_asked: Instant,
    last_asked: Instant,
}

async fn run(
    mut requests: mpsc::Receiver<(Arc<Target>, TestReason)>,
    mut plan_rx: watch::Receiver<Plan>,
    reports: mpsc::UnboundedSender<Report>,
    tasks: Tasks,
) {
    let (done, mut done_rx) = mpsc::unbounded_channel();
    let mut s = Sched {
        tasks,
        plan: plan_rx.borrow_and_update().clone(),
        in_flight: HashMap::new(),
        next_call: 0,
        waiting: VecDeque::new(),
        periodic: HashMap::new(),
        pace: Pace::default(),
        done,
        reports,
    };
    s.reset_periodic(Instant::now());
    loop {
        let next_periodic = s.periodic.values().map(|(at, _)| *at).min();
        let next_paced = s.next_paced();
        tokio::select! {
            r = requests.recv() => match r {
                Some((target, why)) => s.want(target, why),
                None => break,
            },
            Some(d) = done_rx.recv() => {
                if s.in_flight.get(&d.target.id).is_some_and(|f| f.call == d.call) {
                    s.in_flight.remove(&d.target.id);
                }
                if d.good {
                    s.release_domains(&d.target, d.started, Instant::now());
                }
                s.fill();
            }
            Ok(()) = plan_rx.changed() => {
                s.plan = plan_rx.borrow_and_update().clone();
                s.reset_periodic(Instant::now());
            }
            _ = sleep_until(next_periodic) => s.periodic_due(Instant::now()),
            _ = sleep_until(next_paced) => s.start_paced(Instant::now()),
        }
    }
    debug!("test-call scheduler stops: every handle dropped");
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn random_below(d: Duration) -> Duration {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random_range(0..=nanos))
}

impl Sched {
    fn want(&mut self, target: Arc<Target>, why: TestReason) {
        let s = &self.plan.settings;
        if !s.enabled {
            debug!(target = %target.id, reason = %why, "test calls disabled: request dropped");
            return;
        }
        let Some(mut params) = CallParams::for_target(s, &target) else {
            debug!(target = %target.id, reason = %why, "target takes no test calls (tel without test_uri)");
            return;
        };
        params.bind_ip = self.plan.bind_ip;
        if target.transport == crate::config::Proto::Tls {
            params.tls = self.plan.tls.clone();
        }
        let now = Instant::now();
        if let Some(h) = self.pace.held.iter_mut().find(|h| h.target.id == target.id) {
            h.last_asked = now;
            return;
        }
        let busy = self.in_flight.contains_key(&target.id)
            || self.waiting.iter().any(|(t, ..)| t.id == target.id);
        if busy {
            debug!(target = %target.id, reason = %why, "test call already in flight or waiting");
            return;
        }
        if why == TestReason::Recovering
            && !self.plan.recovery_pace.is_zero()
            && !target.failure_domain.is_empty()
        {
            self.pace.held.push(Held {
                target,
                params,
                first_asked: now,
                last_asked: now,
            });
            self.start_paced(now);
            return;
        }
        self.start(target, why, params);
    }

    /// Launches now when `max_in_flight` allows, else queues.
    fn start(&mut self, target: Arc<Target>, why: TestReason, params: CallParams) {
        let s = &self.plan.settings;
        if self.in_flight.len() < s.max_in_flight {
            self.launch(target, why, params);
        } else {
            debug!(target = %target.id, reason = %why, "test call waits: max_in_flight reached");
            self.waiting.push_back((target, why, params));
        }
    }

    /// Starts every held recovery request whose domains' pace allows, longest untested first.
    fn start_paced(&mut self, now: Instant) {
        let pace = self.plan.recovery_pace;
        let keep = HELD_FOR.max(pace * 3);
        self.pace
            .held
            .retain(|h| now.saturating_duration_since(h.last_asked) < keep);
        loop {
            let Pace {
                domain_started,
                target_started,
                held,
            } = &self.pace;
            let free = |h: &Held| {
                h.target
                    .failure_domain
                    .iter()
                    .all(|d| domain_started.get(d).is_none_or(|&at| now >= at + pace))
            };
            let Some(i) = (0..held.len())
                .filter(|&i| free(&held[i]))
                .min_by_key(|&i| (target_started.get(&held[i].target.id), held[i].first_asked))
            else {
                return;
            };
            let h = self.pace.held.remove(i);
            self.start_held(h, now);
        }
    }

    /// A good test call of `target`, placed at `placed`: what is shared with it works, so every
    /// held recovery request of its domains starts now, and every call of its domains in flight
    /// since before `placed` is placed again (module doc).
    fn release_domains(&mut self, target: &Target, placed: Instant, now: Instant) {
        let shares = |t: &Target| {
            t.id != target.id
                && t.failure_domain
                    .iter()
                    .any(|d| target.failure_domain.contains(d))
        };
        let (released, kept) = std::mem::take(&mut self.pace.held)
            .into_iter()
            .partition::<Vec<_>, _>(|h| shares(&h.target));
        self.pace.held = kept;
        for h in released {
            debug!(target = %h.target.id, good = %target.id, "recovery test call released: its failure domain passed a test call");
            self.start_held(h, now);
        }
        let stale: Vec<TargetId> = self
            .in_flight
            .values()
            .filter(|f| f.started < placed && shares(&f.target))
            .map(|f| f.target.id.clone())
            .collect();
        for id in stale {
            let Some(f) = self.in_flight.remove(&id) else {
                continue;
            };
            f.quiet.store(true, std::sync::atomic::Ordering::Relaxed);
            debug!(target = %id, good = %target.id, "test call superseded: placed again now that its failure domain passed one");
            self.launch(f.target, f.why, f.params);
        }
    }

    fn start_held(&mut self, h: Held, now: Instant) {
        for d in &h.target.failure_domain {
            self.pace.domain_started.insert(d.clone(), now);
        }
        self.pace.target_started.insert(h.target.id.clone(), now);
        self.start(h.target, TestReason::Recovering, h.params);
    }

    /// When the first held request's domains will all be free again.
    fn next_paced(&self) -> Option<Instant> {
        let pace = self.plan.recovery_pace;
        self.pace
            .held
            .iter()
            .map(|h| {
                let last = h
                    .target
                    .failure_domain
                    .iter()
                    .filter_map(|d| self.pace.domain_started.get(d))
                    .max();
                last.map_or_else(Instant::now, |&at| at + pace)
            })
            .min()
    }

    fn fill(&mut self) {
        while self.in_flight.len() < self.plan.settings.max_in_flight {
            let Some((target, why, params)) = self.waiting.pop_front() else {
                return;
            };
            self.launch(target, why, params);
        }
    }

    fn launch(&mut self, target: Arc<Target>, why: TestReason, params: CallParams) {
        let call = self.next_call;
        self.next_call += 1;
        let started = Instant::now();
        let quiet = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.in_flight.insert(
            target.id.clone(),
            Flight {
                call,
                target: target.clone(),
                why,
                params: params.clone(),
                started,
                quiet: quiet.clone(),
            },
        );
        let jitter = random_below(self.plan.jitter);
        let (done, reports) = (self.done.clone(), self.reports.clone());
        self.tasks.spawn(async move {
            tokio::time::sleep(jitter).await;
            debug!(target = %target.id, reason = %why, uri = %params.request_uri, "test call starts");
            // The target is free for its next test call as soon as this one has a verdict: the call
            // may linger ~2 s to ACK or hang up late answers, and a target that was hung a moment
            // ago must not wait that long for the test call that brings it back.
            let released = std::sync::atomic::AtomicBool::new(false);
            let release = |good: bool| {
                if !released.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    let _ = done.send(Done {
                        call,
                        target: target.clone(),
                        good,
                        started,
                    });
                }
            };
            run_test_call(&target, &params, |verdict, details| {
                if quiet.load(std::sync::atomic::Ordering::Relaxed) {
                    debug!(target = %target.id, reason = %why, verdict = %verdict, "superseded test call ended");
                    return release(false);
                }
                log_verdict(&target.id, why, verdict, details);
                let _ = reports.send(Report {
                    target: target.id.clone(),
                    reason: why,
                    verdict: verdict.clone(),
                    details: details.clone(),
                });
                release(*verdict == Verdict::Good);
            })
            .await;
            release(false);
        });
    }

    fn reset_periodic(&mut self, now: Instant) {
        self.periodic.clear();
        let Some(every) = self
            .plan
            .settings
            .interval
            .filter(|_| self.plan.settings.enabled)
        else {
            return;
        };
        for t in &self.plan.targets {
            if self.plan.settings.uri_for(t).is_some() {
                let first = now + random_below(every);
                self.periodic.insert(t.id.clone(), (first, t.clone()));
            }
        }
    }

    fn periodic_due(&mut self, now: Instant) {
        let Some(every) = self.plan.settings.interval else {
            return;
        };
        let due: Vec<Arc<Target>> = self
            .periodic
            .values_mut()
            .filter(|(at, _)| *at <= now)
            .map(|(at, t)| {
                *at += every;
                t.clone()
            })
            .collect();
        for t in due {
            self.want(t, TestReason::Periodic);
        }
    }
}

fn log_verdict(target: &TargetId, why: TestReason, v: &Verdict, d: &super::Details) {
    let (status, echoed, sent) = (d.status, d.rtp_echoed, d.rtp_sent);
    if v.counts_against_target() {
        warn!(%target, reason = %why, verdict = %v, ?status, echoed, sent, elapsed_ms = d.elapsed_ms, "test call failed");
    } else {
        info!(%target, reason = %why, verdict = %v, ?status, echoed, sent, elapsed_ms = d.elapsed_ms, "test call");
    }
}
