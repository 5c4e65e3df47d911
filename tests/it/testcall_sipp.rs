//! A test call against a real SIPp answering point: `sipp -sn uas -rtp_echo` on loopback, started
//! and stopped (by its PID) by the test. Skipped, loudly, only when `sipp` is not installed.

use sosrouter::routing::Rules;
use sosrouter::testcall::{CallParams, Details, Verdict, run_test_call};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Stops SIPp when the test ends, pass or fail.
struct Sipp(Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn sipp_installed() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// One test call to a fresh `sipp -sn uas` (with `-rtp_echo` when `echo`); None when SIPp is absent.
async fn call_sipp(test: &str, echo: bool) -> Option<(Verdict, Details)> {
    if !sipp_installed() {
        eprintln!(
            "\n\n*** SKIPPED {test}: `sipp` is not installed (apt-get install sip-tester) ***\n"
        );
        return None;
    }
    // The ports are free when picked, but another test may take one (or SIPp's second RTP port)
    // before SIPp binds it: then SIPp exits at once, and we try again with fresh ports.
    let mut started = None;
    for _attempt in 0..5 {
        let (port, media) = (free_udp_port(), free_udp_port());
        let child = Command::new("sipp")
            .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mi", "127.0.0.1", "-mp", &media.to_string()])
            .args(echo.then_some("-rtp_echo"))
            // Ends on its own if the kill below never happens.
            .args(["-nostdin", "-timeout", "60s", "-m", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir(std::env::temp_dir())
            .spawn()
            .expect("sipp starts");
        let mut sipp = Sipp(child);
        // Ready when its SIP port is taken; gone when it exited (bounded waits on those conditions).
        for i in 0.. {
            if UdpSocket::bind(("127.0.0.1", port)).is_err() {
                started = Some((sipp, port));
                break;
            }
            if sipp.0.try_wait().ok().flatten().is_some() {
                break;
            }
            assert!(
                i < 400,
                "sipp neither bound its port nor exited within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if started.is_some() {
            break;
        }
    }
    let (_sipp, port) = started.expect("sipp started within 5 tries");
    let rules = format!(
        "listen = [\"udp:127.0.0.1:5060\"]\n[[targets]]\nid = \"sipp\"\nuri = \"sip:127.0.0.1:{port}\"\n\
         failure_domain = \"lab\"\n[default_route]\nchain = [\"sipp\"]\n"
    );
    let (rules, _) = Rules::parse(&rules, "sipp.toml").unwrap();
    let target = rules.target("sipp").unwrap();
    let params = CallParams::for_target(&rules.test_calls, target).unwrap();
    let end = tokio::time::timeout(
        Duration::from_secs(30),
        run_test_call(target, &params, |_, _| {}),
    )
    .await
    .expect("test call ended");
    eprintln!("{test}: {:?} {:?}", end.0, end.1);
    Some(end)
}

#[tokio::test]
async fn sipp_uas_with_rtp_echo_gives_good() {
    let Some((verdict, details)) = call_sipp("sipp_uas_with_rtp_echo_gives_good", true).await
    else {
        return;
    };
    assert_eq!(verdict, Verdict::Good, "{details:?}");
    assert_eq!(details.status, Some(200));
    assert_eq!(details.provisional, Some(180));
    assert!(
        details.media_checked && details.rtp_echoed >= 1,
        "{details:?}"
    );
    assert_eq!(details.bye_status, Some(200));
}

#[tokio::test]
async fn sipp_uas_without_rtp_echo_gives_media_failed() {
    let test = "sipp_uas_without_rtp_echo_gives_media_failed";
    let Some((verdict, details)) = call_sipp(test, false).await else {
        return;
    };
    assert_eq!(verdict, Verdict::MediaFailed, "{details:?}");
    assert_eq!((details.rtp_sent, details.rtp_echoed), (5, 0));
    assert_eq!(details.bye_status, Some(200));
}
