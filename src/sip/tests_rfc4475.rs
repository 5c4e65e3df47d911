//! Messages from RFC 4475 (SIP torture tests) that a lenient proxy must read correctly.
//!
//! The messages themselves live once, in `tests/torture/*.sip` (the loopback torture test sends
//! the same files to a running proxy): byte-exact, control characters included, with LF line ends.
use super::{CSeq, HeaderName, Limits, Message, Method, ViaTransport};
use bytes::Bytes;

/// A torture file as sent: every LF becomes CRLF (the files keep the RFC's Content-Length values).
fn crlf(raw: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 16);
    for &b in raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    Bytes::from(out)
}

/// RFC 4475 §3.1.1.1 "wsinv": unusual whitespace, folding everywhere, compact forms.
const WSINV: &[u8] = include_bytes!("../../tests/torture/valid_3.1.1.1_wsinv.sip");

#[test]
fn wsinv() {
    let m = Message::parse(crlf(WSINV), &Limits::default()).unwrap();
    assert_eq!(
        m.request_uri(),
        Some(&b"sip:vivekg@chair-dnrc.example.com;unknownparam"[..])
    );
    assert_eq!(m.to_tag(), Some(&b"1918181833n"[..]));
    assert_eq!(m.from_tag(), Some(&b"98asjd8"[..]));
    assert_eq!(m.max_forwards(), Ok(Some(68)));
    assert_eq!(m.call_id(), b"wsinv.ndaksdj@192.0.2.1");
    assert_eq!(
        m.cseq(),
        CSeq {
            seq: 9,
            method: Method::Invite
        }
    );
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
    assert!(m.body().starts_with(b"v=0\r\n"));
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].host, vias[0].rport, vias[0].branch),
        (&b"192.0.2.2"[..], Some(None), Some(&b"390skdjuw"[..]))
    );
    assert_eq!(
        (vias[1].transport, vias[1].host),
        (ViaTransport::Tcp, &b"spindle.example.com"[..])
    );
    assert_eq!(vias[2].branch, Some(&b"z9hG4bK30239"[..]));
    assert_eq!(
        m.header_named(b"newfangledheader").as_deref(),
        Some(&b"newfangled value continued newfangled value"[..])
    );
    assert_eq!(m.header_named(b"Subject").as_deref(), Some(&b""[..]));
    let routes = m.routes();
    assert_eq!(
        Message::addr_spec(&routes[0]),
        Some(&b"sip:services.example.com;lr;unknownwith=value;unknown-no-value"[..])
    );
    let contact = m.header(HeaderName::Contact).unwrap();
    assert_eq!(
        Message::addr_spec(&contact),
        Some(&b"sip:jdrosen@example.com"[..])
    );
    assert_eq!(
        m.header(HeaderName::ContentType).as_deref(),
        Some(&b"application/sdp"[..])
    );
}

/// RFC 4475 §3.1.1.2 "intmeth": a method and URI using every allowed odd character.
/// With the raw BEL, NUL and DEL bytes the RFC writes as `<hex>07</hex>` etc. in its To header.
const INTMETH: &[u8] = include_bytes!("../../tests/torture/valid_3.1.1.2_intmeth.sip");

#[test]
fn intmeth() {
    let m = Message::parse(crlf(INTMETH), &Limits::default()).unwrap();
    assert_eq!(m.method(), Some(Method::Other));
    assert_eq!(
        m.method_bytes(),
        Some(&b"!interesting-Method0123456789_*+`.%indeed'~"[..])
    );
    assert_eq!(
        m.cseq(),
        CSeq {
            seq: 139122385,
            method: Method::Other
        }
    );
    assert_eq!(
        m.top_via().unwrap().branch,
        Some(&b"z9hG4bK-.!%66*_+`'~"[..])
    );
    assert_eq!(m.from_tag(), Some(&b"_token~1'+`*%!-."[..]));
    assert_eq!(
        m.call_id(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{".as_bytes()
    );
    assert_eq!(m.max_forwards(), Ok(Some(255)));
    assert_eq!(
        m.header_named(b"EXTENSIONHEADER-!.%*+_`'~").as_deref(),
        Some("\u{feff}大停電".as_bytes())
    );
}

/// RFC 4475 §3.1.2.4 "ncl" style: a negative Content-Length is refused, not wrapped around.
#[test]
fn negative_content_length() {
    let m = std::str::from_utf8(WSINV)
        .unwrap()
        .replace("Content-Length   : 150", "Content-Length: -999");
    assert!(Message::parse(crlf(m.as_bytes()), &Limits::default()).is_err());
}
