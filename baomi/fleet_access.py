"""The collector host's access to the fleet (R-AUD: regular audits; R-OFF: HR's offboarding).

Threat model: the operator and the collector are trusted; fleet hosts are not.  What
``baomi collector-deploy`` gives a collector host, all under :data:`FLEET_DIR` (root, 0700):

- ``inventory.py``: the controller's hosts, groups, addresses and ports, connecting as root
  with the collector's own key and the shipped ``known_hosts`` (``StrictHostKeyChecking
  yes``): :func:`fleet_inventory`;
- ``known_hosts``: the fleet's host keys exactly as the controller pins them (the inventory's
  ``ssh_known_hosts_file`` of every host), never learnt on first use: :func:`known_hosts`;
- ``policy.yaml``: the controller's policy;
- ``id_ed25519``: a key made ON the collector host (0600; the private half never leaves it),
  whose public half the deploy authorises on every inventory host for root, restricted to
  the collector's addresses: :func:`key_line`.

Pure text and checks: the deploy (``deploy/collector.py``) writes it, the control
(``baomi/controls/collector.py``) checks the timer that uses it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from baomi.controls.supervised import NETWORK_SANDBOX

FLEET_DIR = "/etc/baomi/collector/fleet"
KEY = f"{FLEET_DIR}/id_ed25519"
PUBLIC_KEY = f"{KEY}.pub"
ADDRESSES = f"{FLEET_DIR}/addresses"
INVENTORY = f"{FLEET_DIR}/inventory.py"
KNOWN_HOSTS = f"{FLEET_DIR}/known_hosts"
POLICY = f"{FLEET_DIR}/policy.yaml"
AUDIT_STATE = "/var/lib/baomi-audit"  # root 0700: the run's session.json, CA copy, reports
AUDIT_CA = f"{AUDIT_STATE}/ca.pem"
SERVICE = "baomi-audit.service"
TIMER = "baomi-audit.timer"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE}"
TIMER_PATH = f"/etc/systemd/system/{TIMER}"
SESSION_NAME = "collector (audit)"
SESSION_HOURS = 3
RUN_SECONDS = 2 * 3600  # TimeoutStartSec of one audit run
RANDOMIZED_DELAY = 600  # seconds: runs of several collectors do not start at the same second
HEADER = "# Managed by baomi: the regular audit from the collector (R-AUD). Local edits are " \
         "reverted.\n"
_PLAIN = re.compile(r"[A-Za-z0-9_.:%-]+")
_PUBLIC = re.compile(r"ssh-ed25519 [A-Za-z0-9+/]+={0,2}")


class FleetError(Exception):
    """The fleet cannot be given to the collector as it is; one line says what and where."""


def key_comment(collector: str) -> str:
    """The comment that marks the collector's key in ``authorized_keys`` (one per collector)."""
    if not _PLAIN.fullmatch(collector):
        raise FleetError(f"collector host name {collector!r} is not a plain name")
    return f"baomi-collector-fleet@{collector}"


def key_line(public_key: str, addresses: list[str], collector: str) -> str:
    """The ``authorized_keys`` line for root on a fleet host: the collector's own key, usable
    only from the collector's addresses, without forwarding, agent or pty (``restrict``)."""
    parts = public_key.split()
    if len(parts) < 2 or not _PUBLIC.fullmatch(" ".join(parts[:2])):
        raise FleetError(f"{collector}: the collector's public key is not one ssh-ed25519 key "
                         f"({public_key[:40]!r})")
    good = []
    for address in addresses:
        try:
            good.append(str(ipaddress.ip_address(address)))
        except ValueError:
            raise FleetError(f"{collector}: {address!r} is not an IP address") from None
    if not good:
        raise FleetError(f"{collector}: no address to restrict the collector's key to "
                         "(from=)")
    return (f'restrict,from="{",".join(dict.fromkeys(good))}" {parts[0]} {parts[1]} '
            f"{key_comment(collector)}")


@dataclass(frozen=True)
class FleetHost:
    name: str
    groups: tuple[str, ...]
    hostname: str
    port: int | None
    known_hosts_file: str | None


