//! Wiring: builds every part from the rules and runs them. The only module that knows them all.
//!
//! The app creates and owns what the parts share: the event bus, the metrics registry and the
//! [`Tasks`] every background task runs on (receive loops, TCP connections, call tasks, the
//! prober, the health applier, the sweep, the rules watcher, SIGHUP, the webhook, the admin
//! server, the undelivered-record writer). [`Running::shutdown`] cancels and joins them all.
//!
//! - `reload` — the [`Reloader`]: read, validate and swap in a new rules file (one at a time).
//! - `watch`  — reload triggers: SIGHUP and the rules-file watcher (the admin route is the third).
//! - `console` — the data behind the operator console at `GET /` (routes, traffic, undelivered,
//!   what-if).
//! - `route`  — `sosrouter route`: options and a running proxy's readiness -> the what-if answer.

use crate::config::Proto;
use crate::events::Bus;
use crate::health::{Health, ProbeTransport};
use crate::metrics::{self, Metrics};
use crate::proxy::{Dispatcher, Proxy, ProxyConfig, Services};
use crate::routing::{Listen, Rules};
use crate::tasks::Tasks;
use crate::transport::{Destination, ListenAddrs, Transport, TransportConfig};
use anyhow::{Context, anyhow};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod console;
pub mod reload;
pub mod route;
#[cfg(test)]
mod tests;
mod watch;

pub use reload::{Refused, Reloaded, Reloader, RulesStatus};
pub use watch::{WatchSettings, reload_on_sighup, watch_file};

/// How long a graceful shutdown waits for calls in flight before it stops anyway.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// After the drain, how long shutdown waits for every cancelled task to end (a blocking reload
/// or the undelivered writer's last write may still be under way).
pub const STOP_LIMIT: Duration = Duration::from_secs(1);

/// What `sosrouter run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub rules_path: PathBuf,
    /// Listen addresses from the command line; empty: the rules file's.
    pub listen: Vec<Listen>,
    pub undelivered_path: Option<PathBuf>,
    /// Admin HTTP listen address; None: no admin endpoint.
    pub admin: Option<SocketAddr>,
    /// Watch the rules file and reload it when it changes (the binary: on; tests: off unless
    /// they test the watcher).
    pub watch_rules: Option<WatchSettings>,
    /// `http://host:port/path` or `https://...` that receives every alert event as a JSON POST;
    /// None: no webhook.
    pub webhook: Option<String>,
    /// PEM file of CA certificates the webhook trusts for an https receiver, beside the system's.
    pub webhook_ca: Option<PathBuf>,
    /// File holding the admin bearer token (`--admin-token-file`). When None, the environment
    /// variable `SOSROUTER_ADMIN_TOKEN` is used if set. Required for a non-loopback admin address.
    pub admin_token_file: Option<PathBuf>,
    /// With a token: do reads (`/status`, `/events`, `/metrics`) need it too? None: yes (the
    /// default: they carry callers' numbers and locations). Ignored without a token.
    pub admin_token_for_reads: Option<bool>,
    /// Cluster mode (`--etcd`, `--node-id`): rules from etcd, hints shared; `rules_path` unused.
    pub cluster: Option<crate::cluster::Settings>,
    /// Run the prober on a thread of its own (the binary: yes; tests: on the test's runtime,
    /// whose clock they may pause, unless they test this).
    pub prober_thread: bool,
}

/// A running proxy: its parts, for the binary and for tests.
pub struct Running {
    pub proxy: Arc<Proxy>,
    pub transport: Transport,
    pub rules: Arc<ArcSwap<Rules>>,
    pub health: Health,
    /// Alert events (health, operator, reload, undelivered).
    pub events: Bus,
    /// The labelled metrics of the call path and reloads (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// Every background task of this proxy; [`Running::shutdown`] cancels and joins them.
    pub tasks: Tasks,
    /// The admin endpoint's address, when one was asked for.
    pub admin: Option<SocketAddr>,
    /// Replaces the running rules: the admin route, SIGHUP and the file watcher all use it.
    pub reloader: Reloader,
}

/// Probes leave through the proxy's own sockets (so replies come back to its receive loops).
struct ProbeVia(Transport);

