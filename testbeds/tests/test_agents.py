"""The fake PSAP and the statewide caller against each other on loopback (real sockets, ephemeral ports).
Assertions are on outcomes (who answered, status, media), never on timings."""
import asyncio
import json
import socket

import pytest

from sostest import caller, fakepsap, sip


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def with_psap(mode, body, tmp_path):
    sip_port, rtp_port, ctl = free_ports(3)
    p = fakepsap.Psap("psap-t", sip_port, rtp_port, role="primary", mode=mode)
    log = fakepsap.Logger(str(tmp_path / "psap.jsonl"), str(tmp_path / "ap.log"))
    stop = asyncio.Event()
    task = asyncio.ensure_future(fakepsap.serve([p], "127.0.0.1", ("127.0.0.1", ctl), log, 60, stop))
    await asyncio.sleep(0.05)   # let it bind (the endpoints are created before serve() first awaits the stop)
    try:
        return await body(sip_port, ctl)
    finally:
        stop.set()
        await task


def calls_to(port, n=1, hold=0.3, timeout=1.5):
    st = caller.Settings(("127.0.0.1", port), hold_s=hold, no_echo_s=0.25, call_timeout_s=timeout)
    return caller.run_calls(st, [{"region": "r01", "prefix": "+155501"}], 50, n, "")


def events(tmp_path):
    return [json.loads(x) for x in (tmp_path / "psap.jsonl").read_text().splitlines()]


def run(mode, tmp_path, **kw):
    return asyncio.run(with_psap(mode, lambda port, ctl: calls_to(port, **kw), tmp_path))


def test_healthy_answers_with_media(tmp_path):
    recs = run("healthy", tmp_path, n=3)
    assert [r.status for r in recs] == ["answered"] * 3
    assert all(r.answered_by == "psap-t" and r.media_ok and r.bye_status == 200 for r in recs)
    ev = events(tmp_path)
    assert sum(1 for e in ev if e["ev"] == "invite" and e["new"]) == 3
    assert sum(1 for e in ev if e["ev"] == "ack") == 3
    assert (tmp_path / "ap.log").read_text().count("INVITE ") == 3   # SIPp-style lines for the lab drills


def test_dead_media_answers_without_echo(tmp_path):
    (r,) = run("dead-media", tmp_path)
    assert r.status == "answered" and r.media_ok is False and r.hangup == "no-echo" and r.echoes == 0


def test_503(tmp_path):
    (r,) = run("503", tmp_path)
    assert r.status == "503" and r.answered_by == "psap-t"
    assert any(e["ev"] == "ack" for e in events(tmp_path))


def test_trying_then_cancel_487(tmp_path):
    (r,) = run("trying", tmp_path, timeout=0.5)
    assert r.status == "timeout" and r.first_provisional_ms is not None
    assert any(e["ev"] == "final" and e["code"] == 487 for e in events(tmp_path))


@pytest.mark.parametrize("mode", ["blackhole", "silent"])
def test_swallowed(mode, tmp_path):
    (r,) = run(mode, tmp_path, timeout=0.6)
    assert r.status == "timeout" and r.first_provisional_ms is None
    assert any(e["ev"] == "invite" and e["mode"] == mode for e in events(tmp_path))


def options(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    s.bind(("127.0.0.1", 0))
    me = s.getsockname()
    s.sendto(sip.build("OPTIONS sip:127.0.0.1 SIP/2.0", [("Via", f"SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bKo"),
                                                         ("From", "<sip:probe@x>;tag=p"), ("To", "<sip:x>"),
                                                         ("Call-ID", "o1"), ("CSeq", "1 OPTIONS")]), ("127.0.0.1", port))
    try:
        return sip.parse(s.recv(4096)).status
    except socket.timeout:
        return None
    finally:
        s.close()


def test_options_answered_in_every_mode_but_silent_and_modes_switch_live(tmp_path):
    async def body(port, ctl):
        loop = asyncio.get_running_loop()
        seen = {}
        for mode in fakepsap.MODES:
            reply = await loop.run_in_executor(None, fakepsap.control, ("127.0.0.1", ctl), {"role:primary": mode})
            assert reply["modes"] == {"psap-t": mode}
            seen[mode] = await loop.run_in_executor(None, options, port)
        bad = await loop.run_in_executor(None, fakepsap.control, ("127.0.0.1", ctl), {"*": "nonsense"})
        assert bad["ok"] is False
        return seen
    seen = asyncio.run(with_psap("healthy", body, tmp_path))
    assert seen == {m: (None if m == "silent" else 200) for m in fakepsap.MODES}
