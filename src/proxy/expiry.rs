//! Per-entry expiry: a wheel of time buckets (10 ms each) holding the keys due in that bucket.
//! Scheduling is O(log buckets); draining costs only the entries that are due, never a walk of
//! every finished transaction or relay (issue #17 item 3). The owner checks each fired key against
//! its table (an entry may have been refreshed or replaced since), so a stale item costs nothing more
//! than one lookup.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bucket width: items fire at most this late, never early.
pub(super) const TICK: Duration = Duration::from_millis(10);

pub(super) struct Wheel<T> {
    origin: Instant,
    buckets: Mutex<BTreeMap<u64, Vec<T>>>,
    /// Woken when an item is scheduled earlier than everything already due.
    pub(super) sooner: tokio::sync::Notify,
}

impl<T> Wheel<T> {
    pub(super) fn new(origin: Instant) -> Wheel<T> {
        Wheel {
            origin,
            buckets: Mutex::new(BTreeMap::new()),
            sooner: tokio::sync::Notify::new(),
        }
    }

    /// Bucket of `at`, rounded up so nothing fires before its time.
    fn bucket(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let t = TICK.as_nanos();
        (d.as_nanos().div_ceil(t)).min(u64::MAX as u128) as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<T>>> {
        // A panic elsewhere while holding the lock leaves the map consistent (pushes and pops only).
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires `item` at or just after `at`.
    pub(super) fn schedule(&self, at: Instant, item: T) {
        let b = self.bucket(at);
        let sooner = {
            let mut m = self.lock();
            let first = m.keys().next().copied();
            m.entry(b).or_default().push(item);
            first.is_none_or(|f| b < f)
        };
        if sooner {
            self.sooner.notify_one();
        }
    }

    /// Removes and returns every item due at `now`.
    pub(super) fn take_due(&self, now: Instant) -> Vec<T> {
        // Items in bucket b are due at origin + b*TICK >= their time.
        let d = now.saturating_duration_since(self.origin);
        let cur = (d.as_nanos() / TICK.as_nanos()).min(u64::MAX as u128) as u64;
        let mut m = self.lock();
        let later = m.split_off(&cur.saturating_add(1));
        let due = std::mem::replace(&mut *m, later);
        drop(m);
        due.into_values().flatten().collect()
    }

    /// When the earliest item is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let first = self.lock().keys().next().copied()?;
        let nanos = u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX);
        Some(self.origin + Duration::from_nanos(first.saturating_mul(nanos)))
    }

    /// Items waiting (for tests and table checks).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant as TInstant;

    fn now() -> Instant {
        TInstant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn items_fire_at_their_time_never_early() {
        let w = Wheel::new(now());
        let t0 = now();
        w.schedule(t0 + Duration::from_millis(500), "a");
        w.schedule(t0 + Duration::from_secs(32), "b");
        w.schedule(t0 + Duration::from_millis(505), "c");
        assert_eq!(w.len(), 3);
        assert_eq!(w.next_due(), Some(t0 + Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(w.take_due(now()).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(w.take_due(now()), vec!["a"]);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(w.take_due(now()), vec!["c"]);
        assert_eq!(w.len(), 1);
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(w.take_due(now()), vec!["b"]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn draining_costs_only_due_items() {
        let w = Wheel::new(now());
        let t0 = now();
        for i in 0..10_000u32 {
            w.schedule(
                t0 + Duration::from_millis(100 + u64::from(i % 1000) * 32),
                i,
            );
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        let due = w.take_due(now());
        assert_eq!(due.len(), 10, "only the first bucket's items");
        assert_eq!(w.len(), 9_990);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_item_wakes_the_driver() {
        let w = std::sync::Arc::new(Wheel::new(now()));
        w.schedule(now() + Duration::from_secs(30), 1);
        // Consume the permit of the first schedule.
        w.sooner.notified().await;
        let w2 = w.clone();
        let waiter = tokio::spawn(async move { w2.sooner.notified().await });
        tokio::task::yield_now().await;
        w.schedule(now() + Duration::from_secs(60), 2); // later: no wake needed
        w.schedule(now() + Duration::from_secs(1), 3); // sooner: wakes
        waiter.await.expect("woken");
        assert_eq!(w.next_due(), Some(now() + Duration::from_secs(1)));
    }
}
