"""sostest.sseload and the stair it shares with `throughput` (lab.Stair), without SIPp or sosrouter: the stair's
rates and knee, the event-stream parser, the figures and the verdict; the clients' process against a stub
event stream on loopback."""
import json
import os
import socket
import subprocess
import sys
import threading

from sostest import lab, sseload


def walk(stair, good_below):
    """Runs a stair whose steps pass below `good_below` calls/s; the rates it ran."""
    ran = []
    while (rate := stair.next_rate()) is not None:
        ran.append(rate)
        stair.record(rate, rate < good_below)
    return ran


def test_stair_climbs_then_bisects():
    s = lab.Stair([500, 1000, 1500, 2000], 3)
    assert walk(s, 1300) == [500, 1000, 1500, 1250, 1370, 1310]
    assert s.knee == 1250


def test_stair_all_good_and_first_bad():
    s = lab.Stair([500, 1000], 3)
    assert walk(s, 10**6) == [500, 1000] and s.knee == 1000
    s = lab.Stair([500, 1000], 2)
    assert walk(s, 0) == [500, 250, 120] and s.knee is None


def test_stair_stops_bisecting_at_10_calls_s():
    s = lab.Stair([100, 110], 5)
    assert walk(s, 105) == [100, 110] and s.knee == 100


def test_stair_retries_a_bad_step_and_a_rate_is_bad_only_when_every_attempt_was():
    s = lab.Stair([500, 1000, 1500], 1, retries=1)
    verdicts = {500: [True], 1000: [False, True], 1500: [False, False], 1250: [False, False]}
    ran = []
    while (rate := s.next_rate()) is not None:
        ran.append((s.label().split(" ")[0], rate))
        s.record(rate, verdicts[rate].pop(0))
    assert ran == [("step", 500), ("step", 1000), ("retry", 1000), ("step", 1500), ("retry", 1500),
                   ("bisection", 1250), ("retry", 1250)]
    assert s.knee == 1000
    s = lab.Stair([500, 1000], 1)
    s.record(500, False)
    assert s.next_rate() == 250, "without retries a bad step is final"


def test_stair_runs_a_step_that_failed_under_steal_again_first_and_counts_one_under_low_steal():
    s = lab.Stair([500, 1000, 1500], 1, retries=1, steal_retries=2, steal_limit=10)
    # (ok, steal %) per attempt of each rate.
    verdicts = {500: [(True, 30)], 1000: [(False, 15), (False, 19), (False, 4), (True, 0)],
                1500: [(False, 2), (False, 1)], 1250: [(False, 40), (True, 3)]}
    ran = []
    while (rate := s.next_rate()) is not None:
        ran.append((" ".join(s.label().split(" ")[:2]), rate))
        s.record(rate, *verdicts[rate].pop(0))
    assert ran == [("step 1", 500), ("step 2", 1000), ("steal retry", 1000), ("steal retry", 1000),
                   ("retry 1", 1000), ("step 3", 1500), ("retry 1", 1500), ("bisection 1", 1250),
                   ("steal retry", 1250)]
    assert s.knee == 1250, "1000 passed on its last attempt, 1500 failed twice at low steal"
    s = lab.Stair([500, 1000], 1, retries=0, steal_retries=1, steal_limit=10)
    s.record(500, False, None)
    assert s.next_rate() == 250, "a step without a steal figure is not run again"
    s = lab.Stair([500, 1000], 1, retries=0, steal_retries=1, steal_limit=10)
    s.record(500, False, 11)
    assert s.label() == "steal retry 1 of 500 (it failed at 11 % host steal)"
    s.record(500, False, 12)
    assert s.next_rate() == 250, "steal retries are bounded"


def test_stair_labels():
    s = lab.Stair([500, 1000], 1)
    assert s.label() == "step 1"
    s.record(500, True)
    s.record(1000, False)
    assert s.label() == "bisection 1 (last good 500, first bad 1000)"


HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n")


def chunk(text: str) -> bytes:
    b = text.encode()
    return f"{len(b):X}\r\n".encode() + b + b"\r\n"


def event(seq: int, unix_ms: int) -> str:
    return f'id: {seq}\ndata: {{"seq":{seq},"unix_ms":{unix_ms},"kind":"operator"}}\n\n'


def test_stream_counts_events_comments_and_losses_fed_byte_by_byte():
    raw = (HEAD + chunk(":sosrouter events\n\n") + chunk(event(7, 1000)) + chunk(":keepalive\n\n")
           + chunk('event: lost\ndata: {"lost": 3, "reason": "x"}\n\n') + chunk(event(11, 1990)) + b"0\r\n\r\n")
    s = sseload.SseStream()
    for i in range(len(raw)):
        s.feed(raw[i:i + 1], now_ms=2000.0)
    assert s.summary() == {"status": 200, "events": 2, "lost": 1, "comments": 2, "body_bytes": len(raw) - len(HEAD),
                           "last_id": "11", "ended": True}
    assert s.lags_ms == [1000.0, 10.0]


def test_stream_two_events_in_one_chunk_and_one_event_over_two_chunks():
    two = event(1, 5) + event(2, 5)
    s = sseload.SseStream()
    s.feed(HEAD + chunk(two) + chunk(event(3, 5)[:9]), now_ms=5)
    assert s.events == 2
    s.feed(chunk(event(3, 5)[9:]), now_ms=5)
    assert (s.events, s.last_id) == (3, "3")


