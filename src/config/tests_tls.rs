//! `[tls]`, TLS listen addresses and TLS targets: what the rules file accepts and where it says no.

use super::*;

const TARGETS: &str = r#"
[[targets]]
id = "a"
uri = "sip:192.0.2.1:5061"
transport = "tls"
tls_name = "psap-a.example.net"
failure_domain = "a"

[[targets]]
id = "b"
uri = "sips:192.0.2.2"
tls_name = "psap-b.example.net"
failure_domain = "b"

[default_route]
chain = ["a", "b"]
"#;

const TLS: &str = r#"
[tls]
cert_file = "certs/proxy.crt"
key_file = "certs/proxy.key"
ca_file = "certs/ca.crt"
client_auth = "require"
handshake_timeout_ms = 1500
"#;

fn file(listen: &str, tls: &str, targets: &str) -> String {
    format!("listen = [{listen}]\n{tls}\n{targets}")
}

fn errors_of(text: &str) -> Vec<(usize, String)> {
    read(text, "t.toml")
        .expect_err("expected refusal")
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.line, d.message))
        .collect()
}

#[test]
fn a_tls_listener_and_tls_targets_are_read_with_their_names() {
    let text = file(
        r#""udp:127.0.0.1:5060", "tls:127.0.0.1:5061""#,
        TLS,
        TARGETS,
    );
    let (f, _) = read(&text, "t.toml").unwrap();
    assert_eq!(f.listen[1].0, Proto::Tls);
    let tls = f.tls.unwrap();
    assert_eq!(tls.cert_file.unwrap().path, "certs/proxy.crt");
    assert_eq!(tls.client_auth, ClientAuth::Require);
    assert_eq!(tls.handshake_timeout_ms, 1500);
    assert_eq!(f.targets[0].transport, Some(Proto::Tls));
    assert_eq!(f.targets[0].tls_name.as_deref(), Some("psap-a.example.net"));
    // sips: with no transport written is TLS, on 5061.
    assert_eq!(f.targets[1].transport, Some(Proto::Tls));
    let Endpoint::Sip { addr, .. } = &f.targets[1].endpoint else {
        panic!("sip target")
    };
    assert_eq!(addr.port(), 5061);
}

#[test]
fn tls_without_its_files_or_names_is_refused_at_the_right_lines() {
    // A TLS listener without [tls]; TLS targets without a CA to check them by.
    let text = file(r#""tls:127.0.0.1:5061""#, "", TARGETS);
    let errs = errors_of(&text);
    assert!(
        errs.iter().any(|(l, m)| *l == 1 && m.contains("cert_file")),
        "{errs:?}"
    );
    assert_eq!(
        errs.iter().filter(|(_, m)| m.contains("ca_file")).count(),
        2,
        "{errs:?}"
    );

    // A TLS target without tls_name; tls_name on a UDP target; sips: over udp.
    let targets = r#"
[[targets]]
id = "a"
uri = "sip:192.0.2.1:5061"
transport = "tls"
failure_domain = "a"

[[targets]]
id = "b"
uri = "sip:192.0.2.2"
tls_name = "psap-b.example.net"
failure_domain = "b"

[[targets]]
id = "c"
uri = "sips:192.0.2.3"
transport = "udp"
tls_name = "psap-c.example.net"
failure_domain = "c"

[default_route]
chain = ["a", "b", "c"]
"#;
    let text = file(r#""udp:127.0.0.1:5060""#, TLS, targets);
    let errs = errors_of(&text);
    let line_of = |s: &str| 1 + text.lines().position(|l| l.contains(s)).unwrap();
    let has = |line: usize, frag: &str| errs.iter().any(|(l, m)| *l == line && m.contains(frag));
    assert!(
        has(line_of("id = \"a\"") - 1, "needs `tls_name`"),
        "{errs:?}"
    );
    assert!(
        has(line_of("psap-b.example.net"), "only for transport"),
        "{errs:?}"
    );
    assert!(
        has(
            line_of("transport = \"udp\""),
            "sips: URI is reached over TLS only"
        ),
        "{errs:?}"
    );
}

#[test]
fn bad_tls_values_are_refused() {
    let tls = "[tls]\ncert_file = \"c\"\nclient_auth = \"maybe\"\nhandshake_timeout_ms = 0\n";
    let targets = "[[targets]]\nid = \"a\"\nuri = \"sip:192.0.2.1\"\ntls_name = \"not a name!\"\n\
                   transport = \"tls\"\nfailure_domain = \"a\"\n[default_route]\nchain = [\"a\"]\n";
    let errs = errors_of(&file(r#""udp:127.0.0.1:5060""#, tls, targets));
    let any = |frag: &str| errs.iter().any(|(_, m)| m.contains(frag));
    assert!(any("\"none\", \"request\" or \"require\""), "{errs:?}");
    assert!(any("handshake_timeout_ms"), "{errs:?}");
    assert!(any("both `cert_file` and `key_file`"), "{errs:?}");
    assert!(any("is not a DNS name"), "{errs:?}");
    assert_eq!(
        values::parse_transport("quic").unwrap_err(),
        "transport `quic` is not \"udp\", \"tcp\" or \"tls\""
    );
}
