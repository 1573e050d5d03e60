"""How the suite is spread over pytest-xdist workers (``scripts/test`` runs ``-n 2``).

Each test file is one unit of work, so a module's fixtures (its collector, its deployed
hosts) are made once, on one worker; the files that boot the qemu VM form a single unit, so two
VMs under TCG never compete for the CPUs (and never share test_lab_vm's bridge name), and it
goes first because it is the longest (about a third of the suite's time).  Every worker has its
own lab (``t<pid>``) and its own PostgreSQL.

The units come from a scheduler of our own rather than ``--dist loadgroup``: xdist 3.8 groups
by rewriting ``item._nodeid``, which pytest 9.2's nodes no longer read (measured: the marks were
there, every file's tests went to both workers, two ``vmtest`` VMs booted at once).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

# The modules that boot a VM (TCG: slow and CPU-bound), run one after another on one worker.
VM_MODULES = frozenset({"test_lab_vm.py", "test_disk_encryption.py", "test_vm_baseline.py"})
VM_UNIT = "vm"


def unit_of(nodeid: str) -> str:
    """The unit of work of a test: its file, or the VM unit."""
    path = nodeid.split("::", 1)[0]
    return VM_UNIT if PurePosixPath(path).name in VM_MODULES else path


def _rank(item: pytest.Item) -> int:
    """The VM unit first, then integration, collector and unit files."""
    unit = unit_of(item.nodeid)
    if unit == VM_UNIT:
        return 0
    return 1 if "/integration/" in unit else 2 if "/collector/" in unit else 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: within a rank, collection order (the same on every worker)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class FileUnits(LoadScopeScheduling):
        """LoadScope with :func:`unit_of` as the scope, handed out in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # keep the VM unit first
    return FileUnits(config, log)
