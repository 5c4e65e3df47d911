//! The cheap check before the full parse: TCP framing by Content-Length, size limits.
use super::{Limits, ParseError};

/// Length of the first complete message at the start of `buf` (a TCP stream), skipping nothing.
/// `Ok(None)`: need more bytes. Errors when the headers exceed `max_message_bytes` without ending,
/// when Content-Length is missing or bad (required on stream transports), or when the total is too large.
/// Leading CRLFs (keep-alives, RFC 5626) are reported as `Ok(Some(n))` frames of only CR/LF bytes,
/// which the caller skips.
pub fn frame_len(_buf: &[u8], _limits: &Limits) -> Result<Option<usize>, ParseError> {
    todo!()
}
