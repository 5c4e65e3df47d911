//! Differential test: our parser and `rsip` must agree on what the proxy reads from a request.
//!
//! The generator stays inside what rsip 0.4 reads the same way we do, each limit checked by hand:
//! long header names only (rsip knows no compact forms: `i:` gives it "missing Call-ID"), the 14
//! methods rsip enumerates, and `sip:` URIs without URI parameters (rsip re-renders them, e.g.
//! `transport=tcp` comes back as `transport=TCP`, so its Request-URI text would differ from the wire).
use super::{Limits, Message, Method};
use bytes::Bytes;
use proptest::prelude::*;
use rsip::headers::UntypedHeader;
use rsip::headers::untyped::ToTypedHeader;
use rsip::prelude::HeadersExt;

const METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "UPDATE",
    "INFO",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
];

#[derive(Debug, Clone)]
struct Gen {
    method: &'static str,
    uri: String,
    call_id: String,
    seq: u32,
    branch: String,
    extra: Vec<(String, String)>,
    body: Option<String>,
    name_case: [bool; 4],
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,7}(\\.[a-z]{2,5}){0,2}",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

fn uri() -> impl Strategy<Value = String> {
    let user = prop::option::of(prop_oneof!["[a-z][a-z0-9_.]{0,9}", "\\+1[0-9]{10}"]);
    let port = prop::option::of(1u16..=65535);
    (user, host(), port).prop_map(|(u, h, p)| {
        let user = u.map(|u| format!("{u}@")).unwrap_or_default();
        let port = p.map(|p| format!(":{p}")).unwrap_or_default();
        format!("sip:{user}{h}{port}")
    })
}

fn extra() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("Subject"),
            Just("User-Agent"),
            Just("X-Trunk"),
            Just("Priority"),
            Just("Geolocation")
        ],
        "[A-Za-z0-9][A-Za-z0-9 .:@=-]{0,20}[A-Za-z0-9]",
    )
        .prop_map(|(n, v)| (n.to_string(), v))
}

prop_compose! {
    fn request()(
        method in prop::sample::select(METHODS),
        uri in uri(),
        call_id in "[A-Za-z0-9][A-Za-z0-9.!%*_+~-]{0,15}(@[a-z0-9.]{1,10})?",
        seq in 0u32..=u32::MAX,
        branch in "z9hG4bK[A-Za-z0-9.-]{1,16}",
        extra in prop::collection::vec(extra(), 0..4),
        body in prop::option::of("[a-z0-9=/ \r\n]{0,60}"),
        name_case in any::<[bool; 4]>(),
    ) -> Gen {
        Gen { method, uri, call_id, seq, branch, extra, body, name_case }
    }
}

fn cased(name: &str, upper: bool) -> String {
    if upper {
        name.to_ascii_uppercase()
    } else {
        name.to_string()
    }
}

impl Gen {
    fn render(&self) -> String {
        let c = self.name_case;
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        s += &format!(
            "{}: SIP/2.0/UDP 192.0.2.1:5060;branch={}\r\n",
            cased("Via", c[0]),
            self.branch
        );
        s += "Via: SIP/2.0/TCP proxy.example;branch=z9hG4bKlower\r\n";
        s += "Max-Forwards: 70\r\n";
        s += "From: <sip:caller@example.com>;tag=f1\r\n";
        s += &format!("{}: <{}>\r\n", cased("To", c[1]), self.uri);
        s += &format!("{}: {}\r\n", cased("Call-ID", c[2]), self.call_id);
        s += &format!("{}: {} {}\r\n", cased("CSeq", c[3]), self.seq, self.method);
        for (n, v) in &self.extra {
            s += &format!("{n}: {v}\r\n");
        }
        let body = self.body.as_deref().unwrap_or("");
        if self.body.is_some() {
            s += "Content-Type: text/plain\r\n";
        }
        s += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_rsip(g in request()) {
        let text = g.render();
        let ours = Message::parse(Bytes::from(text.clone()), &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("we refused: {e}\n{text}")))?;
        let theirs = rsip::SipMessage::try_from(text.as_str())
            .map_err(|e| TestCaseError::fail(format!("rsip refused: {e}\n{text}")))?;
        let rsip::SipMessage::Request(req) = theirs else {
            return Err(TestCaseError::fail("rsip saw a response"));
        };

        let (method, ruri) = (req.method().to_string(), req.uri().to_string());
        prop_assert_eq!(ours.method_bytes(), Some(method.as_bytes()));
        prop_assert_ne!(ours.method(), Some(Method::Other));
        prop_assert_eq!(ours.request_uri(), Some(ruri.as_bytes()));
        prop_assert_eq!(ours.request_uri(), Some(g.uri.as_bytes()));

        let call_id = req.call_id_header().unwrap();
        prop_assert_eq!(ours.call_id(), call_id.value().as_bytes());

        let cseq = req.cseq_header().unwrap().typed().unwrap();
        prop_assert_eq!(ours.cseq().seq, cseq.seq);
        prop_assert_eq!(ours.cseq().seq, g.seq);
        prop_assert_eq!(Method::from_token(cseq.method.to_string().as_bytes()), ours.cseq().method);

        let via = req.via_header().unwrap().typed().unwrap();
        let branch = via.branch().map(|b| b.to_string());
        prop_assert_eq!(ours.top_via().unwrap().branch, branch.as_deref().map(str::as_bytes));
        prop_assert_eq!(ours.top_via().unwrap().branch, Some(g.branch.as_bytes()));

        prop_assert_eq!(ours.body(), req.body().as_slice());
    }
}
