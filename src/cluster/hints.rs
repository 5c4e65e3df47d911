//! Health hints: what each node publishes of its targets, and how a node merges its peers' hints.
//!
//! A node writes one [`Snapshot`] under `P/hints/ID`, bound to its lease: every few seconds, and
//! soon after any local health change. The snapshot is bounded ([`MAX_TARGETS`] entries, not-up
//! targets first; reasons cut at [`MAX_REASON`] bytes), so one key never grows with the rules.
//!
//! Merge rule: a peer's `down` or `suspect` for a target is *news* when that peer did not report
//! that target bad before, or reports a new episode (another `since`). Each piece of news makes
//! the target suspect here and asks for this node's own test call; it never takes it down (the
//! paths from two sites differ). A repeated snapshot with the same episode is not news, so a peer
//! that keeps a target down does not keep this node test-calling it more than its own health asks.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub const MAX_TARGETS: usize = 512;
pub const MAX_REASON: usize = 160;

/// One target as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub target: String,
    /// `up`, `suspect`, `down` or `recovering`.
    pub state: String,
    /// When it entered that state, Unix ms (identifies the episode).
    pub since_unix_ms: u64,
    pub reason: String,
}

/// Everything one node publishes about its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub node: String,
    pub unix_ms: u64,
    /// Rules version the node ran when it wrote this.
    pub rules_version: u64,
    pub targets: Vec<Hint>,
    /// How many targets did not fit.
    pub omitted: usize,
}

fn bad(state: &str) -> bool {
    matches!(state, "down" | "suspect")
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Snapshot {
    /// A bounded snapshot: not-up targets first (they are what peers act on), then the rest.
    pub fn bounded(node: &str, unix_ms: u64, rules_version: u64, mut all: Vec<Hint>) -> Snapshot {
        all.sort_by_key(|h| h.state == "up");
        let omitted = all.len().saturating_sub(MAX_TARGETS);
        all.truncate(MAX_TARGETS);
        for h in &mut all {
            h.reason = cut(&h.reason, MAX_REASON);
        }
        Snapshot {
            node: node.to_string(),
            unix_ms,
            rules_version,
            targets: all,
            omitted,
        }
    }
}

/// A peer's report this node acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct News {
    pub node: String,
    pub target: String,
    pub state: String,
    pub reason: String,
}

/// What this node knows of its peers' bad targets: (node, target) -> (state, since).
#[derive(Debug, Default)]
pub struct Merge {
    bad: HashMap<(String, String), (String, u64)>,
    /// Every peer's last snapshot, for `/status`.
    last: BTreeMap<String, Snapshot>,
}

impl Merge {
    /// Takes a peer's snapshot (never this node's own: `me`); returns the news in it.
    pub fn update(&mut self, me: &str, snap: Snapshot) -> Vec<News> {
        if snap.node == me {
            return Vec::new();
        }
        let node = snap.node.clone();
        let mut news = Vec::new();
        let mut still_bad = Vec::new();
        for h in snap.targets.iter().filter(|h| bad(&h.state)) {
            let key = (node.clone(), h.target.clone());
            let episode = (h.state.clone(), h.since_unix_ms);
            if self.bad.get(&key) != Some(&episode) {
                news.push(News {
                    node: node.clone(),
                    target: h.target.clone(),
                    state: h.state.clone(),
                    reason: h.reason.clone(),
                });
            }
            self.bad.insert(key.clone(), episode);
            still_bad.push(key);
        }
        self.bad.retain(|k, _| k.0 != node || still_bad.contains(k));
        self.last.insert(node, snap);
        news
    }

    /// The peer's hints are gone (its lease expired, or it was deleted).
    pub fn forget(&mut self, node: &str) {
        self.bad.retain(|k, _| k.0 != node);
        self.last.remove(node);
    }

    /// Peers' bad targets, for `/status`: (node, target, state).
    pub fn reported_bad(&self) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = self
            .bad
            .iter()
            .map(|((n, t), (s, _))| (n.clone(), t.clone(), s.clone()))
            .collect();
        v.sort();
        v
    }

    pub fn peers(&self) -> impl Iterator<Item = &Snapshot> {
        self.last.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(t: &str, state: &str, since: u64) -> Hint {
        Hint {
            target: t.into(),
            state: state.into(),
            since_unix_ms: since,
            reason: "r".into(),
        }
    }

    fn snap(node: &str, targets: Vec<Hint>) -> Snapshot {
        Snapshot::bounded(node, 1, 1, targets)
    }

    #[test]
    fn a_peers_down_is_news_once_per_episode() {
        let mut m = Merge::default();
        let s = snap("b", vec![hint("p1", "down", 10), hint("p2", "up", 5)]);
        let news = m.update("a", s.clone());
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].target, "p1");
        assert!(
            m.update("a", s).is_empty(),
            "the same snapshot again is no news"
        );
        // Up, then down again: a new episode.
        assert!(
            m.update("a", snap("b", vec![hint("p1", "up", 20)]))
                .is_empty()
        );
        assert_eq!(
            m.update("a", snap("b", vec![hint("p1", "suspect", 30)]))
                .len(),
            1
        );
        // suspect -> down at the peer is news too (another state).
        assert_eq!(
            m.update("a", snap("b", vec![hint("p1", "down", 40)])).len(),
            1
        );
    }

    #[test]
    fn recovering_and_up_are_never_news_and_my_own_hints_are_ignored() {
        let mut m = Merge::default();
        assert!(
            m.update("a", snap("b", vec![hint("p1", "recovering", 1)]))
                .is_empty()
        );
        assert!(
            m.update("a", snap("a", vec![hint("p1", "down", 1)]))
                .is_empty()
        );
        assert!(m.reported_bad().is_empty());
    }

    #[test]
    fn two_peers_reporting_one_target_are_two_pieces_of_news() {
        let mut m = Merge::default();
        assert_eq!(
            m.update("a", snap("b", vec![hint("p1", "down", 1)])).len(),
            1
        );
        assert_eq!(
            m.update("a", snap("c", vec![hint("p1", "down", 1)])).len(),
            1
        );
        assert_eq!(m.reported_bad().len(), 2);
    }

    #[test]
    fn a_dead_peers_hints_are_forgotten() {
        let mut m = Merge::default();
        m.update("a", snap("b", vec![hint("p1", "down", 1)]));
        m.forget("b");
        assert!(m.reported_bad().is_empty());
        assert_eq!(m.peers().count(), 0);
        // Its next life reports the same episode: news again (this node forgot it).
        assert_eq!(
            m.update("a", snap("b", vec![hint("p1", "down", 1)])).len(),
            1
        );
    }

    #[test]
    fn a_snapshot_is_bounded_with_bad_targets_first() {
        let mut all: Vec<Hint> = (0..MAX_TARGETS + 10)
            .map(|i| hint(&format!("t{i}"), "up", 0))
            .collect();
        all.push(hint("late", "down", 0));
        all[0].reason = "é".repeat(MAX_REASON);
        let s = Snapshot::bounded("a", 0, 1, all);
        assert_eq!(s.targets.len(), MAX_TARGETS);
        assert_eq!(s.omitted, 11);
        assert_eq!(s.targets[0].target, "late");
        assert!(s.targets.iter().all(|h| h.reason.len() <= MAX_REASON));
    }
}
