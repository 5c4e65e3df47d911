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

use crate::common::*;
use sosrouter::config::Proto;
use sosrouter::sip::HeaderName;

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