impl ProbeTransport for ProbeVia {
    fn local_addr(&self, t: Proto) -> SocketAddr {
        self.0
            .local_addr(t)
            .or_else(|| self.0.local_addr(Proto::Udp))
            .or_else(|| self.0.local_addr(Proto::Tcp))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
    fn send(&self, t: Proto, to: SocketAddr, bytes: bytes::Bytes) {
        self.0.send(Destination::new(t, to), bytes);
    }
}

impl Running {
    pub fn local_addr(&self, proto: Proto) -> Option<SocketAddr> {
        self.transport.local_addr(proto)
    }

    /// Stops taking new calls (503 and Retry-After, TCP accept closed), lets calls in flight finish
    /// for at most `drain`, then cancels every task and waits at most [`STOP_LIMIT`] for them all
    /// to end. Returns true when every task ended (then `self.tasks.is_joined()`).
    pub async fn shutdown(&self, drain: Duration) -> bool {
        self.proxy.set_draining();
        self.transport.stop_accepting();
        let until = tokio::time::Instant::now() + drain;
        while self.proxy.calls_in_flight() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.proxy.calls_in_flight();
        if left > 0 {
            tracing::warn!(calls = left, "shutdown limit reached with calls in flight");
        }
        let joined = self.tasks.cancel_and_join(STOP_LIMIT).await;
        if joined {
            tracing::info!("stopped: every task ended");
        } else {
            tracing::warn!(
                tasks = self.tasks.len(),
                "tasks still running after the stop limit"
            );
        }
        joined
    }
}

/// Parses `udp:127.0.0.1:5060`, `tcp:[::1]:5060`, `tls:127.0.0.1:5061`.
pub fn parse_listen(s: &str) -> anyhow::Result<Listen> {
    let (proto, addr) = s.split_once(':').ok_or_else(|| {
        anyhow!("listen address `{s}`: expected udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT")
    })?;
    let transport = match proto {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        "tls" => Proto::Tls,
        _ => {
            return Err(anyhow!(
                "listen address `{s}`: transport must be udp, tcp or tls"
            ));
        }
    };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("listen address `{s}`: bad IP:PORT"))?;
    Ok(Listen { transport, addr })
}

/// Reads `opts.rules_path` (refusing it with every error) and starts the proxy on it, so that
/// `/status` shows the hash of the file that is running.
pub async fn start_from_file(opts: &RunOptions) -> anyhow::Result<Running> {
    let read = reload::read_rules(&opts.rules_path);
    match read.result {
        Ok((rules, warnings)) => {
            for w in warnings {
                tracing::warn!(reason = %w, "rules warning");
            }
            start_hashed(rules, read.hash, opts).await
        }
        Err(refused) => Err(anyhow!(refused)),
    }
}

/// Starts the proxy on already-parsed rules (their file hash unknown: `/status` shows null until
/// the first reload).
pub async fn start(rules: Rules, opts: &RunOptions) -> anyhow::Result<Running> {
    start_hashed(rules, None, opts).await
}

async fn start_hashed(
    rules: Rules,
    hash: Option<String>,
    opts: &RunOptions,
) -> anyhow::Result<Running> {
    let tasks = Tasks::new();
    let started = start_on(rules, hash, opts, tasks.clone()).await;
    if started.is_err() {
        // Whatever was started before the failure stops with it.
        tasks.cancel_and_join(STOP_LIMIT).await;
    }
    started
}

async fn start_on(
    rules: Rules,
    hash: Option<String>,
    opts: &RunOptions,
    tasks: Tasks,
) -> anyhow::Result<Running> {
    let listen = if opts.listen.is_empty() {
        rules.listen.clone()
    } else {
        opts.listen.clone()
    };
    let first = |p: Proto| listen.iter().find(|l| l.transport == p).map(|l| l.addr);
    let tcfg = TransportConfig::from_spec(&rules.protection.limits);
    let tls = load_tls(&rules)?;
    let addrs = ListenAddrs {
        udp: first(Proto::Udp),
        tcp: first(Proto::Tcp),
        tls: first(Proto::Tls),
    };
    let transport = Transport::bind_all(addrs, tls.clone(), tcfg, tasks.clone())
        .await
        .context("cannot bind the listen addresses")?;
    transport.set_tls_names(tls_names(&rules));
    let health = Health::new(&rules);
    // Listen addresses the file chose are fixed for the process; command-line ones make the file's moot.
    let bound_listen = opts.listen.is_empty().then(|| rules.listen.clone());
    let rules = Arc::new(ArcSwap::from_pointee(rules));
    let cfg = ProxyConfig {
        limits: tcfg.limits,
        undelivered_path: opts.undelivered_path.clone(),
    };
    let events = Bus::default();
    let metrics = Arc::new(Metrics::default());
    metrics.prepare_rules(&rules.load());
    health.start_applier(&tasks);
    let test_calls = start_test_calls(&rules, tls, &health, &tasks);
    health.set_probe_lateness(Arc::new(|d| metrics::PROBE_LATENESS.observe(d)));
    tasks.spawn_lateness_ticker(
        metrics::RUNTIME_TICK,
        Arc::new(|d| metrics::RUNTIME_LATENESS.observe(d)),
    );
    if let Some(url) = &opts.webhook {
        let hook = crate::events::WebhookOptions {
            url: url.clone(),
            ca_file: opts.webhook_ca.clone(),
        };
        tasks.spawn(events.start_webhook(&hook).map_err(|e| anyhow!(e))?);
    }
    let services = Services {
        metrics: metrics.clone(),
        events: events.clone(),
        tasks: tasks.clone(),
    };
    let proxy = Proxy::new(
        rules.clone(),
        health.clone(),
        transport.clone(),
        cfg,
        services,
    );
    health.set_change_sink(health_changes(events.clone(), Arc::downgrade(&proxy)));
    transport.start(Arc::new(Dispatcher(proxy.clone())));
    let sweeper = Arc::downgrade(&proxy);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(p) = sweeper.upgrade() else { return };
            p.sweep(tokio::time::Instant::now().into_std());
        }
    });
    for l in &listen {
        if let Some(a) = transport.local_addr(l.transport) {
            tracing::info!(transport = %l.transport, addr = %a, "listening");
        }
    }
    let probes = Arc::new(ProbeVia(transport.clone()));
    if opts.prober_thread {
        health.spawn_prober_on_thread(probes, &tasks);
    } else {
        health.spawn_prober(probes, &tasks);
    }
    let behind = transport.clone();
    health.set_own_backlog(Arc::new(move || behind.last_behind()));
    health.set_tls_source(tls_source(rules.clone(), transport.clone()));
    let reloader = Reloader::new(
        opts.rules_path.clone(),
        rules.clone(),
        hash,
        health.clone(),
        transport.clone(),
        bound_listen,
        (metrics.clone(), events.clone()),
    );
    reloader.set_test_calls(test_calls);
    if let Some(settings) = opts.watch_rules {
        watch_file(reloader.clone(), settings, &tasks);
    }
    let admin = match opts.admin {
        Some(addr) => {
            let (p, h, m, ev) = (
                Arc::downgrade(&proxy),
                health.clone(),
                metrics.clone(),
                events.clone(),
            );
            let weak = Arc::downgrade(&proxy);
            let console = console::Console::new(
                rules.clone(),
                health.clone(),
                Arc::new(move || weak.upgrade().map(|p| p.figures())),
                metrics.clone(),
                opts.undelivered_path.clone(),
            );
            console.spawn_sampler(&tasks);
            let scrape = move || {
                p.upgrade()
                    .map_or_else(String::new, |p| metrics::render(&p.figures(), &m, &h, &ev))
            };
            let admin = crate::admin::Admin {
                rules: Some(Arc::new(reloader.clone())),
                metrics: Some(Arc::new(scrape)),
                events: Some(events.clone()),
                console: Some(Arc::new(console)),
                ..crate::admin::Admin::new(health.clone(), tasks.clone())
            };
            Some(start_admin(addr, opts, crate::admin::router(admin), &tasks).await?)
        }
        None => None,
    };
    Ok(Running {
        proxy,
        transport,
        rules,
        health,
        events,
        metrics,
        tasks,
        admin,
        reloader,
    })
}

/// The `[tls]` files of `rules`, loaded (None without a `[tls]` section); every error refuses.
fn load_tls(rules: &Rules) -> anyhow::Result<Option<crate::transport::TlsMaterial>> {
    let Some(spec) = &rules.tls else {
        return Ok(None);
    };
    match crate::transport::tls::load(spec, &rules.source) {
        Ok((material, warnings)) => {
            for w in warnings {
                tracing::warn!(reason = %w, "tls warning");
            }
            Ok(Some(material))
        }
        Err(diags) => {
            let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            Err(anyhow!(
                "cannot load the [tls] files:\n{}",
                lines.join("\n")
            ))
        }
    }
}

