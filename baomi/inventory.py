"""Reading a pyinfra inventory file (data only) to learn each host's groups."""

from __future__ import annotations

import runpy
from pathlib import Path


class InventoryError(Exception):
    """The inventory cannot be read; the message says which file and why."""


def host_groups(path: str | Path) -> dict[str, set[str]]:
    """{host name: its groups} from a pyinfra inventory: module-level lists of hosts.

    ``servers = ["srv1", ("srv2", {...})]`` gives ``{"srv1": {"servers"}, "srv2": {"servers"}}``.
    """
    if not Path(path).is_file():
        raise InventoryError(f"{path}: no such inventory file")
    try:
        namespace = runpy.run_path(str(path))
    except Exception as exc:  # an inventory is Python: any error in it is the user's to fix
        raise InventoryError(f"{path}: cannot load the inventory: {type(exc).__name__}: "
                             f"{exc}") from None
    groups: dict[str, set[str]] = {}
    for group, members in namespace.items():
        if group.startswith("_") or not isinstance(members, (list, tuple)):
            continue
        for member in members:
            name = member[0] if isinstance(member, tuple) else member
            if isinstance(name, str):
                entry = groups.setdefault(name, set())
                if group != "all":
                    entry.add(group)
    return groups
