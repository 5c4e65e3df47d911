"""The statewide drills: N regions of fake PSAPs behind the proxy, a steady stream of emergency calls,
a silent fault switched on live at every PSAP (or every primary) and switched off again.

Timeline (defaults): calls at RATE=5/s for CALLING_S=55 s; the fault at FAULT_AT_S=10 s, lasting
FAULT_S=30 s, then restored. Outputs in the run's directory: calls.jsonl (caller), psaps.jsonl (fake PSAPs),
drill.jsonl (fault/restore marks), sse.jsonl (the proxy's /events stream), result.json, summary.txt, plot.png.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field

from . import fakepsap, procs, topology

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # testbeds/
ROOT = os.path.dirname(HERE)

# drill name -> ({fake PSAP selector: mode}, description)
DRILLS = {
    "statewide-blackhole": ({"*": "blackhole"}, "every PSAP swallows INVITEs (OPTIONS answered)"),
    "statewide-trying": ({"*": "trying"}, "every PSAP sends 100 Trying, then nothing"),
    "statewide-primaries-blackhole": ({"role:primary": "blackhole"}, "only the primaries swallow INVITEs"),
    "statewide-dead-media": ({"*": "dead-media"}, "every PSAP answers, RTP echo dead"),
    "statewide-503": ({"*": "503"}, "every PSAP answers INVITEs 503"),
    "statewide-silent": ({"*": "silent"}, "every PSAP silent: no answer to anything, OPTIONS included"),
}
DELAY_MS = 500.0


# ------------------------------------------------------------------ the systemic event
def is_systemic(event_name: str, data: str) -> bool:
    """Does one SSE event announce a systemic failure? THE matcher: adjust here when the event changes.

    event_name is the SSE `event:` field ("" when absent), data the `data:` payload (JSON text)."""
    if event_name == "systemic":
        return True
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and (obj.get("kind") == "systemic" or obj.get("type") == "systemic")


def read_sse(url: str, out_path: str, stop: threading.Event, seconds: float):
    """Record every SSE event of url as {"t", "event", "data", "systemic"} lines until stop or seconds."""
    end = time.time() + seconds
    with open(out_path, "a", buffering=1) as out:
        while not stop.is_set() and time.time() < end:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    name, data = "", []
                    while not stop.is_set() and time.time() < end:
                        try:
                            line = r.readline()
                        except TimeoutError:
                            continue
                        except OSError:
                            break
                        if not line:
                            break
                        line = line.decode("utf-8", "replace").rstrip("\r\n")
                        if line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            d = "\n".join(data)
                            out.write(json.dumps({"t": time.time(), "event": name, "data": d,
                                                  "systemic": is_systemic(name, d)}) + "\n")
                            name, data = "", []
            except OSError:
                time.sleep(0.3)


# ------------------------------------------------------------------ results as data
@dataclass
class DrillResult:
    drill: str
    peer: str
    description: str
    regions: int
    rate: float
    calls_planned: int
    fault_at_s: float | None = None          # since the first call
    fault_s: float | None = None
    calls_made: int = 0
    calls_failed: int = 0                    # not answered (timeout, error final, error)
    failed_in_fault: int = 0
    failure_reasons: dict = field(default_factory=dict)
    calls_in_fault: int = 0
    delayed_in_fault: int = 0                # answered, setup > 500 ms, started during the fault
    last_delayed_start_s: float | None = None   # s into the fault
    setup_ms_p50: float | None = None
    setup_ms_max: float | None = None
    invites_to_broken_after_5s: int | None = None   # new INVITE transactions at faulty PSAPs, F+5 .. R
    invites_to_broken_total: int | None = None      # F .. R
    test_calls_to_broken_after_5s: int | None = None  # sosrouter's test calls at faulty PSAPs, F+5 .. R
    invite_packets_to_broken_after_5s: int | None = None  # the same with the proxy's retransmissions
    dead_media_answers_after_10s: int | None = None  # 200s sent by a dead-media PSAP, F+10 .. R
    calls_media_dead: int = 0                         # calls whose caller heard no echo
    systemic_event_s: float | None = None             # first systemic SSE event - F
    sse_events: int | None = None
    traffic_back_s: float | None = None               # first call started after R answered by a primary
    traffic_back_all_regions_s: float | None = None   # ... by every region's primary
    primaries_ready_s: float | None = None  # sosrouter: the last primary not ready at R turns ready (SSE)
    answered_by_role: dict = field(default_factory=dict)
    answered_by_role_in_fault: dict = field(default_factory=dict)
    out: str = ""


def load_jsonl(path: str) -> list:
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
    return rows


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    k = max(1, -(-int(p * len(v)) // 100))
    return v[min(k, len(v)) - 1]


def role_of(answered_by: str, roles: dict) -> str:
    if not answered_by:
        return "-"
    return {"primary": "primary", "backup": "backup", "gateway": "business line"}.get(roles.get(answered_by, ""), "other")


def analyse(out: str, name: str, peer: str, topo: topology.Topology, rate: float, planned: int) -> DrillResult:
    """The figures of one drill from the files in its directory."""
    calls = sorted(load_jsonl(os.path.join(out, "calls.jsonl")), key=lambda c: c["index"])
    psap_ev = load_jsonl(os.path.join(out, "psaps.jsonl"))
    marks = load_jsonl(os.path.join(out, "drill.jsonl"))
    sse = load_jsonl(os.path.join(out, "sse.jsonl"))
    roles = topo.roles()
    setting, desc = DRILLS.get(name, ({}, ""))
    res = DrillResult(name, peer, desc, len(topo.regions), rate, planned, out=out)
    res.calls_made = len(calls)
    t0 = min((c["start"] for c in calls if c["start"]), default=None)
    F = next((m["t"] for m in marks if m["ev"] == "fault"), None)
    R = next((m["t"] for m in marks if m["ev"] == "restore"), None)
    if F is not None and t0 is not None:
        res.fault_at_s = F - t0
    if F is not None and R is not None:
        res.fault_s = R - F
    end = R if R is not None else float("inf")
    in_fault = [c for c in calls if F is not None and F <= c["start"] < end]
    failed = [c for c in calls if c["status"] != "answered"]
    res.calls_failed = len(failed)
    res.failed_in_fault = sum(1 for c in in_fault if c["status"] != "answered")
    for c in failed:
        res.failure_reasons[c["status"]] = res.failure_reasons.get(c["status"], 0) + 1
    res.calls_in_fault = len(in_fault)
    delayed = [c for c in in_fault if c["status"] == "answered" and c["setup_ms"] > DELAY_MS]
    res.delayed_in_fault = len(delayed)
    if delayed:
        res.last_delayed_start_s = max(c["start"] for c in delayed) - F
    setups = [c["setup_ms"] for c in calls if c["setup_ms"] is not None]
    res.setup_ms_p50 = percentile(setups, 50)
    res.setup_ms_max = max(setups) if setups else None
    res.calls_media_dead = sum(1 for c in calls if c["status"] == "answered" and c.get("media_ok") is False)
    for c in calls:
        if c["status"] == "answered":
            r = role_of(c["answered_by"], roles)
            res.answered_by_role[r] = res.answered_by_role.get(r, 0) + 1
    for c in in_fault:
        if c["status"] == "answered":
            r = role_of(c["answered_by"], roles)
            res.answered_by_role_in_fault[r] = res.answered_by_role_in_fault.get(r, 0) + 1
    if F is not None:
        # Real calls only: sosrouter's own test calls (urn:service:test.sos) are counted apart.
        tests = [e for e in psap_ev if e["ev"] == "invite" and e.get("new") and is_test_call(e)
                 and e["mode"] in fakepsap.FAULT_MODES and e["role"] != "gateway" and F + 5 <= e["t"] < end]
        res.test_calls_to_broken_after_5s = len(tests)
        broken = [e for e in psap_ev if e["ev"] == "invite" and e.get("new") and not is_test_call(e)
                  and e["mode"] in fakepsap.FAULT_MODES and e["role"] != "gateway" and F <= e["t"] < end]
        res.invites_to_broken_total = len(broken)
        res.invite_packets_to_broken_after_5s = sum(
            1 for e in psap_ev if e["ev"] == "invite" and e["mode"] in fakepsap.FAULT_MODES and e["role"] != "gateway"
            and not is_test_call(e) and F + 5 <= e["t"] < end)
        res.invites_to_broken_after_5s = sum(1 for e in broken if e["t"] >= F + 5)
        res.dead_media_answers_after_10s = sum(1 for e in psap_ev if e["ev"] == "answer" and e["mode"] == "dead-media"
                                               and not is_test_call(e) and F + 10 <= e["t"] < end)
    if peer == "sosrouter":
        res.sse_events = len(sse)
        first = next((e["t"] for e in sse if e.get("systemic") and F is not None and e["t"] >= F - 1), None)
        if first is not None:
            res.systemic_event_s = first - F
    if R is not None:
        back = [c for c in calls if c["start"] >= R and c["status"] == "answered"
                and role_of(c["answered_by"], roles) == "primary"]
        if back:
            res.traffic_back_s = min(c["start"] for c in back) - R
            per_region = {}
            for c in back:
                per_region.setdefault(c["region"], c["start"])
            if len(per_region) == len(topo.regions):
                res.traffic_back_all_regions_s = max(per_region.values()) - R
        if peer == "sosrouter":
            res.primaries_ready_s = primaries_ready(sse, roles, R)
    return res


def health_event(e: dict):
    """(target, new state) of an SSE health event, else None."""
    try:
        d = json.loads(e.get("data") or "")
    except ValueError:
        return None
    if isinstance(d, dict) and d.get("kind") == "health" and d.get("target") and d.get("new"):
        return d["target"], d["new"]
    return None


def primaries_ready(sse: list, roles: dict, R: float):
    """Seconds from the restore to the moment every primary that was not ready (up or suspect) at
    the restore is ready again, from the proxy's health events; 0 when all were ready; None when
    one never came back. Unlike the first call answered by each region's primary, it does not
    wait for the region's next call."""
    ready = ("up", "suspect")
    state, back = {}, {}
    for e in sorted(sse, key=lambda e: e["t"]):
        h = health_event(e)
        if not h or roles.get(h[0]) != "primary":
            continue
        if e["t"] < R:
            state[h[0]] = h[1]
        elif h[0] not in back and h[1] in ready:
            back[h[0]] = e["t"]
    waited = [p for p, s in state.items() if s not in ready]
    if any(p not in back for p in waited):
        return None
    return max((back[p] - R for p in waited), default=0.0)


