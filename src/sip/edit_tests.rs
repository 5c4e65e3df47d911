//! Every Editor operation, checked on exact output bytes.
use super::super::{Limits, Message, Source};
use super::Editor;
use bytes::Bytes;

fn msg(s: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(s.as_bytes()), &Limits::default()).unwrap()
}

fn text(b: Bytes) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

const TAIL: &str = "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n";

fn invite(vias: &str, extra: &str) -> Message {
    msg(&format!(
        "INVITE sip:x@y SIP/2.0\r\n{vias}{TAIL}{extra}Content-Length: 2\r\n\r\nhi"
    ))
}

const OUR: &[u8] = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour";

#[test]
fn no_edits_copies_message() {
    let m = invite("Via: SIP/2.0/UDP a\r\n", "");
    assert_eq!(Editor::new(&m).finish(), m.bytes());
}

#[test]
fn push_via_goes_first_and_stacks() {
    let m = invite("Via: SIP/2.0/UDP a\r\n", "");
    let out = text(
        Editor::new(&m)
            .push_via(OUR)
            .push_via(b"SIP/2.0/TCP second")
            .finish(),
    );
    assert_eq!(
        out,
        format!(
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP second\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour\r\nVia: SIP/2.0/UDP a\r\n{TAIL}Content-Length: 2\r\n\r\nhi"
        )
    );
}

#[test]
fn pop_via_whole_line_with_folding() {
    let m = invite(
        "Via: SIP/2.0/UDP a;\r\n branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b\r\n",
        "",
    );
    let out = text(Editor::new(&m).pop_via().finish());
    assert_eq!(
        out,
        format!(
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP b\r\n{TAIL}Content-Length: 2\r\n\r\nhi"
        )
    );
}

#[test]
fn pop_via_first_of_comma_list() {
    let m = invite(
        "Via: SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/UDP [::1]:5060,SIP/2.0/UDP c\r\n",
        "",
    );
    let out = text(Editor::new(&m).pop_via().finish());
    let want = format!(
        "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5060,SIP/2.0/UDP c\r\n{TAIL}Content-Length: 2\r\n\r\nhi"
    );
    assert_eq!(out, want);
}

#[test]
fn pop_via_then_push_via_compose() {
    let m = invite("Via: SIP/2.0/UDP a\r\nVia: SIP/2.0/UDP b\r\n", "");
    let out = text(
        Editor::new(&m)
            .pop_via()
            .push_via(b"SIP/2.0/UDP new")
            .finish(),
    );
    assert_eq!(
        out,
        format!(
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP new\r\nVia: SIP/2.0/UDP b\r\n{TAIL}Content-Length: 2\r\n\r\nhi"
        )
    );
}

fn stamped(via: &str, ip: &str, port: u16) -> String {
    let m = invite(
        &format!("Via: {via}\r\nVia: SIP/2.0/UDP second;rport\r\n"),
        "",
    );
    let out = text(
        Editor::new(&m)
            .stamp_top_via(Source {
                ip: ip.parse().unwrap(),
                port,
            })
            .finish(),
    );
    let start = "INVITE sip:x@y SIP/2.0\r\nVia: ".len();
    out[start..out.find("\r\nVia: SIP/2.0/UDP second;rport\r\n").unwrap()].to_string()
}

#[test]
fn stamp_top_via_received_and_rport() {
    assert_eq!(
        stamped(
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
            "10.0.0.1",
            5060
        ),
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"
    );
    assert_eq!(
        stamped(
            "SIP/2.0/UDP host.example;branch=z9hG4bK1",
            "192.0.2.7",
            5060
        ),
        "SIP/2.0/UDP host.example;branch=z9hG4bK1;received=192.0.2.7"
    );
    assert_eq!(
        stamped(
            "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1",
            "10.0.0.1",
            40000
        ),
        "SIP/2.0/UDP 10.0.0.1:5060;rport=40000;branch=z9hG4bK1;received=10.0.0.1"
    );
    assert_eq!(
        stamped(
            "SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1",
            "2001:db8::1",
            5060
        ),
        "SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1"
    );
    assert_eq!(
        stamped("SIP/2.0/UDP h;received=1.1.1.1;rport=9", "192.0.2.1", 7),
        "SIP/2.0/UDP h;received=192.0.2.1;rport=9"
    );
    assert_eq!(
        stamped("SIP/2.0/UDP h;rport", "::1", 7),
        "SIP/2.0/UDP h;rport=7;received=::1"
    );
}

#[test]
fn stamp_only_touches_first_value_of_a_list() {
    let m = invite("Via: SIP/2.0/UDP a;rport, SIP/2.0/UDP b;rport\r\n", "");
    let out = text(
        Editor::new(&m)
            .stamp_top_via(Source {
                ip: "192.0.2.1".parse().unwrap(),
                port: 9,
            })
            .finish(),
    );
    assert!(
        out.contains("Via: SIP/2.0/UDP a;rport=9;received=192.0.2.1, SIP/2.0/UDP b;rport\r\n"),
        "{out}"
    );
}

