"""The statewide drills' caller: a bounded number of emergency calls at a fixed rate over UDP.

    python3 -m sostest.caller --proxy 127.0.0.1:5160 --regions topology.json --out calls.jsonl
                              [--rate 5] [--calls 275] [--hold-s 8] [--no-echo-s 2] [--call-timeout-s 12]

Call i comes from region i mod N (caller number = the region's prefix + 5 digits, in From and
P-Asserted-Identity), Request-URI alternating urn:service:sos and sip:911@proxy, SDP offer (PCMU) for an
RTP socket of its own. On 200: ACK, RTP every 20 ms; no echo within --no-echo-s: BYE then (media dead),
else BYE after --hold-s. No final answer within --call-timeout-s: CANCEL (failed call, "timeout").
Every call is one JSON line (CallRecord) in --out, written when the call ends.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import time
from dataclasses import asdict, dataclass

from . import sip


@dataclass
class CallRecord:
    index: int
    call_id: str
    region: str
    caller: str
    uri: str
    start: float                 # unix time the INVITE was sent
    status: str = "pending"      # answered | timeout | <final code> | error
    final_code: int = 0
    setup_ms: float | None = None   # INVITE sent -> 200 received
    first_provisional_ms: float | None = None
    answered_by: str = ""        # X-Answered-By of the 200 (else the To-tag's id part)
    media_ok: bool | None = None    # an RTP echo came back within no_echo_s
    echoes: int = 0
    hangup: str = ""             # hold | no-echo | -
    bye_status: int = 0          # 0 = no answer to the BYE
    end: float = 0.0


class Endpoint(asyncio.DatagramProtocol):
    """The caller's one SIP socket: responses go to their call's queue by Call-ID."""

    def __init__(self):
        self.calls: dict = {}
        self.t = None

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        msg = sip.parse(data)
        if msg is None:
            return
        if msg.is_request:
            # A BYE or anything else from the far end: 200 (ACK needs no answer)
            if msg.method != "ACK":
                self.t.sendto(sip.response(msg, 200), addr)
            return
        q = self.calls.get(msg.call_id)
        if q is not None:
            q.put_nowait(msg)


class Rtp(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = 0
        self.t = None

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        self.received += 1


@dataclass
class Settings:
    proxy: tuple
    local_ip: str = "127.0.0.1"
    hold_s: float = 8.0
    no_echo_s: float = 2.0
    call_timeout_s: float = 12.0


class Call:
    def __init__(self, ep: Endpoint, st: Settings, rec: CallRecord, local_port: int):
        self.ep, self.st, self.rec = ep, st, rec
        self.local = f"{st.local_ip}:{local_port}"
        self.q: asyncio.Queue = asyncio.Queue()
        self.from_tag = sip.token(8)
        ep.calls[rec.call_id] = self.q

    def send(self, data: bytes, addr=None):
        self.ep.t.sendto(data, addr or self.st.proxy)

    def request(self, method: str, uri: str, cseq: int, branch: str, to: str, extra=(), body=b"") -> bytes:
        hs = [("Via", f"SIP/2.0/UDP {self.local};branch={branch};rport"), ("Max-Forwards", "70"),
              ("From", f"<sip:{self.rec.caller}@{self.st.local_ip};user=phone>;tag={self.from_tag}"),
              ("To", to), ("Call-ID", self.rec.call_id), ("CSeq", f"{cseq} {method}")]
        return sip.build(f"{method} {uri} SIP/2.0", hs + list(extra), body)

    async def run(self):
        loop = asyncio.get_running_loop()
        rec, st = self.rec, self.st
        rtp_t, rtp = await loop.create_datagram_endpoint(Rtp, local_addr=(st.local_ip, 0))
        try:
            await self.invite(rtp_t, rtp)
        except Exception as e:  # noqa: BLE001 - one broken call must not stop the others
            rec.status = f"error: {e!r}"
        finally:
            rtp_t.close()
            self.ep.calls.pop(rec.call_id, None)
            rec.end = time.time()

    async def next(self, deadline: float):
        """The next response before the loop-time deadline, or None."""
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        try:
            return await asyncio.wait_for(self.q.get(), left)
        except asyncio.TimeoutError:
            return None

    async def invite(self, rtp_t, rtp: Rtp):
        loop = asyncio.get_running_loop()
        rec, st = self.rec, self.st
        rtp_port = rtp_t.get_extra_info("sockname")[1]
        branch = "z9hG4bK" + sip.token(12)
        to = f"<{rec.uri}>"
        pai = [("Contact", f"<sip:caller@{self.local}>"),
               ("P-Asserted-Identity", f"<sip:{rec.caller}@{st.local_ip};user=phone>"),
               ("Priority", "emergency"), ("Content-Type", "application/sdp")]
        inv = self.request("INVITE", rec.uri, 1, branch, to, pai, sip.sdp(st.local_ip, rtp_port, rec.index + 1))
        t0 = loop.time()
        rec.start = time.time()
        self.send(inv)
        deadline = t0 + st.call_timeout_s
        retrans, gap, provisional = t0 + 0.5, 0.5, False
        final = None
        while final is None:
            msg = await self.next(min(deadline, retrans) if not provisional else deadline)
            now = loop.time()
            if msg is None:
                if now >= deadline:
                    break
                if not provisional and now >= retrans:  # Timer A
                    self.send(inv)
                    gap = min(gap * 2, 4.0)
                    retrans = now + gap
                continue
            if msg.cseq[1] != "INVITE":
                continue
            if msg.status < 200:
                if not provisional:
                    provisional = True
                    rec.first_provisional_ms = (now - t0) * 1000.0
                continue
            final = msg
        if final is None:
            rec.status = "timeout"
            if provisional:  # CANCEL (same branch), wait a little for 487 and ACK it
                self.send(self.request("CANCEL", rec.uri, 1, branch, to))
                end = loop.time() + 4.0
                while True:
                    m = await self.next(end)
                    if m is None:
                        break
                    if m.cseq[1] == "INVITE" and m.status >= 200:
                        self.send(self.request("ACK", rec.uri, 1, branch, m.get("to")))
                        if m.status == 200:  # answered after all, just as we gave up: hang it up
                            await self.bye(m, m.get("to"))
                        break
            return
        rec.final_code = final.status
        if final.status >= 300:
            rec.status = str(final.status)
            rec.answered_by = final.get("x-answered-by")
            self.send(self.request("ACK", rec.uri, 1, branch, final.get("to")))
            return
        rec.status = "answered"
        rec.setup_ms = (loop.time() - t0) * 1000.0
        rec.answered_by = final.get("x-answered-by") or final.to_tag.split(".", 1)[0]
        await self.media_and_bye(final, rtp_t, rtp)

    def dialog(self, ok: sip.Msg):
        routes = list(reversed([r.strip() for h in ok.all("record-route") for r in h.split(",")]))
        target = sip.uri_of(ok.get("contact")) or self.rec.uri
        return routes, target

    def in_dialog(self, method: str, ok: sip.Msg, cseq: int) -> tuple:
        routes, target = self.dialog(ok)
        extra = [("Route", r) for r in routes]
        data = self.request(method, target, cseq, "z9hG4bK" + sip.token(12), ok.get("to"), extra)
        hop = sip.host_port(sip.uri_of(routes[0])) if routes else sip.host_port(target)
        return data, hop

    async def media_and_bye(self, ok: sip.Msg, rtp_t, rtp: Rtp):
        loop = asyncio.get_running_loop()
        rec, st = self.rec, self.st
        ack, hop = self.in_dialog("ACK", ok, 1)
        self.send(ack, hop)
        media = sip.sdp_media_addr(ok.body)
        ssrc = random.getrandbits(32)
        seq = 0
        start = loop.time()
        hold_end = start + st.hold_s
        check = start + st.no_echo_s
        while loop.time() < hold_end:
            # every 20 ms until the echo check, then one packet every 500 ms (keeps the caller cheap)
            if media:
                rtp_t.sendto(sip.rtp_packet(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc), media)
                seq += 1
            now = loop.time()
            if now >= check and rec.media_ok is None:
                rec.media_ok = rtp.received > 0
                if not rec.media_ok:
                    rec.hangup = "no-echo"
                    break
            # a retransmitted 200 (our ACK was lost): ACK again
            while not self.q.empty():
                m = self.q.get_nowait()
                if m.cseq[1] == "INVITE" and m.status == 200:
                    self.send(ack, hop)
            await asyncio.sleep(0.02 if now < check else 0.5)
        else:
            rec.hangup = "hold"
            if rec.media_ok is None:
                rec.media_ok = rtp.received > 0
        rec.echoes = rtp.received
        await self.bye(ok, ok.get("to"))

    async def bye(self, ok: sip.Msg, _to: str):
        loop = asyncio.get_running_loop()
        data, hop = self.in_dialog("BYE", ok, 2)
        end = loop.time() + 4.0
        gap = 0.5
        self.send(data, hop)
        while loop.time() < end:
            m = await self.next(min(end, loop.time() + gap))
            if m is None:
                self.send(data, hop)
                gap = min(gap * 2, 2.0)
                continue
            if m.cseq[1] == "BYE" and m.status >= 200:
                self.rec.bye_status = m.status
                return


def region_caller(prefix: str, index: int) -> str:
    return f"{prefix}{index % 100000:05d}"


async def run_calls(st: Settings, regions: list, rate: float, calls: int, out_path: str,
                    start_file: str | None = None) -> list:
    """Make the calls; returns the CallRecords (also appended to out_path as they end)."""
    loop = asyncio.get_running_loop()
    ep_t, ep = await loop.create_datagram_endpoint(Endpoint, local_addr=(st.local_ip, 0))
    local_port = ep_t.get_extra_info("sockname")[1]
    proxy = f"{st.proxy[0]}:{st.proxy[1]}"
    records, tasks = [], []
    out = open(out_path, "a", buffering=1) if out_path else None
    if start_file:
        with open(start_file, "w") as f:
            f.write(f"{time.time():.6f}\n")

    async def one(rec):
        await Call(ep, st, rec, local_port).run()
        records.append(rec)
        if out:
            out.write(json.dumps(asdict(rec)) + "\n")

    t0 = loop.time()
    stopping = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(s, stopping.set)
        except (RuntimeError, NotImplementedError):
            pass
    for i in range(calls):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
        if stopping.is_set():
            break
        r = regions[i % len(regions)]
        uri = "urn:service:sos" if i % 2 == 0 else f"sip:911@{proxy}"
        rec = CallRecord(i, f"sw{i}-{sip.token(10)}@sostest", r["region"], region_caller(r["prefix"], i), uri, 0.0)
        tasks.append(asyncio.ensure_future(one(rec)))
    bound = st.call_timeout_s + st.hold_s + 15
    if tasks:
        await asyncio.wait(tasks, timeout=bound)
    ep_t.close()
    if out:
        out.close()
    return sorted(records, key=lambda r: r.index)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="caller", description=__doc__.split("\n")[0])
    ap.add_argument("--proxy", required=True, help="HOST:PORT (UDP)")
    ap.add_argument("--regions", required=True, help="topology.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--start-file")
    ap.add_argument("--rate", type=float, default=5.0)
    ap.add_argument("--calls", type=int, default=275)
    ap.add_argument("--hold-s", type=float, default=float(os.environ.get("HOLD_S", 8)))
    ap.add_argument("--no-echo-s", type=float, default=2.0)
    ap.add_argument("--call-timeout-s", type=float, default=12.0)
    ap.add_argument("--ip", default="127.0.0.1")
    a = ap.parse_args(argv)
    h, _, p = a.proxy.rpartition(":")
    with open(a.regions) as f:
        regions = json.load(f)["regions"]
    st = Settings((h, int(p)), a.ip, a.hold_s, a.no_echo_s, a.call_timeout_s)
    recs = asyncio.run(run_calls(st, regions, a.rate, min(a.calls, 100000), a.out, a.start_file))
    bad = sum(1 for r in recs if r.status != "answered")
    print(f"caller: {len(recs)} calls, {bad} not answered")


if __name__ == "__main__":
    main()
