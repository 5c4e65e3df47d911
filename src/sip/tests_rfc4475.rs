//! Messages from RFC 4475 (SIP torture tests) that a lenient proxy must read correctly.
use super::{CSeq, HeaderName, Limits, Message, Method, ViaTransport};
use bytes::Bytes;

fn crlf(s: &str) -> Bytes {
    Bytes::from(s.replace('\n', "\r\n"))
}

/// RFC 4475 §3.1.1.1 "wsinv": unusual whitespace, folding everywhere, compact forms.
const WSINV: &str = r#"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;rport;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
"#;

#[test]
fn wsinv() {
    let m = Message::parse(crlf(WSINV), &Limits::default()).unwrap();
    assert_eq!(
        m.request_uri(),
        Some(&b"sip:vivekg@chair-dnrc.example.com;unknownparam"[..])
    );
    assert_eq!(m.to_tag(), Some(&b"1918181833n"[..]));
    assert_eq!(m.from_tag(), Some(&b"98asjd8"[..]));
    assert_eq!(m.max_forwards(), Ok(Some(68)));
    assert_eq!(m.call_id(), b"wsinv.ndaksdj@192.0.2.1");
    assert_eq!(
        m.cseq(),
        CSeq {
            seq: 9,
            method: Method::Invite
        }
    );
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
    assert!(m.body().starts_with(b"v=0\r\n"));
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].host, vias[0].rport, vias[0].branch),
        (&b"192.0.2.2"[..], Some(None), Some(&b"390skdjuw"[..]))
    );
    assert_eq!(
        (vias[1].transport, vias[1].host),
        (ViaTransport::Tcp, &b"spindle.example.com"[..])
    );
    assert_eq!(vias[2].branch, Some(&b"z9hG4bK30239"[..]));
    assert_eq!(
        m.header_named(b"newfangledheader").as_deref(),
        Some(&b"newfangled value continued newfangled value"[..])
    );
    assert_eq!(m.header_named(b"Subject").as_deref(), Some(&b""[..]));
    let routes = m.routes();
    assert_eq!(
        Message::addr_spec(&routes[0]),
        Some(&b"sip:services.example.com;lr;unknownwith=value;unknown-no-value"[..])
    );
    let contact = m.header(HeaderName::Contact).unwrap();
    assert_eq!(
        Message::addr_spec(&contact),
        Some(&b"sip:jdrosen@example.com"[..])
    );
    assert_eq!(
        m.header(HeaderName::ContentType).as_deref(),
        Some(&b"application/sdp"[..])
    );
}

/// RFC 4475 §3.1.1.2 "intmeth": a method and URI using every allowed odd character.
const INTMETH: &str = r#"!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: "BEL:\ NUL:\  DEL:\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="работающий";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:﻿大停電
Content-Length: 0

"#;

#[test]
fn intmeth() {
    let m = Message::parse(crlf(INTMETH), &Limits::default()).unwrap();
    assert_eq!(m.method(), Some(Method::Other));
    assert_eq!(
        m.method_bytes(),
        Some(&b"!interesting-Method0123456789_*+`.%indeed'~"[..])
    );
    assert_eq!(
        m.cseq(),
        CSeq {
            seq: 139122385,
            method: Method::Other
        }
    );
    assert_eq!(
        m.top_via().unwrap().branch,
        Some(&b"z9hG4bK-.!%66*_+`'~"[..])
    );
    assert_eq!(m.from_tag(), Some(&b"_token~1'+`*%!-."[..]));
    assert_eq!(
        m.call_id(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{".as_bytes()
    );
    assert_eq!(m.max_forwards(), Ok(Some(255)));
    assert_eq!(
        m.header_named(b"EXTENSIONHEADER-!.%*+_`'~").as_deref(),
        Some("\u{feff}大停電".as_bytes())
    );
}

/// RFC 4475 §3.1.2.4 "ncl" style: a negative Content-Length is refused, not wrapped around.
#[test]
fn negative_content_length() {
    let m = WSINV.replace("Content-Length   : 150", "Content-Length: -999");
    assert!(Message::parse(crlf(&m), &Limits::default()).is_err());
}
