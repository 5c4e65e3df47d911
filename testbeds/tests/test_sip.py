from sostest import sip


def test_parse_request_compact_and_folded():
    raw = (b"INVITE urn:service:sos SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx;rport\r\n"
           b"f: <sip:a@b>;tag=1\r\nt: <urn:service:sos>\r\ni: abc\r\nCSeq: 1\r\n INVITE\r\nl: 4\r\n\r\nbodyEXTRA")
    m = sip.parse(raw)
    assert m.is_request and m.method == "INVITE" and m.uri == "urn:service:sos"
    assert m.call_id == "abc" and m.branch == "z9hG4bKx" and m.from_tag == "1"
    assert m.cseq == (1, "INVITE")
    assert m.body == b"body"


def test_garbage_is_not_a_message():
    for raw in (b"", b"\r\n\r\n", b"hello world", b"\x00\xff\x10"):
        assert sip.parse(raw) is None


def test_response_copies_and_tags():
    req = sip.parse(sip.build("OPTIONS sip:x SIP/2.0", [("Via", "SIP/2.0/UDP h;branch=b1"), ("Via", "SIP/2.0/UDP g;branch=b2"),
                                                        ("From", "<sip:p>;tag=f"), ("To", "<sip:x>"), ("Call-ID", "c"),
                                                        ("CSeq", "7 OPTIONS"), ("Record-Route", "<sip:p;lr>")]))
    r = sip.parse(sip.response(req, 200, "t1", [("X-Answered-By", "psap")]))
    assert r.status == 200 and r.to_tag == "t1" and r.all("via") == req.all("via")
    assert r.get("record-route") == "<sip:p;lr>" and r.get("x-answered-by") == "psap"
    assert r.cseq == (7, "OPTIONS")


def test_sdp_and_uris():
    assert sip.sdp_media_addr(sip.sdp("127.0.0.1", 7000)) == ("127.0.0.1", 7000)
    assert sip.sdp_media_addr(b"v=0\r\n") is None
    assert sip.uri_of("<sip:a@1.2.3.4:5;lr>;x=y") == "sip:a@1.2.3.4:5;lr"
    assert sip.host_port("sip:a@1.2.3.4:5;lr") == ("1.2.3.4", 5)
    assert sip.host_port("sip:1.2.3.4") == ("1.2.3.4", 5060)
