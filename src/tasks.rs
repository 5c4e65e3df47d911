//! The process's background tasks, owned in one place. `app` creates one [`Tasks`] and hands clones
//! to every part that starts a task (receive loops, TCP connections, the prober, the health
//! applier, call tasks, the webhook, the admin server, the rules watcher); nothing is spawned
//! detached. Shutdown cancels the one token and joins every task through the one tracker.
//!
//! [`Tasks::spawn_lateness_ticker`] measures the runtime itself: a task that sleeps a short fixed
//! interval and reports how late it woke. A runtime thread blocked (a sync call, a long lock, a
//! burst of work in one task) shows up there as lateness, whatever the blocked thread was doing.
//!
//! [`Tasks::spawn_blocking`] is for background work only (rules reloads, the `/status` and
//! `/metrics` pages, etcd applies and cache writes): it runs on a thread of its own at nice 10
//! ([`BACKGROUND_PRIORITY`]), so that under CPU contention the runtime threads, which carry the
//! calls, win the CPU from it. In the reload drill (`testbeds/run scale-reload`: an 18 000-target
//! file reloaded four times while 1 000 calls/s flow, on two cores shared with SIPp) a reload at
//! the runtime's own priority took a core for about a second and delayed 600 to 1 150 of the
//! 30 000 calls by more than 50 ms; niced, 27 to 145 (and 0 to 4 in four runs of five once the
//! `/status` page was also serialized here, README "Performance at size").
//!
//! Imports nothing of the crate.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the lateness ticker's measurements go (the wiring points it at a histogram).
pub type LatenessSink = std::sync::Arc<dyn Fn(Duration) + Send + Sync>;

/// A tracker and a cancellation token. Cheap to clone; every clone spawns onto the same tracker.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    token: CancellationToken,
    /// The runtime [`Tasks::new`] ran in: tasks spawned from a thread of their own
    /// ([`Tasks::spawn_on_thread`]) land there too, not on that thread.
    runtime: Option<tokio::runtime::Handle>,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks {
            runtime: tokio::runtime::Handle::try_current().ok(),
            ..Tasks::default()
        }
    }

    /// Spawns a tracked task that runs until it ends or shutdown cancels it (it is then dropped at
    /// its next `.await`). Spawned after cancellation, it does not run at all.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = self.cancellable(fut);
        match &self.runtime {
            Some(rt) => drop(self.tracker.spawn_on(task, rt)),
            None => drop(self.tracker.spawn(task)),
        }
    }

    /// `fut`, ended by the token.
    fn cancellable<F>(&self, fut: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        async move {
            tokio::select! {
                biased;
                () = token.cancelled() => {}
                () = fut => {}
            }
        }
    }

    /// Like [`Tasks::spawn`], but on a thread of its own (`name`) with a one-thread runtime, at
    /// the process's priority: for a task with steady work of its own that the calls must not
    /// queue behind on the runtime's threads, nor it behind them (the prober: at 18 000 targets,
    /// 12 000 OPTIONS and as many deadlines a second). What it spawns goes to the main runtime.
    /// The thread ends when the task does. When no thread can be started, the task runs on the
    /// runtime like any other.
    pub fn spawn_on_thread<F>(&self, name: &str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = self.tracker.track_future(self.cancellable(fut));
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(task)));
        let take = |slot: &std::sync::Mutex<Option<_>>| {
            slot.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        };
        let theirs = slot.clone();
        let started = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| {
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn(move || {
                        if let Some(task) = take(&theirs) {
                            rt.block_on(task);
                        }
                    })
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, task = name, "no thread of its own: running on the runtime");
            if let Some(task) = take(&slot) {
                match &self.runtime {
                    Some(rt) => drop(rt.spawn(task)),
                    None => drop(tokio::spawn(task)),
                }
            }
        }
    }

    /// Spawns a tracked task that is NOT dropped on cancellation: it must watch [`Tasks::token`]
    /// itself and end soon after it fires (for a task with something to finish, such as a file
    /// writer flushing its queue).
    pub fn spawn_watching<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Runs background work `f` off the runtime, tracked (shutdown waits for it; it cannot be
    /// cancelled): a thread of tokio's blocking pool starts a thread of its own for `f` at
    /// background priority and waits for it (module doc). The pool's thread keeps its priority:
    /// `block_in_place` may hand it a runtime worker's duties later, and those must not be niced.
    pub fn spawn_blocking<F, T>(&self, f: F) -> tokio::task::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let work = move || in_background_thread(f);
        match &self.runtime {
            Some(rt) => self.tracker.spawn_blocking_on(work, rt),
            None => self.tracker.spawn_blocking(work),
        }
    }

    /// Fires when shutdown begins.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Cancels every task and waits until all have ended, at most `limit`. True when all ended.
    /// Closes the tracker: tasks spawned afterwards are still tracked, but end at once.
    pub async fn cancel_and_join(&self, limit: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Spawns the runtime lateness ticker: sleeps until `every` after its last wake, then hands
    /// `sink` how late it woke against that deadline (zero when on time). Runs until shutdown.
    pub fn spawn_lateness_ticker(&self, every: Duration, sink: LatenessSink) {
        self.spawn(async move {
            loop {
                let due = tokio::time::Instant::now() + every;
                tokio::time::sleep_until(due).await;
                sink(tokio::time::Instant::now().saturating_duration_since(due));
            }
        });
    }

    /// True once [`Tasks::cancel_and_join`] has run and every task has ended.
    pub fn is_joined(&self) -> bool {
        self.tracker.is_closed() && self.tracker.is_empty()
    }
}

