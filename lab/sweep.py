"""What a lab may leave on the machine, found by its name and state dir, and removed.

`lab down` calls this after stopping the recorded hosts, and `lab up` before creating a lab,
so a crashed run (no record, or a record that missed something) is cleaned up as well as a
healthy one: VMs, netns and their processes, processes started outside a netns, loop
devices, mounts, cgroups and links carrying the lab's prefix.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from baomi.lab import hosts as hostlib
from baomi.lab import net, procs
from baomi.lab import vm as labvm
from baomi.lab.state import LabPaths

Log = Callable[[str], None]


def _loop_devices_under(state_dir: Path) -> list[str]:
    out = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True,
                         check=False).stdout
    try:
        devs = json.loads(out or "{}").get("loopdevices", [])
    except ValueError:
        return []
    root = str(state_dir) + "/"
    return [d["name"] for d in devs if str(d.get("back-file") or "").startswith(root)]


def _mounts_under(state_dir: Path) -> list[str]:
    root = str(state_dir) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target.startswith(root):
            found.append(target)
    return found


def clear_vms(paths: LabPaths) -> list[str]:
    """VMs lab/vm.py still knows under the lab's hosts dir (its own crash sweep)."""
    hosts_dir = paths.state_dir / "hosts"
    return [f"vm {n}" for n in labvm.cleanup_vms(hosts_dir)] if hosts_dir.is_dir() else []


def clear_leftovers(paths: LabPaths, log: Log = lambda _m: None) -> list[str]:
    """Sweep everything carrying the lab's prefix or living under its state dir."""
    swept = []
    for ns in net.lab_netns(paths.name):
        killed = procs.kill_netns_processes(ns)
        net.delete_netns(ns)
        swept.append(f"netns {ns}" + (f" ({len(killed)} processes)" if killed else ""))
    killed = procs.kill_state_dir_processes(paths.state_dir)
    if killed:
        swept.append(f"{len(killed)} processes under {paths.state_dir}")
    for dev in _loop_devices_under(paths.state_dir):
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
        swept.append(f"loop {dev}")
    for target in sorted(_mounts_under(paths.state_dir), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        swept.append(f"mount {target}")
    for hierarchy in hostlib.cgroup_hierarchies():
        for cg in (hierarchy / hostlib.CGROUP_GROUP).glob(net.prefix(paths.name) + "*"):
            gone = hostlib.remove_cgroup_tree(cg)
            swept.append(f"cgroup {cg}" + ("" if gone else " (still busy: not removed)"))
        with contextlib.suppress(OSError):  # shared by all labs: goes once the last is gone
            (hierarchy / hostlib.CGROUP_GROUP).rmdir()
    bridge = net.bridge_name(paths.name)
    for link in sorted(net.lab_links(paths.name), key=lambda n: n == bridge):
        net.delete_link(link)
        swept.append(f"link {link}")
    for item in swept:
        log(f"lab {paths.name}: removed {item}")
    return swept
