//! The process's background tasks, owned in one place. `app` creates one [`Tasks`] and hands clones
//! to every part that starts a task (receive loops, TCP connections, the prober, the health
//! applier, call tasks, the webhook, the admin server, the rules watcher); nothing is spawned
//! detached. Shutdown cancels the one token and joins every task through the one tracker.
//!
//! Imports nothing of the crate.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    async fn a_task_that_ignores_the_token_bounds_the_join() {
        let tasks = Tasks::new();
        tasks.spawn_watching(std::future::pending());
        assert!(!tasks.cancel_and_join(Duration::from_secs(1)).await);
        assert_eq!(tasks.len(), 1);
    }
}
