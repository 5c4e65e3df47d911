"""Fake answering points whose INVITE behaviour switches live: one asyncio process serving many ports.

    python3 -m sostest.fakepsap --psap ID:SIPPORT:RTPPORT[:MODE] ... [--control HOST:PORT]
                                [--log FILE.jsonl] [--sipp-log FILE] [--seconds N] [--ip 127.0.0.1]
    python3 -m sostest.fakepsap --config topology.json ...   (the "psaps" list of sostest.topology)

Every answering point answers OPTIONS 200 in every mode but `silent` (the faults are silent: probes pass).
Modes (the INVITE behaviour):
  healthy     100, 180, 200 with SDP; RTP sent to its media port is echoed back (RFC 6849-style loopback)
  blackhole   INVITE swallowed (as a firewall drop: its CANCEL is swallowed too)
  trying      100 Trying, then nothing (CANCEL -> 200 + 487)
  503         100, then 503 Service Unavailable (Retry-After 30)
  silent      nothing at all: no OPTIONS answer either, no response to anything, no RTP echo
  dead-media  100, 180, 200 with SDP, but the RTP echo stops
Answers carry `X-Answered-By: <id>` and a To-tag `<id>.<random>`. ACK stops 2xx/487/503 retransmissions;
BYE -> 200; CANCEL of a pending INVITE -> 200, then 487; a CANCEL without a transaction -> 481.

Control (UDP, one JSON object per datagram, answered with the current modes):
  {"set": {"psap-r01-a": "blackhole", "role:primary": "trying", "*": "healthy"}}    {"get": true}
Keys: an id, `role:NAME` (every point with that role), or `*` (every point that is not role gateway).
Log: one JSON line per event (t = unix time): invite (new transaction or retransmission, with the mode
it met), answer, final, ack, bye, cancel, mode, and counts of OPTIONS at exit. --sipp-log also writes
SIPp-style `INVITE|ACK|BYE|CANCEL <sec> <usec> <call-id>` lines (the lab drills' ap.log format).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass, field

from . import sip

MODES = ("healthy", "blackhole", "trying", "503", "silent", "dead-media")
FAULT_MODES = ("blackhole", "trying", "503", "silent", "dead-media")
RETRANS = (0.5, 1.0, 2.0, 4.0)  # retransmission intervals of final responses until ACK (UDP, T1 doubling)


@dataclass
class Tx:
    invite: sip.Msg
    addr: tuple
    last: bytes | None = None   # last response sent (resent on a retransmitted INVITE)
    final: int = 0
    swallowed: bool = False
    timer: asyncio.Task | None = None


@dataclass
class Psap:
    id: str
    port: int
    rtp_port: int
    role: str = "psap"
    mode: str = "healthy"
    ring_ms: int = 0
    tx: dict = field(default_factory=dict)        # (call-id, branch) -> Tx
    options: int = 0
    sip_t: asyncio.DatagramTransport | None = None
    rtp_t: asyncio.DatagramTransport | None = None


class Logger:
    def __init__(self, path: str | None, sipp_path: str | None):
        self.f = open(path, "a", buffering=1 << 16) if path else None
        self.sipp = open(sipp_path, "a", buffering=1) if sipp_path else None

    def ev(self, psap: Psap, ev: str, **kw):
        t = time.time()
        if self.f:
            self.f.write(json.dumps({"t": round(t, 6), "psap": psap.id, "role": psap.role, "ev": ev,
                                     "mode": psap.mode, **kw}) + "\n")
        if self.sipp and ev in ("invite", "ack", "bye", "cancel") and kw.get("call_id"):
            self.sipp.write(f"{ev.upper()} {int(t)} {int((t % 1) * 1e6)} {kw['call_id']}\n")

    def flush(self):
        for f in (self.f, self.sipp):
            if f:
                f.flush()

    def close(self):
        for f in (self.f, self.sipp):
            if f:
                f.close()


class SipProto(asyncio.DatagramProtocol):
    def __init__(self, psap: Psap, log: Logger, ip: str):
        self.p, self.log, self.ip = psap, log, ip

    def connection_made(self, transport):
        self.p.sip_t = transport

    def send(self, data: bytes, addr):
        if self.p.sip_t:
            self.p.sip_t.sendto(data, addr)

    def datagram_received(self, data, addr):
        msg = sip.parse(data)
        if msg is None or not msg.is_request:
            return
        try:
            self.handle(msg, addr)
        except Exception as e:  # noqa: BLE001 - a bad message must not stop the answering point
            print(f"fakepsap {self.p.id}: {e!r}", file=sys.stderr)

    def handle(self, msg: sip.Msg, addr):
        p, m = self.p, msg.method
        if p.mode == "silent":
            if m == "INVITE":
                key = (msg.call_id, msg.branch)
                new = key not in p.tx
                p.tx.setdefault(key, Tx(msg, addr, swallowed=True))
                self.log.ev(p, "invite", call_id=msg.call_id, new=new, uri=msg.uri)
            return
        if m == "OPTIONS":
            p.options += 1
            self.send(sip.response(msg, 200, sip.token(), [("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),
                                                           ("X-Answered-By", p.id)]), addr)
        elif m == "INVITE":
            self.invite(msg, addr)
        elif m == "ACK":
            self.log.ev(p, "ack", call_id=msg.call_id)
            for key, tx in list(p.tx.items()):
                if key[0] == msg.call_id and tx.timer:
                    tx.timer.cancel()
                    tx.timer = None
        elif m == "CANCEL":
            self.cancel(msg, addr)
        elif m == "BYE":
            self.log.ev(p, "bye", call_id=msg.call_id)
            self.send(sip.response(msg, 200, extra=[("X-Answered-By", p.id)]), addr)
            self.forget(msg.call_id)
        else:
            self.send(sip.response(msg, 405, sip.token(), [("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")]), addr)

    def forget(self, call_id: str):
        for key in [k for k in self.p.tx if k[0] == call_id]:
            tx = self.p.tx.pop(key)
            if tx.timer:
                tx.timer.cancel()

    def invite(self, msg: sip.Msg, addr):
        p = self.p
        key = (msg.call_id, msg.branch)
        tx = p.tx.get(key)
        if tx is not None and not tx.swallowed:
            self.log.ev(p, "invite", call_id=msg.call_id, new=False, uri=msg.uri)
            if tx.last:
                self.send(tx.last, addr)
            return
        new = tx is None
        tx = Tx(msg, addr)
        p.tx[key] = tx
        self.log.ev(p, "invite", call_id=msg.call_id, new=new, uri=msg.uri)
        if p.mode == "blackhole":
            tx.swallowed = True
            return
        tag = f"{p.id}.{sip.token(8)}"
        tx.last = sip.response(msg, 100)
        self.send(tx.last, addr)
        if p.mode == "trying":
            return
        if p.mode == "503":
            tx.final = 503
            tx.last = sip.response(msg, 503, tag, [("Retry-After", "30"), ("X-Answered-By", p.id)])
            self.log.ev(p, "final", call_id=msg.call_id, code=503)
            self.send(tx.last, addr)
            tx.timer = asyncio.ensure_future(self.retransmit(tx))
            return
        # healthy or dead-media: ring, then answer
        contact = [("Contact", f"<sip:{p.id}@{self.ip}:{p.port}>"), ("X-Answered-By", p.id)]
        tx.last = sip.response(msg, 180, tag, contact)
        self.send(tx.last, addr)
        tx.timer = asyncio.ensure_future(self.answer(tx, tag, contact))

    async def answer(self, tx: Tx, tag: str, contact: list):
        if self.p.ring_ms:
            await asyncio.sleep(self.p.ring_ms / 1000.0)
        body = sip.sdp(self.ip, self.p.rtp_port)
        tx.final = 200
        tx.last = sip.response(tx.invite, 200, tag, contact + [("Content-Type", "application/sdp")], body)
        self.log.ev(self.p, "answer", call_id=tx.invite.call_id, uri=tx.invite.uri)
        self.send(tx.last, tx.addr)
        await self.retransmit(tx)

    async def retransmit(self, tx: Tx):
        for d in RETRANS:
            await asyncio.sleep(d)
            if tx.last:
                self.send(tx.last, tx.addr)

    def cancel(self, msg: sip.Msg, addr):
        p = self.p
        tx = p.tx.get((msg.call_id, msg.branch))
        self.log.ev(p, "cancel", call_id=msg.call_id, found=tx is not None)
        if tx is not None and tx.swallowed:
            return  # the INVITE never got through: neither does its CANCEL
        if tx is None:
            self.send(sip.response(msg, 481, sip.token()), addr)
            return
        self.send(sip.response(msg, 200), addr)
        if tx.final:
            return
        if tx.timer:
            tx.timer.cancel()
        tx.final = 487
        tx.last = sip.response(tx.invite, 487, f"{p.id}.{sip.token(8)}", [("X-Answered-By", p.id)])
        self.log.ev(p, "final", call_id=msg.call_id, code=487)
        self.send(tx.last, tx.addr)
        tx.timer = asyncio.ensure_future(self.retransmit(tx))


class RtpEcho(asyncio.DatagramProtocol):
    def __init__(self, psap: Psap):
        self.p = psap

    def connection_made(self, transport):
        self.p.rtp_t = transport

    def datagram_received(self, data, addr):
        if self.p.mode not in ("dead-media", "silent") and self.p.rtp_t:
            self.p.rtp_t.sendto(data, addr)


def apply_modes(psaps: dict, setting: dict, log: Logger) -> dict:
    """Apply {"key": mode}; key = id, "role:NAME" or "*" (every non-gateway point). Unknown modes are refused."""
    for key, mode in setting.items():
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        for p in psaps.values():
            if key == p.id or key == f"role:{p.role}" or (key == "*" and p.role != "gateway"):
                if p.mode != mode:
                    p.mode = mode
                    log.ev(p, "mode")
    log.flush()
    return {p.id: p.mode for p in psaps.values()}


class Control(asyncio.DatagramProtocol):
    def __init__(self, psaps: dict, log: Logger):
        self.psaps, self.log, self.t = psaps, log, None

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        try:
            req = json.loads(data.decode())
            modes = apply_modes(self.psaps, req.get("set", {}), self.log)
            reply = {"ok": True, "modes": modes}
        except Exception as e:  # noqa: BLE001 - bad control input is answered, not fatal
            reply = {"ok": False, "error": str(e)}
        self.t.sendto(json.dumps(reply).encode(), addr)


def control(addr: tuple, setting: dict | None = None, timeout: float = 2.0) -> dict:
    """Send one control request (blocking); returns the reply. setting None = just ask."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(json.dumps({"set": setting or {}}).encode(), addr)
        return json.loads(s.recv(65535).decode())
    finally:
        s.close()


