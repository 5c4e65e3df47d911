"""`testbeds/run cluster`: two sosrouter nodes sharing rules and health hints through a 3-member etcd
cluster (Debian's etcd) on loopback. Everything it starts it stops by process group id.

Ports (the cluster drill's range, 18000-18999): etcd clients 18101-18103, peers 18201-18203; node a
udp 18301 admin 18311, node b udp 18302 admin 18312 (node c for the cache check: 18303/18313); fake
answering points primary 18401, backup 18402 (RTP 18451/18452, control 18499).

Phases, each a block of result.json:
  push        a push -> both nodes run it (time from the push's start to the last node, N pushes)
  concurrent  two pushes started together, R rounds: each round exactly one wins or both land one
              after the other; a loser exits 3 and is told; every successful push is in history
  etcd_stop   calls to both nodes while all etcd members are SIGSTOPped, then SIGKILLed and restarted:
              failed calls (goal 0); one unreachable/reachable event pair per outage; a push after
              the outage still reaches both nodes (watch resumed)
  node_kill   calls to both nodes, node a killed (SIGKILL) mid-run: failed calls that node b received
              (goal 0); calls a had answered whose BYE went unanswered (Record-Route: the node's own
              address); time until b sees a's status and hints expire with its lease
  evidence    the primary swallows INVITEs; calls go to node a only: time from a's suspect to b's
              suspect (goal < 1 s) and b's own test call of the primary
  cache       all etcd members down: a node with a rules cache starts on it; one without refuses
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

from . import procs

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(HERE)
ETCD_CLIENT = [18101, 18102, 18103]
ETCD_PEER = [18201, 18202, 18203]
NODES = {"a": (18301, 18311), "b": (18302, 18312), "c": (18303, 18313)}
PRIMARY, BACKUP = (18401, 18451), (18402, 18452)
CONTROL = 18499
ENDPOINTS = ",".join(f"http://127.0.0.1:{p}" for p in ETCD_CLIENT)

RULES = """listen = ["udp:127.0.0.1:18300"]

[defaults]
attempt_timeout_ms = 1000
ring_timeout_ms = 10000
call_deadline_ms = 30000

[health]
probe_interval_ms = 1000

[[targets]]
id = "primary"
uri = "sip:127.0.0.1:{primary}"
failure_domain = "site-1"

[[targets]]
id = "backup"
uri = "sip:127.0.0.1:{backup}"
failure_domain = "site-2"

