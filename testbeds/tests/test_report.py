"""sostest.report on recorded SIPp output (fixtures/sipp-direct: 12 calls, caller straight at psap.xml)."""
import json
import os
import shutil

import pytest
from conftest import FIXTURES

from sostest import report

DIRECT = os.path.join(FIXTURES, "sipp-direct")


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(DIRECT, d)
    return str(d)


def test_sipp_stat_reads_the_last_row():
    st = report.sipp_stat(os.path.join(DIRECT, "caller", "stat.csv"))
    assert report.num(st, "OutgoingCall(C)") == 12
    assert report.num(st, "SuccessfulCall(C)") == 12
    assert report.num(st, "FailedCall(C)") == 0
    assert report.sipp_stat("/nonexistent") == {}


def test_scenario_logs_and_rtt():
    calls = report.caller_calls(os.path.join(DIRECT, "caller"))
    assert len(calls) == 12
    assert all(c["start"] is not None and c["answer"] >= c["start"] for c in calls.values())
    rtt = report.read_rtt(os.path.join(DIRECT, "caller"))
    assert len(rtt) == 12 and all(ms >= 0 for _, ms in rtt)
    ap = report.read_log(os.path.join(DIRECT, "ap", "primary.1", "ap.log"))
    assert sum(1 for k, _, _ in ap if k == "INVITE") == 12
    assert sum(1 for k, _, _ in ap if k == "ACK") == 12


