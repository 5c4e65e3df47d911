//! The requests a test call sends (INVITE with its SDP offer, ACK for a 2xx, BYE) and reading the
//! media address out of the answer. CANCEL and the ACK of a non-2xx come from `crate::sip::build`.

use crate::config::Proto;
use crate::sip::{HeaderName, Message};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Prefix of the Via branch of every test-call request (RFC 3261 magic cookie first).
pub const BRANCH_PREFIX: &str = "z9hG4bK-sostest-";

/// Identifiers of one test call; random so a stray or forged message cannot answer another call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub call_id: String,
    pub from_tag: String,
    /// Branch of the INVITE (and its CANCEL).
    pub branch: String,
    /// RTP synchronisation source of our packets.
    pub ssrc: u32,
}

impl Ids {
    pub fn random() -> Ids {
        Ids {
            call_id: format!("sostest-{:016x}", rand::random::<u64>()),
            from_tag: format!("{:08x}", rand::random::<u32>()),
            branch: new_branch(),
            ssrc: rand::random::<u32>(),
        }
    }
}

pub fn new_branch() -> String {
    format!("{BRANCH_PREFIX}{:016x}", rand::random::<u64>())
}

fn host_port(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

fn via(transport: Proto, local: SocketAddr, branch: &str) -> String {
    let t = transport.via_token();
    format!("SIP/2.0/{t} {};branch={branch};rport", host_port(local))
}

fn contact(transport: Proto, local: SocketAddr) -> String {
    format!("<sip:sosrouter@{};transport={transport}>", host_port(local))
}

/// The SDP offer: one PCMU audio stream, sendrecv, on our RTP socket.
pub fn sdp_offer(rtp: SocketAddr, session: u64) -> String {
    let family = if rtp.is_ipv4() { "IP4" } else { "IP6" };
    let ip = rtp.ip();
    format!(
        "v=0\r\no=sosrouter {session} {session} IN {family} {ip}\r\ns=sosrouter test call\r\n\
         c=IN {family} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        rtp.port()
    )
}

/// What the INVITE needs besides the ids.
pub struct InviteParts<'a> {
    pub request_uri: &'a str,
    pub transport: Proto,
    pub local: SocketAddr,
    pub rtp: SocketAddr,
}

/// The test call's INVITE. To carries the Request-URI (the service URN, as for a real call).
pub fn invite(p: &InviteParts<'_>, ids: &Ids) -> String {
    let sdp = sdp_offer(p.rtp, u64::from(ids.ssrc));
    let mut m = String::with_capacity(600 + sdp.len());
    let _ = write!(
        m,
        "INVITE {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nTo: <{uri}>\r\n\
         From: <sip:sosrouter@{local}>;tag={tag}\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n\
         Contact: {contact}\r\nSubject: sosrouter test call\r\nUser-Agent: sosrouter\r\n\
         Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        uri = p.request_uri,
        via = via(p.transport, p.local, &ids.branch),
        local = host_port(p.local),
        tag = ids.from_tag,
        cid = ids.call_id,
        contact = contact(p.transport, p.local),
        len = sdp.len(),
    );
    m
}

/// An in-dialog request after a 2xx (RFC 3261 §12.2.1.1): ACK (CSeq 1) or BYE (CSeq 2), new branch,
/// Request-URI the answer's Contact (else the INVITE's), To with the answer's tag, Route = the
/// answer's Record-Route reversed. It is sent to the target's next hop like the INVITE (IP literals
/// only, no DNS; a next hop that did not Record-Route forwards by Request-URI).
pub fn in_dialog(
    method: &str,
    cseq: u32,
    invite: &Message,
    answer: &Message,
    branch: &str,
) -> Vec<u8> {
    let ruri = answer
        .header(HeaderName::Contact)
        .and_then(|c| Message::addr_spec(&c).map(<[u8]>::to_vec))
        .unwrap_or_else(|| invite.request_uri().unwrap_or_default().to_vec());
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&ruri);
    out.extend_from_slice(b" SIP/2.0\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    // Our Via with a new branch: the INVITE's Via has sent-by and transport right.
    if let Some(v) = invite.header_values(HeaderName::Via).first() {
        let v = String::from_utf8_lossy(v);
        let head = v.split(";branch=").next().unwrap_or(&v);
        line(b"Via", format!("{head};branch={branch};rport").as_bytes());
    }
    line(b"Max-Forwards", b"70");
    let copy = |name| answer.header(name).map(|v| v.into_owned());
    if let Some(to) = copy(HeaderName::To) {
        line(b"To", &to);
    }
    if let Some(from) = invite.header(HeaderName::From) {
        line(b"From", &from);
    }
    line(b"Call-ID", invite.call_id());
    line(b"CSeq", format!("{cseq} {method}").as_bytes());
    let mut rr = answer.header_values(HeaderName::RecordRoute);
    rr.reverse();
    for r in rr {
        line(b"Route", &r);
    }
    line(b"Content-Length", b"0");
    out.extend_from_slice(b"\r\n");
    out
}

/// Where the answer wants media: `c=` (session or media level) and the first `m=audio` port.
/// `None` when the answer has no SDP, no audio stream, port 0 (stream refused) or a null address
/// (`0.0.0.0`, `::`: on hold).
pub fn answer_media(body: &[u8]) -> Option<SocketAddr> {
    enum Section {
        Session,
        Audio,
        Other,
    }
    let text = std::str::from_utf8(body).ok()?;
    let (mut section, mut session_c, mut media_c, mut port) = (Section::Session, None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // only the first audio stream counts
            }
            let mut f = m.split_ascii_whitespace();
            section = Section::Other;
            if f.next() == Some("audio") {
                section = Section::Audio;
                port = f
                    .next()
                    .and_then(|p| p.split('/').next()?.parse::<u16>().ok());
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .split_ascii_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse::<IpAddr>().ok());
            match section {
                Section::Session => session_c = ip,
                Section::Audio => media_c = ip,
                Section::Other => {}
            }
        }
    }
    let ip = media_c.or(session_c)?;
    let port = port.filter(|&p| p != 0)?;
    (!ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}
