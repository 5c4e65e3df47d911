"""The operator console of a cluster node (README "Two sites") in a real browser: Debian's Chromium
driven by Playwright for Python, as test_console.py.

The module starts a real etcd (Debian's `etcd`, one member on free loopback ports, a temporary data
dir) and two sosrouter nodes (`run --etcd URL --node-id site-a|site-b`, admin on free loopback ports,
no admin token), every process in its own process group, stopped by PID at the end. Node site-a takes
its SIP socket from the command line; site-b from the rules, so a version that changes `listen` loads
on site-a and not on site-b: the way this test makes the nodes disagree. Waits are Playwright's
condition waits, never a sleep before an assert.

CLUSTER_SCREENSHOT=path.png saves the cluster section while the nodes disagree.
Skipped when Playwright or /usr/bin/chromium is missing unless SOSTEST_REQUIRE_BROWSER=1 (as
test_console.py); etcd missing is a failure, never a skip (.ci/run installs etcd-server).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.request

import pytest

from sostest import procs
from test_console import CHROMIUM, browser_test_binary, sync_playwright

if sync_playwright is not None:
    from playwright.sync_api import expect

RULES = """listen = {listen}

[health]
probe = false

[test_calls]
enabled = false

[[targets]]
id = "psap-a"
uri = "sip:127.0.0.1:{psap}"
failure_domain = "site-a"

