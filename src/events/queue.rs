//! A bounded queue that drops its oldest item when full: the webhook's backlog. Pushing never
//! waits (a std mutex held for a `VecDeque` push, never across an `.await`); the consumer awaits.
//!
//! Why drop the oldest: when the receiver has been unreachable long enough to fill the queue, the
//! newest events describe the state operators must act on now.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

pub struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    cap: usize,
    ready: Notify,
    dropped: AtomicU64,
}

impl<T> Queue<T> {
    /// A queue of at most `cap` items (at least 1).
    pub fn new(cap: usize) -> Queue<T> {
        let cap = cap.max(1);
        Queue {
            items: Mutex::new(VecDeque::with_capacity(cap)),
            cap,
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends `v`; when full, drops the oldest first. Returns true when one was dropped.
    pub fn push(&self, v: T) -> bool {
        let dropped = {
            let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
            let full = q.len() >= self.cap;
            if full {
                q.pop_front();
            }
            q.push_back(v);
            full
        };
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        // One stored permit if the consumer is not waiting yet: it cannot miss this push.
        self.ready.notify_one();
        dropped
    }

    pub fn try_pop(&self) -> Option<T> {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// The oldest item, waiting for one if empty.
    pub async fn pop(&self) -> T {
        loop {
            if let Some(v) = self.try_pop() {
                return v;
            }
            self.ready.notified().await;
        }
    }

    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
