"""The SIPp commands of the testbed (lab topology): smoke, drill, throughput, compare, profile, acceptance,
accept-one, test, all. A port of the former bash testbeds/run: same commands, options, environment
variables, output files (read by sostest.report) and behaviour. See testbeds/README.md.

Every process is started in its own process group under timeout(1) (procs.Group) and stopped by process
group at the end, on success, failure or Ctrl-C; a fault signals the answering point's SIPp by PID.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from . import procs, report

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # testbeds/
ROOT = os.path.dirname(HERE)
SCEN = os.path.join(HERE, "scenarios")
DRILLS = "primary-killed primary-hung both-psaps-down primary-failing-calls primary-flapping".split()
EXTRA_DRILLS = "primary-silent primary-ringing primary-blackhole reload".split()
# AP_PORT_BASE moves the three answering points (primary, backup, gateway on BASE, BASE+1, BASE+2) off the
# default 5071-5073, so two testbeds can share a machine; the rules file and Kamailio's dispatcher list are then
# rewritten into the run's directory with those ports and the proxy's.
AP_PORT_BASE = int(os.environ.get("AP_PORT_BASE") or 5071)
AP_PORTS = {"primary": AP_PORT_BASE, "backup": AP_PORT_BASE + 1, "gateway": AP_PORT_BASE + 2}
# AP_RTP_BASE puts the answering points' RTP echo ports at BASE + 8 * (port - AP_PORT_BASE) (keeps a run in a
# port range of its own); by default they follow from the SIP port.
AP_RTP_BASE = int(os.environ.get("AP_RTP_BASE") or 0)


def rtp_port(port: int) -> int:
    """The RTP echo port of the answering point on SIP `port` (the default ports keep their old ones)."""
    if AP_RTP_BASE:
        return AP_RTP_BASE + 8 * (port - AP_PORT_BASE)
    return 30000 + (port % 1000) * 8 if port < 10000 else 40000 + (port % 2000) * 8


def moved_ports(text: str, proxy_port: int, ap_ip: str) -> str:
    """Rules or dispatcher-list text with the default ports (proxy 5060, answering points 5071-5073) replaced
    by this run's."""
    for i, p in enumerate(AP_PORTS.values()):
        text = text.replace(f"127.0.0.1:{5071 + i}", f"{ap_ip}:{p}")
    return text.replace(":5060\"", f":{proxy_port}\"")


class Fail(Exception):
    """A command failed: the message is printed as ERROR and the exit code is 1."""


