//! Read access on a parsed [`Message`]: start line, typed headers, any header by name.
use super::message::{StartLine, expand_compact};
use super::text::{find_unquoted, list_items, param, trim, unfold};
use super::via::parse_via;
use super::{CSeq, HeaderField, HeaderName, Message, Method, ParseError, Via};
use bytes::Bytes;
use std::borrow::Cow;
use std::ops::Range;

impl Message {
    /// The whole message as received.
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// Request method (None for responses).
    pub fn method(&self) -> Option<Method> {
        self.method_bytes().map(Method::from_token)
    }
    /// Request method as written (for `Other`).
    pub fn method_bytes(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Request { method, .. } => self.buf.get(method.clone()),
            StartLine::Response { .. } => None,
        }
    }
    /// Request-URI bytes (None for responses).
    pub fn request_uri(&self) -> Option<&[u8]> {
        self.buf.get(self.request_uri_span()?)
    }
    pub fn request_uri_span(&self) -> Option<Range<usize>> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri.clone()),
            StartLine::Response { .. } => None,
        }
    }
    /// Response status code (None for requests).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }
    /// Reason phrase as written (may be empty); None for requests.
    pub fn reason(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Response { reason, .. } => self.buf.get(reason.clone()),
            StartLine::Request { .. } => None,
        }
    }
    /// All header fields in order.
    pub fn headers(&self) -> &[HeaderField] {
        &self.headers
    }
    /// Byte range of the start line including its CRLF.
    pub fn start_line_span(&self) -> Range<usize> {
        self.start_span.clone()
    }
    /// Offset of the blank line that ends the headers (where new headers may be appended).
    pub fn headers_end(&self) -> usize {
        self.headers_end
    }

    /// The raw (possibly folded) value of a field.
    pub(super) fn raw_value(&self, h: &HeaderField) -> &[u8] {
        self.buf.get(h.value_span.clone()).unwrap_or_default()
    }
    pub(super) fn fields(&self, name: HeaderName) -> impl Iterator<Item = &HeaderField> {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// Value of the first header with this (known) name, unfolded only if it was folded (then copied).
    /// `HeaderName::Other` matches nothing: use [`Message::header_named`] for those.
    pub fn header(&self, name: HeaderName) -> Option<Cow<'_, [u8]>> {
        if name == HeaderName::Other {
            return None;
        }
        self.fields(name).next().map(|h| unfold(self.raw_value(h)))
    }
    /// Value of the first header whose name equals `name` case-insensitively, compact forms honoured
    /// (so `header_named(b"Call-ID")` finds `i:`). For headers like Geolocation, P-Asserted-Identity.
    pub fn header_named(&self, name: &[u8]) -> Option<Cow<'_, [u8]>> {
        let want = expand_compact(name);
        self.headers
            .iter()
            .find(|h| {
                let n = self.buf.get(h.name_span.clone()).unwrap_or_default();
                expand_compact(n).eq_ignore_ascii_case(want)
            })
            .map(|h| unfold(self.raw_value(h)))
    }
    /// Every value of headers with this name, comma-separated lists split (quotes and <> respected).
    pub fn header_values(&self, name: HeaderName) -> Vec<Cow<'_, [u8]>> {
        let mut out = Vec::new();
        if name == HeaderName::Other {
            return out;
        }
        for h in self.fields(name) {
            match unfold(self.raw_value(h)) {
                Cow::Borrowed(v) => {
                    out.extend(list_items(v).filter_map(|r| v.get(r)).map(Cow::Borrowed))
                }
                Cow::Owned(v) => out.extend(
                    list_items(&v)
                        .filter_map(|r| v.get(r))
                        .map(|s| Cow::Owned(s.to_vec())),
                ),
            }
        }
        out
    }
    /// Ranges (absolute) of every Via value, top first, with the index of the field holding it.
    pub(super) fn via_spans(&self) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
        self.headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.name == HeaderName::Via)
            .flat_map(move |(i, h)| {
                let base = h.value_span.start;
                list_items(self.raw_value(h)).map(move |r| (i, base + r.start..base + r.end))
            })
    }
    /// All Via values, top first, comma lists split.
    pub fn vias(&self) -> Result<Vec<Via<'_>>, ParseError> {
        self.via_spans()
            .map(|(_, span)| parse_via(&self.buf, span).map(|p| p.view(&self.buf)))
            .collect()
    }
    /// The top Via.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        self.top_via
            .as_ref()
            .map(|v| v.view(&self.buf))
            .map_err(Clone::clone)
    }
    pub fn call_id(&self) -> &[u8] {
        self.buf.get(self.call_id.clone()).unwrap_or_default()
    }
    pub fn cseq(&self) -> CSeq {
        self.cseq
    }
    /// Max-Forwards value; None when the header is absent. Err if present but not a number.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        let Some(h) = self.fields(HeaderName::MaxForwards).next() else {
            return Ok(None);
        };
        super::text::parse_decimal(self.raw_value(h))
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or(ParseError::BadValue("Max-Forwards"))
    }
    pub fn from_tag(&self) -> Option<&[u8]> {
        self.tag_of(HeaderName::From)
    }
    pub fn to_tag(&self) -> Option<&[u8]> {
        self.tag_of(HeaderName::To)
    }
    fn tag_of(&self, name: HeaderName) -> Option<&[u8]> {
        let v = self.raw_value(self.fields(name).next()?);
        param(header_params(v), b"tag")?.filter(|t| !t.is_empty())
    }
    /// The URI inside a From/To/Contact/Route-like name-addr value (`"A" <sip:a@b>;tag=x` -> `sip:a@b`).
    pub fn addr_spec(value: &[u8]) -> Option<&[u8]> {
        let v = trim(value);
        let uri = match find_unquoted(v, b'<') {
            Some(lt) => {
                let rest = v.get(lt + 1..)?;
                rest.get(..memchr::memchr(b'>', rest)?)?
            }
            None => {
                let end = v.iter().position(|&c| c == b';' || super::text::is_lws(c));
                v.get(..end.unwrap_or(v.len()))?
            }
        };
        let uri = trim(uri);
        (!uri.is_empty()).then_some(uri)
    }
    /// Route values in order (comma lists split), each a name-addr such as `<sip:p1;lr>`.
    pub fn routes(&self) -> Vec<Cow<'_, [u8]>> {
        self.header_values(HeaderName::Route)
    }
    pub fn body(&self) -> &[u8] {
        self.buf.get(self.body.clone()).unwrap_or_default()
    }
    pub fn body_span(&self) -> Range<usize> {
        self.body.clone()
    }
    /// Content-Length as written, if present.
    pub fn content_length(&self) -> Option<usize> {
        self.content_length
    }
}

/// The header parameters of a name-addr / addr-spec value (the part after `>` or after the URI).
pub(super) fn header_params(v: &[u8]) -> &[u8] {
    let after = match find_unquoted(v, b'<') {
        Some(lt) => {
            let rest = v.get(lt..).unwrap_or_default();
            memchr::memchr(b'>', rest).and_then(|gt| rest.get(gt + 1..))
        }
        None => memchr::memchr(b';', v).and_then(|s| v.get(s..)),
    };
    after.unwrap_or_default()
}
