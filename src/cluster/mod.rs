//! Active/active nodes sharing rules and health hints through etcd. Never on the call path: every
//! etcd exchange runs on one background task of the app's [`Tasks`]; calls read the rules snapshot
//! and local health as always, so etcd slow, partitioned or down changes nothing for a call.
//!
//! - `etcd`     — a small etcd v3 client over its JSON gateway (reqwest).
//! - `keys`     — the key layout under the prefix.
//! - `versions` — `rules push` (CAS), `history`, `rollback`.
//! - `hints`    — health hint snapshots and the merge rule (a peer's doubt -> suspect + test call).
//! - `cache`    — the local cache file of the last rules run, for a start while etcd is down.
//!
//! The node's task ([`spawn`]): take a lease (TTL [`Settings::lease_ttl`]), publish
//! `nodes/ID` (version and hash it runs) and `hints/ID` under it, read everything under the
//! prefix once, then watch it from the next revision. `rules/current` moving -> read that version,
//! validate it as `check` does and swap it in (the [`RulesSink`]); a version the node cannot load
//! is refused and the old rules keep serving (its `nodes/ID` says so). A broken watch or a failed
//! request -> one event ("etcd unreachable"), then reconnect (next endpoint) and resume the watch
//! from the last revision seen; a compacted revision -> read everything again.
//!
//! `/status` shows every node's version and hash ([`Cluster::status`]); a peer joining or running
//! another version is a `node-joined` / `node-version` event (the console re-reads `/status` on
//! every event), one running something else than `current` past [`Settings::mismatch_grace`] a
//! `node-mismatch`.

pub mod cache;
pub mod etcd;
pub mod hints;
pub mod keys;
pub mod versions;

use crate::events::{Bus, Event};
use crate::health::Health;
use crate::tasks::Tasks;
use etcd::{Client, EtcdError, WatchEvent, WatchMsg};
use hints::{Hint, Merge, Snapshot};
use keys::{Key, Keys, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// The `[cluster]` settings (command line or the `[cluster]` section of `--cluster FILE`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub node_id: String,
    pub prefix: String,
    /// The local cache file of the last rules this node ran.
    pub cache: PathBuf,
    /// The node's lease: its status and hints vanish this long after it stops renewing.
    pub lease_ttl: Duration,
    /// A full hints snapshot at least this often.
    pub snapshot_every: Duration,
    /// After a local health change, the hints go out within this.
    pub change_delay: Duration,
    /// A node running something else than `current` for this long raises an event.
    pub mismatch_grace: Duration,
}

impl Settings {
    pub fn new(endpoints: Vec<String>, node_id: String) -> Settings {
        Settings {
            endpoints,
            cache: PathBuf::from(format!("sosrouter-rules-{node_id}.cache.json")),
            node_id,
            prefix: keys::DEFAULT_PREFIX.to_string(),
            lease_ttl: Duration::from_secs(5),
            snapshot_every: Duration::from_secs(3),
            change_delay: Duration::from_millis(50),
            mismatch_grace: Duration::from_secs(5),
        }
    }
}

/// The `[cluster]` section of a cluster file; the command line overrides each key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub etcd: Option<Vec<String>>,
    pub node_id: Option<String>,
    pub prefix: Option<String>,
    pub cache: Option<PathBuf>,
    pub lease_ttl_s: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub cluster: Section,
}

/// Parses a file holding a `[cluster]` section.
pub fn parse_section(text: &str) -> Result<Section, String> {
    toml::from_str::<ClusterFile>(text)
        .map(|f| f.cluster)
        .map_err(|e| e.to_string())
}

/// Swaps in the rules of an etcd version. Implemented by the wiring (the reloader).
pub trait RulesSink: Send + Sync + 'static {
    /// Validates `text` as `check` does and swaps it in as `version`; blocking (parses).
    /// Ok: the hash of what now runs; Err: every error line (the old rules keep serving).
    fn apply(&self, version: u64, text: &str, source: &str) -> Result<String, Vec<String>>;
}

/// What a node publishes under `nodes/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// The etcd rules version it runs, and its hash.
    pub version: u64,
    pub hash: String,
    pub unix_ms: u64,
    /// The last version it refused to load, with the errors (null when none).
    pub refused: Option<u64>,
    pub refused_errors: Vec<String>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a node started: the rules it runs first.
