//! The admin token: POSTs need it when one is set, reads stay open, loading refuses bad tokens.

use super::{Token, TokenError, load_token, serve_auth, test_http};
use crate::health::Health;
use std::net::SocketAddr;
use tokio::net::TcpListener;

async fn server(token: Option<&str>) -> SocketAddr {
    let health = Health::from_targets(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = token.map(|t| Token::new(t).unwrap());
    tokio::spawn(serve_auth(listener, health, token));
    addr
}

async fn request(addr: SocketAddr, method: &str, auth: Option<&str>) -> (u16, String) {
    let auth = auth.map(|a| format!("Authorization: {a}"));
    let path = if method == "GET" {
        "/status"
    } else {
        "/targets/nope/disable"
    };
    let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
    let r = test_http::request(addr, method, path, &headers).await;
    (r.status, r.text())
}

#[tokio::test]
async fn posts_need_the_bearer_token_when_one_is_set() {
    let addr = server(Some("s3cret-token")).await;
    let (code, text) = request(addr, "POST", None).await;
    assert_eq!(code, 401);
    assert!(text.contains("WWW-Authenticate: Bearer"), "{text}");
    assert!(
        text.contains("Authorization: Bearer"),
        "says what to send: {text}"
    );
    assert_eq!(request(addr, "POST", Some("Bearer wrong")).await.0, 401);
    assert_eq!(
        request(addr, "POST", Some("Basic s3cret-token")).await.0,
        401
    );
    // Past the gate, the route answers (404: no such target).
    assert_eq!(
        request(addr, "POST", Some("Bearer s3cret-token")).await.0,
        404
    );
    assert_eq!(request(addr, "GET", None).await.0, 200, "reads stay open");
}

#[tokio::test]
async fn without_a_token_nothing_changes() {
    let addr = server(None).await;
    assert_eq!(request(addr, "POST", None).await.0, 404);
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
