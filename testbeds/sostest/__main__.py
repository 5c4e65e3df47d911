"""sostest: the sosrouter testbed's command line. Run it as `testbeds/run [options] COMMAND` (a shim for
`python3 -m sostest` with testbeds/ on PYTHONPATH). `testbeds/run help` prints every command and option."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from . import lab, statewide

USAGE = """Usage: testbeds/run [options] COMMAND

Commands:
  smoke              {calls_smoke} calls at {rate_smoke}/s; the primary PSAP is killed (kill -9) midway.
                     Passes only with zero failed calls. No timing is asserted. Meant for CI.
  throughput         Call rates {rates} (each {step_s} s), stop at the first step with
                     more than {max_fail}% failed calls or {max_retrans}% retransmissions, then bisect.
                     Per step: achieved rate, failures, retransmissions, setup p50/p99, CPU of proxy and SIPp.
  drill NAME         A fault at 1/3 of a steady run (default 3000 calls at 100/s), restored at 2/3.
                     NAME: {drills}
                     (also: {extra})
                     primary-blackhole: the primary answers OPTIONS but swallows INVITEs (a fake PSAP on
                     5071); default 300 calls at 20/s.
  drill statewide-*  A statewide drill: REGIONS (9) regions of fake PSAPs behind the proxy at
                     127.0.0.1:5160, RATE (5) calls/s for CALLING_S (55) s, a silent fault at FAULT_AT_S (10) s
                     for FAULT_S (30) s. NAME: {statewide}
  statewide-all      Every statewide drill (or those named), then one table.
  statewide-compare  Every statewide drill (or those named) against sosrouter, then Kamailio; side by side.
  statewide-table DIR...  The table of finished statewide drills (their result.json).
  statewide-report DIR... Recompute a finished statewide drill's figures, summary and plot from its files.
  topology DIR       Write the statewide topology (rules, dispatcher list, topology.json) to DIR.
  cluster            Two sosrouter nodes sharing rules and health hints through a 3-member etcd cluster
                     on loopback (ports 18000-18999): push timing, concurrent pushes, etcd stopped and
                     killed under load, a node killed under load, node A's evidence -> node B's
                     suspicion, start from the rules cache. SOSROUTER=binary skips the build.
  pytest [ARGS]      The testbed's own tests (testbeds/tests: reports on recorded SIPp output, statewide
                     metrics, fake PSAP and caller on loopback).
  all                smoke, every drill, then throughput.
  compare            The throughput stair test against sosrouter, then against Kamailio (same scenarios,
                     answering points and RATES, one after the other), then a side-by-side table and the
                     ratios; compare.json. Default RATES add a 1000 calls/s stair (setup p99 at 1000/s).
  profile            sosrouter under valgrind --tool=callgrind while SIPp makes CALLS calls (default
                     2000) at RATE/s (default 100): top 25 functions by inclusive and by self
                     instructions, and instructions per call.
  acceptance         The call path's acceptance matrix: each answering point alone (primary, backup,
                     gateway), Request-URI sip:911@proxy and urn:service:sos, caller over UDP and TCP,
                     300 calls each; zero failed calls required.
  accept-one NAME    One run of that matrix (URIS=sip911|urn, --proxy tcp:... for TCP).
  test               Every test: cargo test, the testbed's pytest suite, then smoke, acceptance and
                     interop (the README's test command).
  interop [PAIR] [T]  Stacks nobody here wrote (Debian packages), on loopback: SIPp -> Kamailio edge ->
                     sosrouter -> SIPp, baresip -> sosrouter -> baresip (audio), baresip -> Kamailio ->
                     sosrouter -> baresip, and a control baresip -> Kamailio -> baresip, each over
                     udp, tcp and tls (tls rows through sosrouter skipped while it has none); a table,
                     result.json; exit 1 on any failure. Ports 15000-15499.
  interop-tls-load   TLS calls/s and proxy CPU per 1000 calls/s: SIPp over TCP behind stunnel, through
                     sosrouter's TLS, then Kamailio's, same stairs (SOS_TRANSPORT=tcp / KAM_TRANSPORT=tcp:
                     that proxy over TCP, stunnel terminating TLS; sosrouter so while it has no TLS).
  sse-load           What SSE_CLIENTS (100) clients of the admin event stream cost: two throughput stairs against
                     one sosrouter, interleaved step by step, without and with the clients connected to /events
                     (operator events at SSE_EVENTS_PER_S, 10/s, in both); knees, their ratio (goal: cost <= 5%),
                     events per client, proxy CPU; result.json, summary.txt.
  soak [S] [CALLS/s] testbeds/soak/rss-soak: sosrouter's RSS under S seconds (60) of faults (200/s).
  scale              Rules generated at size (SCALE_SIZES, default "1x1 100x10 1000x100 6000x30 10000x2" routes x
                     prefixes; SCALE_QUICK=1: "1x1 1000x100", shorter steps): per size the time to load and
                     to reload, idle CPU (probing only), probe lateness p99, RSS, calls/s at the knee of a
                     bounded stair (SCALE_RATES), setup p50/p99 at 1000 calls/s; table, result.json, scale.png.
                     Up to SCALE_KAMAILIO_MAX_HOSTS (2001) probe hosts, Kamailio's dispatcher probes the same
                     hosts (kamailio/probe.cfg) in the same idle seconds: both proxies' idle CPU, one run.
  scale-knee         The knee at size against lab-sized rules, measured fairly on a shared host: the stairs of
                     SCALE_KNEE_SIZES ("1x1 1000x100") interleaved step by step, a fresh proxy per step;
                     knees, their ratio (goal >= 0.9), host steal per step; result.json, summary.txt.
  scale-reload       An 18 000-target file (SCALE_RELOAD_SIZE=6000x30) reloaded RELOADS (4) times while
                     RATE (1000) calls/s flow for SCALE_RELOAD_S (30) s: no call may fail or take over 50 ms.
  help               This text.

Options (each also settable as the environment variable in brackets):
  --proxy [udp:|tcp:]HOST:PORT  where the caller sends calls [PROXY] (default udp:127.0.0.1:5060)
  --no-start-proxy              do not build or start sosrouter; use the proxy already at --proxy [START_PROXY=0]
  --no-build                    do not run cargo build --release [BUILD=0]
  --rate N, --calls N           calls per second, number of calls [RATE, CALLS]
  --hold MS                     caller hold time between ACK and BYE [HOLD_MS]
  --direct                      no proxy: the caller calls the primary answering point directly, and faults
                                hit the backup instead, so only the testbed's own machinery is exercised [DIRECT=1]
  --peer sosrouter|kamailio     which proxy to start [PEER]; kamailio runs testbeds/kamailio/kamailio.cfg
                                (installed with apt-get when missing), e.g. PEER=kamailio testbeds/run drill primary-hung
Other knobs (environment only): RULES SOSROUTER SOSROUTER_ARGS PROXY_WARMUP_S RING_MS CALL_TIMEOUT_MS
  KAMAILIO_CFG KAMAILIO_LIST KAMAILIO_DEFINES KAMAILIO_MEM_MB OUT_DIR
  DELAY_MS RATES STEP_S BISECT_STEPS MAX_FAIL_PCT MAX_RETRANS_PCT MAX_P99_MS FLAP_COUNT FLAP_DOWN_S AP_IP CALLER_IP
  AP_TRANSPORT (u1 or t1: how answering points listen; default u1, or the caller's with --direct)
  AP_PORT_BASE (answering points on BASE..BASE+2 instead of 5071-5073; rules and dispatcher list rewritten)
  statewide: REGIONS CALLING_S FAULT_AT_S FAULT_S HOLD_S STATEWIDE_DOMAIN_LIST STATEWIDE_PROXY_PORT STATEWIDE_PSAP_BASE
  AP_RTP_BASE CALLER_PORT CALLER_MEDIA_PORT ADMIN_ADDR ADMIN_TOKEN (ports of a run, the testbed's /metrics scrapes)
  sse-load: SSE_CLIENTS SSE_EVENTS_PER_S SSE_TOGGLE_TARGET SSE_IDLE_S SSE_CLIENTS_NICE
  SOSTEST_PYTHON (the python3 that runs this package; default /usr/bin/python3)

Topology: caller -> sosrouter 127.0.0.1:5060 -> primary PSAP :5071, backup PSAP :5072, gateway :5073 (UDP).
Outputs: testbeds/out/<timestamp>-<command>/ (summary.txt, result.json, every log).
"""

OPTIONS = {"--proxy": "PROXY", "--rate": "RATE", "--calls": "CALLS", "--hold": "HOLD_MS", "--peer": "PEER"}
FLAGS = {"--no-start-proxy": ("START_PROXY", "0"), "--no-build": ("BUILD", "0"), "--direct": ("DIRECT", "1")}


def usage() -> str:
    e = os.environ
    return USAGE.format(calls_smoke=e.get("CALLS") or 300, rate_smoke=e.get("RATE") or 50,
                        rates=e.get("RATES") or "200 400 800 1200 1600 2000 2500 3000 3500 4000 5000 6000",
                        step_s=e.get("STEP_S", "10"), max_fail=e.get("MAX_FAIL_PCT", "0.1"),
                        max_retrans=e.get("MAX_RETRANS_PCT", "1"), drills=" ".join(lab.DRILLS),
                        extra=" ".join(lab.EXTRA_DRILLS), statewide=" ".join(statewide.DRILLS))


def parse_options(argv: list) -> list:
    """Options anywhere on the line go to the environment (child runs inherit them); the rest is returned."""
    rest, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in OPTIONS:
            if i + 1 >= len(argv):
                raise lab.Fail(f"{a} needs a value")
            os.environ[OPTIONS[a]] = argv[i + 1]
            i += 2
        elif a in FLAGS:
            k, v = FLAGS[a]
            os.environ[k] = v
            i += 1
        elif a in ("-h", "--help"):
            rest.insert(0, "help")
            i += 1
        else:
            rest.append(a)
            i += 1
    return rest


def need_plotting():
    """python3-matplotlib and python3-pytest for this interpreter, installed with apt-get when missing."""
    try:
        import matplotlib  # noqa: F401
        import pytest  # noqa: F401
        return
    except ImportError:
        pass
    lab.say("pytest or matplotlib missing: installing the Debian packages python3-pytest python3-matplotlib")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    pk = ["python3-pytest", "python3-matplotlib"]
    if subprocess.call(sudo + ["apt-get", "install", "-y", *pk]) != 0:
        subprocess.call(sudo + ["apt-get", "update"])
        subprocess.call(sudo + ["apt-get", "install", "-y", *pk])


def build_statewide(compare: bool = False):
    need_plotting()
    peer = os.environ.get("PEER", "sosrouter")
    if peer == "kamailio" or compare:
        lab.need_kamailio()
    if (peer == "sosrouter" or compare) and os.environ.get("BUILD", "1") != "0" and not os.environ.get("SOSROUTER"):
        lab.say("building sosrouter (cargo build --release)")
        if subprocess.call(["cargo", "build", "--release"], cwd=lab.ROOT, stdout=sys.stderr):
            raise lab.Fail("cargo build --release failed")


def statewide_all(names: list, peers: list) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(statewide.HERE, "out", f"{stamp}-statewide")
    results = []
    for peer in peers:
        for n in names:
            st = statewide.Settings()
            st.peer = peer
            try:
                r = statewide.run_drill(n, st, os.path.join(base, f"{n}-{peer}"))
                results.append(statewide.asdict(r))
            except SystemExit as e:
                statewide.say(f"drill {n} against {peer} did not run: {e}")
    text = statewide.results_table(results)
    if len(peers) > 1:
        text += "\n\n" + statewide.side_by_side(results)
    print(text)
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(base, "result.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    statewide.say(f"outputs in {base}")
    return 0 if len(results) == len(names) * len(peers) else 1


def main(argv: list) -> int:
    # SIGTERM and Ctrl-C unwind through the commands' finally blocks, which stop every process started.
    signal.signal(signal.SIGTERM, lab.on_sigterm)
    try:
        args = parse_options(argv)
        peer = os.environ.get("PEER", "sosrouter")
        if peer not in ("sosrouter", "kamailio"):
            raise lab.Fail(f"unknown --peer '{peer}' (sosrouter or kamailio)")
        cmd, rest = (args[0], args[1:]) if args else ("help", [])
        if cmd == "help":
            print(usage(), end="")
            return 0
        if cmd == "drill" and rest and rest[0].startswith("statewide-"):
            build_statewide()
            statewide.run_drill(rest[0], statewide.Settings())
            return 0
        if cmd == "statewide-all":
            build_statewide()
            return statewide_all(rest or list(statewide.DRILLS), [peer])
        if cmd == "statewide-compare":
            build_statewide(compare=True)
            return statewide_all(rest or list(statewide.DRILLS), ["sosrouter", "kamailio"])
        if cmd == "statewide-table":
            res = statewide.load_results(rest)
            print(statewide.results_table(res))
            if len({r["peer"] for r in res}) > 1:
                print("\n" + statewide.side_by_side(res))
            return 0
        if cmd == "statewide-report":
            for d in rest:
                statewide.rereport(d)
            return 0
        if cmd == "topology":
            from . import topology
            topology.main(rest)
            return 0
        if cmd in ("scale", "scale-reload", "scale-knee"):
            from . import scale
            need_plotting()
            if os.environ.get("BUILD", "1") != "0" and not os.environ.get("SOSROUTER"):
                lab.say("building sosrouter (cargo build --release)")
                if subprocess.call(["cargo", "build", "--release"], cwd=lab.ROOT, stdout=sys.stderr):
                    raise lab.Fail("cargo build --release failed")
            return {"scale": scale.cmd_scale, "scale-reload": scale.cmd_scale_reload,
                    "scale-knee": scale.cmd_scale_knee}[cmd](rest)
        if cmd in ("fakepsap", "caller"):
            import importlib
            importlib.import_module(f"sostest.{cmd}").main(rest)
            return 0
        if cmd == "report":
            from . import report
            report.main(["report.py", *rest])
            return 0
        if cmd == "cluster":
            from . import cluster
            return cluster.main(rest)
        if cmd == "pytest":
            need_plotting()
            return subprocess.call([sys.executable, "-m", "pytest", "-q", os.path.join(statewide.HERE, "tests"), *rest],
                                   env=dict(os.environ, PYTHONPATH=statewide.HERE))
        if cmd == "interop":
            from . import interop
            return interop.cmd_interop(lab.Config(), rest)
        if cmd == "sse-load":
            from . import sseload
            lab.need("sipp", "sip-tester")
            return sseload.cmd_sse_load(lab.Config())
        if cmd == "interop-tls-load":
            from . import tlsload
            return tlsload.cmd_tls_load(lab.Config(), rest)
        if cmd in lab.COMMANDS or cmd in ("drill", "accept-one", "soak"):
            return lab.dispatch(lab.Config(), cmd, rest)
        print(usage(), end="", file=sys.stderr)
        raise lab.Fail(f"unknown command '{cmd}'")
    except lab.Fail as e:
        lab.say(f"ERROR: {e}")
        return 1
    except KeyboardInterrupt:
        lab.say("interrupted")
        return 130
    except lab.Terminated:
        lab.say("terminated")
        return 143
    except SystemExit as e:
        if isinstance(e.code, str):
            lab.say(f"ERROR: {e.code}")
            return 1
        return int(e.code or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