[default_route]
chain = ["psap-a"]
"""
UDP_ONLY = '["udp:127.0.0.1:0"]'
UDP_TCP = '["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]'


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001 - not (yet) answering
        return False


class ClusterLab:
    def __init__(self, binary: str):
        self.bin = binary
        self.dir = tempfile.mkdtemp(prefix="sostest-console-cluster-")
        self.g = procs.Group()
        self.pushed = 0
        self.psap = free_port(socket.SOCK_DGRAM)   # nothing answers there: probes are off
        client, peer = free_port(), free_port()
        while peer == client:
            peer = free_port()
        self.etcd = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.g.start("etcd", ["etcd", "--name", "t", "--data-dir", os.path.join(self.dir, "etcd.data"),
                              "--listen-client-urls", self.etcd, "--advertise-client-urls", self.etcd,
                              "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                              "--initial-cluster", f"t={peer_url}", "--initial-cluster-state", "new",
                              "--log-level", "warn"],
                     os.path.join(self.dir, "etcd.log"), 300)
        if not procs.wait_until(lambda: http_ok(f"{self.etcd}/health"), 20):
            self.close()
            raise RuntimeError(f"etcd did not start; see {self.dir}/etcd.log")
        self.hash = {}
        self.push(UDP_ONLY, "first")
        self.admin = {}
        self.start_node("site-a", listen="udp:127.0.0.1:0")
        self.start_node("site-b", listen=None)

    def push(self, listen: str, note: str) -> int:
        """`sosrouter rules push` of the rules with this `listen`; the version it became."""
        self.pushed += 1
        path = os.path.join(self.dir, f"rules-{self.pushed}.toml")
        text = RULES.format(listen=listen, psap=self.psap) + f"\n# {note}\n"
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([self.bin, "rules", "push", path, "--etcd", self.etcd], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        version = int(r.stdout.strip().split("-> ")[-1].split()[0])
        self.hash[version] = hashlib.sha256(text.encode()).hexdigest()
        return version

    def start_node(self, nid: str, listen: str | None):
        log = os.path.join(self.dir, f"{nid}.log")
        argv = [self.bin, "run", "--etcd", self.etcd, "--node-id", nid, "--admin", "127.0.0.1:0",
                "--rules-cache", os.path.join(self.dir, f"{nid}.cache.json"),
                "--undelivered", os.path.join(self.dir, f"{nid}.undelivered.jsonl"), "--log-format", "json"]
        if listen:
            argv += ["--listen", listen]
        env = {k: v for k, v in os.environ.items() if k != "SOSROUTER_ADMIN_TOKEN"}
        env["RUST_LOG"] = "info"
        p = self.g.start(nid, argv, log, 300, env=env)
        if not procs.wait_until(lambda: self._admin_addr(nid, log), 20) or not p.alive():
            self.close()
            raise RuntimeError(f"node {nid} did not start; see {log}")

    def _admin_addr(self, nid: str, log: str) -> bool:
        try:
            with open(log) as f:
                for line in f:
                    if "admin endpoint listening" in line:
                        m = re.search(r'"addr":"([0-9.:]+)"', line)
                        if m:
                            self.admin[nid] = m.group(1)
                            return True
        except OSError:
            pass
        return False

    def url(self, nid: str) -> str:
        return f"http://{self.admin[nid]}/"

    def close(self):
        self.g.stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    binary = browser_test_binary()
    if not shutil.which("etcd"):
        pytest.fail("no etcd (apt-get install etcd-server etcd-client; .ci/run installs them)")
    lab = ClusterLab(binary)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def page(cluster):
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        ctx = b.new_context(viewport={"width": 1366, "height": 768})
        pg = ctx.new_page()
        pg.problems = []
        pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: pg.problems.append(str(e)))
        pg.goto(cluster.url("site-a"))
        yield pg
        ctx.close()
        b.close()


def node(page, nid):
    return page.locator(f'#node-rows tr[data-node-id="{nid}"]')


def test_console_lists_both_nodes_with_their_version(cluster, page):
    expect(page.locator("#conn")).to_have_text("live", timeout=10000)
    expect(page.locator("#cluster")).to_be_visible()
    expect(page.locator("#node-rows tr")).to_have_count(2, timeout=10000)
    for nid in ("site-a", "site-b"):
        r = node(page, nid)
        expect(r).to_have_attribute("data-node-version", "1")
        expect(r).to_have_attribute("data-node-hash", cluster.hash[1])
        expect(r).to_have_attribute("data-node-current", "true")
        expect(r).to_contain_text(cluster.hash[1])   # the SHA-256, as sha256sum prints it
    expect(node(page, "site-a")).to_have_attribute("data-node-self", "true")
    expect(node(page, "site-a")).to_contain_text("this node")
    expect(node(page, "site-b")).to_have_attribute("data-node-self", "false")
    expect(page.locator("#cluster-etcd")).to_contain_text("connected")
    expect(page.locator("#cluster-etcd")).to_contain_text("Current rules version: 1")
    expect(page.locator("#cluster-warn")).to_be_hidden()
    assert page.problems == []


def test_a_push_shows_on_both_nodes_without_a_reload(cluster, page):
    page.evaluate("window.__sameDocument = 'yes'")
    v = cluster.push(UDP_ONLY, "second")
    assert v == 2
    for nid in ("site-a", "site-b"):
        expect(node(page, nid)).to_have_attribute("data-node-version", "2", timeout=10000)
        expect(node(page, nid)).to_have_attribute("data-node-hash", cluster.hash[2])
        expect(node(page, nid)).to_have_attribute("data-node-current", "true")
    expect(page.locator("#rules-version")).to_have_text("2")
    expect(page.locator("#event-list")).to_contain_text("node-version")
    assert page.evaluate("window.__sameDocument") == "yes"   # live, not a page reload


def test_a_node_that_runs_another_version_is_flagged(cluster, page):
    # Version 3 changes `listen`: site-a (sockets from its command line) runs it, site-b cannot.
    v = cluster.push(UDP_TCP, "third: listen changed")
    b = node(page, "site-b")
    expect(b).to_have_attribute("data-node-current", "false", timeout=10000)
    expect(b).to_have_attribute("data-node-version", "2")
    expect(b).to_contain_text(f"NOT current (current is {v})")
    expect(b).to_contain_text(f"refused version {v}")
    expect(node(page, "site-a")).to_have_attribute("data-node-version", str(v))
    expect(node(page, "site-a")).to_have_attribute("data-node-current", "true")
    warn = page.locator("#cluster-warn")
    expect(warn).to_be_visible()
    expect(warn).to_contain_text("site-b (version 2)")
    # The event, after the nodes' grace (5 s), in the live list.
    expect(page.locator('#event-list li[data-kind="cluster"]', has_text="node-mismatch")).to_have_count(
        1, timeout=15000)
    shot = os.environ.get("CLUSTER_SCREENSHOT")   # the cluster section while the nodes disagree
    if shot:
        page.locator("#cluster").screenshot(path=shot)

    # Version 4 restores site-b's listen: both run it, the flag and the warning go.
    v = cluster.push(UDP_ONLY, "fourth: listen restored")
    for nid in ("site-a", "site-b"):
        expect(node(page, nid)).to_have_attribute("data-node-version", str(v), timeout=10000)
        expect(node(page, nid)).to_have_attribute("data-node-current", "true")
    expect(warn).to_be_hidden()
    assert page.problems == [], json.dumps(page.problems)


def test_the_other_nodes_console_shows_the_same(cluster, page):
    pg = page.context.new_page()
    pg.goto(cluster.url("site-b"))
    expect(pg.locator('#node-rows tr[data-node-id="site-b"]')).to_have_attribute("data-node-self", "true",
                                                                                 timeout=10000)
    for nid in ("site-a", "site-b"):
        expect(pg.locator(f'#node-rows tr[data-node-id="{nid}"]')).to_have_attribute("data-node-current", "true")
    pg.close()

