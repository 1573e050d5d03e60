"""R-BAK's first apply on a larger fleet converges in one run (issue 11, item 12).

12 hosts: 10 servers (3 boot systemd), 1 workstation, 1 backup host.  Before the fix the
backup host's per-client "repository directory" operations, present on that host only, were
not ordered against the clients' "repository" operation (restic init), and pyinfra ran some
of them after it: `[backup] repository` failed on 3 of 11 clients with permission denied.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from baomi.lab.lifecycle import Request
from baomi.lab.testing import LabHandle, running_lab
from tests.integration.backup_lab import own_escrow
from tests.integration.controls import apply, outcomes

FLEET = Request(servers=10, systemd_servers=3, workstations=1, backup=1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    with own_escrow(tmp_path_factory), running_lab(f"g{os.getpid() % 10_000_000}",
                                                   FLEET) as handle:
        yield handle


def test_first_apply_converges_on_twelve_hosts_and_the_second_changes_nothing(
        fleet: LabHandle) -> None:
    assert len(fleet.names) == 12
    started = time.monotonic()
    first = apply(fleet, "backup")  # asserts exit 0
    first_seconds = time.monotonic() - started
    assert first["failed_hosts"] == [], first
    assert set(outcomes(first, "backup").values()) == {"changed"}, first
    clients = [h for h in fleet.names if h != "bak1"]
    repositories = fleet.ssh("bak1", "ls /srv/restic").stdout.split()
    assert sorted(repositories) == sorted(clients), repositories
    for host in clients:  # every repository was created by its client, through the server
        assert fleet.ssh("bak1", f"test -f /srv/restic/{host}/config").returncode == 0, host
    started = time.monotonic()
    second = apply(fleet, "backup")
    second_seconds = time.monotonic() - started
    assert set(outcomes(second, "backup").values()) == {"unchanged"}, second
    print(f"\nbackup apply on {len(fleet.names)} hosts: first {first_seconds:.1f}s, "
          f"second {second_seconds:.1f}s (lab up {fleet.up_seconds:.1f}s)")
