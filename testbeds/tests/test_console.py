"""The operator console (GET / of the admin endpoint) in a real browser: Debian's Chromium driven by
Playwright for Python, no browser download.

The module starts its own sosrouter (the debug or release binary, whichever is newer; SOSROUTER=path
overrides) on loopback with a rules file of its own, and three fake answering points
(sostest.fakepsap, one process each so one can be killed), every process in its own process group,
stopped by PID at the end. Waits are condition waits with a timeout (Playwright's expect), never a sleep
before an assert.

Skipped when Playwright or /usr/bin/chromium is missing, unless SOSTEST_REQUIRE_BROWSER=1 (`testbeds/run test` sets it, and installs both).
CONSOLE_SCREENSHOT=path.png also saves a 1366x768 screenshot of the console (docs/console.png).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import tempfile
import time

import pytest

from sostest import procs

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # testbeds/
ROOT = os.path.dirname(HERE)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TOKEN = "console-test-token-7f3a"
REQUIRED = os.environ.get("SOSTEST_REQUIRE_BROWSER") == "1"


def _missing(why: str):
    if REQUIRED:
        pytest.fail(f"browser test required (SOSTEST_REQUIRE_BROWSER=1) but {why}")
    pytest.skip(why)


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


def sosrouter_binary() -> str | None:
    if os.environ.get("SOSROUTER"):
        return os.environ["SOSROUTER"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    found = [p for p in (os.path.join(target, k, "sosrouter") for k in ("debug", "release")) if os.access(p, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RULES = """
listen = ["udp:127.0.0.1:{sip}"]

[defaults]
attempt_timeout_ms = 500
call_deadline_ms = 4000

[health]
probe_interval_ms = 200
probe_timeout_ms = 150
probe_jitter_percent = 0
down_after_probe_failures = 2
up_after_probe_successes = 1

[test_calls]
enabled = false

[emergency]
numbers = ["911", "933"]

[[targets]]
id = "psap-a"
description = "primary answering point"
uri = "sip:127.0.0.1:{a}"
failure_domain = "site-a"

[[targets]]
id = "psap-b"
description = "backup answering point"
uri = "sip:127.0.0.1:{b}"
failure_domain = "site-b"

[[targets]]
id = "business-line"
description = "dispatch business line"
uri = "sip:127.0.0.1:{c}"
failure_domain = "site-c"

[[routes]]
id = "emergency-urn"
description = "calls by service URN"
chain = ["psap-a", "psap-b", "business-line"]
service_urns = ["urn:service:sos"]

[[routes]]
id = "line-test"
description = "933 line test: the primary only"
chain = ["psap-a"]
dialled = ["933"]