def say(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


@dataclass
class Config:
    """Settings from the environment (the same variables as before), overridden by options."""
    proxy: str = field(default_factory=lambda: env("PROXY", "udp:127.0.0.1:5060"))
    start_proxy: bool = field(default_factory=lambda: env("START_PROXY", "1") != "0")
    build: bool = field(default_factory=lambda: env("BUILD", "1") != "0")
    direct: bool = field(default_factory=lambda: env("DIRECT", "0") == "1")
    rules: str = field(default_factory=lambda: env("RULES", os.path.join(ROOT, "routing-rules", "lab.toml")))
    sosrouter: str = field(default_factory=lambda: env("SOSROUTER") or os.path.join(target_dir(), "release", "sosrouter"))
    sosrouter_args: str = field(default_factory=lambda: env("SOSROUTER_ARGS"))
    peer: str = field(default_factory=lambda: env("PEER", "sosrouter"))
    kamailio_cfg: str = field(default_factory=lambda: env("KAMAILIO_CFG", os.path.join(HERE, "kamailio", "kamailio.cfg")))
    kamailio_list: str = field(default_factory=lambda: env("KAMAILIO_LIST", os.path.join(HERE, "kamailio", "dispatcher.list")))
    kamailio_defines: str = field(default_factory=lambda: env("KAMAILIO_DEFINES"))
    sipp_buff: str = field(default_factory=lambda: env("SIPP_BUFF", "4194304"))
    kamailio_mem_mb: str = field(default_factory=lambda: env("KAMAILIO_MEM_MB", "1024"))
    out_dir: str = field(default_factory=lambda: env("OUT_DIR"))
    warmup_s: float = field(default_factory=lambda: float(env("PROXY_WARMUP_S", "3") or 3))
    ap_ip: str = field(default_factory=lambda: env("AP_IP", "127.0.0.1"))
    caller_ip: str = field(default_factory=lambda: env("CALLER_IP", "127.0.0.1"))
    hold_ms: str = field(default_factory=lambda: env("HOLD_MS"))
    ring_ms: str = field(default_factory=lambda: env("RING_MS", "0"))
    call_timeout_ms: int = field(default_factory=lambda: int(env("CALL_TIMEOUT_MS", "8000") or 8000))
    delay_ms: str = field(default_factory=lambda: env("DELAY_MS", "200"))
    rate: str = field(default_factory=lambda: env("RATE"))
    calls: str = field(default_factory=lambda: env("CALLS"))
    rates_given: bool = field(default_factory=lambda: bool(env("RATES")))
    rates: str = field(default_factory=lambda: env("RATES") or "200 400 800 1200 1600 2000 2500 3000 3500 4000 5000 6000")
    step_s: float = field(default_factory=lambda: float(env("STEP_S", "10") or 10))
    bisect_steps: int = field(default_factory=lambda: int(env("BISECT_STEPS", "3") or 3))
    step_retries: int = field(default_factory=lambda: int(env("STEP_RETRIES", "1") or 0))
    # A failed step that saw more host steal than STEAL_RETRY_PCT is run again, up to STEAL_RETRIES
    # times, before it counts (interleaved commands; every stair alike). 0 retries: off.
    steal_retry_pct: float = field(default_factory=lambda: float(env("STEAL_RETRY_PCT", "10") or 10))
    steal_retries: int = field(default_factory=lambda: int(env("STEAL_RETRIES", "2") or 0))
    max_fail_pct: str = field(default_factory=lambda: env("MAX_FAIL_PCT", "0.1"))
    max_retrans_pct: str = field(default_factory=lambda: env("MAX_RETRANS_PCT", "1"))
    max_p99_ms: str = field(default_factory=lambda: env("MAX_P99_MS", "0"))   # 0: no setup p99 criterion
    flap_count: int = field(default_factory=lambda: int(env("FLAP_COUNT", "3") or 3))
    flap_down_s: float = field(default_factory=lambda: float(env("FLAP_DOWN_S", "2") or 2))
    uris: str = field(default_factory=lambda: env("URIS"))
    direct_faults: str = field(default_factory=lambda: env("DIRECT_FAULTS"))
    ap_transport: str = field(default_factory=lambda: env("AP_TRANSPORT"))
    admin_addr: str = field(default_factory=lambda: env("ADMIN_ADDR", "127.0.0.1:9060"))
    admin_token: str = field(default_factory=lambda: env("ADMIN_TOKEN"))   # sent with the testbed's admin reads
    caller_port: str = field(default_factory=lambda: env("CALLER_PORT"))   # the caller SIPp's -p (default: any)
    caller_media_port: str = field(default_factory=lambda: env("CALLER_MEDIA_PORT"))   # its -mp (SIPp's: 6000)

    def __post_init__(self):
        self.parse_proxy()

    def parse_proxy(self):
        p = self.proxy
        self.transport = "udp"
        if p.startswith("udp:"):
            p = p[4:]
        elif p.startswith("tcp:"):
            self.transport, p = "tcp", p[4:]
        self.proxy_host, _, port = p.rpartition(":")
        if not port.isdigit():
            raise Fail(f"bad --proxy '{self.proxy}' (want [udp:|tcp:]host:port)")
        self.proxy_port = int(port)
        self.target = f"{self.ap_ip}:{AP_PORTS['primary']}" if self.direct else f"{self.proxy_host}:{self.proxy_port}"
        self.sipp_t = "t1" if self.transport == "tcp" else "u1"
        self.ap_t = self.ap_transport or (self.sipp_t if self.direct else "u1")

    def child_env(self) -> dict:
        """The environment for a child run of testbeds/run (all, acceptance, compare)."""
        e = dict(os.environ)
        e.update(PROXY=self.proxy, START_PROXY="1" if self.start_proxy else "0", BUILD="1" if self.build else "0",
                 DIRECT="1" if self.direct else "0", RATE=self.rate, CALLS=self.calls, HOLD_MS=self.hold_ms,
                 PEER=self.peer)
        return e


def need(cmd: str, package: str, check: str | None = None):
    """Install a Debian package when its command is missing (apt-get, after apt-get update if that fails)."""
    if shutil.which(check or cmd):
        return
    say(f"{cmd} missing: installing the Debian package {package}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if subprocess.call(sudo + ["apt-get", "install", "-y", package]) != 0:
        subprocess.call(sudo + ["apt-get", "update"])
        subprocess.call(sudo + ["apt-get", "install", "-y", package])
    if not shutil.which(check or cmd):
        raise Fail(f"could not install {cmd} (package {package})")


def need_kamailio():
    if shutil.which("kamailio"):
        return
    need("kamailio", "kamailio")
    if shutil.which("systemctl") and subprocess.call(["systemctl", "is-active", "--quiet", "kamailio"]) == 0:
        say("stopping the kamailio system service the package started")
        subprocess.call(["systemctl", "stop", "kamailio"])


def children(pid: int) -> list:
    """Direct children of pid (from /proc)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid: int) -> list:
    res = []
    for c in children(pid):
        res.append(c)
        res += descendants(c)
    return res


def ticks(pids) -> int:
    """utime + stime (clock ticks) summed over pids (0 for gone ones)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def runq_wait_ns(pids) -> int:
    """Nanoseconds the threads of pids spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat,
    second field), summed; threads that exited since are not counted. Over a step, a proxy whose
    messages wait while it uses little CPU shows here whether it waited for the machine (run queue)
    or for something of its own."""
    total = 0
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total


def pss_kb(pids) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def times_line(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:.3f}s"


class Run:
    """One command's run: its output directory, its processes, its answering points."""

    def __init__(self, cfg: Config, command: str):
        self.cfg, self.command = cfg, command
        self.g = procs.Group()
        self.aps: dict = {}       # name -> Proc
        self.ap_gen: dict = {}
        self.ap_dir: dict = {}
        self.ap_port: dict = {}  # name -> the SIP port its answering point listens on
        self.proxy: procs.Proc | None = None
        self.proxy_pid: int | None = None
        self.out = cfg.out_dir or os.path.join(HERE, "out", f"{time.strftime('%Y%m%d-%H%M%S')}-{command}")
        os.makedirs(os.path.join(self.out, "ap"), exist_ok=True)
        open(os.path.join(self.out, "events.tsv"), "w").close()
        sipp_v = ""
        try:
            v = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5).stdout
            m = re.search(r"v[0-9]\S*", v.replace("\r", ""))
            sipp_v = m.group(0) if m else ""
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, timeout=5).stdout.strip() or "unknown"
        except (OSError, subprocess.TimeoutExpired):
            git = "unknown"
        with open(os.path.join(self.out, "meta.env"), "w") as f:
            f.write(f"command={command}\ndirect={int(cfg.direct)}\nproxy={cfg.proxy}\nstart_proxy={int(cfg.start_proxy)}\n"
                    f"peer={cfg.peer}\ntarget={cfg.target}\ntransport={cfg.transport}\ndelay_ms={cfg.delay_ms}\n"
                    f"sipp={sipp_v}\ngit={git}\nhost_cpus={os.cpu_count()}\n")

    def rel(self, path: str) -> str:
        return os.path.relpath(path, ROOT) if path.startswith(ROOT) else path

    def close(self):
        self.g.stop_all()
        say(f"outputs in {self.rel(self.out)}")

    def event(self, name: str, target: str = ""):
        with open(os.path.join(self.out, "events.tsv"), "a") as f:
            f.write(f"{time.time():.9f}\t{name}\t{target}\n")
        say(f"event: {name} {target}")

    def report(self, *args) -> int:
        """Run sostest.report in-process; its SystemExit code is the result."""
        try:
            report.main(["report.py", *[str(a) for a in args]])
            return 0
        except SystemExit as e:
            return int(e.code or 0)

    # ------------------------------------------------------------ proxy
    def build_proxy(self):
        c = self.cfg
        if c.direct or not c.start_proxy:
            return
        if AP_PORT_BASE != 5071 or c.proxy_port != 5060:
            for attr, name in (("rules", "rules.toml"), ("kamailio_list", "dispatcher.list")):
                src, dst = getattr(c, attr), os.path.join(self.out, name)
                if os.path.isfile(src) and src != dst:
                    with open(src) as f, open(dst, "w") as g:
                        g.write(moved_ports(f.read(), c.proxy_port, c.ap_ip))
                    setattr(c, attr, dst)
        if c.peer == "kamailio":
            need_kamailio()
            if not (os.path.isfile(c.kamailio_cfg) and os.path.isfile(c.kamailio_list)):
                raise Fail(f"no Kamailio config at {c.kamailio_cfg} / {c.kamailio_list}")
            return
        if c.build:
            say("building sosrouter (cargo build --release)")
            with open(os.path.join(self.out, "build.log"), "wb") as log:
                if subprocess.call(["cargo", "build", "--release"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT):
                    raise Fail(f"cargo build --release failed; see {self.rel(self.out)}/build.log")
        if not os.access(c.sosrouter, os.X_OK):
            raise Fail(f"no sosrouter binary at {c.sosrouter} (build failed or --no-build?)")
        if not os.path.isfile(c.rules):
            raise Fail(f"no routing rules at {c.rules} (set RULES=...)")

    def port_free(self, port: int):
        users = procs.port_users(port)
        if not users:
            return
        if "kamailio" in users and shutil.which("systemctl") and \
                subprocess.call(["systemctl", "is-active", "--quiet", "kamailio"]) == 0:
            say(f"the kamailio system service holds port {port}: stopping it")
            subprocess.call(["systemctl", "stop", "kamailio"])
            time.sleep(1)
            users = procs.port_users(port)
            if not users:
                return
        raise Fail(f"port {port} is already in use (another test or a system service?): "
                   + " ".join(users.split()[:12]))

    def start_proxy(self, secs: float, prefix: list | None = None):
        c = self.cfg
        if c.direct or not c.start_proxy:
            return
        self.port_free(c.proxy_port)
        if c.peer == "kamailio":
            run = os.path.join(self.out, "kamailio-run")
            os.makedirs(run, exist_ok=True)
            defs = ["-A", f"SIP_ADDR={c.proxy_host}", "-A", f"SIP_PORT={c.proxy_port}", "-A", f'DS_LIST="{c.kamailio_list}"']
            for d in c.kamailio_defines.split():
                defs += ["-A", d]
            say(f"starting kamailio with {self.rel(c.kamailio_cfg)} on {c.proxy_host}:{c.proxy_port}")
            argv = ["kamailio", "-f", c.kamailio_cfg, "-DD", "-E", "-m", c.kamailio_mem_mb, "-M", "16",
                    "-Y", run, "-w", run] + defs
            log, name, cwd = os.path.join(self.out, "kamailio.log"), "kamailio", run
        else:
            argv = (prefix or []) + [c.sosrouter, "run", "--rules", c.rules, "--undelivered",
                                     os.path.join(self.out, "undelivered.jsonl")] + c.sosrouter_args.split()
            say("starting sosrouter: " + " ".join(argv))
            log, name, cwd = os.path.join(self.out, "sosrouter.log"), "sosrouter", ROOT
        self.proxy = self.g.start(name, argv, log, secs, cwd=cwd)
        procs.wait_until(lambda: children(self.proxy.pid) or not self.proxy.alive(), 2.5)
        kids = children(self.proxy.pid)
        if not kids:
            self.tail(log)
            raise Fail(f"{name} exited at once; see {self.rel(log)}")
        self.proxy_pid = kids[0]
        with open(os.path.join(self.out, f"{name}.pid"), "w") as f:
            f.write(f"{self.proxy_pid}\n")
        time.sleep(c.warmup_s)
        if not self.proxy.alive():
            self.tail(log)
            raise Fail(f"{name} exited during its warm-up; see {self.rel(log)}")
        if name == "kamailio":
            say(f"kamailio up: pid {self.proxy_pid} and {len(descendants(self.proxy_pid))} worker processes")

    def stop_proxy(self):
        """Stops the proxy started last (its whole process group) and waits until its port is free."""
        if self.proxy is None:
            return
        self.g.stop(self.proxy)
        self.g.procs = [x for x in self.g.procs if x is not self.proxy]
        self.proxy, self.proxy_pid = None, None
        procs.wait_until(lambda: not procs.port_users(self.cfg.proxy_port), 10)

    def tail(self, path: str, n: int = 20):
        try:
            with open(path, errors="replace") as f:
                sys.stderr.write("".join(f.readlines()[-n:]))
        except OSError:
            pass

    def proxy_pids(self) -> list:
        if not self.proxy_pid:
            return []
        return [self.proxy_pid] + descendants(self.proxy_pid)

    # ------------------------------------------------------------ answering points
    def new_ap_dir(self, name: str, port: int, scen: str) -> str:
        gen = self.ap_gen.get(name, 0) + 1
        self.ap_gen[name] = gen
        d = os.path.join(self.out, "ap", f"{name}.{gen}")
        os.makedirs(d, exist_ok=True)
        self.ap_dir[name] = d
        self.ap_port[name] = port
        with open(os.path.join(d, "info"), "w") as f:
            f.write(f"name={name}\nport={port}\nscenario={scen}\nstarted={time.time():.9f}\n")
        return d

    def register_ap(self, name: str, proc: procs.Proc, d: str):
        self.aps[name] = proc
        procs.wait_until(lambda: children(proc.pid) or not proc.alive(), 2.5)
        kids = children(proc.pid)
        if not kids:
            raise Fail(f"answering point {name} did not start; see {self.rel(d)}/stdout.txt")
        proc.child = kids[0]
        with open(os.path.join(d, "pid"), "w") as f:
            f.write(f"{kids[0]}\n")

    def start_ap(self, name: str, port: int, scen: str, secs: float):
        c = self.cfg
        d = self.new_ap_dir(name, port, scen)
        # -m bounds SIPp "calls", which here include the proxy's OPTIONS probes (one per second).
        argv = ["sipp", "-sf", os.path.join(SCEN, scen), "-i", c.ap_ip, "-p", str(port), "-t", c.ap_t,
                "-buff_size", c.sipp_buff, "-d", c.ring_ms, "-m", "10000000",
                # Echo RTP (RFC 6849 style loopback) so sosrouter's test calls find the media path good.
                "-rtp_echo", "-mp", str(rtp_port(port)), "-timeout", f"{int(secs)}s", "-nostdin",
                "-recv_timeout", "40000", "-trace_logs", "-log_file", "ap.log", "-trace_stat", "-stf", "stat.csv",
                "-fd", "1", "-trace_err", "-error_file", "errors.log", "-trace_screen", "-screen_file", "screen.log"]
        self.register_ap(name, self.g.start(f"ap-{name}", argv, os.path.join(d, "stdout.txt"), secs + 10, cwd=d), d)

    def start_fake_ap(self, name: str, port: int, mode: str, secs: float):
        """A Python fake PSAP (OPTIONS 200 always, INVITEs per mode) writing SIPp-style ap.log lines."""
        c = self.cfg
        d = self.new_ap_dir(name, port, f"fakepsap:{mode}")
        argv = [sys.executable, "-m", "sostest.fakepsap", "--ip", c.ap_ip, "--psap", f"{name}:{port}:{port + 20000}:{mode}",
                "--log", "events.jsonl", "--sipp-log", "ap.log", "--seconds", str(int(secs))]
        e = dict(os.environ, PYTHONPATH=HERE)
        self.register_ap(name, self.g.start(f"ap-{name}", argv, os.path.join(d, "stdout.txt"), secs + 10, cwd=d, env=e), d)

    def kill_ap(self, name: str):
        """kill -9 of the answering point (a crash): its whole process group, reaped."""
        p = self.aps.get(name)
        if p is None:
            return
        try:
            os.kill(p.child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.g.stop(p, grace=1.0)
        self.g.procs = [x for x in self.g.procs if x is not p]
        with open(os.path.join(self.ap_dir[name], "info"), "a") as f:
            f.write(f"stopped={time.time():.9f}\n")

    def signal_ap(self, name: str, sig):
        try:
            os.kill(self.aps[name].child, sig)
        except (KeyError, ProcessLookupError):
            pass

    def start_all_aps(self, secs: float, prim: str = "psap.xml"):
        self.start_ap("primary", AP_PORTS["primary"], prim, secs)
        self.start_ap("backup", AP_PORTS["backup"], "psap.xml", secs)
        self.start_ap("gateway", AP_PORTS["gateway"], "psap.xml", secs)
        time.sleep(0.3)
        for n in ("primary", "backup", "gateway"):
            if not self.aps[n].alive():
                raise Fail(f"answering point {n} exited at start; see {self.rel(self.ap_dir[n])}")
        say("answering points up: " + ", ".join(f"{n} :{p}" for n, p in AP_PORTS.items()))

    def victim(self, who: str) -> str:
        """In --direct mode faults go to the backup (and the gateway), unless DIRECT_FAULTS=primary."""
        if self.cfg.direct and self.cfg.direct_faults != "primary":
            return {"primary": "backup", "backup": "gateway"}[who]
        return who

    # ------------------------------------------------------------ caller
    def make_calls_csv(self, path: str, n: int):
        c = self.cfg
        host = f"{c.ap_ip}:{AP_PORTS['primary']}" if c.direct else f"{c.proxy_host}:{c.proxy_port}"
        uris = c.uris or "alt"
        with open(path, "w") as f:
            f.write("SEQUENTIAL\n")
            for i in range(1, min(n, 20000) + 1):
                urn = uris == "urn" or (uris == "alt" and i % 2 == 0)
                f.write(f"{'urn:service:sos' if urn else 'sip:911@' + host};1617555{i % 10000:04d};\n")

    def start_caller(self, d: str, rate: int, calls: int, hold: int, nolog: bool = False) -> procs.Proc:
        c = self.cfg
        os.makedirs(d, exist_ok=True)
        self.make_calls_csv(os.path.join(d, "calls.csv"), calls)
        secs = calls // rate + hold // 1000 + c.call_timeout_ms // 1000 + 15
        with open(os.path.join(d, "info"), "w") as f:
            f.write(f"rate={rate}\ncalls={calls}\nhold_ms={hold}\ntarget={c.target}\ntransport={c.transport}\n"
                    f"started={time.time():.9f}\n")
        logs = [] if nolog else ["-trace_logs", "-log_file", "caller.log"]
        ports = (["-p", c.caller_port] if c.caller_port else []) + (["-mp", c.caller_media_port] if c.caller_media_port else [])
        argv = ["sipp", "-sf", os.path.join(SCEN, "caller.xml"), "-inf", "calls.csv", "-i", c.caller_ip, "-t", c.sipp_t, *ports,
                "-buff_size", c.sipp_buff, "-r", str(rate), "-m", str(calls), "-l", str(rate * 30 + 100), "-d", str(hold),
                "-recv_timeout", str(c.call_timeout_ms), "-timeout", f"{secs}s", "-timeout_error", "-nostdin",
                "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_rtt", "-rtt_freq", "100", "-trace_counts",
                *logs, "-trace_err", "-error_file", "errors.log", "-trace_screen", "-screen_file", "screen.log", c.target]
        p = self.g.start("caller", argv, os.path.join(d, "stdout.txt"), secs + 15, cwd=d)
        p.dir = d
        return p

    def wait_caller(self, p: procs.Proc) -> int:
        """SIPp's exit code (0 all calls succeeded, 1 some failed, other: trouble); writes exit_code and
        cpu_times.txt (the caller's CPU, user and system, in bash `times` format on the 2nd line)."""
        try:
            _, status, ru = os.wait4(p.pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            p.popen.returncode = rc
        except ChildProcessError:
            rc, ru = (p.popen.returncode if p.popen.returncode is not None else 255), None
        rc = 255 if rc < 0 else rc
        with open(os.path.join(p.dir, "exit_code"), "w") as f:
            f.write(f"{rc}\n")
        if ru is not None:
            with open(os.path.join(p.dir, "cpu_times.txt"), "w") as f:
                f.write("0m0.000s 0m0.000s\n" + f"{times_line(ru.ru_utime)} {times_line(ru.ru_stime)}\n")
        self.g.procs = [x for x in self.g.procs if x is not p]
        return rc


# ---------------------------------------------------------------- commands
def nap(s: float):
    time.sleep(max(0.0, s))


def cmd_smoke(cfg: Config) -> int:
    rate, calls, hold = int(cfg.rate or 50), int(cfg.calls or 300), int(cfg.hold_ms or 200)
    r = Run(cfg, "smoke")
    try:
        dur = calls // rate
        r.build_proxy()
        r.start_all_aps(dur + 60)
        r.start_proxy(dur + 90)
        v = r.victim("primary")
        say(f"smoke: {calls} calls at {rate}/s over {cfg.transport} to {cfg.target}; {v} killed at ~{dur // 2} s")
        caller = r.start_caller(os.path.join(r.out, "caller"), rate, calls, hold)
        nap(dur // 2)
        r.event("kill", v)
        r.kill_ap(v)
        rc = r.wait_caller(caller)
        return r.report("smoke", r.out, rc)
    finally:
        r.close()


def swap_chain(path: str):
    """psap-primary and psap-backup trade places in every chain of the rules copy."""
    s = open(path).read()
    a, b = '"psap-primary", "psap-backup"', '"psap-backup", "psap-primary"'
    s = s.replace(a, "\0").replace(b, a).replace("\0", b)
    with open(path, "w") as f:
        f.write(s)


def admin_reload(r: Run):
    import urllib.request
    req = urllib.request.Request(f"http://{r.cfg.admin_addr}/reload", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp, open(os.path.join(r.out, "reload.log"), "a") as f:
            f.write(f"{resp.status} {resp.read().decode()}\n")
    except OSError as e:
        with open(os.path.join(r.out, "reload.log"), "a") as f:
            f.write(f"{e}\n")
        raise Fail("reload refused; see reload.log")


def one_drill(r: Run, name: str) -> int:
    cfg = r.cfg
    rate, calls = int(cfg.rate or (20 if name == "primary-blackhole" else 100)), \
        int(cfg.calls or (300 if name == "primary-blackhole" else 3000))
    hold = int(cfg.hold_ms or 500)
    dur = calls // rate
    third = dur // 3
    v, v2 = r.victim("primary"), r.victim("backup")
    if name == "reload" and cfg.rules != os.path.join(r.out, "rules.toml"):
        # the drill edits a copy of the rules, never the shipped file
        shutil.copy(cfg.rules, os.path.join(r.out, "rules.toml"))
        cfg.rules = os.path.join(r.out, "rules.toml")
    r.start_all_aps(dur + 90)
    r.start_proxy(dur + 120)
    say(f"drill {name}: {calls} calls at {rate}/s over {cfg.transport} to {cfg.target}; fault at ~{third} s, "
        f"restore at ~{2 * third} s")
    caller = r.start_caller(os.path.join(r.out, "caller"), rate, calls, hold)
    nap(third)
    port = AP_PORTS
    if name == "primary-killed":
        r.event("kill", v); r.kill_ap(v); nap(third)                                   # noqa: E702
        r.event("restore", v); r.start_ap(v, port[v], "psap.xml", dur + 60)             # noqa: E702
    elif name == "primary-hung":
        r.event("stop", v); r.signal_ap(v, signal.SIGSTOP); nap(third)                 # noqa: E702
        r.event("restore", v); r.signal_ap(v, signal.SIGCONT)                           # noqa: E702
    elif name == "both-psaps-down":
        r.event("kill", v); r.kill_ap(v); r.event("kill", v2); r.kill_ap(v2); nap(third)  # noqa: E702
        r.event("restore", v); r.start_ap(v, port[v], "psap.xml", dur + 60)             # noqa: E702
        r.event("restore", v2); r.start_ap(v2, port[v2], "psap.xml", dur + 60)          # noqa: E702
    elif name in ("primary-failing-calls", "primary-silent", "primary-ringing"):
        bad = {"primary-silent": "psap-silent.xml", "primary-ringing": "psap-ringing.xml"}.get(name, "psap-503.xml")
        r.event("replace", v); r.kill_ap(v); r.start_ap(v, port[v], bad, dur + 60); nap(third)  # noqa: E702
        r.event("restore", v); r.kill_ap(v); r.start_ap(v, port[v], "psap.xml", dur + 60)      # noqa: E702
    elif name == "primary-blackhole":
        # The primary keeps answering OPTIONS but swallows every INVITE: a fake PSAP takes its port during
        # the fault and writes SIPp-style ap.log lines, so "calls reaching failed target" counts them.
        r.event("replace", v); r.kill_ap(v); r.start_fake_ap(v, port[v], "blackhole", dur + 60); nap(third)  # noqa: E702
        r.event("restore", v); r.kill_ap(v); r.start_ap(v, port[v], "psap.xml", dur + 60)                   # noqa: E702
    elif name == "primary-flapping":
        for _ in range(cfg.flap_count):
            r.event("kill", v); r.kill_ap(v); nap(cfg.flap_down_s)                                  # noqa: E702
            r.event("restore", v); r.start_ap(v, port[v], "psap.xml", dur + 60); nap(cfg.flap_down_s)  # noqa: E702
    elif name == "reload":
        # An operator edits the rules during the incident: primary and backup swap places in every chain,
        # then POST /reload; at 2/3 the edit is undone. Calls in flight keep their plan.
        r.event("reload", v); swap_chain(cfg.rules); admin_reload(r); nap(third)        # noqa: E702
        r.event("restore", v); swap_chain(cfg.rules); admin_reload(r)                   # noqa: E702
    else:
        raise Fail(f"unknown drill '{name}' (try: {' '.join(DRILLS + EXTRA_DRILLS)})")
    rc = r.wait_caller(caller)
    say(f"caller finished (SIPp exit code {rc})")
    return r.report("drill", r.out, name, rc)


def cmd_drill(cfg: Config, name: str) -> int:
    if not name:
        raise Fail(f"drill needs a NAME: {' '.join(DRILLS)}")
    if name not in DRILLS + EXTRA_DRILLS:
        raise Fail(f"unknown drill '{name}' (try: {' '.join(DRILLS + EXTRA_DRILLS)})")
    r = Run(cfg, f"drill-{name}")
    try:
        r.build_proxy()
        return one_drill(r, name)
    finally:
        r.close()


def scrape_metrics(admin: str, token: str = "") -> str:
    """sosrouter's GET /metrics text (with the bearer token when given); "" when unreachable or refused."""
    import urllib.request
    req = urllib.request.Request(f"http://{admin}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.read().decode(errors="replace")
    except OSError:
        return ""


def scrape_histogram(admin: str, name: str, token: str = "") -> dict:
    """{upper bound: cumulative count} of histogram `name` on sosrouter's GET /metrics; {} when unreachable."""
    text = scrape_metrics(admin, token)
    out = {}
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\d+)', text, re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def target_dir() -> str:
    """cargo's target directory: CARGO_TARGET_DIR, or target/ of the repository."""
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def cpu_jiffies() -> dict:
    """The machine's CPU time so far, from the first line of /proc/stat (jiffies, all CPUs): user, nice, system,
    idle, iowait, irq, softirq, steal. Steal is time a virtual machine's CPUs were ready to run and the host ran
    something else: latency figures taken while it is high say more about the host than about the proxy."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    try:
        with open("/proc/stat") as f:
            vals = f.readline().split()[1:1 + len(names)]
    except OSError:
        return {}
    return {k: int(v) for k, v in zip(names, vals)}


def jiffies_delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a.get(k, 0) for k in b}


def udp_counters() -> dict:
    """The kernel's UDP counters (/proc/net/snmp, IPv4 and IPv6 summed): machine-wide, so another testbed on
    the machine adds to them."""
    out: dict = {}
    for path, prefix in (("/proc/net/snmp", "Udp:"), ("/proc/net/snmp6", "Udp6")):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        if prefix == "Udp:":
            rows = [ln.split()[1:] for ln in lines if ln.startswith("Udp:")]
            if len(rows) >= 2:
                for k, v in zip(rows[0], rows[1]):
                    out[k] = out.get(k, 0) + int(v)
        else:
            for ln in lines:
                k, _, v = ln.partition(" ")
                if k.startswith("Udp6"):
                    k = k[4:]
                    out[k] = out.get(k, 0) + int(v.strip() or 0)
    return out


def socket_drops(ports) -> dict:
    """{local port: dropped datagrams} summed over the UDP sockets bound to each port (`ss -uamn`, skmem d)."""
    try:
        text = subprocess.run(["ss", "-uamnH"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {p: 0 for p in ports}
    port = None
    for ln in text.splitlines():
        f = ln.split()
        if len(f) >= 4 and ":" in f[3]:
            try:
                port = int(f[3].rsplit(":", 1)[1])
            except ValueError:
                port = None
        m = re.search(r"skmem:\([^)]*\bd(\d+)", ln)
        if m and port in out:
            out[port] += int(m.group(1))
    return out


def throughput_step(r: Run, d: str, rate: int):
    """One stair; CPU sampled over the call-creation phase only (0.5 s after the caller starts to 0.5 s
    before it has created its last call), so the tail of slow calls does not dilute it. Around the whole step:
    sosrouter's runtime lateness histogram, the kernel's UDP drop counters and the proxy's and answering
    points' socket drops (stall.json)."""
    cfg = r.cfg
    calls = int(rate * cfg.step_s)
    ports = [cfg.proxy_port, *(r.ap_port.values() or AP_PORTS.values())]
    sos = cfg.peer == "sosrouter" and cfg.start_proxy and not cfg.direct
    late0 = scrape_histogram(cfg.admin_addr, "sosrouter_runtime_lateness_seconds", cfg.admin_token) if sos else {}
    udp0, drops0, cpu0 = udp_counters(), socket_drops(ports), cpu_jiffies()
    caller = r.start_caller(d, rate, calls, int(cfg.hold_ms or 0), nolog=True)
    nap(0.5)
    cp = next((p for p in descendants(caller.pid) if comm(p) == "sipp"), None)
    pp = r.proxy_pids()
    aps = [getattr(p, "child", 0) for p in r.aps.values()]
    t0 = time.time()
    c0 = (ticks(pp), ticks([cp]) if cp else 0, ticks(aps))
    q0 = (runq_wait_ns(pp), runq_wait_ns([cp]) if cp else 0, runq_wait_ns(aps))
    nap(max(0.5, cfg.step_s - 1.0))
    t1 = time.time()
    c1 = (ticks(pp), ticks([cp]) if cp else 0, ticks(aps))
    q1 = (runq_wait_ns(pp), runq_wait_ns([cp]) if cp else 0, runq_wait_ns(aps))
    pss = pss_kb(pp)
    rc = r.wait_caller(caller)
    with open(os.path.join(d, "cpu.env"), "w") as f:
        f.write(f"t0={t0}\nt1={t1}\nclk_tck={os.sysconf('SC_CLK_TCK')}\nexit_code={rc}\n"
                f"proxy_ticks={c1[0] - c0[0]}\nproxy_running={1 if r.proxy_pid else 0}\n"
                f"caller_ticks={c1[1] - c0[1]}\ncaller_found={1 if cp and c1[1] > 0 else 0}\n"
                f"proxy_pss_kb={pss}\nap_ticks={c1[2] - c0[2]}\n"
                f"proxy_runq_ns={q1[0] - q0[0]}\ncaller_runq_ns={q1[1] - q0[1]}\nap_runq_ns={q1[2] - q0[2]}\n")
    late1 = scrape_histogram(cfg.admin_addr, "sosrouter_runtime_lateness_seconds", cfg.admin_token) if sos else {}
    udp1, drops1, cpu1 = udp_counters(), socket_drops(ports), cpu_jiffies()
    import json
    with open(os.path.join(d, "stall.json"), "w") as f:
        json.dump({"runtime_lateness_buckets": {k: v - late0.get(k, 0) for k, v in late1.items()},
                   "cpu_jiffies": jiffies_delta(cpu0, cpu1),
                   "udp": {k: udp1[k] - udp0.get(k, 0) for k in udp1
                           if k in ("InDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors")},
                   "socket_drops": {str(p): drops1.get(p, 0) - drops0.get(p, 0) for p in ports}}, f, indent=1)
    r.report("step", d, rate, cfg.max_fail_pct, cfg.max_retrans_pct, cfg.max_p99_ms)


def step_ok(d: str) -> bool:
    import json
    try:
        with open(os.path.join(d, "step.json")) as f:
            return bool(json.load(f)["ok"])
    except (OSError, ValueError, KeyError):
        return False


def step_steal(d: str) -> float | None:
    """The host steal a step saw, in % (None when the step wrote none)."""
    import json
    try:
        with open(os.path.join(d, "step.json")) as f:
            v = json.load(f).get("steal_pct")
        return None if v is None else float(v)
    except (OSError, ValueError, TypeError):
        return None


class Stair:
    """The throughput stair, pure: each rate of `rates` in turn until the first bad step, then up to
    `bisect_steps` bisections between the last good and the first bad rate (rounded down to 10 calls/s).
    `next_rate()` is the rate to run next (None: done), `record(rate, ok)` its verdict; `knee` is the highest
    good rate (None when none was good). With `retries` (STEP_RETRIES; the interleaved commands only), a bad
    step is run again up to that many times and the rate is bad only when every attempt was: on a shared
    host one burst of CPU steal fails a step at any rate, and the attempts run for every stair alike.
    With `steal_retries` and `steal_limit` (STEAL_RETRIES, STEAL_RETRY_PCT), a bad step that saw more host
    steal than the limit is run again first, up to `steal_retries` times, without spending `retries`: on
    this project's VMs a step at 12-19 % steal failed on setup p99 where the same rate at 0 % passed with
    a p99 of 8 ms (2026-12-03 10:20 compare). A bad step under low steal counts as it always did.
    `throughput` runs one; `compare`, `sse-load` and `scale-knee` interleave two."""

    def __init__(self, rates, bisect_steps: int, retries: int = 0, steal_retries: int = 0,
                 steal_limit: float | None = None):
        self.rates, self.bisect_steps = [int(x) for x in rates], int(bisect_steps)
        self.retries, self.attempts = int(retries), 0
        self.steal_retries, self.steal_limit, self.steal_attempts = int(steal_retries), steal_limit, 0
        self.stolen: float | None = None  # the steal that sent the step to be run again
        self.good = self.bad = 0
        self.climbed = self.bisected = 0
        self.retry: int | None = None

    def next_rate(self) -> int | None:
        if self.retry is not None:
            return self.retry
        if not self.bad:
            return self.rates[self.climbed] if self.climbed < len(self.rates) else None
        mid = (self.good + self.bad) // 2 // 10 * 10
        if self.bisected >= self.bisect_steps or mid <= self.good or mid >= self.bad:
            return None
        return mid

    def label(self) -> str:
        """What the next step is, for the log: `step N` while climbing, `bisection N` after, `retry N of`
        either."""
        if self.retry is not None and self.stolen is not None:
            return f"steal retry {self.steal_attempts} of {self.retry} (it failed at {self.stolen:.0f} % host steal)"
        if self.retry is not None:
            return f"retry {self.attempts} of {self.retry} (it failed)"
        if not self.bad:
            return f"step {self.climbed + 1}"
        return f"bisection {self.bisected + 1} (last good {self.good}, first bad {self.bad})"

    def record(self, rate: int, ok: bool, steal: float | None = None):
        if (not ok and self.steal_limit is not None and steal is not None and steal > self.steal_limit
                and self.steal_attempts < self.steal_retries):
            self.steal_attempts += 1
            self.retry, self.stolen = rate, steal
            return
        self.stolen = None
        if not ok and self.attempts < self.retries:
            self.attempts += 1
            self.retry = rate
            return
        self.retry, self.attempts, self.steal_attempts = None, 0, 0
        if self.bad:
            self.bisected += 1
        else:
            self.climbed += 1
        if ok:
            self.good = rate
        else:
            self.bad = rate

    @property
    def knee(self) -> int | None:
        return self.good or None


def cmd_throughput(cfg: Config) -> int:
    r = Run(cfg, "throughput")
    try:
        r.build_proxy()
        rates = [int(x) for x in cfg.rates.split()]
        budget = (len(rates) + cfg.bisect_steps) * (cfg.step_s + 30) + 60
        r.start_all_aps(budget)
        r.start_proxy(budget)
        stair, n = Stair(rates, cfg.bisect_steps), 0
        while (rate := stair.next_rate()) is not None:
            n += 1
            say(f"throughput {stair.label()}: {rate} calls/s for {cfg.step_s:g} s")
            d = os.path.join(r.out, "steps", f"{n:02d}-r{rate}")
            throughput_step(r, d, rate)
            stair.record(rate, step_ok(d))
        return r.report("throughput", r.out)
    finally:
        r.close()


def cmd_accept_one(cfg: Config, only: str) -> int:
    if only not in AP_PORTS:
        raise Fail("accept-one: want primary, backup or gateway")
    rate, calls, hold = int(cfg.rate or 100), int(cfg.calls or 300), int(cfg.hold_ms or 100)
    r = Run(cfg, f"accept-{only}-{cfg.uris or 'alt'}-{cfg.transport}")
    try:
        dur = calls // rate
        r.build_proxy()
        r.start_ap(only, AP_PORTS[only], "psap.xml", dur + 60)
        r.start_proxy(dur + 90)
        say(f"acceptance: only {only} answers; {calls} calls at {rate}/s to {cfg.uris or 'alt'} over {cfg.transport}")
        caller = r.start_caller(os.path.join(r.out, "caller"), rate, calls, hold)
        rc = r.wait_caller(caller)
        return r.report("smoke", r.out, rc)
    finally:
        r.close()


def run_self(args: list, e: dict) -> int:
    """Another testbeds/run command as a child (as the bash script ran "$0 ...")."""
    return subprocess.call([os.path.join(HERE, "run"), *args], env=e)


def cmd_acceptance(cfg: Config) -> int:
    failed = []
    for proto in ("udp", "tcp"):
        for only in ("primary", "backup", "gateway"):
            for uris in ("sip911", "urn"):
                e = cfg.child_env()
                e.update(URIS=uris, PROXY=f"{proto}:{cfg.proxy_host}:{cfg.proxy_port}", BUILD="0")
                if run_self(["accept-one", only], e) != 0:
                    failed.append(f"{only}/{uris}/{proto}")
    if failed:
        raise Fail("acceptance failed: " + " ".join(failed))
    say("acceptance passed: 12 runs, zero failed calls")
    return 0


def need_browser():
    """Debian's Chromium and Playwright for Python (pointed at /usr/bin/chromium: no browser download)."""
    need("chromium", "chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        say("playwright missing: pip install --break-system-packages playwright")
        if subprocess.call([sys.executable, "-m", "pip", "install", "--break-system-packages", "playwright"]):
            need("pip3", "python3-pip")
            subprocess.call([sys.executable, "-m", "pip", "install", "--break-system-packages", "playwright"])


def cmd_test(cfg: Config) -> int:
    # cargo test's two_sites tests and the cluster console test start Debian's etcd (never skipped).
    need("etcd", "etcd-server")
    if subprocess.call(["cargo", "test"], cwd=ROOT):
        raise Fail("cargo test failed")
    need_browser()
    # The console's browser tests run here, never skip (they fail when the browser is missing).
    if subprocess.call([sys.executable, "-m", "pytest", "-q", os.path.join(HERE, "tests")],
                       env=dict(os.environ, PYTHONPATH=HERE, SOSTEST_REQUIRE_BROWSER="1")):
        raise Fail("the testbed's pytest suite failed")
    if subprocess.call(["cargo", "build", "--release"], cwd=ROOT):
        raise Fail("cargo build --release failed")
    e = cfg.child_env()
    e["BUILD"] = "0"
    if run_self(["smoke"], e):
        raise Fail("smoke drill failed")
    if run_self(["acceptance"], e):
        raise Fail("acceptance failed")
    if run_self(["interop"], e):
        raise Fail("interop failed")
    say("every test passed")
    return 0


def cmd_compare(cfg: Config) -> int:
    """sosrouter's and Kamailio's throughput stairs, interleaved: each round runs one step of each peer's
    stair (lab.Stair: climb, then bisect), the order alternating each round, a fresh proxy per step, one set
    of answering points for both. On a shared virtual machine the host's CPU steal swung between 1 % and 36 %
    within minutes (each step reports it); one peer's whole stair after the other's compared two different
    machines, interleaved steps see the same one."""
    r = Run(cfg, "compare")
    try:
        rates = [int(x) for x in (cfg.rates if cfg.rates_given else
                                  "200 400 800 1000 1200 1600 2000 2500 3000 3500 4000 5000 6000").split()]
        peers = env("COMPARE_PEERS", "sosrouter kamailio").split()
        peer = cfg.peer
        cfg.peer = "sosrouter"
        r.build_proxy()
        cfg.peer = peer
        need_kamailio()
        budget = 2 * (len(rates) + cfg.bisect_steps) * (cfg.step_s + cfg.warmup_s + 35) + 120
        r.start_all_aps(budget)
        stairs = {p: Stair(rates, cfg.bisect_steps, cfg.step_retries, cfg.steal_retries, cfg.steal_retry_pct)
                  for p in peers}
        n = {p: 0 for p in peers}
        for p in peers:
            os.makedirs(os.path.join(r.out, p, "steps"), exist_ok=True)
            with open(os.path.join(r.out, "meta.env")) as f, open(os.path.join(r.out, p, "meta.env"), "w") as g:
                g.write(f.read().replace("peer=", "compare_peer=") + f"peer={p}\ninterleaved=1\n")
        say(f"compare: throughput stairs ({' '.join(map(str, rates))}), {' and '.join(peers)} interleaved step by step")
        rounds = 0
        while any(st.next_rate() is not None for st in stairs.values()):
            for p in (peers if rounds % 2 == 0 else peers[::-1]):
                rate = stairs[p].next_rate()
                if rate is None:
                    continue
                n[p] += 1
                say(f"compare: {p} {stairs[p].label()}: {rate} calls/s for {cfg.step_s:g} s")
                cfg.peer = p
                r.start_proxy(budget)
                d = os.path.join(r.out, p, "steps", f"{n[p]:02d}-r{rate}")
                try:
                    throughput_step(r, d, rate)
                finally:
                    r.stop_proxy()
                stairs[p].record(rate, step_ok(d), step_steal(d))
            rounds += 1
        cfg.peer = peer
        for p in peers:
            r.report("throughput", os.path.join(r.out, p))
        return r.report("compare", r.out)
    finally:
        r.close()


def cmd_profile(cfg: Config) -> int:
    if cfg.peer != "sosrouter" or cfg.direct or not cfg.start_proxy:
        raise Fail("profile starts sosrouter itself (no --peer kamailio, --direct or --no-start-proxy)")
    need("valgrind", "valgrind", "callgrind_annotate")
    rate, calls, hold = int(cfg.rate or 100), int(cfg.calls or 2000), int(cfg.hold_ms or 0)
    r = Run(cfg, "profile")
    try:
        r.build_proxy()
        dur = calls // rate
        cg = os.path.join(r.out, "callgrind.out")
        r.start_all_aps(dur + 180)
        cfg.warmup_s = max(cfg.warmup_s, 10)   # valgrind starts slowly
        r.start_proxy(dur + 150, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", "--dump-instr=no",
                                  "--collect-jumps=no"])
        ctl_log = os.path.join(r.out, "callgrind_control.log")
        with open(ctl_log, "ab") as f:
            if subprocess.call(["callgrind_control", "-z", str(r.proxy_pid)], stdout=f, stderr=subprocess.STDOUT):
                raise Fail(f"callgrind_control -z failed; see {r.rel(ctl_log)}")
        say(f"profile: {calls} calls at {rate}/s over {cfg.transport} to {cfg.target}, sosrouter under callgrind "
            f"(pid {r.proxy_pid})")
        caller = r.start_caller(os.path.join(r.out, "caller"), rate, calls, hold, nolog=True)
        rc = r.wait_caller(caller)
        say(f"caller finished (SIPp exit code {rc}); dumping callgrind counters")
        mark = os.path.getmtime(os.path.join(r.out, "caller", "exit_code"))
        with open(ctl_log, "ab") as f:
            if subprocess.call(["callgrind_control", "-d", str(r.proxy_pid)], stdout=f, stderr=subprocess.STDOUT):
                raise Fail(f"callgrind_control -d failed; see {r.rel(ctl_log)}")
        nap(1)
        dumps = sorted(p for p in glob.glob(os.path.join(r.out, "callgrind.out.*")) if os.path.getmtime(p) >= mark)
        if not dumps:
            raise Fail(f"no callgrind dump in {r.rel(r.out)}")
        shutil.copy(dumps[-1], os.path.join(r.out, "calls.callgrind"))
        for incl, name in (("yes", "annotate-inclusive.txt"), ("no", "annotate-self.txt")):
            with open(os.path.join(r.out, name), "wb") as f:
                subprocess.call(["callgrind_annotate", "--auto=no", "--threshold=100", f"--inclusive={incl}",
                                 os.path.join(r.out, "calls.callgrind")], stdout=f, stderr=subprocess.STDOUT)
        return r.report("profile", r.out, rc)
    finally:
        r.close()


def cmd_soak(cfg: Config, args: list) -> int:
    """testbeds/soak/rss-soak [SECONDS] [CALLS_PER_S] in its own process group, bounded by timeout(1)."""
    seconds = int(args[0]) if args and args[0].isdigit() else 60
    out = cfg.out_dir or os.path.join(HERE, "out", f"{time.strftime('%Y%m%d-%H%M%S')}-soak")
    os.makedirs(out, exist_ok=True)
    g = procs.Group()
    try:
        e = dict(os.environ, SOSROUTER=cfg.sosrouter)
        p = g.start("rss-soak", [sys.executable, os.path.join(HERE, "soak", "rss-soak"), *args[:2]],
                    os.path.join(out, "soak.log"), seconds + 120, env=e)
        rc = p.popen.wait()
    finally:
        g.stop_all()
    with open(os.path.join(out, "soak.log"), errors="replace") as f:
        sys.stdout.write(f.read())
    say(f"outputs in {out}")
    return rc


def cmd_all(cfg: Config) -> int:
    failed = []
    e = cfg.child_env()
    if run_self(["smoke"], e):
        failed.append("smoke")
    for d in DRILLS:
        if run_self(["drill", d], e):
            failed.append(f"drill {d}")
    if run_self(["throughput"], e):
        failed.append("throughput")
    if failed:
        raise Fail("failed: " + ", ".join(failed))
    say("all passed")
    return 0


COMMANDS = {"smoke": cmd_smoke, "throughput": cmd_throughput, "all": cmd_all, "acceptance": cmd_acceptance,
            "test": cmd_test, "compare": cmd_compare, "profile": cmd_profile}


class Terminated(Exception):
    """SIGTERM: unwinds like Ctrl-C, through every finally (processes stopped)."""


def on_sigterm(_sig, _frame):
    raise Terminated()


def dispatch(cfg: Config, cmd: str, args: list) -> int:
    """Run one SIPp command."""
    try:
        if cmd in ("smoke", "throughput", "all", "acceptance", "test", "compare", "profile",
                   "accept-one", "drill"):
            need("sipp", "sip-tester")
        if cmd == "accept-one":
            return cmd_accept_one(cfg, args[0] if args else "")
        if cmd == "drill":
            return cmd_drill(cfg, args[0] if args else "")
        if cmd == "soak":
            return cmd_soak(cfg, args)
        return COMMANDS[cmd](cfg)
    except Fail as e:
        say(f"ERROR: {e}")
        return 1
