//! Answered calls until their BYE: which target answered and when, so that health sees how long each
//! answered call lasted (a rise of calls that end within seconds of their 2xx is the sign of an
//! answering point whose media is dead: the caller hears nothing and hangs up).
//!
//! Bounded: at most `cap` entries; when full, entries older than `keep` are dropped first (a call
//! that lasted that long is not short, whatever happens to it later).

use crate::routing::TargetId;
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(super) struct Answered {
    map: DashMap<Bytes, (TargetId, Instant)>,
    /// Entries, kept beside the map: `DashMap::len` read-locks every shard, too much per call.
    len: AtomicUsize,
    cap: usize,
}

impl Answered {
    pub(super) fn new(cap: usize) -> Answered {
        Answered {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            cap: cap.max(1),
        }
    }

    /// The call `call_id` was answered by `target` at `at`.
    pub(super) fn answered(&self, call_id: &[u8], target: TargetId, at: Instant, keep: Duration) {
        if self.len.load(Ordering::Relaxed) >= self.cap {
            self.map
                .retain(|_, (_, t)| at.saturating_duration_since(*t) < keep);
            self.len.store(self.map.len(), Ordering::Relaxed);
            if self.map.len() >= self.cap {
                return;
            }
        }
        let old = self
            .map
            .insert(Bytes::copy_from_slice(call_id), (target, at));
        if old.is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The dialog `call_id` ended (a BYE from either side): who answered it and how long it lasted.
    pub(super) fn ended(&self, call_id: &[u8], now: Instant) -> Option<(TargetId, Duration)> {
        let (_, (target, at)) = self.map.remove(call_id)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some((target, now.saturating_duration_since(at)))
    }

    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bye_gives_the_target_and_the_length_once() {
        let a = Answered::new(4);
        let t0 = Instant::now();
        a.answered(b"c1", "psap".into(), t0, Duration::from_secs(5));
        let (t, d) = a.ended(b"c1", t0 + Duration::from_millis(1500)).unwrap();
        assert_eq!((&*t, d), ("psap", Duration::from_millis(1500)));
        assert!(
            a.ended(b"c1", t0).is_none(),
            "a retransmitted BYE counts once"
        );
    }

    #[test]
    fn bounded_old_entries_go_first() {
        let a = Answered::new(2);
        let t0 = Instant::now();
        let keep = Duration::from_secs(5);
        a.answered(b"old", "x".into(), t0, keep);
        a.answered(b"new", "x".into(), t0 + Duration::from_secs(4), keep);
        a.answered(b"third", "x".into(), t0 + Duration::from_secs(6), keep);
        assert_eq!(a.len(), 2);
        assert!(a.ended(b"old", t0).is_none());
        assert!(a.ended(b"third", t0).is_some());
    }
}
