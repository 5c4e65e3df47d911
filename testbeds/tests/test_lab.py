"""sostest.lab and the command line, without starting SIPp: configuration, injection file, helpers."""
import os
import subprocess
import sys

import pytest

from sostest import __main__ as cli
from sostest import lab, procs


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ("PROXY", "DIRECT", "RATE", "CALLS", "HOLD_MS", "PEER", "START_PROXY", "BUILD", "URIS", "AP_TRANSPORT",
              "DIRECT_FAULTS", "OUT_DIR"):
        monkeypatch.delenv(k, raising=False)


def test_proxy_parsing():
    c = lab.Config()
    assert (c.transport, c.proxy_host, c.proxy_port, c.target, c.sipp_t, c.ap_t) == \
        ("udp", "127.0.0.1", 5060, "127.0.0.1:5060", "u1", "u1")
    c = lab.Config(proxy="tcp:10.0.0.1:5080")
    assert (c.transport, c.target, c.sipp_t, c.ap_t) == ("tcp", "10.0.0.1:5080", "t1", "u1")
    c = lab.Config(proxy="tcp:127.0.0.1:5060", direct=True)
    assert (c.target, c.ap_t) == ("127.0.0.1:5071", "t1")
    with pytest.raises(lab.Fail):
        lab.Config(proxy="udp:nowhere")


def test_options_go_to_the_environment(monkeypatch):
    rest = cli.parse_options(["--rate", "7", "drill", "--no-build", "primary-hung", "--peer", "kamailio", "--direct"])
    assert rest == ["drill", "primary-hung"]
    assert (os.environ["RATE"], os.environ["BUILD"], os.environ["PEER"], os.environ["DIRECT"]) == ("7", "0", "kamailio", "1")
    with pytest.raises(lab.Fail):
        cli.parse_options(["--proxy"])


def test_calls_csv(tmp_path):
    r = object.__new__(lab.Run)
    r.cfg = lab.Config()
    p = tmp_path / "calls.csv"
    r.make_calls_csv(str(p), 4)
    assert p.read_text().splitlines() == ["SEQUENTIAL", "sip:911@127.0.0.1:5060;16175550001;",
                                          "urn:service:sos;16175550002;", "sip:911@127.0.0.1:5060;16175550003;",
                                          "urn:service:sos;16175550004;"]
    r.cfg = lab.Config(uris="urn")
    r.make_calls_csv(str(p), 25000)
    lines = p.read_text().splitlines()
    assert len(lines) == 20001 and set(lines[1:]) <= {f"urn:service:sos;1617555{i:04d};" for i in range(10000)}


def test_victim():
    r = object.__new__(lab.Run)
    r.cfg = lab.Config()
    assert (r.victim("primary"), r.victim("backup")) == ("primary", "backup")
    r.cfg = lab.Config(direct=True)
    assert (r.victim("primary"), r.victim("backup")) == ("backup", "gateway")
    r.cfg = lab.Config(direct=True, direct_faults="primary")
    assert r.victim("primary") == "primary"


def test_swap_chain(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('a = ["psap-primary", "psap-backup", "x"]\nb = ["psap-backup", "psap-primary"]\n')
    lab.swap_chain(str(p))
    assert p.read_text() == 'a = ["psap-backup", "psap-primary", "x"]\nb = ["psap-primary", "psap-backup"]\n'


def test_times_line():
    assert lab.times_line(61.5) == "1m1.500s"


def test_group_stops_by_process_group(tmp_path):
    """A process and its child, in their own group, are both gone after stop() (waits on the condition)."""
    g = procs.Group()
    p = g.start("sleeper", ["sh", "-c", "sleep 30 & sleep 30; wait"], str(tmp_path / "log"), 60)
    assert procs.wait_until(lambda: len(lab.descendants(p.pid)) >= 3, 5)
    kids = lab.descendants(p.pid)
    assert os.getpgid(p.pid) == p.pid and all(os.getpgid(k) == p.pid for k in kids)
    g.stop_all()
    assert not p.alive()
    assert procs.wait_until(lambda: not any(os.path.exists(f"/proc/{k}") and open(f"/proc/{k}/stat").read().split()[2] != "Z"
                                            for k in kids), 5)


def test_cli_help_and_unknown():
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-m", "sostest", "help"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0
    for name in ("smoke", "throughput", "drill NAME", "all", "compare", "profile", "acceptance", "accept-one",
                 "test", "soak", "statewide-compare", "primary-blackhole", "statewide-dead-media"):
        assert name in out.stdout
    bad = subprocess.run([sys.executable, "-m", "sostest", "nonsense"], capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 1 and "unknown command" in bad.stderr


def test_moved_ports_rewrite_the_rules_and_dispatcher_list(monkeypatch):
    monkeypatch.setattr(lab, "AP_PORTS", {"primary": 16071, "backup": 16072, "gateway": 16073})
    rules = 'listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]\nuri = "sip:127.0.0.1:5072"\n'
    assert lab.moved_ports(rules, 16060, "127.0.0.1") == \
        'listen = ["udp:127.0.0.1:16060", "tcp:127.0.0.1:16060"]\nuri = "sip:127.0.0.1:16072"\n'
    assert lab.moved_ports("1 sip:127.0.0.1:5073 0 10\n", 16060, "127.0.0.1") == "1 sip:127.0.0.1:16073 0 10\n"
    assert lab.rtp_port(5071) == 30568 and lab.rtp_port(16071) == 40568
