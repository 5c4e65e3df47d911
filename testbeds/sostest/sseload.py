"""sse-load: what 100 clients of the admin event stream cost the call path (issue 14's load criterion:
at most 5% of the calls/s the proxy reaches without them, measured in one run).

One sosrouter, one set of answering points, two throughput stairs (lab.Stair, lab.throughput_step: the
`throughput` command's own step and knee) interleaved step by step, the order alternating each round
(A B, B A, A B, ...) so that whatever else loads the shared machine falls on both:

- arm A: no event-stream client;
- arm B: SSE_CLIENTS (100) clients connected to `GET /events` for the whole step (connected, counted, and
  only then the step starts; disconnected after it). They run in one asyncio process of their own
  (`python3 -m sostest.sseload clients ...`, its own process group, bounded by --seconds and timeout(1)),
  really read the stream (chunked HTTP, SSE fields) and count events, `lost` events and keep-alives.

Answered calls publish no event (only health changes, operator switches, reloads, undelivered calls and
systemic alarms do), so in both arms the driver flips the operator switch of SSE_TOGGLE_TARGET
(`business-line`, the chains' last resort, never reached while the primary answers) SSE_EVENTS_PER_S (10)
times a second through `POST /targets/ID/disable|enable`: real operator events, the same in both arms.

Before the stairs, SSE_IDLE_S (15) seconds of events without calls, without and with the clients (A B B A):
the proxy's CPU per event delivered to a client, a figure far less noisy than a knee. The clients' process
runs at nice SSE_CLIENTS_NICE (10): here it shares two cores with the proxy and SIPp, where the operators'
browsers would run elsewhere; its CPU is in the table.

The proxy runs with an admin token (a file in the run's directory) and reads need it
(`--admin-token-for-reads`, on by default), so the clients, the switch and the metrics scrapes send it.
Outputs in testbeds/out/<stamp>-sse-load/: steps/NN-A-rRATE and NN-B-rRATE (the throughput step files, plus
sse.json: per-client counts, and events.json: events published during the step), result.json, summary.txt.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
import urllib.request

from . import lab, report

GOAL_MAX_COST_PCT = 5.0
DRAIN_S = 1.0      # after a step, before the clients stop: events still on their way arrive
MAX_CLIENTS = 1000


# ---------------------------------------------------------------- the stream, parsed (pure)
class SseStream:
    """Bytes of one HTTP/1.1 response carrying an event stream in, counts out: the status, then the body
    de-chunked (or read to the end when not chunked) and split into SSE blocks. A block with `data` and no
    `event` is an event (`events`, its `id` kept in `last_id`); `event: lost` a loss notice (`lost`); a
    comment line (`:...`) a keep-alive or the greeting (`comments`). `lags_ms`: receive time minus the
    event's own `unix_ms`, for events whose data carries one (at most `keep_lags` kept)."""

    def __init__(self, keep_lags: int = 20000):
        self.status: int | None = None
        self.chunked = False
        self.events = self.lost = self.comments = self.body_bytes = 0
        self.last_id: str | None = None
        self.lags_ms: list = []
        self.keep_lags = keep_lags
        self.ended = False          # the final chunk came
        self._head = b""
        self._raw = b""             # body bytes not yet de-chunked
        self._text = ""             # de-chunked text not yet split into lines
        self._chunk_left = 0        # bytes of the current chunk still to come (+2 for its CRLF)
        self._block: dict = {}

    def feed(self, data: bytes, now_ms: float | None = None):
        if self.status is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end].decode("latin-1"), self._head[end + 4:]
            self._head = b""
            m = re.match(r"HTTP/1\.[01] (\d{3})", head)
            self.status = int(m.group(1)) if m else 0
            self.chunked = bool(re.search(r"(?im)^transfer-encoding:\s*chunked\s*$", head))
        self.body_bytes += len(data)
        self._text += self._dechunk(data) if self.chunked else data.decode("utf-8", "replace")
        self._lines(now_ms if now_ms is not None else time.time() * 1000.0)

    def _dechunk(self, data: bytes) -> str:
        self._raw += data
        out = []
        while self._raw and not self.ended:
            if self._chunk_left:
                take = self._raw[:self._chunk_left]
                self._raw = self._raw[len(take):]
                self._chunk_left -= len(take)
                # the chunk's data, without the CRLF that ends it (its last 2 bytes)
                keep = len(take) - max(0, 2 - self._chunk_left)
                out.append(take[:max(0, keep)])
                continue
            eol = self._raw.find(b"\r\n")
            if eol < 0:
                break
            size = int(self._raw[:eol].split(b";")[0].strip() or b"0", 16)
            self._raw = self._raw[eol + 2:]
            if size == 0:
                self.ended = True
                break
            self._chunk_left = size + 2
        return b"".join(out).decode("utf-8", "replace")

    def _lines(self, now_ms: float):
        *lines, self._text = self._text.split("\n")
        for line in lines:
            line = line.rstrip("\r")
            if not line:
                self._dispatch(now_ms)
            elif line.startswith(":"):
                self.comments += 1
            else:
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                if k == "data":
                    self._block["data"] = self._block.get("data", "") + v
                elif k in ("id", "event"):
                    self._block[k] = v

    def _dispatch(self, now_ms: float):
        b, self._block = self._block, {}
        if "data" not in b:
            return
        if b.get("event", "message") == "lost":
            self.lost += 1
            return
        if b.get("event", "message") != "message":
            return
        self.events += 1
        self.last_id = b.get("id", self.last_id)
        m = re.search(r'"unix_ms":(\d+)', b["data"])
        if m and len(self.lags_ms) < self.keep_lags:
            self.lags_ms.append(now_ms - int(m.group(1)))

    def summary(self) -> dict:
        return {"status": self.status, "events": self.events, "lost": self.lost, "comments": self.comments,
                "body_bytes": self.body_bytes, "last_id": self.last_id, "ended": self.ended}


