//! The SIP codec on the call path: byte offsets into the received `Bytes`, typed access only to the
//! headers the proxy needs, output by splicing. Bodies are never touched.
//!
//! CONTRACT (the proxy is written against these names; keep them):
//! - [`Limits`], [`ParseError`], [`frame_len`] (TCP framing), [`Message::parse`].
//! - Read access on [`Message`]: start line, typed headers, any header by name (compact forms too).
//! - [`Editor`]: splice edits (Via push/pop, Request-URI, Max-Forwards, Route pop, Record-Route push,
//!   received/rport on the top Via, Content-Length) and produce new `Bytes` in one pass.
//! - [`build`]: messages the proxy originates itself (responses, ACK for non-2xx, CANCEL).
//!
//! This module imports nothing from the rest of the crate.

use bytes::Bytes;
use std::net::IpAddr;
use std::ops::Range;

mod access;
pub mod build;
mod edit;
mod message;
pub mod salvage;
mod scan;
pub mod strict;
#[cfg(test)]
mod tests_oracle;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_rfc4475;
mod text;
mod uri;
mod via;

pub use edit::Editor;
pub use message::{HeaderField, Message};
pub use scan::frame_len;
pub use uri::{Uri, UriScheme};

/// Size limits checked before (and while) parsing, so hostile input cannot make us work or allocate much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message (start line + headers + body) we accept, in bytes. Default 65 535.
    pub max_message_bytes: usize,
    /// Most header fields (after folding is undone, before comma splitting). Default 128.
    pub max_headers: usize,
    /// Longest single line (start line or one physical header line), in bytes. Default 8 192.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_535,
            max_headers: 128,
            max_line_bytes: 8_192,
        }
    }
}

/// Why a message was refused. `Display` is a short human sentence used in logs and in 400 reason text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message of {0} bytes exceeds the size limit")]
    TooLarge(usize),
    #[error("more than the limit of header fields")]
    TooManyHeaders,
    #[error("line longer than the limit")]
    LineTooLong,
    #[error("incomplete message")]
    Incomplete,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("malformed header on line {0}")]
    BadHeader(usize),
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    #[error("malformed {0} header")]
    BadValue(&'static str),
    #[error("Content-Length disagrees with the body")]
    BadContentLength,
}

/// A SIP method. Unknown methods are kept as `Other` (their text is in the start line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Update,
    Info,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other,
}

impl Method {
    /// Parses a method token (case-sensitive, as RFC 3261 says). Any other valid token is `Other`.
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"INFO" => Method::Info,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => Method::Other,
        }
    }
}

/// The header names the proxy reads. Everything else is `Other` and is only ever copied.
/// Compact forms map here too: v=Via, i=Call-ID, f=From, t=To, m=Contact, l=Content-Length,
/// c=Content-Type, k=Supported, s=Subject, e=Content-Encoding, o=Event, r=Refer-To, b=Referred-By,
/// u=Allow-Events, x=Session-Expires, y=Identity (the ones without a variant here are `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    MaxForwards,
    Route,
    RecordRoute,
    CallId,
    CSeq,
    From,
    To,
    Contact,
    ContentLength,
    ContentType,
    Other,
}

impl HeaderName {
    /// Case-insensitive lookup of a header name, compact forms included.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        message::header_name(name)
    }
}

/// Transport token of a Via (`SIP/2.0/UDP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViaTransport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
    Other,
}

/// One Via value (a line may hold several, comma-separated: each is one `Via`).
/// Slices borrow from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: ViaTransport,
    /// sent-by host as written (IPv6 keeps its brackets).
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// The `branch` parameter, if any.
    pub branch: Option<&'a [u8]>,
    pub received: Option<&'a [u8]>,
    /// `None`: no rport param; `Some(None)`: bare `;rport`; `Some(Some(p))`: `;rport=p`.
    pub rport: Option<Option<u16>>,
    /// Byte range of this value within the message buffer (used by the editor).
    pub span: Range<usize>,
}

/// CSeq: sequence number and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// Everything about the source of a received message that the editor needs for `received`/`rport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub ip: IpAddr,
    pub port: u16,
}

/// Convenience: the `Bytes` of a message and a sub-range, without copying.
pub fn slice(buf: &Bytes, r: Range<usize>) -> Bytes {
    buf.slice(r)
}
