"""Interop with SIP stacks nobody here wrote (Debian packages), on loopback: `testbeds/run interop`.

Stack pairs x transports, each row with fresh processes:
  sipp>kamailio>sosrouter>sipp        SIPp callers -> Kamailio 5.6 edge proxy (testbeds/kamailio/edge.cfg)
                                      -> sosrouter -> SIPp PSAP; CALLS calls per row. SIPp carries no RTP here:
                                      media is n/a. TLS row: only the Kamailio<->sosrouter leg is TLS
                                      (Debian's SIPp has no TLS), the caller and PSAP legs stay UDP.
  baresip>sosrouter>baresip           a real baresip caller -> sosrouter -> a real auto-answering baresip PSAP;
                                      every leg on the row's transport; two calls with audio (baresip's RTP).
  baresip>kamailio>sosrouter>baresip  the same through the Kamailio edge as well.
  baresip>kamailio>baresip            control, no sosrouter: Kamailio relays straight to the baresip PSAP. It
                                      runs over TLS even when sosrouter has none, so a failing TLS row with a
                                      passing control points at sosrouter, not at the lab's certificates.

Per row: setup ok (answered), teardown ok (the BYE crossed the route set and both ends saw the call end;
baresip rows make two calls, the caller hangs up the first and the PSAP the second), media ok (baresip: both ends sent and received at least MIN_RTP RTP packets, from
baresip's own end-of-call statistics), setup time (INVITE sent -> 200 received, median for SIPp rows).
TLS rows run only when sosrouter supports TLS (`sosrouter check` accepts a rules file with a [tls] section
and a tls listen); otherwise they are reported "skipped: sosrouter has no TLS" and do not fail the run.

Ports (loopback, 15000-15499): sosrouter 15060 udp/tcp, 15061 tls; Kamailio edge 15160 udp/tcp, 15161 tls;
SIPp PSAP 15171, SIPp caller 15180; baresip PSAP 15210 (tls 15211), caller 15220 (tls 15221), their
ctrl_tcp 15231/15230, RTP 15400-15499.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from . import lab, procs

HERE = lab.HERE
SCEN = lab.SCEN
IP = "127.0.0.1"
P = dict(sos=15060, sos_tls=15061, edge=15160, edge_tls=15161, sipp_psap=15171, sipp_caller=15180,
         bs_psap=15210, bs_caller=15220, ctl_psap=15231, ctl_caller=15230)
PAIRS = ["sipp>kamailio>sosrouter>sipp", "baresip>sosrouter>baresip", "baresip>kamailio>sosrouter>baresip",
         "baresip>kamailio>baresip"]
CONTROL = "baresip>kamailio>baresip"     # no sosrouter: proves the harness (certificates, configs) on its own
TRANSPORTS = ["udp", "tcp", "tls"]
MIN_RTP = 25          # packets each way at each end: 0.5 s of 20 ms audio
SKIP_NO_TLS = "skipped: sosrouter has no TLS"


def say(msg: str):
    lab.say(msg)


# ---------------------------------------------------------------- parsing (pure; tests in testbeds/tests)
def parse_netstrings(buf: bytes) -> tuple:
    """baresip ctrl_tcp frames: netstrings `LEN:JSON,`. Returns (decoded objects, unconsumed bytes)."""
    out = []
    while True:
        colon = buf.find(b":")
        if colon <= 0 or not buf[:colon].isdigit():
            return out, buf
        n = int(buf[:colon])
        end = colon + 1 + n
        if len(buf) < end + 1:
            return out, buf
        try:
            out.append(json.loads(buf[colon + 1:end].decode("utf-8", "replace")))
        except ValueError:
            pass
        buf = buf[end + 1:]


_PACKETS = re.compile(r"^packets:\s+(\d+)\s+(\d+)\s*$", re.M)


def parse_baresip_audio(log: str) -> list:
    """baresip's end-of-call audio statistics ("packets: TX RX" under "audio Transmit: Receive:"), one
    (tx, rx) per call that ended with audio, in order."""
    return [(int(tx), int(rx)) for tx, rx in _PACKETS.findall(log.replace("\r", ""))]


def parse_sipp_caller_log(text: str) -> dict:
    """caller.xml's -trace_logs lines (START|ANSWER|BYELOST <sec> <usec> <call-id>): counts and setup times."""
    start, setup, byelost, answered = {}, [], 0, 0
    for line in text.splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        try:     # SIPp prints the [$ts] [$tus] variables as floats: "1796184652.000000 660570.000000"
            t = int(float(f[1])) + float(f[2]) / 1e6
        except ValueError:
            continue
        if f[0] == "START":
            start[f[3]] = t
        elif f[0] == "ANSWER":
            answered += 1
            if f[3] in start:
                setup.append((t - start[f[3]]) * 1000)
        elif f[0] == "BYELOST":
            byelost += 1
    return {"started": len(start), "answered": answered, "byelost": byelost, "setup_ms": setup,
            "call_ids": sorted(start)}