# ------------------------------------------------------------------ presentation
def fmt(v, spec="{:.0f}"):
    return "-" if v is None else spec.format(v)


def summary(r: DrillResult) -> str:
    rows = [
        ("fault", f"{r.description}: at +{fmt(r.fault_at_s, '{:.1f}')} s for {fmt(r.fault_s, '{:.1f}')} s"),
        ("topology", f"{r.regions} regions, {r.rate:g} calls/s, peer {r.peer}"),
        ("calls made / failed", f"{r.calls_made} / {r.calls_failed}"
                                + (f" {r.failure_reasons}" if r.failure_reasons else "")),
        ("calls started in the fault / failed", f"{r.calls_in_fault} / {r.failed_in_fault}"),
        (f"delayed > {DELAY_MS:.0f} ms in the fault", f"{r.delayed_in_fault} of {r.calls_in_fault}, last started "
                                                      f"{fmt(r.last_delayed_start_s, '{:.1f}')} s into the fault"),
        ("setup p50 / max ms", f"{fmt(r.setup_ms_p50)} / {fmt(r.setup_ms_max)}"),
        ("INVITEs at broken PSAPs after 5 s", f"{fmt(r.invites_to_broken_after_5s)} (whole fault {fmt(r.invites_to_broken_total)}; "
                                              f"with retransmissions {fmt(r.invite_packets_to_broken_after_5s)}; "
                                              f"test calls {fmt(r.test_calls_to_broken_after_5s)})"),
        ("dead-media answers after 10 s", f"{fmt(r.dead_media_answers_after_10s)} (calls with no echo, whole run: {r.calls_media_dead})"),
        ("systemic event", (f"{fmt(r.systemic_event_s, '{:.2f}')} s after the fault" if r.systemic_event_s is not None
                            else ("none" if r.peer == "sosrouter" else "n/a")) + (f" ({r.sse_events} SSE events)" if r.sse_events is not None else "")),
        ("traffic back to a primary", f"{fmt(r.traffic_back_s, '{:.2f}')} s after the restore "
                                      f"(every region's: {fmt(r.traffic_back_all_regions_s, '{:.2f}')} s; "
                                      f"every primary ready: {fmt(r.primaries_ready_s, '{:.2f}')} s)"),
        ("answered by (whole run)", ", ".join(f"{k} {v}" for k, v in sorted(r.answered_by_role.items()))),
        ("answered by (in the fault)", ", ".join(f"{k} {v}" for k, v in sorted(r.answered_by_role_in_fault.items()))),
    ]
    return f"drill {r.drill} ({r.peer})\n" + "\n".join(f"  {k:<38} {v}" for k, v in rows)


