"""Minimal SIP over UDP for the testbed's own agents (fake PSAPs, statewide caller).

Not a SIP stack: parsing is tolerant and only what the agents read is parsed; messages are built by
hand. Standard library only.
"""
from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, field

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported"}


@dataclass
class Msg:
    """A parsed SIP message. Headers keep their order and their raw values; names are lower-cased."""
    first: str
    headers: list = field(default_factory=list)  # [(lower name, value)]
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0] if self.is_request else ""

    @property
    def uri(self) -> str:
        p = self.first.split(" ")
        return p[1] if self.is_request and len(p) > 1 else ""

    @property
    def status(self) -> int:
        if self.is_request:
            return 0
        try:
            return int(self.first.split(" ")[1])
        except (IndexError, ValueError):
            return 0

    def get(self, name: str, default: str = "") -> str:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def all(self, name: str) -> list:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def call_id(self) -> str:
        return self.get("call-id")

    @property
    def cseq(self) -> tuple:
        p = self.get("cseq").split()
        try:
            return int(p[0]), (p[1] if len(p) > 1 else "")
        except (IndexError, ValueError):
            return 0, ""

    @property
    def branch(self) -> str:
        m = re.search(r";\s*branch=([^;,\s]+)", self.get("via"))
        return m.group(1) if m else ""

    @property
    def to_tag(self) -> str:
        return tag_of(self.get("to"))

    @property
    def from_tag(self) -> str:
        return tag_of(self.get("from"))


def tag_of(value: str) -> str:
    m = re.search(r";\s*tag=([^;,\s>]+)", value)
    return m.group(1) if m else ""


def parse(data: bytes) -> Msg | None:
    """A SIP message from one datagram, or None when it is not one (keepalives, garbage)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    try:
        lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    except Exception:  # noqa: BLE001 - never fail on bad input
        return None
    if not lines or not lines[0].strip():
        return None
    first = lines[0].strip()
    if not (first.startswith("SIP/2.0 ") or first.endswith(" SIP/2.0")):
        return None
    headers = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        headers.append((COMPACT.get(name, name), value.strip()))
    msg = Msg(first, headers, body)
    try:
        n = int(msg.get("content-length", str(len(body))))
        msg.body = body[:n]
    except ValueError:
        pass
    return msg


def build(first: str, headers: list, body: bytes = b"") -> bytes:
    """Bytes of a message; Content-Length is added (any given one is dropped)."""
    out = [first]
    for k, v in headers:
        if k.lower() in ("content-length", "l"):
            continue
        out.append(f"{k}: {v}")
    out.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(out) + "\r\n\r\n").encode() + body


REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 481: "Call/Transaction Does Not Exist",
           487: "Request Terminated", 503: "Service Unavailable", 405: "Method Not Allowed"}


def response(req: Msg, code: int, to_tag: str = "", extra: list | None = None, body: bytes = b"",
             reason: str = "") -> bytes:
    """A response to req: Via, From, Call-ID, CSeq and Record-Route copied; To gets to_tag if it has none."""
    hs = [("Via", v) for v in req.all("via")]
    for rr in req.all("record-route"):
        hs.append(("Record-Route", rr))
    hs.append(("From", req.get("from")))
    to = req.get("to")
    if to_tag and not tag_of(to):
        to = f"{to};tag={to_tag}"
    hs += [("To", to), ("Call-ID", req.call_id), ("CSeq", req.get("cseq"))]
    hs += extra or []
    return build(f"SIP/2.0 {code} {reason or REASONS.get(code, 'Unknown')}", hs, body)


def token(n: int = 10) -> str:
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def sdp(ip: str, port: int, sess: int = 1) -> bytes:
    """An audio offer/answer: PCMU and telephone-event, one m= line."""
    return (f"v=0\r\no=sostest {sess} {sess} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"a=sendrecv\r\n").encode()


def sdp_media_addr(body: bytes) -> tuple | None:
    """(ip, port) of the first audio stream of an SDP body, or None."""
    text = body.decode("utf-8", "replace")
    c = re.search(r"^c=IN IP4 (\S+)", text, re.M)
    m = re.search(r"^m=audio (\d+) ", text, re.M)
    if not c or not m:
        return None
    return c.group(1), int(m.group(1))


def uri_of(value: str) -> str:
    """The URI inside a name-addr (<...>) or an addr-spec with parameters."""
    m = re.search(r"<([^>]*)>", value)
    if m:
        return m.group(1)
    return value.split(";", 1)[0].strip()


def host_port(uri: str, default_port: int = 5060) -> tuple:
    """(host, port) of a sip: URI (IPv4 literals and names; no IPv6 needed here)."""
    u = uri.split(":", 1)[1] if ":" in uri else uri
    u = u.split(";", 1)[0].split("?", 1)[0]
    if "@" in u:
        u = u.split("@", 1)[1]
    h, _, p = u.partition(":")
    try:
        return h, int(p) if p else default_port
    except ValueError:
        return h, default_port


def rtp_packet(seq: int, ts: int, ssrc: int, payload: bytes = b"\xff" * 160) -> bytes:
    """An RTP packet, PCMU (payload type 0)."""
    return bytes([0x80, 0x00]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload
