//! Messages the proxy originates: responses it generates, ACK for non-2xx, CANCEL, and the
//! OPTIONS of health probes.
//!
//! Output uses long header names and CRLF line ends, in this order: Via(s), Max-Forwards (requests),
//! To, From, Call-ID, CSeq, Route(s) (ACK/CANCEL), extra headers, `Content-Length: 0`.
use super::access::header_params;
use super::text::param;
use super::{HeaderName, Message};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::SocketAddr;

struct Out(BytesMut);

impl Out {
    fn new(req: &Message) -> Out {
        // Headers copied from the request are never larger than the request's header section.
        Out(BytesMut::with_capacity(
            req.headers_end().saturating_add(256),
        ))
    }
    fn line(&mut self, parts: &[&[u8]]) {
        parts.iter().for_each(|p| self.0.put_slice(p));
        self.0.put_slice(b"\r\n");
    }
    fn header(&mut self, name: &[u8], value: &[u8]) {
        self.line(&[name, b": ", value]);
    }
    fn copy(&mut self, msg: &Message, name: HeaderName, label: &[u8]) {
        if let Some(v) = msg.header(name) {
            self.header(label, &v);
        }
    }
    fn finish(mut self) -> Bytes {
        self.header(b"Content-Length", b"0");
        self.0.put_slice(b"\r\n");
        self.0.freeze()
    }
}

/// A response to `req` (RFC 3261 §8.2.6): all Via values copied in order, From, To (with `to_tag` added
/// when the request's To has no tag and the code is above 100), Call-ID, CSeq, `Content-Length: 0`,
/// plus `extra` header lines (each `Name: value`, no CRLF), e.g. `Retry-After: 5`, `Server: sosrouter`.
/// An empty `reason` is replaced by [`reason_phrase`].
pub fn response(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    extra: &[&[u8]],
) -> Bytes {
    let mut out = Out::new(req);
    let reason = if reason.is_empty() {
        reason_phrase(code)
    } else {
        reason
    };
    out.line(&[
        b"SIP/2.0 ",
        code.to_string().as_bytes(),
        b" ",
        reason.as_bytes(),
    ]);
    for via in req.header_values(HeaderName::Via) {
        out.header(b"Via", &via);
    }
    if let Some(to) = req.header(HeaderName::To) {
        match to_tag {
            Some(tag) if code > 100 && !has_tag(&to) => {
                out.header(b"To", &[&to[..], b";tag=", tag].concat())
            }
            _ => out.header(b"To", &to),
        }
    }
    out.copy(req, HeaderName::From, b"From");
    out.copy(req, HeaderName::CallId, b"Call-ID");
    out.copy(req, HeaderName::CSeq, b"CSeq");
    for line in extra {
        out.line(&[line]);
    }
    out.finish()
}

fn has_tag(name_addr: &[u8]) -> bool {
    param(header_params(name_addr), b"tag").is_some()
}

/// What a forwarded request changed in the request it was made from, which is all a client
/// transaction needs to build its CANCEL and ACK (RFC 3261 §9.1, §17.1.1.3) without parsing the
/// request it sent: its Request-URI, its top Via (ours), and how many leading Route entries of the
/// original it removed. From, To, Call-ID and the CSeq number are the original's.
#[derive(Debug, Clone)]
pub struct Leg<'a> {
    pub request_uri: &'a [u8],
    pub via: std::borrow::Cow<'a, [u8]>,
    pub routes_removed: usize,
}

