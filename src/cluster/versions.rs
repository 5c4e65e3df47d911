//! Rules versions in etcd: `push` (a new numbered version and the `current` pointer moved in one
//! compare-and-swap), `history` and `rollback`.
//!
//! The CAS: a push reads `current` (its value and mod revision) and the highest version number,
//! then writes version N+1 and `current = N+1` in one transaction that holds only if `current`
//! still has the mod revision it read and version N+1 does not exist yet. Two operators pushing at
//! once read the same `current`; the first transaction wins, the second finds `current` moved and
//! changes nothing: it is told which version won, to review it and push again.

use super::etcd::{Client, Compare, EtcdError};
use super::keys::{Key, Keys, Version};

/// What a push or rollback saw of `current` before writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The version `current` names (None: nothing pushed yet).
    pub current: Option<u64>,
    /// `current`'s mod revision (0 when absent: etcd compares a missing key's as 0).
    pub mod_revision: i64,
    /// The highest version number stored.
    pub highest: u64,
}

/// The transaction of a push of `record` (whose `version` this sets) after `seen`.
pub fn push_txn(keys: &Keys, seen: Seen) -> (u64, Vec<Compare>) {
    let n = seen.highest.max(seen.current.unwrap_or(0)) + 1;
    let compares = vec![
        Compare::ModRevision(keys.current(), seen.mod_revision),
        Compare::Absent(keys.version(n)),
    ];
    (n, compares)
}

/// The transaction of a rollback to `to` after `seen`.
pub fn rollback_txn(keys: &Keys, seen: Seen) -> Vec<Compare> {
    vec![Compare::ModRevision(keys.current(), seen.mod_revision)]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `current` moved from `from` to `to`.
    Done { from: Option<u64>, to: u64 },
    /// Someone else moved `current` between our read and our write; nothing was changed.
    Lost { seen: Option<u64>, now: Option<u64> },
}

#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("version {0} does not exist (see `sosrouter rules history`)")]
    NoSuchVersion(u64),
    #[error("{0}")]
    Bad(String),
}

