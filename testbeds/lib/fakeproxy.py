#!/usr/bin/env python3
"""A stand-in proxy to check the TESTBED itself end to end. It is NOT sosrouter, and its figures mean nothing.

    testbeds/lib/fakeproxy.py run --rules IGNORED [--listen 127.0.0.1:5060] [--seconds N]

Stateless, UDP only, standard library only. It does just enough for the testbed's proxy mode:
  - adds its Via (branch derived from the incoming one, so a CANCEL matches its INVITE) and, on INVITE,
    Record-Route <sip:127.0.0.1:5060;lr>; drops its own Route on the way back in;
  - sends an emergency INVITE (Request-URI pointing at itself, urn:, or tel:) to the first "up" target
    of 127.0.0.1:5071, :5072, :5073; other requests go to their Route or Request-URI;
  - probes each target with OPTIONS every 0.25 s; a target is up when it answered within the last 0.75 s;
  - pops its Via from responses and sends them to the next Via.
Failover happens only through the caller's own INVITE retransmissions (stateless), and a 503 is passed on.
The testbed uses it with SOSROUTER=testbeds/lib/fakeproxy.py (see README, "Checking the testbed").
"""
import hashlib
import re
import socket
import sys
import time

TARGETS = [("127.0.0.1", 5071), ("127.0.0.1", 5072), ("127.0.0.1", 5073)]


def main(argv):
    listen = ("127.0.0.1", 5060)
    seconds = 600
    for i, a in enumerate(argv):
        if a == "--listen":
            h, p = argv[i + 1].rsplit(":", 1)
            listen = (h, int(p))
        if a == "--seconds":
            seconds = float(argv[i + 1])
    me = f"{listen[0]}:{listen[1]}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(listen)
    sock.settimeout(0.05)
    last_ok = {t: 0.0 for t in TARGETS}
    next_probe = 0.0
    n = 0
    end = time.time() + seconds
    while time.time() < end:
        now = time.time()
        if now >= next_probe:
            next_probe = now + 0.25
            for t in TARGETS:
                n += 1
                msg = (f"OPTIONS sip:{t[0]}:{t[1]} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKprobe{n}\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=p{n}\r\nTo: <sip:{t[0]}:{t[1]}>\r\n"
                       f"Call-ID: probe-{n}@{me}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n")
                try:
                    sock.sendto(msg.encode(), t)
                except OSError:
                    pass
        try:
            data, src = sock.recvfrom(65535)
        except (socket.timeout, ConnectionRefusedError):
            continue
        except OSError:
            continue
        text = data.decode("utf-8", "replace")
        head, sep, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        if lines[0].startswith("SIP/2.0"):
            vias = [i for i, l in enumerate(lines) if l.lower().startswith("via:")]
            if not vias:
                continue
            top = lines[vias[0]]
            if "branch=z9hG4bKprobe" in top:
                if lines[0].startswith("SIP/2.0 200"):
                    last_ok[src] = time.time()
                continue
            # "Via: a, b" (one line, several values) or several Via lines
            values = top.split(":", 1)[1].split(",")
            if len(values) > 1:
                lines[vias[0]] = "Via:" + ",".join(values[1:])
                nxt = values[1]
            else:
                del lines[vias[0]]
                if len(vias) < 2:
                    continue
                nxt = lines[vias[1] - 1].split(":", 1)[1].split(",")[0]
            m = re.search(r"SIP/2.0/\w+\s+([^;:\s]+)(?::(\d+))?", nxt)
            if m:
                sock.sendto(("\r\n".join(lines) + sep + body).encode(), (m.group(1), int(m.group(2) or 5060)))
            continue
        # a request
        method, ruri = lines[0].split(" ")[0], lines[0].split(" ")[1]
        out = [lines[0]]
        route = None
        for l in lines[1:]:
            if l.lower().startswith("route:") and me in l:
                continue  # our own Route
            if l.lower().startswith("route:") and route is None:
                route = l
            out.append(l)
        vias = [i for i, l in enumerate(out) if l.lower().startswith("via:")]
        inbranch = re.search(r"branch=([^;,\s]+)", out[vias[0]]) if vias else None
        branch = "z9hG4bK" + hashlib.md5((inbranch.group(1) if inbranch else head).encode()).hexdigest()[:16]
        out.insert(1, f"Via: SIP/2.0/UDP {me};branch={branch}")
        if method == "INVITE":
            out.insert(2, f"Record-Route: <sip:{me};lr>")
        dest_uri = route.split(":", 1)[1] if route else ruri
        if (me in ruri or ruri.startswith(("urn:", "tel:"))) and not route:
            up = [t for t in TARGETS if time.time() - last_ok[t] < 0.75]
            dest = up[0] if up else TARGETS[-1]
        else:
            m = re.search(r"sips?:(?:[^@;>]*@)?([^:;>]+)(?::(\d+))?", dest_uri)
            if not m:
                continue
            dest = (m.group(1), int(m.group(2) or 5060))
        try:
            sock.sendto(("\r\n".join(out) + sep + body).encode(), dest)
        except OSError:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