[default_route]
chain = ["primary", "backup"]
"""


def say(msg: str):
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http_json(url: str, timeout: float = 1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except Exception:  # noqa: BLE001 - a node not (yet) answering is None
        return None


class Drill:
    def __init__(self, out: str, binary: str):
        self.out, self.bin = out, binary
        self.g = procs.Group()
        self.etcd: dict = {}
        self.nodes: dict = {}
        self.result: dict = {}
        self.push_n = 0

    # --- processes --------------------------------------------------------------------------
    def start_etcd(self, i: int, new: bool):
        name = f"e{i}"
        cluster = ",".join(f"e{j}=http://127.0.0.1:{ETCD_PEER[j]}" for j in range(3))
        argv = ["etcd", "--name", name, "--data-dir", os.path.join(self.out, f"{name}.data"),
                "--listen-client-urls", f"http://127.0.0.1:{ETCD_CLIENT[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{ETCD_CLIENT[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER[i]}",
                "--initial-cluster", cluster, "--initial-cluster-token", "sostest-cluster",
                "--initial-cluster-state", "new" if new else "existing",
                "--heartbeat-interval", "100", "--election-timeout", "1000"]
        self.etcd[i] = self.g.start(name, argv, os.path.join(self.out, f"{name}.log"), 900)

    def etcd_healthy(self) -> bool:
        return all((http_json(f"http://127.0.0.1:{p}/health") or {}).get("health") == "true" for p in ETCD_CLIENT)

    def etcd_signal(self, sig):
        for p in self.etcd.values():
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass

    def etcd_kill_all(self):
        self.etcd_signal(signal.SIGKILL)
        for p in self.etcd.values():
            try:
                p.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def start_node(self, nid: str, cache: str | None = None, wait: bool = True):
        udp, admin = NODES[nid]
        argv = [self.bin, "run", "--etcd", ENDPOINTS, "--node-id", nid, "--listen", f"udp:127.0.0.1:{udp}",
                "--admin", f"127.0.0.1:{admin}", "--undelivered", os.path.join(self.out, f"{nid}.undelivered.jsonl"),
                "--rules-cache", cache or os.path.join(self.out, f"{nid}.cache.json")]
        p = self.g.start(f"node-{nid}", argv, os.path.join(self.out, f"node-{nid}.log"), 900,
                         env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"))
        self.nodes[nid] = p
        if wait and not procs.wait_until(lambda: self.status(nid) is not None, 15):
            raise RuntimeError(f"node {nid} did not start (see node-{nid}.log)")
        return p

    def status(self, nid: str):
        return http_json(f"http://127.0.0.1:{NODES[nid][1]}/status", 0.5)

    def running_version(self, nid: str):
        s = self.status(nid)
        return (((s or {}).get("rules") or {}).get("cluster") or {}).get("running", {}).get("version")

    def target_state(self, nid: str, target: str):
        s = self.status(nid) or {}
        for t in s.get("targets", []):
            if t.get("id") == target:
                return t
        return None

    def events(self, nid: str) -> list:
        """Cluster events a node logged (from its log: the tracing line `cluster` with event=...)."""
        evs = []
        try:
            with open(os.path.join(self.out, f"node-{nid}.log"), errors="replace") as f:
                for line in f:
                    if "sosrouter::cluster: cluster" in line and "event=" in line:
                        evs.append(line.split("event=")[1].split()[0].strip('"'))
        except OSError:
            pass
        return evs

    # --- tools ------------------------------------------------------------------------------
    def rules_file(self, note: str) -> str:
        self.push_n += 1
        path = os.path.join(self.out, f"rules-{self.push_n}.toml")
        with open(path, "w") as f:
            f.write(RULES.format(primary=PRIMARY[0], backup=BACKUP[0]) + f"\n# {note}\n")
        return path

    def push(self, path: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.bin, "rules", "push", path, "--etcd", ENDPOINTS],
                              capture_output=True, text=True, timeout=30)

    def current(self) -> int | None:
        r = subprocess.run([self.bin, "rules", "history", "--etcd", ENDPOINTS], capture_output=True,
                           text=True, timeout=30)
        for line in r.stdout.splitlines():
            if line.startswith("*"):
                return int(line.split()[1])
        return None

    def callers(self, tag: str, per_node: dict, rate: float, calls: int, hold_s: float = 6.0) -> dict:
        # hold 6 s: over the rules' short_call_ms (5 s), so the short-call signal stays quiet
        """One caller process per node (UDP to that node); returns {node: Popen, ...} and out paths."""
        topo = os.path.join(self.out, "regions.json")
        with open(topo, "w") as f:
            json.dump({"regions": [{"region": "r1", "prefix": "617555"}]}, f)
        started = {}
        for nid in per_node:
            out = os.path.join(self.out, f"{tag}-calls-{nid}.jsonl")
            argv = [sys.executable, "-m", "sostest.caller", "--proxy", f"127.0.0.1:{NODES[nid][0]}",
                    "--regions", topo, "--out", out, "--rate", str(rate), "--calls", str(calls),
                    "--hold-s", str(hold_s), "--no-echo-s", "2", "--call-timeout-s", "8"]
            p = self.g.start(f"caller-{tag}-{nid}", argv, os.path.join(self.out, f"{tag}-caller-{nid}.log"),
                             calls / rate + 40, env=dict(os.environ, PYTHONPATH=HERE))
            started[nid] = (p, out)
        return started

    @staticmethod
    def wait_callers(started: dict) -> dict:
        res = {}
        for nid, (p, out) in started.items():
            try:
                p.popen.wait(300)
            except subprocess.TimeoutExpired:
                pass
            recs = []
            try:
                with open(out) as f:
                    recs = [json.loads(line) for line in f if line.strip()]
            except OSError:
                pass
            res[nid] = recs
        return res

    def psap_mode(self, setting: dict):
        from . import fakepsap
        return fakepsap.control(("127.0.0.1", CONTROL), setting)

    # --- phases -----------------------------------------------------------------------------
    def phase_push(self, n: int = 5) -> dict:
        times = []
        for i in range(n):
            path = self.rules_file(f"push timing {i}")
            t0 = time.monotonic()
            r = self.push(path)
            if r.returncode != 0:
                raise RuntimeError(f"push failed: {r.stderr}")
            target = self.current()
            ok = procs.wait_until(lambda: all(self.running_version(x) == target for x in ("a", "b")), 10, 0.005)
            times.append(round((time.monotonic() - t0) * 1000, 1))
            if not ok:
                raise RuntimeError(f"version {target} did not reach both nodes")
        return {"pushes": n, "push_to_all_nodes_ms": times, "median_ms": statistics.median(times), "max_ms": max(times),
                "note": "from the start of `rules push` (a process: check, read, CAS) to the last node's /status "
                        "running that version, polled every 5 ms"}

    def phase_concurrent(self, rounds: int = 8) -> dict:
        per_round = []
        wins = []
        for i in range(rounds):
            paths = [self.rules_file(f"race {i} x"), self.rules_file(f"race {i} y")]
            ps = [subprocess.Popen([self.bin, "rules", "push", p, "--etcd", ENDPOINTS], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for p in paths]
            outs = [p.communicate(timeout=30) for p in ps]
            codes = [p.returncode for p in ps]
            told = [("NOT applied" in o[1]) for o in outs]
            per_round.append({"codes": codes, "loser_told": told})
            for o, c in zip(outs, codes):
                if c == 0:
                    wins.append(int(o[0].strip().split("-> ")[-1]))
        hist = subprocess.run([self.bin, "rules", "history", "--etcd", ENDPOINTS], capture_output=True, text=True,
                              timeout=30).stdout
        stored = {int(line.split()[1]) if line.startswith("*") else int(line.split()[0])
                  for line in hist.splitlines() if line.strip()}
        races = sum(1 for r in per_round if sorted(r["codes"]) == [0, 3])
        both = sum(1 for r in per_round if r["codes"] == [0, 0])
        bad = [r for r in per_round if sorted(r["codes"]) not in ([0, 3], [0, 0])
               or any(c == 3 and not t for c, t in zip(r["codes"], r["loser_told"]))]
        return {"rounds": rounds, "one_won_other_told": races, "both_landed_in_turn": both, "bad_rounds": bad,
                "every_win_in_history": all(w in stored for w in wins), "wins": wins,
                "ok": not bad and all(w in stored for w in wins)}

    def phase_etcd_stop(self) -> dict:
        ev_before = {n: len(self.events(n)) for n in ("a", "b")}
        started = self.callers("etcdstop", {"a": 1, "b": 1}, rate=20, calls=500)
        time.sleep(4)
        say("SIGSTOP every etcd member")
        self.etcd_signal(signal.SIGSTOP)
        time.sleep(7)
        say("SIGCONT")
        self.etcd_signal(signal.SIGCONT)
        procs.wait_until(self.etcd_healthy, 15)
        time.sleep(2)
        say("SIGKILL every etcd member")
        self.etcd_kill_all()
        time.sleep(6)
        say("restart etcd")
        for i in range(3):
            self.start_etcd(i, new=False)
        procs.wait_until(self.etcd_healthy, 20)
        res = self.wait_callers(started)
        failed = {n: [r for r in recs if r["status"] != "answered"] for n, recs in res.items()}
        # the watch resumed: a push after the outage reaches both nodes
        procs.wait_until(lambda: all(((self.status(x) or {}).get("rules", {}).get("cluster") or {}).get("etcd", {}).get("connected") for x in ("a", "b")), 20)
        path = self.rules_file("after the outage")
        t0 = time.monotonic()
        r = self.push(path)
        target = self.current()
        reached = procs.wait_until(lambda: all(self.running_version(x) == target for x in ("a", "b")), 15, 0.01)
        evs = {n: self.events(n)[ev_before[n]:] for n in ("a", "b")}
        return {"calls": {n: len(v) for n, v in res.items()}, "failed": {n: len(v) for n, v in failed.items()},
                "failed_detail": {n: [f["status"] for f in v][:10] for n, v in failed.items()},
                "events": evs, "push_after_outage_rc": r.returncode, "push_after_outage_reached_both": reached,
                "push_after_outage_ms": round((time.monotonic() - t0) * 1000, 1),
                "ok": all(len(v) == 0 for v in failed.values()) and reached}

    def phase_node_kill(self) -> dict:
        started = self.callers("nodekill", {"a": 1, "b": 1}, rate=20, calls=300)
        time.sleep(6)
        say("SIGKILL node a")
        t_kill = time.time()
        os.killpg(self.nodes["a"].pid, signal.SIGKILL)
        gone = procs.wait_until(lambda: "a" not in [n["node"] for n in
                                                    (((self.status("b") or {}).get("rules", {}).get("cluster") or {})
                                                     .get("nodes") or [{"node": "a"}])], 20, 0.05)
        t_gone = time.time()
        res = self.wait_callers(started)
        b_failed = [r for r in res.get("b", []) if r["status"] != "answered"]
        a = res.get("a", [])
        a_before = [r for r in a if r["start"] < t_kill]
        a_in_progress = [r for r in a_before if r["status"] == "answered" and r["end"] > t_kill]
        a_bye_lost = [r for r in a_in_progress if r["bye_status"] == 0]
        self.g.stop(self.nodes["a"])
        return {"b_calls": len(res.get("b", [])), "b_failed": len(b_failed),
                "a_calls": len(a), "a_started_before_kill": len(a_before),
                "a_answered_in_progress_at_kill": len(a_in_progress),
                "a_in_progress_bye_unanswered": len(a_bye_lost),
                "a_failed_after_kill": sum(1 for r in a if r["start"] >= t_kill and r["status"] != "answered"),
                "b_sees_a_gone_after_s": round(t_gone - t_kill, 2) if gone else None,
                "ok": len(b_failed) == 0 and gone}

    def phase_evidence(self) -> dict:
        self.psap_mode({"primary": "blackhole"})
        t0 = time.time()
        started = self.callers("evidence", {"a": 1}, rate=5, calls=10)
        ok = procs.wait_until(lambda: (self.target_state("a", "primary") or {}).get("state") in ("suspect", "down"), 20, 0.01)
        a = self.target_state("a", "primary") or {}
        got_b = procs.wait_until(lambda: (self.target_state("b", "primary") or {}).get("state") in ("suspect", "down"), 10, 0.005)
        b = self.target_state("b", "primary") or {}
        # b's own test call of the primary (its log line `test call` for target=primary)
        tested = procs.wait_until(lambda: self._tested("b", "primary"), 10, 0.05)
        self.wait_callers(started)
        self.psap_mode({"primary": "healthy"})
        a_since, b_since = a.get("since_unix_ms"), b.get("since_unix_ms")
        lag = (b_since - a_since) if (ok and got_b and a_since and b_since) else None
        return {"a_state": a.get("state"), "a_reason": a.get("last_reason"), "b_state": b.get("state"),
                "b_reason": b.get("last_reason"), "a_suspect_to_b_suspect_ms": lag,
                "a_suspect_after_blackhole_ms": (a_since - t0 * 1000) if a_since else None,
                "b_test_call_logged": tested, "ok": bool(got_b and lag is not None and lag < 1000 and tested)}

    def _log_has(self, nid: str, text: str) -> bool:
        try:
            with open(os.path.join(self.out, f"node-{nid}.log"), errors="replace") as f:
                return any(text in line for line in f)
        except OSError:
            return False

    def _tested(self, nid: str, target: str) -> bool:
        try:
            with open(os.path.join(self.out, f"node-{nid}.log"), errors="replace") as f:
                return any("test call" in line and f"target={target}" in line and "verdict" in line for line in f)
        except OSError:
            return False

    def phase_cache(self) -> dict:
        self.etcd_kill_all()
        cache_a = os.path.join(self.out, "a.cache.json")
        have_cache = os.path.exists(cache_a)
        p = self.start_node("c", cache=cache_a, wait=False)
        started = procs.wait_until(lambda: self.status("c") is not None, 15)
        from_cache = procs.wait_until(lambda: self._log_has("c", 'from="cache"'), 5)
        c_version = self.running_version("c")
        self.g.stop(p)
        empty = os.path.join(self.out, "none.cache.json")
        r = subprocess.run([self.bin, "run", "--etcd", ENDPOINTS, "--node-id", "d", "--listen", "udp:127.0.0.1:18304",
                            "--admin", "off", "--rules-cache", empty], capture_output=True, text=True, timeout=30)
        return {"cache_file_present": have_cache, "with_cache_started": started, "started_from_cache": from_cache,
                "c_running_version": c_version,
                "without_cache_exit": r.returncode, "without_cache_error": r.stderr.strip().splitlines()[-1:] ,
                "ok": started and from_cache and r.returncode != 0}

    # --- the whole drill --------------------------------------------------------------------
    def run(self) -> dict:
        for port in ETCD_CLIENT + ETCD_PEER + [v[0] for v in NODES.values()] + [PRIMARY[0], BACKUP[0], CONTROL]:
            if procs.port_users(port):
                raise RuntimeError(f"port {port} is in use: {procs.port_users(port)}")
        try:
            for i in range(3):
                self.start_etcd(i, new=True)
            if not procs.wait_until(self.etcd_healthy, 30):
                raise RuntimeError("etcd cluster did not become healthy")
            self.g.start("fakepsap", [sys.executable, "-m", "sostest.fakepsap",
                                      "--psap", f"primary:{PRIMARY[0]}:{PRIMARY[1]}",
                                      "--psap", f"backup:{BACKUP[0]}:{BACKUP[1]}",
                                      "--control", f"127.0.0.1:{CONTROL}", "--log", os.path.join(self.out, "psap.jsonl"),
                                      "--seconds", "900"],
                         os.path.join(self.out, "fakepsap.log"), 900, env=dict(os.environ, PYTHONPATH=HERE))
            r = self.push(self.rules_file("first"))
            if r.returncode != 0:
                raise RuntimeError(f"first push failed: {r.stdout} {r.stderr}")
            self.start_node("a")
            self.start_node("b")
            procs.wait_until(lambda: all(self.running_version(x) == 1 for x in ("a", "b")), 10)
            time.sleep(2.5)  # first probes: both targets up
            for name, fn in (("push", self.phase_push), ("concurrent", self.phase_concurrent),
                             ("etcd_stop", self.phase_etcd_stop), ("node_kill", self.phase_node_kill)):
                say(f"phase {name}")
                self.result[name] = fn()
                say(f"{name}: {json.dumps(self.result[name])}")
            say("restart node a")
            self.start_node("a")
            procs.wait_until(lambda: (self.target_state("a", "primary") or {}).get("state") == "up", 10)
            time.sleep(1.5)
            for name, fn in (("evidence", self.phase_evidence), ("cache", self.phase_cache)):
                say(f"phase {name}")
                self.result[name] = fn()
                say(f"{name}: {json.dumps(self.result[name])}")
        finally:
            self.g.stop_all()
        self.result["ok"] = all(v.get("ok", True) for v in self.result.values() if isinstance(v, dict))
        return self.result


def main(argv: list) -> int:
    if not shutil.which("etcd"):
        say("etcd is not installed (apt-get install etcd-server etcd-client)")
        return 2
    binary = os.environ.get("SOSROUTER") or os.path.join(ROOT, "target", "release", "sosrouter")
    if os.environ.get("BUILD", "1") != "0" and not os.environ.get("SOSROUTER"):
        subprocess.run(["cargo", "build", "--release", "--bin", "sosrouter"], cwd=ROOT, check=True)
        tdir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
        binary = os.path.join(tdir, "release", "sosrouter")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = os.environ.get("OUT_DIR") or os.path.join(HERE, "out", f"{stamp}-cluster")
    os.makedirs(out, exist_ok=True)
    say(f"outputs in {out}; binary {binary}")
    d = Drill(out, binary)
    res = d.run()
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(res, f, indent=2)
    say(f"result: {'PASS' if res['ok'] else 'FAIL'} ({out}/result.json)")
    return 0 if res["ok"] else 1