fn parse_current(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Reads `current` and the highest version number.
pub async fn seen(client: &Client, keys: &Keys) -> Result<Seen, EtcdError> {
    let cur = client.get(&keys.current()).await?;
    let (_, versions) = client.range_keys(&keys.versions()).await?;
    let highest = versions
        .iter()
        .filter_map(|k| match keys.parse(k) {
            Key::Version(n) => Some(n),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    Ok(Seen {
        current: cur.as_ref().and_then(|kv| parse_current(&kv.value)),
        mod_revision: cur.map_or(0, |kv| kv.mod_revision),
        highest,
    })
}

/// Pushes `record` (its `version` is set here) as the new current version.
pub async fn push(
    client: &Client,
    keys: &Keys,
    mut record: Version,
) -> Result<Outcome, VersionsError> {
    let seen = seen(client, keys).await?;
    let (n, compares) = push_txn(keys, seen);
    record.version = n;
    let body = serde_json::to_vec(&record).map_err(|e| VersionsError::Bad(e.to_string()))?;
    let puts = [
        (keys.version(n), body),
        (keys.current(), n.to_string().into_bytes()),
    ];
    if client.txn(&compares, &puts).await? {
        return Ok(Outcome::Done {
            from: seen.current,
            to: n,
        });
    }
    let now = client.get(&keys.current()).await?;
    Ok(Outcome::Lost {
        seen: seen.current,
        now: now.and_then(|kv| parse_current(&kv.value)),
    })
}

/// Moves `current` back (or forth) to an existing version.
pub async fn rollback(client: &Client, keys: &Keys, to: u64) -> Result<Outcome, VersionsError> {
    let seen = seen(client, keys).await?;
    if client.get(&keys.version(to)).await?.is_none() {
        return Err(VersionsError::NoSuchVersion(to));
    }
    let puts = [(keys.current(), to.to_string().into_bytes())];
    if client.txn(&rollback_txn(keys, seen), &puts).await? {
        return Ok(Outcome::Done {
            from: seen.current,
            to,
        });
    }
    let now = client.get(&keys.current()).await?;
    Ok(Outcome::Lost {
        seen: seen.current,
        now: now.and_then(|kv| parse_current(&kv.value)),
    })
}

/// Every stored version, oldest first, and the current one.
pub async fn history(
    client: &Client,
    keys: &Keys,
) -> Result<(Option<u64>, Vec<Version>), VersionsError> {
    let cur = client
        .get(&keys.current())
        .await?
        .and_then(|kv| parse_current(&kv.value));
    let (_, kvs) = client.range(&keys.versions(), true).await?;
    let versions = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Version>(&kv.value).ok())
        .collect();
    Ok((cur, versions))
}

/// The version `current` names, with its record (None when nothing was pushed).
pub async fn current(client: &Client, keys: &Keys) -> Result<Option<Version>, VersionsError> {
    let Some(n) = client
        .get(&keys.current())
        .await?
        .and_then(|kv| parse_current(&kv.value))
    else {
        return Ok(None);
    };
    version(client, keys, n).await.map(Some)
}

pub async fn version(client: &Client, keys: &Keys, n: u64) -> Result<Version, VersionsError> {
    let kv = client
        .get(&keys.version(n))
        .await?
        .ok_or(VersionsError::NoSuchVersion(n))?;
    serde_json::from_slice(&kv.value)
        .map_err(|e| VersionsError::Bad(format!("version {n} in etcd is not readable: {e}")))
}

pub(super) fn current_of(value: &[u8]) -> Option<u64> {
    parse_current(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// etcd's transaction semantics for the two compares used here, over a map of
    /// key -> (value, mod revision).
    #[derive(Default)]
    struct Store {
        kv: HashMap<String, (Vec<u8>, i64)>,
        rev: i64,
    }

    impl Store {
        fn txn(&mut self, compares: &[Compare], puts: &[(String, Vec<u8>)]) -> bool {
            let ok = compares.iter().all(|c| match c {
                Compare::ModRevision(k, r) => self.kv.get(k).map_or(0, |v| v.1) == *r,
                Compare::Absent(k) => !self.kv.contains_key(k),
            });
            if ok {
                self.rev += 1;
                for (k, v) in puts {
                    self.kv.insert(k.clone(), (v.clone(), self.rev));
                }
            }
            ok
        }
        fn seen(&self, keys: &Keys) -> Seen {
            let cur = self.kv.get(&keys.current());
            let highest = self
                .kv
                .keys()
                .filter_map(|k| match keys.parse(k) {
                    Key::Version(n) => Some(n),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            Seen {
                current: cur.and_then(|v| parse_current(&v.0)),
                mod_revision: cur.map_or(0, |v| v.1),
                highest,
            }
        }
        fn push(&mut self, keys: &Keys, seen: Seen) -> Option<u64> {
            let (n, cmp) = push_txn(keys, seen);
            let puts = [
                (keys.version(n), b"text".to_vec()),
                (keys.current(), n.to_string().into_bytes()),
            ];
            self.txn(&cmp, &puts).then_some(n)
        }
    }

    #[test]
    fn the_first_push_creates_version_1() {
        let keys = Keys::new("/t");
        let mut s = Store::default();
        let seen = s.seen(&keys);
        assert_eq!(seen.current, None);
        assert_eq!(s.push(&keys, seen), Some(1));
        assert_eq!(s.seen(&keys).current, Some(1));
    }

    #[test]
    fn of_two_pushes_from_the_same_read_exactly_one_wins() {
        let keys = Keys::new("/t");
        let mut s = Store::default();
        let first = s.seen(&keys);
        s.push(&keys, first);
        let (a, b) = (s.seen(&keys), s.seen(&keys));
        assert_eq!(s.push(&keys, a), Some(2));
        assert_eq!(s.push(&keys, b), None, "the second push must lose");
        assert_eq!(s.seen(&keys).current, Some(2));
        // Told, it reads again and pushes on top.
        let again = s.seen(&keys);
        assert_eq!(s.push(&keys, again), Some(3));
    }

    #[test]
    fn two_first_pushes_cannot_both_create_version_1() {
        let keys = Keys::new("/t");
        let mut s = Store::default();
        let (a, b) = (s.seen(&keys), s.seen(&keys));
        assert_eq!(s.push(&keys, a), Some(1));
        assert_eq!(s.push(&keys, b), None);
    }

    #[test]
    fn a_push_after_a_rollback_takes_the_next_free_number() {
        let keys = Keys::new("/t");
        let mut s = Store::default();
        for _ in 0..3 {
            let seen = s.seen(&keys);
            s.push(&keys, seen);
        }
        let seen = s.seen(&keys);
        assert!(s.txn(
            &rollback_txn(&keys, seen),
            &[(keys.current(), b"1".to_vec())]
        ));
        let seen = s.seen(&keys);
        assert_eq!(seen.current, Some(1));
        assert_eq!(s.push(&keys, seen), Some(4), "never reuses version 2 or 3");
    }

    #[test]
    fn a_rollback_loses_to_a_push_in_between() {
        let keys = Keys::new("/t");
        let mut s = Store::default();
        for _ in 0..2 {
            let seen = s.seen(&keys);
            s.push(&keys, seen);
        }
        let before = s.seen(&keys);
        let seen = s.seen(&keys);
        s.push(&keys, seen);
        assert!(!s.txn(
            &rollback_txn(&keys, before),
            &[(keys.current(), b"1".to_vec())]
        ));
        assert_eq!(s.seen(&keys).current, Some(3));
    }
}
