//! One Via value: `SIP/2.0/UDP host:port;branch=...;received=...;rport`. Parsed into absolute
//! ranges so the editor can splice inside it; [`Via`] is the borrowed view the proxy reads.
use super::text::{is_lws, is_token, parse_decimal};
use super::{ParseError, Via, ViaTransport};
use std::ops::Range;

const BAD: ParseError = ParseError::BadValue("Via");

/// A Via value as ranges into the message buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ViaParts {
    pub transport: ViaTransport,
    pub host: Range<usize>,
    pub port: Option<u16>,
    pub branch: Option<Range<usize>>,
    pub received: Option<Range<usize>>,
    /// The whole `rport` / `rport=N` parameter (without `;`) and its port.
    pub rport: Option<(Range<usize>, Option<u16>)>,
    pub span: Range<usize>,
}

impl ViaParts {
    pub fn view<'a>(&self, buf: &'a [u8]) -> Via<'a> {
        let get = |r: &Range<usize>| buf.get(r.clone()).unwrap_or_default();
        Via {
            transport: self.transport,
            host: get(&self.host),
            port: self.port,
            branch: self.branch.as_ref().map(get),
            received: self.received.as_ref().map(get),
            rport: self.rport.as_ref().map(|(_, p)| *p),
            span: self.span.clone(),
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    i: usize,
    end: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        (self.i < self.end)
            .then(|| self.buf.get(self.i).copied())
            .flatten()
    }
    fn ws(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(is_lws) {
            self.i += 1;
        }
        self.i - start
    }
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> Range<usize> {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        start..self.i
    }
    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        self.ws();
        if self.peek() != Some(c) {
            return Err(BAD);
        }
        self.i += 1;
        self.ws();
        Ok(())
    }
    fn text(&self, r: &Range<usize>) -> &[u8] {
        self.buf.get(r.clone()).unwrap_or_default()
    }
    /// A bracketed IPv6 reference including its brackets.
    fn bracketed(&mut self) -> Result<Range<usize>, ParseError> {
        let start = self.i;
        self.i += 1;
        self.take_while(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
        if self.peek() != Some(b']') {
            return Err(BAD);
        }
        self.i += 1;
        Ok(start..self.i)
    }
    fn port(&mut self) -> Result<u16, ParseError> {
        let r = self.take_while(|c| c.is_ascii_digit());
        parse_decimal(self.text(&r))
            .and_then(|p| u16::try_from(p).ok())
            .ok_or(BAD)
    }
}

fn is_host_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_'
}

fn is_value_char(c: u8) -> bool {
    is_token(c) || c == b':'
}

/// Parses the Via value at `span` of `buf`.
pub(super) fn parse_via(buf: &[u8], span: Range<usize>) -> Result<ViaParts, ParseError> {
    let mut c = Cursor {
        buf,
        i: span.start,
        end: span.end.min(buf.len()),
    };
    c.ws();
    let name = c.take_while(is_token);
    c.expect(b'/')?;
    let version = c.take_while(is_token);
    if !c.text(&name).eq_ignore_ascii_case(b"SIP") || c.text(&version) != b"2.0" {
        return Err(BAD);
    }
    c.expect(b'/')?;
    let t = c.take_while(is_token);
    let transport = transport(c.text(&t)).ok_or(BAD)?;
    if c.ws() == 0 {
        return Err(BAD);
    }
    let host = if c.peek() == Some(b'[') {
        c.bracketed()?
    } else {
        c.take_while(is_host_char)
    };
    if host.is_empty() {
        return Err(BAD);
    }
    c.ws();
    let mut port = None;
    if c.peek() == Some(b':') {
        c.expect(b':')?;
        port = Some(c.port()?);
    }
    let mut v = ViaParts {
        transport,
        host,
        port,
        branch: None,
        received: None,
        rport: None,
        span,
    };
    loop {
        c.ws();
        match c.peek() {
            None => break,
            Some(b';') => c.expect(b';')?,
            Some(_) => return Err(BAD),
        }
        let name = c.take_while(is_token);
        if name.is_empty() {
            return Err(BAD);
        }
        c.ws();
        let value = if c.peek() == Some(b'=') {
            c.expect(b'=')?;
            let r = match c.peek() {
                Some(b'[') => c.bracketed()?,
                Some(b'"') => quoted(&mut c)?,
                _ => c.take_while(is_value_char),
            };
            if r.is_empty() {
                return Err(BAD);
            }
            Some(r)
        } else {
            None
        };
        let n = c.text(&name);
        if n.eq_ignore_ascii_case(b"branch") && v.branch.is_none() {
            v.branch = Some(value.ok_or(BAD)?);
        } else if n.eq_ignore_ascii_case(b"received") && v.received.is_none() {
            v.received = Some(value.ok_or(BAD)?);
        } else if n.eq_ignore_ascii_case(b"rport") && v.rport.is_none() {
            let p = match &value {
                Some(r) => Some(
                    parse_decimal(c.text(r))
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or(BAD)?,
                ),
                None => None,
            };
            let end = value.map_or(name.end, |r| r.end);
            v.rport = Some((name.start..end, p));
        }
    }
    Ok(v)
}

