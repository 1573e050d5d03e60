"""The collector service on a host of inventory group ``collector`` (R-INC, R-LOG, R-TLS).

Not a baseline control: ``baomi collector-deploy -i INVENTORY`` (``deploy/collector.py``)
installs it, ``checks/test_collector.py`` verifies it.  What "installed and serving" means:

- the venv ``/opt/baomi/collector`` (a link to a venv made from shipped wheels,
  :mod:`baomi.deploy.wheels`) runs ``baomi``;
- the state folder (configuration, the server certificate and key, the SQLite database)
  belongs to the system user ``baomi-collector``, mode 0700, and has been initialised; the
  private CA's key is NOT there: it lives in ``/etc/baomi/collector`` (root, 0700), which the
  service never reads (a compromised service must not be able to mint certificates agents
  trust);
- the database URL (a PostgreSQL password) is in the root-only environment file
  ``/etc/baomi/collector/database.env``, never on the service's command line (which every
  local user reads in ``/proc/PID/cmdline``);
- the service runs: a sandboxed systemd unit (Restart=always), or, on a host without systemd,
  a supervisor loop that restarts it (its PID in ``/run/baomi-collector.pid``);
- the TLS port listens, and ``/api/v1/health`` answers ``{"ok": true}`` over TLS verified
  against the CA the controller pinned (the copy fetched when the collector was initialised,
  given as input ``collector_ca``) for the certificate name the host's agents use;
- the regular audit (R-AUD) and HR's offboarding run as root (R-OFF): their timers and units
  enabled, their last runs succeeded in time (:mod:`baomi.controls.collector_runs`); not
  applicable without systemd;
- what the service judges waivers with (:mod:`baomi.controls.collector_waivers`): its copy of
  the policy is the controller's, byte for byte, and its host → groups map the groups of root's
  fleet inventory on the host (a stale copy or a drifted map would silently waive differently
  from the audit).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from baomi import fleet_access as fleet
from baomi.controls import collector_runs as runs
from baomi.controls import collector_waivers as waivers
from baomi.controls.contract import Control, HostContext, check
from baomi.controls.supervised import INSTALL, NETWORK_SANDBOX, supervisor_head, unit_file_finding
from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.records import state_dir

GROUP = "collector"
USER = "baomi-collector"
STATE_DIR = "/var/lib/baomi-collector"
VENV = "/opt/baomi/collector"
UNIT = "baomi-collector.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
SUPERVISOR = "/usr/local/sbin/baomi-collector-supervise"
PIDFILE = "/run/baomi-collector.pid"
SCRIPT_DIGEST = "/run/baomi-collector.sha256"
LOG = "/var/log/baomi-collector.log"
FIRST_ADMIN = f"{STATE_DIR}/first-admin.txt"
CONF_DIR = "/etc/baomi/collector"  # root 0700: the CA key, the database URL
CA_KEY = f"{CONF_DIR}/ca.key"
ENV_FILE = f"{CONF_DIR}/database.env"
# The service's copy of the policy and the inventory's host → groups map for its waivers
# (root:baomi-collector 0640, named in ENV_FILE): collector_waivers checks both.
POLICY_COPY = waivers.POLICY_COPY
GROUPS_MAP = waivers.GROUPS_MAP
INPUT = "collector_ca"  # the pinned CA certificate (PEM), an input of the host's context
HEADER = "# Managed by baomi: the collector (R-INC, R-LOG, R-TLS). Local edits are reverted.\n"

INSTALLED = check("collector.installed", "the collector's venv is complete and runs baomi")
STATE = check("collector.state_dir", "state folder initialised, owned by the service user, 0700")
SERVICE = check("collector.service", "the service runs under systemd (or the supervisor)")
LISTENING = check("collector.listening", "the TLS port listens")
HEALTH = check("collector.health", "health answers over TLS verified by the pinned CA",
               ("R-TLS", "R-INC"))
CHECKS = (INSTALLED, STATE, SERVICE, LISTENING, HEALTH, *runs.CHECKS,
          *waivers.CHECKS)


@dataclass(frozen=True)
class Desired:
    """The collector as the policy wants it on this host (``problem``: why it cannot be)."""

    applies: bool
    port: int
    database: str
    server_name: str  # the certificate name the health probe verifies (the host's name)
    names: tuple[str, ...]  # DNS names for the server certificate
    unit: str
    supervisor: str
    pinned_ca: str | None
    problem: str | None = None
    alerts: tuple[tuple[str, str], ...] = ()  # the policy's alert settings, as variables
    schedule: str = "weekly"  # reporting.schedule: OnCalendar= of the regular audit
    audit_service: str = ""
    audit_timer: str = ""
    offboard_units: tuple[tuple[str, str], ...] = ()  # (path, text) of the runner's units
    policy_sha256: str | None = None  # the controller's policy file (input policy_sha256)

    def env_for(self, systemd: bool) -> str:
        """``database.env`` on this host: with systemd the service is also told that root's
        runner runs HR's requests, and where its copy of the policy is (the form's checks)."""
        if not systemd:
            return self.env_file
        return self.env_file + (f"BAOMI_OFFBOARD_RUNNER='systemd'\n"
                                f"BAOMI_OFFBOARD_POLICY='{fleet.WEB_POLICY}'\n")

    @property
    def env_file(self) -> str:
        """``database.env``: read by systemd (EnvironmentFile) or sourced by the supervisor;
        the database URL and the policy's alert settings (a webhook URL may hold a token)."""
        lines = [f"BAOMI_COLLECTOR_DB='{self.database}'",
                 *(f"{name}='{value}'" for name, value in self.alerts),
                 f"BAOMI_COLLECTOR_POLICY='{POLICY_COPY}'",
                 f"BAOMI_COLLECTOR_GROUPS='{GROUPS_MAP}'"]
        return "# Managed by baomi (root only)\n" + "\n".join(lines) + "\n"

    @property
    def listen(self) -> str:
        return f"0.0.0.0:{self.port}"

    @property
    def serve_argv(self) -> list[str]:
        return [f"{VENV}/bin/baomi", "collector", "serve", STATE_DIR, "--listen", self.listen]


