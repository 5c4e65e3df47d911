//! The cheap check before the full parse: TCP framing by Content-Length, size limits.
use super::text::{parse_decimal, trim};
use super::{Limits, ParseError};
use std::ops::Range;

/// One physical line: `content` excludes the line ending, `next` is the offset after its LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    pub content: Range<usize>,
    pub next: usize,
}

/// The line starting at `pos`. LF-only endings are accepted (RFC 4475 asks for leniency); a line
/// without LF is `Incomplete`, or `LineTooLong` if it is already over the limit.
pub(super) fn line_at(buf: &[u8], pos: usize, max_line: usize) -> Result<Line, ParseError> {
    let rest = buf.get(pos..).ok_or(ParseError::Incomplete)?;
    let Some(lf) = memchr::memchr(b'\n', rest) else {
        return Err(if rest.len() > max_line {
            ParseError::LineTooLong
        } else {
            ParseError::Incomplete
        });
    };
    if lf >= max_line {
        return Err(ParseError::LineTooLong);
    }
    let len = if lf > 0 && rest.get(lf - 1) == Some(&b'\r') {
        lf - 1
    } else {
        lf
    };
    Ok(Line {
        content: pos..pos + len,
        next: pos + lf + 1,
    })
}

/// Number of leading CR/LF bytes (keep-alives, or stray line ends before a start line).
pub(super) fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Length of the first complete message at the start of `buf` (a TCP stream), skipping nothing.
/// `Ok(None)`: need more bytes. Errors when the headers exceed `max_message_bytes` without ending,
/// when Content-Length is missing or bad (required on stream transports), or when the total is too large.
/// Leading CRLFs (keep-alives, RFC 5626) are reported as `Ok(Some(n))` frames of only CR/LF bytes,
/// which the caller skips.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ParseError> {
    let keepalive = leading_crlf(buf);
    if keepalive > 0 {
        return Ok(Some(keepalive));
    }
    // Only the window we would ever accept is scanned, so a peer trickling an endless header
    // section costs at most max_message_bytes of searching per call.
    let window = buf.get(..limits.max_message_bytes).unwrap_or(buf);
    let mut pos = 0;
    let mut content_length = None;
    let mut first = true;
    // Set while reading a Content-Length header whose first line held no value (it was folded).
    let mut cl_folded = false;
    // Header count and line length are checked here too, so a stream is refused before a
    // message that the parser would refuse anyway has been buffered whole.
    let mut headers = 0usize;
    let body_start = loop {
        let Some(lf) = window.get(pos..).and_then(|r| memchr::memchr(b'\n', r)) else {
            if buf.len() > limits.max_message_bytes {
                return Err(ParseError::TooLarge(buf.len()));
            }
            if window.len() - pos > limits.max_line_bytes {
                return Err(ParseError::LineTooLong);
            }
            return Ok(None);
        };
        if lf >= limits.max_line_bytes {
            return Err(ParseError::LineTooLong);
        }
        let line = window.get(pos..pos + lf).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += lf + 1;
        if line.is_empty() {
            break pos;
        }
        // The start line may contain a colon (sip:...), so it is never taken for a header.
        if std::mem::take(&mut first) {
            continue;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            headers += 1;
            if headers > limits.max_headers {
                return Err(ParseError::TooManyHeaders);
            }
        }
        if cl_folded && continuation {
            content_length = Some(decimal(trim(line))?);
            cl_folded = false;
        } else if content_length.is_none() && !cl_folded && !continuation {
            match content_length_value(line) {
                Some([]) => cl_folded = true,
                Some(v) => content_length = Some(decimal(v)?),
                None => {}
            }
        }
    };
    if cl_folded {
        return Err(ParseError::BadValue("Content-Length"));
    }
    let cl = content_length.ok_or(ParseError::MissingHeader("Content-Length"))?;
    let total = body_start
        .checked_add(cl)
        .ok_or(ParseError::TooLarge(usize::MAX))?;
    if total > limits.max_message_bytes {
        return Err(ParseError::TooLarge(total));
    }
    Ok((buf.len() >= total).then_some(total))
}

