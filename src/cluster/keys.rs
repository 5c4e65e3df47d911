//! The key layout under one prefix (default `/sosrouter`):
//!
//! | key                         | value                                        | lease      |
//! |-----------------------------|----------------------------------------------|------------|
//! | `P/rules/current`           | the version in force, decimal (`"7"`)        | none       |
//! | `P/rules/v/0000000007`      | [`Version`] JSON: text, hash, who, when      | none       |
//! | `P/nodes/ID`                | [`super::NodeStatus`] JSON: version it runs  | the node's |
//! | `P/hints/ID`                | [`super::hints::Snapshot`] JSON              | the node's |
//!
//! Version keys are zero-padded so that etcd's byte order is numeric order. Versions are never
//! deleted: `rollback` moves `current` back to an old one.

use serde::{Deserialize, Serialize};

pub const DEFAULT_PREFIX: &str = "/sosrouter";

/// One pushed rules version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    /// The rules hash of `text` (the same function `/status` shows).
    pub hash: String,
    pub text: String,
    pub pushed_unix_ms: u64,
    /// Who pushed it (`user@host` of the pusher).
    pub by: String,
    /// The file name it was pushed from.
    pub source: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Current,
    Version(u64),
    Node(String),
    Hints(String),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let p = prefix.trim_end_matches('/');
        let prefix = if p.is_empty() {
            DEFAULT_PREFIX.to_string()
        } else if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        };
        Keys { prefix }
    }

    /// Everything of this deployment (what a node watches): `P/`.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn current(&self) -> String {
        format!("{}/rules/current", self.prefix)
    }
    pub fn versions(&self) -> String {
        format!("{}/rules/v/", self.prefix)
    }
    pub fn version(&self, n: u64) -> String {
        format!("{}/rules/v/{n:010}", self.prefix)
    }
    pub fn node(&self, id: &str) -> String {
        format!("{}/nodes/{id}", self.prefix)
    }
    pub fn hints(&self, id: &str) -> String {
        format!("{}/hints/{id}", self.prefix)
    }

    pub fn parse(&self, key: &str) -> Key {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Key::Other;
        };
        if rest == "rules/current" {
            return Key::Current;
        }
        if let Some(n) = rest.strip_prefix("rules/v/") {
            return n.parse().map_or(Key::Other, Key::Version);
        }
        let id = |s: &str| (!s.is_empty() && !s.contains('/')).then(|| s.to_string());
        if let Some(n) = rest.strip_prefix("nodes/").and_then(id) {
            return Key::Node(n);
        }
        if let Some(n) = rest.strip_prefix("hints/").and_then(id) {
            return Key::Hints(n);
        }
        Key::Other
    }
}

/// A node id: 1-64 of `[A-Za-z0-9._-]` (it is part of a key and shown to operators).
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_back_to_what_it_names() {
        let k = Keys::new("/sosrouter");
        assert_eq!(k.parse(&k.current()), Key::Current);
        assert_eq!(k.parse(&k.version(7)), Key::Version(7));
        assert_eq!(k.version(7), "/sosrouter/rules/v/0000000007");
        assert_eq!(k.parse(&k.node("site-a")), Key::Node("site-a".into()));
        assert_eq!(k.parse(&k.hints("site-b")), Key::Hints("site-b".into()));
        assert_eq!(k.parse("/sosrouter/nodes/"), Key::Other);
        assert_eq!(k.parse("/sosrouter/nodes/a/b"), Key::Other);
        assert_eq!(k.parse("/other/rules/current"), Key::Other);
        assert_eq!(k.parse("/sosrouterx/rules/current"), Key::Other);
        assert_eq!(k.parse("/sosrouter/rules/v/x"), Key::Other);
    }

    #[test]
    fn version_keys_sort_as_numbers() {
        let k = Keys::new("p/");
        assert_eq!(k.all(), "/p/");
        let mut v = [k.version(10), k.version(9), k.version(100)];
        v.sort();
        assert_eq!(v, [k.version(9), k.version(10), k.version(100)]);
    }

    #[test]
    fn node_ids_are_key_safe() {
        assert!(valid_node_id("site-a.1_x"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a/b"));
        assert!(!valid_node_id(&"x".repeat(65)));
    }
}