/// Priority of background work on `thread_priority`'s cross-platform scale (0..=99): nice 10 on
/// Linux under the default policy. A nice-10 thread gets about a tenth of a CPU against nice-0
/// threads that want it all, so a reload still finishes under full load, only later.
pub const BACKGROUND_PRIORITY: u8 = 22;

/// Runs `f` on a new thread at [`BACKGROUND_PRIORITY`] and returns what it returned (a panic in
/// `f` unwinds here). When no thread can be started, `f` runs on the calling thread.
fn in_background_thread<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let slot = std::sync::Mutex::new(Some(f));
    let take = || {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    };
    let ran = std::thread::scope(|s| {
        let started = std::thread::Builder::new()
            .name("sos-background".into())
            .spawn_scoped(s, || {
                background_priority();
                take().map(|f| f())
            });
        match started {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => {
                tracing::debug!(error = %e, "no background thread: running on the pool's");
                None
            }
        }
    });
    match ran.or_else(|| take().map(|f| f())) {
        Some(v) => v,
        // `f` is taken once: by the thread that ran it, or here when none could start.
        None => unreachable!("background work taken twice"),
    }
}

/// Nice value [`BACKGROUND_PRIORITY`] gives on Linux.
const BACKGROUND_NICE: i64 = 10;

/// Lowers the calling thread to [`BACKGROUND_PRIORITY`] (always allowed: only raising a
/// priority needs privileges), unless the thread already runs at nice 10 or more (then it is
/// left alone: setting nice 10 would raise its priority). Failing that, the work runs as it is.
fn background_priority() {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    if own_nice().is_some_and(|n| n >= BACKGROUND_NICE) {
        return;
    }
    if let Ok(p) = BACKGROUND_PRIORITY.try_into()
        && let Err(e) = set_current_thread_priority(ThreadPriority::Crossplatform(p))
    {
        tracing::debug!(error = ?e, "background priority not set");
    }
}