#[test]
fn request_uri_and_max_forwards() {
    let m = invite("Via: SIP/2.0/UDP a\r\n", "Max-Forwards: 70\r\n");
    let out = text(
        Editor::new(&m)
            .set_request_uri(b"tel:+1")
            .set_request_uri(b"sip:psap@10.0.0.9")
            .set_max_forwards(69)
            .finish(),
    );
    assert_eq!(
        out,
        format!(
            "INVITE sip:psap@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n{TAIL}Max-Forwards: 69\r\nContent-Length: 2\r\n\r\nhi"
        )
    );
    let m = invite("Via: SIP/2.0/UDP a\r\n", "");
    let out = text(
        Editor::new(&m)
            .set_max_forwards(5)
            .set_max_forwards(70)
            .finish(),
    );
    assert_eq!(
        out,
        format!(
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n{TAIL}Content-Length: 2\r\nMax-Forwards: 70\r\n\r\nhi"
        )
    );
}

#[test]
fn pop_routes_across_lines_and_lists() {
    let routes = "Route: <sip:p1;lr>, <sip:p2;lr>\r\nRoute: <sip:p3;lr>,<sip:p4;lr>\r\n";
    let m = invite("Via: SIP/2.0/UDP a\r\n", routes);
    let case = |n| {
        let out = text(Editor::new(&m).pop_routes(n).finish());
        let start = out.find("CSeq: 1 INVITE\r\n").unwrap() + 16;
        out[start..out.find("Content-Length").unwrap()].to_string()
    };
    assert_eq!(case(0), routes);
    assert_eq!(
        case(1),
        "Route: <sip:p2;lr>\r\nRoute: <sip:p3;lr>,<sip:p4;lr>\r\n"
    );
    assert_eq!(case(2), "Route: <sip:p3;lr>,<sip:p4;lr>\r\n");
    assert_eq!(case(3), "Route: <sip:p4;lr>\r\n");
    assert_eq!(case(4), "");
    assert_eq!(case(9), "");
}

#[test]
fn push_record_route_above_existing_or_at_top() {
    let m = invite("Via: SIP/2.0/UDP a\r\n", "Record-Route: <sip:old;lr>\r\n");
    let out = text(
        Editor::new(&m)
            .push_record_route(b"<sip:one;lr>")
            .push_record_route(b"<sip:two;lr>")
            .finish(),
    );
    assert!(out.contains(&format!("{TAIL}Record-Route: <sip:two;lr>\r\nRecord-Route: <sip:one;lr>\r\nRecord-Route: <sip:old;lr>\r\n")), "{out}");
    let m = invite("Via: SIP/2.0/UDP a\r\n", "");
    let out = text(
        Editor::new(&m)
            .push_record_route(b"<sip:rr;lr>")
            .push_via(OUR)
            .pop_via()
            .finish(),
    );
    assert_eq!(
        out,
        format!(
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour\r\nRecord-Route: <sip:rr;lr>\r\n{TAIL}Content-Length: 2\r\n\r\nhi"
        )
    );
}

#[test]
fn content_length_and_append_header() {
    let m = msg(&format!(
        "MESSAGE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n{TAIL}\r\nbodyé"
    ));
    let out = text(
        Editor::new(&m)
            .append_header(b"X-One", b"1")
            .ensure_content_length()
            .append_header(b"X-Two", b"2")
            .finish(),
    );
    assert_eq!(
        out,
        format!(
            "MESSAGE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n{TAIL}X-One: 1\r\nContent-Length: 6\r\nX-Two: 2\r\n\r\nbodyé"
        )
    );
    let m = invite("Via: SIP/2.0/UDP a\r\n", "");
    assert_eq!(Editor::new(&m).ensure_content_length().finish(), m.bytes());
}

#[test]
fn finish_drops_leading_crlf_and_truncated_tail_and_is_repeatable() {
    let m = msg(&format!(
        "\r\nBYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n{TAIL}l: 1\r\n\r\nxyz"
    ));
    let mut e = Editor::new(&m);
    e.set_max_forwards(1);
    let first = e.finish();
    assert_eq!(
        text(first.clone()),
        format!(
            "BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n{TAIL}l: 1\r\nMax-Forwards: 1\r\n\r\nx"
        )
    );
    assert_eq!(e.finish(), first);
}

#[test]
fn response_editing_ignores_request_only_ops() {
    let m = msg(
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP ours;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP a\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    let out = text(Editor::new(&m).set_request_uri(b"sip:z").pop_via().finish());
    assert_eq!(
        out,
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"
    );
}

#[test]
fn forwarding_a_request_combines_every_edit() {
    let m = msg(&format!(
        "INVITE sip:proxy.example;lr SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKc\r\nMax-Forwards: 70\r\nRoute: <sip:proxy.example;lr>, <sip:next.example;lr>\r\n{TAIL}Record-Route: <sip:up.example;lr>\r\nContent-Length: 2\r\n\r\nhi"
    ));
    let src = Source {
        ip: "192.0.2.44".parse().unwrap(),
        port: 40000,
    };
    let out = text(
        Editor::new(&m)
            .append_header(b"X-Sos", b"1")
            .push_record_route(b"<sip:127.0.0.1;lr>")
            .pop_routes(1)
            .set_max_forwards(69)
            .stamp_top_via(src)
            .set_request_uri(b"urn:service:sos")
            .push_via(OUR)
            .finish(),
    );
    assert_eq!(
        out,
        format!(
            "INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;rport=40000;branch=z9hG4bKc;received=192.0.2.44\r\nMax-Forwards: 69\r\nRoute: <sip:next.example;lr>\r\n{TAIL}Record-Route: <sip:127.0.0.1;lr>\r\nRecord-Route: <sip:up.example;lr>\r\nContent-Length: 2\r\nX-Sos: 1\r\n\r\nhi"
        )
    );
}