# ---------------------------------------------------------------- figures (pure)
def cost_pct(knee_without, knee_with):
    """How much lower the knee is with the clients, in % of the knee without (negative: higher)."""
    if not knee_without or knee_with is None:
        return None
    return 100.0 * (knee_without - knee_with) / knee_without


def verdict(knee_without, knee_with, max_cost_pct: float = GOAL_MAX_COST_PCT) -> str:
    c = cost_pct(knee_without, knee_with)
    if c is None:
        return "no figure (an arm has no good step)"
    return f"{'met' if c <= max_cost_pct else 'NOT met'}: cost {c:.1f}% (goal <= {max_cost_pct:g}%)"


def percentile(values, p):
    return report.percentile(sorted(values), p) if values else None


def client_figures(per_step: list) -> dict:
    """The clients over every arm-B step: per-step dicts {"clients": [summary...], "published": N,
    "lags_ms": [...]} in, per-client events (min, mean, max over the clients, summed over the steps),
    connection failures, losses and delivery lag out."""
    totals: dict = {}
    refused = lost = 0
    lags: list = []
    published = 0
    for st in per_step:
        published += st.get("published") or 0
        lags += st.get("lags_ms") or []
        for i, c in enumerate(st.get("clients") or []):
            totals[i] = totals.get(i, 0) + (c.get("events") or 0)
            refused += c.get("status") != 200
            lost += c.get("lost") or 0
    ev = list(totals.values())
    return {"steps": len(per_step), "clients": len(ev), "events_published": published,
            "events_per_client_min": min(ev) if ev else None,
            "events_per_client_mean": sum(ev) / len(ev) if ev else None,
            "events_per_client_max": max(ev) if ev else None,
            "connections_not_200": refused, "lost_notices": lost,
            "lag_ms_p50": percentile(lags, 50), "lag_ms_p99": percentile(lags, 99),
            "lag_ms_max": max(lags) if lags else None}


def cpu_per_1000(step):
    return report.cpu_per_1000(step)


