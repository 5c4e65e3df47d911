//! Parsing and read access, on hand-written messages (RFC 3261 §24 and RFC 4475 shapes).
use super::super::{CSeq, HeaderName, Limits, Message, Method, ParseError, ViaTransport};
use bytes::Bytes;
use std::borrow::Cow;

fn p(s: &[u8]) -> Result<Message, ParseError> {
    Message::parse(Bytes::copy_from_slice(s), &Limits::default())
}

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Route: <sip:p3.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: \"Alice, A.\" <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Geolocation: <cid:loc@x>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\xff";

#[test]
fn parses_invite() {
    let m = p(INVITE).unwrap();
    assert!(m.is_request());
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.method_bytes(), Some(&b"INVITE"[..]));
    assert_eq!(m.request_uri(), Some(&b"sip:bob@biloxi.com"[..]));
    assert_eq!(m.request_uri_span(), Some(7..25));
    assert_eq!(m.status(), None);
    assert_eq!(m.reason(), None);
    assert_eq!(m.start_line_span(), 0..35);
    assert_eq!(m.headers().len(), 12);
    assert_eq!(m.call_id(), b"a84b4c76e66710@pc33.atlanta.com");
    assert_eq!(
        m.cseq(),
        CSeq {
            seq: 314159,
            method: Method::Invite
        }
    );
    assert_eq!(m.max_forwards(), Ok(Some(70)));
    assert_eq!(m.from_tag(), Some(&b"1928301774"[..]));
    assert_eq!(m.to_tag(), None);
    assert_eq!(m.body(), b"v=0\xff");
    assert_eq!(m.content_length(), Some(4));
    assert_eq!(&INVITE[m.headers_end()..m.body_span().start], b"\r\n");
    let via = m.top_via().unwrap();
    assert_eq!(via.host, b"pc33.atlanta.com");
    assert_eq!(via.branch, Some(&b"z9hG4bK776asdhds"[..]));
    assert_eq!(
        &INVITE[via.span],
        b"SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds"
    );
    let routes: Vec<Cow<'_, [u8]>> = m.routes();
    assert_eq!(routes.len(), 3);
    assert_eq!(&*routes[1], b"<sip:p2.example.com;lr>");
    assert!(matches!(routes[0], Cow::Borrowed(_)));
    assert_eq!(
        m.header(HeaderName::ContentType).as_deref(),
        Some(&b"application/sdp"[..])
    );
    assert_eq!(
        m.header_named(b"geolocation").as_deref(),
        Some(&b"<cid:loc@x>"[..])
    );
    assert_eq!(
        m.header_named(b"i").as_deref(),
        Some(&b"a84b4c76e66710@pc33.atlanta.com"[..])
    );
    assert_eq!(m.header_named(b"X-Nope"), None);
    assert_eq!(m.header(HeaderName::Other), None);
    let from = m.header(HeaderName::From).unwrap();
    assert_eq!(
        Message::addr_spec(&from),
        Some(&b"sip:alice@atlanta.com"[..])
    );
}

#[test]
fn addr_spec_forms() {
    assert_eq!(Message::addr_spec(b" sip:a@b;tag=x"), Some(&b"sip:a@b"[..]));
    assert_eq!(
        Message::addr_spec(b"\"<not>\" <tel:+1>"),
        Some(&b"tel:+1"[..])
    );
    assert_eq!(Message::addr_spec(b"<sip:p1;lr>"), Some(&b"sip:p1;lr"[..]));
    assert_eq!(Message::addr_spec(b"<sip:open"), None);
    assert_eq!(Message::addr_spec(b""), None);
}

