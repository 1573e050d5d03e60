"""Where a lab lives and what it remembers: names, paths, and the `lab.json` record.

This is the module other lab code (the VM flavour, the pytest fixture) builds on:
`LabPaths.for_lab(name)` gives the state dir, the lab's ssh key and the generated
files; `load_state`/`save_state` read and write the record of hosts, PIDs and
addresses that `lab down` uses to remove exactly what `lab up` made.

Environment: BAOMI_LAB (lab name, default "baomi"), BAOMI_LAB_DIR (base of state
dirs, default /var/lib/baomi-lab; a lab's dir is BASE/NAME), BAOMI_LAB_CACHE
(image cache, default /var/cache/baomi-lab).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from baomi.lab.errors import LabError, NotRootError

DEFAULT_LAB = "baomi"
DEFAULT_BASE = Path("/var/lib/baomi-lab")
DEFAULT_CACHE = Path("/var/cache/baomi-lab")
MARKER = ".baomi-lab"  # a state dir is only ever deleted when it carries this file

# Lab names prefix interface names ("NAME-srv1" must fit Linux's 15 characters) and
# never contain "-", so one lab's prefix cannot match another lab's names.
_LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,5}$")

FLAVOURS = ("plain", "systemd", "vm")


def check_lab_name(name: str) -> str:
    """Reject names that would overflow interface names or collide with other labs."""
    if not _LAB_NAME.match(name):
        raise LabError(
            f"bad lab name {name!r}: use 1-8 lowercase letters/digits, starting with a letter"
        )
    return name


def check_host_name(name: str) -> str:
    if not _HOST_NAME.match(name):
        raise LabError(f"bad host name {name!r}: use 1-6 lowercase letters/digits")
    return name


def default_lab_name() -> str:
    return os.environ.get("BAOMI_LAB") or DEFAULT_LAB


def base_dir() -> Path:
    return Path(os.environ.get("BAOMI_LAB_DIR") or DEFAULT_BASE)


def cache_dir() -> Path:
    return Path(os.environ.get("BAOMI_LAB_CACHE") or DEFAULT_CACHE)


def require_root(what: str = "the lab", why: str = "namespaces, mounts, a bridge") -> None:
    """WHAT needs root for WHY; say so before starting instead of failing half-way."""
    if os.geteuid() != 0:
        raise NotRootError(f"{what} needs root ({why}): run as root")


@dataclass(frozen=True)
class LabPaths:
    """Every file a lab writes, under one state dir."""

    name: str
    state_dir: Path

    @classmethod
    def for_lab(cls, name: str) -> LabPaths:
        return cls(name=check_lab_name(name), state_dir=base_dir() / name)

    @property
    def lab_json(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def inventory(self) -> Path:
        return self.state_dir / "inventory.py"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def key(self) -> Path:
        """The lab's ed25519 private key (0600), generated when the lab is created."""
        return self.state_dir / "id_ed25519"

    @property
    def public_key(self) -> Path:
        return self.state_dir / "id_ed25519.pub"

    @property
    def control_dir(self) -> Path:
        """ssh ControlMaster sockets; short names (%C) keep under the 108-byte limit."""
        return self.state_dir / "cm"

    @property
    def marker(self) -> Path:
        return self.state_dir / MARKER

    def host_dir(self, host: str) -> Path:
        """Per-host files: overlay upper/work dirs, the root mount point, logs."""
        return self.state_dir / "hosts" / host

    def authorized_key(self) -> str:
        """The public key line hosts (and VMs) must accept for root."""
        return self.public_key.read_text().strip()


@dataclass
class HostRecord:
    """One host as `lab down` and `lab status` need it."""

    name: str
    flavour: str  # plain | systemd | vm
    groups: list[str]
    address: str
    pid: int  # the process to stop: sshd (plain), systemd-nspawn, qemu (vm)
    leader_pid: int | None = None  # plain: the `unshare` parent that ignores SIGTERM
    netns: str | None = None
    veth: str | None = None
    host_key: str = ""  # "ssh-ed25519 AAAA..." of the host
    host_keys: list[str] = field(default_factory=list)  # every type, for known_hosts
    extra: dict[str, Any] = field(default_factory=dict)  # flavour-specific (VM info)


@dataclass
class LabState:
    """The record in lab.json."""

    name: str
    subnet: str  # e.g. "10.213.7.0/24"
    bridge: str
    gateway: str  # the bridge's address in the root namespace
    image_key: str = ""
    hosts: list[HostRecord] = field(default_factory=list)

    def host(self, name: str) -> HostRecord | None:
        return next((h for h in self.hosts if h.name == name), None)

    def used_addresses(self) -> set[str]:
        return {h.address for h in self.hosts}


def load_state(paths: LabPaths) -> LabState | None:
    """The recorded lab, or None; a damaged record is an error the user can act on."""
    if not paths.lab_json.exists():
        return None
    try:
        raw = json.loads(paths.lab_json.read_text())
        hosts = [HostRecord(**h) for h in raw.pop("hosts", [])]
        return LabState(**raw, hosts=hosts)
    except (ValueError, TypeError) as exc:
        raise LabError(
            f"{paths.lab_json}: unreadable lab state ({exc}); run `baomi lab down` to clear it"
        ) from exc


def save_state(paths: LabPaths, state: LabState) -> None:
    """Write atomically, so a crash mid-write never leaves a lab that cannot be downed."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.lab_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(paths.lab_json)
