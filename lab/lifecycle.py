"""`lab up`, `lab status`, `lab down`: the whole life of a lab, as plain functions.

The CLI and the pytest fixture both call these. Everything a lab makes is recorded
in lab.json before it can leak (netns and veth before the host starts, PIDs as soon as
they exist), and `down` additionally sweeps for anything carrying the lab's prefix, so
a crashed run is cleaned up as well as a healthy one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from baomi.lab import hosts as hostlib
from baomi.lab import net, procs, render, sweep
from baomi.lab import vm as labvm
from baomi.lab.errors import LabError
from baomi.lab.image import ensure_image, file_lock
from baomi.lab.state import (
    HostRecord,
    LabPaths,
    LabState,
    base_dir,
    cache_dir,
    check_host_name,
    load_state,
    require_root,
    save_state,
)

Log = Callable[[str], None]

ROLE_PREFIX = {"servers": "srv", "workstations": "ws", "backup": "bak", "collector": "col",
               "vm": "vm"}
ROLE_GROUPS = {
    "servers": ["servers"],
    "workstations": ["workstations"],
    "backup": ["backup"],
    "collector": ["collector"],
    "vm": ["servers", "vm"],
}


@dataclass(frozen=True)
class Request:
    """How many hosts to add. Counts per role are totals; `systemd_*` of them boot systemd."""

    servers: int = 0
    workstations: int = 0
    backup: int = 0
    # The collector's hosts (group `collector`, col1...): where the findings service runs.
    collector: int = 0
    systemd_servers: int = 0
    systemd_workstations: int = 0
    systemd_collector: int = 0
    vm: bool = False

    def is_empty(self) -> bool:
        return not (self.servers or self.workstations or self.backup or self.collector
                    or self.vm)

    def validate(self) -> None:
        for label, n in (("servers", self.servers), ("workstations", self.workstations),
                         ("backup", self.backup), ("collector", self.collector),
                         ("systemd-servers", self.systemd_servers),
                         ("systemd-workstations", self.systemd_workstations),
                         ("systemd-collector", self.systemd_collector)):
            if n < 0 or n > 50:
                raise LabError(f"--{label} {n}: use a number from 0 to 50")
        for role, total, n_systemd in self.role_counts():
            if n_systemd > total:
                raise LabError(f"--systemd-{role} {n_systemd} is more than --{role} {total} "
                               f"(it says how many OF the {role} boot systemd)")

    def role_counts(self) -> tuple[tuple[str, int, int], ...]:
        """(role, hosts, how many of them boot systemd) for every container role."""
        return (("servers", self.servers, self.systemd_servers),
                ("workstations", self.workstations, self.systemd_workstations),
                ("backup", self.backup, 0),
                ("collector", self.collector, self.systemd_collector))


# The demo lab: 2 servers (srv2 boots systemd), 1 workstation, 1 backup host.
DEFAULT_REQUEST = Request(servers=2, workstations=1, backup=1, systemd_servers=1)


@dataclass(frozen=True)
class PlannedHost:
    name: str
    role: str
    flavour: str
    groups: tuple[str, ...]


def plan_hosts(existing: list[str], req: Request) -> list[PlannedHost]:
    """Name the new hosts, numbering on from the lab's existing ones (srv3 after srv2).

    Within a role the plain hosts come first, so the default demo's systemd host is srv2.
    """
    taken = set(existing)
    plan: list[PlannedHost] = []

    def next_name(role: str) -> str:
        pfx = ROLE_PREFIX[role]
        nums = [int(m.group(1)) for n in taken if (m := re.fullmatch(pfx + r"(\d+)", n))]
        name = check_host_name(f"{pfx}{max(nums, default=0) + 1}")
        taken.add(name)
        return name

    for role, total, n_systemd in req.role_counts():
        for i in range(total):
            flavour = "systemd" if i >= total - n_systemd else "plain"
            plan.append(PlannedHost(next_name(role), role, flavour, tuple(ROLE_GROUPS[role])))
    if req.vm:
        if any(n.startswith("vm") for n in taken):
            raise LabError("this lab already has a VM (vm1); at most one per lab")
        plan.append(PlannedHost(next_name("vm"), "vm", "vm", tuple(ROLE_GROUPS["vm"])))
    return plan


def etc_hosts(state: LabState, extra: list[tuple[str, str]], own: str) -> str:
    """/etc/hosts for a new host: itself plus every lab host known at its start."""
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{own}", "::1\tlocalhost ip6-localhost"]
    # A host being started may already be in the state and in EXTRA: list each name once.
    pairs = dict.fromkeys([(h.address, h.name) for h in state.hosts] + extra)
    lines += [f"{addr}\t{name}" for addr, name in pairs if name != own]
    return "\n".join(lines) + "\n"


# --- up -------------------------------------------------------------------------------


@dataclass
class UpResult:
    state: LabState
    paths: LabPaths
    added: list[str] = field(default_factory=list)
    image_seconds: float | None = None
    seconds: float = 0.0


def healthy(state: LabState) -> bool:
    """Every recorded host still runs (and its netns exists) and the bridge is there."""
    if not net.link_exists(state.bridge):
        return False
    for h in state.hosts:
        if not procs.pid_alive(h.pid):
            return False
        if h.netns and net.netns_inode(h.netns) is None:
            return False
    return True


def _new_state(paths: LabPaths) -> LabState:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.state_dir, 0o700)
    paths.marker.write_text("state of a baomi lab; `baomi lab down` deletes this directory\n")
    paths.control_dir.mkdir(exist_ok=True)
    if not paths.key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                        f"baomi-lab-{paths.name}", "-f", str(paths.key)], check=True)
    os.chmod(paths.key, 0o600)
    octet = net.choose_octet(paths.name, net.octets_in_use(paths.state_dir.parent, paths.name))
    subnet = net.subnet_for(octet)
    state = LabState(name=paths.name, subnet=subnet, bridge=net.bridge_name(paths.name),
                     gateway=net.gateway_for(subnet))
    save_state(paths, state)
    net.ensure_bridge(state.bridge, state.gateway)
    return state


def write_outputs(paths: LabPaths, state: LabState) -> None:
    """(Re)write known_hosts, ssh_config and inventory from the record."""
    for target, text in ((paths.known_hosts, render.known_hosts(state)),
                         (paths.ssh_config, render.ssh_config(state, paths)),
                         (paths.inventory, render.inventory(state, paths))):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)


def ssh(paths: LabPaths, host: str, command: str, timeout: float = 30.0,
        ) -> subprocess.CompletedProcess[str]:
    """Run COMMAND on HOST with real ssh through the lab's ssh_config."""
    return subprocess.run(["ssh", "-F", str(paths.ssh_config), host, command],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


def _start_one(paths: LabPaths, state: LabState, ph: PlannedHost, rec: HostRecord,
               lower: Path | None, nspawn: Path | None, hosts_file: str) -> HostRecord:
    """Give one host its identity, start it, wait for its sshd; runs in a worker thread."""
    if ph.flavour == "vm":
        return _start_vm(paths, state, rec, hosts_file)
    assert lower is not None and rec.netns is not None  # noqa: S101 type narrowing
    layout = hostlib.HostLayout(lower=lower, host_dir=paths.host_dir(ph.name))
    keys = hostlib.prepare_upper(layout, ph.name, paths.authorized_key(), hosts_file)
    rec.host_keys, rec.host_key = keys, keys[0]
    if ph.flavour == "plain":
        rec.pid, rec.leader_pid = hostlib.start_plain(layout, ph.name, rec.netns)
    else:
        assert nspawn is not None  # noqa: S101 type narrowing
        rec.pid = hostlib.start_systemd(layout, ph.name, rec.netns, nspawn)
    hostlib.wait_ssh(rec.address, rec.pid, ph.name, layout.log,
                     timeout=30.0 if ph.flavour == "plain" else 90.0)
    return rec


def _start_vm(paths: LabPaths, state: LabState, rec: HostRecord, hosts_file: str) -> HostRecord:
    """Boot the VM flavour (lab/vm.py) on the lab's bridge; start_vm waits for its sshd."""
    image = labvm.ensure_vm_image(cache_dir())
    # lab/vm.py keeps its files in STATE_DIR/NAME, i.e. the same hosts/vm1 as other hosts;
    # the tap carries the lab prefix so a crashed run's sweep finds it.
    vms_dir = paths.host_dir(rec.name).parent
    vms_dir.mkdir(parents=True, exist_ok=True)
    info = labvm.start_vm(image, name=rec.name, state_dir=vms_dir, bridge=state.bridge,
                          address=rec.address, prefixlen=net.PREFIXLEN,
                          authorized_key=paths.authorized_key(),
                          tap=net.host_ifname(paths.name, rec.name), etc_hosts=hosts_file)
    rec.pid = int(info.pid)
    rec.host_key = " ".join(str(info.host_key).split()[:2])
    rec.host_keys = [rec.host_key]
    rec.extra = {"vm": _jsonable(info)}
    return rec


def _jsonable(obj: Any) -> Any:
    data = asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else vars(obj)
    return json.loads(json.dumps(data, default=str))


@contextmanager
def _lab_lock(name: str) -> Iterator[None]:
    """One `up`/`down` per lab at a time (a CLI call racing the test fixture, say)."""
    LabPaths.for_lab(name)  # validates the name before it becomes a file name
    with file_lock(base_dir() / f".{name}.lock"):
        yield


def up(name: str, req: Request | None = None, log: Log = lambda _m: None) -> UpResult:
    """Start lab NAME or add REQ's hosts to it; no request on a new lab means the demo lab."""
    require_root()
    with _lab_lock(name):
        return _up(name, req, log)


def _up(name: str, req: Request | None, log: Log) -> UpResult:
    t0 = time.monotonic()
    paths = LabPaths.for_lab(name)
    try:
        state = load_state(paths)
    except LabError:
        state = None
        log(f"lab {name}: damaged state record; clearing it")
        _down(name, log=log)
    if state is not None and not healthy(state):
        log(f"lab {name}: some hosts are gone (crashed run?); clearing the lab first")
        _down(name, log=log)
        state = None
    created = state is None
    if state is None:
        sweep.clear_leftovers(paths, log)
        state = _new_state(paths)
    if req is None or req.is_empty():
        req = DEFAULT_REQUEST if created or not state.hosts else Request()
    req.validate()
    result = UpResult(state=state, paths=paths)
    plan = plan_hosts([h.name for h in state.hosts], req)
    if not plan:
        write_outputs(paths, state)
        result.seconds = time.monotonic() - t0
        return result

    new: list[HostRecord] = []
    try:
        containers = [p for p in plan if p.flavour != "vm"]
        lower = None
        if containers:
            image = ensure_image(cache_dir())
            result.image_seconds = image.built_seconds
            lower = image.rootfs
            state.image_key = image.key
        nspawn = (hostlib.ensure_nspawn(cache_dir())
                  if any(p.flavour == "systemd" for p in plan) else None)
        net.ensure_bridge(state.bridge, state.gateway)
        used = state.used_addresses() | {state.gateway}
        for ph in plan:
            addr = net.next_address(state.subnet, used)
            used.add(addr)
            rec = HostRecord(name=ph.name, flavour=ph.flavour, groups=list(ph.groups),
                             address=addr, pid=0)
            state.hosts.append(rec)
            new.append(rec)
        save_state(paths, state)  # record first, so a crash below can still be cleaned
        for rec in new:
            if rec.flavour != "vm":
                rec.netns, rec.veth = net.add_host_network(name, rec.name, state.bridge,
                                                           rec.address)
        save_state(paths, state)
        pairs = [(r.address, r.name) for r in new]
        by_name = {p.name: p for p in plan}
        with ThreadPoolExecutor(max_workers=min(8, len(new))) as pool:
            futures = [pool.submit(_start_one, paths, state, by_name[r.name], r, lower, nspawn,
                                   etc_hosts(state, pairs, r.name)) for r in new]
            errors = []
            for fut in futures:
                try:
                    fut.result()
                except LabError as exc:
                    errors.append(str(exc))
            save_state(paths, state)
            if errors:
                raise LabError("; ".join(errors))
        write_outputs(paths, state)
        _warm_up(paths, [r.name for r in new])
    except BaseException:
        # Leave nothing half-made: a new lab goes entirely, an old one loses only new hosts.
        if created:
            _down(name, log=lambda _m: None)
        else:
            _stop_hosts(paths, new)
            for rec in new:
                _remove_host_network(rec)
                state.hosts.remove(rec)
            save_state(paths, state)
            write_outputs(paths, state)
        raise
    result.added = [r.name for r in new]
    result.seconds = time.monotonic() - t0
    log(f"lab {name}: started {', '.join(result.added)} in {result.seconds:.1f}s")
    return result


def _warm_up(paths: LabPaths, names: list[str]) -> None:
    """Log in once per host: proves key, pinned host key and login work, opens the master."""
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        procs = list(pool.map(lambda n: (n, ssh(paths, n, "true", timeout=60)), names))
    bad = [f"{n}: {p.stderr.strip() or p.returncode}" for n, p in procs if p.returncode != 0]
    if bad:
        raise LabError("ssh login failed: " + "; ".join(bad))


# --- down -----------------------------------------------------------------------------


@dataclass
class DownResult:
    stopped: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _stop_host(paths: LabPaths, rec: HostRecord) -> None:
    if rec.flavour == "plain":
        # sshd is PID 1 of the host's pid namespace: killing it ends every host process.
        procs.kill(rec.pid)
        procs.wait_gone([rec.pid], 5)
        procs.kill(rec.leader_pid)
    elif rec.flavour == "systemd":
        # SIGTERM asks nspawn for an orderly poweroff of the container.
        procs.kill(rec.pid, signal.SIGTERM)
        if not procs.wait_gone([rec.pid], 15):
            procs.kill(rec.pid)
        if rec.netns:
            procs.kill_netns_processes(rec.netns)
            for cg in hostlib.host_cgroups(rec.netns):
                hostlib.remove_cgroup_tree(cg)
    elif rec.flavour == "vm":
        labvm.stop_vm(paths.host_dir(rec.name).parent, rec.name)


def _stop_hosts(paths: LabPaths, recs: list[HostRecord]) -> None:
    if not recs:
        return
    with ThreadPoolExecutor(max_workers=len(recs)) as pool:
        list(pool.map(lambda r: _stop_host(paths, r), recs))


def _remove_host_network(rec: HostRecord) -> None:
    if rec.netns:
        procs.kill_netns_processes(rec.netns)
        net.delete_netns(rec.netns)
    if rec.veth:
        net.delete_link(rec.veth)


def down(name: str, log: Log = lambda _m: None) -> DownResult:
    """Remove lab NAME entirely; idempotent, and works from a damaged or missing record."""
    require_root()
    with _lab_lock(name):
        return _down(name, log)


def _down(name: str, log: Log) -> DownResult:
    t0 = time.monotonic()
    paths = LabPaths.for_lab(name)
    result = DownResult()
    try:
        state = load_state(paths)
    except LabError:
        state = None
    if paths.control_dir.is_dir():
        for sock in paths.control_dir.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"],
                           capture_output=True, check=False, timeout=10)
    if state is not None:
        _stop_hosts(paths, state.hosts)
        for rec in state.hosts:
            _remove_host_network(rec)
        net.delete_link(state.bridge)
        result.stopped = [h.name for h in state.hosts]
    result.swept = sweep.clear_vms(paths) + sweep.clear_leftovers(paths, log)
    if paths.marker.exists():
        shutil.rmtree(paths.state_dir, ignore_errors=True)
    result.seconds = time.monotonic() - t0
    return result