#[test]
fn parses_responses_with_any_reason() {
    let tail = b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n";
    for (line, code, reason) in [
        (&b"SIP/2.0 200 OK"[..], 200, &b"OK"[..]),
        (
            b"SIP/2.0 486 Busy  Here, really",
            486,
            b"Busy  Here, really",
        ),
        (b"SIP/2.0 180 ", 180, b""),
        (b"SIP/2.0 603", 603, b""),
        (b"sip/2.0 699 \xe4\xb8\xad", 699, b"\xe4\xb8\xad"),
    ] {
        let m = p(&[line, &tail[..]].concat()).unwrap();
        assert!(!m.is_request());
        assert_eq!(m.status(), Some(code));
        assert_eq!(m.reason(), Some(reason));
        assert_eq!(m.method(), None);
        assert_eq!(m.request_uri(), None);
        assert_eq!(m.cseq().method, Method::Bye);
    }
    for bad in [
        &b"SIP/2.0 99 x"[..],
        b"SIP/2.0 700 x",
        b"SIP/2.0 20x",
        b"SIP/2.0 2000 x",
        b"SIP/2.0",
    ] {
        assert_eq!(
            p(&[bad, &tail[..]].concat()).unwrap_err(),
            ParseError::BadStartLine
        );
    }
    assert_eq!(
        p(&[&b"SIP/3.0 200 OK"[..], &tail[..]].concat()).unwrap_err(),
        ParseError::BadVersion
    );
}

fn req(start: &str, extra: &str) -> Vec<u8> {
    format!("{start}\r\nv: SIP/2.0/UDP h\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>\r\ni: id1\r\nCSeq: 2 X\r\n{extra}\r\n")
        .into_bytes()
}

#[test]
fn compact_forms_and_odd_spacing() {
    let m = p(&req(
        "MESSAGE sip:x SIP/2.0",
        "l  :  0\r\nm:<sip:c@h>\r\nc :text/plain\r\nk: path\r\n",
    ))
    .unwrap();
    assert_eq!(m.method(), Some(Method::Message));
    assert_eq!(m.call_id(), b"id1");
    assert_eq!(m.content_length(), Some(0));
    assert_eq!(m.from_tag(), Some(&b"1"[..]));
    assert_eq!(
        m.header(HeaderName::Contact).as_deref(),
        Some(&b"<sip:c@h>"[..])
    );
    assert_eq!(
        m.header(HeaderName::ContentType).as_deref(),
        Some(&b"text/plain"[..])
    );
    assert_eq!(m.header_named(b"Supported").as_deref(), Some(&b"path"[..]));
    assert_eq!(m.headers()[0].name, HeaderName::Via);
    let m = p(b"OPTIONS sip:x SIP/2.0\r\nVIA   :  SIP/2.0/TCP h\r\nFROM:<sip:a@b>\r\ntO:<sip:a@b>;TAG=9\r\ncall-id:z\r\ncseq:1 OPTIONS\r\n\r\n").unwrap();
    assert_eq!(m.top_via().unwrap().transport, ViaTransport::Tcp);
    assert_eq!(m.to_tag(), Some(&b"9"[..]));
}

#[test]
fn unknown_method_and_uri_kinds() {
    for (start, method, uri) in [
        (
            "NEWMETHOD.x-1 sip:a@b SIP/2.0",
            &b"NEWMETHOD.x-1"[..],
            &b"sip:a@b"[..],
        ),
        (
            "INVITE tel:+19785386180 SIP/2.0",
            b"INVITE",
            b"tel:+19785386180",
        ),
        (
            "INVITE urn:service:sos SIP/2.0",
            b"INVITE",
            b"urn:service:sos",
        ),
        (
            "INVITE urn:service:sos.fire SIP/2.0",
            b"INVITE",
            b"urn:service:sos.fire",
        ),
        (
            "INVITE sip:[2001:db8::1]:5060 SIP/2.0",
            b"INVITE",
            b"sip:[2001:db8::1]:5060",
        ),
        (
            "INVITE sips:a@b;transport=tcp SIP/2.0",
            b"INVITE",
            b"sips:a@b;transport=tcp",
        ),
    ] {
        let m = p(&req(start, "")).unwrap();
        assert_eq!(m.method_bytes(), Some(method));
        assert_eq!(m.request_uri(), Some(uri));
    }
    assert_eq!(
        p(&req("NEWMETHOD sip:a SIP/2.0", "")).unwrap().method(),
        Some(Method::Other)
    );
    for bad in [
        "INVITE sip:a SIP/2.0 extra",
        "INVITE  SIP/2.0",
        "INV@TE sip:a SIP/2.0",
        "INVITE nocolon SIP/2.0",
    ] {
        assert_eq!(
            p(&req(bad, "")).unwrap_err(),
            ParseError::BadStartLine,
            "{bad}"
        );
    }
    assert_eq!(
        p(&req("INVITE sip:a SIP/1.0", "")).unwrap_err(),
        ParseError::BadVersion
    );
}