def fleet_hosts(hosts: Mapping[str, tuple[set[str], Mapping[str, object]]]) -> list[FleetHost]:
    """Each inventory host (name → (groups, data)) as the collector will reach it; a host
    without pinned host keys is refused (the collector never trusts a key on first use)."""
    out = []
    for name, (groups, data) in hosts.items():
        hostname = str(data.get("ssh_hostname", name))
        port = data.get("ssh_port")
        known = data.get("ssh_known_hosts_file")
        for what, value in (("name", name), ("ssh_hostname", hostname),
                            *((g, g) for g in groups)):
            if not _PLAIN.fullmatch(value):
                raise FleetError(f"inventory host {name}: {what} {value!r} is not a plain value")
        if not known:
            raise FleetError(f"inventory host {name}: no ssh_known_hosts_file (the collector "
                             "gets the fleet's pinned host keys, never trusts a key on first "
                             "use): give one")
        try:
            number = int(str(port)) if port is not None else None
        except ValueError:
            raise FleetError(f"inventory host {name}: ssh_port {port!r} is not a number") \
                from None
        out.append(FleetHost(name, tuple(sorted(groups)), hostname, number, str(known)))
    return out


def fleet_inventory(hosts: list[FleetHost]) -> str:
    """A pyinfra inventory (the lab's shape: ``all`` carries the data, groups list names)."""
    out = ['"""The fleet as the collector reaches it (written by baomi collector-deploy)."""',
           "", "all = ["]
    for h in hosts:
        data: dict[str, object] = {"ssh_hostname": h.hostname, "ssh_user": "root",
                                   "ssh_key": KEY, "ssh_known_hosts_file": KNOWN_HOSTS,
                                   "ssh_strict_host_key_checking": "yes"}
        if h.port is not None:
            data["ssh_port"] = h.port
        out.append(f"    ({h.name!r}, {data!r}),")
    out.append("]")
    for group in sorted({g for h in hosts for g in h.groups}):
        out.append(f"{group} = {[h.name for h in hosts if group in h.groups]!r}")
    return "\n".join(out) + "\n"


def known_hosts(files: Mapping[str, str]) -> str:
    """The pinned host keys of the fleet: the lines of every known_hosts file the inventory
    names (path → text), comments and blank lines dropped, each line once."""
    lines: dict[str, None] = {}
    for text in files.values():
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines[line.strip()] = None
    if not lines:
        raise FleetError("the inventory's known_hosts files hold no host key")
    return "".join(f"{line}\n" for line in lines)


def from_inventory(path: str) -> tuple[str, str]:
    """(the collector's inventory.py, its known_hosts) from the controller's inventory file."""
    from pathlib import Path

    from baomi.inventory import InventoryError, read

    try:
        hosts = fleet_hosts({n: (h.groups, h.data) for n, h in read(path).items()})
    except InventoryError as exc:
        raise FleetError(str(exc)) from None
    if not hosts:
        raise FleetError(f"{path}: no host in the inventory")
    pinned = {}
    for known in sorted({str(h.known_hosts_file) for h in hosts}):
        try:
            pinned[known] = Path(known).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FleetError(f"{known}: cannot read the fleet's pinned host keys: {exc}") \
                from None
    return fleet_inventory(hosts), known_hosts(pinned)


# ---- The waivers' host → groups map (the web service's, root:baomi-collector 0640) ----------
# The service cannot read FLEET_DIR's inventory (root 0700), yet a waiver may name a group
# (``hosts: [workstations]``): the deploy ships the inventory's names and groups only (no
# address, user or key) as JSON, {host: [group, ...]}; collector/waiving.py reads it.

GROUPS_MAP = "/etc/baomi/collector-groups.json"


def groups_map_text(groups: Mapping[str, Iterable[str]]) -> str:
    """The map's JSON text: hosts and their groups sorted (the same inventory, the same bytes),
    each name a plain one (what :func:`fleet_hosts` accepts)."""
    out: dict[str, list[str]] = {}
    for name in sorted(groups):
        members = sorted(groups[name])
        for value in (name, *members):
            if not isinstance(value, str) or not _PLAIN.fullmatch(value):
                raise FleetError(f"inventory host {name}: {value!r} is not a plain name")
        out[name] = members
    return json.dumps(out, indent=1, sort_keys=True) + "\n"


