//! Messages the proxy originates: responses it generates, ACK for non-2xx, CANCEL.
use super::Message;
use bytes::Bytes;

/// A response to `req` (RFC 3261 §8.2.6): all Via values copied in order, From, To (with `to_tag` added
/// when the request's To has no tag and the code is above 100), Call-ID, CSeq, `Content-Length: 0`,
/// plus `extra` header lines (each `Name: value`, no CRLF), e.g. `Retry-After: 5`, `Server: sosrouter`.
pub fn response(
    _req: &Message,
    _code: u16,
    _reason: &str,
    _to_tag: Option<&[u8]>,
    _extra: &[&[u8]],
) -> Bytes {
    todo!()
}

/// The ACK a client transaction sends for a non-2xx final response (RFC 3261 §17.1.1.3): from the
/// INVITE we sent (`invite`, our Via on top), Request-URI, top Via only, Call-ID, From, Route of the
/// INVITE; To from the response (with its tag); CSeq number of the INVITE with method ACK; Max-Forwards 70.
pub fn ack_for_non2xx(_invite: &Message, _response: &Message) -> Bytes {
    todo!()
}

/// CANCEL for an INVITE we sent (RFC 3261 §9.1): same Request-URI, top Via only (same branch),
/// Call-ID, From, To (as in the INVITE), Route; CSeq number with method CANCEL; Max-Forwards 70.
pub fn cancel(_invite: &Message) -> Bytes {
    todo!()
}

/// The reason phrase RFC 3261 gives for a code, or "Unknown".
pub fn reason_phrase(_code: u16) -> &'static str {
    todo!()
}
