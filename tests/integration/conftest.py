"""Integration tests run against real lab hosts; never skipped, they fail when not root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab

HERE = Path(__file__).parent

# The shared lab: 2 plain servers + 1 systemd server (srv3), 1 workstation, 1 backup host.
LAB_REQUEST = Request(servers=3, systemd_servers=1, workstations=1, backup=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    """A lab of its own (name t<pid>), removed at the end of the session even on failure."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (the lab makes namespaces, mounts, a bridge): "
                    "run them as root", pytrace=False)
    with running_lab(f"t{os.getpid() % 10_000_000}", LAB_REQUEST) as handle:
        yield handle
