"""The resident agent on a managed host (R-FIM, R-LOG, R-SEC).

Not applied by ``baomi apply``: ``baomi agent-deploy -i INVENTORY`` (``deploy/agent.py``)
installs it, since enrolling needs a one-time token the controller asks the collector for;
``checks/test_agent.py`` verifies it.  What "deployed" means on a host outside group
``collector``:

- the venv ``/opt/baomi/agent`` (a link to a venv made from shipped ``baomi[agent]`` wheels,
  :mod:`baomi.deploy.wheels`) runs ``baomi``;
- the agent is enrolled: ``/var/lib/baomi-agent/enrolment.json`` (the credential) is root's,
  0600, and names the policy's ``collector.url``;
- the service runs: the sandboxed unit ``baomi-agent.service`` (Restart=always), or, on a host
  without systemd, a supervisor loop (its PID in ``/run/baomi-agent.pid``) — the check's
  ``found`` says which;
- its heartbeat is fresh: the agent's own record (``status.json``, written by the running
  agent) of its last request the collector answered is younger than
  :func:`heartbeat_limit`.  Why the agent's record and not the collector's ``GET /agents``:
  that endpoint needs a person's session (role it/auditor), and a check reading hosts over SSH
  should not need one; the agent's record is only written after a 200 from the collector over
  TLS verified by the pinned CA, so a stale or missing one means no heartbeat arrived.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from baomi.controls.contract import Control, HostContext, check
from baomi.controls.supervised import CONFINED, INSTALL, supervisor_head, unit_file_finding
from baomi.findings import Finding
from baomi.observe import cat, script, sections

COLLECTOR_GROUP = "collector"
VENV = "/opt/baomi/agent"
STATE_DIR = "/var/lib/baomi-agent"
CONF_DIR = "/etc/baomi/agent"
POLICY_FILE = f"{CONF_DIR}/policy.yaml"
CA_FILE = f"{CONF_DIR}/collector-ca.pem"
ENROLMENT = f"{STATE_DIR}/enrolment.json"
UNIT = "baomi-agent.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
SUPERVISOR = "/usr/local/sbin/baomi-agent-supervise"
PIDFILE = "/run/baomi-agent.pid"
LOG = "/var/log/baomi-agent.log"
SYSCTL_FILE = "/etc/sysctl.d/60-baomi-agent.conf"
# Measured (docs/agent.md): at the default 16384 watchdog lost 86 % of a 100,000-file burst;
# at 1,048,576 nothing.  Watches: one per watched folder.
SYSCTL = {"fs.inotify.max_queued_events": 1048576, "fs.inotify.max_user_watches": 1048576}
HEADER = "# Managed by baomi: the resident agent (R-FIM, R-LOG). Local edits are reverted.\n"

INSTALLED = check("agent.installed", "the agent's venv is complete and runs baomi")
RUNNING = check("agent.running", "the agent runs under systemd (or the supervisor)")
ENROLLED = check("agent.enrolled", "enrolled with the policy's collector, credential 0600")
HEARTBEAT = check("agent.heartbeat", "the collector answered the agent recently", ("R-LOG",))
CHECKS = (INSTALLED, RUNNING, ENROLLED, HEARTBEAT)


@dataclass(frozen=True)
class Desired:
    applies: bool
    collector: str  # the policy's collector.url: what the agent ships to
    groups: tuple[str, ...]  # the host's inventory groups: which sensitive paths apply
    spool_dir: str
    heartbeat_limit: float
    unit: str
    supervisor: str
    sysctl: str


def heartbeat_limit(ship_interval: float) -> float:
    """How old the last answered request may be: three heartbeats missed, plus the 10 s the
    agent may take to write its status file."""
    return 3 * ship_interval + 10


def unit_text(argv: list[str], spool_dir: str) -> str:
    """Restarted always; sandboxed, but still able to READ every sensitive path.

    It runs as root (sensitive folders are 0700/0750 of other owners; the self-check reads
    what the checks read).  ProtectSystem=strict makes the whole tree read-only except its
    state and spool folders.  ProtectHome=read-only, not yes: sensitive paths may live under
    /home (workstations' working copies), and "yes" would hide them — the agent would see an
    empty folder and report every file deleted.  No PrivateTmp or PrivateDevices for the same
    reason (a policy may name a path there; the disk-encryption evidence reads block devices).
    Nice 10 and best-effort I/O 7 for the service; the scan threads drop themselves to nice 19
    (agent/scan.py).  Not the idle I/O class: it can starve without bound under sustained I/O,
    and a finding must reach the spool's fsync before anything else.
    """
    writable = " ".join(dict.fromkeys([STATE_DIR, spool_dir]))
    return HEADER + "\n".join([
        "[Unit]",
        "Description=baomi agent: baseline and real-time watch of sensitive paths",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={shlex.join(argv)}",
        "Restart=always",
        "RestartSec=1",
        "UMask=0077",
        "Nice=10",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=7",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={writable}",
        "ProtectHome=read-only",
        *CONFINED,
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        *INSTALL,
    ])


def supervisor_text(argv: list[str]) -> str:
    """For hosts without systemd: a loop restarting the agent, its PID in PIDFILE."""
    return "\n".join([
        *supervisor_head(HEADER, "agent", PIDFILE),
        "while :; do",
        f"  nice -n 10 {shlex.join(argv)}",
        "  sleep 1",
        "done",
        "",
    ])


def sysctl_text() -> str:
    return HEADER + "".join(f"{k} = {v}\n" for k, v in SYSCTL.items())


def desired(ctx: HostContext) -> Desired:
    a = ctx.policy.agent
    argv = [f"{VENV}/bin/baomi", "agent", "run", "--policy", POLICY_FILE,
            "--state-dir", STATE_DIR]
    return Desired(COLLECTOR_GROUP not in ctx.groups, ctx.policy.collector.url,
                   tuple(sorted(ctx.groups)), a.spool_dir,
                   heartbeat_limit(a.ship_interval_seconds), unit_text(argv, a.spool_dir),
                   supervisor_text(argv), sysctl_text())


def not_applicable(want: Desired) -> str | None:
    return None if want.applies else (f"a collector host (inventory group "
                                      f"{COLLECTOR_GROUP!r}): the agent ships to it")


def observe_script(want: Desired) -> str:
    """Read-only: the venv, the enrolment file's owner and mode, the service, the agent's own
    status (``baomi agent status --json`` from the venv) and the host's clock."""
    return script({
        "venv": f"readlink {VENV} && cat {VENV}/.baomi-manifest && {VENV}/bin/baomi --version",
        "enrolment": f"stat -c '%U %a' {ENROLMENT} && {VENV}/bin/python -c "
                     "'import json,sys; print(json.load(open(sys.argv[1]))[\"collector\"])' "
                     f"{ENROLMENT}",
        "systemd": "[ -d /run/systemd/system ]",
        "unit": cat(UNIT_PATH),
        "systemctl": f"systemctl is-enabled {UNIT}; systemctl is-active {UNIT}",
        "supervisor": f"pid=$(cat {PIDFILE}) && kill -0 \"$pid\" && "
                      f"tr '\\0' ' ' < /proc/$pid/cmdline",
        "status": f"{VENV}/bin/baomi agent status --json --policy {POLICY_FILE} "
                  f"--state-dir {STATE_DIR}",
        "now": "date +%s",
    })


@dataclass(frozen=True)
class Observed:
    venv: tuple[str, ...] | None  # link target, manifest, version; None when incomplete
    venv_error: str
    enrolment: tuple[str, str, str] | None  # owner, mode, collector URL
    systemd: bool
    unit: str | None
    enabled: str
    active: str
    supervisor: str | None
    status: dict[str, object] | None  # `baomi agent status --json`
    status_error: str
    now: float | None


def parse(output: str, want: Desired | None = None) -> Observed:
    sec = sections(output)
    venv = sec.get("venv")
    venv_lines = tuple(venv.out.strip().splitlines()) if venv is not None else ()
    enrol = (sec.text("enrolment") or "").split()
    systemctl = (sec["systemctl"].out.split() if "systemctl" in sec else []) + ["", ""]
    status: dict[str, object] | None = None
    status_error = ""
    if "status" in sec:
        raw = sec["status"].out.strip()
        try:
            loaded = json.loads(raw) if sec["status"].ok else None
            status = loaded if isinstance(loaded, dict) else None
        except ValueError:
            status = None
        if status is None:
            status_error = (raw.splitlines() or [f"rc {sec['status'].rc}"])[-1][:300]
    now = (sec.text("now") or "").strip()
    return Observed(
        venv=venv_lines if venv is not None and venv.ok and len(venv_lines) >= 3 else None,
        venv_error=(venv_lines[-1] if venv_lines else "missing") if venv is not None else "",
        enrolment=(enrol[0], enrol[1], enrol[2]) if len(enrol) == 3 else None,
        systemd=sec.text("systemd") is not None,
        unit=sec.text("unit"),
        enabled=systemctl[0],
        active=systemctl[1],
        supervisor=(sec.text("supervisor") or "").strip() or None,
        status=status,
        status_error=status_error,
        now=float(now) if now.isdigit() else None,
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def compare(want: Desired, seen: Observed) -> list[Finding]:
    out: list[Finding] = []
    if seen.venv is None:
        out.append(INSTALLED.finding(VENV, "a venv made from shipped baomi[agent] wheels",
                                     seen.venv_error or "missing", "high"))
    running = bool(seen.status and seen.status.get("running"))
    if seen.systemd:
        unit = unit_file_finding(RUNNING, UNIT_PATH, want.unit, seen.unit)
        if unit:
            out.append(unit)
        state = f"{seen.enabled or 'unknown'}, {seen.active or 'unknown'}"
        if state != "enabled, active" or not running:
            out.append(RUNNING.finding(UNIT, "systemd: enabled, active, agent running",
                                       f"systemd: {state}, agent "
                                       f"{'running' if running else 'not running'}", "high"))
    elif seen.supervisor is None or SUPERVISOR not in seen.supervisor or not running:
        out.append(RUNNING.finding(SUPERVISOR, f"supervisor (no systemd): running, PID in "
                                   f"{PIDFILE}, agent running",
                                   "supervisor (no systemd): "
                                   + ("not running" if seen.supervisor is None
                                      else "agent not running"), "high"))
    expected = f"root 600 {want.collector}"
    found = " ".join(seen.enrolment) if seen.enrolment else "not enrolled (no credential)"
    if found != expected:
        out.append(ENROLLED.finding(ENROLMENT, expected, found, "high"))
    out += _heartbeat(want, seen)
    return out


def _heartbeat(want: Desired, seen: Observed) -> list[Finding]:
    subject = f"heartbeat to {want.collector}"
    limit = f"answered within {want.heartbeat_limit:.0f} s"
    status = seen.status or {}
    inner = status.get("status")
    collector = inner.get("collector") if isinstance(inner, dict) else None
    if not isinstance(collector, dict):
        why = seen.status_error or "the agent has recorded no contact with a collector"
        return [HEARTBEAT.finding(subject, limit, why, "high")]
    last_ok = _number(collector.get("last_ok"))
    if last_ok is None or seen.now is None:
        return [HEARTBEAT.finding(subject, limit, "never answered: "
                                  + str(collector.get("last_error") or "no request yet"),
                                  "high")]
    age = seen.now - last_ok
    if age > want.heartbeat_limit:
        return [HEARTBEAT.finding(subject, limit, f"last answer {age:.0f} s ago"
                                  + (f" ({collector['last_error']})"
                                     if collector.get("last_error") else ""), "high")]
    return []


CONTROL: Control[Desired, Observed] = Control(
    "agent", CHECKS, desired, observe_script, parse, compare, not_applicable)
