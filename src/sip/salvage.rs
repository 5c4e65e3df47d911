//! A 400 for a request the parser refused, built from whatever headers can still be read.
//!
//! RFC 3261 §8.2 wants a malformed request answered rather than left to retransmit for 32 s (the
//! caller's transaction would be stuck, and for a 911 call the caller's network must learn at once
//! that it should try elsewhere). The full parser refuses the whole message on the first fault, so
//! this pass is deliberately lenient and small:
//! 1. The start line must look like a request (`METHOD SP ...`), not a response, and not an ACK
//!    (an ACK is never answered).
//! 2. Lines are unfolded; Via, From, To, Call-ID and CSeq (long or compact names) are collected
//!    verbatim. A header that appears where a single one is allowed keeps its first value.
//! 3. All five must be present, with values free of control characters; otherwise `None` (drop).
//! 4. The response copies them, adds a To tag when there is none, and carries the problem in the
//!    reason phrase, e.g. `400 Bad Request (malformed Via header)`.
//!
//! It only builds bytes: where to send them (the packet's source, never a Via address that could
//! aim the response at a third party) is the caller's decision.

use super::Limits;
use bytes::Bytes;

/// Builds a 400 for `raw`, or `None` when no response could be addressed.
pub fn bad_request(raw: &[u8], problem: &str, limits: &Limits) -> Option<Bytes> {
    let raw = raw.get(..limits.max_message_bytes).unwrap_or(raw);
    let start = raw.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let lines: Vec<Vec<u8>> = logical_lines(raw.get(start..)?, limits).collect();
    let (first, lines) = lines.split_first()?;
    let method = first.split(|&b| b == b' ').next()?;
    if method.is_empty()
        || method.starts_with(b"SIP/")
        || method == b"ACK"
        || !method.iter().all(|&b| b.is_ascii_graphic())
    {
        return None;
    }
    let (mut vias, mut from, mut to, mut call_id, mut cseq) = (Vec::new(), None, None, None, None);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon)?.trim_ascii();
        let value = line.get(colon + 1..)?.trim_ascii();
        if value.is_empty() || value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        match lower.as_slice() {
            b"via" | b"v" => vias.push(value),
            b"from" | b"f" => from = from.or(Some(value)),
            b"to" | b"t" => to = to.or(Some(value)),
            b"call-id" | b"i" => call_id = call_id.or(Some(value)),
            b"cseq" => cseq = cseq.or(Some(value)),
            _ => {}
        }
    }
    if vias.is_empty() {
        return None;
    }
    let (from, to, call_id, cseq) = (from?, to?, call_id?, cseq?);
    let reason: String = problem
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("SIP/2.0 400 Bad Request ({reason})\r\n").as_bytes());
    for v in vias {
        push(&mut out, b"Via", v);
    }
    push(&mut out, b"From", from);
    push(&mut out, b"To", to);
    if !has_tag(to) {
        out.truncate(out.len() - 2);
        out.extend_from_slice(b";tag=sos400\r\n");
    }
    push(&mut out, b"Call-ID", call_id);
    push(&mut out, b"CSeq", cseq);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

fn push(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `tag` parameter outside the URI's angle brackets (or anywhere, when there are none).
fn has_tag(to: &[u8]) -> bool {
    let params = match to.iter().rposition(|&b| b == b'>') {
        Some(i) => to.get(i..).unwrap_or_default(),
        None => to,
    };
    params
        .to_ascii_lowercase()
        .split(|&b| b == b';')
        .skip(1)
        .any(|p| p.trim_ascii().starts_with(b"tag"))
}

/// Header lines with folding undone, up to the blank line; at most `max_headers` + 1 of them.
fn logical_lines<'a>(buf: &'a [u8], limits: &Limits) -> impl Iterator<Item = Vec<u8>> + 'a {
    let mut physical = buf
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .peekable();
    let max = limits.max_headers + 1;
    std::iter::from_fn(move || {
        let mut line = physical.next()?.to_vec();
        while let Some(next) = physical.next_if(|l| matches!(l.first(), Some(b' ' | b'\t'))) {
            line.push(b' ');
            line.extend_from_slice(next.trim_ascii());
        }
        Some(line)
    })
    .take(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str) -> Option<String> {
        bad_request(s.as_bytes(), "malformed Via header", &Limits::default())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn answers_with_what_parses() {
        let r = run("INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;;,;,,\r\nf: <sip:a@b>;tag=1\r\nTo:\r\n <sip:c@d>\r\ni: abc\r\nCSeq: 8 INVITE\r\nl: 9999\r\n\r\nbody").unwrap();
        assert!(r.starts_with("SIP/2.0 400 Bad Request (malformed Via header)\r\n"));
        assert!(r.contains("Via: SIP/2.0/UDP h;;,;,,\r\n"));
        assert!(r.contains("To: <sip:c@d>;tag=sos400\r\n"));
        assert!(r.contains("Call-ID: abc\r\nCSeq: 8 INVITE\r\n"));
    }

    #[test]
    fn never_answers_responses_acks_or_unaddressable() {
        assert!(
            run("SIP/2.0 200 OK\r\nVia: a\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n")
                .is_none()
        );
        assert!(run("ACK sip:x SIP/2.0\r\nVia: a\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n").is_none());
        assert!(
            run("INVITE sip:x SIP/2.0\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n")
                .is_none()
        );
        assert!(run("").is_none());
    }

    #[test]
    fn keeps_an_existing_to_tag() {
        let r = run("BYE sip:x SIP/2.0\r\nVia: a\r\nFrom: a\r\nTo: <sip:b;tag=no>;tag=yes\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n").unwrap();
        assert!(r.contains("To: <sip:b;tag=no>;tag=yes\r\n"));
    }
}