def test_stream_refused_and_not_chunked():
    s = sseload.SseStream()
    s.feed(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    assert s.status == 503 and s.events == 0
    s = sseload.SseStream()
    s.feed(b"HTTP/1.0 200 OK\r\n\r\n" + event(1, 0).encode(), now_ms=1)
    assert (s.status, s.events) == (200, 1)


def test_cost_and_verdict():
    assert sseload.cost_pct(1000, 960) == 4.0
    assert sseload.verdict(1000, 960) == "met: cost 4.0% (goal <= 5%)"
    assert sseload.verdict(1000, 940) == "NOT met: cost 6.0% (goal <= 5%)"
    assert sseload.verdict(1000, 1100) == "met: cost -10.0% (goal <= 5%)"
    assert sseload.cost_pct(None, 900) is None and sseload.cost_pct(1000, None) is None
    assert sseload.verdict(None, 900).startswith("no figure")


def test_client_figures_sum_each_client_over_the_steps():
    steps = [{"clients": [{"status": 200, "events": 10}, {"status": 200, "events": 9, "lost": 1}], "published": 10,
              "lags_ms": [1.0, 2.0]},
             {"clients": [{"status": 200, "events": 5}, {"status": 503, "events": 0}], "published": 5, "lags_ms": [9.0]}]
    f = sseload.client_figures(steps)
    assert (f["clients"], f["events_published"], f["events_per_client_min"], f["events_per_client_max"]) == (2, 15, 9, 15)
    assert f["events_per_client_mean"] == 12.0
    assert (f["connections_not_200"], f["lost_notices"], f["lag_ms_max"]) == (1, 1, 9.0)


def step(arm, n, rate, ok, cpu):
    return {"arm": arm, "n": n, "rate_offered": rate, "ok": ok, "cpu_proxy_pct": cpu, "rate_achieved": rate,
            "fail_pct": 0.0, "verdict": "ok" if ok else "failed"}


def test_summarise_knees_ratio_and_cpu_at_the_highest_rate_both_passed():
    a = [step("A", 1, 500, True, 20), step("A", 4, 1000, True, 40), step("A", 5, 1500, False, 60)]
    b = [step("B", 2, 500, True, 22), step("B", 3, 1000, False, 45), step("B", 6, 750, True, 33)]
    text, res = sseload.summarise(a, b, sseload.client_figures([]), {"sse_clients": 100})
    assert (res["knee_calls_s_without_clients"], res["knee_calls_s_with_clients"]) == (1000, 750)
    assert res["ratio_with_over_without"] == 0.75 and res["verdict"].startswith("NOT met: cost 25.0%")
    assert res["cpu_rate"] == 500
    assert res["proxy_cpu_pct_at_cpu_rate"] == {"without": 20, "with": 22}
    assert res["proxy_cpu_pct_per_1000_calls_s_at_cpu_rate"] == {"without": 40.0, "with": 44.0}
    assert [s["n"] for s in res["steps"]] == [1, 2, 3, 4, 5, 6]
    assert "knee calls/s" in text and "NOT met" in text
    json.dumps(res)


def serve_stub(n_events: int):
    """A loopback stub of GET /events: sends the greeting and n_events, ends the stream and closes. Returns
    (port, the server socket, the Authorization headers it saw)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    seen = []

    def one(c):
        with c:
            head = b""
            while b"\r\n\r\n" not in head:
                d = c.recv(4096)
                if not d:
                    return
                head += d
            seen.append([ln for ln in head.decode().split("\r\n") if ln.lower().startswith("authorization")])
            c.sendall(HEAD + chunk(":sosrouter events\n\n") + b"".join(chunk(event(i, 0)) for i in range(1, n_events + 1))
                      + b"0\r\n\r\n")

    def loop():
        for _ in range(3):
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1], srv, seen


def test_clients_process_connects_reads_and_reports(tmp_path):
    port, srv, seen = serve_stub(4)
    ready, result = tmp_path / "ready", tmp_path / "result.json"
    env = dict(os.environ, SSE_TOKEN="t0k", PYTHONPATH=os.path.dirname(os.path.dirname(sseload.__file__)))
    p = subprocess.Popen([sys.executable, "-m", "sostest.sseload", "clients", f"127.0.0.1:{port}", "3", "20",
                          str(ready), str(result)], env=env)
    try:
        assert lab.procs.wait_until(ready.exists, 15)
        assert ready.read_text().strip() == "3"
        assert p.wait(15) == 0      # every stream ended: the process writes its result and exits
    finally:
        if p.poll() is None:
            p.kill()
        srv.close()
    res = json.loads(result.read_text())
    assert [(c["status"], c["events"], c["comments"], c["ended"]) for c in res["clients"]] == [(200, 4, 1, True)] * 3
    assert len(res["lags_ms"]) == 12
    assert seen == [["Authorization: Bearer t0k"]] * 3


def test_idle_figures_cost_per_delivery():
    f = sseload.idle_figures({"A": [1.0, 3.0], "B": [4.0, 4.0]}, delivered=30000, b_seconds=30)
    assert (f["idle_cpu_pct_without"], f["idle_cpu_pct_with"], f["idle_deliveries_per_s"]) == (2.0, 4.0, 1000)
    assert round(f["idle_cpu_us_per_delivery"], 6) == 20.0
    assert sseload.idle_figures({"A": [], "B": [1.0]}, 10, 1)["idle_cpu_us_per_delivery"] is None