# --- status ---------------------------------------------------------------------------


@dataclass
class HostStatus:
    name: str
    groups: list[str]
    flavour: str
    address: str
    pid: int
    running: bool
    banner: str | None
    ssh_ok: bool


@dataclass
class LabStatus:
    name: str
    exists: bool
    subnet: str = ""
    bridge: str = ""
    state_dir: str = ""
    inventory: str = ""
    ssh_config: str = ""
    known_hosts: str = ""
    key: str = ""
    hosts: list[HostStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(name: str) -> LabStatus:
    """What runs, and whether each host's sshd answers (banner, then a real `ssh true`)."""
    require_root()
    paths = LabPaths.for_lab(name)
    state = load_state(paths)
    if state is None:
        return LabStatus(name=name, exists=False)

    def probe(h: HostRecord) -> HostStatus:
        banner = hostlib.ssh_banner(h.address)
        ok = False
        if banner:
            try:
                ok = ssh(paths, h.name, "true", timeout=15).returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
        return HostStatus(name=h.name, groups=h.groups, flavour=h.flavour, address=h.address,
                          pid=h.pid, running=procs.pid_alive(h.pid), banner=banner,
                          ssh_ok=ok)

    with ThreadPoolExecutor(max_workers=max(1, len(state.hosts))) as pool:
        host_states = list(pool.map(probe, state.hosts))
    return LabStatus(name=name, exists=True, subnet=state.subnet, bridge=state.bridge,
                     state_dir=str(paths.state_dir), inventory=str(paths.inventory),
                     ssh_config=str(paths.ssh_config), known_hosts=str(paths.known_hosts),
                     key=str(paths.key), hosts=host_states)
