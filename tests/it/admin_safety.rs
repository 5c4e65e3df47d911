//! Admin safety at startup: off loopback, the admin endpoint needs a bearer token.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use crate::common::*;

/// Without a token (or with one that cannot be read) a non-loopback admin address is refused.
/// The check comes before the admin bind, so nothing listens on 0.0.0.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_off_loopback_without_a_token_is_refused() {
    let rules = lab_rules(
        dead_port().await,
        dead_port().await,
        dead_port().await,
        FAST_TIMERS,
    );
    let (rules, _) = sosrouter::routing::Rules::parse(&rules, "t.toml").unwrap();
    let opts = sosrouter::app::RunOptions {
        admin: Some("0.0.0.0:0".parse().unwrap()),
        admin_token_file: Some("/nonexistent/sosrouter-token".into()),
        ..Default::default()
    };
    // A token file that cannot be read is an error, never a silent "no token".
    let err = sosrouter::app::start(rules.clone(), &opts)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("admin token file"), "{err:#}");
    let opts = sosrouter::app::RunOptions {
        admin: Some("0.0.0.0:0".parse().unwrap()),
        ..Default::default()
    };
    if std::env::var_os("SOSROUTER_ADMIN_TOKEN").is_none() {
        let err = sosrouter::app::start(rules, &opts).await.err().unwrap();
        assert!(format!("{err:#}").contains("no admin token"), "{err:#}");
    }
}

/// On loopback with a token file, POSTs through the running proxy's admin need the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_proxy_admin_requires_the_token_for_posts() {
    let dir = std::env::temp_dir().join(format!("sos-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "lab-token\n").unwrap();
    let text = lab_rules(
        dead_port().await,
        dead_port().await,
        dead_port().await,
        FAST_TIMERS,
    );
    let (rules, _) = sosrouter::routing::Rules::parse(&text, "t.toml").unwrap();
    let opts = sosrouter::app::RunOptions {
        admin: Some("127.0.0.1:0".parse().unwrap()),
        admin_token_file: Some(file),
        ..Default::default()
    };
    let p = sosrouter::app::start(rules, &opts).await.unwrap();
    let admin = p.admin.unwrap();
    let post = |auth: &'static [&'static str]| async move {
        http::request(admin, "POST", "/targets/psap-primary/disable", auth)
            .await
            .status
    };
    assert_eq!(post(&[]).await, 401);
    assert_eq!(post(&["Authorization: Bearer lab-token"]).await, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}
