"""The scale testbed: sosrouter with rules generated at size (N routes x P caller prefixes), measured.

Rules (rules_toml): N PSAP routes, each `chain = [primary, backup, business line]`, the business lines
all reached through one shared PSTN gateway, so there are 2N+1 probe hosts and 3N+1 targets. Route i
matches P caller prefixes; the load's caller (1617555xxxx) matches only the LAST route, the worst case
of first-match. Targets live on many loopback addresses (127.20.0.0/14, PORTS_PER_ADDR ports each):
backups answer OPTIONS (the responder, testbeds/scale-responder in Rust, or this module's with
SCALE_RESPONDER=python: one socket per port bound to 0.0.0.0, replying from the address that was asked,
IP_PKTINFO), primaries do not (a socket that never reads: datagrams
are dropped without an ICMP error, like a silent host). The last route's primary and backup and the
gateway are SIPp answering points on 127.0.0.1 (psap.xml), so calls are answered.

`testbeds/run scale` measures, for each size: time to load (start until /metrics answers), idle CPU of
the proxy (probing only), probe lateness p99 (sosrouter_probe_lateness_seconds over the idle window),
resident memory, time to reload a changed file (SIGHUP until /status shows the new version), calls/s
at the knee (a bounded stair with SIPp), setup p50/p99 at 1000 calls/s. Results as data in
testbeds/out/<stamp>-scale/ (result.json, summary.txt, scale.png).

SCALE_PROBE=0 writes the rules with `probe = false` (a diagnostic: the cost of the rules' size on the
call path alone, without the probing traffic of their hosts).

`testbeds/run scale-reload` reloads an 18 000-target file (6000 x 30) several times, alternating two
versions that differ by a few hundred targets, while 1000 calls/s flow: no call may fail, and the
setup time of every call is reported (max and the count over 50 ms).

Kamailio's dispatcher probing the same probe hosts at the same interval and timeout (testbeds/kamailio/
probe.cfg) runs beside sosrouter during the idle window, for every size up to SCALE_KAMAILIO_MAX_HOSTS
probe hosts (default 2001; 0 turns it off): both processes' CPU is read over the same seconds, and the
responder counts the probes it answered from each (kamailio probes/s).

Ports (the drill range SCALE_PORT_BASE..+999, default 17000): proxy +60, admin +90, SIPp +71..+73 (media
+300..), caller +61 (media +400), responder +100.., silent +200.., Kamailio (probing only) +80.
"""
from __future__ import annotations

import json
import math
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # testbeds/
ROOT = os.path.dirname(HERE)

PORT_BASE = int(os.environ.get("SCALE_PORT_BASE") or 17000)
PROXY_PORT = PORT_BASE + 60
ADMIN_PORT = PORT_BASE + 90
SIPP_PRIMARY, SIPP_BACKUP, SIPP_GATEWAY = PORT_BASE + 71, PORT_BASE + 72, PORT_BASE + 73
KAMAILIO_PORT = PORT_BASE + 80
ANSWER_BASE, SILENT_BASE = PORT_BASE + 100, PORT_BASE + 200
PORTS_PER_ADDR = 4
CALLER_PREFIX = "+1617555"
CALLER_PORT = PORT_BASE + 61
CALLER_MEDIA_PORT = PORT_BASE + 400

# (routes, prefixes): the sizes of the full run and of the quick (CI) run.
# 1 x 1 is lab-sized rules (4 targets) in the same run: the baseline of "1000 x 100 sustains >= 0.9x".
FULL_SIZES = [(1, 1), (100, 10), (1000, 100), (6000, 30), (10000, 2)]
QUICK_SIZES = [(1, 1), (1000, 100)]


def say(msg: str):
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ rules at size (pure)
def addr_of(k: int) -> tuple:
    """Address of generated target number k (k >= 0): 127.20.0.0/14, PORTS_PER_ADDR ports per address.
    Returns (ip, port offset)."""
    h, off = divmod(k, PORTS_PER_ADDR)
    a, rest = divmod(h, 250 * 250)
    b, c = divmod(rest, 250)
    return f"127.{20 + a}.{b}.{c + 1}", off


def route_prefixes(i: int, n: int, p: int) -> list:
    """P caller prefixes of route i of n. Only the last route's first prefix (1617555) matches the load's
    callers; no other prefix is a prefix of theirs, nor theirs of it."""
    if i == n - 1:
        return [CALLER_PREFIX] + [f"+3{i:05d}{j:04d}" for j in range(p - 1)]
    return [f"+2{i:05d}{j:04d}" for j in range(p)]


@dataclass
class Layout:
    """Who answers where, for one generated rules file."""
    routes: int
    prefixes: int
    answering: list = field(default_factory=list)   # (ip, port) the responder answers
    silent: list = field(default_factory=list)      # (ip, port) nobody answers (datagrams dropped)

    @property
    def probe_hosts(self) -> int:
        return 2 * self.routes + 1

    @property
    def targets(self) -> int:
        return 3 * self.routes + 1


