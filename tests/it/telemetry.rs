//! Metrics and alert events over real loopback sockets: `/metrics` parses (with the
//! `prometheus-parse` crate) and counts known calls; the `/events` stream carries a health event when a target goes down (within seconds of
//! proxy time: that test runs under paused tokio time, so the bound is exact, not a wall-clock
//! guess); the webhook gets POSTs and retries.
//!
//! Every other bound on waiting is a liveness bound, never a timing assertion: tests wait for the
//! condition itself (a counter, a record, an event).

use crate::common::*;
use prometheus_parse::{Scrape, Value};
use sosrouter::config::Proto;
use sosrouter::events::Kind;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

async fn start(rules: &str, webhook: Option<String>) -> sosrouter::app::Running {
    init_logs();
    let (rules, _) = sosrouter::routing::Rules::parse(rules, "test.toml").expect("test rules");
    let opts = sosrouter::app::RunOptions {
        admin: Some("127.0.0.1:0".parse().unwrap()),
        webhook,
        ..Default::default()
    };
    sosrouter::app::start(rules, &opts).await.unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let r = http::get(addr, path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    (r.head, r.body)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A `/metrics` page read by `prometheus-parse`: one value per series (labels sorted by name),
/// histograms as their buckets.
#[derive(Debug, Default)]
struct Page {
    values: BTreeMap<String, f64>,
    histograms: BTreeMap<String, Vec<(f64, f64)>>,
    gauges: Vec<String>,
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

impl Page {
    /// The value of one series; panics with the page's series when it is missing.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = series(name, labels);
        match self.values.get(&key) {
            Some(v) => *v,
            None => panic!("no series {key}; have:\n{:#?}", self.values.keys()),
        }
    }

    /// The cumulative count of the bucket of an unlabelled histogram whose bound is `le`.
    fn bucket(&self, name: &str, le: f64) -> f64 {
        let b = &self.histograms[&series(name, &[])];
        b.iter().find(|(bound, _)| *bound == le).expect("bucket").1
    }
}

/// Parses the page with `prometheus-parse` and checks what that lenient parser lets pass: every
/// line is a `# HELP`, a `# TYPE` or a sample it read; every family has its HELP; counters end in
/// `_total`; no series twice; histogram buckets rise, are cumulative and end at `+Inf` = `_count`.
fn parse(body: &str) -> Page {
    assert!(body.ends_with('\n'), "no final newline");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut page = Page::default();
    let mut read = 0;
    for s in &scrape.samples {
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (&**k, &**v)).collect();
        let key = series(&s.metric, &labels);
        assert!(s.metric.starts_with("sosrouter_"), "{key}");
        let family = match &s.value {
            Value::Counter(_) => {
                assert!(s.metric.ends_with("_total"), "counter {key}");
                &*s.metric
            }
            Value::Untyped(_) => {
                // A histogram's _sum and _count.
                let base = s
                    .metric
                    .strip_suffix("_sum")
                    .or(s.metric.strip_suffix("_count"));
                base.unwrap_or_else(|| panic!("untyped sample {key}"))
            }
            _ => &*s.metric,
        };
        assert!(scrape.docs.contains_key(family), "no HELP for {key}");
        let value = match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => {
                let b: Vec<(f64, f64)> = b.iter().map(|h| (h.less_than, h.count)).collect();
                read += b.len();
                page.histograms.insert(key, b);
                continue;
            }
            Value::Summary(_) => panic!("no summaries expected: {key}"),
        };
        if matches!(s.value, Value::Gauge(_)) {
            page.gauges.push(s.metric.clone());
        }
        read += 1;
        assert!(
            page.values.insert(key.clone(), value).is_none(),
            "{key} twice"
        );
    }
    let lines = body.lines().filter(|l| !l.starts_with("# ")).count();
    assert_eq!(read, lines, "lines the parser skipped:\n{body}");
    for (key, b) in &page.histograms {
        for w in b.windows(2) {
            assert!(w[1].0 > w[0].0 && w[1].1 >= w[0].1, "{key}: {b:?}");
        }
        let last = b.last().expect("a bucket");
        assert_eq!(last.0, f64::INFINITY, "{key}");
        let count = key.replacen('{', "_count{", 1);
        assert_eq!(
            page.values.get(&count),
            Some(&last.1),
            "{key}: +Inf != _count"
        );
    }
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_strictly_and_count_known_calls() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let p = start(&lab_rules(a.addr, b.addr, g.addr, NO_TIMERS), None).await;
    let admin = p.admin.unwrap();
    let sip = p.local_addr(Proto::Udp).unwrap();
    let mut events = p.events.subscribe();

    // Before any call: every family is there, at zero.
    let (head, body) = get(admin, "/metrics").await;
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let m = parse(&body);
    let call = [("route", "default"), ("outcome", "answered")];
    assert_eq!(m.get("sosrouter_calls_total", &call), 0.0);

    for i in 0..3 {
        let mut uac = Uac::new(Proto::Udp, sip).await;
        let out = uac.call("urn:service:sos", &format!("ok-{i}"), WAIT).await;
        assert_eq!(out.final_code, 200);
    }
    a.set_behaviour(Behaviour::Reply(404)); // not in the failover set: relayed, the call is rejected
    let mut uac = Uac::new(Proto::Udp, sip).await;
    assert_eq!(
        uac.call("urn:service:sos", "rej", WAIT).await.final_code,
        404
    );
    a.set_behaviour(Behaviour::RingForever); // the caller gives up while it rings
    let mut uac = Uac::new(Proto::Udp, sip).await;
    uac.send(&uac.invite("urn:service:sos", "cxl", "z9hG4bK-uac-cxl"))
        .await;
    while uac.recv(WAIT).await.expect("180").status() != Some(180) {}
    uac.cancel("urn:service:sos", "cxl").await;
    assert_eq!(uac.await_final(WAIT).await.final_code, 487);
    for u in [&a, &b, &g] {
        u.set_behaviour(Behaviour::Reply(503)); // everything fails: undelivered
    }
    let mut uac = Uac::new(Proto::Udp, sip).await;
    assert_eq!(
        uac.call("urn:service:sos", "und", WAIT).await.final_code,
        500
    );

    // A call counts its outcome just after it relays its final response (and a call whose final
    // was not 2xx stays in flight until the caller's ACK, which these callers never send): scrape
    // until all six outcomes are counted, then check every figure.
    let outcomes = ["answered", "rejected", "cancelled", "failed"];
    let deadline = tokio::time::Instant::now() + WAIT;
    let (body, m) = loop {
        let (_, body) = get(admin, "/metrics").await;
        let m = parse(&body);
        let counted: f64 = outcomes
            .iter()
            .map(|o| {
                m.get(
                    "sosrouter_calls_total",
                    &[("route", "default"), ("outcome", o)],
                )
            })
            .sum();
        if counted >= 6.0 {
            break (body, m);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {counted} of 6 calls counted:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let calls = |o: &str| {
        m.get(
            "sosrouter_calls_total",
            &[("route", "default"), ("outcome", o)],
        )
    };
    assert_eq!(calls("answered"), 3.0, "{body}");
    assert_eq!(calls("rejected"), 1.0);
    assert_eq!(calls("cancelled"), 1.0);
    assert_eq!(calls("failed"), 1.0);
    let att =
        |t: &str, o: &str| m.get("sosrouter_attempts_total", &[("target", t), ("outcome", o)]);
    // 3 answered (180 and 200 count once each), the 404, the ringing one.
    assert_eq!(att("psap-primary", "progress"), 5.0, "{body}");
    assert_eq!(att("psap-primary", "failure_response"), 1.0);
    assert_eq!(att("psap-backup", "failure_response"), 1.0);
    assert_eq!(att("business-line", "failure_response"), 1.0);
    assert_eq!(
        att("pstn-gateway", "progress"),
        0.0,
        "pre-created from the rules"
    );
    let failovers = |r: &str| m.get("sosrouter_failovers_total", &[("reason", r)]);
    assert_eq!(failovers("failure_response"), 2.0);
    assert_eq!(failovers("deadline"), 0.0);
    assert_eq!(m.get("sosrouter_call_setup_seconds_count", &[]), 3.0);
    assert_eq!(m.bucket("sosrouter_call_setup_seconds", 30.0), 3.0);
    assert!(m.get("sosrouter_call_setup_seconds_sum", &[]) > 0.0);
    assert_eq!(m.get("sosrouter_undelivered_calls_total", &[]), 1.0);
    assert_eq!(m.get("sosrouter_calls_received_total", &[]), 6.0);
    let target = |name: &str, t: &str| m.get(name, &[("target", t)]);
    assert_eq!(target("sosrouter_target_up", "psap-primary"), 1.0);
    assert_eq!(target("sosrouter_target_enabled", "psap-backup"), 1.0);
    assert_eq!(m.get("sosrouter_reloads_total", &[("result", "ok")]), 0.0);
    assert!(m.gauges.iter().any(|g| g == "sosrouter_calls_in_flight"));
    // Every family the README names is on the page (histograms as their buckets).
    for name in [
        "sosrouter_calls_in_flight",
        "sosrouter_target_state",
        "sosrouter_probes_total",
        "sosrouter_parse_errors_total",
        "sosrouter_stray_responses_total",
        "sosrouter_events_published_total",
        "sosrouter_webhook_events_total",
        "sosrouter_webhook_failed_tries_total",
        "sosrouter_target_transitions_total",
    ] {
        let prefix = format!("{name}{{");
        assert!(m.values.keys().any(|k| k.starts_with(&prefix)), "no {name}");
    }
    assert!(
        m.histograms
            .contains_key("sosrouter_probe_lateness_seconds{}")
    );

    p.metrics.reload(false);
    let (_, body) = get(admin, "/metrics").await;
    let m = parse(&body);
    assert_eq!(
        m.get("sosrouter_reloads_total", &[("result", "error")]),
        1.0
    );

    // Health events (a target suspect after its failed call) may come first: the undelivered
    // call's event is the first of its kind.
    let ev = tokio::time::timeout(WAIT, async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.kind == Kind::Undelivered {
                return ev;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev.call_id.as_deref(), Some("und"));
    assert_eq!(ev.route.as_deref(), Some("default"));
    assert!(
        ev.reason.contains("psap-backup: failure response 503"),
        "{}",
        ev.reason
    );
}

/// Reads SSE `data:` lines (skipping comments) until one satisfies `f`.
async fn next_event(
    r: &mut BufReader<TcpStream>,
    mut f: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "event stream closed");
        if let Some(json) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
            if f(&v) {
                return v;
            }
        }
    }
}

