#!/usr/bin/env python3
"""Reads the files one testbeds/run command left in its output directory and reports.

    report.py smoke OUT SIPP_EXIT_CODE
    report.py drill OUT NAME SIPP_EXIT_CODE
    report.py step STEPDIR RATE MAX_FAIL_PCT MAX_RETRANS_PCT [MAX_P99_MS]
    report.py throughput OUT
    report.py compare OUT            (OUT/sosrouter and OUT/kamailio are two throughput outputs)
    report.py profile OUT SIPP_EXIT_CODE

Standard library only. Inputs (all written by SIPp or by testbeds/run):
  caller/stat.csv       SIPp -trace_stat, one row per second; the last row has the final counters
  caller/*_rtt.csv      SIPp -trace_rtt: Date_ms;response_time_ms;rtd_no, one row per answered call,
                        Date_ms counted from SIPp's start, response time in whole milliseconds
  caller/caller.log     START/ANSWER/BYELOST <sec> <usec> <call-id>   (scenario <log> actions)
  ap/NAME.GEN/ap.log    INVITE/ACK/BYE/ACK503/CANCEL/... <sec> <usec> <call-id>, one dir per start of NAME
  events.tsv            <unix time> <event> <target>: kill, stop, replace, reload, restore
  caller/cpu_times.txt  bash `times` after SIPp exited: 2nd line = CPU of SIPp (user, system)
  STEP/cpu.env          /proc/PID/stat tick deltas of proxy, caller and answering points over the
                        call-creation phase of the step (t0..t1), and the nanoseconds their threads
                        waited on the run queue (/proc/PID/task/*/schedstat) over the same window
"""
import csv
import glob
import json
import math
import os
import re
import sys

APS = ("primary", "backup", "gateway")