def is_test_call(e: dict) -> bool:
    """An INVITE of sosrouter's own test calls (RFC 6881 §15), not a caller's."""
    return "test.sos" in (e.get("uri") or "")


TABLE_HEAD = ["drill", "peer", "calls", "failed", "delayed>500", "last delayed s", "INVITEs broken >5s",
              "dead media >10s", "systemic s", "back s"]


def table_row(r: dict) -> list:
    return [r["drill"], r["peer"], r["calls_made"], r["calls_failed"],
            f"{r['delayed_in_fault']}/{r['calls_in_fault']}", fmt(r["last_delayed_start_s"], "{:.1f}"),
            fmt(r["invites_to_broken_after_5s"]), fmt(r["dead_media_answers_after_10s"]),
            fmt(r["systemic_event_s"], "{:.2f}") if r["peer"] == "sosrouter" else "n/a",
            fmt(r["traffic_back_s"], "{:.2f}")]


def table(headers, rows) -> str:
    w = [len(h) for h in headers]
    for row in rows:
        w = [max(a, len(str(b))) for a, b in zip(w, row)]
    lines = ["  ".join(h.rjust(n) for h, n in zip(headers, w)), "  ".join("-" * n for n in w)]
    lines += ["  ".join(str(c).rjust(n) for c, n in zip(row, w)) for row in rows]
    return "\n".join(lines)


