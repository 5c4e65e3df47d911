//! Faults the lenient parser lets through but a proxy must not act on (RFC 4475 §3.1.2): checked
//! on requests before the proxy routes or answers them, so they get a 400 naming the fault instead
//! of being forwarded in a form the next hop may read differently.
//!
//! Checked, in order:
//! 1. Request line: single SP between its three elements and none after (`lwsstart`, `trws`:
//!    forwarding would keep the extra SP, which RFC 4475 forbids), and a Request-URI not wrapped in
//!    `<>` (`ltgtruri`).
//! 2. A sip/sips Request-URI carries no `?headers` (`escruri`: a proxy must never turn them into
//!    headers, and cannot forward them in the Request-URI either).
//! 3. The CSeq method equals the request method (`mismatch01`, `mismatch02`).
//! 4. From and To have balanced double quotes (`quotbal`): an unbalanced quote makes every later
//!    `<`, `;` and `tag` ambiguous, so the dialog identifiers cannot be trusted.
//!
//! Everything else stays lenient: headers we only copy are never judged.

use super::{HeaderName, Message};

/// The first fault of a parsed request, as a short phrase for the 400 reason; None when clean.
pub fn request_problem(msg: &Message) -> Option<&'static str> {
    let start = msg.bytes().get(msg.start_line_span())?;
    let start = start.strip_suffix(b"\n").unwrap_or(start);
    let start = start.strip_suffix(b"\r").unwrap_or(start);
    if start.split(|&b| b == b' ').count() != 3 || start.contains(&b'\t') {
        return Some("request line elements not separated by single spaces");
    }
    let uri = msg.request_uri()?;
    if uri.starts_with(b"<") {
        return Some("Request-URI enclosed in <>");
    }
    let lower = uri
        .get(..5)
        .map(|p| p.to_ascii_lowercase())
        .unwrap_or_default();
    // A `?` in the user part is legal (RFC 4475 `intmeth`); headers follow the host.
    let host_part = match uri.iter().rposition(|&b| b == b'@') {
        Some(at) => uri.get(at..).unwrap_or_default(),
        None => uri,
    };
    if (lower.starts_with(b"sip:") || lower.starts_with(b"sips:")) && host_part.contains(&b'?') {
        return Some("escaped headers in the Request-URI");
    }
    let cseq = msg.header(HeaderName::CSeq)?;
    let cseq_method = cseq.rsplit(|b| b.is_ascii_whitespace()).next()?;
    if Some(cseq_method) != msg.method_bytes() {
        return Some("CSeq method differs from the request method");
    }
    for (name, label) in [(HeaderName::From, "From"), (HeaderName::To, "To")] {
        let v = msg.header(name)?;
        if !quotes_balanced(&v) {
            return Some(if label == "From" {
                "unterminated quoted string in From"
            } else {
                "unterminated quoted string in To"
            });
        }
    }
    None
}

/// Whether every `"` that opens a quoted string is closed (backslash escapes honoured).
fn quotes_balanced(v: &[u8]) -> bool {
    let (mut inside, mut escaped) = (false, false);
    for &b in v {
        match (inside, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, _, b'"') => inside = !inside,
            _ => {}
        }
    }
    !inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Limits;

    fn problem(start: &str, cseq: &str, to: &str) -> Option<&'static str> {
        let m = format!(
            "{start}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: {to}\r\nCall-ID: c\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = Message::parse(bytes::Bytes::from(m), &Limits::default()).unwrap();
        request_problem(&msg)
    }

    #[test]
    fn clean_requests_pass() {
        assert_eq!(
            problem(
                "INVITE urn:service:sos SIP/2.0",
                "1 INVITE",
                "<urn:service:sos>"
            ),
            None
        );
        let to = r#""J \"Q\" R" <sip:x@y>"#;
        assert_eq!(problem("BYE sip:x@y SIP/2.0", "2 BYE", to), None);
    }

    #[test]
    fn each_fault_is_named() {
        let p = |s, c, t| problem(s, c, t).unwrap();
        assert!(p("INVITE  sip:x@y  SIP/2.0", "1 INVITE", "<sip:x@y>").contains("single spaces"));
        assert!(p("INVITE <sip:x@y> SIP/2.0", "1 INVITE", "<sip:x@y>").contains("<>"));
        assert!(p("INVITE sip:x@y?Route=%3C SIP/2.0", "1 INVITE", "<sip:x@y>").contains("escaped"));
        assert!(p("OPTIONS sip:x@y SIP/2.0  ", "1 OPTIONS", "<sip:x@y>").contains("single"));
        assert_eq!(
            problem("INVITE sip:a?b@y SIP/2.0", "1 INVITE", "<sip:x@y>"),
            None
        );
        assert!(p("OPTIONS sip:x@y SIP/2.0", "8 INVITE", "<sip:x@y>").contains("CSeq"));
        assert!(p("INVITE sip:x@y SIP/2.0", "1 INVITE", "\"Mr. J <sip:x@y>").contains("To"));
    }
}
