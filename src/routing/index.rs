//! The route index: built once when the rules are compiled, it yields for a call the few routes
//! that can match (a byte trie for `caller_prefixes`, maps for `dialled`, service URNs and headers,
//! a CIDR table for `sources`). Each route is filed under ONE of its condition kinds (the most
//! selective it has); a route without conditions is a candidate for every call. The candidates are
//! then checked in file order with every condition, so the first that holds wins exactly as in the
//! linear walk ([`super::Rules::select_linear`], kept as the reference).

use super::matching::{Dest, urn_under};
use super::{CallFacts, Route};
use crate::config::Conditions;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Which pattern of each condition kind matched (indices into the route's lists): the typed "why",
/// rendered only when someone reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hits {
    pub service_urn: Option<u32>,
    pub dialled: Option<u32>,
    pub source: Option<u32>,
    pub caller_prefix: Option<u32>,
    /// Number of `headers` conditions (all must hold).
    pub headers: u32,
}

fn pos<T>(list: &[T], f: impl Fn(&T) -> bool) -> Option<Option<u32>> {
    if list.is_empty() {
        return Some(None);
    }
    let i = list.iter().position(f)?;
    Some(Some(u32::try_from(i).unwrap_or(u32::MAX)))
}

/// `Some(hits)` when every condition holds; the same test as `matching::matches`, without strings.
pub(super) fn holds(c: &Conditions, call: &CallFacts, dest: &Dest<'_>) -> Option<Hits> {
    holds_hinted(c, call, dest, NO_HINT)
}

/// No known caller-prefix hit.
pub(super) const NO_HINT: u32 = u32::MAX;

/// [`holds`], told by the index which caller prefix is the first that matches (`NO_HINT`: not
/// known), so a route with many prefixes is not scanned again.
pub(super) fn holds_hinted(
    c: &Conditions,
    call: &CallFacts,
    dest: &Dest<'_>,
    caller_hint: u32,
) -> Option<Hits> {
    let service_urn = pos(
        &c.service_urns,
        |p| matches!(dest, Dest::Service(urn) if urn_under(urn, p)),
    )?;
    let dialled = pos(&c.dialled, |d| matches!(dest, Dest::Number(n) if d == n))?;
    let source = pos(&c.sources, |b| b.contains(call.source))?;
    let hinted = c.caller_prefixes.get(caller_hint as usize).filter(|p| {
        call.caller
            .as_deref()
            .is_some_and(|caller| caller.starts_with(p.as_str()))
    });
    let caller_prefix = if hinted.is_some() {
        Some(caller_hint)
    } else {
        pos(&c.caller_prefixes, |p| {
            call.caller
                .as_deref()
                .is_some_and(|caller| caller.starts_with(p.as_str()))
        })?
    };
    if !c
        .headers
        .iter()
        .all(|(name, value)| super::matching::has_header(call, name, value))
    {
        return None;
    }
    Some(Hits {
        service_urn,
        dialled,
        source,
        caller_prefix,
        headers: u32::try_from(c.headers.len()).unwrap_or(u32::MAX),
    })
}

/// A byte trie node: children by next byte, and the routes whose prefix ends here.
#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(u8, u32)>,
    routes: Vec<(u32, u32)>,
}

#[derive(Debug, Clone)]
struct Trie {
    nodes: Vec<Node>,
}

impl Trie {
    fn new() -> Trie {
        Trie {
            nodes: vec![Node::default()],
        }
    }

    fn insert(&mut self, key: &[u8], route: (u32, u32)) {
        let mut at = 0usize;
        for &b in key {
            let next = self.nodes[at]
                .children
                .iter()
                .find(|(c, _)| *c == b)
                .map(|&(_, n)| n as usize);
            at = match next {
                Some(n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[at]
                        .children
                        .push((b, u32::try_from(n).unwrap_or(u32::MAX)));
                    n
                }
            };
        }
        self.nodes[at].routes.push(route);
    }

    /// Routes of every prefix of `key` (cost: the length of `key`, not the number of prefixes).
    fn prefixes_of(&self, key: &[u8], out: &mut Vec<(u32, u32)>) {
        let mut at = 0usize;
        out.extend_from_slice(&self.nodes[at].routes);
        for &b in key {
            let Some(&(_, n)) = self.nodes[at].children.iter().find(|(c, _)| *c == b) else {
                return;
            };
            at = n as usize;
            out.extend_from_slice(&self.nodes[at].routes);
        }
    }
}

/// Unifies an IPv4-mapped IPv6 address with the IPv4 address it is (as `Cidr::contains` does);
/// returns (is_v6, address bits, width).
fn ip_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(a) => (false, u128::from(u32::from(a))),
            None => (true, u128::from(v6)),
        },
    }
}