fn quoted(c: &mut Cursor<'_>) -> Result<Range<usize>, ParseError> {
    let start = c.i;
    c.i += 1;
    let mut escaped = false;
    while let Some(b) = c.peek() {
        c.i += 1;
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            return Ok(start..c.i);
        }
    }
    Err(BAD)
}

fn transport(t: &[u8]) -> Option<ViaTransport> {
    if t.is_empty() {
        return None;
    }
    let is = |s: &[u8]| t.eq_ignore_ascii_case(s);
    Some(if is(b"UDP") {
        ViaTransport::Udp
    } else if is(b"TCP") {
        ViaTransport::Tcp
    } else if is(b"TLS") {
        ViaTransport::Tls
    } else if is(b"SCTP") {
        ViaTransport::Sctp
    } else if is(b"WS") {
        ViaTransport::Ws
    } else if is(b"WSS") {
        ViaTransport::Wss
    } else {
        ViaTransport::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(s: &[u8]) -> Result<Via<'_>, ParseError> {
        parse_via(s, 0..s.len()).map(|p| p.view(s))
    }

    #[test]
    fn plain_udp_with_branch() {
        let v = via(b"SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds").unwrap();
        assert_eq!(v.transport, ViaTransport::Udp);
        assert_eq!(v.host, b"pc33.example.com");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch, Some(&b"z9hG4bK776asdhds"[..]));
        assert_eq!(v.rport, None);
        assert_eq!(v.received, None);
    }

    #[test]
    fn spaces_case_and_params() {
        let v = via(b"sip / 2.0 / tcp  10.0.0.1 ; RPORT ; Received=1.2.3.4;BRANCH=z9hG4bKx;ttl=3")
            .unwrap();
        assert_eq!(v.transport, ViaTransport::Tcp);
        assert_eq!(v.host, b"10.0.0.1");
        assert_eq!(v.port, None);
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.received, Some(&b"1.2.3.4"[..]));
        assert_eq!(v.branch, Some(&b"z9hG4bKx"[..]));
    }

    #[test]
    fn ipv6_and_rport_value() {
        let v = via(b"SIP/2.0/WSS [2001:db8::1]:5061;rport=7000;received=2001:db8::9").unwrap();
        assert_eq!(v.transport, ViaTransport::Wss);
        assert_eq!(v.host, b"[2001:db8::1]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.rport, Some(Some(7000)));
        assert_eq!(v.received, Some(&b"2001:db8::9"[..]));
    }

    #[test]
    fn folded_value_parses_in_place() {
        let s = b"SIP/2.0/UDP\r\n host;branch=z9hG4bKa";
        assert_eq!(via(s).unwrap().host, b"host");
    }

    #[test]
    fn malformed_vias() {
        for s in [
            &b""[..],
            b"SIP/2.0/UDP",
            b"SIP/3.0/UDP h",
            b"SIP/2.0/ h",
            b"SIP/2.0/UDP h:99999",
            b"SIP/2.0/UDP h:",
            b"SIP/2.0/UDP [::1",
            b"SIP/2.0/UDP h;branch",
            b"SIP/2.0/UDP h;rport=x",
            b"SIP/2.0/UDP h junk",
            b"SIP/2.0/UDP h;=v",
            b"SIP/2.0/UDP h;x=\"open",
        ] {
            assert_eq!(via(s), Err(BAD), "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn rport_range_covers_param() {
        let s = b"SIP/2.0/UDP h;rport=12;branch=b";
        let p = parse_via(s, 0..s.len()).unwrap();
        assert_eq!(&s[p.rport.unwrap().0], b"rport=12");
    }
}
