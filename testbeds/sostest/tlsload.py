"""TLS load: `testbeds/run interop-tls-load`. Debian's SIPp has no TLS, so SIPp speaks TCP to stunnel, which
speaks TLS to the proxy; the proxy speaks TLS to the PSAP's stunnel, which speaks TCP to a SIPp UAS:

  SIPp UAC (tcp, one connection) -> stunnel client 15350 == TLS ==> proxy TLS port == TLS ==> stunnel server
  15351 (psap.lab certificate) -> SIPp UAS 15352 (tcp). The UAS's Contact names the stunnel side
  (sip:ap@127.0.0.1:15351;transport=tls), so ACK and BYE cross TLS too.

Peers, one after the other in the same run, same stairs (RATES, STEP_S seconds each, stop at the first step
with more than MAX_FAIL_PCT failed calls):
  kamailio   testbeds/kamailio/kamailio.cfg with -A WITH_TLS (TLS on 15361; the dispatcher's one destination
             is the PSAP over TLS, probed with OPTIONS), the throughput peer's job over TLS.
  sosrouter  TLS listen 15371, one target transport "tls" (tls_name psap.lab), when sosrouter has TLS;
             otherwise (or SOS_TRANSPORT=tcp) sosrouter over TCP on 15370 with its TLS terminated by stunnel
             on both sides (15371 -> 15370, and 15353 -> TLS 15351): that validates the harness, and its
             figures are sosrouter's TCP path, stunnel's CPU not counted. KAM_TRANSPORT=tcp does the same
             to Kamailio (TCP on 15360 behind stunnel): the two TCP runs are then comparable.
Connections are reused: SIPp keeps one TCP connection (so one TLS connection), each proxy one to the PSAP.
Per step: calls made/ok/failed, proxy CPU (all its processes, utime+stime over the call-creation phase) and
CPU per 1000 calls/s. Bounded: at most len(RATES) steps, each under timeout(1).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from . import interop, lab, procs, report

IP = "127.0.0.1"
T = dict(caller_wrap=15350, psap_tls=15351, psap_tcp=15352, psap_wrap_tcp=15353, kam=15360, kam_tls=15361,
         sos=15370, sos_tls=15371)
DEFAULT_RATES = "200 400 600 800 1000 1200 1500 2000 2500 3000 3500 4000 5000"


@dataclass
class Step:
    rate: int
    made: int = 0
    ok: int = 0
    failed: int = 0
    cpu_cores: float = 0.0        # proxy CPU over the sampled window, in cores (1.0 = one core busy)
    cpu_per_1k: float | None = None
    stunnel_cores: float = 0.0    # every stunnel of the run, same window
    sipp_cores: float = 0.0       # SIPp caller and PSAP, same window
    sipp_exit: int = 0
    done_s: float | None = None   # from the first call to the last call's end (SIPp's per-second stat rows)
    achieved: float = 0.0         # ok calls / done_s: calls the proxy actually completed per second
    good: bool = False


@dataclass
class PeerResult:
    peer: str
    mode: str
    steps: list = field(default_factory=list)
    max_rate: int = 0
    note: str = ""
    tls_connections: dict = field(default_factory=dict)    # stunnel service -> connections it accepted


PROBED = ("caller", "psap", "front")     # services whose port the testbed probes once at start (wait_tcp)


def accepted_connections(log: str) -> dict:
    """stunnel's log (debug 5): connections accepted per service, less the testbed's one start-up probe of
    the probed services."""
    n = {}
    for m in re.finditer(r"Service \[([^\]]+)\] accepted connection", log):
        n[m.group(1)] = n.get(m.group(1), 0) + 1
    return {k: max(0, v - 1) if k in PROBED else v for k, v in n.items()}


def step_good(made: int, ok: int, failed: int, calls: int, max_fail_pct: float, done_s: float | None = None,
              step_s: float | None = None) -> bool:
    """Every call made, failed calls at most max_fail_pct percent of them, and (when known) every call over
    within 20% + 1 s of the step: a proxy that queues calls for seconds has not kept up with the rate, even
    when the calls succeed in the end (TCP has no retransmission to show it)."""
    if made < calls or ok <= 0 or failed * 100.0 > max_fail_pct * made:
        return False
    return done_s is None or step_s is None or done_s <= step_s * 1.2 + 1.0


def elapsed_s(v: str) -> float:
    """SIPp's ElapsedTime(C): "HH:MM:SS" or "HH:MM:SS:mmm"."""
    f = [float(x) for x in v.split(":") if x.replace(".", "", 1).isdigit()]
    if len(f) < 3:
        return 0.0
    return f[0] * 3600 + f[1] * 60 + f[2] + (f[3] / 1000 if len(f) > 3 else 0.0)


