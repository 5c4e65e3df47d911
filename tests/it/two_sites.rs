//! Two sites (README "Two sites"): what Record-Route carries when two nodes serve the same rules.
//!
//! Decision: each node Record-Routes its OWN address. The in-dialog requests of a call (ACK, BYE,
//! re-INVITE) follow the route set fixed at its 2xx, so they go through the node that took the
//! call; the other node does not serve a dialog it did not Record-Route (403), as for any stranger.
//! When a node dies, its calls in progress keep their media (RTP never went through sosrouter), but
//! their BYE and re-INVITE get no answer until the endpoints time out; new calls go to the other
//! node (the originating network's own failover). A shared address would need a floating IP
//! between sites, which two sites do not have; the drill measures the cost (`testbeds/run cluster`,
//! `a_in_progress_bye_unanswered`).
//!
//! Rules and versions through a real etcd (Debian's `etcd`, one member on free loopback ports, a
//! data dir of its own, started and killed by the test): a push reaches both nodes and every
//! node's `/status` lists every node's version and SHA-256; a node that cannot load a version keeps
//! its rules, shows as not current and raises `node-mismatch`; of two pushes from one read, one
//! wins; a peer's doubt makes a target suspect at the other node, never down, and ends with the
//! peer's lease; a node started with etcd down runs its cache or refuses. Without etcd these tests FAIL (CI installs etcd-server): they are never skipped.

