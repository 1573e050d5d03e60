"""A small typed handle on a running lab, for the pytest fixture and benchmarks.

`running_lab()` starts a lab under its own name and always removes it (try/finally plus
an atexit hook, in case the interpreter is torn down before the finally runs).
"""

from __future__ import annotations

import atexit
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from baomi.lab import lifecycle
from baomi.lab.state import HostRecord, LabPaths


@dataclass(frozen=True)
class LabHandle:
    """What a test needs: hosts, generated files, and real ssh into any host."""

    name: str
    paths: LabPaths
    hosts: tuple[HostRecord, ...]
    up_seconds: float

    @property
    def inventory(self) -> Path:
        return self.paths.inventory

    @property
    def ssh_config(self) -> Path:
        return self.paths.ssh_config

    @property
    def known_hosts(self) -> Path:
        return self.paths.known_hosts

    @property
    def key(self) -> Path:
        return self.paths.key

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def host(self, name: str) -> HostRecord:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in lab {self.name} (have {', '.join(self.names)})")

    def group(self, group: str) -> list[str]:
        return [h.name for h in self.hosts if group in h.groups]

    def flavour(self, flavour: str) -> list[str]:
        return [h.name for h in self.hosts if h.flavour == flavour]

    def ssh(self, host: str, command: str, timeout: float = 60.0,
            ) -> subprocess.CompletedProcess[str]:
        """Run COMMAND on HOST over real ssh (the lab's ssh_config, pinned host keys)."""
        return lifecycle.ssh(self.paths, host, command, timeout=timeout)


def lab_name(prefix: str) -> str:
    """A lab name of this test process (PREFIX and its pid): two suites running at once on
    one machine never share, and so never tear down, each other's lab."""
    return f"{prefix}{os.getpid() % 10_000_000}"


@contextmanager
def running_lab(name: str, request: lifecycle.Request) -> Iterator[LabHandle]:
    """Start lab NAME with REQUEST's hosts; tear it down however the body ends."""
    downed = False

    def teardown() -> None:
        nonlocal downed
        if not downed:
            downed = True
            lifecycle.down(name)

    atexit.register(teardown)
    try:
        res = lifecycle.up(name, request)
        yield LabHandle(name=name, paths=res.paths, hosts=tuple(res.state.hosts),
                        up_seconds=res.seconds)
    finally:
        teardown()
        atexit.unregister(teardown)