def completion_s(stat_csv: str):
    """From SIPp's -trace_stat rows (-fd 1): the elapsed time of the first row where every call made is over
    (successful + failed == outgoing, all made). None when the file has no such row."""
    import csv
    try:
        rows = list(csv.reader(open(stat_csv, newline=""), delimiter=";"))
    except OSError:
        return None
    if len(rows) < 2:
        return None
    h = rows[0]
    last = dict(zip(h, rows[-1]))
    made = report.num(last, "OutgoingCall(C)")
    for r in rows[1:]:
        d = dict(zip(h, r))
        if made and report.num(d, "OutgoingCall(C)") == made and \
                report.num(d, "SuccessfulCall(C)") + report.num(d, "FailedCall(C)") >= made:
            return elapsed_s(d.get("ElapsedTime(C)", ""))
    return None


def cpu_per_1k(cores: float, rate: float):
    return cores / rate * 1000.0 if rate > 0 else None


def wrapped_psap_scenario(src: str, dst: str, contact: str):
    """psap.xml with its Contact naming the TLS side of the PSAP's stunnel (in-dialog requests cross TLS)."""
    s = open(src).read()
    old = "Contact: <sip:ap@[local_ip]:[local_port];transport=[transport]>"
    if old not in s:
        raise lab.Fail(f"{src}: no Contact line to rewrite")
    with open(dst, "w") as f:
        f.write(s.replace(old, f"Contact: <{contact}>"))