impl<'a> Leg<'a> {
    /// The leg of a request sent exactly as `req` is: its own Request-URI, top Via and Route set.
    pub fn of(req: &'a Message) -> Option<Leg<'a>> {
        let via = req.header_values(HeaderName::Via).into_iter().next()?;
        Some(Leg {
            request_uri: req.request_uri().unwrap_or_default(),
            via,
            routes_removed: 0,
        })
    }
}

/// The start line, top Via and Max-Forwards shared by ACK and CANCEL.
fn request_head(orig: &Message, leg: &Leg<'_>, method: &[u8]) -> Out {
    let mut out = Out::new(orig);
    out.line(&[method, b" ", leg.request_uri, b" SIP/2.0"]);
    out.header(b"Via", &leg.via);
    out.header(b"Max-Forwards", b"70");
    out
}

fn request_tail(mut out: Out, orig: &Message, leg: &Leg<'_>, method: &[u8]) -> Bytes {
    out.copy(orig, HeaderName::From, b"From");
    out.copy(orig, HeaderName::CallId, b"Call-ID");
    out.line(&[
        b"CSeq: ",
        orig.cseq().seq.to_string().as_bytes(),
        b" ",
        method,
    ]);
    for route in orig.routes().iter().skip(leg.routes_removed) {
        out.header(b"Route", route);
    }
    out.finish()
}

/// The ACK a client transaction sends for a non-2xx final response (RFC 3261 §17.1.1.3) to a request
/// made from `orig` as `leg` says: the leg's Request-URI and Via (ours, the only one), Call-ID, From and
/// the remaining Route set of the original; To from the response (with its tag); CSeq number of the
/// INVITE with method ACK; Max-Forwards 70.
pub fn ack_for_non2xx(orig: &Message, leg: &Leg<'_>, response: &Message) -> Bytes {
    let mut out = request_head(orig, leg, b"ACK");
    out.copy(response, HeaderName::To, b"To");
    request_tail(out, orig, leg, b"ACK")
}

/// CANCEL for an INVITE made from `orig` as `leg` says (RFC 3261 §9.1): same Request-URI, top Via
/// only (same branch), Call-ID, From, To (as in the INVITE), Route; CSeq number with method CANCEL;
/// Max-Forwards 70.
pub fn cancel(orig: &Message, leg: &Leg<'_>) -> Bytes {
    let mut out = request_head(orig, leg, b"CANCEL");
    out.copy(orig, HeaderName::To, b"To");
    request_tail(out, orig, leg, b"CANCEL")
}

/// An out-of-dialog OPTIONS request (RFC 3261 §11), as a health probe sends it. Every value is
/// written as given: the caller passes a valid Request-URI and tokens (no CR, LF or `<>`).
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Request-URI, also the To URI (`sip:psap.example:5060`).
    pub request_uri: &'a str,
    /// Via transport token: `UDP`, `TCP`, `TLS`.
    pub transport: &'a str,
    /// Our address: the Via sent-by and the From host.
    pub local: SocketAddr,
    /// The Via branch, magic cookie `z9hG4bK` included.
    pub branch: &'a str,
    /// The From user (`sip:<from_user>@<local>`).
    pub from_user: &'a str,
    pub from_tag: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
}

/// The OPTIONS request: Request-URI, one Via with the branch, Max-Forwards 70, To (no tag), From
/// with its tag, Call-ID, `CSeq: <n> OPTIONS`, `Content-Length: 0`.
pub fn options(o: &Options<'_>) -> Bytes {
    let local = o.local.to_string();
    let uri = o.request_uri.as_bytes();
    let mut out = Out(BytesMut::with_capacity(320 + 2 * uri.len()));
    out.line(&[b"OPTIONS ", uri, b" SIP/2.0"]);
    out.line(&[
        b"Via: SIP/2.0/",
        o.transport.as_bytes(),
        b" ",
        local.as_bytes(),
        b";branch=",
        o.branch.as_bytes(),
    ]);
    out.header(b"Max-Forwards", b"70");
    out.line(&[b"To: <", uri, b">"]);
    out.line(&[
        b"From: <sip:",
        o.from_user.as_bytes(),
        b"@",
        local.as_bytes(),
        b">;tag=",
        o.from_tag.as_bytes(),
    ]);
    out.header(b"Call-ID", o.call_id.as_bytes());
    out.line(&[b"CSeq: ", o.cseq.to_string().as_bytes(), b" OPTIONS"]);
    out.finish()
}

