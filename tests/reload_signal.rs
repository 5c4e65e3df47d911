//! SIGHUP reloads the rules. Its own test binary: a signal reaches every test of a process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::*;
use sosrouter::config::Proto;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_file() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let text = lab_rules(a.addr, b.addr, g.addr, FAST_TIMERS);
    let path = test_dir("reload-sighup").join("rules.toml");
    write_rules(&path, &text);
    let p = proxy_from_file(&path, None, None).await;
    // Installed before the signal is sent: without a handler SIGHUP would end the test process.
    sosrouter::app::reload_on_sighup(p.reloader.clone(), &p.tasks).unwrap();
    write_rules(&path, &swap_primary_and_backup(&text));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let r = p.reloader.clone();
    eventually(Duration::from_secs(10), "SIGHUP reloads", || {
        r.status().version == 2
    })
    .await;
    let mut uac = Uac::new(Proto::Udp, p.local_addr(Proto::Udp).unwrap()).await;
    let out = uac
        .call("urn:service:sos", "after-hup", Duration::from_secs(10))
        .await;
    assert_eq!(out.final_code, 200);
    assert_eq!((a.count("INVITE"), b.count("INVITE")), (0, 1));
}