/// The `tls_name` of every TLS target, by address (tel targets share their gateway's).
pub(crate) fn tls_names(rules: &Rules) -> std::collections::HashMap<SocketAddr, Arc<str>> {
    rules
        .targets
        .iter()
        .filter(|t| t.transport == Proto::Tls)
        .filter_map(|t| Some((t.next_hop, t.tls_name.clone()?)))
        .collect()
}

/// What `/status` and `/metrics` show of a TLS target's connections: the transport's figures for
/// its address in the running rules.
fn tls_source(rules: Arc<ArcSwap<Rules>>, transport: Transport) -> crate::health::TlsSource {
    Arc::new(move |id: &str| {
        let r = rules.load();
        let t = r.target(id)?;
        if t.transport != Proto::Tls {
            return None;
        }
        let f = transport.tls_figures(t.next_hop)?;
        Some(crate::health::TlsStatus {
            connections: f.connections,
            handshakes: f.handshakes,
            handshake_failures: f.handshake_failures,
            last_failure: f.last_failure,
        })
    })
}

/// `sosrouter check`'s TLS part: the `[tls]` files of valid rules, with their errors and expiry
/// warnings at the positions of their keys.
pub fn check_tls(rules: &Rules) -> Vec<crate::config::Diagnostic> {
    match &rules.tls {
        None => Vec::new(),
        Some(spec) => match crate::transport::tls::load(spec, &rules.source) {
            Ok((_, warnings)) => warnings,
            Err(diags) => diags,
        },
    }
}

/// What the test-call scheduler works from under `rules` and their `[tls]` files (given again on
/// every reload).
pub(crate) fn test_call_plan(
    rules: &Rules,
    tls: Option<crate::transport::TlsMaterial>,
) -> crate::testcall::Plan {
    let mut plan = crate::testcall::Plan::new(rules.test_calls.clone(), rules.targets.clone());
    plan.recovery_pace =
        std::time::Duration::from_millis(rules.suspicion.recovery_test_interval_ms);
    plan.tls = tls;
    plan
}

/// Test calls (RFC 6881 §15): health asks for them (suspicion, recovery), the test-call module places
/// them on its own sockets, and every verdict goes back to health over its channel.
fn start_test_calls(
    rules: &Arc<ArcSwap<Rules>>,
    tls: Option<crate::transport::TlsMaterial>,
    health: &Health,
    tasks: &Tasks,
) -> crate::testcall::TestCalls {
    use crate::health::{Observation, SuspectWhy, TestResult, TestWhy};
    use crate::testcall::{TestCalls, TestReason, Verdict};
    let now = rules.load();
    let settings = now.test_calls.clone();
    let (calls, mut reports) = TestCalls::spawn(test_call_plan(&now, tls), tasks);
    let handle = calls.clone();
    let current = rules.clone();
    let sink = Arc::new(move |id: &str, why: TestWhy| {
        let reason = match why {
            TestWhy::Recovery => TestReason::Recovering,
            TestWhy::Suspect(SuspectWhy::Overdue) => TestReason::Overdue,
            TestWhy::Suspect(SuspectWhy::FailedCall) => TestReason::FailedCalls,
            TestWhy::Suspect(SuspectWhy::Domain) => TestReason::DomainSuspect,
            TestWhy::Suspect(SuspectWhy::ShortCalls) => TestReason::ShortCalls,
        };
        if let Some(t) = current.load().target(id) {
            calls.request(t.clone(), reason);
        }
    });
    health.set_test_calls(sink, settings.enabled);
    let health = health.clone();
    tasks.spawn(async move {
        while let Some(r) = reports.recv().await {
            let result = match &r.verdict {
                Verdict::Good => TestResult::Good,
                Verdict::MediaFailed => TestResult::MediaFailed,
                Verdict::CallPathFailed(_) => TestResult::CallPathFailed,
                Verdict::Inconclusive(_) => TestResult::Inconclusive,
                Verdict::NotPlaced(why) => {
                    tracing::warn!(target = %r.target, why = %why, "test call not placed");
                    continue;
                }
            };
            tracing::info!(target = %r.target, reason = ?r.reason, verdict = ?r.verdict, "test call");
            let placed_ago = std::time::Duration::from_millis(r.details.elapsed_ms);
            health.observe(&r.target, Observation::TestCall { result, placed_ago });
        }
    });
    handle
}

