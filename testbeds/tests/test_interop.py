"""The interop and TLS-load drills' parsing and verdicts, on recorded output (testbeds/tests/fixtures/interop:
a baresip ctrl_tcp stream and log, SIPp caller and PSAP logs from `testbeds/run interop`)."""
import os

from conftest import FIXTURES
from sostest import interop, tlsload

D = os.path.join(FIXTURES, "interop")


def read(name, mode="r"):
    with open(os.path.join(D, name), mode) as f:
        return f.read()


def test_netstrings_recorded_ctrl_tcp_stream():
    objs, rest = interop.parse_netstrings(read("baresip-ctrl-tcp.bin", "rb"))
    assert rest == b""
    types = [o.get("type") for o in objs if o.get("event")]
    assert "CALL_ESTABLISHED" in types and types[-1] == "CALL_CLOSED"
    assert types.index("CALL_RINGING") < types.index("CALL_ESTABLISHED") < types.index("CALL_CLOSED")
    assert {o["token"] for o in objs if o.get("response")} == {"dial", "hangup"}


def test_netstrings_split_anywhere_keeps_the_tail():
    raw = read("baresip-ctrl-tcp.bin", "rb")
    whole, _ = interop.parse_netstrings(raw)
    for cut in (1, 5, 100, len(raw) // 2, len(raw) - 1):
        a, rest = interop.parse_netstrings(raw[:cut])
        b, rest2 = interop.parse_netstrings(rest + raw[cut:])
        assert a + b == whole and rest2 == b""


def test_netstrings_garbage_is_left_unparsed():
    objs, rest = interop.parse_netstrings(b"hello")
    assert objs == [] and rest == b"hello"
    objs, rest = interop.parse_netstrings(b'4:null,3:{x},')       # a bad JSON frame is skipped
    assert objs == [None] and rest == b""


def test_baresip_audio_stats_from_recorded_log():
    assert interop.parse_baresip_audio(read("baresip-psap.log")) == [(102, 101)]
    assert interop.parse_baresip_audio("baresip is ready.\n") == []


def test_sipp_caller_log_counts_and_setup_times():
    s = interop.parse_sipp_caller_log(read("sipp-caller.log"))
    assert s["started"] == 20 and s["answered"] == 20 and s["byelost"] == 0
    assert len(s["setup_ms"]) == 20 and all(0 < x < 8000 for x in s["setup_ms"])


def test_psap_byes_only_for_the_callers_calls():
    s = interop.parse_sipp_caller_log(read("sipp-caller.log"))
    byes = interop.ap_call_ids(read("sipp-psap-ap.log"), "BYE")
    # sosrouter's own test calls (Call-ID sostest-...) reached this PSAP too; they are not the caller's.
    assert len(byes & set(s["call_ids"])) == 20
    assert any(c.startswith("sostest-") for c in byes)


def test_row_verdicts_and_table():
    ok = interop.Row("baresip>sosrouter>baresip", "udp", "udp|udp", True, True, True, 12.5, 1)
    sipp = interop.Row("sipp>kamailio>sosrouter>sipp", "tcp", "tcp|tcp|tcp", True, True, None, 9.0, 20)
    bad = interop.Row("baresip>sosrouter>baresip", "tcp", "tcp|tcp", True, True, False, 8.0, 1, detail="no RTP")
    skip = interop.Row("baresip>sosrouter>baresip", "tls", "-", skipped=interop.SKIP_NO_TLS)
    assert ok.ok and sipp.ok and not bad.ok and skip.ok
    t = interop.table([ok, sipp, bad, skip])
    assert "n/a" in t and "FAIL" in t and "no RTP" in t and interop.SKIP_NO_TLS in t


def test_rules_for_a_tls_target_name_it():
    pki = {"sosrouter": {"cert": "/c.pem", "key": "/k.pem"}, "ca": "/ca.pem"}
    s = interop.sos_rules(["tls:127.0.0.1:15061"], "sip:127.0.0.1:15211", "tls", pki, "require")
    assert 'tls_name = "psap.lab"' in s and 'client_auth = "require"' in s and "[tls]" in s
    s = interop.sos_rules(["udp:127.0.0.1:15060"], "sip:127.0.0.1:15171", "udp")
    assert "[tls]" not in s and "tls_name" not in s


def test_tls_load_step_verdict_and_cpu():
    assert tlsload.step_good(1000, 1000, 0, 1000, 0.1)
    assert tlsload.step_good(1000, 999, 1, 1000, 0.1)
    assert not tlsload.step_good(1000, 998, 2, 1000, 0.1)
    assert not tlsload.step_good(900, 900, 0, 1000, 0.1)       # calls never made are failures too
    assert tlsload.cpu_per_1k(0.5, 500) == 1.0 and tlsload.cpu_per_1k(0.5, 0) is None


def test_tls_load_psap_contact_rewritten(tmp_path):
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scenarios", "psap.xml")
    dst = tmp_path / "psap.xml"
    tlsload.wrapped_psap_scenario(src, str(dst), "sip:ap@127.0.0.1:15351;transport=tls")
    s = dst.read_text()
    assert "[local_port];transport=[transport]>" not in s
    assert s.count("Contact: <sip:ap@127.0.0.1:15351;transport=tls>") >= 2     # 180, 200 (and OPTIONS 200)


def test_stunnel_accepted_connections_less_the_probe():
    log = ("2026.12.02 04:14:20 LOG5[0]: Service [caller] accepted connection from 127.0.0.1:43564\n"
           "2026.12.02 04:14:23 LOG5[1]: Service [caller] accepted connection from 127.0.0.1:43679\n"
           "2026.12.02 04:14:23 LOG5[2]: Service [psap] accepted connection from 127.0.0.1:43680\n"
           "2026.12.02 04:14:24 LOG5[2]: Service [psap] accepted connection from 127.0.0.1:43681\n"
           "2026.12.02 04:14:24 LOG5[1]: Service [caller] connected remote server from 127.0.0.1:43682\n"
           "2026.12.02 04:14:25 LOG5[3]: Service [to-psap] accepted connection from 127.0.0.1:43690\n")
    assert tlsload.accepted_connections(log) == {"caller": 1, "psap": 1, "to-psap": 1}   # to-psap: not probed


def test_completion_time_from_recorded_sipp_stats():
    # 2000 calls/s for 5 s through Kamailio's TLS: every call succeeded, but the last only after 15 s.
    queued = tlsload.completion_s(os.path.join(D, "sipp-stat-queued.csv"))
    assert queued == 15.0
    assert not tlsload.step_good(10000, 10000, 0, 10000, 0.1, queued, 5.0)
    # 1000 calls/s: the last call over at 9 s (completions lagged the INVITEs by up to 4 s): not kept up.
    assert tlsload.completion_s(os.path.join(D, "sipp-stat-catching-up.csv")) == 9.0
    assert not tlsload.step_good(5000, 5000, 0, 5000, 0.1, 9.0, 5.0)
    # 600 calls/s: over with the step.
    kept = tlsload.completion_s(os.path.join(D, "sipp-stat-kept-up.csv"))
    assert kept == 5.0 and tlsload.step_good(3000, 3000, 0, 3000, 0.1, kept, 5.0)
    assert tlsload.completion_s(os.path.join(D, "missing.csv")) is None
    assert tlsload.elapsed_s("00:01:02") == 62.0 and tlsload.elapsed_s("00:00:01:500") == 1.5
