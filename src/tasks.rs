//! The process's background tasks, owned in one place. `app` creates one [`Tasks`] and hands clones
//! to every part that starts a task (receive loops, TCP connections, the prober, the health
//! applier, call tasks, the webhook, the admin server, the rules watcher); nothing is spawned
//! detached. Shutdown cancels the one token and joins every task through the one tracker.
//!
//! [`Tasks::spawn_lateness_ticker`] measures the runtime itself: a task that sleeps a short fixed
//! interval and reports how late it woke. A runtime thread blocked (a sync call, a long lock, a
//! burst of work in one task) shows up there as lateness, whatever the blocked thread was doing.
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
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Spawns a tracked task that runs until it ends or shutdown cancels it (it is then dropped at
    /// its next `.await`). Spawned after cancellation, it does not run at all.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = token.cancelled() => {}
                () = fut => {}
            }
        });
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

    /// Runs `f` on tokio's blocking pool, tracked (shutdown waits for it; it cannot be cancelled).
    pub fn spawn_blocking<F, T>(&self, f: F) -> tokio::task::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tracker.spawn_blocking(f)
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

#[cfg(test)]
mod tests {
    use super::*;

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