def summarise(steps_a: list, steps_b: list, clients: dict, meta: dict) -> tuple:
    """(summary text, result dict) from the two arms' step.json dicts (each with "arm" and "n")."""
    def knee(steps):
        good = [s["rate_offered"] for s in steps if s.get("ok")]
        return max(good) if good else None

    ka, kb = knee(steps_a), knee(steps_b)
    by_a = {s["rate_offered"]: s for s in steps_a}
    by_b = {s["rate_offered"]: s for s in steps_b}
    common = sorted(r for r in set(by_a) & set(by_b) if by_a[r].get("ok") and by_b[r].get("ok"))
    cpu_rate = common[-1] if common else None
    at = {arm: (by.get(cpu_rate) if cpu_rate else None) for arm, by in (("without", by_a), ("with", by_b))}
    res = {
        "knee_calls_s_without_clients": ka, "knee_calls_s_with_clients": kb,
        "ratio_with_over_without": (kb / ka) if ka and kb is not None else None,
        "cost_pct": cost_pct(ka, kb), "goal_max_cost_pct": GOAL_MAX_COST_PCT, "verdict": verdict(ka, kb),
        "cpu_rate": cpu_rate,
        "proxy_cpu_pct_at_cpu_rate": {k: (s or {}).get("cpu_proxy_pct") for k, s in at.items()},
        "proxy_cpu_pct_per_1000_calls_s_at_cpu_rate": {k: cpu_per_1000(s) for k, s in at.items()},
        "proxy_cpu_pct_at_knee": {"without": (by_a.get(ka) or {}).get("cpu_proxy_pct"),
                                  "with": (by_b.get(kb) or {}).get("cpu_proxy_pct")},
        "clients": clients, **meta,
        "steps": sorted(steps_a + steps_b, key=lambda s: s.get("n", 0)),
    }
    rows = []
    for s in res["steps"]:
        rows.append((s.get("n"), s.get("arm"), s["rate_offered"], report.fmt(s.get("rate_achieved")),
                     f"{s.get('fail_pct', 0):.2f}", report.fmt(s.get("setup_ms_p99")),
                     report.fmt(s.get("cpu_proxy_pct")), report.fmt(s.get("cpu_sse_clients_pct")),
                     report.fmt(s.get("sse_events_per_client_mean"), "{:.0f}"),
                     report.fmt(s.get("events_published")), "ok" if s.get("ok") else s.get("verdict", "bad")))
    f = report.fmt
    cpu = res["proxy_cpu_pct_per_1000_calls_s_at_cpu_rate"]
    lines = [
        f"sse-load: {meta.get('sse_clients')} event-stream clients vs none, interleaved stairs, one sosrouter "
        f"({meta.get('host_cpus')} CPUs shared; load {meta.get('loadavg_before')} before, {meta.get('loadavg_after')} after)",
        report.table(["#", "arm", "offered/s", "achieved/s", "fail%", "p99 ms", "proxy%", "clients%",
                      "events/client", "published", "verdict"], rows),
        "",
        report.table(["figure", "without clients", f"with {meta.get('sse_clients')} clients", "ratio"], [
            ("knee calls/s", f(ka), f(kb), f(res["ratio_with_over_without"], "{:.3f}")),
            (f"proxy CPU % at {f(cpu_rate)} calls/s", f(res["proxy_cpu_pct_at_cpu_rate"]["without"]),
             f(res["proxy_cpu_pct_at_cpu_rate"]["with"]), ""),
            (f"proxy CPU %/1000 calls/s at {f(cpu_rate)}/s", f(cpu["without"], "{:.1f}"), f(cpu["with"], "{:.1f}"),
             f(cpu["with"] / cpu["without"], "{:.2f}") if cpu["with"] and cpu["without"] else ""),
            ("proxy CPU % at the knee", f(res["proxy_cpu_pct_at_knee"]["without"]),
             f(res["proxy_cpu_pct_at_knee"]["with"]), ""),
        ]),
        "",
        f"clients: {clients.get('clients')} per B step over {clients.get('steps')} steps; events per client "
        f"min/mean/max {f(clients.get('events_per_client_min'))}/{f(clients.get('events_per_client_mean'))}/"
        f"{f(clients.get('events_per_client_max'))} (published in those steps: {f(clients.get('events_published'))}); "
        f"connections not 200: {clients.get('connections_not_200')}; lost notices: {clients.get('lost_notices')}; "
        f"delivery lag p50/p99/max {f(clients.get('lag_ms_p50'))}/{f(clients.get('lag_ms_p99'))}/"
        f"{f(clients.get('lag_ms_max'))} ms",
        f"events: operator switch of {meta.get('toggle_target')} at {meta.get('events_per_s')}/s in both arms "
        "(answered calls publish none; calls failing past the knee publish undelivered and health events)",
        f"idle (no calls, events only): proxy CPU {f(meta.get('idle_cpu_pct_without'), '{:.1f}')}% without, "
        f"{f(meta.get('idle_cpu_pct_with'), '{:.1f}')}% with the clients ({f(meta.get('idle_deliveries_per_s'))} "
        f"deliveries/s): {f(meta.get('idle_cpu_us_per_delivery'), '{:.1f}')} us of proxy CPU per event delivered",
        f"goal (issue 14): the knee with clients at least {100 - GOAL_MAX_COST_PCT:g}% of the knee without: {res['verdict']}",
        f"(proxy% = sosrouter's CPU in % of one core over the call-creation phase; clients% = the client process,"
        f" run at nice {meta.get('clients_nice')};"
        "\n one run on a shared machine: compare the two arms of this run, not figures across runs)",
    ]
    return "\n".join(lines), res


