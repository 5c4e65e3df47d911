//! Messages shared by the benches: what the testbed's SIPp caller and answering points send
//! (testbeds/scenarios/caller.xml and psap.xml), with realistic values filled in.

#![allow(dead_code)] // each bench uses part of this

/// The SDP offer of the testbed caller.
const OFFER: &str = "v=0\r\n\
o=caller 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=emergency call\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

/// The SDP answer of an answering point.
const ANSWER: &str = "v=0\r\n\
o=psap 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6002 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// An emergency INVITE as the caller sends it to the proxy, with Request-URI `ruri`
/// (`sip:911@127.0.0.1:5060` or `urn:service:sos`).
pub fn invite(ruri: &str) -> Vec<u8> {
    format!(
        "INVITE {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4211-1-0\r\n\
Max-Forwards: 70\r\n\
From: <sip:+16175550123@carrier.example;user=phone>;tag=4211SOS1\r\n\
To: <{ruri}>\r\n\
Call-ID: 1-4211@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:+16175550123@127.0.0.1:5061;transport=UDP>\r\n\
P-Asserted-Identity: <sip:+16175550123@carrier.example;user=phone>\r\n\
Geolocation: <cid:loc-1@carrier.example>, <geo:42.3601,-71.0589;u=35>\r\n\
Geolocation-Routing: yes\r\n\
Priority: emergency\r\n\
Resource-Priority: esnet.1\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Subject: sosrouter testbed call 1\r\n\
User-Agent: sosrouter-testbed-caller\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\
\r\n{OFFER}",
        OFFER.len()
    )
    .into_bytes()
}

/// A response from an answering point to the proxied INVITE: two Vias (the proxy's on top), the
/// Record-Route copied; `code` 180 (no body) or 200 (with an SDP answer).
pub fn response(code: u16) -> Vec<u8> {
    let (reason, body) = match code {
        200 => ("OK", ANSWER),
        _ => ("Ringing", ""),
    };
    let ctype = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    format!(
        "SIP/2.0 {code} {reason}\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sr-7f3a9c01;rport=5060;received=127.0.0.1\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4211-1-0;received=127.0.0.1\r\n\
Record-Route: <sip:127.0.0.1:5060;transport=udp;lr>\r\n\
From: <sip:+16175550123@carrier.example;user=phone>;tag=4211SOS1\r\n\
To: <sip:911@127.0.0.1:5071>;tag=5123PSAP1\r\n\
Call-ID: 1-4211@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:127.0.0.1:5071;transport=UDP>\r\n\
{ctype}Content-Length: {}\r\n\
\r\n{body}",
        body.len()
    )
    .into_bytes()
}