/// Under paused tokio time: the probes, their timeouts and the health machine run on the test's
/// clock, so "within seconds" is measured on the proxy's own clock, the same on every run.
#[tokio::test(start_paused = true)]
async fn the_event_stream_tells_of_a_target_going_down_within_seconds() {
    let a = Uas::start(Behaviour::Answer).await;
    let b = Uas::start(Behaviour::Answer).await;
    let g = Uas::start(Behaviour::Answer).await;
    let rules = lab_rules_with_health(a.addr, b.addr, g.addr, FAST_TIMERS, FAST_PROBES);
    let p = start(&rules, None).await;
    let admin = p.admin.unwrap();
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let n = r.read_line(&mut head).await.unwrap();
        assert!(n > 0, "no response head");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    eventually(WAIT, "primary probed", || a.count("OPTIONS") >= 2).await;

    let muted_at = tokio::time::Instant::now();
    a.set_muted(true);
    let ev = next_event(&mut r, |v| {
        v["kind"] == "health" && v["target"] == "psap-primary" && v["new"] == "down"
    })
    .await;
    let delay = muted_at.elapsed();
    println!(
        "health event: mute -> SSE client {delay:?} of proxy time; change -> SSE client {} ms of wall time",
        unix_ms().saturating_sub(ev["unix_ms"].as_u64().unwrap())
    );
    assert_eq!(ev["old"], "up", "{ev}");
    assert!(ev["reason"].as_str().unwrap().contains("probe"), "{ev}");
    assert!(ev["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        delay < Duration::from_secs(5),
        "mute -> event took {delay:?}"
    );

    assert!(p.health.set_enabled("psap-backup", false));
    let ev = next_event(&mut r, |v| v["kind"] == "operator").await;
    assert_eq!(ev["target"], "psap-backup");
    assert_eq!(
        (&ev["old"], &ev["new"]),
        (&"enabled".into(), &"disabled".into())
    );
}

/// A webhook receiver: answers the first `fail_first` requests 500, the rest 200; keeps bodies.
async fn receiver(fail_first: usize) -> (SocketAddr, Arc<Mutex<Vec<(u16, String)>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    // Any case: the webhook's client (hyper) sends lower-case names.
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length").then_some(v)
                        })
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
                        break Some(body.to_string());
                    }
                }
            };
            let Some(body) = body else { continue };
            let code = if log.lock().unwrap().len() < fail_first {
                500
            } else {
                200
            };
            log.lock().unwrap().push((code, body));
            let resp =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_each_event_and_retries_a_failed_post() {
    let (hook, got) = receiver(1).await;
    let a = Uas::start(Behaviour::Answer).await;
    let rules = lab_rules(a.addr, a.addr, a.addr, FAST_TIMERS);
    let p = start(&rules, Some(format!("http://{hook}/hook"))).await;
    let t0 = unix_ms();
    assert!(p.health.set_enabled("psap-primary", false));
    eventually(WAIT, "the event delivered after a retry", || {
        got.lock().unwrap().len() >= 2
    })
    .await;
    println!("webhook delivery incl. one retry: {} ms", unix_ms() - t0);
    assert!(p.health.set_enabled("psap-primary", true));
    eventually(WAIT, "the second event", || got.lock().unwrap().len() >= 3).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got[0].0, 500);
    assert_eq!(got[0].1, got[1].1, "the retry carries the same event");
    let first: serde_json::Value = serde_json::from_str(&got[1].1).unwrap();
    assert_eq!(first["kind"], "operator");
    assert_eq!(first["new"], "disabled");
    let second: serde_json::Value = serde_json::from_str(&got[2].1).unwrap();
    assert_eq!(second["new"], "enabled");
    let stats = p.events.webhook_stats().unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    // The receiver logs a POST before it answers, and the webhook task counts a delivery after it
    // read the answer: wait for the counter itself.
    eventually(WAIT, "the webhook counted both deliveries", || {
        stats.delivered.load(Relaxed) >= 2
    })
    .await;
    assert_eq!(stats.delivered.load(Relaxed), 2);
    assert_eq!(stats.failed_tries.load(Relaxed), 1);
    assert_eq!(stats.dropped.load(Relaxed), 0);
}
