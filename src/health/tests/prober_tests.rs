//! The prober against a fake transport, under paused tokio time.

use super::{sip_target, tel_target};
use crate::config::Proto;
use crate::health::prober::PROBE_BATCH;
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
    // The last first probe is due at 800 ms; the next round's first at 1 000 ms or later, and may
    // go out one batch early: at 900 ms exactly the five first probes are out.
    sleep(Duration::from_millis(900)).await;
    assert_eq!(
        fake.sent.lock().unwrap().len(),
        5,
        "every target in the first interval"
    );
    sleep(Duration::from_secs(30)).await;
    for (i, t) in targets.iter().enumerate() {
        let times = fake.times_to(t.next_hop);
        let due = Duration::from_millis(200) * i as u32;
        assert!(
            times[0] - t0 <= due && times[0] - t0 + PROBE_BATCH >= due,
            "staggered by index (at most one batch early): {:?}",
            times[0] - t0
        );
        assert!(times.len() >= 25 && times.len() <= 31, "{}", times.len());
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap + PROBE_BATCH >= Duration::from_millis(1000), "{gap:?}");
            assert!(gap <= Duration::from_millis(1200) + PROBE_BATCH, "{gap:?}");
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
        // Three probes due in three intervals; the first batch of the fourth round (due from 3 s
        // on) may have gone out already, one batch early.
        let n = fake.times_to(t.next_hop).len();
        assert!((3..=4).contains(&n), "{}: once per interval: {n}", t.id);
    }
    // Evenly spread: host i is due at i/n of the interval, then once per interval, and each probe
    // goes out in the batch that holds its due time: never late, at most one batch early.
    let slot = Duration::from_secs(1) / u32::from(n);
    for (i, t) in targets.iter().enumerate() {
        for (k, at) in fake.times_to(t.next_hop).iter().enumerate() {
            let due = slot * i as u32 + Duration::from_secs(k as u64);
            let sent = *at - t0;
            assert!(
                sent <= due && sent + PROBE_BATCH >= due,
                "{}: probe {k} due at {due:?} sent at {sent:?}",
                t.id
            );
        }
    }
    // Batched (rule 5): 1 200 probes in 3 s left in about one wake-up per batch, not one each.
    let instants: std::collections::HashSet<Instant> =
        fake.sent.lock().unwrap().iter().map(|s| s.0).collect();
    let most = (Duration::from_secs(3).as_millis() / PROBE_BATCH.as_millis()) as usize + 2;
    assert!(
        instants.len() <= most,
        "{} wake-ups sent probes (at most {most})",
        instants.len()
    );
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
        let due = Duration::from_millis(500) + Duration::from_secs(k as u64);
        assert!(
            *at - t0 <= due && *at - t0 + PROBE_BATCH >= due,
            "b keeps its phase: probe {k} at {:?}",
            *at - t0
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

/// The OPTIONS a probe sends, read back by our own parser and by `rsip` (the oracle): both find
/// every header RFC 3261 §8.1.1 makes mandatory, with the values the probe put there.
#[test]
fn options_request_parses_with_our_parser_and_with_rsip() {
    use crate::sip::{HeaderName, Limits, Message, Method};
    use rsip::prelude::*;
    let mut tcp = (*sip_target("a", 5071)).clone();
    tcp.transport = Proto::Tcp;
    tcp.uri = "sip:psap@127.0.0.1:5071".into();
    for (t, local) in [
        (sip_target("a", 5071), "10.0.0.1:5060"),
        // rsip reads no IPv6 host; our parser's IPv6 case is in `sip::build`'s tests.
        (Arc::new(tcp), "10.0.0.2:5062"),
    ] {
        let local: SocketAddr = local.parse().unwrap();
        let ids = ProbeIds::random();
        let text = build_options(&t, local, &ids);
        let proto = t.transport.to_string().to_uppercase();
        assert!(
            text.starts_with(&format!("OPTIONS {} SIP/2.0\r\n", t.uri)),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");

        // Our parser.
        let m = Message::parse(Bytes::from(text.clone()), &Limits::default()).unwrap();
        assert_eq!(m.method(), Some(Method::Options));
        assert_eq!(m.request_uri(), Some(t.uri.as_bytes()));
        let via = m.top_via().unwrap();
        assert_eq!(via.branch, Some(ids.branch.as_bytes()));
        assert!(is_probe_branch(via.branch.unwrap()));
        assert_eq!(m.vias().unwrap().len(), 1);
        assert_eq!(m.max_forwards().unwrap(), Some(70));
        assert_eq!(m.from_tag(), Some(ids.from_tag.as_bytes()));
        assert_eq!(m.to_tag(), None);
        let to = m.header(HeaderName::To).unwrap();
        assert_eq!(&to[..], format!("<{}>", t.uri).as_bytes());
        assert_eq!(m.call_id(), ids.call_id.as_bytes());
        assert_eq!((m.cseq().seq, m.cseq().method), (1, Method::Options));
        assert_eq!(m.content_length(), Some(0));
        assert!(m.body().is_empty());
        let sent_by = format!("SIP/2.0/{proto} {local};branch=");
        assert!(text.contains(&sent_by), "{text}");

        // The oracle.
        let req = rsip::Request::try_from(text.as_str()).unwrap();
        assert_eq!(req.method, rsip::Method::Options);
        assert_eq!(req.uri.to_string(), t.uri);
        let via = req.via_header().unwrap().typed().unwrap();
        assert_eq!(via.branch().unwrap().to_string(), ids.branch);
        assert_eq!(via.transport.to_string(), proto);
        assert_eq!(req.max_forwards_header().unwrap().num().unwrap(), 70);
        let from = req.from_header().unwrap().typed().unwrap();
        assert_eq!(from.tag().unwrap().to_string(), ids.from_tag);
        let to = req.to_header().unwrap().typed().unwrap();
        assert_eq!(to.uri.to_string(), t.uri);
        assert!(to.tag().is_none());
        assert_eq!(req.call_id_header().unwrap().value(), ids.call_id);
        let cseq = req.cseq_header().unwrap().typed().unwrap();
        assert_eq!((cseq.seq, cseq.method), (1, rsip::Method::Options));
        let length = req.headers.iter().find_map(|h| match h {
            rsip::Header::ContentLength(l) => Some(l.value().to_string()),
            _ => None,
        });
        assert_eq!(length.as_deref(), Some("0"));
        assert!(req.body.is_empty());
    }
    assert!(!is_probe_branch(b"z9hG4bK-abc"));
}

/// A target URI that cannot stand as a Request-URI falls back to `sip:<next_hop>`.
#[test]
fn an_unwritable_target_uri_falls_back_to_the_next_hop() {
    let mut t = (*sip_target("a", 5071)).clone();
    for bad in [
        "tel:+15551234",
        "sip:a b@x",
        "sip:x>\r\nVia: evil",
        "nonsense",
    ] {
        t.uri = bad.into();
        let text = build_options(&t, "10.0.0.1:5060".parse().unwrap(), &ProbeIds::random());
        assert!(
            text.starts_with("OPTIONS sip:127.0.0.1:5071 SIP/2.0\r\n"),
            "{bad}: {text}"
        );
    }
}

/// What the transport's backlog says in these tests: the last instant sosrouter was behind reading
/// its own socket, set by the test.
fn own_backlog(h: &Health) -> Arc<Mutex<Option<std::time::Instant>>> {
    let last = Arc::new(Mutex::new(None));
    let l = last.clone();
    assert!(h.set_own_backlog(Arc::new(move || *l.lock().unwrap())));
    last
}

#[tokio::test(start_paused = true)]
async fn probe_timeouts_while_sosrouter_is_behind_on_its_own_socket_are_held_then_count_again() {
    let t = sip_target("a", 5071);
    let (h, _fake, _) = start(std::slice::from_ref(&t));
    let last = own_backlog(&h);
    // Behind (replies would sit in our own receive buffer) for the first 1.7 s: every probe sent
    // then times out, as in the test above, where two timeouts took the target down.
    let l = last.clone();
    let behind = tokio::spawn(async move {
        let end = Instant::now() + Duration::from_millis(1700);
        while Instant::now() < end {
            *l.lock().unwrap() = Some(Instant::now().into_std());
            sleep(Duration::from_millis(50)).await;
        }
    });
    sleep(Duration::from_millis(1700)).await;
    behind.await.unwrap();
    let s = h.status("a").unwrap();
    assert_eq!((s.state, s.counters.probes_failed), (State::Up, 0));
    assert!(h.verdicts_held() >= 2, "held: {}", h.verdicts_held());
    assert_eq!(h.readiness("a"), Readiness::Ready);
    // Caught up: probes sent after the last instant behind count, and the silent target goes down.
    sleep(Duration::from_millis(2500)).await;
    assert_eq!(h.readiness("a"), Readiness::NotReady);
    assert!(h.status("a").unwrap().last_reason.contains("timeout"));
}

#[tokio::test(start_paused = true)]
async fn a_call_attempt_timeout_while_sosrouter_was_behind_is_not_counted_against_the_target() {
    use crate::health::Outcome;
    let h = Health::from_targets(&[sip_target("a", 5071)]);
    let last = own_backlog(&h);
    h.report("a", Outcome::AttemptTimeout);
    assert_eq!(
        h.status("a").unwrap().counters.calls_failed,
        1,
        "never behind: counted"
    );
    *last.lock().unwrap() = Some(Instant::now().into_std());
    sleep(Duration::from_secs(4)).await; // the attempt ran while we were behind
    h.report("a", Outcome::AttemptTimeout);
    h.report("a", Outcome::Overdue);
    assert_eq!(h.status("a").unwrap().counters.calls_failed, 1, "held");
    assert_eq!(h.verdicts_held(), 2);
    h.report("a", Outcome::FailureResponse(503));
    assert_eq!(
        h.status("a").unwrap().counters.calls_failed,
        2,
        "a response is the target's own answer, behind or not"
    );
    sleep(Duration::from_secs(2)).await; // behind was over 5 s ago: a timeout counts again
    h.report("a", Outcome::AttemptTimeout);
    assert_eq!(h.status("a").unwrap().counters.calls_failed, 3);
}
