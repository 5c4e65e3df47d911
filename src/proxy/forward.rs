//! Building what the proxy forwards: our Via, Record-Route (double when the two sides differ, RFC
//! 5658), loose-route processing of Route headers we own, and the next hop of an in-dialog request.

use super::call::Forwarded;
use crate::config::Proto;
use crate::sip::{Editor, Message, Source, Uri};
use crate::transport::{ConnId, Destination};
use std::net::{IpAddr, SocketAddr};

/// Our own addresses, per transport (what goes into Via and Record-Route).
#[derive(Debug, Clone, Copy, Default)]
pub struct Local {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

impl Local {
    pub fn addr(&self, proto: Proto) -> Option<SocketAddr> {
        match proto {
            Proto::Udp => self.udp,
            Proto::Tcp => self.tcp,
            Proto::Tls => self.tls,
        }
    }

    /// Our address for `proto`, else any of ours (a TLS target reached without a TLS listener).
    fn any_addr(&self, proto: Proto) -> Option<SocketAddr> {
        self.addr(proto).or(self.udp).or(self.tcp).or(self.tls)
    }

    /// `SIP/2.0/UDP 127.0.0.1:5060;branch=...;rport`
    pub fn via(&self, proto: Proto, branch: &str) -> Vec<u8> {
        // Built by hand, not with format!: three of these per call (INVITE, ACK, BYE).
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(b"SIP/2.0/");
        out.extend_from_slice(proto.via_token().as_bytes());
        out.push(b' ');
        if let Some(a) = self.any_addr(proto) {
            push_host_port(&mut out, a);
        }
        out.extend_from_slice(b";branch=");
        out.extend_from_slice(branch.as_bytes());
        out.extend_from_slice(b";rport");
        out
    }

    /// `<sip:127.0.0.1:5060;transport=udp;lr>`, with a flow token naming the caller's TCP or TLS
    /// connection when `flow` is given, so requests toward the caller reuse that connection.
    pub fn record_route(&self, proto: Proto, flow: Option<ConnId>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"<sip:");
        if let Some(c) = flow {
            out.push(b'f');
            out.extend_from_slice(itoa::Buffer::new().format(c.raw()).as_bytes());
            out.push(b'@');
        }
        if let Some(a) = self.any_addr(proto) {
            push_host_port(&mut out, a);
        }
        out.extend_from_slice(b";transport=");
        out.extend_from_slice(proto.as_str().as_bytes());
        out.extend_from_slice(b";lr>");
        out
    }

    /// Whether a URI names this proxy (host is one of our addresses, port ours or absent and 5060).
    pub fn is_us(&self, uri: &Uri<'_>) -> bool {
        let Some(host) = uri.host.and_then(parse_host) else {
            return false;
        };
        [self.udp, self.tcp, self.tls]
            .into_iter()
            .flatten()
            .any(|a| {
                let ip_ok = a.ip() == host || (a.ip().is_unspecified() && host.is_loopback());
                ip_ok && uri.port.unwrap_or(5060) == a.port()
            })
    }
}

/// How an incoming request arrived.
#[derive(Debug, Clone, Copy)]
pub struct Inbound {
    pub proto: Proto,
    pub src: SocketAddr,
    pub conn: Option<ConnId>,
}

impl Inbound {
    pub fn source(&self) -> Source {
        Source {
            ip: self.src.ip(),
            port: self.src.port(),
        }
    }
    pub fn reply_to(&self) -> Destination {
        Destination {
            proto: self.proto,
            addr: self.src,
            conn: self.conn,
        }
    }
}

/// [`host_port`] appended to `out`, IPv4 without the fmt machinery.
fn push_host_port(out: &mut Vec<u8>, a: SocketAddr) {
    let mut num = itoa::Buffer::new();
    match a {
        SocketAddr::V4(v4) => {
            for (i, o) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(num.format(o).as_bytes());
            }
        }
        SocketAddr::V6(v6) => out.extend_from_slice(format!("[{}]", v6.ip()).as_bytes()),
    }
    out.push(b':');
    out.extend_from_slice(num.format(a.port()).as_bytes());
}