async def serve(psaps: list, ip: str, control_addr: tuple | None, log: Logger, seconds: float,
                stop: asyncio.Event | None = None):
    """Serve until stop is set (default: SIGTERM/SIGINT) or seconds have passed."""
    loop = asyncio.get_running_loop()
    by_id = {p.id: p for p in psaps}
    transports = []
    for p in psaps:
        transports.append((await loop.create_datagram_endpoint(lambda p=p: SipProto(p, log, ip), local_addr=(ip, p.port)))[0])
        transports.append((await loop.create_datagram_endpoint(lambda p=p: RtpEcho(p), local_addr=(ip, p.rtp_port)))[0])
    if control_addr:
        transports.append((await loop.create_datagram_endpoint(lambda: Control(by_id, log), local_addr=control_addr))[0])
    if stop is None:
        stop = asyncio.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
    for p in psaps:
        log.ev(p, "mode")
    end = loop.time() + seconds
    while not stop.is_set() and loop.time() < end:
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
        log.flush()
        for p in psaps:  # forget finished transactions older than a minute (bounded memory)
            if len(p.tx) > 5000:
                for k in list(p.tx)[: len(p.tx) - 5000]:
                    p.tx.pop(k, None)
    for p in psaps:
        log.ev(p, "options", count=p.options)
        for tx in p.tx.values():
            if tx.timer:
                tx.timer.cancel()
    for t in transports:
        t.close()
    log.close()


