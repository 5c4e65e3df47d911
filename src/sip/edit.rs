//! Output by splicing: collect edits against the received bytes, then write once.
//!
//! Every operation addresses the message as it was received (not the result of earlier edits), so
//! calls commute except where they insert at the same place: `push_via` and `push_record_route`
//! stack (the later call ends on top), header appends queue (the later call ends below).
use super::text::list_items;
use super::{HeaderName, Message, Source};
use bytes::{Bytes, BytesMut};
use std::net::IpAddr;
use std::ops::Range;

/// Which operation made an edit; singleton operations replace their earlier edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PushVia,
    PushRecordRoute,
    Splice,
    Append,
    RequestUri,
    MaxForwards,
    ContentLength,
}

#[derive(Debug, Clone)]
struct Edit {
    range: Range<usize>,
    text: Vec<u8>,
    kind: Kind,
    seq: usize,
}

impl Edit {
    /// Order of application: by position; at one insertion point pushes (newest first) come
    /// before appends (oldest first), and insertions before a replacement starting there.
    fn key(&self) -> (usize, usize, u8, isize) {
        let seq = isize::try_from(self.seq).unwrap_or(isize::MAX);
        let (class, order) = match self.kind {
            Kind::PushVia => (0, -seq),
            Kind::PushRecordRoute => (1, -seq),
            _ => (2, seq),
        };
        (self.range.start, self.range.end, class, order)
    }
}

/// Edits on a received message. Offsets refer to the original buffer; `finish` applies them in order
/// in one pass into a fresh buffer sized once. Edits overlapping an earlier-applied one (such as
/// `stamp_top_via` together with `pop_via`) are dropped rather than producing garbage.
pub struct Editor<'m> {
    msg: &'m Message,
    edits: Vec<Edit>,
    /// Call counter, so ties at one insertion point follow call order even after replacements.
    calls: usize,
}

fn header_line(name: &[u8], value: &[u8]) -> Vec<u8> {
    [name, b": ", value, b"\r\n"].concat()
}

impl<'m> Editor<'m> {
    pub fn new(msg: &'m Message) -> Editor<'m> {
        Editor {
            msg,
            edits: Vec::with_capacity(8),
            calls: 0,
        }
    }

    fn add(&mut self, kind: Kind, range: Range<usize>, text: Vec<u8>) -> &mut Self {
        if matches!(
            kind,
            Kind::RequestUri | Kind::MaxForwards | Kind::ContentLength
        ) {
            self.edits.retain(|e| e.kind != kind);
        }
        let seq = self.calls;
        self.calls += 1;
        self.edits.push(Edit {
            range,
            text,
            kind,
            seq,
        });
        self
    }

    /// Inserts `Via: <value>` as the first header (our Via goes on top).
    pub fn push_via(&mut self, value: &[u8]) -> &mut Self {
        let at = self.msg.start_line_span().end;
        self.add(Kind::PushVia, at..at, header_line(b"Via", value))
    }

    /// Removes the top Via value (only that value if the line holds several).
    pub fn pop_via(&mut self) -> &mut Self {
        let mut spans = self.msg.via_spans();
        let Some((field, first)) = spans.next() else {
            return self;
        };
        let range = match spans.next() {
            // The value, its comma and the space up to the next value on the same line.
            Some((f, second)) if f == field => first.start..second.start,
            _ => match self.msg.headers().get(field) {
                Some(h) => h.line_span.clone(),
                None => return self,
            },
        };
        self.add(Kind::Splice, range, Vec::new())
    }

    /// On the top Via: add `received=<ip>` when the source IP differs from sent-by (RFC 3261 §18.2.1),
    /// and fill `rport=<port>` when a bare `rport` was given (RFC 3581). With `rport` present,
    /// `received` is added even when sent-by matches. An existing `received` is overwritten.
    pub fn stamp_top_via(&mut self, src: Source) -> &mut Self {
        let Ok(via) = self.msg.top_via.clone() else {
            return self;
        };
        let buf = self.msg.bytes();
        let host = buf.get(via.host.clone()).unwrap_or_default();
        let host = host
            .strip_prefix(b"[")
            .and_then(|h| h.strip_suffix(b"]"))
            .unwrap_or(host);
        let literal = std::str::from_utf8(host)
            .ok()
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some((range, None)) = &via.rport {
            self.add(
                Kind::Splice,
                range.clone(),
                format!("rport={}", src.port).into_bytes(),
            );
        }
        if literal != Some(src.ip) || via.rport.is_some() {
            let ip = src.ip.to_string().into_bytes();
            match via.received {
                Some(r) => self.add(Kind::Splice, r, ip),
                None => {
                    let at = via.span.end;
                    self.add(Kind::Splice, at..at, [&b";received="[..], &ip].concat())
                }
            };
        }
        self
    }

    /// Replaces the Request-URI (requests only; a response is left as is).
    pub fn set_request_uri(&mut self, uri: &[u8]) -> &mut Self {
        match self.msg.request_uri_span() {
            Some(r) => self.add(Kind::RequestUri, r, uri.to_vec()),
            None => self,
        }
    }

    /// Sets Max-Forwards (replacing the value, or adding the header when absent).
    pub fn set_max_forwards(&mut self, n: u32) -> &mut Self {
        let value = n.to_string().into_bytes();
        match self.msg.fields(HeaderName::MaxForwards).next() {
            Some(h) => self.add(Kind::MaxForwards, h.value_span.clone(), value),
            None => {
                let at = self.msg.headers_end();
                self.add(
                    Kind::MaxForwards,
                    at..at,
                    header_line(b"Max-Forwards", &value),
                )
            }
        }
    }

    /// Removes the first `n` Route values (whole lines or values inside a comma list).
    pub fn pop_routes(&mut self, n: usize) -> &mut Self {
        let mut left = n;
        let msg = self.msg;
        for h in msg.fields(HeaderName::Route) {
            if left == 0 {
                break;
            }
            let value = msg.raw_value(h);
            let count = list_items(value).count();
            if count <= left {
                left -= count;
                self.add(Kind::Splice, h.line_span.clone(), Vec::new());
            } else {
                // Cut from the first value to the start of the first value that stays.
                let keep = list_items(value).nth(left).map_or(0, |r| r.start);
                let start = h.value_span.start;
                self.add(Kind::Splice, start..start + keep, Vec::new());
                left = 0;
            }
        }
        self
    }

    /// Inserts `Record-Route: <value>` above every existing Record-Route (or after our Via when none:
    /// at the top of the header section, below any pushed Via). Called twice, the second call's value
    /// ends up on top.
    pub fn push_record_route(&mut self, value: &[u8]) -> &mut Self {
        let at = match self.msg.fields(HeaderName::RecordRoute).next() {
            Some(h) => h.line_span.start,
            None => self.msg.start_line_span().end,
        };
        self.add(
            Kind::PushRecordRoute,
            at..at,
            header_line(b"Record-Route", value),
        )
    }

    /// Adds `Content-Length: <body len>` if the header is absent (needed when forwarding to TCP).
    pub fn ensure_content_length(&mut self) -> &mut Self {
        if self.msg.content_length().is_some() {
            return self;
        }
        let at = self.msg.headers_end();
        let len = self.msg.body().len().to_string();
        self.add(
            Kind::ContentLength,
            at..at,
            header_line(b"Content-Length", len.as_bytes()),
        )
    }

    /// Adds an arbitrary header before the blank line.
    pub fn append_header(&mut self, name: &[u8], value: &[u8]) -> &mut Self {
        let at = self.msg.headers_end();
        self.add(Kind::Append, at..at, header_line(name, value))
    }

    /// Applies the edits and returns the new message bytes: from the start line to the end of the
    /// body (leading CRLFs and bytes beyond Content-Length are not forwarded). May be called again.
    pub fn finish(&mut self) -> Bytes {
        let buf = self.msg.bytes();
        let (start, end) = (self.msg.start_line_span().start, self.msg.body_span().end);
        self.edits.sort_by_key(Edit::key);
        let extra: usize = self.edits.iter().map(|e| e.text.len()).sum();
        let mut out = BytesMut::with_capacity(end.saturating_sub(start).saturating_add(extra));
        let mut cursor = start;
        for e in &self.edits {
            if e.range.start < cursor || e.range.end > end || e.range.start > e.range.end {
                continue;
            }
            out.extend_from_slice(buf.get(cursor..e.range.start).unwrap_or_default());
            out.extend_from_slice(&e.text);
            cursor = e.range.end;
        }
        out.extend_from_slice(buf.get(cursor..end).unwrap_or_default());
        out.freeze()
    }
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
