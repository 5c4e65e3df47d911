//! The small value syntaxes of the rules file. Each parser returns a message fit for an operator.

use super::Proto;
use std::net::{IpAddr, SocketAddr};

/// SIP's default port when a URI names none (RFC 3261 §19.1.2).
pub const DEFAULT_SIP_PORT: u16 = 5060;

/// One entry of a code list: `"486"` (that code) or `"5xx"` (the class), as an inclusive range.
pub fn parse_code(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{s}` is not a SIP status code (100-699) or a class like \"5xx\"");
    let b = s.as_bytes();
    if b.len() != 3 || !(b'1'..=b'6').contains(&b[0]) {
        return Err(bad());
    }
    if b[1..].eq_ignore_ascii_case(b"xx") {
        let lo = u16::from(b[0] - b'0') * 100;
        return Ok((lo, lo + 99));
    }
    match s.parse::<u16>() {
        Ok(code) if b[1].is_ascii_digit() && b[2].is_ascii_digit() => Ok((code, code)),
        _ => Err(bad()),
    }
}

pub fn parse_transport(s: &str) -> Result<Proto, String> {
    match s {
        "udp" => Ok(Proto::Udp),
        "tcp" => Ok(Proto::Tcp),
        "tls" => Ok(Proto::Tls),
        _ => Err(format!(
            "transport `{s}` is not \"udp\", \"tcp\" or \"tls\""
        )),
    }
}

/// `udp:127.0.0.1:5060` or `tcp:[::1]:5060`.
pub fn parse_listen(s: &str) -> Result<(Proto, SocketAddr), String> {
    let (t, addr) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not transport:ip:port (e.g. \"udp:127.0.0.1:5060\")"))?;
    let transport = parse_transport(t)?;
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|_| format!("`{addr}` is not ip:port (IPv6 in brackets: \"udp:[::1]:5060\")"))?;
    Ok((transport, addr))
}

/// SIP's default port over TLS when a `sips:` URI names none (RFC 3261 §19.1.2).
pub const DEFAULT_SIPS_PORT: u16 = 5061;

/// A target's `sip:[user@]ip[:port]` or `sips:[user@]ip[:port]`. The host must be an IP literal:
/// resolving names would put DNS, a dependency that can fail for every target at once, on the
/// emergency call path. Use [`is_sips`] to tell the schemes apart.
pub fn parse_sip_uri(s: &str) -> Result<(Option<String>, SocketAddr), String> {
    let (rest, default_port) = if let Some(r) = s.strip_prefix("sip:") {
        (r, DEFAULT_SIP_PORT)
    } else if let Some(r) = s.strip_prefix("sips:") {
        (r, DEFAULT_SIPS_PORT)
    } else {
        return Err(format!(
            "`{s}` is not a sip: or sips: URI (e.g. \"sip:192.0.2.10:5060\")"
        ));
    };
    if rest.contains([';', '?', '>', ' ']) {
        return Err(format!(
            "`{s}`: URI parameters and headers are not allowed here; write sip:ip:port"
        ));
    }
    let (user, hostport) = match rest.split_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some(_) => return Err(format!("`{s}`: empty user part before '@'")),
        None => (None, rest),
    };
    let addr = parse_hostport(hostport, default_port)
        .ok_or_else(|| format!("`{s}`: host must be an IP literal (v4, or v6 in brackets), optionally with :port; no DNS names on the emergency call path"))?;
    Ok((user, addr))
}

/// Whether a target URI uses the `sips:` scheme (then only TLS may carry it).
pub fn is_sips(uri: &str) -> bool {
    uri.starts_with("sips:")
}

fn parse_hostport(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return (addr.port() != 0).then_some(addr);
    }
    let host = s
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(s);
    let ip = host.parse::<IpAddr>().ok()?;
    // A bare IPv6 without brackets would make a port ambiguous: require brackets.
    (ip.is_ipv4() || host.len() != s.len()).then_some(SocketAddr::new(ip, default_port))
}

/// A `tel:` target number: `+` and 1-15 digits (E.164), or a local number of digits only.
pub fn parse_tel(s: &str) -> Result<String, String> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{s}` is not a phone number: write it in E.164 form, e.g. \"+19785386180\" (no spaces or dashes)"
        ));
    }
    Ok(s.to_string())
}

/// A dialled number or user to match exactly (`911`, `+15555550100`).
pub fn parse_dialled(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.contains(|c: char| c.is_whitespace() || matches!(c, '@' | ';' | ':' | '<' | '>'))
    {
        return Err(format!(
            "`{s}` is not a number or user part (write only the user part, e.g. \"911\")"
        ));
    }
    Ok(s.to_string())
}

/// `urn:service:sos` or a sub-service `urn:service:sos.fire`; returned in lower case (RFC 5031 service
/// names compare case-insensitively).
pub fn parse_service_urn(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let labels = lower.strip_prefix("urn:service:").unwrap_or("");
    let ok_label =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if labels.split('.').all(ok_label) {
        Ok(lower)
    } else {
        Err(format!(
            "`{s}` is not a service URN like \"urn:service:sos\" or \"urn:service:sos.fire\""
        ))
    }
}

/// A header name: an RFC 3261 token.
pub fn parse_header_name(s: &str) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
    if !s.is_empty() && s.bytes().all(token) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("`{s}` is not a header name"))
    }
}

/// An address block of originating trunks: `192.0.2.0/24`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0-{max}"))?,
        };
        let cidr = Cidr { addr, prefix_len };
        if cidr.network() != addr {
            return Err(format!(
                "`{s}` has host bits set; did you mean {}/{prefix_len}?",
                cidr.network()
            ));
        }
        Ok(cidr)
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(self.prefix_len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(self.prefix_len)).into()),
        }
    }

    /// Whether `ip` lies in the block. An IPv4-mapped IPv6 source (`::ffff:192.0.2.1`, as a dual-stack
    /// socket reports it) is matched as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                u32::from(a) & mask32(self.prefix_len) == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.prefix_len) == u128::from(n)
            }
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}