#[test]
fn folding_unfolds_only_when_needed() {
    let m = p(&req(
        "BYE sip:x SIP/2.0",
        "Subject: I know you're there,\r\n  pick up\r\n\tthe phone\r\nX-A: plain\r\n",
    ))
    .unwrap();
    let s = m.header_named(b"s").unwrap();
    assert_eq!(&*s, b"I know you're there, pick up the phone");
    assert!(matches!(s, Cow::Owned(_)));
    assert!(matches!(m.header_named(b"x-a").unwrap(), Cow::Borrowed(_)));
    let h = &m.headers()[5];
    assert_eq!(
        &m.bytes()[h.line_span.clone()],
        b"Subject: I know you're there,\r\n  pick up\r\n\tthe phone\r\n"
    );
    assert_eq!(
        p(b"BYE sip:x SIP/2.0\r\n folded-first\r\n\r\n").unwrap_err(),
        ParseError::BadHeader(2)
    );
}

#[test]
fn several_vias_per_line() {
    let m = p(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport=5,\r\n SIP/2.0/TCP b.example ;branch=z9hG4bKb ,SIP/2.0/UDP c\r\nv: SIP/2.0/UDP d;received=10.0.0.1\r\ni: x\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
    let vias = m.vias().unwrap();
    let hosts: Vec<&[u8]> = vias.iter().map(|v| v.host).collect();
    assert_eq!(hosts, vec![&b"[2001:db8::1]"[..], b"b.example", b"c", b"d"]);
    assert_eq!(vias[0].rport, Some(Some(5)));
    assert_eq!(vias[1].branch, Some(&b"z9hG4bKb"[..]));
    assert_eq!(vias[3].received, Some(&b"10.0.0.1"[..]));
    assert_eq!(m.header_values(HeaderName::Via).len(), 4);
    assert_eq!(m.top_via().unwrap(), vias[0]);
}

#[test]
fn bad_via_is_reported_lazily() {
    let m = p(&req("BYE sip:x SIP/2.0", "Via: garbage\r\n")).unwrap();
    assert_eq!(m.top_via().unwrap().host, b"h");
    assert_eq!(m.vias().unwrap_err(), ParseError::BadValue("Via"));
}

#[test]
fn lf_only_and_leading_crlf() {
    let m = p(b"\r\n\r\nBYE sip:x SIP/2.0\nVia: SIP/2.0/UDP h\nFrom: <sip:a@b>\nTo: <sip:a@b>\nCall-ID: c\nCSeq: 1 BYE\n\nbody").unwrap();
    assert_eq!(m.start_line_span(), 4..22);
    assert_eq!(m.body(), b"body");
    assert_eq!(m.header(HeaderName::To).as_deref(), Some(&b"<sip:a@b>"[..]));
}

#[test]
fn content_length_truncates_or_fails() {
    let base = req("BYE sip:x SIP/2.0", "Content-Length: 3\r\n");
    let m = p(&[&base[..], b"abcdef"].concat()).unwrap();
    assert_eq!(m.body(), b"abc");
    assert_eq!(
        p(&[&base[..], b"ab"].concat()).unwrap_err(),
        ParseError::BadContentLength
    );
    let huge = req(
        "BYE sip:x SIP/2.0",
        "Content-Length: 99999999999999999999999\r\n",
    );
    assert_eq!(
        p(&huge).unwrap_err(),
        ParseError::BadValue("Content-Length")
    );
    let neg = req("BYE sip:x SIP/2.0", "l: -1\r\n");
    assert_eq!(p(&neg).unwrap_err(), ParseError::BadValue("Content-Length"));
    let none = req("BYE sip:x SIP/2.0", "");
    let m = p(&[&none[..], b"rest"].concat()).unwrap();
    assert_eq!((m.body(), m.content_length()), (&b"rest"[..], None));
}

#[test]
fn limits_are_enforced() {
    let m = req("BYE sip:x SIP/2.0", "X-Pad: 0123456789\r\n");
    let lim = |a, b, c| Limits {
        max_message_bytes: a,
        max_headers: b,
        max_line_bytes: c,
    };
    assert!(Message::parse(Bytes::from(m.clone()), &lim(m.len(), 6, 40)).is_ok());
    assert_eq!(
        Message::parse(Bytes::from(m.clone()), &lim(m.len() - 1, 6, 40)).unwrap_err(),
        ParseError::TooLarge(m.len())
    );
    assert_eq!(
        Message::parse(Bytes::from(m.clone()), &lim(999, 5, 40)).unwrap_err(),
        ParseError::TooManyHeaders
    );
    assert_eq!(
        Message::parse(Bytes::from(m.clone()), &lim(999, 6, 18)).unwrap_err(),
        ParseError::LineTooLong
    );
}

#[test]
fn structural_errors() {
    assert_eq!(p(b"").unwrap_err(), ParseError::Incomplete);
    assert_eq!(
        p(b"BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n").unwrap_err(),
        ParseError::Incomplete
    );
    assert_eq!(
        p(b"BYE sip:x SIP/2.0\r\nno colon\r\n\r\n").unwrap_err(),
        ParseError::BadHeader(2)
    );
    assert_eq!(
        p(b"BYE sip:x SIP/2.0\r\nBad Name: x\r\n\r\n").unwrap_err(),
        ParseError::BadHeader(2)
    );
    assert_eq!(
        p(b"BYE sip:x SIP/2.0\r\n: x\r\n\r\n").unwrap_err(),
        ParseError::BadHeader(2)
    );
    let missing = |drop: &str| {
        let m = String::from_utf8(req("BYE sip:x SIP/2.0", "")).unwrap();
        let m: String = m
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with(drop))
            .collect();
        p(m.as_bytes()).unwrap_err()
    };
    assert_eq!(missing("v:"), ParseError::MissingHeader("Via"));
    assert_eq!(missing("f:"), ParseError::MissingHeader("From"));
    assert_eq!(missing("t:"), ParseError::MissingHeader("To"));
    assert_eq!(missing("i:"), ParseError::MissingHeader("Call-ID"));
    assert_eq!(missing("CSeq"), ParseError::MissingHeader("CSeq"));
    for cseq in [
        "CSeq: x BYE",
        "CSeq: 1",
        "CSeq: 1BYE",
        "CSeq: 4294967296 BYE",
        "CSeq: 1 B@D",
    ] {
        let m = req("BYE sip:x SIP/2.0", "");
        let m = String::from_utf8(m).unwrap().replace("CSeq: 2 X", cseq);
        assert_eq!(
            p(m.as_bytes()).unwrap_err(),
            ParseError::BadValue("CSeq"),
            "{cseq}"
        );
    }
    let m = String::from_utf8(req("BYE sip:x SIP/2.0", ""))
        .unwrap()
        .replace("i: id1", "i: a b");
    assert_eq!(
        p(m.as_bytes()).unwrap_err(),
        ParseError::BadValue("Call-ID")
    );
}

#[test]
fn max_forwards_errors_lazily() {
    let m = p(&req("BYE sip:x SIP/2.0", "Max-Forwards: many\r\n")).unwrap();
    assert_eq!(m.max_forwards(), Err(ParseError::BadValue("Max-Forwards")));
    let m = p(&req("BYE sip:x SIP/2.0", "")).unwrap();
    assert_eq!(m.max_forwards(), Ok(None));
}