# ---------------------------------------------------------------- the clients' process
async def _client(i: int, host: str, port: int, token: str, out: list, connected: list, stop: asyncio.Event):
    s = SseStream()
    out[i] = s
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n{auth}\r\n".encode())
        await writer.drain()
        while not stop.is_set():
            data = await reader.read(65536)
            if not data:
                break
            had = s.status
            s.feed(data)
            if had is None and s.status is not None:
                connected[0] += 1
    except (OSError, asyncio.TimeoutError) as e:
        s.error = str(e) or type(e).__name__
        if s.status is None:
            connected[0] += 1     # settled, though not connected
    finally:
        if writer is not None:
            writer.close()


async def _clients(host: str, port: int, n: int, token: str, seconds: float, ready: str, result: str):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    out: list = [None] * n
    connected = [0]
    tasks = [asyncio.create_task(_client(i, host, port, token, out, connected, stop)) for i in range(n)]
    t_end = time.monotonic() + seconds
    settle = min(t_end, time.monotonic() + 15)
    while connected[0] < n and time.monotonic() < settle and not stop.is_set():
        await asyncio.sleep(0.02)
    with open(ready + ".tmp", "w") as f:
        f.write(f"{sum(1 for s in out if s is not None and s.status == 200)}\n")
    os.replace(ready + ".tmp", ready)
    # Until SIGTERM, the time bound, or every stream has ended (the server went away).
    while not stop.is_set() and time.monotonic() < t_end and not all(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    clients = [dict(s.summary(), error=getattr(s, "error", None)) if s else {"status": None} for s in out]
    lags = [x for s in out if s for x in s.lags_ms]
    with open(result + ".tmp", "w") as f:
        json.dump({"clients": clients, "lags_ms": lags}, f)
    os.replace(result + ".tmp", result)


def clients_main(argv: list):
    """clients HOST:PORT N SECONDS READY_FILE RESULT_FILE (token from SSE_TOKEN): N streams until SIGTERM,
    SECONDS, or every stream ended; READY_FILE gets the number connected once all have an answer (or 15 s
    passed); RESULT_FILE each client's counts and the delivery lags."""
    addr, n, seconds, ready, result = argv
    host, _, port = addr.rpartition(":")
    n = max(1, min(int(n), MAX_CLIENTS))
    asyncio.run(_clients(host, int(port), n, os.environ.get("SSE_TOKEN", ""), float(seconds), ready, result))


# ---------------------------------------------------------------- the driver
class Switcher:
    """Flips the operator switch of one target `per_s` times a second (disable, enable, ...) from a thread,
    while started; counts the answers."""

    def __init__(self, admin: str, token: str, target: str, per_s: float):
        self.admin, self.token, self.target, self.per_s = admin, token, target, per_s
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._enabled = True

    def _post(self, enable: bool) -> bool:
        req = urllib.request.Request(f"http://{self.admin}/targets/{self.target}/{'enable' if enable else 'disable'}",
                                     method="POST", data=b"")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _run(self, seconds: float):
        period, end = 1.0 / self.per_s, time.monotonic() + seconds
        nxt = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            self._enabled = not self._enabled
            if self._post(self._enabled):
                self.ok += 1
            else:
                self.failed += 1
            nxt += period
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def start(self, seconds: float):
        if self.per_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if not self._enabled:      # leave the target enabled
            self._enabled = self._post(True)


def published(cfg: lab.Config) -> int | None:
    m = re.search(r"^sosrouter_events_published_total (\d+)", lab.scrape_metrics(cfg.admin_addr, cfg.admin_token), re.M)
    return int(m.group(1)) if m else None


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def cmd_sse_load(cfg: lab.Config) -> int:
    if cfg.peer != "sosrouter" or cfg.direct or not cfg.start_proxy:
        raise lab.Fail("sse-load starts sosrouter itself (no --peer kamailio, --direct or --no-start-proxy)")
    e = os.environ
    n_clients = max(1, min(int(e.get("SSE_CLIENTS", "100")), MAX_CLIENTS))
    per_s = float(e.get("SSE_EVENTS_PER_S", "10"))
    toggle = e.get("SSE_TOGGLE_TARGET", "business-line")
    if not cfg.rates_given:
        cfg.rates = "500 1000 1500 2000 2500 3000 3500 4000 5000 6000"
    rates = [int(x) for x in cfg.rates.split()]
    r = lab.Run(cfg, "sse-load")
    meta = {"sse_clients": n_clients, "clients_nice": e.get("SSE_CLIENTS_NICE", "10"), "events_per_s": per_s, "toggle_target": toggle, "rates": rates,
            "step_s": cfg.step_s, "bisect_steps": cfg.bisect_steps, "host_cpus": os.cpu_count(),
            "loadavg_before": loadavg(), "uptime_before": _uptime()}
    try:
        r.build_proxy()
        # A copy of the binary: the shared target directory may be rebuilt by someone else during the run.
        binary = os.path.join(r.out, "sosrouter")
        shutil.copy2(cfg.sosrouter, binary)
        cfg.sosrouter = binary
        token = secrets.token_hex(16)
        token_file = os.path.join(r.out, "admin.token")
        with open(token_file, "w") as f:
            f.write(token + "\n")
        cfg.admin_token = token
        cfg.sosrouter_args = f"{cfg.sosrouter_args} --admin {cfg.admin_addr} --admin-token-file {token_file} --no-watch"
        steps_max = 2 * (len(rates) + cfg.bisect_steps)
        budget = steps_max * (cfg.step_s + 45) + 4 * (float(e.get("SSE_IDLE_S", "15")) + 40) + 120
        r.start_all_aps(budget)
        r.start_proxy(budget)
        if published(cfg) is None:
            raise lab.Fail(f"no /metrics at {cfg.admin_addr} with the token; see {r.rel(r.out)}/sosrouter.log")
        switch = Switcher(cfg.admin_addr, token, toggle, per_s)
        idle_s = float(e.get("SSE_IDLE_S", "15"))
        if idle_s > 0:
            meta.update(idle_cost(r, n_clients, switch, idle_s))
        arms = {a: lab.Stair(rates, cfg.bisect_steps, cfg.step_retries, cfg.steal_retries, cfg.steal_retry_pct)
                for a in ("A", "B")}
        steps = {"A": [], "B": []}
        b_clients: list = []
        n, rnd = 0, 0
        while n < steps_max and any(s.next_rate() is not None for s in arms.values()):
            order = "AB" if rnd % 2 == 0 else "BA"
            rnd += 1
            for arm in order:
                rate = arms[arm].next_rate()
                if rate is None:
                    continue
                n += 1
                d = os.path.join(r.out, "steps", f"{n:02d}-{arm}-r{rate}")
                os.makedirs(d, exist_ok=True)
                lab.say(f"sse-load {arm} ({'with' if arm == 'B' else 'without'} clients) {arms[arm].label()}: "
                        f"{rate} calls/s for {cfg.step_s:g} s (load {loadavg()})")
                s = one_step(r, d, arm, rate, n, n_clients, switch, b_clients)
                steps[arm].append(s)
                arms[arm].record(rate, bool(s.get("ok")), lab.step_steal(d))
        meta.update(loadavg_after=loadavg(), uptime_after=_uptime(), switch_ok=switch.ok, switch_failed=switch.failed,
                    admin=cfg.admin_addr)
        text, res = summarise(steps["A"], steps["B"], client_figures(b_clients), meta)
        report.emit(r.out, text, res)
        return 0
    finally:
        r.close()


def _uptime() -> str:
    try:
        import subprocess
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return "?"


def start_clients(r: lab.Run, d: str, n_clients: int, secs: float):
    """The clients' process (niced by SSE_CLIENTS_NICE, default 10: on this machine they share the cores with
    the proxy and SIPp, where an operator's browsers would not), once every client has its answer."""
    cfg = r.cfg
    ready, result = os.path.join(d, "sse.ready"), os.path.join(d, "sse.json")
    nice = ["nice", "-n", os.environ.get("SSE_CLIENTS_NICE", "10")]
    clients = r.g.start("sse-clients", [*nice, sys.executable, "-m", "sostest.sseload", "clients", cfg.admin_addr,
                                        str(n_clients), str(int(secs)), ready, result],
                        os.path.join(d, "sse-clients.log"), secs + 10,
                        env=dict(os.environ, PYTHONPATH=lab.HERE, SSE_TOKEN=cfg.admin_token))
    lab.procs.wait_until(lambda: os.path.exists(ready) or not clients.alive(), 20)
    try:
        up = int(open(ready).read())
    except (OSError, ValueError):
        up = 0
    lab.say(f"  {up} of {n_clients} event-stream clients connected")
    return clients


def stop_clients(r: lab.Run, clients, d: str) -> dict:
    """Stops the clients' process (after DRAIN_S: the proxy sends events up to 250 ms late, batched) and
    reads what it counted."""
    time.sleep(DRAIN_S)
    r.g.stop(clients, grace=5)
    r.g.procs = [x for x in r.g.procs if x is not clients]
    return report.load_result(os.path.join(d, "sse.json")) or {}


def idle_cost(r: lab.Run, n_clients: int, switch: Switcher, seconds: float) -> dict:
    """No calls, only the operator events: the proxy's CPU over `seconds` without clients (A) and with them
    (B), twice each (A B B A); the difference per event delivered to a client, in microseconds of CPU."""
    cfg, tck = r.cfg, os.sysconf("SC_CLK_TCK")
    cpu: dict = {"A": [], "B": []}
    delivered = 0
    for i, arm in enumerate("ABBA"):
        d = os.path.join(r.out, "idle", f"{i + 1}-{arm}")
        os.makedirs(d, exist_ok=True)
        lab.say(f"sse-load idle {arm} ({'with' if arm == 'B' else 'without'} clients): {seconds:g} s of events only")
        clients = start_clients(r, d, n_clients, seconds + 60) if arm == "B" else None
        pids = r.proxy_pids()
        switch.start(seconds + 30)
        c0, t0 = lab.ticks(pids), time.time()
        time.sleep(seconds)
        c1, t1 = lab.ticks(pids), time.time()
        switch.stop()
        cpu[arm].append(100.0 * (c1 - c0) / tck / (t1 - t0))
        if clients:
            got = client_figures([stop_clients(r, clients, d)])
            delivered += (got["events_per_client_mean"] or 0) * got["clients"]
    return idle_figures(cpu, delivered, 2 * seconds)


def idle_figures(cpu: dict, delivered: float, b_seconds: float) -> dict:
    """Mean proxy CPU (% of a core) of each arm; the extra CPU of B per delivered event (us)."""
    a = sum(cpu["A"]) / len(cpu["A"]) if cpu["A"] else None
    b = sum(cpu["B"]) / len(cpu["B"]) if cpu["B"] else None
    per_s = delivered / b_seconds if b_seconds else 0
    us = (b - a) / 100.0 * 1e6 / per_s if a is not None and b is not None and per_s else None
    return {"idle_cpu_pct_without": a, "idle_cpu_pct_with": b, "idle_samples": cpu,
            "idle_deliveries_per_s": per_s, "idle_cpu_us_per_delivery": us}


def one_step(r: lab.Run, d: str, arm: str, rate: int, n: int, n_clients: int, switch: Switcher, b_clients: list) -> dict:
    """One throughput step of arm A (no client) or B (n_clients streams for the whole step); step.json's
    figures plus the arm, the events published and, for B, the clients' counts (sse.json)."""
    cfg = r.cfg
    clients = start_clients(r, d, n_clients, cfg.step_s + cfg.call_timeout_ms / 1000 + 60) if arm == "B" else None
    p0 = published(cfg)
    cpids = [clients.pid] + lab.descendants(clients.pid) if clients else []
    c0, t0 = lab.ticks(cpids), time.time()
    switch.start(cfg.step_s + 60)
    try:
        lab.throughput_step(r, d, rate)
    finally:
        switch.stop()
    c1, t1 = lab.ticks(cpids), time.time()
    p1 = published(cfg)
    figures = {}
    if clients:
        sse = stop_clients(r, clients, d)
        sse["published"] = (p1 - p0) if p0 is not None and p1 is not None else None
        b_clients.append(sse)
        cf = client_figures([sse])
        figures = {"cpu_sse_clients_pct": 100.0 * (c1 - c0) / os.sysconf("SC_CLK_TCK") / max(0.1, t1 - t0),
                   "sse_events_per_client_mean": cf["events_per_client_mean"],
                   "sse_clients_connected": cf["clients"] - cf["connections_not_200"]}
    s = report.load_result(os.path.join(d, "step.json")) or {"ok": False, "rate_offered": rate, "verdict": "no step.json"}
    s.update(arm=arm, n=n, events_published=(p1 - p0) if p0 is not None and p1 is not None else None, **figures)
    with open(os.path.join(d, "step.json"), "w") as f:
        json.dump(s, f, indent=2, sort_keys=True)
    return s


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        clients_main(sys.argv[2:])
    else:
        print(__doc__)