/// Whether a target went down because it stopped answering (contract point 3a of `proxy/call.rs`):
/// probes time out or draw transport errors, a test call got no answer (or a 408/5xx, a transport
/// error), or real calls timed out. Not a PSAP that answers with failure codes: it is alive, and a
/// call ringing there may still be picked up.
fn stopped_answering(reason: crate::health::Reason) -> bool {
    use crate::health::{Outcome, ProbeFailure, Reason, TestResult};
    match reason {
        Reason::ProbeFailures { last, .. } => {
            matches!(last, ProbeFailure::Timeout | ProbeFailure::TransportError)
        }
        Reason::TestCall(r) => r == TestResult::CallPathFailed,
        Reason::CallFailures { last, .. } => matches!(
            last,
            Outcome::AttemptTimeout | Outcome::RingTimeout | Outcome::TransportError
        ),
        _ => false,
    }
}

/// Health changes become alert events; a target that stopped answering probes also fails over the
/// calls still trying or ringing there (`proxy/call.rs`, contract point 3a).
fn health_changes(
    bus: crate::events::Bus,
    proxy: std::sync::Weak<crate::proxy::Proxy>,
) -> crate::health::ChangeSink {
    use crate::events::Event;
    use crate::health::{Change, State};
    Arc::new(move |c: Change<'_>| {
        if let Change::Health { target, transition } = c
            && transition.to == State::Down
            && stopped_answering(transition.reason)
            && let Some(p) = proxy.upgrade()
        {
            p.target_down(target);
        }
        bus.publish(match c {
            Change::Health {
                target,
                transition: t,
            } => {
                let (from, to) = (t.from.to_string(), t.to.to_string());
                Event::health(target, &from, &to, &t.reason.to_string())
            }
            Change::Operator { target, enabled } => Event::operator(target, enabled),
            Change::Systemic(r) => Event::systemic(
                r.active,
                r.domain.as_deref(),
                &r.sentence,
                serde_json::to_value(r).unwrap_or_default(),
            ),
        })
    })
}

/// The admin endpoint. It can switch targets off: on a non-loopback address it needs a token.
async fn start_admin(
    addr: SocketAddr,
    opts: &RunOptions,
    router: axum::Router,
    tasks: &Tasks,
) -> anyhow::Result<SocketAddr> {
    let env = std::env::var("SOSROUTER_ADMIN_TOKEN").ok();
    let token = crate::admin::load_token(opts.admin_token_file.as_deref(), env.as_deref())?;
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(anyhow!(
            "admin address {addr} is not loopback and no admin token is configured: the admin endpoint can switch targets off; set --admin-token-file or SOSROUTER_ADMIN_TOKEN, or listen on 127.0.0.0/8 or ::1"
        ));
    }
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the admin address {addr}"))?;
    let bound = l.local_addr()?;
    let access = crate::admin::Access {
        reads: opts.admin_token_for_reads.unwrap_or(true),
        ..crate::admin::Access::new(token)
    };
    let (authed, reads) = (access.token.is_some(), access.reads);
    crate::admin::serve(l, router, access, crate::admin::Limits::default(), tasks);
    tracing::info!(addr = %bound, token = authed, token_for_reads = authed && reads, "admin endpoint listening");
    Ok(bound)
}

/// The reloader as the cluster's rules sink: an etcd version is validated and swapped in exactly
/// as a reloaded file is.
struct EtcdRules(Reloader);

impl crate::cluster::RulesSink for EtcdRules {
    fn apply(&self, version: u64, text: &str, source: &str) -> Result<String, Vec<String>> {
        self.0
            .apply_text(version, text, source, "etcd")
            .map(|r| r.hash)
            .map_err(|e| e.errors)
    }
}

/// How long a node waits for etcd at start before it falls back to its rules cache.
pub const ETCD_BOOT_WAIT: Duration = Duration::from_secs(3);