def groups_map_from_inventory(path: str) -> str:
    """:func:`groups_map_text` of the controller's inventory file (FleetError: one line)."""
    from baomi.inventory import InventoryError, host_groups

    try:
        groups = host_groups(path)
    except InventoryError as exc:
        raise FleetError(str(exc)) from None
    if not groups:
        raise FleetError(f"{path}: no host in the inventory")
    return groups_map_text(groups)


def parse_groups_map(text: str, source: str = GROUPS_MAP) -> dict[str, frozenset[str]]:
    """The map read back: a JSON object of host name → list of group names; anything else is
    FleetError naming ``source`` and what is wrong (one line)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FleetError(f"{source}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FleetError(f"{source}: expected an object of host name → list of group names, "
                         f"got {type(data).__name__}")
    out: dict[str, frozenset[str]] = {}
    for name, members in data.items():
        if not isinstance(members, list) or not all(isinstance(g, str) for g in members):
            raise FleetError(f"{source}: host {name!r}: expected a list of group names, got "
                             f"{json.dumps(members)[:80]}")
        out[name] = frozenset(members)
    return out


def audit_argv(venv: str) -> list[str]:
    """The run: every inventory host's checks, reports in the state folder, uploaded."""
    return [f"{venv}/bin/baomi", "audit", "-i", INVENTORY, "--policy", POLICY,
            "--report", f"{AUDIT_STATE}/reports", "--upload"]


def session_argv(venv: str, state_dir: str, port: int, end: bool = False) -> list[str]:
    argv = [f"{venv}/bin/baomi", "collector", "service-session", state_dir,
            "--state", AUDIT_STATE, "--name", SESSION_NAME, "--role", "auditor"]
    if end:
        return [*argv, "--end"]
    return [*argv, "--hours", str(SESSION_HOURS), "--url", f"https://localhost:{port}",
            "--ca", AUDIT_CA]


def _systemd_quote(argv: list[str]) -> str:
    """A command line for ExecStart= (systemd's quoting: double quotes, no shell)."""
    out = []
    for arg in argv:
        if '"' in arg or "\\" in arg or "$" in arg or "%" in arg or "\n" in arg:
            raise FleetError(f"{arg!r}: cannot be put on a unit's command line")
        out.append(f'"{arg}"' if " " in arg or not arg else arg)
    return " ".join(out)


def service_text(venv: str, state_dir: str, env_file: str, port: int) -> str:
    """``baomi-audit.service``: one audit run as root, its own session, SSH out allowed.

    Exit 1 (the audit found failures) is a successful run: it was uploaded; exit 2 (could not
    audit) fails the unit, which the check reports."""
    return HEADER + "\n".join([
        "[Unit]",
        "Description=baomi: audit of the fleet from the collector, uploaded (R-AUD)",
        "After=network-online.target baomi-collector.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"Environment=BAOMI_STATE_DIR={AUDIT_STATE} HOME={AUDIT_STATE}",
        f"EnvironmentFile={env_file}",
        f"ExecStartPre={_systemd_quote(session_argv(venv, state_dir, port))}",
        f"ExecStart={_systemd_quote(audit_argv(venv))}",
        f"ExecStopPost={_systemd_quote(session_argv(venv, state_dir, port, end=True))}",
        "SuccessExitStatus=1",
        f"TimeoutStartSec={RUN_SECONDS}",
        "UMask=0077",
        f"ReadWritePaths={AUDIT_STATE} {state_dir}",
        *NETWORK_SANDBOX,
        # root, but only what the run needs: dropping to the collector's user for its session.
        "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_DAC_OVERRIDE",
        "",
    ])


def timer_text(schedule: str) -> str:
    """``baomi-audit.timer``: the policy's ``reporting.schedule``; a run missed while the host
    was off runs at the next boot (Persistent)."""
    if not schedule or "\n" in schedule:
        raise FleetError(f"reporting.schedule {schedule!r}: not one systemd calendar line")
    return HEADER + "\n".join([
        "[Unit]",
        "Description=baomi: regular audit of the fleet (reporting.schedule, R-AUD)",
        "",
        "[Timer]",
        f"OnCalendar={schedule}",
        "Persistent=true",
        f"RandomizedDelaySec={RANDOMIZED_DELAY}",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])


def validate_schedule_command(schedule: str) -> str:
    """Shell: systemd's own reading of the schedule (no other parser agrees with it)."""
    return f"systemd-analyze calendar {shlex.quote(schedule)} >/dev/null"