def ap_call_ids(text: str, what: str) -> set:
    """psap.xml's -trace_logs lines (`WHAT <sec> <usec> <call-id>`): the Call-IDs with a `what` (INVITE, ACK,
    BYE) line. sosrouter's own test calls (Call-ID sostest-...) reach the PSAP too: callers count theirs."""
    return {f[3] for f in (line.split() for line in text.splitlines()) if len(f) >= 4 and f[0] == what}


@dataclass
class Row:
    pair: str
    transport: str
    legs: str = ""
    setup_ok: bool | None = None
    teardown_ok: bool | None = None
    media_ok: bool | None = None        # None: not measured (SIPp carries no RTP here)
    setup_ms: float | None = None
    calls: int = 0
    detail: str = ""
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.skipped) or (bool(self.setup_ok) and bool(self.teardown_ok) and self.media_ok is not False)


def mark(v) -> str:
    return "n/a" if v is None else ("ok" if v else "FAIL")


def table(rows: list) -> str:
    head = f"{'stack pair':<36} {'transport':<9} {'legs':<12} {'setup':<6} {'teardown':<8} {'media':<6} {'setup ms':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.skipped:
            lines.append(f"{r.pair:<36} {r.transport:<9} {r.legs:<12} {r.skipped}")
            continue
        ms = f"{r.setup_ms:.1f}" if r.setup_ms is not None else "-"
        lines.append(f"{r.pair:<36} {r.transport:<9} {r.legs:<12} {mark(r.setup_ok):<6} {mark(r.teardown_ok):<8} "
                     f"{mark(r.media_ok):<6} {ms:>9}" + (f"   {r.detail}" if r.detail and not r.ok else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------- certificates (lab CA, openssl CLI)
def make_pki(d: str) -> dict:
    """A lab CA and one certificate per role (EC P-256, 90 days: `check` warns within 30): files under d.
    Names: sosrouter.lab, psap.lab, edge.lab, caller.lab, each also valid for IP 127.0.0.1."""
    os.makedirs(d, exist_ok=True)
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")

    def ossl(*a):
        r = subprocess.run(["openssl", *a], capture_output=True, text=True, cwd=d)
        if r.returncode:
            raise lab.Fail(f"openssl {' '.join(a[:2])} failed: {r.stderr.strip()[:300]}")

    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key,
         "-out", ca, "-days", "90", "-subj", "/CN=sosrouter interop lab CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    files = {"ca": ca}
    for name in ("sosrouter", "psap", "edge", "caller"):
        key, csr, crt = (os.path.join(d, f"{name}.{x}") for x in ("key", "csr", "pem"))
        ext = os.path.join(d, f"{name}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:{name}.lab,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n")
        ossl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
             "-out", csr, "-subj", f"/CN={name}.lab")
        ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days", "90",
             "-extfile", ext)
        both = os.path.join(d, f"{name}.both.pem")     # cert + key in one file (baresip, stunnel)
        with open(both, "w") as f:
            f.write(open(crt).read() + open(key).read())
        files[name] = {"cert": crt, "key": key, "both": both}
    return files