#[derive(Debug, Clone)]
pub struct Boot {
    pub version: u64,
    pub text: String,
    /// "etcd" or "cache".
    pub from: &'static str,
    /// Why etcd was not used (when `from` is "cache").
    pub etcd_error: Option<String>,
}

/// The rules to start on: `current` from etcd, else the cache file (etcd unreachable), else an
/// error saying why the node cannot start. Waits at most `wait` for etcd.
pub async fn boot(s: &Settings, wait: Duration) -> Result<Boot, String> {
    let keys = Keys::new(&s.prefix);
    let from_etcd = async {
        let client = Client::new(&s.endpoints).map_err(|e| e.to_string())?;
        versions::current(&client, &keys)
            .await
            .map_err(|e| e.to_string())
    };
    let etcd_error = match tokio::time::timeout(wait, from_etcd).await {
        Ok(Ok(Some(v))) => {
            return Ok(Boot {
                version: v.version,
                text: v.text,
                from: "etcd",
                etcd_error: None,
            });
        }
        Ok(Ok(None)) => {
            return Err(format!(
                "etcd {} has no rules under {} yet: push them first with `sosrouter rules push FILE --etcd {}`",
                s.endpoints.join(","),
                keys.current(),
                s.endpoints.join(",")
            ));
        }
        Ok(Err(e)) => e,
        Err(_) => format!(
            "etcd {} did not answer within {wait:?}",
            s.endpoints.join(",")
        ),
    };
    match cache::load(&s.cache) {
        Ok(Some(c)) => Ok(Boot {
            version: c.version,
            text: c.text,
            from: "cache",
            etcd_error: Some(etcd_error),
        }),
        Ok(None) => Err(format!(
            "cannot start: {etcd_error}, and there is no rules cache at {} (this node never ran rules from etcd); start etcd or give the cache file of a node that ran",
            s.cache.display()
        )),
        Err(e) => Err(format!("cannot start: {etcd_error}, and {e}")),
    }
}

/// The `cluster` object of `/status`, and the node task's state.
struct View {
    connected: bool,
    since_unix_ms: u64,
    endpoint: String,
    current: Option<u64>,
    running: NodeStatus,
    nodes: BTreeMap<String, NodeStatus>,
    merge: Merge,
    /// Nodes seen running something else than current: since when, and whether announced.
    mismatch: HashMap<String, (Instant, bool)>,
    revision: i64,
}

/// A handle on a running cluster node, for `/status`.
#[derive(Clone)]
pub struct Cluster {
    view: Arc<Mutex<View>>,
}

impl Cluster {
    /// The `cluster` object of `/status`. `nodes`: every node this one knows of, by id, this node
    /// included (`self`: true; what it runs now, also while etcd is unreachable), each with the
    /// version and SHA-256 it runs and `running_current` (null while `current` is unknown).
    pub fn status(&self) -> serde_json::Value {
        let v = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all = v.nodes.clone();
        let me = v.running.node.clone();
        let published = all.get(&me).map(|n| n.unix_ms);
        let mut mine = v.running.clone();
        mine.unix_ms = published.unwrap_or(0);
        all.insert(me.clone(), mine);
        let nodes: Vec<serde_json::Value> = all
            .values()
            .map(|n| {
                serde_json::json!({
                    "node": n.node, "self": n.node == me, "version": n.version, "hash": n.hash,
                    "running_current": v.current.map(|c| c == n.version),
                    "refused": n.refused, "refused_errors": n.refused_errors,
                    "unix_ms": n.unix_ms,
                })
            })
            .collect();
        let reports: Vec<serde_json::Value> = v
            .merge
            .reported_bad()
            .into_iter()
            .map(|(n, t, s)| serde_json::json!({"node": n, "target": t, "state": s}))
            .collect();
        serde_json::json!({
            "node": v.running.node,
            "etcd": {"connected": v.connected, "endpoint": v.endpoint,
                     "since_unix_ms": v.since_unix_ms, "revision": v.revision},
            "current": v.current,
            "running": {"version": v.running.version, "hash": v.running.hash,
                        "refused": v.running.refused, "refused_errors": v.running.refused_errors},
            "nodes": nodes,
            "peer_reports": reports,
        })
    }
}

