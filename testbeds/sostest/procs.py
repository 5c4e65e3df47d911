"""Processes the testbed starts: each in its own process group (its own session), bounded in time by
timeout(1), stopped by process group id at the end (SIGCONT, SIGTERM, then SIGKILL). Never by name."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Group:
    """Every process started through it is stopped by stop_all() (call it from a finally)."""
    procs: list = field(default_factory=list)

    def start(self, name: str, argv: list, log: str, seconds: float, cwd: str | None = None,
              env: dict | None = None) -> Proc:
        """argv under `timeout -k 5 SECONDS` in a new session (pgid = its pid); output to log."""
        out = open(log, "ab")
        p = subprocess.Popen(["timeout", "-k", "5", str(int(seconds)), *argv], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True)
        out.close()
        proc = Proc(name, p, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 2.0):
        """SIGCONT + SIGTERM to the process group, SIGKILL after grace seconds; reaps it."""
        if proc.popen.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left in the group (workers of a proxy), also after the leader exited
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.popen.wait(2)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()


def port_users(port: int) -> str:
    """What listens on the port (UDP or TCP), as ss prints it; empty when free."""
    out = []
    for flag in ("-Hlunp", "-Hltnp"):
        try:
            r = subprocess.run(["ss", flag, f"sport = :{port}"], capture_output=True, text=True, timeout=5)
            out.append(r.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "\n".join(o for o in out if o)


def wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    """Poll cond() until true or timeout (used to wait for a process to come up, never to assert timing)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()
