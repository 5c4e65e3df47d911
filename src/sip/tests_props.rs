//! Properties: no input makes the codec panic, and splicing a Via in and out is lossless.
use super::{Editor, HeaderName, Limits, Message, Source, Uri, build, frame_len};
use bytes::Bytes;
use proptest::prelude::*;

/// One Via value; `i` makes hosts differ between values.
fn via_value() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just("[2001:db8::1]".to_string()),
        "[a-z]{1,6}\\.example",
        (1u8..=254, 1u8..=254).prop_map(|(a, b)| format!("10.{a}.0.{b}")),
    ];
    let port =
        prop::option::of(1u16..=65535).prop_map(|p| p.map(|p| format!(":{p}")).unwrap_or_default());
    let params = prop::collection::vec(
        prop_oneof![
            Just(";rport".to_string()),
            "(;rport=[1-9][0-9]{0,3})",
            Just(";received=192.0.2.9".to_string()),
            ";ttl=[0-9]{1,2}"
        ],
        0..3,
    );
    (
        prop_oneof![Just("UDP"), Just("TCP"), Just("tls")],
        host,
        port,
        "z9hG4bK[A-Za-z0-9]{1,10}",
        params,
    )
        .prop_map(|(t, h, p, b, ps)| format!("SIP/2.0/{t} {h}{p};branch={b}{}", ps.concat()))
}

