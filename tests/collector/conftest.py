"""Real collectors for the API tests: uvicorn processes over TLS on loopback, on SQLite and on a
private PostgreSQL cluster (initdb into a temporary folder, never the system's cluster).

Everything here is marked ``integration`` (real processes, a real PostgreSQL server).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from baomi.collector.client import Client
from tests.collector.pgcluster import Cluster, ClusterError, private_cluster

HERE = Path(__file__).parent

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- a private PostgreSQL cluster ---------------------------------------------------------

@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One private cluster for the session (see tests/collector/pgcluster.py); each test that
    needs PostgreSQL gets a fresh database in it."""
    if os.geteuid() != 0:
        pytest.fail("the PostgreSQL fixture runs initdb as the postgres user: run as root",
                    pytrace=False)
    try:
        with private_cluster() as cluster:
            yield cluster
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)


# ---- collectors ---------------------------------------------------------------------------

def init_folder(folder: Path, **overrides: Any) -> str:
    """``baomi collector init FOLDER``; the admin password it printed. ``overrides`` rewrite
    keys of collector.toml (e.g. rate_per_second=1)."""
    done = subprocess.run([sys.executable, "-m", "baomi.collector", "init", str(folder)],
                          capture_output=True, text=True, check=True)
    match = re.search(r"password \(shown once\): (\S+)", done.stdout)
    assert match, done.stdout
    if overrides:
        config = folder / "collector.toml"
        text = config.read_text()
        for key, value in overrides.items():
            rendered = f'"{value}"' if isinstance(value, str) else str(value)
            text, count = re.subn(rf"^{key} = .*$", f"{key} = {rendered}", text, flags=re.M)
            assert count == 1, key
        config.write_text(text)
    return match.group(1)


@dataclass
class Collector:
    folder: Path
    port: int
    admin_password: str
    process: subprocess.Popen[bytes]
    log: Path
    database: str | None = None
    clients: list[Client] = field(default_factory=list)
    _it: str | None = None

    @property
    def ca(self) -> str:
        return str(self.folder / "ca.pem")

    def client(self, token: str | None = None) -> Client:
        made = Client("127.0.0.1", self.port, self.ca, token)
        self.clients.append(made)
        return made

    def login(self, user: str, password: str) -> str:
        answer = self.client().post("/api/v1/login", {"user": user, "password": password})
        assert answer.status == 200, answer.body
        token: str = answer.body["token"]
        return token

    @property
    def it(self) -> str:
        """A session of the first admin (role it)."""
        if self._it is None:
            self._it = self.login("admin", self.admin_password)
        return self._it

    def user(self, role: str) -> str:
        """A new user with ``role``; a session token of theirs."""
        name = f"{role}{uuid.uuid4().hex[:8]}"
        password = secrets.token_urlsafe(16)
        made = self.client(self.it).post("/api/v1/users",
                                         {"user": name, "password": password, "role": role})
        assert made.status == 201, made.body
        return self.login(name, password)

    def enrol(self, host: str) -> Agent:
        it = self.client(self.it)
        token = it.post("/api/v1/enrolment-tokens", {"host": host})
        assert token.status == 201, token.body
        enrolled = self.client().post("/api/v1/enroll", {"token": token.body["token"],
                                                         "host": host})
        assert enrolled.status == 201, enrolled.body
        return Agent(host, enrolled.body["agent_id"], enrolled.body["credential"],
                     self.client(enrolled.body["credential"]))

    def stop(self) -> None:
        for made in self.clients:
            made.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Agent:
    host: str
    id: int
    credential: str
    client: Client

    def send(self, events: list[dict[str, Any]]) -> Any:
        return self.client.post("/api/v1/events", {"events": events})


def serve(folder: Path, password: str, database: str | None = None,
          port: int | None = None) -> Collector:
    """Start ``baomi collector serve`` and wait until it answers over TLS."""
    port = port or free_port()
    log = folder / f"serve-{port}.log"
    command = [sys.executable, "-m", "baomi.collector", "serve", str(folder),
               "--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    if database:
        command += ["--db", database]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    made = Collector(folder, port, password, process, log, database)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"collector exited {process.returncode}: {log.read_text()}",
                        pytrace=False)
        with contextlib.suppress(OSError):
            probe = Client("127.0.0.1", port, made.ca, timeout=2)
            try:
                if probe.get("/api/v1/health").status == 200:
                    return made
            finally:
                probe.close()
        if time.monotonic() > deadline:
            made.stop()
            pytest.fail(f"collector did not answer in 30 s: {log.read_text()}", pytrace=False)
        time.sleep(0.1)


StartCollector = Callable[..., Collector]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start_collector(tmp_path: Path, request: pytest.FixtureRequest
                    ) -> Iterator[StartCollector]:
    """A factory: start_collector(backend, **config overrides) → a running Collector; every
    collector it started is stopped at the end of the test, even on failure."""
    started: list[Collector] = []

    def start(kind: str, **overrides: Any) -> Collector:
        folder = tmp_path / f"c{len(started)}"
        password = init_folder(folder, **overrides)
        database = None
        if kind == "postgresql":
            database = request.getfixturevalue("pg_cluster").new_database()
        made = serve(folder, password, database)
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()


@pytest.fixture
def collector(backend: str, start_collector: StartCollector) -> Collector:
    """One collector on ``backend`` (SQLite or PostgreSQL), default settings."""
    return start_collector(backend)


def event(seq: int, *, kind: str = "finding", check: str = "ssh.permit_root_login",
          subject: str = "sshd PermitRootLogin", severity: str = "high", found: str = "yes",
          ts: str = "2026-12-02T10:00:00+00:00", clauses: tuple[str, ...] = ("R-TLS",),
          event_id: str | None = None) -> dict[str, Any]:
    """One event as an agent sends it (a finding or a resolution)."""
    return {"id": event_id or str(uuid.uuid4()), "seq": seq, "ts": ts, "kind": kind,
            "finding": {"check": check, "control": check.split(".")[0],
                        "clauses": list(clauses), "severity": severity, "subject": subject,
                        "expected": "no", "found": found, "details": {"source": "test"}}}
