"""A private, throw-away PostgreSQL cluster (tests, the benchmark, the demo).

Test infrastructure: it lives beside the tests, not in the installed collector (a collector
host has no business running initdb).

``initdb`` into a fresh folder as the unprivileged ``postgres`` user, ``pg_ctl start`` on a
unix socket in that folder and a loopback port, password (SCRAM) authentication; stopped and
removed on exit even when the caller fails. It never touches the system's cluster or /etc.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class ClusterError(Exception):
    """initdb or pg_ctl failed (the message carries their output)."""


@dataclass
class Cluster:
    folder: Path
    port: int
    password: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://baomi:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _tool(name: str) -> str:
    path = PG_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise ClusterError(f"{name} not found: scripts/setup installs Debian's postgresql")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def private_cluster(user: str = "postgres") -> Iterator[Cluster]:
    """A running cluster owned by ``user`` (root cannot run PostgreSQL)."""
    # In /tmp itself, not under a root-only 0700 tree: the postgres user must reach it.
    base = Path(tempfile.mkdtemp(prefix="baomi-pg-"))
    folder = base / "data"
    password = secrets.token_urlsafe(16)
    as_user = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
    try:
        pwfile = base / "pw"
        pwfile.write_text(password + "\n")
        os.chmod(pwfile, 0o600)
        if as_user:
            shutil.chown(base, user)
            shutil.chown(pwfile, user)
        made = subprocess.run([*as_user, _tool("initdb"), "-D", str(folder), "-U", "baomi",
                               "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                               "--locale=C.UTF-8"], capture_output=True, text=True)
        if made.returncode != 0:
            raise ClusterError(f"initdb failed: {' '.join(made.stderr.split())}")
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -c port={port} "
                   f"-c unix_socket_directories={base} -c max_connections=200 "
                   "-c shared_buffers=256MB")
        started = subprocess.run([*as_user, _tool("pg_ctl"), "-D", str(folder), "-l",
                                  str(base / "log"), "-o", options, "-w", "-t", "60", "start"],
                                 capture_output=True, text=True)
        if started.returncode != 0:
            log = (base / "log").read_text() if (base / "log").exists() else ""
            raise ClusterError(f"pg_ctl start failed: {' '.join(started.stderr.split())} "
                               f"{log[-2000:]}")
        yield Cluster(folder, port, password)
    finally:
        if (folder / "postmaster.pid").exists():
            subprocess.run([*as_user, _tool("pg_ctl"), "-D", str(folder), "-m", "immediate",
                            "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