[default_route]
description = "every other call"
chain = ["psap-a", "psap-b", "business-line"]
"""


class Lab:
    def __init__(self, binary: str):
        self.dir = tempfile.mkdtemp(prefix="sostest-console-")
        self.g = procs.Group()
        self.ports = {"sip": free_port(), "a": free_port(), "b": free_port(), "c": free_port()}
        self.rules = os.path.join(self.dir, "rules.toml")
        with open(self.rules, "w") as f:
            f.write(RULES.format(**self.ports))
        self.psaps = {}
        for name, key in (("psap-a", "a"), ("psap-b", "b"), ("business-line", "c")):
            port = self.ports[key]
            argv = [sys.executable, "-m", "sostest.fakepsap", "--ip", "127.0.0.1",
                    "--psap", f"{name}:{port}:{free_port()}:healthy", "--seconds", "300"]
            self.psaps[name] = self.g.start(name, argv, os.path.join(self.dir, f"{name}.log"), 310,
                                            env=dict(os.environ, PYTHONPATH=HERE))
        self.log = os.path.join(self.dir, "sosrouter.log")
        self.undelivered = os.path.join(self.dir, "undelivered.jsonl")
        argv = [binary, "run", "--rules", self.rules, "--admin", "127.0.0.1:0", "--undelivered", self.undelivered,
                "--log-format", "json", "--no-watch"]
        self.proxy = self.g.start("sosrouter", argv, self.log, 300,
                                  env=dict(os.environ, SOSROUTER_ADMIN_TOKEN=TOKEN, RUST_LOG="info"))
        self.admin = None
        if not procs.wait_until(self._admin_addr, 20) or not self.proxy.alive():
            self.close()
            raise RuntimeError(f"sosrouter did not start; see {self.log}")
        self.url = f"http://{self.admin}/"

    def _admin_addr(self) -> bool:
        try:
            with open(self.log) as f:
                for line in f:
                    if "admin endpoint listening" in line:
                        m = re.search(r'"addr":"([0-9.:]+)"', line)
                        if m:
                            self.admin = m.group(1)
                            return True
        except OSError:
            pass
        return False

    def kill_psap(self, name: str):
        """kill -9 of the answering point's whole process group (timeout(1) and the fake PSAP)."""
        p = self.psaps[name]
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.popen.wait(5)

    def stop_proxy(self):
        self.g.stop(self.proxy)

    def invite(self, number: str, caller: str):
        """One INVITE to sip:NUMBER@proxy from a socket of its own, with callback data; not answered."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            cid = f"console-{time.time_ns()}"
            msg = (f"INVITE sip:{number}@127.0.0.1:{self.ports['sip']} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{time.time_ns()}\r\n"
                   f"Max-Forwards: 70\r\n"
                   f"From: <sip:{caller}@127.0.0.1>;tag=c1\r\n"
                   f"To: <sip:{number}@127.0.0.1>\r\n"
                   f"Call-ID: {cid}\r\nCSeq: 1 INVITE\r\n"
                   f"Contact: <sip:{caller}@127.0.0.1:{port}>\r\n"
                   f"P-Asserted-Identity: <tel:{caller}>\r\n"
                   f"Geolocation: <cid:loc-{caller}@example.invalid>\r\n"
                   f"Content-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), ("127.0.0.1", self.ports["sip"]))
        return cid

    def close(self):
        self.g.stop_all()


def browser_test_binary() -> str:
    """The sosrouter binary for a browser test, once Playwright and Chromium are there (else skip,
    or fail under SOSTEST_REQUIRE_BROWSER=1)."""
    if sync_playwright is None:
        _missing("Playwright for Python is not installed (pip install --break-system-packages playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    binary = sosrouter_binary()
    if not binary:
        _missing("no sosrouter binary (cargo build)")
    return binary


@pytest.fixture(scope="module")
def lab():
    lab = Lab(browser_test_binary())
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(lab, browser):
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    pg = ctx.new_page()
    pg.problems = []
    pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(str(e)))
    pg.goto(lab.url)
    yield pg
    ctx.close()


def row(page, target):
    return page.locator(f'tr[data-target-id="{target}"]')


def confirm(page):
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    page.locator("#confirm-ok").click()
    expect(dialog).to_be_hidden()


def test_console_loads(lab, page):
    expect(page).to_have_title("sosrouter console")
    # With a token set, reads need it too (the default): the page loads (its files are public) but
    # shows no data and says why, until the operator types the token.
    expect(page.locator("#message")).to_contain_text("needs the admin token", timeout=10000)
    expect(row(page, "psap-a")).to_have_count(0)
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    for t in ("psap-a", "psap-b", "business-line"):
        expect(row(page, t)).to_have_attribute("data-state", "up", timeout=10000)
        expect(row(page, t)).to_have_attribute("data-enabled", "true")
    expect(page.locator("#conn")).to_have_text("live", timeout=5000)
    expect(page.locator("#rules-version")).to_have_text("1")
    expect(page.locator("#rules-hash")).not_to_have_text("–")
    expect(page.locator('[data-route-id="line-test"] [data-chain-target]')).to_have_count(1)
    expect(page.locator('[data-route-id="emergency-urn"] [data-chain-target]')).to_have_count(3)
    expect(page.locator("#stale")).to_be_hidden()
    expect(page.locator("#cluster")).to_be_hidden()   # one node, no etcd: no cluster section
    # Served under the policy, and nothing broke it (an inline script or style would be reported).
    r = page.request.get(lab.url)
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    # The 401s of the reads before the token was typed are the point above; nothing else.
    assert [p for p in page.problems if "401 (Unauthorized)" not in p] == []


def test_whatif_answers_with_the_chain(page):
    page.fill("#wi-caller", "+15085550123")
    page.fill("#wi-target", "911")
    page.press("#wi-target", "Enter")   # by keyboard
    steps = page.locator("#whatif-answer [data-target-step]")
    expect(steps).to_have_count(3)
    expect(steps.nth(0)).to_have_attribute("data-target-step", "psap-a")
    expect(steps.nth(2)).to_contain_text("last resort")
    expect(page.locator("#whatif-answer")).to_contain_text("Route default")
    page.fill("#wi-target", "urn:service:sos")
    page.click("#wi-go")
    expect(page.locator("#whatif-answer")).to_contain_text("Route emergency-urn")


def test_disable_enable_needs_the_token(page):
    page.evaluate("sessionStorage.clear()")
    r = row(page, "psap-b")
    r.locator("button.switch").click()
    confirm(page)
    msg = page.locator("#message")
    expect(msg).to_contain_text("Refused (401)")
    expect(msg).to_have_attribute("data-kind", "error")
    expect(r).to_have_attribute("data-enabled", "true")

    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    expect(page.locator("#token-state")).to_have_text("a token is set for this tab")
    r.locator("button.switch").click()
    confirm(page)
    expect(r).to_have_attribute("data-enabled", "false")
    expect(r).to_have_attribute("data-state", "disabled")
    expect(page.locator('[data-route-id="emergency-urn"] [data-chain-target="psap-b"]')).to_have_attribute(
        "data-state", "disabled")

    r.locator("button.switch").click()
    confirm(page)
    expect(r).to_have_attribute("data-enabled", "true")
    expect(r).to_have_attribute("data-state", "up")


def test_cancel_keeps_the_target(page):
    r = row(page, "psap-b")
    r.locator("button.switch").focus()
    page.keyboard.press("Enter")
    expect(page.locator("dialog#confirm")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog#confirm")).to_be_hidden()
    expect(r).to_have_attribute("data-enabled", "true")


def test_killed_psap_turns_down_without_a_reload(lab, page):
    page.evaluate("window.__sameDocument = 'yes'")
    lab.kill_psap("psap-a")
    expect(row(page, "psap-a")).to_have_attribute("data-state", "down", timeout=3000)
    assert page.evaluate("window.__sameDocument") == "yes"   # no reload happened
    expect(page.locator("#event-list")).to_contain_text("psap-a")
    # A call that only the dead primary may take is undelivered: it shows with its callback data.
    lab.invite("933", "+15085550199")
    und = page.locator("#undelivered-rows tr[data-call-id]")
    expect(und.first).to_contain_text("+15085550199", timeout=15000)
    expect(und.first).to_contain_text("line-test")
    shot = os.environ.get("CONSOLE_SCREENSHOT")
    if shot:
        page.fill("#wi-caller", "+15085550123")
        page.fill("#wi-target", "911")
        page.click("#wi-go")
        expect(page.locator("#whatif-answer [data-target-step]")).to_have_count(3)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=shot)


def test_phone_width_has_no_horizontal_scroll(lab, browser):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    pg = ctx.new_page()
    pg.add_init_script(f"sessionStorage.setItem('sosrouter-admin-token', {json.dumps(TOKEN)})")
    pg.goto(lab.url)
    expect(pg.locator('tr[data-target-id="psap-b"]')).to_have_attribute("data-state", "up")
    assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    ctx.close()


def test_stale_when_the_proxy_goes_away(lab, page):
    expect(page.locator("#stale")).to_be_hidden()
    lab.stop_proxy()
    expect(page.locator("#stale")).to_be_visible(timeout=10000)
    expect(page.locator("#stale")).to_contain_text("STALE")
    expect(page.locator("#conn")).to_have_text("STALE")
