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

use super::shell::{CallParams, run_test_call};
use super::{Report, TestReason, Verdict};
use crate::routing::{Target, TargetId, TestCallSettings};
use std::collections::{HashMap, HashSet, VecDeque};
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
}

impl Plan {
    pub fn new(settings: Arc<TestCallSettings>, targets: Vec<Arc<Target>>) -> Plan {
        Plan {
            settings,
            targets,
            jitter: DEFAULT_JITTER,
            bind_ip: None,
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
    /// Starts the scheduler task. Reports (one per test call that ran) come out of the receiver.
    pub fn spawn(plan: Plan) -> (TestCalls, mpsc::UnboundedReceiver<Report>) {
        let (requests, rx) = mpsc::channel(QUEUE);
        let (plan_tx, plan_rx) = watch::channel(plan);
        let (reports, reports_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, plan_rx, reports));
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
    plan: Plan,
    in_flight: HashSet<TargetId>,
    waiting: VecDeque<(Arc<Target>, TestReason, CallParams)>,
    /// Next periodic test call per target.
    periodic: HashMap<TargetId, (Instant, Arc<Target>)>,
    done: mpsc::UnboundedSender<TargetId>,
    reports: mpsc::UnboundedSender<Report>,
}

async fn run(
    mut requests: mpsc::Receiver<(Arc<Target>, TestReason)>,
    mut plan_rx: watch::Receiver<Plan>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let (done, mut done_rx) = mpsc::unbounded_channel();
    let mut s = Sched {
        plan: plan_rx.borrow_and_update().clone(),
        in_flight: HashSet::new(),
        waiting: VecDeque::new(),
        periodic: HashMap::new(),
        done,
        reports,
    };
    s.reset_periodic(Instant::now());
    loop {
        let next_periodic = s.periodic.values().map(|(at, _)| *at).min();
        tokio::select! {
            r = requests.recv() => match r {
                Some((target, why)) => s.want(target, why),
                None => break,
            },
            Some(id) = done_rx.recv() => {
                s.in_flight.remove(&id);
                s.fill();
            }
            Ok(()) = plan_rx.changed() => {
                s.plan = plan_rx.borrow_and_update().clone();
                s.reset_periodic(Instant::now());
            }
            _ = sleep_until(next_periodic) => s.periodic_due(Instant::now()),
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
        let busy = self.in_flight.contains(&target.id)
            || self.waiting.iter().any(|(t, ..)| t.id == target.id);
        if busy {
            debug!(target = %target.id, reason = %why, "test call already in flight or waiting");
            return;
        }
        if self.in_flight.len() < s.max_in_flight {
            self.launch(target, why, params);
        } else {
            debug!(target = %target.id, reason = %why, "test call waits: max_in_flight reached");
            self.waiting.push_back((target, why, params));
        }
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
        self.in_flight.insert(target.id.clone());
        let jitter = random_below(self.plan.jitter);
        let (done, reports) = (self.done.clone(), self.reports.clone());
        tokio::spawn(async move {
            tokio::time::sleep(jitter).await;
            debug!(target = %target.id, reason = %why, uri = %params.request_uri, "test call starts");
            // The target is free for its next test call as soon as this one has a verdict: the call
            // may linger ~2 s to ACK or hang up late answers, and a target that was hung a moment
            // ago must not wait that long for the test call that brings it back.
            let released = std::sync::atomic::AtomicBool::new(false);
            let release = || {
                if !released.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    let _ = done.send(target.id.clone());
                }
            };
            run_test_call(&target, &params, |verdict, details| {
                log_verdict(&target.id, why, verdict, details);
                let _ = reports.send(Report {
                    target: target.id.clone(),
                    reason: why,
                    verdict: verdict.clone(),
                    details: details.clone(),
                });
                release();
            })
            .await;
            release();
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
