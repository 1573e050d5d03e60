"""A real collector process and real agent processes on this machine, for the agent's tests
and benchmark: `baomi collector init/serve` over TLS on loopback, enrolment through the API,
`baomi agent run` as a child process; everything started here is stopped by its pid."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from baomi.collector.client import Client

PYTHON = sys.executable
BAOMI = [PYTHON, "-m", "baomi"]
COLLECTOR = [*BAOMI, "collector"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, test: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Poll until ``test()`` is truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = test()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Collector:
    """``baomi collector`` in a folder of its own, on a loopback port, as a child process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        out = subprocess.run([*COLLECTOR, "init", str(folder), "--address", "127.0.0.1",
                              "--listen", f"127.0.0.1:{self.port}"],
                             capture_output=True, text=True, check=True)
        found = re.search(r"password \(shown once\): (\S+)", out.stdout)
        assert found, out.stdout
        self.password = found.group(1)
        self.ca = str(folder / "ca.pem")
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin: Client | None = None

    def start(self) -> None:
        log = open(self.folder / "serve.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([*COLLECTOR, "serve", str(self.folder), "--log-level",
                                      "warning"], stdout=log, stderr=log)
        wait_for("the collector's health answer", self._healthy, 30)

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("collector exited: "
                                 + (self.folder / "serve.log").read_text()[-2000:])
        try:
            return Client("127.0.0.1", self.port, self.ca, timeout=2).get(
                "/api/v1/health").status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def admin(self) -> Client:
        """A new connection as the first admin for each use (the server closes idle
        keep-alive connections; the session token is kept)."""
        if self._admin is None:
            c = Client("127.0.0.1", self.port, self.ca)
            answer = c.post("/api/v1/login", {"user": "admin", "password": self.password})
            assert answer.status == 200, answer.body
            c.token = answer.body["token"]
            self._admin = c
        self._admin.close()
        return self._admin

    def enrolment_token(self, host: str) -> str:
        answer = self.admin().post("/api/v1/enrolment-tokens", {"host": host})
        assert answer.status == 201, answer.body
        return str(answer.body["token"])

    def findings(self, host: str, check: str | None = None) -> list[dict[str, Any]]:
        """Every finding record of a host (all pages)."""
        out: list[dict[str, Any]] = []
        after = None
        while True:
            query = f"/api/v1/findings?host={host}&limit=1000"
            if check:
                query += f"&check={check}"
            if after is not None:
                query += f"&after={after}"
            answer = self.admin().get(query)
            assert answer.status == 200, answer.body
            out += answer.body["findings"]
            after = answer.body["next"]
            if after is None:
                return out

    def agent_row(self, host: str) -> dict[str, Any]:
        answer = self.admin().get("/api/v1/agents")
        assert answer.status == 200, answer.body
        rows = [a for a in answer.body["agents"] if a["host"] == host and a["state"] != "revoked"]
        assert rows, f"no agent for {host}"
        return dict(rows[-1])


@contextmanager
def running_collector(folder: Path) -> Iterator[Collector]:
    c = Collector(folder)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def write_policy(path: Path, data: Path, spool: Path, *, spool_max_mb: int = 256,
                 rescan_minutes: int = 60, ship_interval_seconds: int = 1) -> Path:
    """A policy whose sensitive paths are folders under ``data`` (root-owned, group root),
    antivirus off (the agent runs on this machine, not a lab host); the idle tick is 1 s
    (tests notice a returning collector sooner), the policy's 5 s otherwise."""
    path.write_text(f"""
sensitive_paths:
  - path: {data}/top
    level: 绝密
    owner: root
    group: root
  - path: {data}/conf
    level: 机密
    owner: root
    group: root
  - path: {data}/secret
    level: 秘密
    owner: root
    group: root
agent:
  spool_dir: {spool}
  spool_max_mb: {spool_max_mb}
  rescan_minutes: {rescan_minutes}
  ship_interval_seconds: {ship_interval_seconds}
antivirus:
  enabled: false   # the agent here runs on this machine: it leaves this machine's records alone
""", encoding="utf-8")
    for name in ("top", "conf", "secret"):
        (data / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(data / name, 0o700)
    return path


class Agent:
    """``baomi agent`` with its own state folder and policy."""

    def __init__(self, folder: Path, policy: Path, host: str) -> None:
        self.folder = folder
        self.policy = policy
        self.host = host
        self.state = folder / "state"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BAOMI, "agent", *args, "--policy", str(self.policy),
                               "--state-dir", str(self.state)],
                              capture_output=True, text=True, check=check, timeout=600)

    def enroll(self, collector: Collector) -> None:
        self.cli("enroll", "--collector", collector.url, "--token",
                 collector.enrolment_token(self.host), "--ca", collector.ca, "--host", self.host)

    def start(self, wait: bool = True, prefix: tuple[str, ...] = ()) -> None:
        """Run the agent (``prefix``: a command it is exec'd by, keeping its pid)."""
        log = open(self.folder / "agent.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([*prefix, *BAOMI, "agent", "run", "--policy", str(self.policy),
                                      "--state-dir", str(self.state)], stdout=log, stderr=log,
                                     env={**os.environ, "BAOMI_DEBUG": "1"})
        if wait:
            wait_for("the agent's first status", self._up, 120)

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("agent exited: " + (self.folder / "agent.log").read_text()[-3000:])
        status = self.status()
        return bool(status and status.get("pid") == self.proc.pid if self.proc else False)

    def status(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.state / "status.json").read_text()))
        except (OSError, ValueError):
            return None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return (self.folder / "agent.log").read_text()[-4000:]
        except OSError:
            return ""


def spool_depth(spool_dir: Path) -> tuple[int, int]:
    """(events waiting, last sequence number) read from the agent's spool itself."""
    import sqlite3

    db = sqlite3.connect(f"file:{spool_dir / 'spool.db'}?mode=ro", uri=True, timeout=30)
    try:
        waiting = db.execute("SELECT count(*) FROM events").fetchone()[0]
        row = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        return int(waiting), (int(row[0]) - 1 if row else 0)
    finally:
        db.close()


def settled(collector: Collector, agent: Agent, spool_dir: Path) -> Callable[[], bool]:
    """True once the collector holds every event the agent numbered, without a gap, and the
    agent's spool is empty."""
    def test() -> bool:
        waiting, last = spool_depth(spool_dir)
        row = collector.agent_row(agent.host)
        return bool(last and waiting == 0 and row["missing"] == 0
                    and row["acked_seq"] == row["max_seq"] == last)
    return test
