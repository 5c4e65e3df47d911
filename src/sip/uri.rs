//! URIs the proxy looks into: sip/sips, tel, urn (service URNs), IPv6 hosts.
use super::text::{param, parse_decimal};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriScheme {
    Sip,
    Sips,
    Tel,
    Urn,
    Other,
}

/// A parsed view of a URI. Slices borrow the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: UriScheme,
    /// sip: user part (before '@', without any `:password`), tel: the number, urn: the whole NSS
    /// (`service:sos.fire`).
    pub user: Option<&'a [u8]>,
    /// sip: host as written (IPv6 in brackets); None for tel/urn.
    pub host: Option<&'a [u8]>,
    pub port: Option<u16>,
    /// The `;params` section including its first `;` (without headers `?...`), for [`Uri::param`].
    pub params: &'a [u8],
    pub user_span: Option<Range<usize>>,
}

impl<'a> Uri<'a> {
    /// Parses a URI (no surrounding `<>`). Returns None when it is not a URI we can read.
    /// A well-formed URI of another scheme (`http:`) is `Some` with scheme `Other` and no parts.
    pub fn parse(s: &'a [u8]) -> Option<Uri<'a>> {
        let colon = memchr::memchr(b':', s)?;
        let scheme_text = s.get(..colon)?;
        let valid_scheme = scheme_text.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme_text
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c));
        if !valid_scheme {
            return None;
        }
        let is = |n: &[u8]| scheme_text.eq_ignore_ascii_case(n);
        let rest_start = colon + 1;
        let rest = s.get(rest_start..)?;
        let mut uri = Uri {
            scheme: UriScheme::Other,
            user: None,
            host: None,
            port: None,
            params: &[],
            user_span: None,
        };
        if is(b"sip") || is(b"sips") {
            uri.scheme = if is(b"sip") {
                UriScheme::Sip
            } else {
                UriScheme::Sips
            };
            let rest = rest.get(..memchr::memchr(b'?', rest).unwrap_or(rest.len()))?;
            let mut host_start = 0;
            if let Some(at) = memchr::memrchr(b'@', rest) {
                let userinfo = rest.get(..at)?;
                let user_len = memchr::memchr(b':', userinfo).unwrap_or(userinfo.len());
                uri.user = Some(userinfo.get(..user_len)?);
                uri.user_span = Some(rest_start..rest_start + user_len);
                host_start = at + 1;
            }
            let hostport = rest.get(host_start..)?;
            let params_at = memchr::memchr(b';', hostport).unwrap_or(hostport.len());
            uri.params = hostport.get(params_at..)?;
            let hostport = hostport.get(..params_at)?;
            let host_len = if hostport.first() == Some(&b'[') {
                memchr::memchr(b']', hostport)? + 1
            } else {
                memchr::memchr(b':', hostport).unwrap_or(hostport.len())
            };
            let host = hostport.get(..host_len)?;
            let host_ok = if host.first() == Some(&b'[') {
                host.len() > 2
                    && host
                        .get(1..host.len() - 1)?
                        .iter()
                        .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
            } else {
                !host.is_empty()
                    && host
                        .iter()
                        .all(|&c| c.is_ascii_alphanumeric() || b"-._".contains(&c))
            };
            if !host_ok {
                return None;
            }
            uri.host = Some(host);
            match hostport.get(host_len..)? {
                [] => {}
                [b':', port @ ..] => uri.port = Some(u16::try_from(parse_decimal(port)?).ok()?),
                _ => return None,
            }
        } else if is(b"tel") || is(b"urn") {
            uri.scheme = if is(b"tel") {
                UriScheme::Tel
            } else {
                UriScheme::Urn
            };
            // A service URN has no parameters; its NSS is taken whole.
            let end = if uri.scheme == UriScheme::Tel {
                memchr::memchr(b';', rest).unwrap_or(rest.len())
            } else {
                rest.len()
            };
            let user = rest.get(..end)?;
            if user.is_empty() {
                return None;
            }
            uri.user = Some(user);
            uri.user_span = Some(rest_start..rest_start + end);
            uri.params = rest.get(end..)?;
        }
        Some(uri)
    }
    /// A URI parameter's value (`;transport=tcp` -> Some(Some(b"tcp")), `;lr` -> Some(None)).
    /// Names compare case-insensitively.
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        param(self.params, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_with_user_port_params() {
        let u = Uri::parse(b"sip:alice:pw@atlanta.com:5070;transport=TCP;lr?subject=x").unwrap();
        assert_eq!(u.scheme, UriScheme::Sip);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.user_span, Some(4..9));
        assert_eq!(u.host, Some(&b"atlanta.com"[..]));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params, b";transport=TCP;lr");
        assert_eq!(u.param(b"TRANSPORT"), Some(Some(&b"TCP"[..])));
        assert_eq!(u.param(b"lr"), Some(None));
        assert_eq!(u.param(b"maddr"), None);
    }

    #[test]
    fn sips_ipv6_no_user() {
        let u = Uri::parse(b"SIPS:[2001:db8::1]:5061").unwrap();
        assert_eq!(u.scheme, UriScheme::Sips);
        assert_eq!(u.user, None);
        assert_eq!(u.host, Some(&b"[2001:db8::1]"[..]));
        assert_eq!(u.port, Some(5061));
        let u = Uri::parse(b"sip:[2001:db8::1]").unwrap();
        assert_eq!(u.port, None);
    }

    #[test]
    fn tel_and_urn() {
        let u = Uri::parse(b"tel:+19785386180;phone-context=+1").unwrap();
        assert_eq!(u.scheme, UriScheme::Tel);
        assert_eq!(u.user, Some(&b"+19785386180"[..]));
        assert_eq!(u.host, None);
        assert_eq!(u.param(b"phone-context"), Some(Some(&b"+1"[..])));
        let u = Uri::parse(b"urn:service:sos.fire").unwrap();
        assert_eq!(u.scheme, UriScheme::Urn);
        assert_eq!(u.user, Some(&b"service:sos.fire"[..]));
        assert_eq!(u.user_span, Some(4..20));
        assert_eq!(
            Uri::parse(b"urn:service:sos").unwrap().user,
            Some(&b"service:sos"[..])
        );
    }

    #[test]
    fn other_and_invalid() {
        assert_eq!(Uri::parse(b"http://x").unwrap().scheme, UriScheme::Other);
        for bad in [
            &b"nocolon"[..],
            b":x",
            b"1sip:x",
            b"sip:",
            b"sip:user@",
            b"sip:h:99999",
            b"sip:h:",
            b"sip:[::1",
            b"sip:[]",
            b"sip:h x",
            b"tel:",
        ] {
            assert_eq!(Uri::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
