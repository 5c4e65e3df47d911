"""Statewide metrics on a small recorded-like drill (2 regions) written by the test."""
import json
import os

import pytest

from sostest import statewide, topology

F = 1000.0   # fault at 1000, restore at 1030


def call(i, start, status="answered", setup=20.0, by="psap-r01-a", media=True, region="r01"):
    return {"index": i, "call_id": f"c{i}", "region": region, "caller": "+155501", "uri": "urn:service:sos",
            "start": start, "status": status, "final_code": 200 if status == "answered" else 0,
            "setup_ms": setup if status == "answered" else None, "first_provisional_ms": 1.0,
            "answered_by": by if status == "answered" else "", "media_ok": media if status == "answered" else None,
            "echoes": 5, "hangup": "hold", "bye_status": 200, "end": start + 8}


def health(t, target, new):
    data = json.dumps({"kind": "health", "target": target, "old": "up", "new": new})
    return {"t": t, "event": "", "data": data, "systemic": False}


@pytest.fixture
def drill_dir(tmp_path):
    out = str(tmp_path)
    topo = topology.write(out, 2)
    calls = [call(0, F - 5), call(1, F + 1, setup=2100, by="psap-r01-b"), call(2, F + 3, setup=1100, by="pstn-gateway"),
             call(3, F + 8, setup=30, by="psap-r02-b", region="r02"), call(4, F + 12, status="timeout"),
             call(5, F + 20, by="psap-r01-b", media=False),
             call(6, F + 31, by="psap-r01-a"), call(7, F + 32, by="psap-r02-a", region="r02")]
    psaps = [{"t": F + 1, "psap": "psap-r01-a", "role": "primary", "ev": "invite", "mode": "blackhole", "new": True},
             {"t": F + 6, "psap": "psap-r01-a", "role": "primary", "ev": "invite", "mode": "blackhole", "new": True},
             {"t": F + 6.1, "psap": "psap-r01-a", "role": "primary", "ev": "invite", "mode": "blackhole", "new": False},
             {"t": F + 7, "psap": "psap-r01-b", "role": "backup", "ev": "invite", "mode": "healthy", "new": True},
             {"t": F + 7, "psap": "pstn-gateway", "role": "gateway", "ev": "invite", "mode": "healthy", "new": True},
             {"t": F + 11, "psap": "psap-r01-b", "role": "backup", "ev": "answer", "mode": "dead-media"},
             {"t": F + 35, "psap": "psap-r01-a", "role": "primary", "ev": "invite", "mode": "healthy", "new": True}]
    marks = [{"t": F, "ev": "fault"}, {"t": F + 30, "ev": "restore"}]
    sse = [{"t": F - 3, "event": "", "data": '{"kind":"down"}', "systemic": False},
           {"t": F + 2.5, "event": "", "data": '{"kind":"systemic"}', "systemic": True},
           health(F + 4, "psap-r01-a", "down"), health(F + 4.5, "psap-r02-a", "suspect"),
           health(F + 20, "psap-r01-b", "down"), health(F + 30.5, "psap-r02-a", "up"),
           health(F + 30.8, "psap-r01-a", "recovering"), health(F + 31.2, "psap-r01-a", "up")]
    for name, rows in (("calls.jsonl", calls), ("psaps.jsonl", psaps), ("drill.jsonl", marks), ("sse.jsonl", sse)):
        with open(os.path.join(out, name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return out, topo


def test_figures(drill_dir):
    out, topo = drill_dir
    r = statewide.analyse(out, "statewide-blackhole", "sosrouter", topo, 5, 8)
    assert r.calls_made == 8 and r.calls_failed == 1 and r.failure_reasons == {"timeout": 1}
    assert r.fault_at_s == pytest.approx(5) and r.fault_s == pytest.approx(30)
    assert r.calls_in_fault == 5 and r.failed_in_fault == 1
    assert r.delayed_in_fault == 2 and r.last_delayed_start_s == pytest.approx(3)
    assert r.invites_to_broken_total == 2 and r.invites_to_broken_after_5s == 1
    assert r.invite_packets_to_broken_after_5s == 2
    assert r.dead_media_answers_after_10s == 1 and r.calls_media_dead == 1
    assert r.systemic_event_s == pytest.approx(2.5)
    assert r.traffic_back_s == pytest.approx(1) and r.traffic_back_all_regions_s == pytest.approx(2)
    # r01-a was down at the restore and up 1.2 s after; r02-a was suspect (ready); backups don't count.
    assert r.primaries_ready_s == pytest.approx(1.2)
    assert r.answered_by_role == {"primary": 3, "backup": 3, "business line": 1}
    assert r.answered_by_role_in_fault == {"backup": 3, "business line": 1}


def test_primaries_ready_is_none_when_one_never_came_back():
    roles = {"a": "primary", "b": "primary"}
    sse = [health(1, "a", "down"), health(2, "b", "down"), health(11, "a", "up")]
    assert statewide.primaries_ready(sse, roles, 10) is None
    assert statewide.primaries_ready(sse + [health(12.5, "b", "suspect")], roles, 10) == pytest.approx(2.5)
    assert statewide.primaries_ready([health(1, "a", "up")], roles, 10) == 0.0


def test_kamailio_has_no_systemic_figure(drill_dir):
    out, topo = drill_dir
    r = statewide.analyse(out, "statewide-blackhole", "kamailio", topo, 5, 8)
    assert r.systemic_event_s is None and r.sse_events is None
    assert "n/a" in statewide.summary(r)


@pytest.mark.parametrize("name,data,want", [
    ("systemic", "{}", True), ("", '{"kind":"systemic","domain":"x"}', True), ("", '{"type":"systemic"}', True),
    ("", '{"kind":"down"}', False), ("", "not json", False), ("", "[1]", False)])
def test_systemic_matcher(name, data, want):
    assert statewide.is_systemic(name, data) is want


def test_tables(drill_dir):
    out, topo = drill_dir
    a = statewide.asdict(statewide.analyse(out, "statewide-blackhole", "sosrouter", topo, 5, 8))
    b = dict(a, peer="kamailio", systemic_event_s=None)
    t = statewide.results_table([a, b])
    assert "statewide-blackhole" in t and "2/5" in t
    s = statewide.side_by_side([a, b])
    assert s.splitlines()[2].split()[0] == "statewide-blackhole"


def test_plot(drill_dir):
    pytest.importorskip("matplotlib")
    out, topo = drill_dir
    r = statewide.analyse(out, "statewide-blackhole", "sosrouter", topo, 5, 8)
    p = statewide.plot(out, r, topo)
    assert p and open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_rereport(drill_dir):
    out, topo = drill_dir
    r = statewide.analyse(out, "statewide-blackhole", "sosrouter", topo, 5, 8)
    statewide.emit(out, r, statewide.summary(r))
    again = statewide.rereport(out)
    assert statewide.asdict(again) == statewide.asdict(r)


def test_settings_read_the_environment_when_made(monkeypatch):
    monkeypatch.setenv("RATE", "7")
    monkeypatch.setenv("CALLING_S", "10")
    monkeypatch.delenv("CALLS", raising=False)
    st = statewide.Settings()
    assert st.rate == 7 and st.calls == 70
    monkeypatch.setenv("CALLS", "99999")
    assert st.calls == 20000   # bounded