def stunnel_conf(path: str, services: list):
    """services: (name, client, accept, connect, cert, key, ca)."""
    lines = ["foreground = yes", "pid =", "debug = 5", "syslog = no", ""]
    for name, client, accept, connect, cert, key, ca in services:
        lines += [f"[{name}]", f"client = {'yes' if client else 'no'}", f"accept = {IP}:{accept}",
                  f"connect = {IP}:{connect}", f"cert = {cert}", f"key = {key}", f"CAfile = {ca}",
                  "TIMEOUTidle = 600", "socket = l:TCP_NODELAY=1", "socket = r:TCP_NODELAY=1"]
        if client:
            lines += ["verifyChain = yes"]
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def table(results: list) -> str:
    out = []
    for r in results:
        pct = os.environ.get("MAX_FAIL_PCT", "0.1")
        out.append(f"{r.peer} ({r.mode}): max {r.max_rate} calls/s at <= {pct}% failed, every call over within 20% + 1 s of its step"
                   + (f"  [{r.note}]" if r.note else ""))
        if r.tls_connections:
            conns = ", ".join(f"{k} {v}" for k, v in sorted(r.tls_connections.items()))
            out.append(f"  TLS connections accepted: {conns} (caller: one per SIPp run, i.e. per step; "
                       "psap: the proxy's, reused across calls)")
        out.append(f"  {'rate':>6} {'made':>7} {'ok':>7} {'failed':>6} {'proxy CPU':>10} {'CPU/1k cps':>11} "
                   f"{'stunnel':>8} {'SIPp':>6} {'done s':>6} {'ok/s':>6}  verdict")
        for s in r.steps:
            per = f"{s.cpu_per_1k:.2f}" if s.cpu_per_1k is not None else "-"
            out.append(f"  {s.rate:>6} {s.made:>7} {s.ok:>7} {s.failed:>6} {s.cpu_cores:>9.2f}c {per:>11} "
                       f"{s.stunnel_cores:>7.2f}c {s.sipp_cores:>5.2f}c {s.done_s or 0:>6.0f} {s.achieved:>6.0f}  "
                       f"{'ok' if s.good else 'FAIL'}")
    by = {r.peer: r for r in results}
    if "sosrouter" in by and "kamailio" in by and by["kamailio"].max_rate:
        ratio = by["sosrouter"].max_rate / by["kamailio"].max_rate
        modes = (by["sosrouter"].mode, by["kamailio"].mode)
        if modes == ("tls", "tls"):
            out.append(f"sosrouter / kamailio TLS calls/s: {ratio:.2f}x (goal >= 1.5x)")
        else:
            out.append(f"sosrouter ({modes[0]}) / kamailio ({modes[1]}) calls/s: {ratio:.2f}x"
                       + ("" if modes[0] == modes[1] else "  -- different transports: not comparable"))
        common = [s.rate for s in by["sosrouter"].steps if s.good and any(
            k.rate == s.rate and k.good for k in by["kamailio"].steps)]
        if common:
            rate = max(common)
            so = next(s for s in by["sosrouter"].steps if s.rate == rate)
            ka = next(s for s in by["kamailio"].steps if s.rate == rate)
            if so.cpu_per_1k and ka.cpu_per_1k:
                out.append(f"at {rate} calls/s: proxy CPU per 1000 calls/s sosrouter {so.cpu_per_1k:.2f} cores, "
                           f"kamailio {ka.cpu_per_1k:.2f} cores ({ka.cpu_per_1k / so.cpu_per_1k:.2f}x)")
    return "\n".join(out)