/// The calling thread's nice value (Linux: field 19 of `/proc/thread-self/stat`).
fn own_nice() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name's closing parenthesis start at field 3 (state).
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(16)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_now() -> i64 {
        own_nice().unwrap()
    }

    #[test]
    fn background_work_runs_niced_and_the_pool_thread_keeps_its_priority() {
        // One blocking-pool thread, so the raw spawn_blocking after ours runs on the same thread.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        rt.block_on(async {
            let tasks = Tasks::new();
            let before = nice_now();
            let (nice, name) = tasks
                .spawn_blocking(|| (nice_now(), std::thread::current().name().map(String::from)))
                .await
                .unwrap();
            assert_eq!(
                nice,
                before.max(BACKGROUND_NICE),
                "background work at nice 10 (or lower)"
            );
            assert_eq!(name.as_deref(), Some("sos-background"));
            let pool = tokio::task::spawn_blocking(nice_now).await.unwrap();
            assert_eq!(pool, before, "the pool's thread is not niced");
            assert_eq!(nice_now(), before, "the runtime thread is not niced");
            let value = tasks.spawn_blocking(|| 41 + 1).await.unwrap();
            assert_eq!(value, 42, "the result comes back");
            let failed = tasks
                .spawn_blocking(|| -> u8 { panic!("background work panicked") })
                .await;
            assert!(failed.unwrap_err().is_panic(), "a panic comes back as one");
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_task_on_a_thread_of_its_own_spawns_onto_the_runtime_and_ends_at_shutdown() {
        let tasks = Tasks::new();
        let name = |t: &std::thread::Thread| t.name().map(String::from);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t = tasks.clone();
        tasks.spawn_on_thread("sos-test-own", async move {
            let own = name(&std::thread::current());
            let (tx2, rx2) = tokio::sync::oneshot::channel();
            t.spawn(async move {
                let _ = tx2.send(name(&std::thread::current()));
            });
            let spawned = rx2.await.ok().flatten();
            let _ = tx.send((own, spawned));
            std::future::pending::<()>().await;
        });
        let (own, spawned) = rx.await.expect("the task ran");
        assert_eq!(own.as_deref(), Some("sos-test-own"));
        assert_eq!(
            spawned.as_deref(),
            Some("tokio-rt-worker"),
            "what it spawns runs on the main runtime"
        );
        assert_eq!(tasks.len(), 1, "tracked");
        assert!(tasks.cancel_and_join(Duration::from_secs(5)).await);
        assert!(
            tasks.is_joined(),
            "cancelled with the others, and waited for"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_and_join_ends_loops_and_waits_for_watchers() {
        let tasks = Tasks::new();
        tasks.spawn(std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let token = tasks.token().clone();
        tasks.spawn_watching(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(());
        });
        assert_eq!(tasks.len(), 2);
        assert!(tasks.cancel_and_join(Duration::from_secs(1)).await);
        assert!(tasks.is_joined());
        assert!(
            rx.await.is_ok(),
            "the watcher finished its work before the join returned"
        );
        tasks.spawn(async { unreachable!("spawned after cancellation: never polled") });
        tokio::task::yield_now().await;
        assert!(tasks.cancel_and_join(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lateness_ticker_reports_each_wake_and_how_late_it_was() {
        use std::sync::{Arc, Mutex};
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tasks = Tasks::new();
        let s = seen.clone();
        tasks.spawn_lateness_ticker(
            Duration::from_millis(10),
            Arc::new(move |d| s.lock().unwrap().push(d)),
        );
        // Paused time: each wake is exactly on time.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = seen.lock().unwrap().len();
        assert!((4..=5).contains(&n), "one report per 10 ms, got {n}");
        assert!(seen.lock().unwrap().iter().all(|d| d.is_zero()));
        // A runtime thread blocked for 300 ms: the ticker's next wake is reported that late.
        tokio::time::advance(Duration::from_millis(300)).await;
        tokio::task::yield_now().await;
        let last = *seen.lock().unwrap().last().unwrap();
        let due_before = Duration::from_millis(10);
        assert!(
            last >= Duration::from_millis(300) - due_before && last <= Duration::from_millis(300),
            "lateness {last:?} after a 300 ms jump"
        );
        assert!(tasks.cancel_and_join(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_token_bounds_the_join() {
        let tasks = Tasks::new();
        tasks.spawn_watching(std::future::pending());
        assert!(!tasks.cancel_and_join(Duration::from_secs(1)).await);
        assert_eq!(tasks.len(), 1);
    }
}
