//! The prober against a fake transport, under paused tokio time.

use super::{sip_target, tel_target};
use crate::config::Proto;
use crate::health::{Health, ProbeIds, ProbeTransport, State, build_options, is_probe_branch};
use crate::routing::{Readiness, Target};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::{Instant, sleep};

/// Records every probe; answers the ones toward addresses in `reply` after 10 ms.
#[derive(Default)]
struct Fake {
    sent: Mutex<Vec<(Instant, SocketAddr, String)>>,
    reply: Mutex<HashMap<SocketAddr, u16>>,
    health: OnceLock<Health>,
}

fn branch_of(text: &str) -> String {
    let start = text.find("branch=").expect("branch") + "branch=".len();
    let rest = &text[start..];
    let end = rest.find([';', '\r']).unwrap_or(rest.len());
    rest[..end].to_string()
}

impl ProbeTransport for Fake {
    fn local_addr(&self, _: Proto) -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }
    fn send(&self, _: Proto, to: SocketAddr, bytes: Bytes) {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let code = self.reply.lock().unwrap().get(&to).copied();
        if let Some(code) = code {
            let h = self.health.get().unwrap().clone();
            let branch = branch_of(&text);
            tokio::spawn(async move {
                sleep(Duration::from_millis(10)).await;
                h.on_probe_response(branch.as_bytes(), code);
            });
        }
        self.sent.lock().unwrap().push((Instant::now(), to, text));
    }
}

impl Fake {
    fn replies(&self, to: SocketAddr, code: Option<u16>) {
        let mut r = self.reply.lock().unwrap();
        match code {
            Some(c) => r.insert(to, c),
            None => r.remove(&to),
        };
    }
    fn times_to(&self, to: SocketAddr) -> Vec<Instant> {
        let sent = self.sent.lock().unwrap();
        sent.iter().filter(|s| s.1 == to).map(|s| s.0).collect()
    }
}

fn start(targets: &[Arc<Target>]) -> (Health, Arc<Fake>, Instant) {
    let h = Health::from_targets(targets);
    let fake = Arc::new(Fake::default());
    fake.health.set(h.clone()).unwrap();
    let t0 = Instant::now();
    h.spawn_prober(fake.clone(), &crate::tasks::Tasks::new());
    (h, fake, t0)
}

#[tokio::test(start_paused = true)]
async fn first_round_is_staggered_then_interval_plus_bounded_jitter() {
    let targets: Vec<_> = (0..5)
        .map(|i| sip_target(&format!("t{i}"), 5071 + i))
        .collect();
    let (_h, fake, t0) = start(&targets);
    sleep(Duration::from_millis(1001)).await;
    assert_eq!(
        fake.sent.lock().unwrap().len(),
        5,
        "every target in the first interval"
    );
    sleep(Duration::from_secs(30)).await;
    for (i, t) in targets.iter().enumerate() {
        let times = fake.times_to(t.next_hop);
        assert_eq!(
            times[0] - t0,
            Duration::from_millis(200) * i as u32,
            "staggered by index"
        );
        assert!(times.len() >= 25 && times.len() <= 31, "{}", times.len());
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= Duration::from_millis(1000), "{gap:?}");
            assert!(gap <= Duration::from_millis(1200), "{gap:?}");
        }
    }
    // Jitter spreads the probes: the five targets do not all fire at the same instants.
    let all: Vec<Instant> = fake.sent.lock().unwrap().iter().map(|s| s.0).collect();
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert!(distinct.len() > all.len() / 2);
}

fn no_jitter(id: &str, port: u16) -> Arc<Target> {
    let mut t = (*sip_target(id, port)).clone();
    t.health.probe_jitter_percent = 0;
    Arc::new(t)
}

#[tokio::test(start_paused = true)]
async fn n_hosts_are_each_probed_once_per_interval_evenly_spread() {
    let n = 400u16;
    let targets: Vec<_> = (0..n)
        .map(|i| no_jitter(&format!("t{i}"), 20000 + i))
        .collect();
    let (_h, fake, t0) = start(&targets);
    sleep(Duration::from_millis(3000) - Duration::from_micros(1)).await;
    for t in &targets {
        assert_eq!(
            fake.times_to(t.next_hop).len(),
            3,
            "{}: once per interval",
            t.id
        );
    }
    // Evenly spread: in every 1/n-th slot of an interval, exactly one probe.
    let slot = Duration::from_secs(1) / u32::from(n);
    let mut per_slot = vec![0u32; 3 * usize::from(n)];
    for s in fake.sent.lock().unwrap().iter() {
        let k = ((s.0 - t0).as_nanos() / slot.as_nanos()) as usize;
        per_slot[k] += 1;
    }
    assert!(per_slot.iter().all(|&c| c == 1), "{per_slot:?}");
}