def pinned_ca_path(host: str) -> Path:
    """Where the controller keeps the CA certificate of the collector on HOST (fetched by
    ``baomi collector-deploy`` when the collector was initialised)."""
    return state_dir() / "collector" / host / "ca.pem"


def pinned_ca(host: str) -> str | None:
    """The controller's pinned CA certificate for HOST's collector, if it has one."""
    try:
        return pinned_ca_path(host).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


def database_problem(database: str, source: str) -> str | None:
    """SQLite must live in the state folder: the only place the sandbox lets it write; the
    URL goes into a quoted environment file, so it holds no quote, backslash or newline."""
    if any(c in database for c in "'\\\n"):
        return (f"{source}: collector.database: a quote, backslash or newline in the URL "
                "(percent-encode it: %27, %5C)")
    if database.startswith("sqlite:///"):
        path = database.removeprefix("sqlite:///")
        if not path.startswith(STATE_DIR + "/"):
            return (f"{source}: collector.database {database!r}: the SQLite file must be in "
                    f"{STATE_DIR}/ (the service may write nowhere else)")
    return None


def unit_text(argv: list[str], port: int) -> str:
    """The systemd unit: restarted always, sandboxed, writing only its state folder."""
    caps = "CAP_NET_BIND_SERVICE" if port < 1024 else ""
    return HEADER + "\n".join([
        "[Unit]",
        "Description=baomi collector: findings of every host over TLS",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={USER}",
        f"Group={USER}",
        f"EnvironmentFile={ENV_FILE}",
        f"ExecStart={shlex.join(argv)}",
        "Restart=always",
        "RestartSec=2",
        "UMask=0077",
        f"ReadWritePaths={STATE_DIR}",
        *NETWORK_SANDBOX,
        f"CapabilityBoundingSet={caps}",
        f"AmbientCapabilities={caps}",
        *INSTALL,
    ])


