"""The lab's private network: one bridge per lab, one network namespace + veth per host.

Addresses exist only on this machine (10.213.X.0/24, X picked per lab so concurrent
labs don't collide). Hosts get no default route and forwarding is never touched, so
traffic cannot leave the machine. Every name the lab creates starts with "LAB-",
which is how `lab down` finds what a crashed run left behind.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from baomi.lab.errors import LabError

NET_PREFIX = "10.213"
PREFIXLEN = 24
FIRST_HOST = 11  # .1 is the bridge; hosts from .11 up
LAST_HOST = 250
IFNAMSIZ = 15


def bridge_name(lab: str) -> str:
    return _ifname(f"{lab}-br")


def host_ifname(lab: str, host: str) -> str:
    """Root-namespace end of a host's veth (and its netns name)."""
    return _ifname(f"{lab}-{host}")


def netns_name(lab: str, host: str) -> str:
    return f"{lab}-{host}"


def prefix(lab: str) -> str:
    return f"{lab}-"


def _ifname(name: str) -> str:
    if len(name) > IFNAMSIZ:
        raise LabError(f"interface name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def preferred_octet(lab: str) -> int:
    """A stable third octet per lab name, so a lab usually gets the same subnet."""
    return hashlib.sha256(lab.encode()).digest()[0]


def choose_octet(lab: str, taken: Iterable[int]) -> int:
    """The first free third octet, probing upward from the lab's preferred one."""
    used = set(taken)
    start = preferred_octet(lab)
    for i in range(256):
        octet = (start + i) % 256
        if octet not in used:
            return octet
    raise LabError(f"no free {NET_PREFIX}.X.0/24 subnet left for lab {lab!r}")


def subnet_for(octet: int) -> str:
    return f"{NET_PREFIX}.{octet}.0/{PREFIXLEN}"


def gateway_for(subnet: str) -> str:
    return str(next(ipaddress.ip_network(subnet).hosts()))


def next_address(subnet: str, used: Iterable[str]) -> str:
    """The lowest free host address from .11 up."""
    net = ipaddress.ip_network(subnet)
    taken = set(used)
    for last in range(FIRST_HOST, LAST_HOST + 1):
        addr = str(net.network_address + last)
        if addr not in taken:
            return addr
    raise LabError(f"subnet {subnet} is full")


_OCTET_RE = re.compile(r"\b10\.213\.(\d{1,3})\.\d{1,3}")


def octets_in_use(base_dir: Path, except_lab: str) -> set[int]:
    """Subnets other labs recorded, or that any interface/route on this machine uses."""
    used: set[int] = set()
    if base_dir.is_dir():
        for record in base_dir.glob("*/lab.json"):
            if record.parent.name == except_lab:
                continue
            try:
                subnet = json.loads(record.read_text())["subnet"]
                used.add(int(str(ipaddress.ip_network(subnet).network_address).split(".")[2]))
            except (ValueError, KeyError, OSError):
                continue
    for cmd in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        used.update(int(m) for m in _OCTET_RE.findall(out))
    return used


# --- acting on the machine -------------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def ensure_bridge(bridge: str, gateway: str) -> None:
    """The lab's bridge with its gateway address; idempotent."""
    if not link_exists(bridge):
        ip("link", "add", bridge, "type", "bridge")
    have = ip("-4", "-o", "addr", "show", "dev", bridge).stdout
    if f" {gateway}/" not in have:
        ip("addr", "add", f"{gateway}/{PREFIXLEN}", "dev", bridge)
    ip("link", "set", bridge, "up")


def add_host_network(lab: str, host: str, bridge: str, address: str) -> tuple[str, str]:
    """A netns for HOST with eth0 (ADDRESS/24) plugged into BRIDGE; no default route."""
    ns, veth = netns_name(lab, host), host_ifname(lab, host)
    ip("netns", "add", ns)
    # Create the peer directly inside the netns as eth0: no temporary name to overflow.
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("-n", ns, "addr", "add", f"{address}/{PREFIXLEN}", "dev", "eth0")
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("link", "set", veth, "master", bridge)
    ip("link", "set", veth, "up")
    return ns, veth


def lab_netns(lab: str) -> list[str]:
    """Network namespaces carrying the lab's prefix (recorded or left by a crash)."""
    out = ip("netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix(lab))]


def lab_links(lab: str) -> list[str]:
    """Root-namespace interfaces carrying the lab's prefix (veths, bridge, VM taps)."""
    out = ip("-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return [n for n in names if n.startswith(prefix(lab))]


def netns_inode(ns: str) -> int | None:
    try:
        return Path("/run/netns", ns).stat().st_ino
    except OSError:
        return None


def delete_netns(ns: str) -> None:
    ip("netns", "delete", ns, check=False)


def delete_link(name: str) -> None:
    ip("link", "delete", name, check=False)
