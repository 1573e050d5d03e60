"""Reading a pyinfra inventory file (data only): each host's groups and connection data.

The one reader for every command that needs an inventory outside pyinfra (`baomi apply`'s host
list, `backup status`, offboarding's connecting user, the checks' groups).
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class InventoryError(Exception):
    """The inventory cannot be read; the message says which file and why."""


@dataclass
class InventoryHost:
    name: str
    groups: set[str] = field(default_factory=set)
    data: dict[str, Any] = field(default_factory=dict)


def read(path: str | Path) -> dict[str, InventoryHost]:
    """Hosts of a pyinfra inventory: module-level lists of ``"name"`` or ``("name", {data})``.

    ``servers = ["srv1", ("srv2", {...})]`` gives srv1 and srv2 in group ``servers``; ``all``
    is not a group of its own.  Anything that is not such a list is ignored.
    """
    if not Path(path).is_file():
        raise InventoryError(f"{path}: no such inventory file")
    try:
        namespace = runpy.run_path(str(path))
    except Exception as exc:  # an inventory is Python: any error in it is the user's to fix
        raise InventoryError(f"{path}: cannot load the inventory: {type(exc).__name__}: "
                             f"{exc}") from None
    hosts: dict[str, InventoryHost] = {}
    for group, members in namespace.items():
        if group.startswith("_") or not isinstance(members, (list, tuple)):
            continue
        for member in members:
            name, data = (member[0], member[1] if len(member) > 1 else {}) \
                if isinstance(member, tuple) and member else (member, {})
            if not isinstance(name, str):
                continue
            entry = hosts.setdefault(name, InventoryHost(name))
            if isinstance(data, dict):
                entry.data.update(data)
            if group != "all":
                entry.groups.add(group)
    return hosts


def host_groups(path: str | Path) -> dict[str, set[str]]:
    """{host name: its groups}."""
    return {name: h.groups for name, h in read(path).items()}