#[tokio::test(start_paused = true)]
async fn removing_a_host_stops_its_probes_and_keeps_the_others_phase() {
    let a = no_jitter("a", 5071);
    let b = no_jitter("b", 5072);
    let (h, fake, t0) = start(&[a.clone(), b.clone()]);
    sleep(Duration::from_millis(1200)).await;
    h.rekey_targets(std::slice::from_ref(&b));
    sleep(Duration::from_millis(5000)).await;
    assert_eq!(
        fake.times_to(a.next_hop).len(),
        2,
        "a: at 0 and 1 s, then none"
    );
    let to_b = fake.times_to(b.next_hop);
    assert_eq!(to_b.len(), 6);
    for (k, at) in to_b.iter().enumerate() {
        assert_eq!(
            *at - t0,
            Duration::from_millis(500) + Duration::from_secs(k as u64)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn probe_lateness_is_recorded() {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, _fake, _) = start(&[no_jitter("late", 5071)]);
    let count = seen.clone();
    h.set_probe_lateness(std::sync::Arc::new(move |_| {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    sleep(Duration::from_millis(2500)).await;
    assert!(
        seen.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "each probe's lateness recorded"
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_take_it_down_after_the_threshold_and_replies_bring_it_back() {
    let t = sip_target("a", 5071);
    let (h, fake, _) = start(std::slice::from_ref(&t));
    sleep(Duration::from_millis(500)).await; // first probe timed out (400 ms)
    let s = h.status("a").unwrap();
    assert_eq!((s.state, s.counters.probes_failed), (State::Up, 1));
    sleep(Duration::from_millis(1200)).await; // second probe timed out
    assert_eq!(h.readiness("a"), Readiness::NotReady);
    assert!(h.status("a").unwrap().last_reason.contains("timeout"));

    fake.replies(t.next_hop, Some(200));
    sleep(Duration::from_millis(2500)).await; // two good probes
    assert_eq!(h.status("a").unwrap().state, State::Recovering);
    // Recovering without test calls is half-open: one call at a time may try it.
    assert_eq!(h.readiness("a"), Readiness::NotReady);
    let mut trials = Vec::new();
    assert_eq!(h.readiness_for_call("a", &mut trials), Readiness::Ready);
    assert_eq!(
        h.readiness_for_call("a", &mut trials),
        Readiness::NotReady,
        "one trial at a time"
    );
    h.observe("a", crate::health::Observation::TrialOver);
    assert_eq!(h.readiness_for_call("a", &mut trials), Readiness::Ready);
    h.observe("a", crate::health::Observation::TrialOver);
    sleep(Duration::from_millis(2500)).await; // two more, no call: graduates
    assert_eq!(h.status("a").unwrap().state, State::Up);
}

#[tokio::test(start_paused = true)]
async fn failure_code_is_a_probe_failure_and_late_replies_are_ignored() {
    let t = sip_target("a", 5071);
    let (h, fake, _) = start(std::slice::from_ref(&t));
    fake.replies(t.next_hop, Some(503));
    sleep(Duration::from_millis(2500)).await;
    assert_eq!(h.readiness("a"), Readiness::NotReady);
    assert!(h.status("a").unwrap().last_reason.contains("reply 503"));
    let before = h.status("a").unwrap().counters;
    let first = branch_of(&fake.sent.lock().unwrap()[0].2);
    h.on_probe_response(first.as_bytes(), 200); // already resolved
    h.on_probe_response(b"z9hG4bK-sosprobe-unknown", 200);
    h.on_probe_response(first.as_bytes(), 100); // provisional: never an answer
    assert_eq!(h.status("a").unwrap().counters, before);
}

#[tokio::test(start_paused = true)]
async fn transport_error_fails_the_pending_probe_at_once() {
    let t = sip_target("a", 5071);
    let (h, _fake, _) = start(std::slice::from_ref(&t));
    sleep(Duration::from_millis(51)).await;
    h.on_transport_error(t.next_hop);
    let s = h.status("a").unwrap();
    assert_eq!((s.counters.probes_sent, s.counters.probes_failed), (1, 1));
    sleep(Duration::from_millis(500)).await; // its timeout does not count it twice
    assert_eq!(h.status("a").unwrap().counters.probes_failed, 1);
}

#[tokio::test(start_paused = true)]
async fn tel_targets_share_their_gateways_probe() {
    let gw = sip_target("gw", 5080);
    let tel1 = tel_target("tel1", &gw);
    let tel2 = tel_target("tel2", &gw);
    let (h, fake, _) = start(&[gw.clone(), tel1, tel2]);
    sleep(Duration::from_millis(2500)).await;
    let n = fake.sent.lock().unwrap().len();
    assert_eq!(
        n,
        fake.times_to(gw.next_hop).len(),
        "only the gateway is probed"
    );
    assert!(
        (2..=3).contains(&n),
        "once per interval, not once per tel target: {n}"
    );
    for id in ["gw", "tel1", "tel2"] {
        assert_eq!(h.readiness(id), Readiness::NotReady, "{id}");
        assert_eq!(h.status(id).unwrap().counters.probes_sent, n as u64);
    }
    fake.replies(gw.next_hop, Some(200));
    sleep(Duration::from_millis(2500)).await;
    for id in ["gw", "tel1", "tel2"] {
        assert_eq!(h.status(id).unwrap().state, State::Recovering, "{id}");
    }
    // Calls are per target: a failed call to one number does not touch the gateway or the other.
    h.report("tel1", crate::health::Outcome::FailureResponse(480));
    assert_eq!(h.readiness("tel1"), Readiness::NotReady);
    assert_eq!(h.status("tel2").unwrap().state, State::Recovering);
    assert_eq!(h.status("gw").unwrap().state, State::Recovering);
}

#[tokio::test(start_paused = true)]
async fn reload_probes_new_targets_promptly_and_stops_removed_ones() {
    let a = sip_target("a", 5071);
    let b = sip_target("b", 5072);
    let (h, fake, _) = start(std::slice::from_ref(&a));
    sleep(Duration::from_millis(300)).await;
    h.rekey_targets(std::slice::from_ref(&b));
    let t1 = Instant::now();
    sleep(Duration::from_millis(3000)).await;
    let to_b = fake.times_to(b.next_hop);
    assert!(to_b[0] - t1 <= Duration::from_millis(50));
    assert_eq!(fake.times_to(a.next_hop).len(), 1, "a no longer probed");
}

#[tokio::test(start_paused = true)]
async fn unprobed_targets_get_no_probes() {
    let mut t = (*sip_target("quiet", 5090)).clone();
    t.health.probe = false;
    let (h, fake, _) = start(&[Arc::new(t)]);
    sleep(Duration::from_secs(5)).await;
    assert!(fake.sent.lock().unwrap().is_empty());
    assert_eq!(h.readiness("quiet"), Readiness::Ready);
}

#[test]
fn options_request_parses_back_with_rsip() {
    use rsip::prelude::*;
    let t = sip_target("a", 5071);
    let ids = ProbeIds::random();
    let text = build_options(&t, "10.0.0.1:5060".parse().unwrap(), &ids);
    assert!(
        text.starts_with("OPTIONS sip:127.0.0.1:5071 SIP/2.0\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"), "{text:?}");
    let req = rsip::Request::try_from(text.as_str()).unwrap();
    assert_eq!(req.method, rsip::Method::Options);
    let via = req.via_header().unwrap().typed().unwrap();
    let branch = via.branch().unwrap().to_string();
    assert!(is_probe_branch(branch.as_bytes()) && branch == ids.branch);
    assert!(text.contains("SIP/2.0/UDP 10.0.0.1:5060"), "{text}");
    assert_eq!(req.max_forwards_header().unwrap().num().unwrap(), 70);
    assert_eq!(req.call_id_header().unwrap().value(), ids.call_id);
    let from = req.from_header().unwrap().typed().unwrap();
    assert_eq!(from.tag().unwrap().to_string(), ids.from_tag);
    assert_eq!(req.cseq_header().unwrap().typed().unwrap().seq, 1);
    assert!(text.contains("\r\nContent-Length: 0\r\n"), "{text}");
    assert!(!is_probe_branch(b"z9hG4bK-abc"));
}

#[tokio::test(start_paused = true)]
async fn a_reload_carries_health_over_by_id_and_probes_added_and_removed_targets_right() {
    let kept_up = no_jitter("kept-up", 5071);
    let kept_down = no_jitter("kept-down", 5072);
    let removed = no_jitter("removed", 5073);
    let (h, fake, _) = start(&[kept_up.clone(), kept_down.clone(), removed.clone()]);
    fake.replies(kept_up.next_hop, Some(200));
    fake.replies(removed.next_hop, Some(200));
    sleep(Duration::from_millis(3500)).await;
    assert_eq!(h.status("kept-up").unwrap().state, State::Up);
    assert_eq!(h.status("kept-down").unwrap().state, State::Down);
    let before = |id: &str| h.status(id).unwrap().counters;
    let (up_before, down_before) = (before("kept-up"), before("kept-down"));

    // The new file: the same two ids (one at a new address, with a slower interval), one id gone,
    // one new target.
    let mut moved = (*kept_down).clone();
    moved.next_hop = "127.0.0.1:5082".parse().unwrap();
    moved.uri = "sip:127.0.0.1:5082".into();
    moved.health.probe_interval = Duration::from_millis(2000);
    let moved = Arc::new(moved);
    let added = no_jitter("added", 5074);
    fake.replies(added.next_hop, Some(200));
    h.rekey_targets(&[kept_up.clone(), moved.clone(), added.clone()]);
    let t1 = Instant::now();

    // Health carried over by id, at once: state and counters.
    assert_eq!(h.status("kept-up").unwrap().state, State::Up);
    assert_eq!(h.status("kept-down").unwrap().state, State::Down);
    assert_eq!(h.status("kept-up").unwrap().counters, up_before);
    assert_eq!(h.status("kept-down").unwrap().counters, down_before);
    assert!(h.status("removed").is_none());
    assert_eq!(h.readiness("kept-down"), Readiness::NotReady);

    sleep(Duration::from_millis(4100)).await;
    // The removed target is no longer probed; the added one is, from the reload on.
    assert!(fake.times_to(removed.next_hop).iter().all(|&t| t < t1));
    let to_added = fake.times_to(added.next_hop);
    assert!(
        to_added[0] - t1 <= Duration::from_millis(1000),
        "{:?}",
        to_added[0] - t1
    );
    assert!(to_added.len() >= 4, "{}", to_added.len());
    assert_eq!(h.status("added").unwrap().state, State::Up);
    // The kept targets keep being probed, the moved one at its new address and interval.
    let to_moved = fake.times_to(moved.next_hop);
    assert!(
        (2..=3).contains(&to_moved.len()),
        "every 2 s: {}",
        to_moved.len()
    );
    for w in to_moved.windows(2) {
        assert_eq!(w[1] - w[0], Duration::from_millis(2000));
    }
    assert!(fake.times_to(kept_down.next_hop).iter().all(|&t| t < t1));
    assert!(h.status("kept-up").unwrap().counters.probes_ok >= up_before.probes_ok + 4);
    // Its probes still count: the moved target answers, and two good probes (2 s apart) make it
    // recovering.
    fake.replies(moved.next_hop, Some(200));
    sleep(Duration::from_millis(4100)).await;
    assert_eq!(h.status("kept-down").unwrap().state, State::Recovering);
}

#[tokio::test(start_paused = true)]
async fn a_large_target_set_still_raises_the_systemic_alarm() {
    // Above SYSTEMIC_EVERY_TRANSITION_UP_TO targets the systemic check is coalesced (at most one per
    // SYSTEMIC_GAP, flushed by the prober): the alarm must still come, and only once.
    let n = crate::health::handle::SYSTEMIC_EVERY_TRANSITION_UP_TO as u16 + 200;
    let targets: Vec<_> = (0..n)
        .map(|i| no_jitter(&format!("t{i}"), 20000 + i))
        .collect();
    let h = Health::from_targets(&targets);
    let raised = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = raised.clone();
    h.set_change_sink(Arc::new(move |c| {
        if let crate::health::Change::Systemic(rep) = c
            && rep.active
            && rep.domain.is_none()
        {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }));
    let fake = Arc::new(Fake::default());
    fake.health.set(h.clone()).unwrap();
    h.spawn_prober(fake.clone(), &crate::tasks::Tasks::new());
    // Nobody answers: every target is down after two probe intervals and a timeout.
    sleep(Duration::from_millis(2500)).await;
    assert!(
        targets
            .iter()
            .all(|t| h.status(&t.id).unwrap().state == State::Down)
    );
    sleep(crate::health::handle::SYSTEMIC_GAP + Duration::from_millis(10)).await;
    assert_eq!(raised.load(std::sync::atomic::Ordering::SeqCst), 1);
}
