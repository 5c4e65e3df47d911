//! Emergency-first admission over loopback: a flood of non-emergency INVITEs from one source while
//! emergency calls from another keep completing; per-source rate limits; the trunk ACL. Counts are
//! bounded; nothing here measures time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use crate::common::*;
use sosrouter::config::Proto;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Emergency calls (urn:service:sos) go to `psap`, which answers; everything else to `hold`, which
/// never answers, so non-emergency calls stay in flight (long timers) and load the proxy.
fn rules(psap: SocketAddr, hold: SocketAddr, extra: &str) -> String {
    format!(
        r#"listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
[defaults]
{NO_TIMERS}
[health]
probe = false
[[targets]]
id = "psap"
uri = "sip:{psap}"
failure_domain = "a"
[[targets]]
id = "hold"
uri = "sip:{hold}"
failure_domain = "b"
[[routes]]
id = "sos"
chain = ["psap"]
service_urns = ["urn:service:sos"]
[default_route]
chain = ["hold"]
{extra}
"#
    )
}

/// Sends `n` non-emergency INVITEs, at most [`WINDOW`] of them unanswered at a time, and returns
/// the code of every refusal. Each INVITE gets exactly one first answer: 100 Trying when admitted
/// (its target is silent, so nothing follows) or a final refusal; this waits for that answer for
/// every call (never for "quiet"), and fails loudly after `WAIT`.
async fn flood(uac: &mut Uac, n: usize, tag: &str) -> Vec<u16> {
    let ruri = format!("sip:5551234@{}", uac.proxy);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut answered = std::collections::HashSet::new();
    let mut finals = Vec::new();
    let mut sent = 0;
    while answered.len() < n {
        if sent < n && sent - answered.len() < WINDOW {
            let id = format!("{tag}-{sent}");
            let inv = uac.invite(&ruri, &id, &format!("z9hG4bK-{id}"));
            uac.send(&inv).await;
            sent += 1;
            continue;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = uac.recv(left).await else {
            panic!("{tag}: only {} of {n} INVITEs answered", answered.len());
        };
        let Some(code) = m.status() else { continue };
        if code >= 200 {
            finals.push(code);
            let retry = m.header_named(b"Retry-After");
            assert!(retry.is_some(), "a {code} refusal carries Retry-After");
        }
        answered.insert(m.call_id().to_vec());
    }
    finals
}

/// INVITEs a flood keeps unanswered at most: a burst, but one whose answers always fit the
/// flooder's socket buffer (the default 208 KB), so no answer is lost to the kernel.
const WINDOW: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_calls_complete_through_a_tenfold_non_emergency_flood() {
    let psap = Uas::start(Behaviour::Answer).await;
    let hold = Uas::start(Behaviour::Silent).await;
    let extra =
        "[overload]\nnon_emergency_calls_max = 20\ncalls_max = 1000\nsource_invites_per_s = 100000";
    let p = proxy(&rules(psap.addr, hold.addr, extra), None).await;
    let addr = p.local_addr(Proto::Udp).unwrap();
    let mut flooder = Uac::udp_from("127.0.0.1", addr).await;
    let mut caller = Uac::udp_from("127.0.0.2", addr).await;
    // 10x the non-emergency capacity, while emergency calls run from another source.
    let flood_task = tokio::spawn(async move { flood(&mut flooder, 200, "flood").await });
    let mut completed = 0;
    for i in 0..20 {
        let out = caller
            .call("urn:service:sos", &format!("sos-{i}"), WAIT)
            .await;
        assert_eq!(
            out.final_code, 200,
            "emergency call {i} failed under the flood"
        );
        completed += 1;
    }
    let refused = flood_task.await.unwrap();
    assert_eq!(completed, 20);
    assert!(refused.iter().all(|c| *c == 503), "only 503s: {refused:?}");
    assert!(
        200 - refused.len() <= 20,
        "non_emergency_calls_max = 20 held: {} admitted",
        200 - refused.len()
    );
    let shed = p.proxy.protection.counters.shed.load(Ordering::Relaxed);
    assert!(shed >= 150, "most of the flood was shed ({shed})");
    assert_eq!(p.proxy.protection.counters.full.load(Ordering::Relaxed), 0);
    // The shedding kept non-emergency calls at their limit; emergency ones were never refused.
    // (The last answered emergency call leaves the table just after its 200 is relayed.)
    eventually(
        WAIT,
        "only the admitted non-emergency calls in flight",
        || p.proxy.calls_in_flight() <= 20,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_rate_limits_spare_emergency_calls_and_trusted_trunks() {
    let psap = Uas::start(Behaviour::Answer).await;
    let hold = Uas::start(Behaviour::Silent).await;
    let extra = "[overload]\nsource_invites_per_s = 5\nsource_emergency_invites_per_s = 1000\n\
                 trusted_sources = [\"127.0.0.3/32\"]";
    let p = proxy(&rules(psap.addr, hold.addr, extra), None).await;
    let addr = p.local_addr(Proto::Udp).unwrap();
    let mut flooder = Uac::udp_from("127.0.0.1", addr).await;
    let refused = flood(&mut flooder, 50, "rate").await;
    assert!(
        refused.len() >= 30,
        "most of 50 INVITEs over 5/s refused: {}",
        refused.len()
    );
    let limited = p
        .proxy
        .protection
        .counters
        .rate_limited
        .load(Ordering::Relaxed);
    assert_eq!(limited as usize, refused.len());
    // The same source, right after: its emergency allowance is separate and much larger.
    let out = flooder
        .call("urn:service:sos", "sos-after-flood", WAIT)
        .await;
    assert_eq!(out.final_code, 200);
    // A trusted trunk is not rate limited at all.
    let mut trunk = Uac::udp_from("127.0.0.3", addr).await;
    assert!(flood(&mut trunk, 50, "trunk").await.is_empty());
    assert_eq!(
        p.proxy.table_sizes().sources,
        1,
        "only the untrusted source is tracked"
    );
}

async fn acl_case(unlisted: &str) -> (u16, u16, u16) {
    let psap = Uas::start(Behaviour::Answer).await;
    let hold = Uas::start(Behaviour::Reply(486)).await;
    let extra =
        format!("[[acl]]\nlisten = \"udp:127.0.0.1:0\"\nallow = [\"127.0.0.1/32\"]\n{unlisted}");
    let p = proxy(&rules(psap.addr, hold.addr, &extra), None).await;
    let addr = p.local_addr(Proto::Udp).unwrap();
    let mut listed = Uac::udp_from("127.0.0.1", addr).await;
    let mut other = Uac::udp_from("127.0.0.4", addr).await;
    let listed_sos = listed
        .call("urn:service:sos", "acl-1", WAIT)
        .await
        .final_code;
    let ruri = format!("sip:5551234@{addr}");
    let other_plain = other.call(&ruri, "acl-2", WAIT).await.final_code;
    let other_sos = other
        .call("urn:service:sos", "acl-3", WAIT)
        .await
        .final_code;
    (listed_sos, other_plain, other_sos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_refuses_unlisted_sources_but_not_their_emergency_calls_by_default() {
    assert_eq!(acl_case("").await, (200, 403, 200));
    let reject = "emergency_from_unlisted = \"reject\"";
    assert_eq!(acl_case(reject).await, (200, 403, 403));
}
