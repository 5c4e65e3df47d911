//! Shutdown joins every task the app started.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Polls `f` until it holds; panics after 10 s (a liveness bound, not a timing assertion).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn shutdown_cancels_and_joins_every_task() {
    let dir = std::env::temp_dir().join(format!("sosrouter-app-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A probed target that answers nothing, and a webhook receiver that never reads.
    let psap = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hook = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rules = format!(
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n\n\
         [[targets]]\nid = \"psap\"\nuri = \"sip:{}\"\nfailure_domain = \"a\"\n\n\
         [default_route]\nchain = [\"psap\"]\n",
        psap.local_addr().unwrap()
    );
    let path = dir.join("rules.toml");
    std::fs::write(&path, rules).unwrap();
    let opts = RunOptions {
        rules_path: path,
        undelivered_path: Some(dir.join("undelivered.jsonl")),
        admin: Some("127.0.0.1:0".parse().unwrap()),
        watch_rules: Some(WatchSettings::default()),
        webhook: Some(format!("http://{}/hook", hook.local_addr().unwrap())),
        ..Default::default()
    };
    let running = start_from_file(&opts).await.unwrap();
    reload_on_sighup(running.reloader.clone(), &running.tasks).unwrap();

    // A caller's TCP connection (reader and writer tasks) and an admin event stream.
    let sip = running.local_addr(Proto::Tcp).unwrap();
    let mut caller = TcpStream::connect(sip).await.unwrap();
    eventually("the TCP connection is registered", || {
        running.transport.tcp_connections() == 1
    })
    .await;
    let admin = running.admin.unwrap();
    let mut stream = TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(running.tasks.len() >= 8, "tasks: {}", running.tasks.len());

    assert!(running.shutdown(DRAIN_LIMIT).await, "every task ended");
    assert!(running.tasks.is_joined());
    assert_eq!(running.tasks.len(), 0);
    // The connections' tasks are gone, so are their sockets: both peers see the end.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), caller.read_to_end(&mut rest));
    assert!(matches!(read.await, Ok(Ok(0))));
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
    assert!(matches!(read.await, Ok(Ok(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn shutdown_lets_a_call_in_flight_run_for_the_drain_limit_then_joins_it() {
    // A target that takes the INVITE and never answers; timers far beyond the drain limit.
    let psap = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rules = format!(
        "listen = [\"udp:127.0.0.1:0\"]\n\n\
         [defaults]\nattempt_timeout_ms = 60000\nring_timeout_ms = 60000\ncall_deadline_ms = 120000\n\n\
         [health]\nprobe = false\n\n\
         [[targets]]\nid = \"psap\"\nuri = \"sip:{}\"\nfailure_domain = \"a\"\n\n\
         [default_route]\nchain = [\"psap\"]\n",
        psap.local_addr().unwrap()
    );
    let (rules, _) = Rules::parse(&rules, "test.toml").unwrap();
    let running = start(rules, &RunOptions::default()).await.unwrap();
    let proxy = running.local_addr(Proto::Udp).unwrap();
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = caller.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:911@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-drain-1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+16175550123@carrier.example>;tag=caller1\r\n\
         To: <sip:911@127.0.0.1>\r\n\
         Call-ID: drain-1@test\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{local}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    caller.send_to(invite.as_bytes(), proxy).await.unwrap();
    let mut buf = [0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(10), psap.recv(&mut buf)).await;
    assert!(matches!(got, Ok(Ok(_))), "the target got the INVITE");
    assert_eq!(running.proxy.calls_in_flight(), 1);

    // From here on the clock only moves when every task waits on it.
    tokio::time::pause();
    let began = tokio::time::Instant::now();
    assert!(running.shutdown(DRAIN_LIMIT).await);
    assert!(
        began.elapsed() >= DRAIN_LIMIT,
        "the call had the whole drain"
    );
    assert!(running.tasks.is_joined());
}
