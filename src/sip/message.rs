//! Parsing a whole message into offsets. (STUB: signatures are the contract; bodies to be written.)
use super::{CSeq, HeaderName, Limits, Method, ParseError, Via};
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

/// A parsed SIP message: the received bytes and offsets into them. Cheap to clone (Bytes + Vec).
#[derive(Debug, Clone)]
pub struct Message {
    // private fields at the implementer's choice
    _buf: Bytes,
}

impl Message {
    /// Parses one complete message (a UDP datagram, or a TCP frame cut by [`super::frame_len`]).
    /// Checks limits first. Requests need Via, Call-ID, CSeq, From, To; responses need Via, Call-ID, CSeq.
    /// A Content-Length smaller than the body truncates the body (UDP, RFC 3261 §18.3); larger is an error.
    pub fn parse(_buf: Bytes, _limits: &Limits) -> Result<Message, ParseError> {
        todo!()
    }
    /// The whole message as received.
    pub fn bytes(&self) -> &Bytes {
        todo!()
    }
    pub fn is_request(&self) -> bool {
        todo!()
    }
    /// Request method (None for responses).
    pub fn method(&self) -> Option<Method> {
        todo!()
    }
    /// Request method as written (for `Other`).
    pub fn method_bytes(&self) -> Option<&[u8]> {
        todo!()
    }
    /// Request-URI bytes (None for responses).
    pub fn request_uri(&self) -> Option<&[u8]> {
        todo!()
    }
    pub fn request_uri_span(&self) -> Option<Range<usize>> {
        todo!()
    }
    /// Response status code (None for requests).
    pub fn status(&self) -> Option<u16> {
        todo!()
    }
    pub fn reason(&self) -> Option<&[u8]> {
        todo!()
    }
    /// All header fields in order.
    pub fn headers(&self) -> &[HeaderField] {
        todo!()
    }
    /// Byte range of the start line including its CRLF.
    pub fn start_line_span(&self) -> Range<usize> {
        todo!()
    }
    /// Offset of the blank line that ends the headers (where new headers may be appended).
    pub fn headers_end(&self) -> usize {
        todo!()
    }
    /// Value of the first header with this (known) name, unfolded only if it was folded (then copied).
    pub fn header(&self, _name: HeaderName) -> Option<std::borrow::Cow<'_, [u8]>> {
        todo!()
    }
    /// Value of the first header whose name equals `name` case-insensitively, compact forms honoured
    /// (so `header_named(b"Call-ID")` finds `i:`). For headers like Geolocation, P-Asserted-Identity.
    pub fn header_named(&self, _name: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        todo!()
    }
    /// Every value of headers with this name, comma-separated lists split (quotes and <> respected).
    pub fn header_values(&self, _name: HeaderName) -> Vec<std::borrow::Cow<'_, [u8]>> {
        todo!()
    }
    /// All Via values, top first, comma lists split.
    pub fn vias(&self) -> Result<Vec<Via<'_>>, ParseError> {
        todo!()
    }
    /// The top Via.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        todo!()
    }
    pub fn call_id(&self) -> &[u8] {
        todo!()
    }
    pub fn cseq(&self) -> CSeq {
        todo!()
    }
    /// Max-Forwards value; None when the header is absent. Err if present but not a number.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        todo!()
    }
    pub fn from_tag(&self) -> Option<&[u8]> {
        todo!()
    }
    pub fn to_tag(&self) -> Option<&[u8]> {
        todo!()
    }
    /// The URI inside a From/To/Contact/Route-like name-addr value (`"A" <sip:a@b>;tag=x` -> `sip:a@b`).
    pub fn addr_spec(_value: &[u8]) -> Option<&[u8]> {
        todo!()
    }
    /// Route values in order (comma lists split), each a name-addr such as `<sip:p1;lr>`.
    pub fn routes(&self) -> Vec<std::borrow::Cow<'_, [u8]>> {
        todo!()
    }
    pub fn body(&self) -> &[u8] {
        todo!()
    }
    pub fn body_span(&self) -> Range<usize> {
        todo!()
    }
    /// Content-Length as written, if present.
    pub fn content_length(&self) -> Option<usize> {
        todo!()
    }
}

pub(crate) fn header_name(_name: &[u8]) -> HeaderName {
    todo!()
}