/// The trimmed value of a header line if it is a Content-Length (or `l:`) header.
fn content_length_value(line: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', line)?;
    let name = trim(line.get(..colon)?);
    let is_cl = name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l");
    is_cl.then(|| trim(line.get(colon + 1..).unwrap_or_default()))
}

fn decimal(v: &[u8]) -> Result<usize, ParseError> {
    parse_decimal(v)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(ParseError::BadValue("Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_message_bytes: 200,
        max_headers: 10,
        max_line_bytes: 100,
    };

    #[test]
    fn lines_crlf_and_lf() {
        let b = b"ab\r\ncd\nx";
        assert_eq!(
            line_at(b, 0, 10),
            Ok(Line {
                content: 0..2,
                next: 4
            })
        );
        assert_eq!(
            line_at(b, 4, 10),
            Ok(Line {
                content: 4..6,
                next: 7
            })
        );
        assert_eq!(line_at(b, 7, 10), Err(ParseError::Incomplete));
        assert_eq!(line_at(b, 99, 10), Err(ParseError::Incomplete));
        assert_eq!(line_at(b"abcdef\n", 0, 3), Err(ParseError::LineTooLong));
        assert_eq!(line_at(b"abcdef", 0, 3), Err(ParseError::LineTooLong));
    }

    #[test]
    fn frame_complete_and_partial() {
        let m = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 4\r\n\r\nbody";
        assert_eq!(frame_len(m, &L), Ok(Some(m.len())));
        for cut in 0..m.len() {
            assert_eq!(frame_len(&m[..cut], &L), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn frame_two_back_to_back() {
        let one = b"BYE sip:a SIP/2.0\r\nl: 2\r\n\r\nhi";
        let mut two = one.to_vec();
        two.extend_from_slice(b"SIP/2.0 200 OK\r\ncontent-LENGTH :0\r\n\r\n");
        assert_eq!(frame_len(&two, &L), Ok(Some(one.len())));
        assert_eq!(
            frame_len(&two[one.len()..], &L),
            Ok(Some(two.len() - one.len()))
        );
    }

    #[test]
    fn frame_keepalives() {
        assert_eq!(frame_len(b"\r\n\r\nINVITE", &L), Ok(Some(4)));
        assert_eq!(frame_len(b"\r\n", &L), Ok(Some(2)));
        assert_eq!(frame_len(b"", &L), Ok(None));
    }

    #[test]
    fn frame_lf_only() {
        let m = b"BYE sip:a SIP/2.0\nContent-Length: 1\n\nx";
        assert_eq!(frame_len(m, &L), Ok(Some(m.len())));
    }

    #[test]
    fn frame_folded_content_length() {
        let m = b"BYE sip:a SIP/2.0\r\nContent-Length:\r\n  3\r\nVia: x\r\n\r\nabc";
        assert_eq!(frame_len(m, &L), Ok(Some(m.len())));
        let empty = b"BYE sip:a SIP/2.0\r\nContent-Length:\r\nVia: x\r\n\r\n";
        assert_eq!(
            frame_len(empty, &L),
            Err(ParseError::BadValue("Content-Length"))
        );
    }

    #[test]
    fn frame_errors() {
        let no_cl = b"BYE sip:a SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(
            frame_len(no_cl, &L),
            Err(ParseError::MissingHeader("Content-Length"))
        );
        let bad = b"BYE sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(
            frame_len(bad, &L),
            Err(ParseError::BadValue("Content-Length"))
        );
        let huge = b"BYE sip:a SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(
            frame_len(huge, &L),
            Err(ParseError::BadValue("Content-Length"))
        );
        let big = b"BYE sip:a SIP/2.0\r\nContent-Length: 500\r\n\r\n";
        assert_eq!(frame_len(big, &L), Err(ParseError::TooLarge(542)));
        let endless = vec![b'a'; 201];
        assert_eq!(frame_len(&endless, &L), Err(ParseError::TooLarge(201)));
        let max = b"BYE sip:a SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(frame_len(max, &L), Err(ParseError::TooLarge(usize::MAX)));
    }
}
