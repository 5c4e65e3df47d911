use super::*;
use std::sync::Mutex;
use std::time::Duration;

#[test]
fn rfc3339_known_instants() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339_utc(1_718_733_600_000), "2024-06-18T18:00:00.000Z");
    assert_eq!(rfc3339_utc(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
}

#[test]
fn event_json_has_every_key() {
    let ev = Event::health("psap-a", "up", "down", "2 consecutive probe failures");
    let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
    for key in [
        "unix_ms", "time", "kind", "target", "route", "call_id", "old", "new", "reason",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["kind"], "health");
    assert_eq!(v["old"], "up");
    assert_eq!(v["new"], "down");
    assert_eq!(v["route"], serde_json::Value::Null);
    let op = Event::operator("psap-a", false);
    assert_eq!(
        (op.old.as_deref(), op.new.as_deref()),
        (Some("enabled"), Some("disabled"))
    );
    assert_eq!(
        Event::reload(false, "bad file").new.as_deref(),
        Some("error")
    );
}

#[test]
fn a_full_queue_drops_the_oldest_without_blocking() {
    let q = Queue::new(3);
    for i in 0..3 {
        assert!(!q.push(i));
    }
    assert!(q.push(3), "the fourth push drops one");
    assert!(q.push(4));
    assert_eq!(q.dropped(), 2);
    assert_eq!(q.len(), 3);
    let got: Vec<i32> = std::iter::from_fn(|| q.try_pop()).collect();
    assert_eq!(got, vec![2, 3, 4], "the newest survive, in order");
}

#[test]
fn publishing_never_waits_for_a_stalled_webhook_queue() {
    let bus = Bus::default();
    let q = Arc::new(Queue::new(WEBHOOK_QUEUE));
    let stats = Arc::new(WebhookStats::default());
    assert!(bus.inner.webhook.set((q.clone(), stats.clone())).is_ok());
    let _sub = bus.subscribe(); // a subscriber that never reads
    // Nobody drains the queue: a publish that waited for room would never return. Publish on
    // another thread and wait for it to finish (a liveness bound that fails loudly, not a speed
    // measurement).
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let publisher = bus.clone();
    std::thread::spawn(move || {
        for i in 0..(WEBHOOK_QUEUE + 500) {
            publisher.publish(Event::reload(true, &format!("r{i}")));
        }
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "publish blocked on a full webhook queue"
    );
    assert_eq!(q.len(), WEBHOOK_QUEUE);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 500);
    assert_eq!(q.try_pop().unwrap().reason, "r500");
}

#[tokio::test]
async fn pop_waits_for_a_push() {
    let q = Arc::new(Queue::new(4));
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.pop().await });
    tokio::task::yield_now().await;
    q.push(7u32);
    let v = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, 7);
}

#[test]
fn webhook_urls_and_retry_verdicts() {
    let hook = |url: &str| {
        webhook::Webhook::new(&WebhookOptions {
            url: url.to_string(),
            ca_file: None,
        })
    };
    assert!(hook("http://127.0.0.1:9000/alerts/sos").is_ok());
    assert!(hook("https://alerts.example/x").is_ok());
    assert!(hook("http://[::1]:81/x").is_ok());
    for bad in ["ftp://a/b", "http://:80/", "http://a:x/", "not a url"] {
        assert!(hook(bad).is_err(), "{bad}");
    }
    let missing = WebhookOptions {
        url: "https://a/".into(),
        ca_file: Some("/nonexistent/ca.pem".into()),
    };
    assert!(
        webhook::Webhook::new(&missing)
            .unwrap_err()
            .contains("CA file")
    );
    use webhook::{Try, classify};
    for (code, want) in [
        (200, Try::Delivered),
        (204, Try::Delivered),
        (408, Try::Transient),
        (429, Try::Transient),
        (500, Try::Transient),
        (503, Try::Transient),
        (301, Try::Refused),
        (400, Try::Refused),
        (401, Try::Refused),
        (404, Try::Refused),
        (413, Try::Refused),
    ] {
        assert_eq!(classify(code), want, "{code}");
    }
}