pub fn host_port(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// An IP literal host (`127.0.0.1`, `[::1]`); names are not resolved (no DNS on the call path).
pub fn parse_host(h: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(h).ok()?;
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// The INVITE for one attempt (RFC 3261 §16.6): stamp the caller's Via, our Via on top, Max-Forwards
/// decremented, our Route entries removed, Request-URI for the target, Record-Route. `out` is the
/// transport toward the target (its own, or TCP for an INVITE too large for a datagram).
#[allow(clippy::too_many_arguments)]
pub fn invite_for_attempt(
    orig: &Message,
    inb: &Inbound,
    local: &Local,
    target: &crate::routing::Target,
    out: Proto,
    branch: &str,
    max_forwards: u32,
    routes_popped: usize,
) -> Forwarded {
    let ruri = target.request_uri_for(orig.request_uri().unwrap_or_default());
    let via = local.via(out, branch);
    let mut e = Editor::new(orig);
    e.stamp_top_via(inb.source())
        .push_via(&via)
        .set_max_forwards(max_forwards)
        .pop_routes(routes_popped)
        .set_request_uri(&ruri);
    if inb.proto == out && inb.proto == Proto::Udp {
        e.push_record_route(&local.record_route(out, None));
    } else {
        // Double Record-Route (RFC 5658): the caller-facing entry below, the target-facing one on top.
        let flow = if inb.proto.is_stream() {
            inb.conn
        } else {
            None
        };
        e.push_record_route(&local.record_route(inb.proto, flow));
        e.push_record_route(&local.record_route(out, None));
    }
    if out.is_stream() {
        e.ensure_content_length();
    }
    Forwarded {
        bytes: e.finish(),
        request_uri: ruri.into(),
        via: via.into(),
    }
}

/// How many leading Route entries name us, and the last of them (its transport and flow token
/// decide how to reach the next hop of an in-dialog request).
pub fn our_routes<'m>(
    msg: &'m Message,
    local: &Local,
) -> (usize, Option<std::borrow::Cow<'m, [u8]>>) {
    let mut n = 0;
    let mut last = None;
    for r in msg.routes() {
        let ours = Message::addr_spec(&r)
            .and_then(Uri::parse)
            .is_some_and(|u| local.is_us(&u));
        if !ours {
            break;
        }
        n += 1;
        last = Some(r);
    }
    (n, last)
}

/// Where an in-dialog request goes after our Route entries are removed: the next Route, else the
/// Request-URI. Transport: the URI's `transport` param, else the one of our last Route entry (RFC
/// 5658), else UDP. Returns None when the host is not an IP literal.
pub fn next_hop(msg: &Message, popped: usize, last_ours: Option<&[u8]>) -> Option<Destination> {
    let routes = msg.routes();
    let uri_bytes: Vec<u8> = match routes.get(popped) {
        Some(r) => Message::addr_spec(r)?.to_vec(),
        None => msg.request_uri()?.to_vec(),
    };
    let uri = Uri::parse(&uri_bytes)?;
    let ip = parse_host(uri.host?)?;
    let ours = last_ours.and_then(Message::addr_spec).and_then(Uri::parse);
    let proto_of = |u: &Uri<'_>| match u.param(b"transport") {
        Some(Some(t)) if t.eq_ignore_ascii_case(b"tcp") => Some(Proto::Tcp),
        Some(Some(t)) if t.eq_ignore_ascii_case(b"tls") => Some(Proto::Tls),
        Some(Some(t)) if t.eq_ignore_ascii_case(b"udp") => Some(Proto::Udp),
        // sips: means TLS (RFC 3261 §26.2.2) when no transport parameter says otherwise.
        _ if u.scheme == crate::sip::UriScheme::Sips => Some(Proto::Tls),
        _ => None,
    };
    let proto = proto_of(&uri)
        .or_else(|| ours.as_ref().and_then(proto_of))
        .unwrap_or(Proto::Udp);
    let conn = ours
        .as_ref()
        .and_then(|u| u.user)
        .and_then(|u| u.strip_prefix(b"f"))
        .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u64>().ok())
        .map(ConnId::from_raw)
        .filter(|_| proto.is_stream());
    Some(Destination {
        proto,
        addr: SocketAddr::new(ip, uri.port.unwrap_or(default_port(proto))),
        conn,
    })
}

/// SIP's default port: 5061 for TLS, 5060 otherwise (RFC 3261 §19.1.2).
fn default_port(proto: Proto) -> u16 {
    if proto == Proto::Tls { 5061 } else { 5060 }
}

/// Where a response goes when no transaction knows it (RFC 3261 §18.2.2): the Via below ours,
/// its `received` and `rport` first. None when it cannot be addressed.
pub fn response_hop(msg: &Message) -> Option<Destination> {
    let vias = msg.vias().ok()?;
    let v = vias.get(1)?;
    let host = v.received.unwrap_or(v.host);
    let ip = parse_host(host)?;
    let port = match v.rport {
        Some(Some(p)) => p,
        _ => v
            .port
            .unwrap_or(if v.transport == crate::sip::ViaTransport::Tls {
                5061
            } else {
                5060
            }),
    };
    let proto = match v.transport {
        crate::sip::ViaTransport::Tcp => Proto::Tcp,
        crate::sip::ViaTransport::Tls => Proto::Tls,
        _ => Proto::Udp,
    };
    Some(Destination::new(proto, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_via_and_record_route_read_as_the_formatted_text() {
        for (udp, tcp) in [
            ("127.0.0.1:5060", "10.20.30.255:15061"),
            ("[::1]:5060", "[2001:db8::7]:65535"),
        ] {
            let local = Local {
                udp: Some(udp.parse().unwrap()),
                tcp: Some(tcp.parse().unwrap()),
                tls: None,
            };
            for proto in [Proto::Udp, Proto::Tcp, Proto::Tls] {
                let hp = host_port(local.any_addr(proto).unwrap());
                assert_eq!(
                    String::from_utf8(local.via(proto, "z9hG4bK-x")).unwrap(),
                    format!("SIP/2.0/{} {hp};branch=z9hG4bK-x;rport", proto.via_token())
                );
                assert_eq!(
                    String::from_utf8(local.record_route(proto, None)).unwrap(),
                    format!("<sip:{hp};transport={proto};lr>")
                );
                assert_eq!(
                    String::from_utf8(local.record_route(proto, Some(ConnId::from_raw(42))))
                        .unwrap(),
                    format!("<sip:f42@{hp};transport={proto};lr>")
                );
            }
        }
        assert_eq!(host_port("[::1]:5060".parse().unwrap()), "[::1]:5060");
        assert_eq!(host_port("1.2.3.4:9".parse().unwrap()), "1.2.3.4:9");
    }
}
