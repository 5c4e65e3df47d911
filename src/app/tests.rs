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