def plot(out: str, r: DrillResult, topo: topology.Topology) -> str | None:
    """plot.png: every call's setup time over time, the fault shaded, coloured by who answered."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (apt-get install python3-matplotlib): no plot", file=sys.stderr)
        return None
    calls = load_jsonl(os.path.join(out, "calls.jsonl"))
    marks = load_jsonl(os.path.join(out, "drill.jsonl"))
    if not calls:
        return None
    roles = topo.roles()
    t0 = min(c["start"] for c in calls)
    for c in calls:  # sub-millisecond setups would fall off the log axis
        if c.get("setup_ms") is not None and c["setup_ms"] < 0.6:
            c["setup_ms"] = 0.6
    colours = {"primary": "tab:green", "backup": "tab:orange", "business line": "tab:blue", "other": "tab:gray"}
    fig, ax = plt.subplots(figsize=(11, 5))
    F = next((m["t"] for m in marks if m["ev"] == "fault"), None)
    R = next((m["t"] for m in marks if m["ev"] == "restore"), None)
    if F is not None:
        ax.axvspan(F - t0, (R if R is not None else max(c["start"] for c in calls)) - t0, color="red", alpha=0.12,
                   label=f"fault: {r.description}")
    for role, col in colours.items():
        pts = [(c["start"] - t0, c["setup_ms"]) for c in calls
               if c["status"] == "answered" and role_of(c["answered_by"], roles) == role]
        dead = [(x, y) for (x, y), c in zip(pts, [c for c in calls if c["status"] == "answered"
                                                   and role_of(c["answered_by"], roles) == role]) if c.get("media_ok") is False]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, color=col, label=f"answered by {role}")
        if dead:
            ax.scatter([p[0] for p in dead], [p[1] for p in dead], s=40, facecolors="none", edgecolors="black",
                       linewidths=0.8, label=f"{role}: no RTP echo" if role == "primary" or len(dead) else None)
    fails = [c["start"] - t0 for c in calls if c["status"] != "answered"]
    top = max([c["setup_ms"] for c in calls if c["setup_ms"]] + [DELAY_MS * 2])
    if fails:
        ax.scatter(fails, [top * 1.2] * len(fails), marker="x", color="red", label="failed (no answer)")
    ax.axhline(DELAY_MS, color="gray", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(0.5, top * 1.5)
    ax.set_xlabel("seconds since the first call")
    ax.set_ylabel("setup ms (INVITE -> 200)")
    ax.set_title(f"{r.drill} ({r.peer}, {r.regions} regions, {r.rate:g} calls/s)")
    ax.legend(loc="upper right", fontsize=8)
    path = os.path.join(out, "plot.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def emit(out: str, r: DrillResult, text: str):
    print(text)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(asdict(r), f, indent=2, sort_keys=True)
        f.write("\n")


# ------------------------------------------------------------------ running a drill
@dataclass
class Settings:
    regions: int = field(default_factory=lambda: int(os.environ.get("REGIONS", 9)))
    rate: float = field(default_factory=lambda: float(os.environ.get("RATE", 5) or 5))
    calling_s: float = field(default_factory=lambda: float(os.environ.get("CALLING_S", 55)))
    fault_at_s: float = field(default_factory=lambda: float(os.environ.get("FAULT_AT_S", 10)))
    fault_s: float = field(default_factory=lambda: float(os.environ.get("FAULT_S", 30)))
    hold_s: float = field(default_factory=lambda: float(os.environ.get("HOLD_S", 8)))
    proxy_port: int = field(default_factory=lambda: int(os.environ.get("STATEWIDE_PROXY_PORT", 5160)))
    psap_base: int = field(default_factory=lambda: int(os.environ.get("STATEWIDE_PSAP_BASE", 15000)))
    warmup_s: float = field(default_factory=lambda: float(os.environ.get("PROXY_WARMUP_S", 3)))
    peer: str = field(default_factory=lambda: os.environ.get("PEER", "sosrouter"))
    sosrouter: str = field(default_factory=lambda: os.environ.get("SOSROUTER", ""))
    sosrouter_args: str = field(default_factory=lambda: os.environ.get("SOSROUTER_ARGS", ""))
    kamailio_cfg: str = field(default_factory=lambda: os.environ.get("KAMAILIO_CFG", os.path.join(HERE, "kamailio", "kamailio.cfg")))
    kamailio_mem_mb: int = field(default_factory=lambda: int(os.environ.get("KAMAILIO_MEM_MB", 1024)))
    kamailio_defines: str = field(default_factory=lambda: os.environ.get("KAMAILIO_DEFINES", ""))

    @property
    def calls(self) -> int:
        n = int(os.environ.get("CALLS", 0) or 0)
        return min(n or int(self.rate * self.calling_s), 20000)


def say(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sosrouter_bin(st: Settings) -> str:
    if st.sosrouter:
        return st.sosrouter
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release", "sosrouter")


def mark(out: str, ev: str, **kw):
    with open(os.path.join(out, "drill.jsonl"), "a") as f:
        f.write(json.dumps({"t": time.time(), "ev": ev, **kw}) + "\n")
    say(f"event: {ev} {kw if kw else ''}")


def rereport(out: str) -> DrillResult:
    """Recompute the figures, summary and plot of a finished drill from its files (result.json gives the
    drill, peer and rate)."""
    with open(os.path.join(out, "result.json")) as f:
        old = json.load(f)
    topo = topology.load(os.path.join(out, "topology.json"))
    res = analyse(out, old["drill"], old["peer"], topo, old["rate"], old["calls_planned"])
    emit(out, res, summary(res))
    plot(out, res, topo)
    return res


def run_drill(name: str, st: Settings, out: str | None = None) -> DrillResult:
    if name not in DRILLS:
        raise SystemExit(f"unknown statewide drill {name!r} (one of {', '.join(DRILLS)})")
    setting, desc = DRILLS[name]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = out or os.path.join(HERE, "out", f"{stamp}-{name}" + ("" if st.peer == "sosrouter" else f"-{st.peer}"))
    os.makedirs(out, exist_ok=True)
    topo = topology.write(out, st.regions, st.proxy_port, st.psap_base)
    calls = st.calls
    budget = st.warmup_s + calls / st.rate + st.hold_s + 60
    env = dict(os.environ, PYTHONPATH=HERE)
    ports = [st.proxy_port, topo.control_port] + [p["port"] for p in topo.psaps] + [p["rtp_port"] for p in topo.psaps]
    if st.peer == "sosrouter":
        ports.append(topo.admin_port)
    for port in ports:
        users = procs.port_users(port)
        if users:
            raise SystemExit(f"port {port} is in use: {users.splitlines()[0]}")
    g = procs.Group()
    sse_stop = threading.Event()
    try:
        ctrl = ("127.0.0.1", topo.control_port)
        g.start("psaps", [sys.executable, "-m", "sostest.fakepsap", "--config", os.path.join(out, "topology.json"),
                          "--control", f"127.0.0.1:{topo.control_port}", "--log", os.path.join(out, "psaps.jsonl"),
                          "--seconds", str(int(budget))], os.path.join(out, "psaps.log"), budget + 10, env=env)

        def psaps_up():
            try:
                return fakepsap.control(ctrl, None, timeout=0.3).get("ok", False)
            except OSError:
                return False
        if not procs.wait_until(psaps_up, 10):
            raise SystemExit(f"the fake PSAPs did not come up; see {out}/psaps.log")
        say(f"{len(topo.psaps)} fake answering points up (ports {st.psap_base}..{topo.gateway_port})")
        if st.peer == "sosrouter":
            binary = sosrouter_bin(st)
            if not os.access(binary, os.X_OK):
                raise SystemExit(f"no sosrouter binary at {binary} (cargo build --release, or SOSROUTER=...)")
            argv = [binary, "run", "--rules", os.path.join(out, "statewide.toml"), "--no-watch",
                    "--undelivered", os.path.join(out, "undelivered.jsonl"),
                    "--admin", f"127.0.0.1:{topo.admin_port}"] + st.sosrouter_args.split()
            say("starting sosrouter: " + " ".join(argv))
            proxy = g.start("sosrouter", argv, os.path.join(out, "sosrouter.log"), budget + 20, cwd=out)
            threading.Thread(target=read_sse, args=(f"http://127.0.0.1:{topo.admin_port}/events",
                                                    os.path.join(out, "sse.jsonl"), sse_stop, budget + 20),
                             daemon=True).start()
        elif st.peer == "kamailio":
            run_dir = os.path.join(out, "kamailio-run")
            os.makedirs(run_dir, exist_ok=True)
            defs = ["-A", "SIP_ADDR=127.0.0.1", "-A", f"SIP_PORT={st.proxy_port}",
                    "-A", f'DS_LIST="{os.path.join(out, "dispatcher.list")}"', "-A", "REGION_SET_FROM_CALLER"]
            for d in st.kamailio_defines.split():
                defs += ["-A", d]
            argv = ["kamailio", "-f", st.kamailio_cfg, "-DD", "-E", "-m", str(st.kamailio_mem_mb), "-M", "16",
                    "-Y", run_dir, "-w", run_dir] + defs
            say("starting kamailio: " + " ".join(argv))
            proxy = g.start("kamailio", argv, os.path.join(out, "kamailio.log"), budget + 20, cwd=run_dir)
        else:
            raise SystemExit(f"unknown PEER {st.peer!r} (sosrouter or kamailio)")
        time.sleep(st.warmup_s)
        if not proxy.alive():
            raise SystemExit(f"{st.peer} exited during its warm-up; see {proxy.log}")
        say(f"drill {name}: {calls} calls at {st.rate:g}/s, {st.regions} regions; fault ({desc}) at "
            f"+{st.fault_at_s:g} s for {st.fault_s:g} s")
        start_file = os.path.join(out, "caller.start")
        caller = g.start("caller", [sys.executable, "-m", "sostest.caller", "--proxy", f"127.0.0.1:{st.proxy_port}",
                                    "--regions", os.path.join(out, "topology.json"),
                                    "--out", os.path.join(out, "calls.jsonl"), "--start-file", start_file,
                                    "--rate", str(st.rate), "--calls", str(calls), "--hold-s", str(st.hold_s)],
                         os.path.join(out, "caller.log"), calls / st.rate + st.hold_s + 45, env=env)
        procs.wait_until(lambda: os.path.exists(start_file), 10)
        with open(start_file) as f:
            t0 = float(f.read().strip() or time.time())
        time.sleep(max(0.0, t0 + st.fault_at_s - time.time()))
        reply = fakepsap.control(ctrl, setting)
        mark(out, "fault", setting=setting, modes=reply.get("modes"))
        time.sleep(max(0.0, t0 + st.fault_at_s + st.fault_s - time.time()))
        reply = fakepsap.control(ctrl, {k: "healthy" for k in setting})
        mark(out, "restore", modes=reply.get("modes"))
        caller.popen.wait(calls / st.rate + st.hold_s + 60)
        time.sleep(0.5)
    finally:
        sse_stop.set()
        g.stop_all()
    res = analyse(out, name, st.peer, topo, st.rate, calls)
    emit(out, res, summary(res))
    p = plot(out, res, topo)
    if p:
        say(f"plot: {p}")
    say(f"outputs in {out}")
    return res


def results_table(results: list) -> str:
    return table(TABLE_HEAD, [table_row(r if isinstance(r, dict) else asdict(r)) for r in results])


def side_by_side(results: list) -> str:
    """One row per drill, sosrouter and kamailio figures next to each other."""
    by = {}
    for r in results:
        by.setdefault(r["drill"], {})[r["peer"]] = r
    head = ["drill"]
    keys = [("failed", "calls_failed", "{:.0f}"), ("delayed>500", "delayed_in_fault", "{:.0f}"),
            ("last delayed s", "last_delayed_start_s", "{:.1f}"), ("INVITEs >5s", "invites_to_broken_after_5s", "{:.0f}"),
            ("dead media >10s", "dead_media_answers_after_10s", "{:.0f}"), ("back s", "traffic_back_s", "{:.2f}")]
    for label, _, _ in keys:
        head += [f"sr {label}", f"km {label}"]
    head.append("sr systemic s")
    rows = []
    for d in sorted(by):
        row = [d]
        for _, key, spec in keys:
            for p in ("sosrouter", "kamailio"):
                r = by[d].get(p)
                row.append(fmt(r.get(key), spec) if r else "")
        sr = by[d].get("sosrouter")
        row.append(fmt(sr.get("systemic_event_s"), "{:.2f}") if sr else "")
        rows.append(row)
    return table(head, rows) + "\n(sr = sosrouter, km = kamailio)"


def load_results(paths: list) -> list:
    res = []
    for p in paths:
        f = p if p.endswith(".json") else os.path.join(p, "result.json")
        if os.path.exists(f):
            with open(f) as fh:
                res.append(json.load(fh))
    return res
