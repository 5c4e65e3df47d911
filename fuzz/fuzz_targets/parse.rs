//! The codec under libFuzzer: parse, every accessor, the editor, the response builder, framing, the
//! salvage path and the strict checks. Any panic is a bug (the proxy runs them on hostile input).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sosrouter::sip::{Editor, HeaderName, Limits, Message, build, frame_len, salvage, strict};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = frame_len(data, &limits);
    let _ = salvage::bad_request(data, "fuzz", &limits);
    let Ok(m) = Message::parse(Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    let _ = (m.method(), m.method_bytes(), m.request_uri(), m.status(), m.reason());
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.from_tag(), m.to_tag());
    let _ = (m.body(), m.content_length(), m.routes(), m.vias(), m.top_via());
    for n in [HeaderName::Via, HeaderName::Route, HeaderName::Contact, HeaderName::To] {
        if let Some(v) = m.header(n) {
            let _ = Message::addr_spec(&v);
        }
        let _ = m.header_values(n);
    }
    let _ = m.header_named(b"x-anything");
    let _ = strict::request_problem(&m);
    if m.is_request() {
        let _ = build::response(&m, 400, "Bad Request", Some(b"fz"), &[b"Retry-After: 5"]);
        let _ = build::cancel(&m);
        let mut e = Editor::new(&m);
        e.stamp_top_via(sosrouter::sip::Source {
            ip: [127, 0, 0, 1].into(),
            port: 5060,
        })
        .push_via(b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfz")
        .set_request_uri(b"sip:911@127.0.0.1:5071")
        .set_max_forwards(69)
        .pop_routes(1)
        .push_record_route(b"<sip:127.0.0.1:5060;lr>")
        .ensure_content_length();
        let out = e.finish();
        // What we forward must itself parse.
        let _ = Message::parse(out, &limits);
    } else {
        let mut e = Editor::new(&m);
        let _ = e.pop_via().finish();
    }
});