class Load:
    def __init__(self, out: str, sosrouter: str):
        self.out = out
        self.sosrouter = sosrouter
        self.pki = interop.make_pki(os.path.join(out, "pki"))
        self.sos_tls = interop.sos_supports_tls(sosrouter, out, self.pki)
        self.rates = [int(x) for x in (os.environ.get("RATES") or DEFAULT_RATES).split()]
        self.step_s = float(os.environ.get("STEP_S") or 5)
        self.max_fail = float(os.environ.get("MAX_FAIL_PCT") or 0.1)
        self.hold = int(os.environ.get("HOLD_MS") or 0)
        self.bisect = int(os.environ.get("BISECT_STEPS") or 2)

    def cert(self, role: str):
        return self.pki[role]["cert"], self.pki[role]["key"], self.pki["ca"]

    def start_psap(self, g: procs.Group, d: str, contact: str, budget: float):
        scen = os.path.join(d, "psap-wrapped.xml")
        wrapped_psap_scenario(os.path.join(lab.SCEN, "psap.xml"), scen, contact)
        ad = os.path.join(d, "psap")
        os.makedirs(ad, exist_ok=True)
        g.start("sipp-psap", ["sipp", "-sf", scen, "-i", IP, "-p", str(T["psap_tcp"]), "-t", "t1", "-m", "100000000",
                              "-buff_size", "4194304", "-rtp_echo", "-mp", "15310", "-timeout", f"{int(budget)}s",
                              "-nostdin", "-trace_err", "-error_file", "errors.log"],
                os.path.join(ad, "stdout.txt"), budget + 10, cwd=ad)
        if not interop.wait_tcp(T["psap_tcp"], 10):
            raise lab.Fail(f"SIPp PSAP did not start; see {ad}")

    def start_stunnel(self, g: procs.Group, d: str, name: str, services: list, budget: float, wait_port: int):
        conf = os.path.join(d, f"stunnel-{name}.conf")
        stunnel_conf(conf, services)
        exe = shutil.which("stunnel4") or shutil.which("stunnel") or "stunnel4"
        p = g.start(f"stunnel-{name}", [exe, conf], os.path.join(d, f"stunnel-{name}.log"), budget + 10, cwd=d)
        if not interop.wait_tcp(wait_port, 10, p):
            raise lab.Fail(f"stunnel {name} did not start; see {d}/stunnel-{name}.log")
        return p

    def start_kamailio(self, g: procs.Group, d: str, tls: bool, budget: float) -> int:
        run = os.path.join(d, "kamailio-run")
        os.makedirs(run, exist_ok=True)
        lst = os.path.join(d, "dispatcher.list")
        with open(lst, "w") as f:
            if tls:
                f.write(f"1 sip:{IP}:{T['psap_tls']};transport=tls 0 30 duid=psap\n")
            else:
                f.write(f"1 sip:{IP}:{T['psap_wrap_tcp']};transport=tcp 0 30 duid=psap\n")
        argv = ["kamailio", "-f", os.path.join(lab.HERE, "kamailio", "kamailio.cfg"), "-DD", "-E", "-m", "512",
                "-M", "32", "-Y", run, "-w", run, "-A", f"SIP_PORT={T['kam']}", "-A", f'DS_LIST="{lst}"']
        if tls:
            tcfg = os.path.join(d, "kamailio-tls.cfg")
            interop.write_kamailio_tls(tcfg, self.pki, "sosrouter")    # same certificate as sosrouter's
            argv += ["-A", "WITH_TLS", "-A", f"TLS_PORT={T['kam_tls']}", "-A", f'TLS_CFG="{tcfg}"']
        for x in (os.environ.get("KAMAILIO_DEFINES") or "").split():
            argv += ["-A", x]
        p = g.start("kamailio", argv, os.path.join(d, "kamailio.log"), budget, cwd=run)
        if not interop.wait_tcp(T["kam_tls"] if tls else T["kam"], 15, p):
            raise lab.Fail(f"kamailio did not start; see {d}/kamailio.log")
        return p.pid

    def start_sosrouter(self, g: procs.Group, d: str, tls: bool, budget: float) -> int:
        rules = os.path.join(d, "rules.toml")
        if tls:
            text = interop.sos_rules([f"tls:{IP}:{T['sos_tls']}", f"tcp:{IP}:{T['sos']}"],
                                     f"sip:{IP}:{T['psap_tls']}", "tls", self.pki, "none")
        else:
            text = interop.sos_rules([f"tcp:{IP}:{T['sos']}", f"udp:{IP}:{T['sos']}"],
                                     f"sip:{IP}:{T['psap_wrap_tcp']}", "tcp")
        with open(rules, "w") as f:
            f.write(text)
        argv = [self.sosrouter, "run", "--rules", rules, "--undelivered", os.path.join(d, "undelivered.jsonl"),
                "--admin", "off", "--no-watch"]
        p = g.start("sosrouter", argv, os.path.join(d, "sosrouter.log"), budget, cwd=d)
        if not interop.wait_tcp(T["sos"], 10, p):
            raise lab.Fail(f"sosrouter did not start; see {d}/sosrouter.log")
        return p.pid

    def run_peer(self, peer: str) -> PeerResult:
        d = os.path.join(self.out, peer)
        os.makedirs(d, exist_ok=True)
        if peer == "kamailio":
            tls = os.environ.get("KAM_TRANSPORT", "tls") == "tls"
        else:
            tls = self.sos_tls and os.environ.get("SOS_TRANSPORT", "tls") == "tls"
        res = PeerResult(peer, "tls" if tls else "tcp behind stunnel")
        budget = (len(self.rates) + self.bisect) * (self.step_s + 40) + 60
        g = procs.Group()
        try:
            caller_cert = self.cert("caller")
            psap_cert = self.cert("psap")
            if tls:
                contact = f"sip:ap@{IP}:{T['psap_tls']};transport=tls"
            else:
                contact = f"sip:ap@{IP}:{T['psap_wrap_tcp']};transport=tcp"
            self.start_psap(g, d, contact, budget)
            psap_side = [("psap", False, T["psap_tls"], T["psap_tcp"], *psap_cert)]
            if not tls:   # the proxy's TCP -> stunnel client 15353 -> TLS -> the PSAP's stunnel
                psap_side.append(("to-psap", True, T["psap_wrap_tcp"], T["psap_tls"], *self.cert("sosrouter")))
            self.start_stunnel(g, d, "psap", psap_side, budget, T["psap_tls"])
            if peer == "kamailio":
                leader = self.start_kamailio(g, d, tls, budget)
                proxy_tls, proxy_tcp = T["kam_tls"], T["kam"]
            else:
                leader = self.start_sosrouter(g, d, tls, budget)
                proxy_tls, proxy_tcp = T["sos_tls"], T["sos"]
            if not tls:       # TLS terminated in front of the proxy's TCP listener
                self.start_stunnel(g, d, "front", [("front", False, proxy_tls, proxy_tcp, *self.cert("sosrouter"))],
                                   budget, proxy_tls)
            self.start_stunnel(g, d, "caller", [("caller", True, T["caller_wrap"], proxy_tls, *caller_cert)],
                               budget, T["caller_wrap"])
            time.sleep(3.0)      # the proxy's probes mark the PSAP up
            pids = lambda: [leader] + lab.descendants(leader)          # noqa: E731
            wraps = [p.pid for p in g.procs if p.name.startswith("stunnel")]
            uas = [p.pid for p in g.procs if p.name == "sipp-psap"]
            others = (lambda: [x for w in wraps for x in lab.descendants(w)],     # noqa: E731
                      lambda: [x for w in uas for x in lab.descendants(w)])
            for i, rate in enumerate(self.rates):
                lab.say(f"tls-load {peer}: {rate} calls/s for {self.step_s:g} s")
                s = self.step(g, os.path.join(d, f"step-{i + 1:02d}-r{rate}"), rate, proxy_tls, pids, others)
                res.steps.append(s)
                lab.say(f"  made {s.made} ok {s.ok} failed {s.failed}; cores: proxy {s.cpu_cores:.2f}, "
                        f"stunnel {s.stunnel_cores:.2f}, SIPp {s.sipp_cores:.2f}")
                if not s.good:
                    break
                res.max_rate = rate
            # Bisection between the last good and the first failed step (BISECT_STEPS, default 2).
            bad = res.steps[-1].rate if res.steps and not res.steps[-1].good else 0
            for _ in range(self.bisect if bad else 0):
                mid = (res.max_rate + bad) // 2 // 10 * 10
                if mid <= res.max_rate or mid >= bad:
                    break
                lab.say(f"tls-load {peer}: bisection, {mid} calls/s (good {res.max_rate}, failed {bad})")
                s = self.step(g, os.path.join(d, f"step-{len(res.steps) + 1:02d}-r{mid}"), mid, proxy_tls, pids,
                              others)
                res.steps.append(s)
                lab.say(f"  made {s.made} ok {s.ok} failed {s.failed}; cores: proxy {s.cpu_cores:.2f}, "
                        f"stunnel {s.stunnel_cores:.2f}, SIPp {s.sipp_cores:.2f}")
                if s.good:
                    res.max_rate = mid
                else:
                    bad = mid
        except lab.Fail as e:
            res.note = str(e)
        finally:
            g.stop_all()
        for name in ("caller", "psap", "front"):
            res.tls_connections.update(accepted_connections(interop.read(os.path.join(d, f"stunnel-{name}.log"))))
        return res

    def step(self, g: procs.Group, d: str, rate: int, proxy_port: int, pids, others) -> Step:
        os.makedirs(d, exist_ok=True)
        calls = int(rate * self.step_s)
        with open(os.path.join(d, "calls.csv"), "w") as f:
            f.write("SEQUENTIAL\n")
            for i in range(1000):
                f.write(f"sip:911@{IP}:{proxy_port};1617555{i:04d};\n")
        secs = int(self.step_s + 30)
        argv = ["sipp", "-sf", os.path.join(lab.SCEN, "caller.xml"), "-inf", "calls.csv", "-i", IP, "-t", "t1",
                "-buff_size", "4194304", "-r", str(rate), "-m", str(calls), "-l", str(rate * 10 + 100),
                "-d", str(self.hold), "-recv_timeout", "8000", "-timeout", f"{secs}s", "-timeout_error", "-nostdin",
                "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_err", "-error_file", "errors.log",
                f"{IP}:{T['caller_wrap']}"]
        c = g.start("sipp-caller", argv, os.path.join(d, "stdout.txt"), secs + 10, cwd=d)
        time.sleep(0.5)
        wrap, sipp = others
        caller = lambda: [c.pid] + lab.descendants(c.pid)       # noqa: E731
        t0, c0 = time.monotonic(), (lab.ticks(pids()), lab.ticks(wrap()), lab.ticks(sipp() + caller()))
        time.sleep(max(0.5, self.step_s - 1.0))
        t1, c1 = time.monotonic(), (lab.ticks(pids()), lab.ticks(wrap()), lab.ticks(sipp() + caller()))
        rc = c.popen.wait()
        g.procs = [x for x in g.procs if x is not c]
        st = report.sipp_stat(os.path.join(d, "stat.csv"))
        s = Step(rate, report.num(st, "OutgoingCall(C)"), report.num(st, "SuccessfulCall(C)"),
                 report.num(st, "FailedCall(C)"), sipp_exit=rc)
        per_s = os.sysconf("SC_CLK_TCK") * max(1e-3, t1 - t0)
        s.cpu_cores, s.stunnel_cores, s.sipp_cores = ((b - a) / per_s for a, b in zip(c0, c1))
        s.cpu_per_1k = cpu_per_1k(s.cpu_cores, rate)
        s.done_s = completion_s(os.path.join(d, "stat.csv"))
        s.achieved = s.ok / s.done_s if s.done_s else 0.0
        s.good = step_good(s.made, s.ok, s.failed, calls, self.max_fail, s.done_s, self.step_s)
        with open(os.path.join(d, "step.json"), "w") as f:
            json.dump(asdict(s), f, indent=2)
        return s


