//! Hot reload over real loopback sockets: a reload under a steady stream of calls loses none and
//! moves new calls to the new first target; a broken file or a changed listen address is refused
//! with its line and changes nothing; health survives a reload; the file watcher picks up a change.
//! (SIGHUP: `reload_signal.rs`.)
//!
//! Waits are liveness bounds, never timing assertions. No call timer fires here (`NO_TIMERS`): the
//! tests assert which target took each call, so a slow answer must never pass for a silent target.

use crate::common::*;
use sosrouter::config::Proto;
use sosrouter::health::{Outcome, State};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

async fn call_ok(p: &sosrouter::app::Running, call_id: &str) {
    let mut uac = Uac::new(Proto::Udp, p.local_addr(Proto::Udp).unwrap()).await;
    let out = uac.call("urn:service:sos", call_id, WAIT).await;
    assert_eq!(out.final_code, 200, "call {call_id}");
}

fn call_ids(uas: &Uas) -> Vec<String> {
    uas.received()
        .iter()
        .filter(|r| r.method == "INVITE")
        .map(|r| String::from_utf8_lossy(r.msg.call_id()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_under_load_fails_no_call_and_moves_new_calls() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    // The callers stand for one trusted trunk (as in routing-rules/lab.toml): the per-source rate
    // limit is not what this test is about.
    let text = lab_rules(a.addr, b.addr, g.addr, NO_TIMERS)
        + "\n[overload]\ntrusted_sources = [\"127.0.0.0/8\"]\n";
    let path = test_dir("reload-load").join("rules.toml");
    write_rules(&path, &text);
    let p = proxy_from_file(&path, None, None).await;
    let admin = p.admin.unwrap();
    let addr = p.local_addr(Proto::Udp).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reloaded = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for c in 0..4 {
        let (stop, reloaded, done) = (stop.clone(), reloaded.clone(), done.clone());
        callers.push(tokio::spawn(async move {
            let mut uac = Uac::new(Proto::Udp, addr).await;
            let (mut failed, mut after) = (Vec::new(), Vec::new());
            // Bounded: at most 300 calls per caller.
            for i in 0..300 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("load-{c}-{i}");
                // Read before the INVITE leaves: a call marked "after" reached the proxy after
                // the reload's swap.
                let is_after = reloaded.load(Ordering::SeqCst);
                let out = uac.call("urn:service:sos", &id, WAIT).await;
                if out.final_code != 200 {
                    failed.push((id.clone(), out.final_code));
                }
                if is_after {
                    after.push(id);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            (failed, after)
        }));
    }
    let d = done.clone();
    eventually(WAIT, "calls before the reload", || {
        d.load(Ordering::SeqCst) >= 20
    })
    .await;
    write_rules(&path, &swap_primary_and_backup(&text));
    let (code, body) = admin_call(admin, "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["version"], 2);
    reloaded.store(true, Ordering::SeqCst);
    let mark = done.load(Ordering::SeqCst);
    eventually(WAIT, "calls after the reload", || {
        d.load(Ordering::SeqCst) >= mark + 40
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (mut failed, mut after) = (Vec::new(), Vec::new());
    for c in callers {
        let (f, a) = c.await.unwrap();
        failed.extend(f);
        after.extend(a);
    }
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert!(
        after.len() >= 20,
        "only {} calls after the reload",
        after.len()
    );
    let (to_a, to_b) = (call_ids(&a), call_ids(&b));
    for id in &after {
        assert!(
            to_b.contains(id),
            "{id} started after the reload but did not go to the backup"
        );
        assert!(
            !to_a.contains(id),
            "{id} started after the reload but tried the old primary"
        );
    }
    assert!(
        !to_a.is_empty(),
        "calls before the reload went to the primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_or_a_moved_listen_address_changes_nothing() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let text = lab_rules(a.addr, b.addr, g.addr, NO_TIMERS);
    let path = test_dir("reload-broken").join("rules.toml");
    write_rules(&path, &text);
    let p = proxy_from_file(&path, None, None).await;
    let admin = p.admin.unwrap();
    let (_, status) = admin_call(admin, "GET", "/status").await;
    let hash = status["rules"]["hash"].as_str().unwrap().to_string();
    // The hash is what an operator's `sha256sum` prints for the file.
    let sum = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum (coreutils) runs");
    let sum = String::from_utf8(sum.stdout).unwrap();
    assert_eq!(sum.split_whitespace().next(), Some(hash.as_str()), "{sum}");
    assert_eq!(status["rules"]["version"], 1);
    assert_eq!(status["rules"]["source"], path.display().to_string());
    assert!(status["rules"]["last_reload_error"].is_null());
    assert!(status["targets"].as_array().is_some_and(|t| t.len() == 4));

    // A misspelt key in an otherwise routing-changing edit: refused whole.
    let broken = swap_primary_and_backup(&text)
        .replace("[defaults]\n", "[defaults]\natempt_timeout_ms = 5\n");
    let line = broken
        .lines()
        .position(|l| l.starts_with("atempt"))
        .unwrap()
        + 1;
    write_rules(&path, &broken);
    let (code, body) = admin_call(admin, "POST", "/reload").await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["ok"], false);
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let want = format!("{}:{line}:1: error:", path.display());
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&want) && e.contains("atempt_timeout_ms")),
        "{errors:?}"
    );
    let (_, status) = admin_call(admin, "GET", "/status").await;
    assert_eq!(status["rules"]["version"], 1);
    assert_eq!(status["rules"]["hash"], hash.as_str());
    assert_eq!(status["rules"]["last_reload_error"][0], errors[0]);
    call_ok(&p, "after-broken").await;
    assert_eq!(
        (a.count("INVITE"), b.count("INVITE")),
        (1, 0),
        "the old rules still route"
    );

    // A new listen address cannot be honoured without a restart: refused, saying why.
    let moved = swap_primary_and_backup(&text).replace("udp:127.0.0.1:0", "udp:127.0.0.2:0");
    write_rules(&path, &moved);
    let (code, body) = admin_call(admin, "POST", "/reload").await;
    assert_eq!(code, 422, "{body}");
    let e = body["errors"][0].as_str().unwrap();
    assert!(e.contains("listen") && e.contains("bound once"), "{e}");
    call_ok(&p, "after-moved").await;
    assert_eq!((a.count("INVITE"), b.count("INVITE")), (2, 0));

    // Fixed: accepted, and the error is cleared.
    write_rules(&path, &swap_primary_and_backup(&text));
    let (code, body) = admin_call(admin, "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_ne!(body["hash"], hash.as_str());
    let (_, status) = admin_call(admin, "GET", "/status").await;
    assert!(status["rules"]["last_reload_error"].is_null(), "{status}");
    call_ok(&p, "after-fixed").await;
    assert_eq!((a.count("INVITE"), b.count("INVITE")), (2, 1));
    let (code, _) = admin_call(admin, "GET", "/reload").await;
    assert_eq!(code, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_down_target_down() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    // No test calls: one would find the primary healthy and bring it back up, which is right, but
    // this test is about what a reload keeps.
    let text = lab_rules(a.addr, b.addr, g.addr, NO_TIMERS) + "\n[test_calls]\nenabled = false\n";
    let path = test_dir("reload-health").join("rules.toml");
    write_rules(&path, &text);
    let p = proxy_from_file(&path, None, None).await;
    for _ in 0..3 {
        p.health.report("psap-primary", Outcome::TransportError);
    }
    // Outcomes reach health over a channel: wait until the applier has taken them in.
    eventually(WAIT, "primary down", || {
        p.health.status("psap-primary").unwrap().state == State::Down
    })
    .await;
    let before = p.health.status("psap-primary").unwrap();
    assert_eq!(before.state, State::Down);
    assert!(p.health.set_enabled("psap-backup", false));
    // A change that keeps every id: new timers.
    write_rules(
        &path,
        &text.replace("ring_timeout_ms = 30000", "ring_timeout_ms = 31000"),
    );
    let r = p.reloader.reload("test").expect("valid rules");
    assert_eq!(r.version, 2);
    let primary = p.health.status("psap-primary").unwrap();
    assert_eq!(primary.state, State::Down, "health survives a reload");
    assert_eq!(
        primary.counters,
        p.health.status("psap-primary").unwrap().counters
    );
    assert!(
        !p.health.status("psap-backup").unwrap().enabled,
        "the operator switch survives"
    );
    call_ok(&p, "after-reload").await;
    assert_eq!(a.count("INVITE"), 0, "the down primary is still skipped");
    assert_eq!(b.count("INVITE"), 0, "the disabled backup is still skipped");
    assert_eq!(g.count("INVITE"), 1, "the business line took the call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_watcher_reloads_a_changed_file() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let text = lab_rules(a.addr, b.addr, g.addr, NO_TIMERS);
    let path = test_dir("reload-watch").join("rules.toml");
    write_rules(&path, &text);
    let p = proxy_from_file(&path, None, Some(Default::default())).await;
    call_ok(&p, "before").await;
    assert_eq!(a.count("INVITE"), 1);
    // Written in place (not renamed), as an editor does: the watcher waits for it to settle.
    std::fs::write(&path, swap_primary_and_backup(&text)).unwrap();
    let r = p.reloader.clone();
    eventually(WAIT, "the watcher reloads", || r.status().version == 2).await;
    call_ok(&p, "after").await;
    assert_eq!((a.count("INVITE"), b.count("INVITE")), (1, 1));
    // A broken edit is refused once and not retried while unchanged.
    std::fs::write(&path, "listen = [\n").unwrap();
    eventually(WAIT, "the watcher tries the broken file", || {
        r.status().last_reload_error.is_some()
    })
    .await;
    assert_eq!(r.status().version, 2);
    call_ok(&p, "after-broken").await;
    assert_eq!(b.count("INVITE"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_turns_test_calls_on_reaches_the_test_call_scheduler() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let base = lab_rules(a.addr, b.addr, g.addr, NO_TIMERS);
    let path = test_dir("reload-testcalls").join("rules.toml");
    write_rules(&path, &(base.clone() + "\n[test_calls]\nenabled = false\n"));
    let p = proxy_from_file(&path, None, None).await;
    write_rules(&path, &(base + "\n[test_calls]\nenabled = true\n"));
    p.reloader.reload("test").expect("valid rules");
    // A failed call makes the primary suspect, and a suspect target gets a test call: only if
    // the scheduler took the new rules (it started with test calls off).
    p.health.report("psap-primary", Outcome::TransportError);
    eventually(WAIT, "a test call at the primary", || {
        a.received()
            .iter()
            .any(|r| r.method == "INVITE" && r.request_uri == "urn:service:test.sos")
    })
    .await;
}