fn mask(bits: u128, v6: bool, len: u8) -> u128 {
    let width = if v6 { 128u32 } else { 32 };
    let len = u32::from(len).min(width);
    if len == 0 {
        return 0;
    }
    bits >> (width - len) << (width - len)
}

/// The candidate routes of a call, from an index built at compile time.
#[derive(Debug, Clone)]
pub(super) struct Index {
    dialled: HashMap<String, Vec<u32>>,
    callers: Trie,
    /// header name -> exact value -> routes (filed under their first header condition).
    headers: HashMap<String, HashMap<Vec<u8>, Vec<u32>>>,
    /// (is_v6, prefix length, network bits) -> routes; `lens` lists the (is_v6, length) present.
    sources: HashMap<(bool, u8, u128), Vec<u32>>,
    lens: Vec<(bool, u8)>,
    services: HashMap<String, Vec<u32>>,
    /// Routes without conditions: candidates for every call.
    always: Vec<u32>,
}

impl Index {
    pub(super) fn build(routes: &[Arc<Route>]) -> Index {
        let mut ix = Index {
            dialled: HashMap::new(),
            callers: Trie::new(),
            headers: HashMap::new(),
            sources: HashMap::new(),
            lens: Vec::new(),
            services: HashMap::new(),
            always: Vec::new(),
        };
        for (i, r) in routes.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let c = &r.conditions;
            // The most selective kind the route has.
            if !c.dialled.is_empty() {
                for d in &c.dialled {
                    ix.dialled.entry(d.clone()).or_default().push(i);
                }
            } else if !c.caller_prefixes.is_empty() {
                for (k, p) in c.caller_prefixes.iter().enumerate() {
                    let k = u32::try_from(k).unwrap_or(NO_HINT);
                    ix.callers.insert(p.as_bytes(), (i, k));
                }
            } else if let Some((name, value)) = c.headers.first() {
                ix.headers
                    .entry(name.clone())
                    .or_default()
                    .entry(value.as_bytes().to_vec())
                    .or_default()
                    .push(i);
            } else if !c.sources.is_empty() {
                for b in &c.sources {
                    let (v6, bits) = ip_bits(b.addr);
                    let key = (v6, b.prefix_len, mask(bits, v6, b.prefix_len));
                    ix.sources.entry(key).or_default().push(i);
                    if !ix.lens.contains(&(v6, b.prefix_len)) {
                        ix.lens.push((v6, b.prefix_len));
                    }
                }
            } else if !c.service_urns.is_empty() {
                for u in &c.service_urns {
                    ix.services.entry(u.clone()).or_default().push(i);
                }
            } else {
                ix.always.push(i);
            }
        }
        ix
    }

    /// Every route that may match `call`, in file order, without duplicates, each with the first
    /// caller prefix of its list that matched (or `NO_HINT`). A superset: each is still checked
    /// with [`holds_hinted`].
    pub(super) fn candidates(&self, call: &CallFacts, dest: &Dest<'_>) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = self.always.iter().map(|&r| (r, NO_HINT)).collect();
        match dest {
            Dest::Number(n) => {
                if let Some(v) = self.dialled.get(*n) {
                    out.extend(v.iter().map(|&r| (r, NO_HINT)));
                }
            }
            Dest::Service(urn) => {
                if !self.services.is_empty() {
                    // `urn` and each of its `.`-label ancestors.
                    for (i, b) in urn.bytes().enumerate() {
                        if b == b'.'
                            && let Some(v) = self.services.get(&urn[..i])
                        {
                            out.extend(v.iter().map(|&r| (r, NO_HINT)));
                        }
                    }
                    if let Some(v) = self.services.get(urn.as_str()) {
                        out.extend(v.iter().map(|&r| (r, NO_HINT)));
                    }
                }
            }
            Dest::None => {}
        }
        if let Some(caller) = &call.caller {
            self.callers.prefixes_of(caller.as_bytes(), &mut out);
        }
        if !self.headers.is_empty() {
            for (name, value) in &call.headers {
                if let Some(v) = self
                    .headers
                    .get(name.as_str())
                    .and_then(|m| m.get(value.trim_ascii()))
                {
                    out.extend(v.iter().map(|&r| (r, NO_HINT)));
                }
            }
        }
        if !self.lens.is_empty() {
            let (v6, bits) = ip_bits(call.source);
            for &(lv6, len) in &self.lens {
                if lv6 == v6
                    && let Some(v) = self.sources.get(&(v6, len, mask(bits, v6, len)))
                {
                    out.extend(v.iter().map(|&r| (r, NO_HINT)));
                }
            }
        }
        // Smallest prefix index first within a route: the first of its list that matched.
        out.sort_unstable();
        out.dedup_by_key(|c| c.0);
        out
    }
}
