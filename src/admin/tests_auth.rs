//! The admin token: POSTs need it when one is set, reads too unless turned off, loading refuses
//! bad tokens.

use super::auth::{Denied, check};
use super::{Access, Admin, Limits, Token, TokenError, load_token, router, serve, test_http};
use crate::events::Bus;
use crate::health::Health;
use crate::tasks::Tasks;
use axum::http::Method;
use std::net::SocketAddr;
use tokio::net::TcpListener;

async fn server(token: Option<&str>, reads: bool) -> SocketAddr {
    let tasks = Tasks::new();
    let admin = Admin {
        events: Some(Bus::default()),
        metrics: Some(std::sync::Arc::new(String::new)),
        ..Admin::new(Health::from_targets(&[]), tasks.clone())
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let access = Access {
        token: token.map(|t| Token::new(t).unwrap()),
        reads,
    };
    serve(listener, router(admin), access, Limits::default(), &tasks);
    // The tasks are dropped here, never cancelled: the server lives until the test ends.
    addr
}

async fn request(addr: SocketAddr, method: &str, auth: Option<&str>) -> test_http::Reply {
    let path = if method == "GET" {
        "/status"
    } else {
        "/targets/nope/disable"
    };
    get_with(addr, method, path, auth).await
}

async fn get_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> test_http::Reply {
    let auth = auth.map(|a| format!("Authorization: {a}"));
    let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
    test_http::request(addr, method, path, &headers).await
}

#[tokio::test]
async fn posts_need_the_bearer_token_when_one_is_set() {
    let addr = server(Some("s3cret-token"), false).await;
    let r = request(addr, "POST", None).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate").unwrap().starts_with("Bearer"),
        "{}",
        r.text()
    );
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "says what to send: {}",
        r.text()
    );
    assert_eq!(
        request(addr, "POST", Some("Bearer wrong")).await.status,
        401
    );
    assert_eq!(
        request(addr, "POST", Some("Basic s3cret-token"))
            .await
            .status,
        401
    );
    // Past the gate, the route answers (404: no such target).
    assert_eq!(
        request(addr, "POST", Some("Bearer s3cret-token"))
            .await
            .status,
        404
    );
    assert_eq!(
        request(addr, "GET", None).await.status,
        200,
        "reads open when asked"
    );
}

#[tokio::test]
async fn reads_need_the_token_by_default() {
    let addr = server(Some("s3cret-token"), Access::new(None).reads).await;
    for path in ["/status", "/events", "/metrics", "/nowhere"] {
        let r = get_with(addr, "GET", path, None).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(r.header("www-authenticate").is_some());
    }
    let ok = get_with(addr, "GET", "/status", Some("Bearer s3cret-token")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = get_with(addr, "GET", "/metrics", Some("Bearer s3cret-token")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        request(addr, "POST", Some("Bearer s3cret-token"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn without_a_token_nothing_changes() {
    let addr = server(None, true).await;
    assert_eq!(request(addr, "POST", None).await.status, 404);
    assert_eq!(request(addr, "GET", None).await.status, 200);
}

#[test]
fn the_gate_decides_by_method_and_token() {
    let t = Some(Token::new("tok").unwrap());
    let gated = Access::new(t.clone());
    let open_reads = Access {
        token: t,
        reads: false,
    };
    assert_eq!(check(&Access::default(), &Method::POST, None), Ok(()));
    assert_eq!(check(&gated, &Method::GET, None), Err(Denied::Missing));
    assert_eq!(
        check(&gated, &Method::HEAD, Some("Bearer x")),
        Err(Denied::Wrong)
    );
    assert_eq!(check(&gated, &Method::GET, Some("Bearer tok")), Ok(()));
    assert_eq!(check(&open_reads, &Method::GET, None), Ok(()));
    assert_eq!(
        check(&open_reads, &Method::POST, None),
        Err(Denied::Missing)
    );
    assert_eq!(
        check(&open_reads, &Method::POST, Some("Bearer tok ")),
        Ok(())
    );
    assert_eq!(
        check(&open_reads, &Method::POST, Some("Bearer tok2")),
        Err(Denied::Wrong)
    );
}

#[test]
fn tokens_are_loaded_from_a_file_before_the_environment_and_checked() {
    let dir = std::env::temp_dir().join(format!("sos-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    let t = load_token(Some(&file), Some("from-env")).unwrap().unwrap();
    assert_eq!(t, Token::new("from-file").unwrap());
    assert_eq!(
        load_token(None, Some("from-env")).unwrap(),
        Token::new("from-env").ok()
    );
    assert!(load_token(None, None).unwrap().is_none());
    assert!(matches!(
        load_token(None, Some("  ")),
        Err(TokenError::Empty)
    ));
    assert!(matches!(
        load_token(None, Some("a b")),
        Err(TokenError::BadChars)
    ));
    let missing = dir.join("missing");
    assert!(matches!(
        load_token(Some(&missing), None),
        Err(TokenError::Read { .. })
    ));
    assert_eq!(
        format!("{t:?}"),
        "Token(..)",
        "Debug never prints the secret"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