#[test]
fn a_resumed_subscription_gets_exactly_what_it_missed() {
    let bus = Bus::with_ring(4);
    assert!(
        bus.subscribe_after(Some(0)).lost.is_none(),
        "nothing published, nothing lost"
    );
    for i in 1..=3 {
        bus.publish(Event::reload(true, &format!("r{i}")));
    }
    let seqs = |r: &Resumed| r.backlog.iter().map(|e| e.seq).collect::<Vec<_>>();
    let fresh = bus.subscribe_after(None);
    assert!(fresh.backlog.is_empty() && fresh.lost.is_none());
    let r = bus.subscribe_after(Some(1));
    assert_eq!((seqs(&r), r.lost), (vec![2, 3], None));
    let r = bus.subscribe_after(Some(3));
    assert_eq!((seqs(&r), r.lost), (vec![], None));
    for i in 4..=7 {
        bus.publish(Event::reload(true, &format!("r{i}")));
    }
    assert_eq!(bus.last_seq(), 7);
    // The ring keeps 4..=7: a client at 1 missed 2 and 3 for good.
    let mut r = bus.subscribe_after(Some(1));
    assert_eq!((seqs(&r), r.lost), (vec![4, 5, 6, 7], Some(Some(2))));
    // An id from another run of the process: everything kept, and "some lost, unknown how many".
    let restarted = bus.subscribe_after(Some(99));
    assert_eq!(
        (seqs(&restarted), restarted.lost),
        (vec![4, 5, 6, 7], Some(None))
    );
    // The live receiver starts right after the backlog.
    bus.publish(Event::reload(true, "r8"));
    assert_eq!(r.rx.try_recv().unwrap().seq, 8);
    assert!(r.rx.try_recv().is_err());
}

/// A webhook receiver on loopback (axum): answers with the scripted codes in order (200 once the
/// script is used up) and keeps every body it got.
pub(crate) async fn receiver(script: &[u16]) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use axum::http::StatusCode;
    let script = Arc::new(Mutex::new(
        script
            .iter()
            .copied()
            .collect::<std::collections::VecDeque<u16>>(),
    ));
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let (script, log) = (script.clone(), log.clone());
            async move {
                log.lock().unwrap().push(body);
                let code = script.lock().unwrap().pop_front().unwrap_or(200);
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, got)
}

fn hook(url: String) -> webhook::Webhook {
    webhook::Webhook::new(&WebhookOptions { url, ca_file: None }).unwrap()
}

#[tokio::test]
async fn the_webhook_retries_5xx_and_never_other_4xx() {
    let (addr, got) = receiver(&[500, 200, 400, 429, 408, 503]).await;
    let h = hook(format!("http://{addr}/hook"));
    let stats = WebhookStats::default();
    assert!(
        h.deliver("{\"n\":1}", &stats).await,
        "500 is retried, then 200"
    );
    assert_eq!(got.lock().unwrap().len(), 2);
    assert_eq!(stats.failed_tries.load(Ordering::Relaxed), 1);
    assert!(
        !h.deliver("{\"n\":2}", &stats).await,
        "400 is given up at once"
    );
    assert_eq!(got.lock().unwrap().len(), 3, "no retry after a 400");
    assert!(
        !h.deliver("{\"n\":3}", &stats).await,
        "429, 408, 503: three tries, all transient"
    );
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 6);
    assert_eq!(got[0], got[1], "the retry carries the same event");
    assert_eq!(&got[3..], ["{\"n\":3}", "{\"n\":3}", "{\"n\":3}"]);
    assert_eq!(stats.failed_tries.load(Ordering::Relaxed), 1 + 1 + 3);
}

/// Paused time: the backoff sleeps run on the test's clock, so the time spent is exact.
#[tokio::test(start_paused = true)]
async fn a_dead_webhook_is_tried_three_times_then_given_up() {
    // A port with nothing listening: every connect is refused at once.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let h = hook(format!("http://{addr}/x"));
    let stats = WebhookStats::default();
    let t = tokio::time::Instant::now();
    assert!(!h.deliver("{}", &stats).await);
    assert_eq!(
        stats.failed_tries.load(Ordering::Relaxed),
        webhook::TRIES as u64
    );
    let spent = t.elapsed();
    assert!(
        spent >= webhook::BACKOFF.iter().sum::<Duration>(),
        "backed off: {spent:?}"
    );
    assert!(spent < Duration::from_secs(10), "bounded: {spent:?}");
}

/// An https receiver whose certificate is signed by a CA made here: trusted through the CA file
/// option, refused without it.
#[tokio::test]
async fn an_https_receiver_is_trusted_through_the_ca_option() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sos-webhook-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    // The receiver: TLS on loopback, then the same axum handler over hyper.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return; // the client without the CA hangs up
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });

    let url = format!("https://{addr}/hook");
    let trusting = webhook::Webhook::new(&WebhookOptions {
        url: url.clone(),
        ca_file: Some(ca_file.clone()),
    })
    .unwrap();
    assert_eq!(
        trusting.post("{\"tls\":true}").await,
        webhook::Try::Delivered
    );
    assert_eq!(got.lock().unwrap().as_slice(), ["{\"tls\":true}"]);
    let stranger = hook(url);
    assert_eq!(
        stranger.post("{}").await,
        webhook::Try::Transient,
        "an unknown CA is a failed connection"
    );
    assert_eq!(got.lock().unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