def test_log_reader_skips_garbage(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("INVITE 1.0 500000.0 a\nnot a line\nACK x y b\nBYE 2 0 c\n")
    assert report.read_log(str(p)) == [("INVITE", 1.5, "a"), ("BYE", 2.0, "c")]


def test_percentile_nearest_rank():
    assert report.percentile([], 50) is None
    assert report.percentile([5, 1, 3, 2, 4], 50) == 3
    assert report.percentile(list(range(1, 101)), 99) == 99
    assert report.percentile([7], 99) == 7


def test_smoke_passes_on_the_recording(run_dir, capsys):
    report.cmd_smoke(run_dir, "0")
    res = json.load(open(os.path.join(run_dir, "result.json")))
    assert res["verdict"] == "PASS"
    assert res["calls_created"] == 12 and res["calls_failed"] == 0
    assert res["answered_by"] == {"primary": 12}
    assert "verdict                PASS" in capsys.readouterr().out


def test_smoke_fails_on_a_bad_exit_code(run_dir):
    with pytest.raises(SystemExit):
        report.cmd_smoke(run_dir, "1")
    assert json.load(open(os.path.join(run_dir, "result.json")))["verdict"] == "FAIL"


def test_drill_counts_calls_reaching_the_failed_target(run_dir):
    calls = sorted(report.caller_calls(os.path.join(run_dir, "caller")).values(), key=lambda c: c["start"])
    fault, restore = calls[4]["start"] - 0.001, calls[8]["start"] - 0.001   # calls 5..8 started in the fault
    with open(os.path.join(run_dir, "events.tsv"), "w") as f:
        f.write(f"{fault}\treplace\tprimary\n{restore}\trestore\tprimary\n")
    report.cmd_drill(run_dir, "primary-blackhole", "0")
    res = json.load(open(os.path.join(run_dir, "result.json")))
    assert res["invites_at_failed_target_after_fault"] == 4
    assert res["calls_reaching_failed_target"] == 4
    assert res["fault_targets"] == ["primary"]
    assert res["traffic_back_after_restore_s"] == pytest.approx(0.001, abs=1e-6)
    assert res["calls_delayed"] == 0 and res["verdict"] == "PASS"


def test_throughput_step(run_dir):
    d = os.path.join(run_dir, "caller")
    with open(os.path.join(d, "cpu.env"), "w") as f:
        f.write("t0=0\nt1=1\nclk_tck=100\nexit_code=0\nproxy_ticks=50\nproxy_running=1\ncaller_ticks=10\n"
                "caller_found=1\nproxy_pss_kb=1000\nap_ticks=5\n"
                "proxy_runq_ns=300000000\ncaller_runq_ns=0\nap_runq_ns=1500000000\n")
    report.cmd_step(d, "10", "0.1", "1")
    s = json.load(open(os.path.join(d, "step.json")))
    assert s["calls_failed"] == 0 and s["cpu_proxy_pct"] == pytest.approx(50.0)
    assert s["runq_proxy_pct"] == pytest.approx(30.0) and s["runq_answering_points_pct"] == pytest.approx(150.0)
    assert s["runq_caller_pct"] == 0.0
    assert s["ok"] is True, s["verdict"]


def test_run_queue_wait_is_read_per_thread_and_grows_while_a_thread_waits_for_a_cpu():
    """Two busy processes pinned to one CPU: each waits on the run queue while the other runs."""
    import subprocess
    import sys
    import time
    from sostest import lab
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity on this platform")
    cpu = sorted(os.sched_getaffinity(0))[0]
    burn = [subprocess.Popen([sys.executable, "-c", "import os, time\n"
                              f"os.sched_setaffinity(0, {{{cpu}}})\n"
                              "end = time.time() + 30\nwhile time.time() < end: pass"]) for _ in range(2)]
    try:
        before = lab.runq_wait_ns([burn[0].pid])
        lab.procs.wait_until(lambda: lab.runq_wait_ns([burn[0].pid]) - before > 50_000_000, 20)
        assert lab.runq_wait_ns([burn[0].pid]) - before > 50_000_000
    finally:
        for b in burn:
            b.kill()
            b.wait()
    assert lab.runq_wait_ns([burn[0].pid]) == 0, "a gone process counts nothing"


def test_lateness_quantiles_from_cumulative_buckets():
    b = {"0.001": 90, "0.0025": 98, "0.005": 99, "0.01": 99, "0.25": 100, "+Inf": 100}
    p50, p99, mx = report.bucket_quantiles(b)
    assert (p50, p99, mx) == (1.0, 5.0, 250.0)
    assert report.bucket_quantiles({}) == (None, None, None)
    assert report.bucket_quantiles({"0.001": 0, "+Inf": 1})[2] == float("inf")


def test_a_step_fails_on_setup_p99_when_asked(tmp_path):
    d = tmp_path / "step"
    d.mkdir()
    # 100 answered calls, one every 10 ms, setup 1 ms but the last two 30 ms: p99 = 30 ms.
    (d / "caller_rtt.csv").write_text("".join(f"{i * 10 + 100};{30 if i >= 98 else 1};setup\n" for i in range(100)))
    (d / "stat.csv").write_text("OutgoingCall(C);SuccessfulCall(C);FailedCall(C);Retransmissions(C)\n100;100;0;0\n")
    (d / "info").write_text("calls=100\n")
    (d / "stall.json").write_text(json.dumps({"runtime_lateness_buckets": {"0.001": 5, "+Inf": 5},
                                              "udp": {"RcvbufErrors": 7},
                                              "socket_drops": {"17060": 3, "17071": 4},
                                              "cpu_jiffies": {"user": 300, "idle": 500, "steal": 200}}))
    report.cmd_step(str(d), 100, "0.1", "1", "0")
    s = json.loads((d / "step.json").read_text())
    assert (s["ok"], s["setup_ms_p99"], s["lateness_ms_p50"], s["udp_rcvbuf_errors"]) == (True, 30.0, 1.0, 7)
    assert s["steal_pct"] == pytest.approx(20.0)
    assert s["proxy_socket_drops"] == 3, "the first port sampled is the proxy's"
    report.cmd_step(str(d), 100, "0.1", "1", "20")
    s = json.loads((d / "step.json").read_text())
    assert not s["ok"] and "setup p99 30 ms > 20 ms" in s["verdict"]


def test_host_steal_is_read_from_proc_stat_and_given_as_a_share_of_all_cpu_time():
    from sostest import lab
    a = lab.cpu_jiffies()
    assert set(a) == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert report.steal_pct(lab.jiffies_delta({k: v - 10 for k, v in a.items()}, a)) == pytest.approx(12.5)
    assert report.steal_pct({}) is None and report.steal_pct({"idle": 0, "steal": 0}) is None