# ------------------------------------------------------------------ readers
def read_env(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out


def sipp_stat(path):
    """Last row of a SIPp -trace_stat CSV as a dict (empty if missing)."""
    if not os.path.exists(path):
        return {}
    rows = list(csv.reader(open(path, newline=""), delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def num(stat, key):
    try:
        return int(float(stat.get(key, "0") or 0))
    except ValueError:
        return 0


def read_log(path):
    """[(kind, unix_time, call_id)] from a scenario log (SIPp prints the numbers as %lf)."""
    out = []
    if not os.path.exists(path):
        return out
    for line in open(path, errors="replace"):
        parts = line.split()
        if len(parts) >= 4 and parts[0].isupper():
            try:
                out.append((parts[0], float(parts[1]) + float(parts[2]) / 1e6, parts[3]))
            except ValueError:
                pass
    return out


def read_events(out):
    ev = []
    path = os.path.join(out, "events.tsv")
    if os.path.exists(path):
        for line in open(path):
            p = line.rstrip("\n").split("\t")
            if len(p) >= 2:
                ev.append((float(p[0]), p[1], p[2] if len(p) > 2 else ""))
    return ev


def read_rtt(dirpath):
    """[(date_ms_since_start, response_ms)] for rtd 'setup'."""
    rows = []
    for path in glob.glob(os.path.join(dirpath, "*_rtt.csv")):
        for line in open(path):
            p = line.strip().split(";")
            if len(p) >= 3 and p[2] == "setup":
                try:
                    rows.append((float(p[0]), float(p[1])))
                except ValueError:
                    pass
    return rows


def caller_cpu_seconds(dirpath):
    """CPU seconds of the caller SIPp, from bash `times` (2nd line: children user and system)."""
    path = os.path.join(dirpath, "cpu_times.txt")
    if not os.path.exists(path):
        return None
    lines = open(path).read().split("\n")
    if len(lines) < 2:
        return None
    total = 0.0
    for m in re.finditer(r"(\d+)m([\d.]+)s", lines[1]):
        total += int(m.group(1)) * 60 + float(m.group(2))
    return total


def percentile(values, p):
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    if not values:
        return None
    v = sorted(values)
    k = max(1, math.ceil(p / 100.0 * len(v)))
    return v[k - 1]


def ap_logs(out):
    """{name: [(gen, info, events)]} for every answering point start."""
    res = {}
    for d in sorted(glob.glob(os.path.join(out, "ap", "*.*"))):
        name, gen = os.path.basename(d).rsplit(".", 1)
        info = read_env(os.path.join(d, "info"))
        res.setdefault(name, []).append((int(gen), info, read_log(os.path.join(d, "ap.log"))))
    for name in res:
        res[name].sort()
    return res


def caller_calls(dirpath):
    """{call_id: {"start": t, "answer": t or None, "byelost": bool}} from the caller log."""
    calls = {}
    for kind, t, cid in read_log(os.path.join(dirpath, "caller.log")):
        c = calls.setdefault(cid, {"start": None, "answer": None, "byelost": False})
        if kind == "START":
            c["start"] = t
        elif kind == "ANSWER":
            c["answer"] = t
        elif kind == "BYELOST":
            c["byelost"] = True
    return calls


def fmt(v, spec="{:.0f}", none="-"):
    return none if v is None else spec.format(v)


def table(headers, rows):
    w = [len(h) for h in headers]
    for r in rows:
        w = [max(a, len(str(b))) for a, b in zip(w, r)]
    line = "  ".join(h.rjust(n) for h, n in zip(headers, w))
    out = [line, "  ".join("-" * n for n in w)]
    for r in rows:
        out.append("  ".join(str(c).rjust(n) for c, n in zip(r, w)))
    return "\n".join(out)


def emit(out, text, result):
    print(text)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")


# ------------------------------------------------------------------ call accounting shared by smoke and drill
def account(out, rc):
    meta = read_env(os.path.join(out, "meta.env"))
    cdir = os.path.join(out, "caller")
    info = read_env(os.path.join(cdir, "info"))
    st = sipp_stat(os.path.join(cdir, "stat.csv"))
    calls = caller_calls(cdir)
    expected = int(info.get("calls", "0"))
    created = num(st, "OutgoingCall(C)")
    ok = num(st, "SuccessfulCall(C)")
    failed = num(st, "FailedCall(C)")
    unanswered = sorted(cid for cid, c in calls.items() if c["answer"] is None)
    answered_by = {}
    aps = ap_logs(out)
    for name, gens in aps.items():
        answered_by[name] = sum(1 for _, _, ev in gens for k, _, _ in ev if k == "ACK")
    res = {
        "mode": "direct (no proxy)" if meta.get("direct") == "1" else "proxy",
        "target": meta.get("target"), "transport": meta.get("transport"),
        "calls_planned": expected, "calls_created": created,
        "calls_successful": ok, "calls_failed": failed,
        "failure_reasons": {k[6:-3]: num(st, k) for k in st if k.startswith("Failed") and k.endswith("(C)")
                            and k != "FailedCall(C)" and num(st, k)},
        "calls_unanswered_in_log": len(unanswered),
        "bye_lost": sum(1 for c in calls.values() if c["byelost"]),
        "retransmissions": num(st, "Retransmissions(C)"),
        "answered_by": answered_by,
        "sipp_exit_code": rc,
    }
    return res, calls, aps


# ------------------------------------------------------------------ smoke
def cmd_smoke(out, rc):
    rc = int(rc)
    res, _, _ = account(out, rc)
    problems = []
    if rc != 0:
        problems.append(f"caller SIPp exit code {rc} (0 = all calls succeeded, 1 = some failed, other = trouble)")
    if res["calls_failed"]:
        problems.append(f"{res['calls_failed']} failed calls {res['failure_reasons']}")
    if res["calls_created"] != res["calls_planned"]:
        problems.append(f"{res['calls_created']} calls made of {res['calls_planned']} planned")
    if res["calls_unanswered_in_log"]:
        problems.append(f"{res['calls_unanswered_in_log']} calls without a 200 in the caller log")
    res["verdict"] = "PASS" if not problems else "FAIL"
    res["problems"] = problems
    lines = [
        f"smoke ({res['mode']}, {res['transport']} to {res['target']})",
        f"  calls planned/made     {res['calls_planned']}/{res['calls_created']}",
        f"  successful / failed    {res['calls_successful']} / {res['calls_failed']}",
        f"  answered by            " + ", ".join(f"{k} {v}" for k, v in sorted(res["answered_by"].items())),
        f"  BYE lost after answer  {res['bye_lost']} (answering point killed mid-call; not a failed call)",
        f"  retransmissions        {res['retransmissions']}",
        f"  verdict                {res['verdict']}",
    ] + [f"  problem: {p}" for p in problems]
    emit(out, "\n".join(lines), res)
    if problems:
        print("SMOKE FAILED: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


# ------------------------------------------------------------------ drill
def cmd_drill(out, name, rc):
    rc = int(rc)
    res, calls, aps = account(out, rc)
    meta = read_env(os.path.join(out, "meta.env"))
    delay_ms = float(meta.get("delay_ms", "200"))
    events = read_events(out)
    faults = [e for e in events if e[1] in ("kill", "stop", "replace", "reload")]
    restores = [e for e in events if e[1] == "restore"]
    fault_t = faults[0][0] if faults else None
    restore_t = restores[-1][0] if restores else None
    victims = sorted({e[2] for e in faults})

    setups = []  # (start, setup_ms, call_id)
    for cid, c in calls.items():
        if c["start"] is not None and c["answer"] is not None:
            setups.append((c["start"], (c["answer"] - c["start"]) * 1000.0, cid))
    setups.sort()
    all_ms = [s for _, s, _ in setups]
    delayed = [(t, s) for t, s, _ in setups if s > delay_ms]

    # caller side: the last call started after the fault (and before the restore) that was hurt
    # (setup slower than the threshold, or never answered); after it, new calls went through cleanly.
    failed_starts = [c["start"] for c in calls.values() if c["start"] is not None and c["answer"] is None]
    settle = None
    if fault_t is not None:
        end = restore_t if restore_t is not None and name != "primary-flapping" else float("inf")
        late = [t for t, s in delayed if fault_t <= t < end] + [t for t in failed_starts if fault_t <= t < end]
        settle = (max(late) - fault_t) if late else 0.0

    # target side: calls started (at the caller) between the fault and the restore whose INVITE the
    # faulty target logged, whenever it logged it (a hung target logs its backlog after SIGCONT; a killed
    # one logs nothing). Calls are matched by Call-ID, which a proxy keeps end to end.
    def started(cid):
        c = calls.get(cid)
        return c["start"] if c else None

    last_invite_at_victim = None
    touched = set()
    if fault_t is not None:
        end = restore_t if restore_t is not None else float("inf")
        for v in victims:
            for gen, info, ev in aps.get(v, []):
                for k, _, cid in ev:
                    st0 = started(cid)
                    if k == "INVITE" and st0 is not None and fault_t <= st0 < end:
                        touched.add(cid)
                        last_invite_at_victim = max(last_invite_at_victim or 0, st0)
    invites_at_victim = len(touched)
    # return of traffic: the first call started after the last restore that a victim answered (ACK came)
    back = None
    if restore_t is not None:
        for v in victims:
            for gen, info, ev in aps.get(v, []):
                for k, _, cid in ev:
                    st0 = started(cid)
                    if k == "ACK" and st0 is not None and st0 >= restore_t:
                        back = st0 if back is None else min(back, st0)

    res.update({
        "drill": name,
        "fault_targets": victims,
        "fault_time": fault_t, "restore_time": restore_t,
        "events": [{"t": t, "event": e, "target": tg} for t, e, tg in events],
        "setup_ms_p50": percentile(all_ms, 50), "setup_ms_p99": percentile(all_ms, 99),
        "setup_ms_max": max(all_ms) if all_ms else None,
        "delay_threshold_ms": delay_ms,
        "calls_delayed": len(delayed),
        "calls_delayed_max_ms": max((s for _, s in delayed), default=None),
        "failover_settled_s": settle,
        "invites_at_failed_target_after_fault": invites_at_victim if fault_t else None,
        # the same figure under the name the statewide drills use (issue 11)
        "calls_reaching_failed_target": invites_at_victim if fault_t else None,
        "last_invite_at_failed_target_s": (last_invite_at_victim - fault_t) if last_invite_at_victim else None,
        "traffic_back_after_restore_s": (back - restore_t) if back is not None else None,
        "verdict": "PASS" if res["calls_failed"] == 0 and not res["calls_unanswered_in_log"] and rc == 0 else "FAIL",
    })
    r = res
    rows = [
        ("mode", f"{r['mode']}, {r['transport']} to {r['target']}"),
        ("fault", f"{', '.join(victims) or '-'} at +{fmt(fault_t and fault_t - setups[0][0] if setups and fault_t else None, '{:.1f}')} s"
                  + (f", restored at +{restore_t - setups[0][0]:.1f} s" if restore_t and setups else "")),
        ("calls made / failed", f"{r['calls_created']} / {r['calls_failed']}"
                                 + (f" {r['failure_reasons']}" if r['failure_reasons'] else "")),
        ("answered by", ", ".join(f"{k} {v}" for k, v in sorted(r["answered_by"].items()))),
        ("BYE lost after answer", r["bye_lost"]),
        ("setup p50 / p99 / max ms", f"{fmt(r['setup_ms_p50'])} / {fmt(r['setup_ms_p99'])} / {fmt(r['setup_ms_max'])}"),
        (f"calls delayed > {delay_ms:.0f} ms", f"{r['calls_delayed']} (max {fmt(r['calls_delayed_max_ms'])} ms)"),
        ("failover settled (caller side)", f"{fmt(settle, '{:.2f}')} s after the fault"),
        ("calls reaching failed target", f"{fmt(r['invites_at_failed_target_after_fault'])}"
                                     f" (last {fmt(r['last_invite_at_failed_target_s'], '{:.2f}')} s after the fault)"),
        ("traffic back after restore", f"{fmt(r['traffic_back_after_restore_s'], '{:.2f}')} s"),
        ("retransmissions", r["retransmissions"]),
        ("verdict", r["verdict"]),
    ]
    text = f"drill {name}\n" + "\n".join(f"  {k:<32} {v}" for k, v in rows)
    emit(out, text, res)


# ------------------------------------------------------------------ throughput
def bucket_quantiles(buckets):
    """(p50, p99, max) in ms from a histogram's cumulative bucket counts {le: count}, each the upper bound of
    its bucket (max: of the highest bucket holding anything; inf beyond the last bound); Nones when empty."""
    pts = sorted(((float(k), v) for k, v in buckets.items()), key=lambda kv: kv[0])
    total = pts[-1][1] if pts else 0
    if total <= 0:
        return None, None, None

    def q(p):
        return next(le for le, c in pts if c >= p / 100.0 * total) * 1000.0

    prev, top = 0, None
    for le, c in pts:
        if c > prev:
            top = le
        prev = c
    return q(50), q(99), top * 1000.0


def steal_pct(jiffies: dict):
    """The host's share of the machine's CPU time (steal over every /proc/stat column), in %, or None."""
    total = sum(jiffies.values()) if jiffies else 0
    return 100.0 * jiffies.get("steal", 0) / total if total > 0 else None


def stall_figures(d):
    """Runtime lateness p50/p99/max (ms, bucket bounds), UDP drops and CPU steal of one step, from its
    stall.json."""
    st = load_result(os.path.join(d, "stall.json")) or {}
    p50, p99, mx = bucket_quantiles(st.get("runtime_lateness_buckets") or {})
    udp = st.get("udp") or {}
    return {"lateness_ms_p50": p50, "lateness_ms_p99": p99, "lateness_ms_max": mx,
            "udp_rcvbuf_errors": udp.get("RcvbufErrors"),
            "socket_drops": st.get("socket_drops"),
            # The first port sampled is the proxy's (lab.throughput_step).
            "proxy_socket_drops": next(iter((st.get("socket_drops") or {}).values()), None),
            "steal_pct": steal_pct(st.get("cpu_jiffies") or {})}


def fmt_late(v):
    return "-" if v is None else ("inf" if math.isinf(v) else f"<={v:g}")


def cmd_step(d, rate, max_fail, max_retrans, max_p99="0"):
    rate = int(rate)
    st = sipp_stat(os.path.join(d, "stat.csv"))
    cpu = read_env(os.path.join(d, "cpu.env"))
    rtt = read_rtt(d)
    created = num(st, "OutgoingCall(C)")
    ok = num(st, "SuccessfulCall(C)")
    failed = num(st, "FailedCall(C)")
    planned = int(read_env(os.path.join(d, "info")).get("calls", created))
    lost = max(0, planned - ok - failed)       # never finished (SIPp stopped by its -timeout)
    failed_all = failed + lost
    retrans = num(st, "Retransmissions(C)")
    # achieved rate: answered calls over the span of their creation times (answer time - setup time)
    created_at = sorted(t - s for t, s in rtt)
    achieved = None
    if len(created_at) > 1 and created_at[-1] > created_at[0]:
        achieved = (len(created_at) - 1) / ((created_at[-1] - created_at[0]) / 1000.0)
    setup = [s for _, s in rtt]
    wall = float(cpu.get("t1", 0)) - float(cpu.get("t0", 0)) or 1.0   # the CPU sampling window
    tck = float(cpu.get("clk_tck", 100))
    caller_cpu = caller_cpu_seconds(d)
    res = {
        "rate_offered": rate, "calls_planned": planned, "calls_created": created,
        "calls_successful": ok, "calls_failed": failed_all,
        "fail_pct": 100.0 * failed_all / planned if planned else 0.0,
        "retransmissions": retrans,
        "retrans_pct": 100.0 * retrans / (2 * created) if created else 0.0,
        "rate_achieved": achieved,
        "setup_ms_p50": percentile(setup, 50), "setup_ms_p99": percentile(setup, 99),
        "setup_ms_max": max(setup) if setup else None,
        "wall_s": wall,
        "cpu_proxy_pct": (100.0 * int(cpu.get("proxy_ticks", 0)) / tck / wall) if cpu.get("proxy_running") == "1" else None,
        "cpu_caller_sipp_pct": (100.0 * int(cpu.get("caller_ticks", 0)) / tck / wall) if cpu.get("caller_found") == "1" else None,
        "cpu_caller_sipp_total_s": caller_cpu,
        "cpu_answering_points_pct": 100.0 * int(cpu.get("ap_ticks", 0)) / tck / wall,
        # Run-queue wait, in % of the window (summed over threads: 2 threads waiting all along = 200).
        "runq_proxy_pct": (100.0 * int(cpu["proxy_runq_ns"]) / 1e9 / wall)
        if cpu.get("proxy_runq_ns") and cpu.get("proxy_running") == "1" else None,
        "runq_caller_pct": (100.0 * int(cpu["caller_runq_ns"]) / 1e9 / wall)
        if cpu.get("caller_runq_ns") and cpu.get("caller_found") == "1" else None,
        "runq_answering_points_pct": (100.0 * int(cpu["ap_runq_ns"]) / 1e9 / wall) if cpu.get("ap_runq_ns") else None,
        "proxy_pss_kb": int(cpu["proxy_pss_kb"]) if cpu.get("proxy_pss_kb", "0") not in ("", "0") else None,
        "sipp_exit_code": int(cpu.get("exit_code", -1)),
        **stall_figures(d),
    }
    reasons = []
    if float(max_p99) > 0 and (res["setup_ms_p99"] is None or res["setup_ms_p99"] > float(max_p99)):
        reasons.append(f"setup p99 {fmt(res['setup_ms_p99'])} ms > {max_p99} ms")
    if res["fail_pct"] > float(max_fail):
        reasons.append(f"failed {res['fail_pct']:.2f}% > {max_fail}%")
    if res["retrans_pct"] > float(max_retrans):
        reasons.append(f"retransmissions {res['retrans_pct']:.2f}% > {max_retrans}%")
    if achieved is None or achieved < 0.9 * rate:
        reasons.append(f"achieved {fmt(achieved)}/s < 90% of {rate}/s")
    limit = []
    if (res["cpu_caller_sipp_pct"] or 0) >= 90:
        limit.append("caller SIPp at ~100% of a core: SIPp, not the proxy, is the limit")
    if res["cpu_answering_points_pct"] >= 90:
        limit.append("answering-point SIPps use ~a core")
    if (res["cpu_proxy_pct"] or 0) >= 90:
        limit.append("proxy at >=90% of a core")
    res["ok"] = not reasons
    res["verdict"] = "ok" if not reasons else "; ".join(reasons)
    res["limit"] = "; ".join(limit)
    with open(os.path.join(d, "step.json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
    print(f"  -> {rate}/s: achieved {fmt(achieved)}/s, failed {failed_all}, retrans {retrans}, "
          f"setup p50/p99 {fmt(res['setup_ms_p50'])}/{fmt(res['setup_ms_p99'])} ms, "
          f"cpu proxy {fmt(res['cpu_proxy_pct'])}% caller {fmt(res['cpu_caller_sipp_pct'])}% "
          f"APs {fmt(res['cpu_answering_points_pct'])}%, runtime lateness p50/p99/max "
          f"{fmt_late(res['lateness_ms_p50'])}/{fmt_late(res['lateness_ms_p99'])}/{fmt_late(res['lateness_ms_max'])} ms, "
          f"udp rcvbuf drops {fmt(res['udp_rcvbuf_errors'])} (proxy's socket {fmt(res.get('proxy_socket_drops'))}), host steal {fmt(res['steal_pct'])}%, run-queue wait "
          f"proxy {fmt(res['runq_proxy_pct'])}% caller {fmt(res['runq_caller_pct'])}% "
          f"APs {fmt(res['runq_answering_points_pct'])}%: {res['verdict']}"
          + (f" [{res['limit']}]" if res["limit"] else ""), file=sys.stderr)


def cmd_throughput(out):
    meta = read_env(os.path.join(out, "meta.env"))
    steps = []
    for d in sorted(glob.glob(os.path.join(out, "steps", "*"))):
        p = os.path.join(d, "step.json")
        if os.path.exists(p):
            s = json.load(open(p))
            s["step"] = os.path.basename(d)
            steps.append(s)
    good = [s["rate_offered"] for s in steps if s["ok"]]
    best = max(good) if good else None
    rows = [(s["step"].split("-")[0], s["rate_offered"], fmt(s["rate_achieved"]), s["calls_failed"],
             f"{s['fail_pct']:.2f}", f"{s['retrans_pct']:.2f}",
             fmt(s["setup_ms_p50"]), fmt(s["setup_ms_p99"]),
             fmt(s["cpu_proxy_pct"]), fmt(s["cpu_caller_sipp_pct"]), fmt(s["cpu_answering_points_pct"]),
             "/".join(fmt_late(s.get(k)) for k in ("lateness_ms_p50", "lateness_ms_p99", "lateness_ms_max")),
             fmt(s.get("udp_rcvbuf_errors")), fmt(s.get("steal_pct")),
             s["verdict"] + (f" [{s['limit']}]" if s["limit"] else "")) for s in steps]
    mode = "direct (no proxy)" if meta.get("direct") == "1" else "proxy"
    text = (f"throughput ({mode}, {meta.get('transport')} to {meta.get('target')}, {meta.get('host_cpus')} CPUs shared "
            f"by proxy and SIPp)\n"
            + table(["#", "offered/s", "achieved/s", "failed", "fail%", "retrans%", "p50 ms", "p99 ms",
                     "proxy%", "caller%", "APs%", "rt late p50/p99/max ms", "rcvbuf drops", "steal%",
                     "verdict"], rows)
            + f"\n\nhighest good rate: {fmt(best)} calls/s"
            + "\n(CPU in % of one core; setup = INVITE sent to 200 received, at the caller, 1 ms resolution;"
            + "\n rt late = sosrouter's sosrouter_runtime_lateness_seconds over the step, as bucket bounds;"
            + "\n rcvbuf drops = the kernel's UDP RcvbufErrors over the step, machine-wide (the step line"
            + "\n also gives the proxy's own socket's; a scale run's silent targets drop probes by design);"
            + "\n steal = share of the machine's CPU time the host gave to others (/proc/stat): latency under"
            + "\n a high steal is the host's, compare such steps with care)")
    emit(out, text, {"mode": mode, "target": meta.get("target"), "transport": meta.get("transport"),
                     "highest_good_rate": best, "steps": steps})


# ------------------------------------------------------------------ compare (two throughput runs)
def load_result(path):
    if not os.path.exists(path):
        return None
    try:
        return json.load(open(path))
    except ValueError:
        return None


def peer_steps(out, peer):
    """(result or None, {rate: step}) of one peer's throughput run, from result.json or the step files."""
    res = load_result(os.path.join(out, peer, "result.json"))
    steps = res["steps"] if res else []
    if not steps:
        for d in sorted(glob.glob(os.path.join(out, peer, "steps", "*"))):
            s = load_result(os.path.join(d, "step.json"))
            if s:
                steps.append(s)
    return res, {s["rate_offered"]: s for s in steps}


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def cpu_per_1000(step):
    """Proxy CPU in % of one core per 1000 calls/s actually achieved in that step."""
    if not step or step.get("cpu_proxy_pct") is None or not step.get("rate_achieved"):
        return None
    return step["cpu_proxy_pct"] / (step["rate_achieved"] / 1000.0)


def cmd_compare(out):
    meta = read_env(os.path.join(out, "meta.env"))
    peers = ("sosrouter", "kamailio")
    data = {p: peer_steps(out, p) for p in peers}
    best = {}
    for p in peers:
        good = [r for r, s in data[p][1].items() if s.get("ok")]
        best[p] = max(good) if good else None
    # The common rate for CPU: the highest rate that was good for both peers (same offered load).
    common = sorted(set(r for r, s in data["sosrouter"][1].items() if s.get("ok"))
                    & set(r for r, s in data["kamailio"][1].items() if s.get("ok")))
    cpu_rate = common[-1] if common else None
    # Setup p99 at 1000 calls/s, or the nearest rate both ran, said so.
    both = sorted(set(data["sosrouter"][1]) & set(data["kamailio"][1]))
    lat_rate = min(both, key=lambda r: (abs(r - 1000), r)) if both else None
    rows = []
    for r in sorted(set(data["sosrouter"][1]) | set(data["kamailio"][1])):
        cells = [r]
        for p in peers:
            s = data[p][1].get(r)
            cells += ([fmt(s["rate_achieved"]), f"{s['fail_pct']:.2f}", fmt(s["setup_ms_p99"]),
                       fmt(s["cpu_proxy_pct"]), fmt(cpu_per_1000(s)), fmt(s.get("cpu_caller_sipp_pct")),
                       fmt(s.get("steal_pct")), "ok" if s["ok"] else "bad"] if s else ["", "", "", "", "", "", "", "-"])
        rows.append(cells)
    head = ["offered/s"]
    for p in ("sr", "km"):
        head += [f"{p} achv/s", f"{p} fail%", f"{p} p99", f"{p} cpu%", f"{p} cpu/1k", f"{p} caller%", f"{p} steal%", p]

    def at(p, r, key):
        s = data[p][1].get(r) if r is not None else None
        return s.get(key) if s else None

    fig = {
        "max_sustained_calls_s": {p: best[p] for p in peers},
        "cpu_rate": cpu_rate,
        "cpu_pct_per_1000_calls_s": {p: cpu_per_1000(data[p][1].get(cpu_rate)) if cpu_rate else None for p in peers},
        "latency_rate": lat_rate,
        "setup_ms_p99": {p: at(p, lat_rate, "setup_ms_p99") for p in peers},
        "proxy_pss_kb": {p: at(p, cpu_rate, "proxy_pss_kb") for p in peers},
    }
    fig["ratios"] = {
        "max_sustained_sosrouter_over_kamailio": ratio(best["sosrouter"], best["kamailio"]),
        "cpu_per_1000_sosrouter_over_kamailio": ratio(fig["cpu_pct_per_1000_calls_s"]["sosrouter"],
                                                      fig["cpu_pct_per_1000_calls_s"]["kamailio"]),
        "setup_p99_sosrouter_over_kamailio": ratio(fig["setup_ms_p99"]["sosrouter"], fig["setup_ms_p99"]["kamailio"]),
    }
    rt = fig["ratios"]
    goal = {"max": ">= 2.0", "cpu": "<= 0.5", "p99": "<= 1.0"}
    lat_note = "" if lat_rate == 1000 else f" (no 1000/s step in both runs: nearest common rate {fmt(lat_rate)}/s)"
    lines = [
        f"compare: sosrouter vs kamailio, same stairs ({meta.get('transport')} to {meta.get('target')}, "
        f"{meta.get('host_cpus')} CPUs shared by proxy and SIPp)",
        table(head, rows),
        "",
        table(["figure", "sosrouter", "kamailio", "ratio sr/km", "goal"], [
            ("max sustained calls/s", fmt(best["sosrouter"]), fmt(best["kamailio"]),
             fmt(rt["max_sustained_sosrouter_over_kamailio"], "{:.2f}"), goal["max"]),
            (f"proxy CPU %/1000 calls/s at {fmt(cpu_rate)}/s",
             fmt(fig["cpu_pct_per_1000_calls_s"]["sosrouter"], "{:.1f}"),
             fmt(fig["cpu_pct_per_1000_calls_s"]["kamailio"], "{:.1f}"),
             fmt(rt["cpu_per_1000_sosrouter_over_kamailio"], "{:.2f}"), goal["cpu"]),
            (f"setup p99 ms at {fmt(lat_rate)}/s", fmt(fig["setup_ms_p99"]["sosrouter"]),
             fmt(fig["setup_ms_p99"]["kamailio"]),
             fmt(rt["setup_p99_sosrouter_over_kamailio"], "{:.2f}"), goal["p99"]),
            (f"proxy PSS kB at {fmt(cpu_rate)}/s", fmt(fig["proxy_pss_kb"]["sosrouter"]),
             fmt(fig["proxy_pss_kb"]["kamailio"]), "", ""),
        ]),
        "",
        "(sr = sosrouter, km = kamailio; cpu% = proxy CPU in % of one core over the call-creation phase, all of",
        " the proxy's processes; cpu/1k = cpu% per 1000 achieved calls/s; caller% = the caller SIPp: near 100 means",
        " SIPp, not the proxy, was the limit; p99 in ms with SIPp's few-ms granularity" + lat_note + ")",
    ]
    if not data["sosrouter"][1] or not data["kamailio"][1]:
        lines.append("WARNING: a peer has no steps; see its directory under " + out)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    result = {"peers": {p: {"highest_good_rate": best[p], "steps": sorted(data[p][1].values(),
                                                                         key=lambda s: s["rate_offered"])}
                        for p in peers}, **fig}
    for name in ("compare.json", "result.json"):
        with open(os.path.join(out, name), "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
            f.write("\n")
    if not data["sosrouter"][1] or not data["kamailio"][1]:
        sys.exit(1)


# ------------------------------------------------------------------ profile (callgrind)
def callgrind_total(path):
    """Total Ir of a callgrind dump ("totals:" line, else "summary:")."""
    total = None
    for line in open(path, errors="replace"):
        if line.startswith("totals:") or (total is None and line.startswith("summary:")):
            total = int(line.split()[1])
    return total


def shorten(path, root):
    """A source path with the long prefixes cut: cargo registry, rustc sources, our repository."""
    path = re.sub(r"^\S*/\.cargo/registry/src/[^/]+/", "", path)
    path = re.sub(r"^/rustc/[0-9a-f]+/library/", "std/", path)
    return path.replace(root + "/", "")


def annotate_top(path, total, root, inclusive, n=25):
    """The top n functions of a callgrind_annotate output, as "Ir (pct)  function  [file]" lines.

    callgrind_annotate names a cost by file:function, so a function whose code is inlined from several
    files appears several times: the entries are merged by function name (self costs add up; for
    inclusive costs the largest is kept, the others being parts of it). Entries holding ~the whole
    total are left out: thread entry frames (clone, start_thread, the tokio worker loop) that were on
    the stack when the counters were zeroed and dumped, which callgrind then charges with everything."""
    merged, started = {}, False
    for line in open(path, errors="replace"):
        if not started:
            # the table starts after the line naming the columns ("Ir  file:function")
            started = "file:function" in line
            continue
        m = re.match(r"^\s*([0-9][0-9,]*)\s+\([^)]*\)\s+(.*?)(?: \[[^\]]+\])?$", line.rstrip("\n"))
        if not m:
            if merged and not line.strip():
                break
            continue
        ir = int(m.group(1).replace(",", ""))
        if total and ir >= 0.995 * total:
            continue
        file, _, fn = m.group(2).partition(":")
        if not fn:
            file, fn = "", file
        cur = merged.get(fn)
        if cur is None:
            merged[fn] = [ir, file, ir]
        else:
            cur[0] = max(cur[0], ir) if inclusive else cur[0] + ir
            if ir > cur[2]:
                cur[1], cur[2] = file, ir
    top = sorted(merged.items(), key=lambda kv: -kv[1][0])[:n]
    return [f"{ir:>13,} ({100.0 * ir / total:5.2f}%)  {fn}  [{shorten(file, root)}]" if total else f"{ir:>13,}  {fn}"
            for fn, (ir, file, _) in top]


def cmd_profile(out, rc):
    st = sipp_stat(os.path.join(out, "caller", "stat.csv"))
    made, ok, failed = num(st, "OutgoingCall(C)"), num(st, "SuccessfulCall(C)"), num(st, "FailedCall(C)")
    info = read_env(os.path.join(out, "caller", "info"))
    total = callgrind_total(os.path.join(out, "calls.callgrind"))
    per_call = total / ok if total and ok else None
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    incl = annotate_top(os.path.join(out, "annotate-inclusive.txt"), total, root, True)
    self_ = annotate_top(os.path.join(out, "annotate-self.txt"), total, root, False)
    lines = [
        f"profile: sosrouter under callgrind, {info.get('calls')} calls at {info.get('rate')}/s "
        f"(hold {info.get('hold_ms')} ms), over {info.get('transport')}",
        f"  calls made / answered / failed   {made} / {ok} / {failed}   (SIPp exit code {rc})",
        f"  instructions (Ir), calls phase   {total:,}" if total else "  instructions (Ir)   -",
        f"  instructions per answered call   {per_call:,.0f}" if per_call else "  instructions per call   -",
        "  (the calls phase also holds the proxy's OPTIONS probes, ~3/s, and idle timer wake-ups)",
        "",
        "top 25 by inclusive instructions (thread entry frames at ~100% left out; one line per function):",
        *incl,
        "",
        "top 25 by self instructions (one line per function, inlined parts added up):",
        *self_,
        "",
        "files: calls.callgrind (callgrind_annotate / kcachegrind), annotate-inclusive.txt, annotate-self.txt",
    ]
    if failed or ok < made:
        lines.append(f"WARNING: {failed} failed calls: callgrind slowed the proxy too much; lower RATE")
    emit(out, "\n".join(lines), {"calls_made": made, "calls_answered": ok, "calls_failed": failed,
                                 "sipp_exit_code": int(rc), "instructions_total": total,
                                 "instructions_per_call": per_call, "top_inclusive": incl, "top_self": self_})


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd, args = argv[1], argv[2:]
    {"smoke": cmd_smoke, "drill": cmd_drill, "step": cmd_step, "throughput": cmd_throughput,
     "compare": cmd_compare, "profile": cmd_profile}[cmd](*args)


if __name__ == "__main__":
    main(sys.argv)