/// Cluster mode: starts on etcd's current rules (or the local cache when etcd does not answer),
/// then follows etcd on a background task. Refuses to start when neither gives loadable rules.
pub async fn start_cluster(opts: &RunOptions) -> anyhow::Result<Running> {
    use crate::cluster::{self, cache};
    let Some(settings) = opts.cluster.clone() else {
        return Err(anyhow!("start_cluster without cluster settings"));
    };
    let boot = cluster::boot(&settings, ETCD_BOOT_WAIT)
        .await
        .map_err(|e| anyhow!(e))?;
    let source = |v: u64| {
        format!(
            "etcd:{}",
            cluster::keys::Keys::new(&settings.prefix).version(v)
        )
    };
    let mut read = reload::parse_text(&boot.text, &source(boot.version));
    let mut boot = boot;
    if let (Err(refused), "etcd") = (&read.result, boot.from) {
        // A node never runs what it cannot load: its cache, if it has one, else refuse.
        let errors = refused.errors.join("\n");
        match cache::load(&settings.cache) {
            Ok(Some(c)) => {
                tracing::error!(version = boot.version, %errors,
                    "the current rules version in etcd does not load here; starting on the cached version");
                read = reload::parse_text(&c.text, &source(c.version));
                boot.version = c.version;
                boot.from = "cache";
            }
            _ => {
                return Err(anyhow!(
                    "cannot start: rules version {} from etcd does not load here, and there is no usable rules cache:\n{errors}",
                    boot.version
                ));
            }
        }
    }
    let (rules, warnings) = read.result.map_err(|r| anyhow!(r))?;
    for w in warnings {
        tracing::warn!(reason = %w, "rules warning");
    }
    let mut o = opts.clone();
    o.rules_path = settings.cache.clone();
    o.watch_rules = None;
    let hash = read.hash.clone().unwrap_or_default();
    let running = start_hashed(rules, read.hash, &o).await?;
    running.reloader.set_version(boot.version);
    if boot.from == "etcd" {
        let c = cache::Cached {
            version: boot.version,
            hash: hash.clone(),
            text: boot.text.clone(),
            saved_unix_ms: 0,
        };
        if let Err(e) = cache::save(&settings.cache, &c) {
            tracing::warn!(cache = %settings.cache.display(), error = %e, "cannot write the rules cache");
        }
    } else {
        let why = boot.etcd_error.clone().unwrap_or_default();
        tracing::warn!(event = "started-from-cache", version = boot.version,
            cache = %settings.cache.display(), %why, "etcd unreachable at start: running the cached rules");
        running.events.publish(crate::events::Event::cluster(
            "started-from-cache",
            &format!(
                "started on cached rules version {} ({}): {why}",
                boot.version,
                settings.cache.display()
            ),
        ));
    }
    tracing::info!(node = %settings.node_id, version = boot.version, from = boot.from, %hash,
        "cluster node started");
    let handle = cluster::spawn(
        settings,
        (boot.version, hash),
        Arc::new(EtcdRules(running.reloader.clone())),
        running.health.clone(),
        running.events.clone(),
        &running.tasks,
    )
    .map_err(|e| anyhow!(e))?;
    running.reloader.set_cluster(handle);
    Ok(running)
}

/// `sosrouter run`: starts, serves until SIGINT or SIGTERM, drains (at most [`DRAIN_LIMIT`]),
/// then stops and joins every task (at most [`STOP_LIMIT`] more).
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let running = if opts.cluster.is_some() {
        start_cluster(&opts).await?
    } else {
        start_from_file(&opts).await?
    };
    reload_on_sighup(running.reloader.clone(), &running.tasks)
        .context("cannot install the SIGHUP handler")?;
    wait_for_signal().await?;
    tracing::info!("shutting down: new calls refused, calls in flight finishing");
    running.shutdown(DRAIN_LIMIT).await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

#[cfg(test)]
mod stopped_answering_tests {
    use super::stopped_answering;
    use crate::health::{Outcome, ProbeFailure, Reason, TestResult};

    /// Contract point 3a fires for a target that went silent, never for one answering with codes.
    #[test]
    fn only_silence_cuts_ringing_calls() {
        let probes = |last| Reason::ProbeFailures { count: 2, last };
        let calls = |last| Reason::CallFailures { count: 3, last };
        assert!(stopped_answering(probes(ProbeFailure::Timeout)));
        assert!(stopped_answering(probes(ProbeFailure::TransportError)));
        assert!(!stopped_answering(probes(ProbeFailure::Code(503))));
        assert!(stopped_answering(Reason::TestCall(
            TestResult::CallPathFailed
        )));
        assert!(!stopped_answering(Reason::TestCall(
            TestResult::MediaFailed
        )));
        assert!(stopped_answering(calls(Outcome::AttemptTimeout)));
        assert!(stopped_answering(calls(Outcome::RingTimeout)));
        assert!(!stopped_answering(calls(Outcome::FailureResponse(503))));
    }
}