use crate::common::*;
use sosrouter::app::Running;
use sosrouter::cluster::{self, etcd::Client, keys::Keys, keys::Version, versions};
use sosrouter::config::Proto;
use sosrouter::sip::HeaderName;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn rr(out: &Outcome) -> Vec<String> {
    out.final_msg
        .header_values(HeaderName::RecordRoute)
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_record_routes_itself_and_a_dialog_stays_with_its_node() {
    let p = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let rules = lab_rules(p.addr, b.addr, g.addr, NO_TIMERS);
    let node_a = proxy(&rules, None).await;
    let node_b = proxy(&rules, None).await;
    let (addr_a, addr_b) = (
        node_a.local_addr(Proto::Udp).unwrap(),
        node_b.local_addr(Proto::Udp).unwrap(),
    );

    let mut via_a = Uac::new(Proto::Udp, addr_a).await;
    let out_a = via_a
        .call(&format!("sip:911@{addr_a}"), "site-a-1", WAIT)
        .await;
    assert_eq!(out_a.final_code, 200);
    let mut via_b = Uac::new(Proto::Udp, addr_b).await;
    let out_b = via_b
        .call(&format!("sip:911@{addr_b}"), "site-b-1", WAIT)
        .await;
    assert_eq!(out_b.final_code, 200);

    let (rr_a, rr_b) = (rr(&out_a), rr(&out_b));
    assert!(
        rr_a.iter().all(|r| r.contains(&addr_a.to_string())),
        "{rr_a:?}"
    );
    assert!(
        rr_b.iter().all(|r| r.contains(&addr_b.to_string())),
        "{rr_b:?}"
    );

    // Node a dies. A BYE of a's call sent to node b is refused: b does not serve a's dialogs.
    node_a.shutdown(std::time::Duration::ZERO).await;
    let mut stray = Uac::new(Proto::Udp, addr_b).await;
    assert_eq!(stray.ack_and_bye(&out_a.final_msg, "site-a-1").await, 403);
    // Node b's own dialog is untouched by a's death.
    assert_eq!(via_b.ack_and_bye(&out_b.final_msg, "site-b-1").await, 200);
    node_b.shutdown(std::time::Duration::ZERO).await;
}

/// One etcd member on free loopback ports; killed (by its PID) and its data dir removed on drop.
struct Etcd {
    child: std::process::Child,
    url: String,
    dir: PathBuf,
}

impl Etcd {
    async fn start(name: &str) -> Etcd {
        let dir = test_dir(&format!("etcd-{name}"));
        // Both ports held at once so they differ; released just before etcd binds them.
        let (c, p) = (
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let url = format!("http://{}", c.local_addr().unwrap());
        let peer = format!("http://{}", p.local_addr().unwrap());
        drop((c, p));
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = std::process::Command::new("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .args(["--initial-cluster-state", "new", "--log-level", "warn"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({e}): install Debian's etcd-server (.ci/run does); these tests never skip")
            });
        let mut etcd = Etcd { child, url, dir };
        let client = Client::new(std::slice::from_ref(&etcd.url)).unwrap();
        let keys = Keys::new(cluster::keys::DEFAULT_PREFIX);
        let until = tokio::time::Instant::now() + WAIT;
        while versions::current(&client, &keys).await.is_err() {
            if let Ok(Some(code)) = etcd.child.try_wait() {
                let log = std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default();
                panic!("etcd exited ({code}):\n{log}");
            }
            assert!(
                tokio::time::Instant::now() < until,
                "etcd did not answer at {}",
                etcd.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        etcd
    }

    fn client(&self) -> (Client, Keys) {
        (
            Client::new(std::slice::from_ref(&self.url)).unwrap(),
            Keys::new(cluster::keys::DEFAULT_PREFIX),
        )
    }

    /// Pushes `text` as `rules push` does; the version it became.
    async fn push(&self, text: &str) -> u64 {
        let (client, keys) = self.client();
        let record = Version {
            version: 0,
            hash: sosrouter::app::reload::content_hash(text.as_bytes()),
            text: text.to_string(),
            pushed_unix_ms: 0,
            by: "test".into(),
            source: "two_sites.rs".into(),
        };
        match versions::push(&client, &keys, record).await.unwrap() {
            versions::Outcome::Done { to, .. } => to,
            lost => panic!("push lost: {lost:?}"),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cluster node as `sosrouter run --etcd URL --node-id ID` starts it, admin on a free port.
/// `listen`: from the command line (Some), or from the rules (None: then a version that changes
/// `listen` cannot load on this node).
async fn node(etcd: &str, id: &str, dir: &Path, listen: Option<&str>) -> Running {
    start_node(etcd, id, dir, listen).await.unwrap()
}

async fn start_node(
    etcd: &str,
    id: &str,
    dir: &Path,
    listen: Option<&str>,
) -> anyhow::Result<Running> {
    init_logs();
    let mut s = cluster::Settings::new(vec![etcd.to_string()], id.to_string());
    s.cache = dir.join(format!("{id}.cache.json"));
    s.mismatch_grace = Duration::from_millis(300);
    let opts = sosrouter::app::RunOptions {
        listen: listen
            .map(|l| vec![sosrouter::app::parse_listen(l).unwrap()])
            .unwrap_or_default(),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        cluster: Some(s),
        ..Default::default()
    };
    sosrouter::app::start_cluster(&opts).await
}

/// `rules.cluster` of the node's `GET /status` once `ok` holds of it (panics after `WAIT`).
async fn cluster_status(
    r: &Running,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let admin = r.admin.unwrap();
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, body) = admin_call(admin, "GET", "/status").await;
        assert_eq!(code, 200);
        let c = body["rules"]["cluster"].clone();
        if ok(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for: {what}; last: {c:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(node, version, hash, running_current)` of every node in a `rules.cluster`.
fn versions_of(c: &serde_json::Value) -> Vec<(String, u64, String, serde_json::Value)> {
    c["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["node"].as_str().unwrap_or("").to_string(),
                        n["version"].as_u64().unwrap_or(0),
                        n["hash"].as_str().unwrap_or("").to_string(),
                        n["running_current"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn all_at(version: u64, hash: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |c| {
        let v = versions_of(c);
        v.len() == 2
            && v.iter()
                .all(|(_, n, h, cur)| *n == version && h == hash && *cur == true)
    }
}

/// Waits for a `cluster` event named `new` whose reason contains `text`; its reason.
async fn cluster_event(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<sosrouter::events::Event>>,
    new: &str,
    text: &str,
) -> String {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(e))
                if e.kind == sosrouter::events::Kind::Cluster
                    && e.new.as_deref() == Some(new)
                    && e.reason.contains(text) =>
            {
                return e.reason.clone();
            }
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event bus: {e}"),
            Err(_) => panic!("no `{new}` cluster event about {text:?} within {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_both_nodes_each_status_lists_every_nodes_version_and_the_cache_outlives_etcd()
 {
    let etcd = Etcd::start("push").await;
    let dir = test_dir("two-sites-push");
    let (p, b, g) = (dead_port().await, dead_port().await, dead_port().await);
    let v1_text = lab_rules(p, b, g, NO_TIMERS);
    assert_eq!(etcd.push(&v1_text).await, 1);
    let node_a = node(&etcd.url, "site-a", &dir, Some("udp:127.0.0.1:0")).await;
    let node_b = node(&etcd.url, "site-b", &dir, Some("udp:127.0.0.1:0")).await;
    let h1 = sosrouter::app::reload::content_hash(v1_text.as_bytes());
    assert_eq!(h1.len(), 64, "SHA-256 in hex");
    for n in [&node_a, &node_b] {
        let c = cluster_status(n, "both nodes at version 1", all_at(1, &h1)).await;
        assert_eq!(c["current"], 1);
        let names: Vec<String> = versions_of(&c).into_iter().map(|v| v.0).collect();
        assert_eq!(names, ["site-a", "site-b"]);
    }
    let c = cluster_status(&node_a, "a", |_| true).await;
    assert_eq!(c["node"], "site-a");
    let me: Vec<bool> = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["self"].as_bool().unwrap())
        .collect();
    assert_eq!(me, [true, false]);

    // A push: both nodes run it, and each lists both at the new version; node a is told of b's
    // new version by an event (what makes the console refresh).
    let mut a_events = node_a.events.subscribe();
    let v2_text = format!("{v1_text}\n# version 2\n");
    let h2 = sosrouter::app::reload::content_hash(v2_text.as_bytes());
    assert_eq!(etcd.push(&v2_text).await, 2);
    for n in [&node_a, &node_b] {
        cluster_status(n, "both nodes at version 2", all_at(2, &h2)).await;
        assert_eq!(n.reloader.status().version, 2);
        assert_eq!(n.reloader.status().hash.as_deref(), Some(h2.as_str()));
    }
    let why = cluster_event(&mut a_events, "node-version", "node site-b").await;
    assert!(why.contains("version 2"), "{why}");

    // etcd gone: a node started now runs the rules site-a last ran (its cache file) and shows
    // itself with `current` unknown; a node that never ran any refuses to start.
    let url = etcd.url.clone();
    drop(etcd);
    let a_cache = dir.join("site-a.cache.json");
    eventually(WAIT, "site-a cached version 2", || {
        cluster::cache::load(&a_cache).is_ok_and(|c| c.is_some_and(|c| c.version == 2))
    })
    .await;
    std::fs::copy(&a_cache, dir.join("site-c.cache.json")).unwrap();
    let node_c = node(&url, "site-c", &dir, Some("udp:127.0.0.1:0")).await;
    assert_eq!(node_c.reloader.status().version, 2);
    let c = cluster_status(&node_c, "site-c", |_| true).await;
    assert_eq!(c["etcd"]["connected"], false);
    assert!(c["current"].is_null());
    assert_eq!(
        versions_of(&c),
        [(
            String::from("site-c"),
            2,
            h2.clone(),
            serde_json::Value::Null
        )]
    );
    let refused = start_node(&url, "site-d", &dir, Some("udp:127.0.0.1:0")).await;
    let why = refused
        .err()
        .expect("a node without a cache must not start")
        .to_string();
    assert!(why.contains("no rules cache"), "{why}");

    node_c.shutdown(Duration::ZERO).await;
    node_a.shutdown(Duration::ZERO).await;
    node_b.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_load_a_version_keeps_its_rules_shows_not_current_and_raises_an_event() {
    let etcd = Etcd::start("mismatch").await;
    let dir = test_dir("two-sites-mismatch");
    let (p, b, g) = (dead_port().await, dead_port().await, dead_port().await);
    let v1_text = lab_rules(p, b, g, NO_TIMERS);
    let h1 = sosrouter::app::reload::content_hash(v1_text.as_bytes());
    etcd.push(&v1_text).await;
    // a's sockets come from its command line; b's from the rules (bound once, at start).
    let node_a = node(&etcd.url, "site-a", &dir, Some("udp:127.0.0.1:0")).await;
    let node_b = node(&etcd.url, "site-b", &dir, None).await;
    cluster_status(&node_a, "both at version 1", all_at(1, &h1)).await;
    let mut a_events = node_a.events.subscribe();

    // Version 2 changes `listen`: a loads it, b cannot (its sockets are bound) and keeps 1.
    let v2_text = v1_text.replace(
        r#"listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]"#,
        r#"listen = ["udp:127.0.0.1:0"]"#,
    );
    assert_ne!(v2_text, v1_text);
    let h2 = sosrouter::app::reload::content_hash(v2_text.as_bytes());
    assert_eq!(etcd.push(&v2_text).await, 2);
    let c = cluster_status(&node_a, "b refused version 2", |c| {
        c["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["node"] == "site-b" && n["refused"] == 2))
    })
    .await;
    assert_eq!(c["current"], 2);
    assert_eq!(
        versions_of(&c),
        [
            (
                String::from("site-a"),
                2,
                h2.clone(),
                serde_json::json!(true)
            ),
            (
                String::from("site-b"),
                1,
                h1.clone(),
                serde_json::json!(false)
            ),
        ]
    );
    let b_row = &c["nodes"][1];
    assert!(
        b_row["refused_errors"][0]
            .as_str()
            .unwrap()
            .contains("listen"),
        "{b_row}"
    );
    assert_eq!(
        node_b.reloader.status().version,
        1,
        "b keeps serving version 1"
    );
    let why = cluster_event(&mut a_events, "node-mismatch", "node site-b").await;
    assert!(
        why.contains("current is 2") && why.contains("refused version 2"),
        "{why}"
    );

    // Version 3 restores b's listen: both run it, and b's return is announced.
    let v3_text = format!("{v1_text}\n# version 3\n");
    let h3 = sosrouter::app::reload::content_hash(v3_text.as_bytes());
    assert_eq!(etcd.push(&v3_text).await, 3);
    for n in [&node_a, &node_b] {
        cluster_status(n, "both at version 3", all_at(3, &h3)).await;
    }
    cluster_event(&mut a_events, "node-current", "node site-b").await;

    node_a.shutdown(Duration::ZERO).await;
    node_b.shutdown(Duration::ZERO).await;
}

/// Two pushes that read the same `current` (as two operators at once): etcd applies exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_pushes_from_one_read_etcd_applies_exactly_one() {
    let etcd = Etcd::start("race").await;
    let (client, keys) = etcd.client();
    etcd.push("first").await;
    let seen = versions::seen(&client, &keys).await.unwrap();
    assert_eq!(seen.current, Some(1));
    let (n, compares) = versions::push_txn(&keys, seen);
    let puts = |who: &str| {
        [
            (keys.version(n), who.as_bytes().to_vec()),
            (keys.current(), n.to_string().into_bytes()),
        ]
    };
    assert!(
        client.txn(&compares, &puts("x")).await.unwrap(),
        "the first wins"
    );
    assert!(
        !client.txn(&compares, &puts("y")).await.unwrap(),
        "the second is refused"
    );
    let kv = client.get(&keys.version(n)).await.unwrap().unwrap();
    assert_eq!(kv.value, b"x", "the loser changed nothing");
    assert_eq!(
        versions::seen(&client, &keys).await.unwrap().current,
        Some(2)
    );

    // `rules rollback` moves current back to a stored version; `history` shows it; an unknown
    // version is refused and changes nothing.
    assert_eq!(
        versions::rollback(&client, &keys, 1).await.unwrap(),
        versions::Outcome::Done {
            from: Some(2),
            to: 1
        }
    );
    assert!(matches!(
        versions::rollback(&client, &keys, 9).await,
        Err(versions::VersionsError::NoSuchVersion(9))
    ));
    let (current, stored) = versions::history(&client, &keys).await.unwrap();
    assert_eq!(current, Some(1));
    assert_eq!(
        stored.len(),
        1,
        "the raw `x` of the race is not a version record"
    );
    assert_eq!(etcd.push("third").await, 3, "never reuses a number");
}

/// Health hints through etcd: a target node a doubts turns suspect at node b (b's `peer_reports`
/// and a `peer-report` event say who said so), never down; when a dies, its hints expire with its
/// lease and b says the node is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_doubt_makes_a_target_suspect_here_never_down_and_ends_with_its_lease() {
    let etcd = Etcd::start("hints").await;
    let dir = test_dir("two-sites-hints");
    let (p, b, g) = (dead_port().await, dead_port().await, dead_port().await);
    // No test calls: b's own verdict cannot move the target, so only the peer's doubt acts here.
    let text = format!(
        "{}\n[test_calls]\nenabled = false\n",
        lab_rules(p, b, g, NO_TIMERS)
    );
    etcd.push(&text).await;
    let node_a = node(&etcd.url, "site-a", &dir, Some("udp:127.0.0.1:0")).await;
    let node_b = node(&etcd.url, "site-b", &dir, Some("udp:127.0.0.1:0")).await;
    let h = sosrouter::app::reload::content_hash(text.as_bytes());
    cluster_status(&node_b, "both nodes known", all_at(1, &h)).await;
    let mut b_events = node_b.events.subscribe();
    let state = |r: &Running| r.health.status("psap-primary").unwrap().state.to_string();
    assert_eq!(state(&node_b), "up");

    // a doubts the primary (as a domain's or a peer's doubt does: suspect, nothing of its own).
    assert!(node_a.health.peer_suspect("psap-primary"));
    assert_eq!(state(&node_a), "suspect");
    let why = cluster_event(
        &mut b_events,
        "peer-report",
        "node site-a reports target psap-primary suspect",
    )
    .await;
    assert!(why.contains("suspect here"), "{why}");
    assert_eq!(
        state(&node_b),
        "suspect",
        "a peer's doubt makes it suspect here"
    );
    let c = cluster_status(&node_b, "a's report listed", |c| {
        c["peer_reports"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    assert_eq!(
        c["peer_reports"],
        serde_json::json!([{"node": "site-a", "target": "psap-primary", "state": "suspect"}])
    );

    // a dies without a word: its lease runs out, its hints and status go with it.
    node_a.shutdown(Duration::ZERO).await;
    cluster_event(&mut b_events, "node-gone", "node site-a").await;
    let c = cluster_status(&node_b, "a gone", |c| {
        versions_of(c).len() == 1 && c["peer_reports"].as_array().is_some_and(|r| r.is_empty())
    })
    .await;
    assert_eq!(c["nodes"][0]["node"], "site-b");
    assert_ne!(state(&node_b), "down", "never down on a peer's word");

    node_b.shutdown(Duration::ZERO).await;
}