def rules_toml(routes: int, prefixes: int, variant: int = 0, proxy_port: int = PROXY_PORT,
               probe: bool = True) -> tuple:
    """The rules text and its Layout. `variant` 1 replaces the first 5% of the routes' targets by new ids
    and addresses (a reload that removes some targets and adds others; the rest keep their ids)."""
    if routes < 1 or prefixes < 1:
        raise ValueError("routes and prefixes must be >= 1")
    lay = Layout(routes, prefixes)
    changed = max(1, routes // 20) if variant else 0
    out = [f"""# sosrouter routing rules at size: {routes} routes x {prefixes} caller prefixes (variant {variant}),
# generated by testbeds/sostest/scale.py. Loopback only.
listen = ["udp:127.0.0.1:{proxy_port}"]

[defaults]
attempt_timeout_ms = 1000
ring_timeout_ms = 10000
call_deadline_ms = 30000
failover_codes = ["408", "480", "486", "5xx", "600", "603"]

[health]
probe = {"true" if probe else "false"}
probe_interval_ms = 1000
probe_timeout_ms = 400
probe_jitter_percent = 20

[test_calls]
enabled = false

[overload]
trusted_sources = ["127.0.0.0/8"]
non_emergency_calls_max = 20000
calls_max = 40000

[[targets]]
id = "gw"
uri = "sip:127.0.0.1:{SIPP_GATEWAY}"
failure_domain = "pstn"
"""]
    for i in range(routes):
        gen = "b" if i < changed else "a"
        last = i == routes - 1
        if last:
            prim, back = f"127.0.0.1:{SIPP_PRIMARY}", f"127.0.0.1:{SIPP_BACKUP}"
        else:
            # Target numbers: the variant's new targets take addresses beyond every first-variant one.
            base = 2 * i + (2 * routes if gen == "b" else 0)
            (pip, poff), (bip, boff) = addr_of(base), addr_of(base + 1)
            prim, back = f"{pip}:{SILENT_BASE + poff}", f"{bip}:{ANSWER_BASE + boff}"
            lay.silent.append((pip, SILENT_BASE + poff))
            lay.answering.append((bip, ANSWER_BASE + boff))
        out.append(f"""
[[targets]]
id = "p{i}{gen}"
uri = "sip:{prim}"
failure_domain = "site-p{i}"

[[targets]]
id = "b{i}{gen}"
uri = "sip:{back}"
failure_domain = "site-b{i}"

[[targets]]
id = "t{i}{gen}"
tel = "+1555{i:07d}"
gateway = "gw"
failure_domain = "pstn"
""")
    for i in range(routes):
        gen = "b" if i < changed else "a"
        pre = ", ".join(f'"{x}"' for x in route_prefixes(i, routes, prefixes))
        out.append(f"""
[[routes]]
id = "r{i}"
chain = ["p{i}{gen}", "b{i}{gen}", "t{i}{gen}"]
caller_prefixes = [{pre}]
""")
    out.append(f"""
[default_route]
chain = ["p0{'b' if changed else 'a'}", "b0{'b' if changed else 'a'}", "t0{'b' if changed else 'a'}"]
""")
    return "".join(out), lay


def probe_hosts_of(lay: Layout) -> list:
    """Every (ip, port) sosrouter probes for these rules: the silent primaries, the answering backups, the
    last route's SIPp primary and backup, the gateway (lay.probe_hosts of them)."""
    return (lay.silent + lay.answering
            + [("127.0.0.1", SIPP_PRIMARY), ("127.0.0.1", SIPP_BACKUP), ("127.0.0.1", SIPP_GATEWAY)])


def dispatcher_list(lay: Layout) -> str:
    """Kamailio's dispatcher list of the same probe hosts, one set (testbeds/kamailio/probe.cfg)."""
    lines = ["# generated by testbeds/sostest/scale.py: the probe hosts of the rules at size, one set",
             "# setid destination"]
    lines += [f"1 sip:{ip}:{port}" for ip, port in probe_hosts_of(lay)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ /metrics (pure)
def histogram(text: str, name: str) -> list:
    """[(le seconds, cumulative count)] of a Prometheus histogram without labels (besides le)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "_bucket"):
            continue
        m = re.match(r'^\S+\{.*le="([^"]+)".*\}\s+(\S+)', line)
        if m:
            le = math.inf if m.group(1) == "+Inf" else float(m.group(1))
            out.append((le, float(m.group(2))))
    return sorted(out)


def hist_delta(after: list, before: list) -> list:
    b = dict(before)
    return [(le, c - b.get(le, 0.0)) for le, c in after]


def hist_quantile(buckets: list, q: float):
    """Upper bound (seconds) of the bucket holding quantile q; None without samples; inf past the top."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    want = q * buckets[-1][1]
    for le, c in buckets:
        if c >= want:
            return le
    return math.inf


# ------------------------------------------------------------------ the responder
def sip_reply(req: bytes, code: str = "200 OK"):
    """A final response to a SIP request (Via, From, To with a tag, Call-ID, CSeq copied), or None."""
    try:
        text = req.decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        return None
    if not text or text.startswith("SIP/2.0"):
        return None
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    keep = []
    for line in head[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            keep.append(line)
        elif name in ("to", "t"):
            keep.append(line if ";tag=" in line else line + ";tag=scale")
    return ("SIP/2.0 " + code + "\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode()


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def respond(answer_ports: list, silent_ports: list, seconds: float, ready_file: str | None = None):
    """Answers every SIP request to 0.0.0.0:answer_ports with 200, from the address it was sent to; binds
    silent_ports and never reads them. Runs for `seconds`. With a ready_file, the requests answered so far
    per source port go to READY_FILE.counts (JSON, rewritten each second): who is probing, and how much."""
    socks = []
    for port in answer_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        s.bind(("0.0.0.0", port))
        s.setblocking(False)
        socks.append(s)
    silent = []
    for port in silent_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("0.0.0.0", port))
        silent.append(s)
    if ready_file:
        with open(ready_file, "w") as f:
            f.write("ready\n")
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    end = time.time() + seconds
    answered = 0
    by_port: dict = {}
    counts_at = 0.0
    while time.time() < end:
        if ready_file and time.time() >= counts_at:
            counts_at = time.time() + 1.0
            tmp = ready_file + ".counts.tmp"
            with open(tmp, "w") as f:
                json.dump(by_port, f)
            os.replace(tmp, ready_file + ".counts")
        for fd, _ in ep.poll(0.5):
            s = by_fd[fd]
            for _ in range(64):
                try:
                    data, anc, _flags, peer = s.recvmsg(65535, socket.CMSG_SPACE(12))
                except BlockingIOError:
                    break
                rep = sip_reply(data)
                if rep is None:
                    continue
                cm = []
                for lvl, typ, val in anc:
                    if lvl == socket.IPPROTO_IP and typ == IP_PKTINFO and len(val) >= 12:
                        # in_pktinfo {ifindex, spec_dst, addr}: reply from the address asked (addr).
                        cm = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i4s4s", 0, val[8:12], b"\0" * 4))]
                try:
                    s.sendmsg([rep], cm, 0, peer)
                    answered += 1
                    by_port[peer[1]] = by_port.get(peer[1], 0) + 1
                except OSError:
                    pass
    return answered


def responder_main(argv: list):
    """python3 -m sostest.scale responder ANSWER_BASE N_ANSWER SILENT_BASE N_SILENT SECONDS READY_FILE"""
    ab, na, sb, ns, secs, ready = argv
    respond(list(range(int(ab), int(ab) + int(na))), list(range(int(sb), int(sb) + int(ns))), float(secs), ready)


# ------------------------------------------------------------------ a run
def http(path: str, timeout: float = 2.0, method: str = "GET") -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{ADMIN_PORT}{path}", method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode("utf-8", "replace")


def rules_version():
    try:
        return json.loads(http("/status")).get("rules", {}).get("version")
    except (OSError, ValueError):
        return None


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


@dataclass
class Settings:
    quick: bool = field(default_factory=lambda: os.environ.get("SCALE_QUICK", "0") == "1")
    sizes: list = field(default_factory=list)
    idle_s: float = 10.0
    settle_s: float = 4.0
    rates: list = field(default_factory=list)
    step_s: float = 5.0
    setup_rate: int = 1000
    kamailio_max_hosts: int = 2001
    bisect_steps: int = 2
    probe: bool = True

    def __post_init__(self):
        e = os.environ
        if not self.sizes:
            spec = e.get("SCALE_SIZES")
            if spec:
                self.sizes = [tuple(int(x) for x in s.split("x")) for s in spec.split()]
            else:
                self.sizes = QUICK_SIZES if self.quick else FULL_SIZES
        if not self.rates:
            spec = e.get("SCALE_RATES") or ("1000 2000" if self.quick else "1000 2000 3000 4000 5000 6000 7000 8000")
            self.rates = [int(x) for x in spec.split()]
        if self.quick:
            self.idle_s, self.step_s = 5.0, 3.0
        self.idle_s = float(e.get("SCALE_IDLE_S", self.idle_s))
        self.step_s = float(e.get("STEP_S", self.step_s))
        self.kamailio_max_hosts = int(e.get("SCALE_KAMAILIO_MAX_HOSTS", self.kamailio_max_hosts))
        self.bisect_steps = int(e.get("SCALE_BISECT_STEPS", self.bisect_steps))
        self.probe = e.get("SCALE_PROBE", "1") != "0"


class Bed:
    """One proxy with one generated rules file, its answering points and responder."""

    def __init__(self, run, out: str, routes: int, prefixes: int, secs: float, probe: bool = True):
        from . import lab
        self.lab, self.run, self.out = lab, run, out
        self.routes, self.prefixes, self.secs, self.probe = routes, prefixes, secs, probe
        os.makedirs(out, exist_ok=True)
        self.rules = os.path.join(out, "rules.toml")
        text, self.layout = rules_toml(routes, prefixes, probe=probe)
        with open(self.rules, "w") as f:
            f.write(text)
        self.variant = 0
        self.proc = None
        self.pid = None
        self.kam = None
        self.kam_pid = None
        self.counts = os.path.join(out, "responder.ready.counts")

    def start_aps(self):
        """SIPp answering points (last route's primary and backup, the gateway) and the responder."""
        lab, r = self.lab, self.run
        for k, (name, port) in enumerate((("primary", SIPP_PRIMARY), ("backup", SIPP_BACKUP), ("gateway", SIPP_GATEWAY))):
            d = r.new_ap_dir(name, port, "psap.xml")
            argv = ["sipp", "-sf", os.path.join(lab.SCEN, "psap.xml"), "-i", "127.0.0.1", "-p", str(port), "-t", "u1",
                    "-buff_size", "4194304", "-m", "100000000", "-mp", str(PORT_BASE + 300 + 10 * k),
                    "-timeout", f"{int(self.secs)}s", "-nostdin", "-recv_timeout", "40000",
                    "-trace_err", "-error_file", "errors.log"]
            r.register_ap(name, r.g.start(f"ap-{name}", argv, os.path.join(d, "stdout.txt"), self.secs + 10, cwd=d), d)
        ready = os.path.join(self.out, "responder.ready")
        args = [str(ANSWER_BASE), str(PORTS_PER_ADDR), str(SILENT_BASE), str(PORTS_PER_ADDR), str(int(self.secs)),
                ready]
        argv = responder_command(self.out) + args
        self.responder = r.g.start("responder", argv, os.path.join(self.out, "responder.log"), self.secs + 10,
                                   env=dict(os.environ, PYTHONPATH=HERE))
        lab.procs.wait_until(lambda: os.path.exists(ready) or not self.responder.alive(), 10)
        if not os.path.exists(ready):
            raise lab.Fail(f"the responder did not start; see {self.out}/responder.log")

    def start_proxy(self, binary: str) -> float:
        """Starts sosrouter; returns the seconds until its /metrics answered (the time to load)."""
        lab, r = self.lab, self.run
        argv = [binary, "run", "--rules", self.rules, "--admin", f"127.0.0.1:{ADMIN_PORT}", "--no-watch",
                "--undelivered", os.path.join(self.out, "undelivered.jsonl")]
        t0 = time.time()
        self.proc = r.g.start("sosrouter", argv, os.path.join(self.out, "sosrouter.log"), self.secs, cwd=self.out,
                              env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")))
        lab.procs.wait_until(lambda: lab.children(self.proc.pid) or not self.proc.alive(), 5)
        kids = lab.children(self.proc.pid)
        if not kids:
            raise lab.Fail(f"sosrouter exited at once; see {self.out}/sosrouter.log")
        self.pid = r.proxy_pid = kids[0]

        def up():
            try:
                http("/metrics", 1.0)
                return True
            except OSError:
                return not self.proc.alive()
        lab.procs.wait_until(up, 120)
        if not self.proc.alive():
            raise lab.Fail(f"sosrouter exited while loading; see {self.out}/sosrouter.log")
        return time.time() - t0

    def start_kamailio(self):
        """Kamailio probing the same hosts (testbeds/kamailio/probe.cfg), beside sosrouter."""
        lab, r = self.lab, self.run
        lab.need_kamailio()
        lst = os.path.join(self.out, "dispatcher.list")
        with open(lst, "w") as f:
            f.write(dispatcher_list(self.layout))
        rundir = os.path.join(self.out, "kamailio-run")
        os.makedirs(rundir, exist_ok=True)
        argv = ["kamailio", "-f", os.path.join(HERE, "kamailio", "probe.cfg"), "-DD", "-E", "-m", "256", "-M", "16",
                "-Y", rundir, "-w", rundir, "-A", f"SIP_PORT={KAMAILIO_PORT}", "-A", f'DS_LIST="{lst}"']
        self.kam = r.g.start("kamailio-probe", argv, os.path.join(self.out, "kamailio.log"), self.secs, cwd=rundir)
        lab.procs.wait_until(lambda: lab.children(self.kam.pid) or not self.kam.alive(), 5)
        kids = lab.children(self.kam.pid)
        if not kids or not self.kam.alive():
            raise lab.Fail(f"kamailio (probing) exited at once; see {self.out}/kamailio.log")
        self.kam_pid = kids[0]

    def kam_pids(self) -> list:
        return [self.kam_pid] + self.lab.descendants(self.kam_pid) if self.kam_pid else []

    def answered_by_port(self) -> dict:
        try:
            with open(self.counts) as f:
                return {int(k): v for k, v in json.load(f).items()}
        except (OSError, ValueError):
            return {}

    def idle(self, seconds: float) -> dict:
        """Proxy CPU (% of one core) and probe lateness over `seconds` with no calls; with Kamailio probing
        beside it, Kamailio's CPU (all its processes) over the same seconds and its answered probes/s."""
        m0 = histogram(http("/metrics", 5), "sosrouter_probe_lateness_seconds")
        kpids = self.kam_pids()
        a0 = self.answered_by_port()
        c0, k0, t0 = self.lab.ticks([self.pid]), self.lab.ticks(kpids), time.time()
        time.sleep(seconds)
        c1, k1, t1 = self.lab.ticks([self.pid]), self.lab.ticks(kpids), time.time()
        a1 = self.answered_by_port()
        m1 = histogram(http("/metrics", 5), "sosrouter_probe_lateness_seconds")
        d = hist_delta(m1, m0)
        tck = os.sysconf("SC_CLK_TCK")
        res = {"idle_cpu_pct": 100.0 * (c1 - c0) / tck / (t1 - t0),
               "probes_per_s": (d[-1][1] / (t1 - t0)) if d else None,
               "probe_lateness_p50_ms": ms(hist_quantile(d, 0.50)),
               "probe_lateness_p99_ms": ms(hist_quantile(d, 0.99)),
               "rss_mb": rss_kb(self.pid) / 1024.0}
        if kpids:
            # The answered counts are rewritten each second: a rate over the same window, +-1 s.
            kam = a1.get(KAMAILIO_PORT, 0) - a0.get(KAMAILIO_PORT, 0)
            rest = sum(a1.values()) - sum(a0.values()) - kam
            res.update({"kamailio_idle_cpu_pct": 100.0 * (k1 - k0) / tck / (t1 - t0),
                        "kamailio_processes": len(kpids),
                        "kamailio_answered_per_s": kam / (t1 - t0),
                        "sosrouter_answered_per_s": rest / (t1 - t0),
                        "kamailio_alive": self.kam.alive()})
        return res

    def reload(self, timeout: float = 60) -> float | None:
        """Writes the other variant of the rules, SIGHUP; seconds until /status shows the next version."""
        self.variant ^= 1
        text, _ = rules_toml(self.routes, self.prefixes, self.variant, probe=self.probe)
        tmp = self.rules + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.rules)
        v0 = rules_version()
        t0 = time.time()
        os.kill(self.pid, signal.SIGHUP)
        end = t0 + timeout
        while time.time() < end:
            v = rules_version()
            if v is not None and v0 is not None and v > v0:
                return time.time() - t0
            time.sleep(0.05)  # /status lists every target: polling it every 5 ms was load of its own
        return None


def ms(v):
    if v is None:
        return None
    return v * 1000.0 if v != math.inf else math.inf


def stair(bed: Bed, st: Settings, out: str) -> dict:
    """Bounded stair: each rate for step_s up to the first failing step, then st.bisect_steps bisections
    between the last passing and the first failing rate (lab.Stair). Knee = highest passing rate."""
    lab = bed.lab
    bed.run.cfg.step_s = st.step_s
    steps = []
    climb, n = lab.Stair(st.rates, st.bisect_steps, int(os.environ.get("STEP_RETRIES", "1") or 0)), 0
    while (rate := climb.next_rate()) is not None:
        n += 1
        d = os.path.join(out, "steps", f"{n:02d}-r{rate}")
        say(f"  stair {climb.label()}: {rate} calls/s for {st.step_s:g} s (load {loadavg()})")
        # The responder (Python, answering the backups' probes) shares the two cores with the proxy,
        # SIPp and the caller: its CPU is the testbed's own cost of the rules' size, reported per step.
        rpids = lab.descendants(bed.responder.pid)
        r0, t0 = lab.ticks(rpids), time.time()
        lab.throughput_step(bed.run, d, rate)
        r1, t1 = lab.ticks(rpids), time.time()
        try:
            with open(os.path.join(d, "step.json")) as f:
                s = json.load(f)
        except (OSError, ValueError):
            s = {"ok": False, "rate_offered": rate}
        s["responder_cpu_pct"] = 100.0 * (r1 - r0) / os.sysconf("SC_CLK_TCK") / max(t1 - t0, 1e-3)
        say(f"  responder (testbed) cpu {s['responder_cpu_pct']:.1f}% over the step")
        steps.append(s)
        climb.record(rate, bool(s.get("ok")))
    knee = climb.knee
    at = next((s for s in steps if s.get("rate_offered") == st.setup_rate), None)
    return {"knee_calls_s": knee, "steps": steps,
            "setup_p50_ms_at_1000": at.get("setup_ms_p50") if at else None,
            "setup_p99_ms_at_1000": at.get("setup_ms_p99") if at else None,
            "cpu_proxy_pct_at_1000": at.get("cpu_proxy_pct") if at else None}


def responder_command(out: str) -> list:
    """The responder to start (its arguments follow): the Rust one of testbeds/scale-responder, built here with
    cargo (a testbed tool: the Python responder below took as much CPU as the proxy's probing at 1 000 routes,
    on the cores the proxy and SIPp share), or the Python one with SCALE_RESPONDER=python."""
    from . import lab
    if os.environ.get("SCALE_RESPONDER", "rust") == "python":
        return [sys.executable, "-m", "sostest.scale", "responder"]
    log = os.path.join(out, "responder-build.log")
    with open(log, "wb") as f:
        if subprocess.call(["cargo", "build", "--release", "--example", "scale-responder"], cwd=ROOT, stdout=f,
                           stderr=subprocess.STDOUT):
            raise lab.Fail(f"cargo build --release --example scale-responder failed; see {log}")
    return [os.path.join(lab.target_dir(), "release", "examples", "scale-responder")]


def binary() -> str:
    from . import lab
    return os.environ.get("SOSROUTER") or os.path.join(lab.target_dir(), "release", "sosrouter")


def make_run(name: str):
    from . import lab

    class ScaleRun(lab.Run):
        """lab.Run with the caller on a port of the drill range (SIPp's default 5061 may be taken)."""

        def start_caller(self, d, rate, calls, hold, nolog=False):
            g = self.g
            real = g.start

            def start(name, argv, *a, **kw):
                if name == "caller" and argv and argv[0] == "sipp":
                    argv = argv[:1] + ["-p", str(CALLER_PORT), "-mp", str(CALLER_MEDIA_PORT)] + argv[1:]
                return real(name, argv, *a, **kw)
            g.start = start
            try:
                return super().start_caller(d, rate, calls, hold, nolog)
            finally:
                g.start = real

    cfg = lab.Config()
    cfg.proxy = f"udp:127.0.0.1:{PROXY_PORT}"
    cfg.parse_proxy()
    cfg.admin_addr = f"127.0.0.1:{ADMIN_PORT}"   # each step's runtime lateness, from the proxy's /metrics
    cfg.hold_ms = cfg.hold_ms or "0"
    return ScaleRun(cfg, name)


def measure_size(run, st: Settings, routes: int, prefixes: int) -> dict:
    out = os.path.join(run.out, f"{routes}x{prefixes}")
    budget = 60 + st.settle_s + st.idle_s + (len(st.rates) + st.bisect_steps) * (st.step_s + 30) + 120
    bed = Bed(run, out, routes, prefixes, budget, probe=st.probe)
    res = {"routes": routes, "prefixes": prefixes, "probe_hosts": bed.layout.probe_hosts,
           "targets": bed.layout.targets, "load_before": loadavg()}
    say(f"{routes} routes x {prefixes} prefixes: {bed.layout.targets} targets, {bed.layout.probe_hosts} probe hosts")
    try:
        bed.start_aps()
        res["load_s"] = bed.start_proxy(binary())
        if 0 < bed.layout.probe_hosts <= st.kamailio_max_hosts:
            bed.start_kamailio()
        # Start-up: every silent primary goes down (two probe intervals), then the idle window.
        settle = st.settle_s + bed.layout.probe_hosts / 2000.0
        say(f"  loaded in {res['load_s']:.2f} s; settling {settle:g} s, then idle {st.idle_s:g} s")
        time.sleep(settle)
        res.update(bed.idle(st.idle_s))
        say(f"  idle cpu {res['idle_cpu_pct']:.1f}%, {fmt(res['probes_per_s'])} probes/s, lateness p99 "
            f"{fmt(res['probe_lateness_p99_ms'], '{:.1f}')} ms, rss {res['rss_mb']:.0f} MB")
        if bed.kam:
            say(f"  kamailio probing the same {bed.layout.probe_hosts} hosts, same seconds: cpu "
                f"{res['kamailio_idle_cpu_pct']:.1f}% ({res['kamailio_processes']} processes); probes answered/s: "
                f"kamailio {res['kamailio_answered_per_s']:.0f}, sosrouter {res['sosrouter_answered_per_s']:.0f}")
            bed.run.g.stop(bed.kam)
            bed.kam, bed.kam_pid = None, None
        res["reload_s"] = bed.reload()
        say(f"  reload {fmt(res['reload_s'], '{:.3f}')} s")
        time.sleep(2)
        res.update(stair(bed, st, out))
        res["rss_mb_after_load"] = rss_kb(bed.pid) / 1024.0
        res["proxy_alive"] = bed.proc.alive()
    finally:
        run.g.stop_all()
        run.g.procs = []
        run.aps = {}
    res["load_after"] = loadavg()
    return res


def fmt(v, spec="{:.0f}"):
    if v is None:
        return "-"
    if v == math.inf:
        return "inf"
    return spec.format(v)


COLUMNS = [("size", lambda r: f"{r['routes']}x{r['prefixes']}"), ("probe hosts", lambda r: str(r["probe_hosts"])),
           ("load s", lambda r: fmt(r.get("load_s"), "{:.2f}")), ("reload s", lambda r: fmt(r.get("reload_s"), "{:.2f}")),
           ("idle cpu %", lambda r: fmt(r.get("idle_cpu_pct"), "{:.1f}")),
           ("kamailio idle cpu %", lambda r: fmt(r.get("kamailio_idle_cpu_pct"), "{:.1f}")),
           ("lateness p99 ms", lambda r: fmt(r.get("probe_lateness_p99_ms"), "{:.1f}")),
           ("rss MB", lambda r: fmt(r.get("rss_mb"))), ("knee calls/s", lambda r: fmt(r.get("knee_calls_s"))),
           ("p50/p99 ms @1000/s", lambda r: f"{fmt(r.get('setup_p50_ms_at_1000'), '{:.1f}')}/"
                                            f"{fmt(r.get('setup_p99_ms_at_1000'), '{:.1f}')}")]


def table(results: list) -> str:
    rows = [[h for h, _ in COLUMNS]] + [[f(r) for _, f in COLUMNS] for r in results]
    w = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.rjust(w[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * x for x in w))
    return "\n".join(lines)


def plot(results: list, path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    xs = [r["probe_hosts"] for r in results]
    panels = [("idle CPU (% of a core): sosrouter, Kamailio dispatcher", ("idle_cpu_pct", "kamailio_idle_cpu_pct")), ("probe lateness p99 (ms)", "probe_lateness_p99_ms"),
              ("resident memory (MB)", "rss_mb"), ("calls/s at the knee", "knee_calls_s"),
              ("setup p50 / p99 at 1000 calls/s (ms)", ("setup_p50_ms_at_1000", "setup_p99_ms_at_1000")),
              ("time to load / reload (s)", ("load_s", "reload_s"))]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for ax, (title, keys) in zip(axes.flat, panels):
        for k in (keys if isinstance(keys, tuple) else (keys,)):
            ys = [r.get(k) if r.get(k) not in (None, math.inf) else float("nan") for r in results]
            ax.plot(xs, ys, marker="o", label=k)
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("probe hosts (log)")
        ax.grid(True, alpha=0.3)
        if isinstance(keys, tuple):
            ax.legend(fontsize=7)
    labels = ", ".join(f"{r['routes']}x{r['prefixes']}" for r in results)
    fig.suptitle(f"sosrouter at size (routes x prefixes: {labels})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def cmd_scale(argv: list) -> int:
    st = Settings()
    run = make_run("scale")
    results = []
    try:
        for routes, prefixes in st.sizes:
            results.append(measure_size(run, st, routes, prefixes))
            with open(os.path.join(run.out, "result.json"), "w") as f:
                json.dump(results, f, indent=2, sort_keys=True, default=str)
    finally:
        run.close()
    text = table(results)
    base = next((r for r in results if (r["routes"], r["prefixes"]) == (1, 1)), None)
    big = next((r for r in results if (r["routes"], r["prefixes"]) == (1000, 100)), None)
    if base and big and base.get("knee_calls_s") and big.get("knee_calls_s") is not None:
        text += (f"\n\n1000x100 knee / 1x1 (lab-sized) knee: {big['knee_calls_s']}/{base['knee_calls_s']} = "
                 f"{big['knee_calls_s'] / base['knee_calls_s']:.2f} (goal >= 0.9; one stair after the other: "
                 "`testbeds/run scale-knee` interleaves them, for a ratio on a shared host)")
    for r in results:
        if r.get("kamailio_idle_cpu_pct") is not None:
            text += (f"\n{r['routes']}x{r['prefixes']} ({r['probe_hosts']} probe hosts), idle probing CPU in the same seconds: "
                     f"sosrouter {r['idle_cpu_pct']:.1f}% vs Kamailio dispatcher {r['kamailio_idle_cpu_pct']:.1f}% "
                     f"(probes answered/s {r['sosrouter_answered_per_s']:.0f} vs {r['kamailio_answered_per_s']:.0f}"
                     + ("; goal: sosrouter <= Kamailio)" if r["probe_hosts"] == 2001 else ")"))
    text += f"\n\nmachine: {os.cpu_count()} cpus; load average per size in result.json (load_before/load_after)"
    print(text)
    with open(os.path.join(run.out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    p = plot(results, os.path.join(run.out, "scale.png"))
    say(f"outputs in {run.out}" + (f"; plot {p}" if p else ""))
    return 0 if all(r.get("proxy_alive") for r in results) else 1


def knee_sizes() -> list:
    spec = os.environ.get("SCALE_KNEE_SIZES", "1x1 1000x100").split()
    return [tuple(int(x) for x in s.split("x")) for s in spec]


def cmd_scale_knee(argv: list) -> int:
    """The knee at size against the lab-sized rules, interleaved: a stair per size (SCALE_KNEE_SIZES, default
    "1x1 1000x100"), one step of each per round, the order alternating each round, a fresh proxy per step
    (settled until its silent primaries are down, as in `scale`), one set of answering points and one
    responder for both. `scale` measures each size's stair after the other's; on a host whose CPU steal
    swings by 30 points within minutes those were two different machines (the 1000x100 stairs of the last
    run ran under 22-37 % steal), and the ratio of their knees measured the host, not the rules."""
    from . import lab, report
    st = Settings()
    sizes = knee_sizes()
    run = make_run("scale-knee")
    retries = int(os.environ.get("STEP_RETRIES", "1") or 0)
    cfg = run.cfg
    stairs = {z: lab.Stair(st.rates, st.bisect_steps, retries, cfg.steal_retries, cfg.steal_retry_pct)
              for z in sizes}
    steps = {z: [] for z in sizes}
    budget = 120 + 2 * len(sizes) * (len(st.rates) + st.bisect_steps) * (st.step_s + st.settle_s + 40)
    beds = {}
    try:
        for z in sizes:
            beds[z] = Bed(run, os.path.join(run.out, f"{z[0]}x{z[1]}"), z[0], z[1], budget, probe=st.probe)
        first = beds[sizes[0]]
        first.start_aps()
        for b in beds.values():
            b.responder = first.responder
        run.cfg.step_s = st.step_s
        say(f"scale-knee: stairs ({' '.join(map(str, st.rates))}) of " + " and ".join(f"{r}x{p}" for r, p in sizes)
            + f", interleaved step by step, {st.step_s:g} s steps")
        rounds, n = 0, {z: 0 for z in sizes}
        while any(s.next_rate() is not None for s in stairs.values()):
            for z in (sizes if rounds % 2 == 0 else sizes[::-1]):
                rate = stairs[z].next_rate()
                if rate is None:
                    continue
                bed = beds[z]
                n[z] += 1
                d = os.path.join(bed.out, "steps", f"{n[z]:02d}-r{rate}")
                bed.start_proxy(binary())
                try:
                    settle = st.settle_s + bed.layout.probe_hosts / 2000.0
                    say(f"  {z[0]}x{z[1]} {stairs[z].label()}: settle {settle:g} s, {rate} calls/s for {st.step_s:g} s")
                    time.sleep(settle)
                    lab.throughput_step(run, d, rate)
                finally:
                    run.g.stop(bed.proc)
                    run.g.procs = [x for x in run.g.procs if x is not bed.proc]
                    bed.proc, bed.pid, run.proxy_pid = None, None, None
                    lab.procs.wait_until(lambda: not lab.procs.port_users(PROXY_PORT)
                                         and not lab.procs.port_users(ADMIN_PORT), 10)
                try:
                    with open(os.path.join(d, "step.json")) as f:
                        s = json.load(f)
                except (OSError, ValueError):
                    s = {"ok": False, "rate_offered": rate}
                s["steal_pct"] = report.stall_figures(d).get("steal_pct")
                steps[z].append(s)
                stairs[z].record(rate, bool(s.get("ok")), s.get("steal_pct"))
            rounds += 1
    finally:
        run.close()
    res = [{"routes": z[0], "prefixes": z[1], "knee_calls_s": stairs[z].knee, "steps": steps[z]} for z in sizes]
    with open(os.path.join(run.out, "result.json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True, default=str)
    lines = []
    for r in res:
        lines.append(f"{r['routes']}x{r['prefixes']}: knee {fmt(r['knee_calls_s'])} calls/s; steps (rate verdict "
                     "p50/p99 ms, proxy cpu %, host steal %):")
        for s in r["steps"]:
            lines.append(f"  {s.get('rate_offered')}: {s.get('verdict', 'no result')} {fmt(s.get('setup_ms_p50'))}/"
                         f"{fmt(s.get('setup_ms_p99'))}, cpu {fmt(s.get('cpu_proxy_pct'))}, "
                         f"steal {fmt(s.get('steal_pct'))}")
    base, big = res[0], res[-1]
    ok = bool(base["knee_calls_s"] and big["knee_calls_s"])
    if ok:
        ratio = big["knee_calls_s"] / base["knee_calls_s"]
        lines.append(f"\n{big['routes']}x{big['prefixes']} knee / {base['routes']}x{base['prefixes']} knee, "
                     f"interleaved: {big['knee_calls_s']}/{base['knee_calls_s']} = {ratio:.2f} (goal >= 0.9)")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(run.out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    return 0 if ok else 1

def cmd_scale_reload(argv: list) -> int:
    """Reload an 18 000-target file (6000 x 30) RELOADS times while RATE calls/s flow."""
    from . import lab, report
    e = os.environ
    routes, prefixes = (int(x) for x in e.get("SCALE_RELOAD_SIZE", "6000x30").split("x"))
    rate, secs = int(e.get("RATE") or 1000), float(e.get("SCALE_RELOAD_S", "30"))
    reloads = int(e.get("RELOADS", "4"))
    run = make_run("scale-reload")
    res = {"routes": routes, "prefixes": prefixes, "rate": rate, "seconds": secs, "load_before": loadavg()}
    try:
        bed = Bed(run, os.path.join(run.out, f"{routes}x{prefixes}"), routes, prefixes, secs + 200)
        res["targets"] = bed.layout.targets
        bed.start_aps()
        res["load_s"] = bed.start_proxy(binary())
        time.sleep(4)
        d = os.path.join(run.out, "calls")
        cpu0 = lab.cpu_jiffies()
        caller = run.start_caller(d, rate, int(rate * secs), 0, nolog=True)
        times = []
        gap = secs / (reloads + 1)
        for k in range(reloads):
            time.sleep(gap if k else gap)
            t = bed.reload()
            times.append(t)
            say(f"reload {k + 1}: {fmt(t, '{:.3f}')} s (load {loadavg()})")
        rc = run.wait_caller(caller)
        res["steal_pct"] = report.steal_pct(lab.jiffies_delta(cpu0, lab.cpu_jiffies()))
        with open(os.path.join(d, "cpu.env"), "w") as f:
            f.write(f"t0=0\nt1={secs}\nclk_tck={os.sysconf('SC_CLK_TCK')}\nexit_code={rc}\nproxy_running=0\n")
        run.report("step", d, rate, "0", "100")
        with open(os.path.join(d, "step.json")) as f:
            s = json.load(f)
        setup = [x for _, x in report.read_rtt(d)]
        res.update({"reload_s": times, "calls_planned": s["calls_planned"], "calls_failed": s["calls_failed"],
                    "retransmissions": s["retransmissions"], "setup_ms_p50": s["setup_ms_p50"],
                    "setup_ms_p99": s["setup_ms_p99"], "setup_ms_max": s["setup_ms_max"],
                    "calls_over_50ms": sum(1 for x in setup if x > 50), "proxy_alive": bed.proc.alive()})
    finally:
        run.close()
    res["load_after"] = loadavg()
    res["ok"] = res.get("calls_failed") == 0 and res.get("calls_over_50ms") == 0 and None not in res.get("reload_s", [None])
    with open(os.path.join(run.out, "result.json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
    text = (f"scale-reload: {routes}x{prefixes} ({res.get('targets')} targets), {rate} calls/s for {secs:g} s, "
            f"{reloads} reloads: reload s {[fmt(t, '{:.2f}') for t in res.get('reload_s', [])]}; calls "
            f"{res.get('calls_planned')}, failed {res.get('calls_failed')}, retrans {res.get('retransmissions')}; "
            f"setup p50/p99/max {fmt(res.get('setup_ms_p50'))}/{fmt(res.get('setup_ms_p99'))}/"
            f"{fmt(res.get('setup_ms_max'))} ms; calls over 50 ms: {res.get('calls_over_50ms')}; "
            f"host steal {fmt(res.get('steal_pct'))}%: "
            f"{'PASS' if res['ok'] else 'FAIL'} (load {res['load_before']} -> {res['load_after']})")
    print(text)
    with open(os.path.join(run.out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "responder":
        responder_main(sys.argv[2:])