/// What breaks a session with etcd.
enum Broken {
    /// Every endpoint failed a request: etcd unreachable from here.
    Unreachable(EtcdError),
    /// The watch stream ended (`rotate`: try the next endpoint), or the client already moved to
    /// another endpoint: reconnect at once, resume from the revision.
    Watch { why: String, rotate: bool },
    /// The watch's start revision was compacted: read everything again.
    Compacted,
}

impl From<EtcdError> for Broken {
    fn from(e: EtcdError) -> Broken {
        Broken::Unreachable(e)
    }
}

struct Node {
    s: Settings,
    keys: Keys,
    client: Client,
    sink: Arc<dyn RulesSink>,
    health: Health,
    events: Bus,
    tasks: Tasks,
    view: Arc<Mutex<View>>,
    lease: i64,
    /// Texts of versions seen in the watch (the push writes the version and `current` together).
    texts: BTreeMap<u64, String>,
    hints_dirty: bool,
}

/// Starts the node's task on `tasks`; `running` is the version and hash it started on.
pub fn spawn(
    s: Settings,
    running: (u64, String),
    sink: Arc<dyn RulesSink>,
    health: Health,
    events: Bus,
    tasks: &Tasks,
) -> Result<Cluster, String> {
    let client = Client::new(&s.endpoints).map_err(|e| e.to_string())?;
    let view = Arc::new(Mutex::new(View {
        connected: false,
        since_unix_ms: unix_ms(),
        endpoint: client.endpoint().to_string(),
        current: None,
        running: NodeStatus {
            node: s.node_id.clone(),
            version: running.0,
            hash: running.1,
            unix_ms: unix_ms(),
            refused: None,
            refused_errors: Vec::new(),
        },
        nodes: BTreeMap::new(),
        merge: Merge::default(),
        mismatch: HashMap::new(),
        revision: 0,
    }));
    let node = Node {
        keys: Keys::new(&s.prefix),
        s,
        client,
        sink,
        health,
        events,
        tasks: tasks.clone(),
        view: view.clone(),
        lease: 0,
        texts: BTreeMap::new(),
        hints_dirty: true,
    };
    tasks.spawn(node.run());
    Ok(Cluster { view })
}

/// The event a peer's published status `st` is worth, given what this node knew of it: a node
/// joining, or running another version (or refusing one). None for this node itself (its own
/// reloads are `reload` events) and for a status that only renewed its time.
fn node_news(
    me: &str,
    id: &str,
    st: &NodeStatus,
    known: Option<&NodeStatus>,
) -> Option<(&'static str, String)> {
    if id == me {
        return None;
    }
    let refused = match st.refused {
        Some(r) => format!(", refused version {r}"),
        None => String::new(),
    };
    match known {
        None => Some((
            "node-joined",
            format!(
                "node {id} joined: rules version {} ({}){refused}",
                st.version, st.hash
            ),
        )),
        Some(k) if (k.version, &k.hash, k.refused) != (st.version, &st.hash, st.refused) => Some((
            "node-version",
            format!(
                "node {id} runs rules version {} ({}), was {}{refused}",
                st.version, st.hash, k.version
            ),
        )),
        Some(_) => None,
    }
}

fn cluster_event(new: &str, reason: String) -> Event {
    info!(event = new, %reason, "cluster");
    Event::cluster(new, &reason)
}