def parse_psap(spec: str) -> Psap:
    parts = spec.split(":")
    if len(parts) < 3:
        raise SystemExit(f"--psap {spec}: want ID:SIPPORT:RTPPORT[:MODE[:ROLE]]")
    mode = parts[3] if len(parts) > 3 else "healthy"
    if mode not in MODES:
        raise SystemExit(f"--psap {spec}: unknown mode {mode}")
    return Psap(parts[0], int(parts[1]), int(parts[2]), role=parts[4] if len(parts) > 4 else "psap", mode=mode)


def hostport(s: str) -> tuple:
    h, _, p = s.rpartition(":")
    return h, int(p)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fakepsap", description=__doc__.split("\n")[0])
    ap.add_argument("--psap", action="append", default=[])
    ap.add_argument("--config", help="topology.json (its psaps list)")
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--control")
    ap.add_argument("--log")
    ap.add_argument("--sipp-log")
    ap.add_argument("--ring-ms", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=600)
    a = ap.parse_args(argv)
    psaps = [parse_psap(s) for s in a.psap]
    if a.config:
        with open(a.config) as f:
            for d in json.load(f)["psaps"]:
                psaps.append(Psap(d["id"], d["port"], d["rtp_port"], role=d["role"], mode=d.get("mode", "healthy")))
    if not psaps:
        raise SystemExit("no answering points (--psap or --config)")
    for p in psaps:
        p.ring_ms = a.ring_ms
    log = Logger(a.log, a.sipp_log)
    asyncio.run(serve(psaps, a.ip, hostport(a.control) if a.control else None, log, a.seconds))


if __name__ == "__main__":
    main()
