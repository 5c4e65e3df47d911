use super::*;
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
fn webhook_urls() {
    let u = WebhookUrl::parse("http://127.0.0.1:9000/alerts/sos").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.path.as_str()),
        ("127.0.0.1", 9000, "/alerts/sos")
    );
    let u = WebhookUrl::parse("http://alerts.example").unwrap();
    assert_eq!((u.port, u.path.as_str()), (80, "/"));
    let u = WebhookUrl::parse("http://[::1]:81/x").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 81));
    assert_eq!(u.to_string(), "http://[::1]:81/x");
    assert!(WebhookUrl::parse("https://a/b").is_err());
    assert!(WebhookUrl::parse("http://:80/").is_err());
    assert!(WebhookUrl::parse("http://a:x/").is_err());
}

/// Paused time: the backoff sleeps run on the test's clock, so the time spent is exact.
#[tokio::test(start_paused = true)]
async fn a_dead_webhook_is_tried_three_times_then_given_up() {
    // A port with nothing listening: every connect is refused at once.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let url = WebhookUrl::parse(&format!("http://{addr}/x")).unwrap();
    let stats = WebhookStats::default();
    let t = tokio::time::Instant::now();
    assert!(!webhook::deliver(&url, "{}", &stats).await);
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