# ---------------------------------------------------------------- sosrouter
def sos_rules(listen: list, target_uri: str, target_transport: str, pki: dict | None = None,
              client_auth: str = "none", tls_name: str = "psap.lab") -> str:
    """A one-target rules file: every call goes to the PSAP (the last resort of its chain, always tried)."""
    ls = ", ".join(f'"{x}"' for x in listen)
    s = f"""# testbeds/run interop: written per row
listen = [{ls}]

[defaults]
attempt_timeout_ms = 2000
ring_timeout_ms = 10000
call_deadline_ms = 30000

[overload]
trusted_sources = ["127.0.0.0/8"]
"""
    if pki:
        s += f"""
[tls]
cert_file = "{pki['sosrouter']['cert']}"
key_file = "{pki['sosrouter']['key']}"
ca_file = "{pki['ca']}"
client_auth = "{client_auth}"
"""
    s += f"""
[[targets]]
id = "psap"
uri = "{target_uri}"
transport = "{target_transport}"
failure_domain = "psap-interop"
"""
    if target_transport == "tls":
        s += f'tls_name = "{tls_name}"\n'
    s += '\n[default_route]\nchain = ["psap"]\n'
    return s


def sos_supports_tls(sosrouter: str, d: str, pki: dict) -> bool:
    """True when `sosrouter check` accepts a rules file with a [tls] section, a tls listen and a TLS target."""
    path = os.path.join(d, "tls-probe.toml")
    with open(path, "w") as f:
        f.write(sos_rules([f"tls:{IP}:{P['sos_tls']}"], f"sip:{IP}:{P['bs_psap'] + 1}", "tls", pki))
    try:
        r = subprocess.run([sosrouter, "check", path], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    with open(os.path.join(d, "tls-probe.txt"), "w") as f:
        f.write(f"exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r.returncode == 0


def wait_tcp(port: int, timeout: float, proc: procs.Proc | None = None) -> bool:
    def up():
        if proc is not None and not proc.alive():
            return True
        try:
            socket.create_connection((IP, port), timeout=0.3).close()
            return True
        except OSError:
            return False
    return procs.wait_until(up, timeout, 0.1) and (proc is None or proc.alive())


# ---------------------------------------------------------------- baresip
def write_baresip(d: str, user: str, sip_port: int, ctl_port: int, rtp: str, answer: str, tone: str,
                  pki: dict | None, role: str):
    os.makedirs(d, exist_ok=True)
    tls = ""
    if pki:
        tls = f"sip_certificate {pki[role]['both']}\nsip_cafile {pki['ca']}\n"
    with open(os.path.join(d, "config"), "w") as f:
        f.write(f"""poll_method epoll
sip_listen {IP}:{sip_port}
net_interface {IP}
{tls}call_local_timeout 120
call_max_calls 4
audio_player aubridge,{user}
audio_alert aubridge,{user}
audio_source aufile,{tone}
rtp_ports {rtp}
rtp_stats yes
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module aubridge.so
module ctrl_tcp.so
module_tmp account.so
module_app menu.so
ctrl_tcp_listen {IP}:{ctl_port}
""")
    with open(os.path.join(d, "accounts"), "w") as f:
        f.write(f"<sip:{user}@{IP}>;regint=0;answermode={answer};audio_codecs=pcmu\n")


def write_tone(path: str, seconds: int = 10):
    """8 kHz mono 16-bit 440 Hz tone: baresip's aufile source (no sound device)."""
    import math
    import struct
    import wave
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
                               for i in range(8000 * seconds)))


