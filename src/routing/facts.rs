//! Reading the facts routes match on from a parsed INVITE.

use super::CallFacts;
use crate::sip::{Message, Uri, UriScheme};
use std::net::IpAddr;

/// Headers the caller number is read from, most trusted first: P-Asserted-Identity is set by the
/// originating network (RFC 3325), From by the caller's device.
const CALLER_HEADERS: [&[u8]; 2] = [b"P-Asserted-Identity", b"From"];

/// `keep`: the lower-case names of the headers to copy (None: every header). Only the headers a
/// route names can change the selection, and copying all of them was two allocations per header
/// on every call (6.5% of a proxied call's instructions under callgrind).
pub(super) fn from_message(msg: &Message, source: IpAddr, keep: Option<&[String]>) -> CallFacts {
    let caller = CALLER_HEADERS.iter().find_map(|name| {
        let value = msg.header_named(name)?;
        let spec = Message::addr_spec(&value)?;
        let uri = Uri::parse(spec)?;
        match uri.scheme {
            UriScheme::Sip | UriScheme::Sips | UriScheme::Tel => {
                let user = uri.user?.split(|&b| b == b';').next()?;
                (!user.is_empty()).then(|| String::from_utf8_lossy(user).into_owned())
            }
            UriScheme::Urn | UriScheme::Other => None,
        }
    });
    let buf = msg.bytes();
    let wanted = |name: &[u8]| {
        keep.is_none_or(|names| {
            names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
        })
    };
    let headers = msg
        .headers()
        .iter()
        .filter(|h| wanted(&buf[h.name_span.clone()]))
        .map(|h| {
            let name = String::from_utf8_lossy(&buf[h.name_span.clone()]).to_ascii_lowercase();
            (name, unfold(&buf[h.value_span.clone()]))
        })
        .collect();
    CallFacts {
        request_uri: msg.request_uri().unwrap_or_default().to_vec(),
        caller,
        source,
        headers,
    }
}

/// Undoes header folding (CRLF followed by whitespace becomes one space), RFC 3261 §7.3.1.
fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'\r' || value[i] == b'\n' {
            while i < value.len() && value[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push(b' ');
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    out
}
