//! Parsing a whole message into offsets: the start line, one `HeaderField` per (unfolded) header,
//! the body range. Typed access lives in `access.rs`.
use super::scan::{leading_crlf, line_at};
use super::text::{is_lws, is_token, parse_decimal, trim_range};
use super::{CSeq, HeaderName, Limits, Method, ParseError};
use bytes::Bytes;
use std::ops::Range;

/// One header field: its name and the byte ranges of the name, the raw value (may contain folding
/// CRLF+WSP, which accessors undo) and the whole field including its line ending(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    pub name: HeaderName,
    pub name_span: Range<usize>,
    pub value_span: Range<usize>,
    pub line_span: Range<usize>,
}

#[derive(Debug, Clone)]
pub(super) enum StartLine {
    Request {
        method: Range<usize>,
        uri: Range<usize>,
    },
    Response {
        status: u16,
        reason: Range<usize>,
    },
}

/// A parsed SIP message: the received bytes and offsets into them. Cheap to clone (Bytes + Vec).
#[derive(Debug, Clone)]
pub struct Message {
    pub(super) buf: Bytes,
    pub(super) start: StartLine,
    pub(super) start_span: Range<usize>,
    pub(super) headers: Vec<HeaderField>,
    /// Offset of the blank line that ends the header section.
    pub(super) headers_end: usize,
    pub(super) body: Range<usize>,
    pub(super) call_id: Range<usize>,
    pub(super) cseq: CSeq,
    pub(super) content_length: Option<usize>,
    /// The top Via, parsed once here: every layer reads it (transaction key, relay, the call), up
    /// to a dozen times per call, and parsing it each time was 13% of a proxied call's
    /// instructions under callgrind. Err when it does not parse (the message itself still does).
    pub(super) top_via: Result<super::via::ViaParts, ParseError>,
}

impl Message {
    /// Parses one complete message (a UDP datagram, or a TCP frame cut by [`super::frame_len`]).
    /// Checks limits first. Requests need Via, Call-ID, CSeq, From, To; responses need Via, Call-ID, CSeq.
    /// A Content-Length smaller than the body truncates the body (UDP, RFC 3261 §18.3); larger is an error.
    /// Leading CR/LF bytes before the start line are skipped (RFC 3261 §7.5).
    pub fn parse(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        if buf.len() > limits.max_message_bytes {
            return Err(ParseError::TooLarge(buf.len()));
        }
        let b: &[u8] = &buf;
        let first = line_at(b, leading_crlf(b), limits.max_line_bytes)?;
        let start = parse_start_line(b, first.content.clone())?;
        let start_span = first.content.start..first.next;

        // Guess: typical requests carry about a dozen headers; one reservation covers most.
        let mut headers: Vec<HeaderField> = Vec::with_capacity(16.min(limits.max_headers));
        let mut pos = first.next;
        let mut line_no = 1usize;
        let headers_end = loop {
            let line = line_at(b, pos, limits.max_line_bytes)?;
            line_no += 1;
            let content = b.get(line.content.clone()).unwrap_or_default();
            match content.first() {
                None => break pos,
                Some(b' ' | b'\t') => {
                    // A continuation line extends the previous field (folding).
                    let last = headers.last_mut().ok_or(ParseError::BadHeader(line_no))?;
                    last.line_span.end = line.next;
                    last.value_span.end = line.content.end;
                }
                Some(_) => {
                    if headers.len() >= limits.max_headers {
                        return Err(ParseError::TooManyHeaders);
                    }
                    let colon =
                        memchr::memchr(b':', content).ok_or(ParseError::BadHeader(line_no))?;
                    let raw_name = content.get(..colon).unwrap_or_default();
                    let name_len = raw_name
                        .iter()
                        .rposition(|&c| !is_lws(c))
                        .map_or(0, |i| i + 1);
                    let name = raw_name.get(..name_len).unwrap_or_default();
                    if name.is_empty() || !name.iter().all(|&c| is_token(c)) {
                        return Err(ParseError::BadHeader(line_no));
                    }
                    headers.push(HeaderField {
                        name: header_name(name),
                        name_span: pos..pos + name_len,
                        value_span: pos + colon + 1..line.content.end,
                        line_span: pos..line.next,
                    });
                }
            }
            pos = line.next;
        };
        for h in &mut headers {
            let r = trim_range(b.get(h.value_span.clone()).unwrap_or_default());
            h.value_span = h.value_span.start + r.start..h.value_span.start + r.end;
        }
        let body_start = line_at(b, headers_end, limits.max_line_bytes)?.next;

        let find = |n: HeaderName| headers.iter().find(|h| h.name == n);
        let value = |h: &HeaderField| b.get(h.value_span.clone()).unwrap_or_default();
        let content_length = match find(HeaderName::ContentLength) {
            Some(h) => Some(
                parse_decimal(value(h))
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(ParseError::BadValue("Content-Length"))?,
            ),
            None => None,
        };
        let available = b.len().saturating_sub(body_start);
        let body_len = match content_length {
            Some(n) if n > available => return Err(ParseError::BadContentLength),
            Some(n) => n,
            None => available,
        };

        let is_request = matches!(start, StartLine::Request { .. });
        let required: &[(&'static str, HeaderName)] = if is_request {
            &[
                ("Via", HeaderName::Via),
                ("From", HeaderName::From),
                ("To", HeaderName::To),
            ]
        } else {
            &[("Via", HeaderName::Via)]
        };
        for &(label, n) in required {
            find(n).ok_or(ParseError::MissingHeader(label))?;
        }
        let call_id = find(HeaderName::CallId).ok_or(ParseError::MissingHeader("Call-ID"))?;
        let cid = value(call_id);
        if cid.is_empty() || cid.iter().any(|&c| is_lws(c)) {
            return Err(ParseError::BadValue("Call-ID"));
        }
        let call_id = call_id.value_span.clone();
        let cseq = find(HeaderName::CSeq).ok_or(ParseError::MissingHeader("CSeq"))?;
        let cseq = parse_cseq(value(cseq)).ok_or(ParseError::BadValue("CSeq"))?;

        let mut m = Message {
            start,
            start_span,
            headers,
            headers_end,
            body: body_start..body_start + body_len,
            call_id,
            cseq,
            content_length,
            top_via: Err(ParseError::MissingHeader("Via")),
            buf,
        };
        let top = m.via_spans().next().map(|(_, span)| span);
        if let Some(span) = top {
            m.top_via = super::via::parse_via(&m.buf, span);
        }
        Ok(m)
    }
}

fn parse_start_line(b: &[u8], span: Range<usize>) -> Result<StartLine, ParseError> {
    let line = b.get(span.clone()).unwrap_or_default();
    let base = span.start;
    if line.len() >= 4
        && line
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        let sp = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
        check_version(line.get(..sp).unwrap_or_default())?;
        let rest = line.get(sp + 1..).unwrap_or_default();
        let code = rest.get(..3).ok_or(ParseError::BadStartLine)?;
        let status = parse_decimal(code)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..=699).contains(c))
            .ok_or(ParseError::BadStartLine)?;
        let reason = match rest.get(3) {
            None => line.len()..line.len(),
            Some(b' ') => sp + 5..line.len(),
            Some(_) => return Err(ParseError::BadStartLine),
        };
        return Ok(StartLine::Response {
            status,
            reason: base + reason.start..base + reason.end,
        });
    }
    let word = |from: usize| {
        let is_sp = |c: &u8| *c == b' ' || *c == b'\t';
        let rest = line.get(from..).unwrap_or_default();
        let start = from + rest.iter().take_while(|c| is_sp(c)).count();
        let rest = line.get(start..).unwrap_or_default();
        start..start + rest.iter().take_while(|c| !is_sp(c)).count()
    };
    let method = word(0);
    let uri = word(method.end);
    let version = word(uri.end);
    let text = |r: &Range<usize>| line.get(r.clone()).unwrap_or_default();
    if method.is_empty()
        || !text(&method).iter().all(|&c| is_token(c))
        || memchr::memchr(b':', text(&uri)).is_none()
        || !word(version.end).is_empty()
    {
        return Err(ParseError::BadStartLine);
    }
    check_version(text(&version))?;
    Ok(StartLine::Request {
        method: base + method.start..base + method.end,
        uri: base + uri.start..base + uri.end,
    })
}

fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        Ok(())
    } else if v.len() > 4 && v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/")) {
        Err(ParseError::BadVersion)
    } else {
        Err(ParseError::BadStartLine)
    }
}

/// `CSeq: 4711 INVITE` (any LWS between the two parts).
pub(super) fn parse_cseq(v: &[u8]) -> Option<CSeq> {
    let digits = v.iter().take_while(|c| c.is_ascii_digit()).count();
    let seq = u32::try_from(parse_decimal(v.get(..digits)?)?).ok()?;
    let rest = v.get(digits..)?;
    let method = rest.get(trim_range(rest))?;
    if method.is_empty() || !rest.first().is_some_and(|&c| is_lws(c)) {
        return None;
    }
    method.iter().all(|&c| is_token(c)).then_some(())?;
    Some(CSeq {
        seq,
        method: Method::from_token(method),
    })
}

pub(crate) fn header_name(name: &[u8]) -> HeaderName {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    if is(b"via") || is(b"v") {
        HeaderName::Via
    } else if is(b"call-id") || is(b"i") {
        HeaderName::CallId
    } else if is(b"cseq") {
        HeaderName::CSeq
    } else if is(b"from") || is(b"f") {
        HeaderName::From
    } else if is(b"to") || is(b"t") {
        HeaderName::To
    } else if is(b"max-forwards") {
        HeaderName::MaxForwards
    } else if is(b"route") {
        HeaderName::Route
    } else if is(b"record-route") {
        HeaderName::RecordRoute
    } else if is(b"contact") || is(b"m") {
        HeaderName::Contact
    } else if is(b"content-length") || is(b"l") {
        HeaderName::ContentLength
    } else if is(b"content-type") || is(b"c") {
        HeaderName::ContentType
    } else {
        HeaderName::Other
    }
}

/// The long form of a compact header name (RFC 3261 §7.3.3 and later RFCs); other names unchanged.
pub(super) fn expand_compact(name: &[u8]) -> &[u8] {
    let [c] = name else { return name };
    match c.to_ascii_lowercase() {
        b'v' => b"Via",
        b'i' => b"Call-ID",
        b'f' => b"From",
        b't' => b"To",
        b'm' => b"Contact",
        b'l' => b"Content-Length",
        b'c' => b"Content-Type",
        b'k' => b"Supported",
        b's' => b"Subject",
        b'e' => b"Content-Encoding",
        b'o' => b"Event",
        b'r' => b"Refer-To",
        b'b' => b"Referred-By",
        b'u' => b"Allow-Events",
        b'x' => b"Session-Expires",
        b'y' => b"Identity",
        _ => name,
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
