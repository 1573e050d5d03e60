"""How the suite is spread over pytest-xdist workers (``scripts/test`` runs ``-n 2``).

Each test file is one unit of work, so a module's fixtures (its collector, its deployed
hosts) are made once, on one worker; the files that boot the qemu VM form a single unit, so two
VMs under TCG never compete for the CPUs, and it goes first because it is the longest (about a
third of the suite's time).  Every worker has its own lab (``t<pid>``) and its own PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
# The modules that boot a VM (TCG: slow and CPU-bound), run one after another on one worker.
VM_MODULES = ("test_lab_vm.py", "test_disk_encryption.py", "test_vm_baseline.py")
VM_GROUP = "vm"


def _group(item: pytest.Item) -> str:
    if item.path.name in VM_MODULES:
        return VM_GROUP
    return str(item.path.relative_to(HERE))


def _rank(item: pytest.Item) -> int:
    """The VM unit first, then integration, collector and unit files (longest first, roughly)."""
    if item.path.name in VM_MODULES:
        return 0
    parts = item.path.relative_to(HERE).parts
    return {"integration": 1, "collector": 2}.get(parts[0], 3)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    items.sort(key=_rank)  # stable: within a rank, collection order