def supervisor_text(argv: list[str]) -> str:
    """For hosts without systemd: a loop restarting the service, its PID in PIDFILE."""
    return "\n".join([
        *supervisor_head(HEADER, "collector", PIDFILE),
        f"set -a; . {ENV_FILE}; set +a  # the database URL, never on a command line",
        "# What is running, for the deploy to tell whether a new script needs a restart.",
        f"sha256sum < \"$0\" > {SCRIPT_DIGEST}",
        "while :; do",
        f"  setpriv --reuid={USER} --regid={USER} --init-groups --no-new-privs "
        f"{shlex.join(argv)}",
        "  sleep 2",
        "done",
        "",
    ])


def desired(ctx: HostContext) -> Desired:
    c = ctx.policy.collector
    host_name = urlsplit(c.url).hostname or ""
    names = tuple(dict.fromkeys(n for n in (ctx.host, host_name)
                                if n and not n.replace(".", "").isdigit()))
    alerts = (("BAOMI_ALERT_MIN_SEVERITY", c.alert_min_severity),
              ("BAOMI_ALERT_WEBHOOK", c.alert_webhook or ""),
              ("BAOMI_ALERT_SYSLOG", "1" if c.alert_syslog else "0"),
              ("BAOMI_AGENT_SILENT_MINUTES", str(c.agent_silent_minutes)),
              ("BAOMI_AGENT_SILENT_SEVERITY", c.agent_silent_severity))
    problem = database_problem(c.database, ctx.policy.source)
    if problem is None and any(ch in (c.alert_webhook or "") for ch in "'\\\n"):
        problem = (f"{ctx.policy.source}: collector.alert_webhook: a quote or backslash in "
                   "the URL (percent-encode it)")
    base = Desired(GROUP in ctx.groups, c.listen_port, c.database, ctx.host, names, "", "",
                   ctx.inputs.get(INPUT), problem)
    argv = base.serve_argv
    schedule = ctx.policy.reporting.schedule
    try:
        timer = fleet.timer_text(schedule)
    except fleet.FleetError as exc:
        problem, timer = problem or f"{ctx.policy.source}: {exc}", ""
    return Desired(base.applies, base.port, base.database, base.server_name, base.names,
                   unit_text(argv, base.port), supervisor_text(argv), base.pinned_ca,
                   problem, alerts, schedule,
                   fleet.service_text(VENV, STATE_DIR, ENV_FILE, base.port), timer,
                   ((fleet.OFFBOARD_SERVICE_PATH,
                     fleet.offboard_service_text(VENV, STATE_DIR, ENV_FILE)),
                    (fleet.OFFBOARD_PATH_PATH, fleet.offboard_path_text(STATE_DIR)),
                    (fleet.OFFBOARD_TIMER_PATH, fleet.offboard_timer_text())),
                   ctx.inputs.get(waivers.POLICY_INPUT))


def not_applicable(want: Desired) -> str | None:
    return None if want.applies else f"not a collector host (inventory group {GROUP!r})"


# Connects to the local port, verifies the certificate against the pinned CA (argv[1]) for
# the host's name (argv[2]), asks for the health document; one line per fact, errors in one.
_PROBE = r"""
import socket, ssl, sys
try:
    ctx = ssl.create_default_context(cadata=sys.argv[1])
    raw = socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=sys.argv[2]) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: " + sys.argv[2].encode()
                  + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        print("tls", s.version())
        print("status", head.split(b"\r\n")[0].decode(errors="replace"))
        print("body", body.decode(errors="replace").strip()[-300:])
except Exception as exc:
    print("error", type(exc).__name__, " ".join(str(exc).split())[:300])
    sys.exit(1)
"""

