//! SIGHUP reloads the rules.
//!
//! A signal reaches the whole test process, yet this needs no binary of its own: the handler is
//! installed before the signal is sent (and stays for the life of the process, so a stray SIGHUP
//! later cannot kill the run), and no other test listens for SIGHUP (`app::start` and
//! `start_from_file` never install it; only `app::run` does). If the wiring ever installs the
//! handler in `start*`, every file-based proxy of a concurrent test would reload on this signal:
//! move this test back to its own `tests/*.rs` then.

use crate::common::*;
use sosrouter::config::Proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_file() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let text = lab_rules(a.addr, b.addr, g.addr, NO_TIMERS);
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
    eventually(WAIT, "SIGHUP reloads", || r.status().version == 2).await;
    let mut uac = Uac::new(Proto::Udp, p.local_addr(Proto::Udp).unwrap()).await;
    let out = uac.call("urn:service:sos", "after-hup", WAIT).await;
    assert_eq!(out.final_code, 200);
    assert_eq!((a.count("INVITE"), b.count("INVITE")), (0, 1));
}
