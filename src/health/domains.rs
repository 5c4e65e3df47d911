//! Failure domains and the systemic alarm. A failure domain is a tag naming an element several
//! targets share (a site, a firewall, a carrier's path). When `domain_suspect_after` distinct
//! targets of one domain fail real or test calls (or are overdue, or show short calls) within
//! `domain_window_ms`, the domain turns suspect: the handle makes every target of it suspect and
//! asks each for a test call, and one `systemic` report names the domain, its targets, the routes
//! now served by a later choice, the evidence, and a sentence an operator can paste into a notice.
//! A second trigger: more than `systemic_share_percent` of all targets down or suspect (and at
//! least `domain_suspect_after` of them), unless a domain alarm already names every one of them.
//! A clearing report follows when none of the domain's targets is down, suspect or recovering.
//!
//! Pure bookkeeping: times are passed in; the handle holds it under a mutex the call path never
//! takes (only the applier task and the prober touch it).

use super::handle::Topology;
use super::state::State;
use crate::config::SuspicionSpec;
use crate::routing::TargetId;
use serde::Serialize;
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Evidence kept per domain (bounded: the window, and at most this many items).
const EVIDENCE_MAX: usize = 64;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Evidence {
    pub target: String,
    pub what: String,
    pub unix_ms: u64,
}

/// One systemic alarm, raised (`active`) or cleared.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SystemicReport {
    pub active: bool,
    /// The domain, or None for the "too many targets down or suspect" trigger.
    pub domain: Option<String>,
    /// Targets of the domain (or every bad target) with their state.
    pub targets: Vec<(String, String)>,
    /// Routes whose first choice is not up: (route, who serves it now, "later choice" /
    /// "last resort" / "nobody ready").
    pub routes: Vec<(String, String, String)>,
    pub evidence: Vec<Evidence>,
    pub since_unix_ms: u64,
    pub sentence: String,
}