# ---- HR's offboarding, run as root (R-OFF, R-RET) -------------------------------------------
# The web service (user baomi-collector) records HR's request in the database and touches
# TRIGGER; root's runner reads the request from the database, checks it again with the fleet's
# policy and runs `baomi offboard` with this folder's inventory, known_hosts and key.  The web
# service never gets the key and passes root no argument: the runner's command line is fixed.

OFFBOARD_STATE = "/var/lib/baomi-offboard"  # root 0700: the ledger, session.json, run output
OFFBOARD_SERVICE = "baomi-offboard.service"
OFFBOARD_PATH = "baomi-offboard.path"
OFFBOARD_TIMER = "baomi-offboard.timer"
OFFBOARD_SERVICE_PATH = f"/etc/systemd/system/{OFFBOARD_SERVICE}"
OFFBOARD_PATH_PATH = f"/etc/systemd/system/{OFFBOARD_PATH}"
OFFBOARD_TIMER_PATH = f"/etc/systemd/system/{OFFBOARD_TIMER}"
OFFBOARD_TRIGGER = "offboard.trigger"  # in the collector's folder; its content is never read
# The service's copy of the policy (root:baomi-collector 0640) for the form's own checks: the
# runner judges with FLEET_DIR's copy, which the service cannot read.
WEB_POLICY = "/etc/baomi/collector-policy.yaml"
OFFBOARD_CALENDAR = "*:0/15"  # the runner's fallback poll and the daily purge's clock
OFFBOARD_RUN_SECONDS = 4 * 3600  # TimeoutStartSec: the purge may take 3 h, requests first
OFFBOARD_HEADER = "# Managed by baomi: HR's offboarding from the collector, run as root (R-OFF)." \
                  " Local edits are reverted.\n"


def offboard_argv(venv: str, state_dir: str) -> list[str]:
    """The runner's fixed command line (nothing of it comes from the web service)."""
    return [f"{venv}/bin/python", "-m", "baomi.collector.offboard_runner", state_dir]


def offboard_service_text(venv: str, state_dir: str, env_file: str) -> str:
    """``baomi-offboard.service``: every queued request, then the day's purge when due, as
    root with the fleet's key; the database work drops to the collector's user."""
    return OFFBOARD_HEADER + "\n".join([
        "[Unit]",
        "Description=baomi: HR's offboarding requests and the daily purge, from the collector "
        "(R-OFF, R-RET)",
        "After=network-online.target baomi-collector.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"Environment=BAOMI_STATE_DIR={OFFBOARD_STATE} HOME={OFFBOARD_STATE}",
        f"EnvironmentFile={env_file}",
        f"ExecStart={_systemd_quote(offboard_argv(venv, state_dir))}",
        f"TimeoutStartSec={OFFBOARD_RUN_SECONDS}",
        "UMask=0077",
        f"ReadWritePaths={OFFBOARD_STATE} {state_dir}",
        *NETWORK_SANDBOX,
        "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_DAC_OVERRIDE",
        "",
    ])


def offboard_path_text(state_dir: str) -> str:
    """``baomi-offboard.path``: the runner starts as soon as the dashboard records a request."""
    return OFFBOARD_HEADER + "\n".join([
        "[Unit]",
        "Description=baomi: start the offboarding runner when HR records a request (R-OFF)",
        "",
        "[Path]",
        # PathExists, not PathModified: a request recorded while a run is ending leaves the
        # file (the runner removes it before it looks for requests), so the unit starts again.
        f"PathExists={state_dir}/{OFFBOARD_TRIGGER}",
        f"Unit={OFFBOARD_SERVICE}",
        "",
        "[Install]",
        "WantedBy=paths.target",
        "",
    ])


def offboard_timer_text() -> str:
    """``baomi-offboard.timer``: a request whose trigger was missed (it arrived while a run was
    ending, or at another collector on the same database) and the daily purge."""
    return OFFBOARD_HEADER + "\n".join([
        "[Unit]",
        "Description=baomi: offboarding runner poll and daily purge (R-OFF, R-RET)",
        "",
        "[Timer]",
        f"OnCalendar={OFFBOARD_CALENDAR}",
        "Persistent=true",
        f"Unit={OFFBOARD_SERVICE}",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])
