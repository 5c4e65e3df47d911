import json
import math
import socket
import subprocess
import threading
import time
import tomllib

import pytest

from sostest import scale


def test_rules_at_size_shape():
    text, lay = scale.rules_toml(50, 7)
    rules = tomllib.loads(text)
    ids = [t["id"] for t in rules["targets"]]
    assert len(ids) == lay.targets == 3 * 50 + 1 and len(set(ids)) == len(ids)
    assert len(rules["routes"]) == 50
    assert all(len(r["caller_prefixes"]) == 7 for r in rules["routes"])
    r = rules["routes"][3]
    assert r["chain"] == ["p3a", "b3a", "t3a"]
    tel = {t["id"]: t for t in rules["targets"]}["t3a"]
    assert tel["gateway"] == "gw"
    uris = [t["uri"] for t in rules["targets"] if "uri" in t]
    assert len(set(uris)) == len(uris) == lay.probe_hosts
    assert len(lay.answering) == len(lay.silent) == 49


def test_only_the_last_route_matches_the_load_caller():
    text, _ = scale.rules_toml(20, 5)
    routes = tomllib.loads(text)["routes"]
    caller = "+16175550042"
    matching = [r["id"] for r in routes if any(caller.startswith(p) for p in r["caller_prefixes"])]
    assert matching == ["r19"]
    every = [p for r in routes for p in r["caller_prefixes"]]
    assert len(set(every)) == len(every)


def test_variant_replaces_some_targets_and_keeps_the_rest():
    a = tomllib.loads(scale.rules_toml(100, 2, 0)[0])
    b = tomllib.loads(scale.rules_toml(100, 2, 1)[0])
    ida = {t["id"] for t in a["targets"]}
    idb = {t["id"] for t in b["targets"]}
    assert len(ida - idb) == len(idb - ida) == 3 * 5
    urib = {t.get("uri") for t in b["targets"] if t["id"] in idb - ida}
    uria = {t.get("uri") for t in a["targets"]}
    assert not (urib - {None}) & uria, "new targets are at new addresses"


def test_addresses_spread_over_loopback():
    assert scale.addr_of(0) == ("127.20.0.1", 0)
    assert scale.addr_of(scale.PORTS_PER_ADDR) == ("127.20.0.2", 0)
    ip, _ = scale.addr_of(scale.PORTS_PER_ADDR * 250 * 250)
    assert ip == "127.21.0.1"


METRICS = """# TYPE sosrouter_probe_lateness_seconds histogram
sosrouter_probe_lateness_seconds_bucket{le="0.001"} 90
sosrouter_probe_lateness_seconds_bucket{le="0.01"} 99
sosrouter_probe_lateness_seconds_bucket{le="0.1"} 100
sosrouter_probe_lateness_seconds_bucket{le="+Inf"} 100
sosrouter_probe_lateness_seconds_sum 0.2
sosrouter_probe_lateness_seconds_count 100
"""


def test_histogram_quantiles_and_deltas():
    h = scale.histogram(METRICS, "sosrouter_probe_lateness_seconds")
    assert h == [(0.001, 90.0), (0.01, 99.0), (0.1, 100.0), (math.inf, 100.0)]
    assert scale.hist_quantile(h, 0.5) == 0.001
    assert scale.hist_quantile(h, 0.99) == 0.01
    zero = [(le, 0.0) for le, _ in h]
    assert scale.hist_quantile(scale.hist_delta(h, h), 0.99) is None
    assert scale.hist_delta(h, zero) == h


def test_reply_copies_the_dialog_headers():
    req = (b"OPTIONS sip:127.20.0.1:17100 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:17060;branch=z9hG4bK-x\r\n"
           b"From: <sip:a@b>;tag=1\r\nTo: <sip:127.20.0.1:17100>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
           b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    rep = scale.sip_reply(req).decode()
    assert rep.startswith("SIP/2.0 200 OK\r\n")
    assert "Via: SIP/2.0/UDP 127.0.0.1:17060;branch=z9hG4bK-x" in rep and "Call-ID: c1" in rep
    assert "To: <sip:127.20.0.1:17100>;tag=scale" in rep and "Max-Forwards" not in rep
    assert scale.sip_reply(b"SIP/2.0 200 OK\r\n\r\n") is None


@pytest.mark.parametrize("kind", ["python", "rust"])
def test_responder_answers_from_the_address_asked_and_counts_by_source_port(kind, tmp_path, monkeypatch):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    ready = str(tmp_path / "ready")
    proc = None
    if kind == "python":
        threading.Thread(target=scale.respond, args=([port], [], 4.0, ready), daemon=True).start()
    else:
        monkeypatch.setenv("SCALE_RESPONDER", "rust")
        argv = scale.responder_command(str(tmp_path)) + [str(port), "1", "0", "0", "4", ready]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind(("127.0.0.1", 0))
        c.settimeout(0.2)
        req = (b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1\r\nFrom: <sip:a>;tag=1\r\n"
               b"To: <sip:x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n")
        got = None
        for _ in range(50):   # until the responder has bound its socket (bounded)
            c.sendto(req, ("127.20.0.9", port))
            try:
                got = c.recvfrom(2000)
                break
            except (TimeoutError, socket.timeout):
                continue
        assert got is not None
        assert got[1] == ("127.20.0.9", port)
        rep = got[0].decode()
        assert rep.startswith("SIP/2.0 200 OK\r\n") and rep.endswith("Content-Length: 0\r\n\r\n")
        assert "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1\r\n" in rep and "Call-ID: c\r\n" in rep
        assert "To: <sip:x>;tag=scale\r\n" in rep and "Max-Forwards" not in rep
        c.sendto(b"SIP/2.0 200 OK\r\n\r\n", ("127.20.0.9", port))   # a response: not answered
        with pytest.raises((TimeoutError, socket.timeout)):
            c.recvfrom(2000)
        me = c.getsockname()[1]
        counts = {}
        for _ in range(40):   # rewritten each second (bounded)
            try:
                counts = json.loads(open(ready + ".counts").read())
            except (OSError, ValueError):
                counts = {}
            if counts.get(str(me)):
                break
            time.sleep(0.1)
        assert counts.get(str(me)) >= 1
    finally:
        if proc:
            proc.kill()
            proc.wait()


def test_kamailio_probes_the_same_hosts_as_sosrouter():
    text, lay = scale.rules_toml(30, 2)
    rules = tomllib.loads(text)
    uris = {t["uri"].removeprefix("sip:") for t in rules["targets"] if "uri" in t}
    lst = [line.split() for line in scale.dispatcher_list(lay).splitlines() if not line.startswith("#")]
    assert all(row[0] == "1" for row in lst)
    hosts = [row[1].removeprefix("sip:") for row in lst]
    assert len(hosts) == len(set(hosts)) == lay.probe_hosts
    assert set(hosts) == uris


def test_rules_without_probing_for_the_call_path_alone():
    assert tomllib.loads(scale.rules_toml(3, 2)[0])["health"]["probe"] is True
    assert tomllib.loads(scale.rules_toml(3, 2, probe=False)[0])["health"]["probe"] is False