impl Node {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(mut self) {
        let mut revision: i64 = 0;
        // Start as "reachable" so that a first failure is announced once.
        let mut reachable = true;
        let mut backoff = Duration::from_millis(200);
        let mut health_changes = self.events.subscribe();
        loop {
            let broke = self
                .session(&mut revision, &mut reachable, &mut health_changes)
                .await;
            if self.view().connected {
                backoff = Duration::from_millis(200);
            }
            match broke {
                Broken::Unreachable(e) => {
                    if reachable {
                        reachable = false;
                        let running = self.view().running.version;
                        self.events.publish(cluster_event(
                            "etcd-unreachable",
                            format!(
                                "etcd unreachable ({e}): calls go on with rules version {running} and local health; reconnecting"
                            ),
                        ));
                    }
                    {
                        let mut v = self.view();
                        if v.connected {
                            v.connected = false;
                            v.since_unix_ms = unix_ms();
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Broken::Watch { why, rotate } => {
                    warn!(%why, "etcd watch broken; reconnecting");
                    if rotate {
                        self.client.rotate();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Broken::Compacted => {
                    warn!(revision, "etcd watch compacted; reading everything again");
                    revision = 0;
                }
            }
        }
    }

    /// One connection: lease, publish, (re)read, then watch until something breaks.
    async fn session(
        &mut self,
        revision: &mut i64,
        reachable: &mut bool,
        health_changes: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    ) -> Broken {
        if self.lease == 0 || self.client.keepalive(self.lease).await.unwrap_or(0) <= 0 {
            match self.client.grant(self.s.lease_ttl.as_secs().max(2)).await {
                Ok(l) => self.lease = l,
                Err(e) => return e.into(),
            }
        }
        if let Err(e) = self.publish_status().await {
            return e.into();
        }
        if let Err(e) = self.publish_hints().await {
            return e.into();
        }
        if *revision == 0 {
            match self.client.range(&self.keys.all(), true).await {
                Ok((rev, kvs)) => {
                    self.full_read(kvs).await;
                    *revision = rev;
                }
                Err(e) => return e.into(),
            }
        }
        let mut watch = match self.client.watch(&self.keys.all(), *revision + 1).await {
            Ok(w) => w,
            Err(e) => return e.into(),
        };
        let endpoint = self.client.endpoint().to_string();
        {
            let mut v = self.view();
            v.connected = true;
            v.since_unix_ms = unix_ms();
            v.endpoint = endpoint.clone();
            v.revision = *revision;
        }
        if !*reachable {
            *reachable = true;
            self.events.publish(cluster_event(
                "etcd-reachable",
                format!(
                    "etcd reachable again at {endpoint}; watch resumed after revision {revision}"
                ),
            ));
        }
        let keepalive_every = (self.s.lease_ttl / 3).max(Duration::from_millis(500));
        let mut keep = tokio::time::interval(keepalive_every);
        keep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snap = tokio::time::interval(self.s.snapshot_every);
        snap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let mut publish_at: Option<tokio::time::Instant> = None;
        loop {
            let due = publish_at
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                m = watch.next() => match m {
                    Ok(WatchMsg::Events { revision: rev, events }) => {
                        for ev in events {
                            self.on_event(ev).await;
                        }
                        if self.hints_dirty && publish_at.is_none() {
                            publish_at = Some(tokio::time::Instant::now());
                        }
                        *revision = rev.max(*revision);
                        self.view().revision = *revision;
                    }
                    Ok(WatchMsg::Created) => {}
                    Ok(WatchMsg::Compacted(_)) => return Broken::Compacted,
                    Ok(WatchMsg::Cancelled(why)) => return Broken::Watch { why, rotate: false },
                    Err(e) => return Broken::Watch { why: e.to_string(), rotate: true },
                },
                _ = keep.tick() => {
                    match self.client.keepalive(self.lease).await {
                        Ok(ttl) if ttl > 0 => {}
                        Ok(_) => {
                            warn!(lease = self.lease, "etcd lease expired; taking a new one");
                            self.lease = 0;
                            return Broken::Watch { why: "lease expired".into(), rotate: false };
                        }
                        Err(e) => return e.into(),
                    }
                    if self.client.endpoint() != endpoint {
                        return Broken::Watch { why: format!("endpoint {endpoint} failed"), rotate: false };
                    }
                }
                _ = snap.tick() => {
                    if let Err(e) = self.publish_hints().await {
                        return e.into();
                    }
                }
                r = health_changes.recv() => {
                    let health = match r {
                        Ok(ev) => ev.kind == crate::events::Kind::Health,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
                    };
                    if health && publish_at.is_none() {
                        publish_at = Some(tokio::time::Instant::now() + self.s.change_delay);
                    }
                }
                _ = tokio::time::sleep_until(due), if publish_at.is_some() => {
                    publish_at = None;
                    if let Err(e) = self.publish_hints().await {
                        return e.into();
                    }
                }
                _ = check.tick() => self.check_mismatch(),
            }
        }
    }

    async fn publish_status(&mut self) -> Result<(), EtcdError> {
        let mut st = self.view().running.clone();
        st.unix_ms = unix_ms();
        let body = serde_json::to_vec(&st).unwrap_or_default();
        self.client
            .put(&self.keys.node(&self.s.node_id), &body, self.lease)
            .await
    }

    async fn publish_hints(&mut self) -> Result<(), EtcdError> {
        let all: Vec<Hint> = self
            .health
            .snapshot()
            .into_iter()
            .map(|t| Hint {
                target: t.id,
                state: t.state.to_string(),
                since_unix_ms: t.since_unix_ms,
                reason: t.last_reason,
            })
            .collect();
        let version = self.view().running.version;
        let snap = Snapshot::bounded(&self.s.node_id, unix_ms(), version, all);
        let body = serde_json::to_vec(&snap).unwrap_or_default();
        self.hints_dirty = false;
        self.client
            .put(&self.keys.hints(&self.s.node_id), &body, self.lease)
            .await
    }

    /// Everything under the prefix, read at (re)start or after a compaction. Nodes already known
    /// stay (an unchanged node raises no event); those no longer there are gone.
    async fn full_read(&mut self, kvs: Vec<etcd::Kv>) {
        let there: HashSet<String> = kvs
            .iter()
            .filter_map(|kv| match self.keys.parse(&kv.key) {
                Key::Node(id) => Some(id),
                _ => None,
            })
            .collect();
        let gone: Vec<String> = {
            let mut v = self.view();
            v.merge = Merge::default();
            v.current = None;
            let gone = v
                .nodes
                .keys()
                .filter(|id| !there.contains(*id))
                .cloned()
                .collect();
            v.nodes.retain(|id, _| there.contains(id));
            gone
        };
        for id in gone.into_iter().filter(|id| *id != self.s.node_id) {
            self.events.publish(cluster_event(
                "node-gone",
                format!("node {id} left (its etcd lease expired or it stopped)"),
            ));
        }
        // Versions first, so that `current` finds its text.
        let (versions, rest): (Vec<_>, Vec<_>) = kvs
            .into_iter()
            .partition(|kv| matches!(self.keys.parse(&kv.key), Key::Version(_)));
        for kv in versions.into_iter().chain(rest) {
            self.on_event(WatchEvent::Put(kv)).await;
        }
    }

    async fn on_event(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Put(kv) => match self.keys.parse(&kv.key) {
                Key::Current => {
                    if let Some(n) = versions::current_of(&kv.value) {
                        self.view().current = Some(n);
                        self.follow(n).await;
                    }
                }
                Key::Version(n) => {
                    if let Ok(v) = serde_json::from_slice::<Version>(&kv.value) {
                        self.texts.insert(n, v.text);
                        while self.texts.len() > 4 {
                            self.texts.pop_first();
                        }
                    }
                }
                Key::Node(id) => {
                    if let Ok(st) = serde_json::from_slice::<NodeStatus>(&kv.value) {
                        let news = node_news(&self.s.node_id, &id, &st, self.view().nodes.get(&id));
                        self.view().nodes.insert(id, st);
                        // After the view holds it, so a console refreshing on the event sees it.
                        if let Some((new, reason)) = news {
                            self.events.publish(cluster_event(new, reason));
                        }
                    }
                }
                Key::Hints(id) => {
                    if let Ok(snap) = serde_json::from_slice::<Snapshot>(&kv.value) {
                        let news = self.view().merge.update(&self.s.node_id, snap);
                        for n in news {
                            let turned = self.health.peer_suspect(&n.target);
                            info!(peer = %id, target = %n.target, peer_state = %n.state, turned_suspect = turned,
                                "a peer node reports a target {}; own test call asked", n.state);
                            if turned {
                                self.events.publish(Event::cluster(
                                    "peer-report",
                                    &format!(
                                        "node {} reports target {} {} ({}): suspect here, own test call asked",
                                        n.node, n.target, n.state, n.reason
                                    ),
                                ));
                            }
                        }
                    }
                }
                Key::Other => {}
            },
            WatchEvent::Delete(key) => match self.keys.parse(&key) {
                Key::Node(id) if id == self.s.node_id => {
                    // Our lease expired while we were away: the session takes a new one.
                    warn!("this node's status vanished from etcd (lease expired)");
                }
                Key::Node(id) => {
                    let gone = self.view().nodes.remove(&id).is_some();
                    if gone {
                        self.events.publish(cluster_event(
                            "node-gone",
                            format!("node {id} left (its etcd lease expired or it stopped)"),
                        ));
                    }
                }
                Key::Hints(id) => self.view().merge.forget(&id),
                _ => {}
            },
        }
    }

    /// `current` names `n`: run it, unless this node runs it already or refused it.
    async fn follow(&mut self, n: u64) {
        let (running, refused) = {
            let v = self.view();
            (v.running.version, v.running.refused)
        };
        if running == n || refused == Some(n) {
            return;
        }
        let text = match self.texts.get(&n) {
            Some(t) => t.clone(),
            None => match versions::version(&self.client, &self.keys, n).await {
                Ok(v) => v.text,
                Err(e) => {
                    warn!(version = n, error = %e, "cannot read the current rules version");
                    return;
                }
            },
        };
        let sink = self.sink.clone();
        let source = format!("etcd:{}", self.keys.version(n));
        let text2 = text.clone();
        let applied = self
            .tasks
            .spawn_blocking(move || sink.apply(n, &text2, &source))
            .await;
        let applied = match applied {
            Ok(r) => r,
            Err(e) => Err(vec![format!("the rules task failed: {e}")]),
        };
        match applied {
            Ok(hash) => {
                {
                    let mut v = self.view();
                    v.running.version = n;
                    v.running.hash = hash.clone();
                    v.running.refused = None;
                    v.running.refused_errors.clear();
                }
                let c = cache::Cached {
                    version: n,
                    hash,
                    text,
                    saved_unix_ms: unix_ms(),
                };
                let path = self.s.cache.clone();
                let saved = self
                    .tasks
                    .spawn_blocking(move || cache::save(&path, &c))
                    .await;
                if !matches!(saved, Ok(Ok(()))) {
                    warn!(cache = %self.s.cache.display(), "cannot write the rules cache");
                }
            }
            Err(errors) => {
                {
                    let mut v = self.view();
                    v.running.refused = Some(n);
                    v.running.refused_errors = errors.clone();
                }
                self.events.publish(cluster_event(
                    "version-refused",
                    format!(
                        "node {} refuses rules version {n} and keeps running version {running}: {}",
                        self.s.node_id,
                        errors.join("; ")
                    ),
                ));
            }
        }
        if let Err(e) = self.publish_status().await {
            warn!(error = %e, "cannot publish this node's status");
        }
    }

    /// A node running something else than `current` for longer than the grace raises one event;
    /// back on `current`, another.
    fn check_mismatch(&mut self) {
        let now = Instant::now();
        let grace = self.s.mismatch_grace;
        let mut out = Vec::new();
        {
            let mut v = self.view();
            let Some(cur) = v.current else { return };
            let mut nodes: BTreeMap<String, NodeStatus> = v.nodes.clone();
            nodes.insert(v.running.node.clone(), v.running.clone());
            let present: HashSet<String> = nodes.keys().cloned().collect();
            for (id, st) in &nodes {
                if st.version == cur {
                    if let Some((_, true)) = v.mismatch.remove(id) {
                        out.push(cluster_event(
                            "node-current",
                            format!("node {id} runs the current rules version {cur} again"),
                        ));
                    } else {
                        v.mismatch.remove(id);
                    }
                    continue;
                }
                let e = v.mismatch.entry(id.clone()).or_insert((now, false));
                if !e.1 && now.duration_since(e.0) >= grace {
                    e.1 = true;
                    let why = match st.refused {
                        Some(r) => format!(
                            " (it refused version {r}: {})",
                            st.refused_errors.join("; ")
                        ),
                        None => String::new(),
                    };
                    out.push(cluster_event(
                        "node-mismatch",
                        format!(
                            "node {id} runs rules version {} ({}) but current is {cur}{why}",
                            st.version, st.hash
                        ),
                    ));
                }
            }
            v.mismatch.retain(|id, _| present.contains(id));
        }
        for e in out {
            self.events.publish(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(node: &str, version: u64, unix_ms: u64) -> NodeStatus {
        NodeStatus {
            node: node.into(),
            version,
            hash: format!("h{version}"),
            unix_ms,
            refused: None,
            refused_errors: Vec::new(),
        }
    }

    fn cluster(me: NodeStatus, current: Option<u64>, peers: &[NodeStatus]) -> Cluster {
        let nodes = peers.iter().map(|n| (n.node.clone(), n.clone())).collect();
        Cluster {
            view: Arc::new(Mutex::new(View {
                connected: true,
                since_unix_ms: 0,
                endpoint: "http://127.0.0.1:2379".into(),
                current,
                running: me,
                nodes,
                merge: Merge::default(),
                mismatch: HashMap::new(),
                revision: 1,
            })),
        }
    }

    #[test]
    fn a_peer_joining_or_changing_version_is_news_a_renewal_and_this_node_are_not() {
        let (old, same, newer) = (st("b", 2, 10), st("b", 2, 99), st("b", 3, 100));
        assert_eq!(
            node_news("a", "b", &old, None).map(|n| n.0),
            Some("node-joined")
        );
        assert_eq!(node_news("a", "b", &same, Some(&old)), None);
        let (what, why) = node_news("a", "b", &newer, Some(&old)).unwrap();
        assert_eq!(what, "node-version");
        assert!(why.contains("version 3 (h3), was 2"), "{why}");
        let mut refused = same.clone();
        refused.refused = Some(3);
        let (what, why) = node_news("a", "b", &refused, Some(&old)).unwrap();
        assert_eq!(what, "node-version");
        assert!(why.contains("refused version 3"), "{why}");
        assert_eq!(node_news("a", "a", &newer, None), None);
        assert_eq!(node_news("a", "a", &newer, Some(&old)), None);
    }

    #[test]
    fn status_lists_every_node_with_its_version_this_node_from_what_it_runs() {
        // This node runs 3 (its published status in etcd still says 2); b is behind.
        let c = cluster(st("a", 3, 0), Some(3), &[st("a", 2, 50), st("b", 2, 60)]);
        let s = c.status();
        let nodes = s["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0]["node"], "a");
        assert_eq!(nodes[0]["self"], true);
        assert_eq!(nodes[0]["version"], 3);
        assert_eq!(nodes[0]["hash"], "h3");
        assert_eq!(nodes[0]["running_current"], true);
        assert_eq!(nodes[0]["unix_ms"], 50, "when it last published");
        assert_eq!(nodes[1]["node"], "b");
        assert_eq!(nodes[1]["self"], false);
        assert_eq!(nodes[1]["version"], 2);
        assert_eq!(nodes[1]["running_current"], false);
        assert_eq!(s["current"], 3);
    }

    #[test]
    fn a_cluster_section_holds_the_flags_keys_and_nothing_else() {
        let s = parse_section(
            "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nnode_id = \"site-1\"\nprefix = \"/p\"\n\
             cache = \"c.json\"\nlease_ttl_s = 9\n",
        )
        .unwrap();
        assert_eq!(s.etcd.unwrap(), ["http://127.0.0.1:2379"]);
        assert_eq!(s.node_id.as_deref(), Some("site-1"));
        assert_eq!(s.prefix.as_deref(), Some("/p"));
        assert_eq!(s.cache, Some(PathBuf::from("c.json")));
        assert_eq!(s.lease_ttl_s, Some(9));
        let err = parse_section("[cluster]\nnode = \"x\"\n").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn before_etcd_was_read_this_node_is_listed_and_current_is_unknown() {
        let c = cluster(st("a", 4, 0), None, &[]);
        let s = c.status();
        assert_eq!(s["nodes"][0]["node"], "a");
        assert_eq!(s["nodes"][0]["version"], 4);
        assert!(s["nodes"][0]["running_current"].is_null());
        assert!(s["current"].is_null());
    }
}