/// The reason phrase RFC 3261 (and RFC 3262/3265/3329/4412/6442) gives for a code, or "Unknown".
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::super::Limits;
    use super::*;

    fn msg(s: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()), &Limits::default()).unwrap()
    }

    const INVITE: &str = "INVITE urn:service:sos SIP/2.0\r\n\
v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour, SIP/2.0/UDP\r\n caller.example;branch=z9hG4bKc\r\n\
Max-Forwards: 69\r\n\
Route: <sip:psap1.example;lr>, <sip:gw.example;lr>\r\n\
t: <urn:service:sos>\r\n\
f: \"Caller\" <sip:+15551234@caller.example>;tag=abc\r\n\
i: call-1@caller\r\n\
CSeq: 7 INVITE\r\n\
Content-Length: 3\r\n\r\nsdp";

    fn s(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn response_copies_vias_and_adds_to_tag() {
        let out = response(
            &msg(INVITE),
            503,
            "Service Unavailable",
            Some(b"t1"),
            &[b"Retry-After: 5", b"Server: sosrouter"],
        );
        assert_eq!(
            s(out),
            "SIP/2.0 503 Service Unavailable\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour\r\n\
Via: SIP/2.0/UDP caller.example;branch=z9hG4bKc\r\n\
To: <urn:service:sos>;tag=t1\r\n\
From: \"Caller\" <sip:+15551234@caller.example>;tag=abc\r\n\
Call-ID: call-1@caller\r\n\
CSeq: 7 INVITE\r\n\
Retry-After: 5\r\n\
Server: sosrouter\r\n\
Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn response_tag_rules() {
        let trying = s(response(&msg(INVITE), 100, "", Some(b"t1"), &[]));
        assert!(trying.starts_with("SIP/2.0 100 Trying\r\n"), "{trying}");
        assert!(trying.contains("\r\nTo: <urn:service:sos>\r\n"), "{trying}");
        let tagged = INVITE.replace("t: <urn:service:sos>", "t: <urn:service:sos>;tag=old");
        let out = s(response(&msg(&tagged), 486, "Busy Here", Some(b"new"), &[]));
        assert!(
            out.contains("\r\nTo: <urn:service:sos>;tag=old\r\n"),
            "{out}"
        );
        let out = s(response(&msg(INVITE), 480, "x", None, &[]));
        assert!(out.contains("\r\nTo: <urn:service:sos>\r\n"), "{out}");
    }

    #[test]
    fn response_parses_back() {
        let out = response(&msg(INVITE), 180, "Ringing", Some(b"t9"), &[]);
        let m = Message::parse(out, &Limits::default()).unwrap();
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.to_tag(), Some(&b"t9"[..]));
        assert_eq!(m.vias().unwrap().len(), 2);
        assert_eq!(m.content_length(), Some(0));
    }

    #[test]
    fn ack_for_non2xx_exact() {
        let resp = msg(
            "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour\r\nTo: <urn:service:sos>;tag=psap\r\nFrom: <sip:x@y>;tag=abc\r\nCall-ID: call-1@caller\r\nCSeq: 7 INVITE\r\n\r\n",
        );
        assert_eq!(
            s(ack_for_non2xx(
                &msg(INVITE),
                &Leg::of(&msg(INVITE)).unwrap(),
                &resp
            )),
            "ACK urn:service:sos SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour\r\n\
Max-Forwards: 70\r\n\
To: <urn:service:sos>;tag=psap\r\n\
From: \"Caller\" <sip:+15551234@caller.example>;tag=abc\r\n\
Call-ID: call-1@caller\r\n\
CSeq: 7 ACK\r\n\
Route: <sip:psap1.example;lr>\r\n\
Route: <sip:gw.example;lr>\r\n\
Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn cancel_exact() {
        assert_eq!(
            s(cancel(&msg(INVITE), &Leg::of(&msg(INVITE)).unwrap())),
            "CANCEL urn:service:sos SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKour\r\n\
Max-Forwards: 70\r\n\
To: <urn:service:sos>\r\n\
From: \"Caller\" <sip:+15551234@caller.example>;tag=abc\r\n\
Call-ID: call-1@caller\r\n\
CSeq: 7 CANCEL\r\n\
Route: <sip:psap1.example;lr>\r\n\
Route: <sip:gw.example;lr>\r\n\
Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn options_exact_and_parses_back() {
        let o = Options {
            request_uri: "sip:psap@[2001:db8::1]:5070;transport=tcp",
            transport: "TCP",
            local: "[2001:db8::2]:5060".parse().unwrap(),
            branch: "z9hG4bK-p1",
            from_user: "sosrouter",
            from_tag: "f1",
            call_id: "c1",
            cseq: 1,
        };
        let out = options(&o);
        assert_eq!(
            s(out.clone()),
            "OPTIONS sip:psap@[2001:db8::1]:5070;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP [2001:db8::2]:5060;branch=z9hG4bK-p1\r\n\
Max-Forwards: 70\r\n\
To: <sip:psap@[2001:db8::1]:5070;transport=tcp>\r\n\
From: <sip:sosrouter@[2001:db8::2]:5060>;tag=f1\r\n\
Call-ID: c1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n"
        );
        let m = Message::parse(out, &Limits::default()).unwrap();
        assert_eq!(m.top_via().unwrap().branch, Some(&b"z9hG4bK-p1"[..]));
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(100), "Trying");
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(408), "Request Timeout");
        assert_eq!(reason_phrase(487), "Request Terminated");
        assert_eq!(reason_phrase(503), "Service Unavailable");
        assert_eq!(reason_phrase(603), "Decline");
        assert_eq!(reason_phrase(299), "Unknown");
    }
}