/// Header lines of a valid message in the shapes the codec must read: compact and odd-cased names,
/// space around the colon, Via lists with folding, Route lists, unknown headers.
fn valid_message() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        (
            prop_oneof![
                Just("INVITE".to_string()),
                Just("BYE".to_string()),
                Just("CANCEL".to_string()),
                "[A-Z][A-Za-z.!%*_+`'~-]{0,10}"
            ],
            prop_oneof![
                Just("urn:service:sos".to_string()),
                Just("urn:service:sos.fire".to_string()),
                Just("tel:+19785386180".to_string()),
                Just("sip:[2001:db8::1]:5060".to_string()),
                "sips?:[a-z0-9]{1,8}@[a-z]{1,8}\\.example(:[0-9]{1,5})?(;lr)?",
            ],
        )
            .prop_map(|(m, u)| format!("{m} {u} SIP/2.0")),
        (100u16..=699, "[ -~]{0,20}").prop_map(|(c, r)| format!("SIP/2.0 {c} {r}")),
    ];
    let via_lines = prop::collection::vec(
        (
            prop_oneof![Just("Via"), Just("v"), Just("VIA")],
            prop_oneof![Just(": "), Just(":"), Just("  :  ")],
            prop::collection::vec(via_value(), 1..4),
            prop_oneof![Just(", "), Just(","), Just(" ,\r\n  ")],
        )
            .prop_map(|(n, c, vs, sep)| format!("{n}{c}{}\r\n", vs.join(sep))),
        1..4,
    );
    let routes = prop::collection::vec(
        prop::collection::vec("<sip:p[0-9]{1,3}\\.example;lr>", 1..3)
            .prop_map(|v| format!("Route: {}\r\n", v.join(", "))),
        0..3,
    );
    let others = prop::collection::vec(
        prop_oneof![
            Just("Max-Forwards: 70\r\n".to_string()),
            Just("Record-Route: <sip:rr.example;lr>\r\n".to_string()),
            Just("Subject: folded\r\n value\r\n".to_string()),
            Just("m: <sip:c@[::1]>\r\n".to_string()),
            "X-[A-Za-z]{1,8}: [ -~]{0,20}\r\n",
        ],
        0..4,
    );
    let body = prop::collection::vec(any::<u8>(), 0..40);
    let compact = any::<bool>();
    (start, via_lines, routes, others, body, compact).prop_map(|(s, vias, routes, others, body, compact)| {
        let (f, t, i, l) = if compact { ("f", "t", "i", "l") } else { ("From", "To", "Call-ID", "Content-Length") };
        let mut m = format!("{s}\r\n{}", vias.concat());
        m += &format!("{f}: \"A, b\" <sip:a@b.example>;tag=x1\r\n{t}: <sip:c@d.example>\r\n{i}: id-1@host\r\nCSeq: 12 INVITE\r\n");
        m += &routes.concat();
        m += &others.concat();
        m += &format!("{l}: {}\r\n\r\n", body.len());
        let mut m = m.into_bytes();
        m.extend_from_slice(&body);
        m
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(&b"\r\n:,;<>\"[] \t=@/0"[..]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), special).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(mut m: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for mu in muts {
        let n = m.len().max(1);
        match *mu {
            Mutation::Flip(i, x) => {
                if let Some(b) = m.get_mut(i % n) {
                    *b ^= x;
                }
            }
            Mutation::Truncate(i) => m.truncate(i % n),
            Mutation::Insert(i, b) => m.insert(i % (m.len() + 1), b),
            Mutation::Remove(i) => {
                if !m.is_empty() {
                    m.remove(i % n);
                }
            }
        }
    }
    m
}

/// Calls every read accessor, editor operation and builder on `buf` if it parses.
fn exercise(buf: &[u8], limits: &Limits) {
    let _ = frame_len(buf, limits);
    let Ok(m) = Message::parse(Bytes::copy_from_slice(buf), limits) else {
        return;
    };
    let _ = (
        m.bytes(),
        m.is_request(),
        m.method(),
        m.method_bytes(),
        m.request_uri_span(),
        m.status(),
        m.reason(),
    );
    let _ = (
        m.headers(),
        m.start_line_span(),
        m.headers_end(),
        m.call_id(),
        m.cseq(),
        m.max_forwards(),
    );
    let _ = (
        m.from_tag(),
        m.to_tag(),
        m.routes(),
        m.body(),
        m.body_span(),
        m.content_length(),
    );
    let _ = (
        m.vias(),
        m.top_via(),
        m.header_named(b"Geolocation"),
        m.header_named(b"v"),
    );
    if let Some(uri) = m.request_uri().and_then(Uri::parse) {
        let _ = uri.param(b"lr");
    }
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::Route,
        HeaderName::Contact,
        HeaderName::Other,
    ] {
        let _ = m.header(name);
        for v in m.header_values(name) {
            let _ = Message::addr_spec(&v).and_then(Uri::parse);
        }
    }
    let src = Source {
        ip: "192.0.2.1".parse().unwrap(),
        port: 5062,
    };
    let out = Editor::new(&m)
        .push_via(b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp")
        .pop_via()
        .stamp_top_via(src)
        .set_request_uri(b"sip:psap@10.0.0.1")
        .set_max_forwards(69)
        .pop_routes(2)
        .push_record_route(b"<sip:127.0.0.1;lr>")
        .ensure_content_length()
        .append_header(b"X-A", b"1")
        .finish();
    let _ = Message::parse(out, limits);
    let _ = Editor::new(&m)
        .stamp_top_via(src)
        .pop_routes(usize::MAX)
        .finish();
    let _ = build::response(&m, 503, "", Some(b"t"), &[b"Retry-After: 1"]);
    if let Some(leg) = build::Leg::of(&m) {
        let _ = build::ack_for_non2xx(&m, &leg, &m);
        let _ = build::cancel(&m, &leg);
    }
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        3 => Just(Limits::default()),
        1 => (0usize..400, 0usize..12, 0usize..80).prop_map(|(a, b, c)| Limits { max_message_bytes: a, max_headers: b, max_line_bytes: c }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..600), limits in limits()) {
        exercise(&buf, &limits);
    }

    #[test]
    fn mutated_messages_never_panic(
        m in valid_message(),
        muts in prop::collection::vec(mutation(), 1..6),
        limits in limits(),
    ) {
        exercise(&mutate(m, &muts), &limits);
    }

    #[test]
    fn valid_messages_parse_and_frame(m in valid_message()) {
        let msg = Message::parse(Bytes::from(m.clone()), &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&m))))?;
        prop_assert_eq!(frame_len(&m, &Limits::default()), Ok(Some(m.len())));
        prop_assert!(msg.vias().is_ok());
        prop_assert_eq!(msg.call_id(), b"id-1@host");
        prop_assert_eq!(msg.from_tag(), Some(&b"x1"[..]));
        exercise(&m, &Limits::default());
    }

    #[test]
    fn push_via_then_pop_via_round_trips(m in valid_message(), v in via_value()) {
        let original = Message::parse(Bytes::from(m.clone()), &Limits::default()).unwrap();
        let pushed = Editor::new(&original).push_via(v.as_bytes()).finish();
        let start = original.start_line_span().end;
        let expected = [&m[..start], b"Via: ", v.as_bytes(), b"\r\n", &m[start..]].concat();
        prop_assert_eq!(&pushed[..], &expected[..]);

        let reparsed = Message::parse(pushed, &Limits::default()).unwrap();
        let top = reparsed.top_via().unwrap();
        prop_assert_eq!(top.span.clone(), start + 5..start + 5 + v.len());
        let ours = Message::parse(Bytes::from(format!("SIP/2.0 200 OK\r\nVia: {v}\r\ni: x\r\nCSeq: 1 A\r\n\r\n")), &Limits::default()).unwrap();
        let want = ours.top_via().unwrap();
        prop_assert_eq!((top.host, top.port, top.branch, top.rport), (want.host, want.port, want.branch, want.rport));
        prop_assert_eq!(reparsed.vias().unwrap().len(), original.vias().unwrap().len() + 1);

        let popped = Editor::new(&reparsed).pop_via().finish();
        prop_assert_eq!(&popped[..], &m[..]);
    }
}