def observe_script(want: Desired) -> str:
    """Read-only: the venv, the user and folder, the service, the port, the health answer."""
    port_hex = f"{want.port:04X}"
    commands = {
        "venv": f"readlink {VENV} && cat {VENV}/.baomi-manifest && {VENV}/bin/baomi --version",
        "user": f"getent passwd {USER}",
        "state": f"stat -c '%U %a' {STATE_DIR} && ls -A {STATE_DIR}",
        "systemd": "[ -d /run/systemd/system ]",
        "unit": cat(UNIT_PATH),
        "systemctl": f"systemctl is-enabled {UNIT}; systemctl is-active {UNIT}",
        "supervisor": f"pid=$(cat {PIDFILE}) && kill -0 \"$pid\" && "
                      f"tr '\\0' ' ' < /proc/$pid/cmdline",
        "listening": f"awk '$4 == \"0A\" && $2 ~ /:{port_hex}$/' /proc/net/tcp /proc/net/tcp6",
    }
    commands |= runs.observe_commands(want.schedule)
    commands |= waivers.observe_commands(VENV)
    if want.pinned_ca:
        commands["health"] = (f"{VENV}/bin/python -c {shlex.quote(_PROBE)} "
                              f"{shlex.quote(want.pinned_ca)} {shlex.quote(want.server_name)} "
                              f"{want.port}")
    return script(commands)


@dataclass(frozen=True)
class Observed:
    venv: tuple[str, ...] | None  # link target, manifest, version; None when incomplete
    venv_error: str
    user: bool
    state_owner: str | None
    state_mode: str | None
    state_files: tuple[str, ...]
    systemd: bool
    unit: str | None
    enabled: str
    active: str
    supervisor: str | None  # the supervisor's command line when it runs
    listening: bool
    health: dict[str, str]  # tls, status, body, or error
    audit: runs.AuditRun | None = None  # the regular audit (systemd hosts)
    offboard: runs.OffboardRunner | None = None  # root's offboarding runner (systemd hosts)
    groups_map: str | None = None  # "OWNER:GROUP MODE\n" + the map's text; None: missing
    fleet_groups: str | None = None  # the map of root's fleet inventory; None: unreadable
    fleet_groups_error: str = ""
    policy_copy: tuple[str, str] | None = None  # (owner:group mode, sha256); None: missing


def parse(output: str, want: Desired | None = None) -> Observed:
    sec = sections(output)
    venv = sec.get("venv")
    venv_lines = tuple(venv.out.strip().splitlines()) if venv is not None else ()
    state = sec.text("state")
    state_lines = state.strip().splitlines() if state else []
    owner_mode = state_lines[0].split() if state_lines else []
    systemctl = (sec["systemctl"].out.split() if "systemctl" in sec else []) + ["", ""]
    health: dict[str, str] = {}
    if "health" in sec:
        for line in sec["health"].out.strip().splitlines():
            key, _, value = line.partition(" ")
            health[key] = value
        if not sec["health"].ok and "error" not in health:
            health["error"] = sec["health"].out.strip()[-300:] or f"rc {sec['health'].rc}"
    listening = sec.text("listening")
    return Observed(
        venv=venv_lines if venv is not None and venv.ok and len(venv_lines) >= 3 else None,
        venv_error=(venv_lines[-1] if venv_lines else "missing") if venv is not None else "",
        user=sec.text("user") is not None,
        state_owner=owner_mode[0] if len(owner_mode) == 2 else None,
        state_mode=owner_mode[1] if len(owner_mode) == 2 else None,
        state_files=tuple(state_lines[1:]),
        systemd=sec.text("systemd") is not None,
        unit=sec.text("unit"),
        enabled=systemctl[0],
        active=systemctl[1],
        supervisor=(sec.text("supervisor") or "").strip() or None,
        listening=bool(listening and listening.strip()),
        health=health,
        audit=runs.parse_audit(sec) if sec.text("systemd") is not None else None,
        offboard=runs.parse_offboard(sec) if sec.text("systemd") is not None else None,
        groups_map=sec.text("waiver_groups"),
        fleet_groups=sec.text("fleet_groups"),
        fleet_groups_error=(sec["fleet_groups"].out.strip().splitlines() or ["no output"])[-1]
        [:300] if "fleet_groups" in sec and not sec["fleet_groups"].ok else "",
        policy_copy=waivers.parse_policy_copy(sec),
    )