def cmd_tls_load(cfg: lab.Config, args: list) -> int:
    interop.need_tools()
    lab.need("stunnel4", "stunnel4")
    peers = [a for a in args if a in ("sosrouter", "kamailio")] or ["sosrouter", "kamailio"]
    if cfg.build and not os.environ.get("SOSROUTER"):
        lab.say("building sosrouter (cargo build --release)")
        if subprocess.call(["cargo", "build", "--release"], cwd=lab.ROOT, stdout=sys.stderr):
            raise lab.Fail("cargo build --release failed")
    out = cfg.out_dir or os.path.join(lab.HERE, "out", f"{time.strftime('%Y%m%d-%H%M%S')}-interop-tls-load")
    os.makedirs(out, exist_ok=True)
    sos = os.path.join(out, "sosrouter.bin")     # a private copy: another build may replace the shared one
    shutil.copy(cfg.sosrouter, sos)
    busy = [p for p in T.values() if procs.port_users(p)]
    if busy:
        raise lab.Fail(f"ports in use: {busy}")
    ld = Load(out, sos)
    lab.say(f"tls-load: sosrouter TLS support: {'yes' if ld.sos_tls else 'no'}; rates {ld.rates}, "
            f"{ld.step_s:g} s each; outputs in {out}")
    with open(os.path.join(out, "uptime.txt"), "w") as f:
        f.write(subprocess.run(["uptime"], capture_output=True, text=True).stdout)
    results = [ld.run_peer(p) for p in peers]
    text = table(results)
    print(text)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"sos_tls": ld.sos_tls, "step_s": ld.step_s, "max_fail_pct": ld.max_fail,
                   "peers": [asdict(r) for r in results]}, f, indent=2)
    lab.say(f"outputs in {out}")
    return 0 if all(r.steps and not r.note for r in results) else 1
