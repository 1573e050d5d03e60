"""The checks' shared fixtures: the policy, each host's inventory groups, the observe runner."""

from __future__ import annotations

import os
import shlex
from typing import Any

import pytest

from baomi.inventory import InventoryError, host_groups
from baomi.policy import Policy, PolicyError, default_policy_path, load


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("baomi")
    group.addoption("--policy", default=None,
                    help="policy file (default: as the baomi command finds it)")
    group.addoption("--inventory", default=None,
                    help="pyinfra inventory, for each host's groups (default: $BAOMI_INVENTORY)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clause(id): the clause of REQUIREMENTS.md a check verifies")
    # Plain host names would otherwise go through paramiko, which accepts unknown host keys;
    # OpenSSH with the given ssh_config pins them (StrictHostKeyChecking yes).
    if getattr(config.option, "connection", None) is None:
        config.option.connection = "ssh"


@pytest.fixture(scope="session")
def policy(pytestconfig: pytest.Config) -> Policy:
    path = pytestconfig.getoption("policy") or default_policy_path()
    try:
        return load(path)
    except PolicyError as exc:
        pytest.exit(f"policy problems:\n{exc}", returncode=2)


@pytest.fixture(scope="session")
def inventory_groups(pytestconfig: pytest.Config) -> dict[str, set[str]]:
    path = pytestconfig.getoption("inventory") or os.environ.get("BAOMI_INVENTORY")
    if not path:
        pytest.exit("give --inventory (the pyinfra inventory) so checks know each host's groups",
                    returncode=2)
    try:
        return host_groups(path)
    except InventoryError as exc:
        pytest.exit(str(exc), returncode=2)


@pytest.fixture
def groups(host: Any, inventory_groups: dict[str, set[str]]) -> set[str]:
    name = host.backend.hostname
    if name not in inventory_groups:
        pytest.fail(f"host {name} is not in the inventory; its groups are unknown")
    return inventory_groups[name]


def observe(host: Any, script: str) -> str:
    """Run a control's read-only observe script on the host and return its output."""
    result = host.run(f"sh -c {shlex.quote(script)}")
    if result.rc != 0:
        pytest.fail(f"observe script failed on {host.backend.hostname} (rc {result.rc}): "
                    f"{result.stderr.strip()[-300:]}")
    return str(result.stdout)