def compare(want: Desired, seen: Observed) -> list[Finding]:
    out: list[Finding] = []
    if want.problem:
        return [INSTALLED.finding("collector.database", f"an SQLite file in {STATE_DIR}/",
                                  want.problem, "high")]
    if seen.venv is None:
        out.append(INSTALLED.finding(VENV, "a venv made from shipped wheels, running baomi",
                                     seen.venv_error or "missing", "high"))
    if not seen.user:
        out.append(STATE.finding(f"user {USER}", "a system user", "missing", "high"))
    mode = f"{seen.state_owner}:{seen.state_mode}" if seen.state_owner else "missing"
    if mode != f"{USER}:700":
        out.append(STATE.finding(STATE_DIR, f"{USER}:700", mode, "high"))
    elif "collector.toml" not in seen.state_files or "ca.pem" not in seen.state_files:
        out.append(STATE.finding(STATE_DIR, "initialised (collector.toml, ca.pem)",
                                 "not initialised", "high"))
    elif "ca.key" in seen.state_files:
        out.append(STATE.finding(f"{STATE_DIR}/ca.key", f"the CA key only in {CONF_DIR}",
                                 "readable by the service user", "high"))
    if seen.systemd:
        unit = unit_file_finding(SERVICE, UNIT_PATH, want.unit, seen.unit)
        if unit:
            out.append(unit)
        state = f"{seen.enabled or 'unknown'}, {seen.active or 'unknown'}"
        if state != "enabled, active":
            out.append(SERVICE.finding(UNIT, "enabled, active", state, "high"))
    elif seen.supervisor is None or SUPERVISOR not in seen.supervisor:
        out.append(SERVICE.finding(SUPERVISOR, f"running (PID in {PIDFILE}; no systemd)",
                                   "not running", "high"))
    if not seen.listening:
        out.append(LISTENING.finding(f"TCP port {want.port}", "listening", "not listening",
                                     "high"))
    out += _health(want, seen)
    if seen.audit is not None:
        out += runs.audit_findings(want.audit_timer, want.audit_service, want.schedule,
                                   seen.audit)
    if seen.offboard is not None:
        out += runs.offboard_findings(want.offboard_units, seen.offboard)
    out += waivers.policy_copy_findings(want.policy_sha256, seen.policy_copy)
    out += waivers.groups_map_findings(seen.groups_map, seen.fleet_groups,
                                       seen.fleet_groups_error)
    return out


def evidence(want: Desired, seen: Observed) -> dict[str, str]:
    """What the passing checks of the two runs and of the waivers' inputs compared."""
    return (runs.evidence(want.schedule, seen.audit, seen.offboard)
            | waivers.evidence(want.policy_sha256, seen.policy_copy, seen.groups_map,
                               seen.fleet_groups))


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    return runs.skipped(seen.systemd)


def _health(want: Desired, seen: Observed) -> list[Finding]:
    subject = f"https://{want.server_name}:{want.port}/api/v1/health"
    if not want.pinned_ca:
        return [HEALTH.finding(subject, "answers over TLS with the pinned CA",
                               "no CA pinned on the controller for this host (run "
                               "`baomi collector-deploy` to fetch it)", "high")]
    if "error" in seen.health:
        return [HEALTH.finding(subject, "answers over TLS with the pinned CA",
                               seen.health["error"], "high")]
    status = seen.health.get("status", "")
    try:
        ok = json.loads(seen.health.get("body", "")).get("ok") is True
    except (ValueError, AttributeError):
        ok = False
    if " 200 " not in f"{status} " or not ok:
        return [HEALTH.finding(subject, '200 {"ok": true}',
                               f"{status or 'no answer'} {seen.health.get('body', '')}"[:300],
                               "high")]
    return []


CONTROL: Control[Desired, Observed] = Control(
    "collector", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped,
    evidence)
