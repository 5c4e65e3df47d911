//! Output by splicing: collect edits against the received bytes, then write once.
use super::{Message, Source};
use bytes::Bytes;

/// Edits on a received message. Offsets refer to the original buffer; `finish` applies them in order
/// in one pass into a fresh buffer sized once.
pub struct Editor<'m> {
    _msg: &'m Message,
}

impl<'m> Editor<'m> {
    pub fn new(_msg: &'m Message) -> Editor<'m> {
        todo!()
    }
    /// Inserts `Via: <value>` as the first header (our Via goes on top).
    pub fn push_via(&mut self, _value: &[u8]) -> &mut Self {
        todo!()
    }
    /// Removes the top Via value (only that value if the line holds several).
    pub fn pop_via(&mut self) -> &mut Self {
        todo!()
    }
    /// On the top Via: add `received=<ip>` when the source IP differs from sent-by (RFC 3261 §18.2.1),
    /// and fill `rport=<port>` when a bare `rport` was given (RFC 3581).
    pub fn stamp_top_via(&mut self, _src: Source) -> &mut Self {
        todo!()
    }
    pub fn set_request_uri(&mut self, _uri: &[u8]) -> &mut Self {
        todo!()
    }
    /// Sets Max-Forwards (replacing the value, or adding the header when absent).
    pub fn set_max_forwards(&mut self, _n: u32) -> &mut Self {
        todo!()
    }
    /// Removes the first `n` Route values (whole lines or values inside a comma list).
    pub fn pop_routes(&mut self, _n: usize) -> &mut Self {
        todo!()
    }
    /// Inserts `Record-Route: <value>` above every existing Record-Route (or after our Via when none).
    /// Called twice, the second call's value ends up on top.
    pub fn push_record_route(&mut self, _value: &[u8]) -> &mut Self {
        todo!()
    }
    /// Adds `Content-Length: <body len>` if the header is absent (needed when forwarding to TCP).
    pub fn ensure_content_length(&mut self) -> &mut Self {
        todo!()
    }
    /// Adds an arbitrary header before the blank line.
    pub fn append_header(&mut self, _name: &[u8], _value: &[u8]) -> &mut Self {
        todo!()
    }
    /// Applies the edits and returns the new message bytes.
    pub fn finish(&mut self) -> Bytes {
        todo!()
    }
}