#[derive(Default)]
pub(super) struct Domains {
    recent: HashMap<String, VecDeque<(TargetId, Instant, Evidence)>>,
    /// Suspect domains: when they turned, and whether the alarm went out.
    suspect: HashMap<String, (u64, bool)>,
    share_since: Option<u64>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hms(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

fn bad(s: State) -> bool {
    !matches!(s, State::Up)
}

impl Domains {
    /// Counts a failure of `id` in each of its domains; returns the domains that just turned suspect.
    pub(super) fn evidence(
        &mut self,
        tags: &[String],
        id: &str,
        what: &str,
        now: Instant,
        wall: SystemTime,
        s: &SuspicionSpec,
    ) -> Vec<String> {
        let window = Duration::from_millis(s.domain_window_ms);
        let mut turned = Vec::new();
        for tag in tags {
            let q = self.recent.entry(tag.clone()).or_default();
            q.push_back((
                id.into(),
                now,
                Evidence {
                    target: id.to_string(),
                    what: what.to_string(),
                    unix_ms: unix_ms(wall),
                },
            ));
            while q
                .front()
                .is_some_and(|(_, t, _)| now.saturating_duration_since(*t) > window)
                || q.len() > EVIDENCE_MAX
            {
                q.pop_front();
            }
            let mut distinct: Vec<&TargetId> = q.iter().map(|(t, _, _)| t).collect();
            distinct.sort();
            distinct.dedup();
            if distinct.len() as u64 >= s.domain_suspect_after && !self.suspect.contains_key(tag) {
                self.suspect.insert(tag.clone(), (unix_ms(wall), false));
                turned.push(tag.clone());
            }
        }
        turned
    }

    /// Raises and clears alarms from the current target states.
    pub(super) fn systemic(
        &mut self,
        topo: &Topology,
        states: &HashMap<TargetId, State>,
        s: &SuspicionSpec,
        wall: SystemTime,
    ) -> Vec<SystemicReport> {
        let mut out = Vec::new();
        let members = |tag: &str| -> Vec<TargetId> {
            topo.order
                .iter()
                .filter(|id| {
                    topo.domains_of
                        .get(*id)
                        .is_some_and(|d| d.iter().any(|x| x == tag))
                })
                .cloned()
                .collect()
        };
        let tags: Vec<String> = self.suspect.keys().cloned().collect();
        for tag in tags {
            let ids = members(&tag);
            let any_bad = ids.iter().any(|id| states.get(id).is_some_and(|s| bad(*s)));
            let Some(&(since, raised)) = self.suspect.get(&tag) else {
                continue;
            };
            if !raised {
                let ev: Vec<Evidence> = self
                    .recent
                    .get(&tag)
                    .map(|q| q.iter().map(|(_, _, e)| e.clone()).collect())
                    .unwrap_or_default();
                out.push(report(true, Some(&tag), &ids, topo, states, ev, since));
                self.suspect.insert(tag.clone(), (since, true));
            } else if !any_bad {
                out.push(report(
                    false,
                    Some(&tag),
                    &ids,
                    topo,
                    states,
                    vec![],
                    unix_ms(wall),
                ));
                self.suspect.remove(&tag);
                self.recent.remove(&tag);
            }
        }
        let total = topo.order.len() as u64;
        let bad_ids: Vec<TargetId> = topo
            .order
            .iter()
            .filter(|id| states.get(*id).is_some_and(|s| bad(*s)))
            .cloned()
            .collect();
        // At least `domain_suspect_after` targets too: one or two targets in trouble are their own
        // alarm, not a shared failure (a one-PSAP lab would otherwise raise it at every suspicion).
        let bad_n = bad_ids.len() as u64;
        // Bad targets all inside domains whose alarm is out: that alarm already names them.
        let covered = |id: &TargetId| {
            topo.domains_of.get(id).is_some_and(|tags| {
                tags.iter()
                    .any(|t| self.suspect.get(t).is_some_and(|(_, raised)| *raised))
            })
        };
        let over = total > 0
            && bad_n >= s.domain_suspect_after
            && bad_n * 100 > s.systemic_share_percent * total
            && (self.share_since.is_some() || !bad_ids.iter().all(covered));
        match (over, self.share_since) {
            (true, None) => {
                let since = unix_ms(wall);
                self.share_since = Some(since);
                out.push(report(true, None, &bad_ids, topo, states, vec![], since));
            }
            (false, Some(_)) => {
                self.share_since = None;
                out.push(report(
                    false,
                    None,
                    &bad_ids,
                    topo,
                    states,
                    vec![],
                    unix_ms(wall),
                ));
            }
            _ => {}
        }
        out
    }

    pub(super) fn status(&self) -> serde_json::Value {
        let domains: Vec<_> = self
            .suspect
            .iter()
            .map(|(tag, (since, _))| {
                let ev: Vec<&Evidence> = self
                    .recent
                    .get(tag)
                    .map(|q| q.iter().map(|(_, _, e)| e).collect())
                    .unwrap_or_default();
                json!({"domain": tag, "state": "suspect", "since_unix_ms": since, "evidence": ev})
            })
            .collect();
        json!({"suspect_domains": domains, "share_alarm_since_unix_ms": self.share_since})
    }
}

fn report(
    active: bool,
    domain: Option<&str>,
    ids: &[TargetId],
    topo: &Topology,
    states: &HashMap<TargetId, State>,
    evidence: Vec<Evidence>,
    since: u64,
) -> SystemicReport {
    let state_of = |id: &TargetId| states.get(id).copied().unwrap_or(State::Up);
    let targets: Vec<(String, String)> = ids
        .iter()
        .map(|id| (id.to_string(), state_of(id).to_string()))
        .collect();
    // A set, not `ids.contains`: at 10 000 routes and 15 000 bad targets the linear search made
    // one report cost seconds of the prober's thread (every probe went out that much late).
    let named: HashSet<&TargetId> = ids.iter().collect();
    let mut routes = Vec::new();
    for (route, chain) in &topo.routes {
        let touches = chain.iter().any(|c| named.contains(c));
        let Some(first) = chain.first() else { continue };
        if !touches || !bad(state_of(first)) {
            continue;
        }
        let (who, how) = match chain.iter().position(|c| !bad(state_of(c))) {
            Some(i) if i + 1 == chain.len() => (chain[i].to_string(), "last resort"),
            Some(i) => (chain[i].to_string(), "later choice"),
            None => ("nobody".to_string(), "nobody ready"),
        };
        routes.push((route.to_string(), who, how.to_string()));
    }
    let bad_names: Vec<&str> = targets
        .iter()
        .filter(|(_, s)| s != "up")
        .map(|(id, _)| id.as_str())
        .collect();
    let route_names: Vec<&str> = routes.iter().map(|(r, _, _)| r.as_str()).collect();
    let served = if !routes.is_empty() && routes.iter().all(|(_, _, how)| how == "last resort") {
        let lr: Vec<&str> = {
            let mut v: Vec<&str> = routes.iter().map(|(_, who, _)| who.as_str()).collect();
            v.sort();
            v.dedup();
            v
        };
        format!("their last resort ({})", listed(&lr))
    } else {
        "later choices".to_string()
    };
    let sentence = match (active, domain) {
        (true, Some(d)) => format!(
            "Since {} UTC emergency calls for routes {} go to {}: {} in domain {} fail calls while answering OPTIONS.",
            hms(since),
            if route_names.is_empty() {
                "(none yet)".to_string()
            } else {
                listed(&route_names)
            },
            served,
            if bad_names.is_empty() {
                "targets".to_string()
            } else {
                listed(&bad_names)
            },
            d
        ),
        (true, None) => format!(
            "Since {} UTC {} of {} targets are down or suspect; emergency calls for routes {} go to {}.",
            hms(since),
            ids.len(),
            topo.order.len(),
            if route_names.is_empty() {
                "(none)".to_string()
            } else {
                listed(&route_names)
            },
            served
        ),
        (false, Some(d)) => format!(
            "Since {} UTC every target in domain {d} takes calls again.",
            hms(since)
        ),
        (false, None) => format!("Since {} UTC most targets take calls again.", hms(since)),
    };
    SystemicReport {
        active,
        domain: domain.map(str::to_string),
        targets,
        routes,
        evidence,
        since_unix_ms: since,
        sentence,
    }
}

/// At most this many names in a sentence; the report's lists keep every one.
const SENTENCE_NAMES_MAX: usize = 20;

/// Names joined by commas, the first [`SENTENCE_NAMES_MAX`] of them and how many more: a sentence
/// an operator pastes into a notice stays a sentence with thousands of targets down.
fn listed(names: &[&str]) -> String {
    if names.len() <= SENTENCE_NAMES_MAX {
        return names.join(", ");
    }
    format!(
        "{} and {} more",
        names[..SENTENCE_NAMES_MAX].join(", "),
        names.len() - SENTENCE_NAMES_MAX
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Rules;

    fn topo() -> Topology {
        let mut text = String::from("listen = [\"udp:127.0.0.1:5060\"]\n");
        for (i, d) in [
            "[\"a\", \"fw\"]",
            "[\"b\", \"fw\"]",
            "[\"c\", \"fw\"]",
            "\"pstn\"",
        ]
        .iter()
        .enumerate()
        {
            text += &format!(
                "[[targets]]\nid = \"t{i}\"\nuri = \"sip:127.0.0.1:{}\"\nfailure_domain = {d}\n",
                5100 + i
            );
        }
        text +=
            "[[routes]]\nid = \"north\"\nchain = [\"t0\", \"t3\"]\ncaller_prefixes = [\"+1555\"]\n";
        text += "[default_route]\nchain = [\"t1\", \"t2\", \"t3\"]\n";
        let rules = Rules::parse(&text, "t.toml").unwrap().0;
        let h = crate::health::Health::new(&rules);
        let t = h.inner.topology.load_full();
        Topology {
            order: t.order.clone(),
            probe_hosts: vec![],
            dependents: HashMap::new(),
            routes: t.routes.clone(),
            domains_of: t.domains_of.clone(),
        }
    }

    #[test]
    fn three_targets_of_a_domain_failing_raise_one_named_alarm_and_its_clearing() {
        let topo = topo();
        let s = SuspicionSpec::default();
        let mut d = Domains::default();
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let tags = |id: &str| topo.domains_of[id].clone();
        assert!(
            d.evidence(&tags("t0"), "t0", "overdue", t0, w0, &s)
                .is_empty()
        );
        assert!(
            d.evidence(&tags("t0"), "t0", "overdue", t0, w0, &s)
                .is_empty(),
            "distinct targets"
        );
        assert!(
            d.evidence(&tags("t1"), "t1", "overdue", t0, w0, &s)
                .is_empty()
        );
        // Outside the window, the first evidence no longer counts.
        let late = t0 + Duration::from_millis(s.domain_window_ms + 1);
        assert!(
            d.evidence(&tags("t2"), "t2", "overdue", late, w0, &s)
                .is_empty()
        );
        assert!(
            d.evidence(&tags("t0"), "t0", "attempt timeout", late, w0, &s)
                .is_empty()
        );
        let turned = d.evidence(&tags("t1"), "t1", "test call failed", late, w0, &s);
        assert_eq!(turned, vec!["fw".to_string()]);
        let mut states: HashMap<TargetId, State> = topo
            .order
            .iter()
            .map(|id| (id.clone(), State::Suspect))
            .collect();
        states.insert("t3".into(), State::Up);
        let r = d.systemic(&topo, &states, &s, w0);
        let fw: Vec<_> = r
            .iter()
            .filter(|r| r.domain.as_deref() == Some("fw"))
            .collect();
        assert_eq!(fw.len(), 1);
        assert!(fw[0].active);
        assert!(fw[0].sentence.contains("domain fw"), "{}", fw[0].sentence);
        assert!(fw[0].sentence.contains("north"), "{}", fw[0].sentence);
        assert!(
            fw[0]
                .routes
                .iter()
                .any(|(r, who, how)| r == "north" && who == "t3" && how == "last resort")
        );
        // The share trigger (3 of 4 > 50%) stays quiet: fw's alarm names every one of them.
        assert!(!r.iter().any(|r| r.domain.is_none()), "{r:?}");
        assert!(d.systemic(&topo, &states, &s, w0).is_empty(), "raised once");
        // A bad target outside the domain: now the share alarm is news, raised once.
        states.insert("t3".into(), State::Down);
        let r = d.systemic(&topo, &states, &s, w0);
        assert!(r.iter().any(|r| r.domain.is_none() && r.active), "{r:?}");
        assert!(d.systemic(&topo, &states, &s, w0).is_empty(), "raised once");
        // Once out, it stays while the share holds (t3 back up: 3 of 4 still bad).
        states.insert("t3".into(), State::Up);
        assert!(d.systemic(&topo, &states, &s, w0).is_empty(), "no flapping");
        let all_up: HashMap<TargetId, State> = topo
            .order
            .iter()
            .map(|id| (id.clone(), State::Up))
            .collect();
        let r = d.systemic(&topo, &all_up, &s, w0);
        assert!(
            r.iter()
                .any(|r| r.domain.as_deref() == Some("fw") && !r.active)
        );
        assert!(r.iter().any(|r| r.domain.is_none() && !r.active));
    }
}