class Ctl:
    """baresip's ctrl_tcp: commands as netstring JSON, events read back with their arrival time."""

    def __init__(self, port: int, log: str):
        self.sock = socket.create_connection((IP, port), timeout=2)
        self.sock.settimeout(0.1)
        self.buf = b""
        self.events = []          # (monotonic time, object)
        self.log = open(log, "a")

    def send(self, command: str, params: str = ""):
        b = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.sock.sendall(str(len(b)).encode() + b":" + b + b",")
        self.log.write(f"{time.time():.6f} > {command} {params}\n")

    def pump(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        except OSError:
            return
        now = time.monotonic()
        objs, self.buf = parse_netstrings(self.buf + data)
        for o in objs:
            self.events.append((now, o))
            self.log.write(f"{time.time():.6f} < {json.dumps(o)}\n")

    def wait_event(self, types: tuple, timeout: float, since: float = 0.0):
        """The first event of one of types that arrived at or after `since` (monotonic), already received or
        arriving within timeout: (time, object), or (None, None)."""
        end = time.monotonic() + timeout
        seen = 0
        while True:
            for t, o in self.events[seen:]:
                if t >= since and o.get("event") and o.get("type") in types:
                    return t, o
            seen = len(self.events)
            if time.monotonic() >= end:
                return None, None
            self.pump()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.log.close()


# ---------------------------------------------------------------- the run
class Interop:
    def __init__(self, out: str, sosrouter: str):
        self.out = out
        self.sosrouter = sosrouter
        self.pki = make_pki(os.path.join(out, "pki"))
        self.tls = sos_supports_tls(sosrouter, out, self.pki)
        self.tone = os.path.join(out, "tone.wav")
        write_tone(self.tone)
        self.calls = int(os.environ.get("CALLS") or 20)
        self.client_auth = os.environ.get("CLIENT_AUTH", "require")

    # ---- processes
    def start_sosrouter(self, g: procs.Group, d: str, transport: str, target_uri: str, target_t: str,
                        client_auth: str = "none"):
        listen = [f"udp:{IP}:{P['sos']}", f"tcp:{IP}:{P['sos']}"]
        if transport == "tls" or target_t == "tls":
            listen.append(f"tls:{IP}:{P['sos_tls']}")
        rules = os.path.join(d, "rules.toml")
        with open(rules, "w") as f:
            f.write(sos_rules(listen, target_uri, target_t, self.pki if "tls:" in " ".join(listen) else None,
                              client_auth))
        argv = [self.sosrouter, "run", "--rules", rules, "--undelivered", os.path.join(d, "undelivered.jsonl"),
                "--admin", "off", "--no-watch"]
        p = g.start("sosrouter", argv, os.path.join(d, "sosrouter.log"), 120, cwd=d)
        if not wait_tcp(P["sos"], 10, p):
            raise lab.Fail(f"sosrouter did not start; see {d}/sosrouter.log")
        return p

    def start_edge(self, g: procs.Group, d: str, next_hop: str, tls: bool):
        run = os.path.join(d, "kamailio-run")
        os.makedirs(run, exist_ok=True)
        argv = ["kamailio", "-f", os.path.join(HERE, "kamailio", "edge.cfg"), "-DD", "-E", "-m", "64", "-M", "8",
                "-Y", run, "-w", run, "-A", f"EDGE_PORT={P['edge']}", "-A", f"EDGE_TLS_PORT={P['edge_tls']}",
                "-A", f'NEXT_HOP="{next_hop}"']
        if tls:
            cfg = os.path.join(d, "kamailio-tls.cfg")
            write_kamailio_tls(cfg, self.pki, "edge")
            argv += ["-A", "WITH_TLS", "-A", f'TLS_CFG="{cfg}"']
        p = g.start("kamailio", argv, os.path.join(d, "kamailio.log"), 120, cwd=run)
        if not wait_tcp(P["edge_tls"] if tls else P["edge"], 10, p):
            raise lab.Fail(f"kamailio did not start; see {d}/kamailio.log")
        return p

    def start_baresip(self, g: procs.Group, d: str, name: str, tls: bool) -> procs.Proc:
        if name == "psap":
            write_baresip(d, "911", P["bs_psap"], P["ctl_psap"], "15400-15449", "auto", self.tone,
                          self.pki if tls else None, "psap")
            port = P["ctl_psap"]
        else:
            write_baresip(d, "caller", P["bs_caller"], P["ctl_caller"], "15450-15499", "manual", self.tone,
                          self.pki if tls else None, "caller")
            port = P["ctl_caller"]
        p = g.start(f"baresip-{name}", ["stdbuf", "-oL", "-eL", "baresip", "-f", d, "-v"],
                    os.path.join(d, "baresip.log"), 90, cwd=d)
        if not wait_tcp(port, 10, p):
            raise lab.Fail(f"baresip {name} did not start; see {d}/baresip.log")
        return p

    # ---- rows
    def row(self, pair: str, transport: str) -> Row:
        d = os.path.join(self.out, f"{pair.replace('>', '-')}-{transport}")
        os.makedirs(d, exist_ok=True)
        r = Row(pair, transport)
        if transport == "tls" and not self.tls and pair != CONTROL:
            r.legs = "-"
            r.skipped = SKIP_NO_TLS
            return r
        g = procs.Group()
        try:
            if pair.startswith("sipp"):
                self.sipp_row(g, d, r)
            else:
                self.baresip_row(g, d, r, via_edge="kamailio" in pair, via_sos="sosrouter" in pair)
        except (lab.Fail, OSError) as e:
            r.detail = str(e)
            r.setup_ok = bool(r.setup_ok)
            r.teardown_ok = bool(r.teardown_ok)
        finally:
            g.stop_all()
        if not pair.startswith("sipp") and r.setup_ok:
            self.media_verdict(d, r)
        with open(os.path.join(d, "row.json"), "w") as f:
            json.dump(asdict(r), f, indent=2)
        return r

    def sos_hop(self, t: str) -> str:
        port = P["sos_tls"] if t == "tls" else P["sos"]
        return f"sip:{IP}:{port};transport={t}"

    def sipp_row(self, g: procs.Group, d: str, r: Row):
        t = r.transport
        side = "udp" if t == "tls" else t          # SIPp has no TLS: caller and PSAP legs stay UDP
        r.legs = f"{side}|{t}|{side}"
        sipp_t = "t1" if side == "tcp" else "u1"
        apd = os.path.join(d, "psap")
        os.makedirs(apd, exist_ok=True)
        g.start("sipp-psap", ["sipp", "-sf", os.path.join(SCEN, "psap.xml"), "-i", IP, "-p", str(P["sipp_psap"]),
                              "-t", sipp_t, "-m", "100000", "-rtp_echo", "-mp", "15300", "-timeout", "90s", "-nostdin",
                              "-trace_logs", "-log_file", "ap.log", "-trace_err", "-error_file", "errors.log"],
                os.path.join(apd, "stdout.txt"), 100, cwd=apd)
        self.start_sosrouter(g, d, t, f"sip:{IP}:{P['sipp_psap']}", side,
                             client_auth=self.client_auth if t == "tls" else "none")
        self.start_edge(g, d, self.sos_hop(t), tls=(t == "tls"))
        time.sleep(1.0)      # sosrouter's first probe of the PSAP
        cd = os.path.join(d, "caller")
        os.makedirs(cd, exist_ok=True)
        n = self.calls
        with open(os.path.join(cd, "calls.csv"), "w") as f:
            f.write("SEQUENTIAL\n")
            for i in range(n):
                f.write(f"sip:911@{IP}:{P['edge']};1617555{i:04d};\n")
        argv = ["sipp", "-sf", os.path.join(SCEN, "caller.xml"), "-inf", "calls.csv", "-i", IP,
                "-p", str(P["sipp_caller"]), "-t", sipp_t, "-r", "10", "-m", str(n), "-d", "200",
                "-recv_timeout", "8000", "-timeout", "60s", "-timeout_error", "-nostdin", "-trace_logs",
                "-log_file", "caller.log", "-trace_err", "-error_file", "errors.log", f"{IP}:{P['edge']}"]
        c = g.start("sipp-caller", argv, os.path.join(cd, "stdout.txt"), 75, cwd=cd)
        rc = c.popen.wait()
        time.sleep(0.5)
        log = read(os.path.join(cd, "caller.log"))
        s = parse_sipp_caller_log(log)
        byes = len(ap_call_ids(read(os.path.join(apd, "ap.log")), "BYE") & set(s["call_ids"]))
        r.calls = n
        r.setup_ok = rc == 0 and s["answered"] == n
        r.teardown_ok = r.setup_ok and s["byelost"] == 0 and byes == n
        r.media_ok = None
        r.setup_ms = statistics.median(s["setup_ms"]) if s["setup_ms"] else None
        r.detail = (f"SIPp exit {rc}, {s['answered']}/{n} answered, {s['byelost']} BYE lost, "
                    f"{byes} BYE at the PSAP")

    def baresip_row(self, g: procs.Group, d: str, r: Row, via_edge: bool, via_sos: bool = True):
        t = r.transport
        tls = t == "tls"
        r.legs = "|".join([t] * (1 + via_edge + via_sos))
        psap_port = P["bs_psap"] + (1 if tls else 0)        # baresip listens TLS on its SIP port + 1
        self.start_baresip(g, os.path.join(d, "psap"), "psap", tls)
        self.start_baresip(g, os.path.join(d, "caller"), "caller", tls)
        if via_sos:
            self.start_sosrouter(g, d, t, f"sip:{IP}:{psap_port}", t,
                                 client_auth=self.client_auth if (tls and via_edge) else "none")
        if via_edge:
            self.start_edge(g, d, self.sos_hop(t) if via_sos else f"sip:{IP}:{psap_port};transport={t}", tls=tls)
            first = f"sip:911@{IP}:{P['edge_tls'] if tls else P['edge']};transport={t}"
        else:
            first = f"sip:911@{self.sos_hop(t)[4:].split(';')[0]};transport={t}"
        time.sleep(1.0)
        caller = Ctl(P["ctl_caller"], os.path.join(d, "caller", "ctrl.log"))
        psap = Ctl(P["ctl_psap"], os.path.join(d, "psap", "ctrl.log"))
        try:
            # Two calls: the caller hangs up the first, the PSAP the second (its BYE travels the route set
            # back toward the caller: over TCP and TLS on the caller's own connection).
            setups, teardowns = [], []
            for n, hanger in enumerate(("caller", "psap"), 1):
                r.calls = n
                t0 = time.monotonic()
                caller.send("dial", first)
                te, ev = caller.wait_event(("CALL_ESTABLISHED", "CALL_CLOSED"), 15, t0)
                if ev is None or ev.get("type") != "CALL_ESTABLISHED":
                    r.setup_ok = False
                    r.detail = f"call {n}: no answer: {ev.get('param') if ev else 'nothing within 15 s'}"
                    return
                setups.append((te - t0) * 1000)
                pe, _ = psap.wait_event(("CALL_ESTABLISHED",), 5, t0)
                if pe is None:
                    r.setup_ok = False
                    r.detail = f"call {n}: the PSAP never saw the call established"
                    return
                # Let audio flow, then hang up.
                end = time.monotonic() + 2.0
                while time.monotonic() < end:
                    caller.pump()
                    psap.pump()
                th = time.monotonic()
                (caller if hanger == "caller" else psap).send("hangup")
                _, pc = psap.wait_event(("CALL_CLOSED",), 8, th)
                _, cc = caller.wait_event(("CALL_CLOSED",), 8, th)
                teardowns.append(pc is not None and cc is not None)
                if not teardowns[-1]:
                    r.detail = (f"call {n} ({hanger} hung up): PSAP closed={pc is not None}, "
                                f"caller closed={cc is not None}")
            r.setup_ok = True
            r.setup_ms = statistics.median(setups)
            r.teardown_ok = all(teardowns)
        finally:
            caller.close()
            psap.close()

    def media_verdict(self, d: str, r: Row):
        """After the baresips stopped (their end-of-call statistics are in their logs): every call of the row
        had audio both ways at both ends."""
        got = {n: parse_baresip_audio(read(os.path.join(d, n, "baresip.log"))) for n in ("caller", "psap")}
        r.media_ok = all(len(v) == r.calls and all(tx >= MIN_RTP and rx >= MIN_RTP for tx, rx in v)
                         for v in got.values())
        stats = "; ".join(f"{n} tx/rx " + (", ".join(f"{tx}/{rx}" for tx, rx in v) or "none")
                          for n, v in got.items())
        r.detail = (r.detail + "; " if r.detail else "") + f"RTP packets per call: {stats}"


def write_kamailio_tls(path: str, pki: dict, role: str):
    """The tls module's profiles: our certificate as server and as client (sosrouter may require one), and
    the lab CA to verify sosrouter's certificate."""
    c = pki[role]
    with open(path, "w") as f:
        f.write(f"""[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {c['cert']}
private_key = {c['key']}
ca_list = {pki['ca']}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = {c['cert']}
private_key = {c['key']}
ca_list = {pki['ca']}
""")


def read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def kamailio_tls_module() -> bool:
    import glob
    return bool(glob.glob("/usr/lib/*/kamailio/modules/tls.so") or glob.glob("/usr/lib/kamailio/modules/tls.so"))


def need_tools():
    """Install what is missing with apt-get (as every testbed command does), kamailio-tls-modules included."""
    for cmd, pkg in (("sipp", "sip-tester"), ("kamailio", "kamailio"), ("baresip", "baresip"),
                     ("openssl", "openssl"), ("stdbuf", "coreutils")):
        lab.need(cmd, pkg)
    if not kamailio_tls_module():
        lab.say("Kamailio's tls module missing: installing the Debian package kamailio-tls-modules")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        if subprocess.call(sudo + ["apt-get", "install", "-y", "kamailio-tls-modules"]) != 0:
            subprocess.call(sudo + ["apt-get", "update"])
            subprocess.call(sudo + ["apt-get", "install", "-y", "kamailio-tls-modules"])
        if not kamailio_tls_module():
            raise lab.Fail("could not install kamailio-tls-modules")


def busy_ports() -> list:
    return [p for p in sorted(set(P.values()) | {P["bs_psap"] + 1, P["bs_caller"] + 1}) if procs.port_users(p)]


def cmd_interop(cfg: lab.Config, args: list) -> int:
    need_tools()
    pairs = [a for a in args if a in PAIRS] or PAIRS
    transports = [a for a in args if a in TRANSPORTS] or TRANSPORTS
    if cfg.build and not os.environ.get("SOSROUTER"):
        say("building sosrouter (cargo build --release)")
        if subprocess.call(["cargo", "build", "--release"], cwd=lab.ROOT, stdout=sys.stderr):
            raise lab.Fail("cargo build --release failed")
    # A private copy: the shared target dir's binary may be replaced by another build mid-run.
    out = cfg.out_dir or os.path.join(HERE, "out", f"{time.strftime('%Y%m%d-%H%M%S')}-interop")
    os.makedirs(out, exist_ok=True)
    sos = os.path.join(out, "sosrouter.bin")
    if not os.access(cfg.sosrouter, os.X_OK):
        raise lab.Fail(f"no sosrouter binary at {cfg.sosrouter}")
    shutil.copy(cfg.sosrouter, sos)
    busy = busy_ports()
    if busy:
        raise lab.Fail(f"ports in use: {busy} (another interop run?)")
    it = Interop(out, sos)
    say(f"interop: sosrouter TLS support: {'yes' if it.tls else 'no'}; outputs in {out}")
    rows = []
    for pair in pairs:
        for t in transports:
            say(f"interop: {pair} over {t}")
            r = it.row(pair, t)
            say(f"  -> {'skipped' if r.skipped else ('ok' if r.ok else 'FAIL')} {r.detail}")
            rows.append(r)
    text = table(rows)
    print(text)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"tls": it.tls, "rows": [dict(asdict(r), ok=r.ok) for r in rows]}, f, indent=2)
    say(f"outputs in {out}")
    return 0 if all(r.ok for r in rows) else 1
