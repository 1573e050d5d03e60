"""The collector service on the hosts of inventory group ``collector`` (R-INC, R-LOG, R-TLS).

Run by ``baomi collector-deploy -i INVENTORY`` (``controller/commands/collector_deploy.py``),
not by ``baomi apply``: the collector is a service with its own life (upgrades restart it, its
CA is made once), and a baseline run over a fleet should neither rebuild wheels nor restart
the place every finding goes to.  Steps, per collector host:

1. the wheels of ``baomi[collector]`` built on the controller, shipped, installed in the venv
   ``/opt/baomi/collector`` (:mod:`baomi.deploy.wheels`; nothing is reinstalled when the same
   wheels are already there);
2. the system user ``baomi-collector`` and its state folder, 0700;
3. the database URL in ``/etc/baomi/collector/database.env`` (root, 0600, in a 0700 folder:
   systemd reads it; never on a command line), and the policy in
   ``/etc/baomi/collector-policy.yaml`` (root:baomi-collector 0640: its waivers apply to the
   findings the service shows, ``BAOMI_COLLECTOR_POLICY``) with the fleet inventory's host →
   groups map in ``/etc/baomi/collector-groups.json`` (root:baomi-collector 0640, names and
   groups only: a waiver naming a group applies, ``BAOMI_COLLECTOR_GROUPS``); ``baomi
   collector init`` as that user, once: the first admin's password goes to
   ``first-admin.txt`` there (0600, read it once and delete it), never to the controller's
   output; the CA's private key is then moved out of the service's folder to
   ``/etc/baomi/collector/ca.key`` (root only: a compromised service cannot mint certificates;
   the move never follows a link the service user planted); the CA certificate comes back to
   the controller (``$BAOMI_STATE_DIR/collector/HOST/ca.pem``) for agents and ``baomi login``
   to pin;
4. the sandboxed systemd unit, enabled and started (restarted when the venv or the unit
   changed); on a host without systemd, a supervisor loop started with ``setsid`` (PID in
   ``/run/baomi-collector.pid``), which the check looks for;
5. wait until the port listens (the deploy fails, with the service's last log lines, if not);
6. the fleet for the regular audit (:mod:`baomi.fleet_access`): in ``/etc/baomi/collector/fleet``
   (root, 0700) the fleet's inventory, its pinned known_hosts and the policy; an SSH key made
   on the host (its public half and the host's addresses come back to the controller); on
   systemd hosts ``baomi-audit.service`` + ``baomi-audit.timer`` (OnCalendar = the policy's
   ``reporting.schedule``), enabled.  Hosts without systemd get no timer (nothing would run
   it; the check says so);
7. HR's offboarding run as root (R-OFF, :mod:`baomi.collector.offboard_runner`), systemd hosts
   only: ``/var/lib/baomi-offboard`` (root 0700: the ledger), ``baomi-offboard.service`` (the
   runner, fixed command line, the fleet folder's key), ``baomi-offboard.path`` (started when
   the dashboard records a request) and ``baomi-offboard.timer`` (every 15 minutes: a missed
   trigger, the daily purge), enabled; the service's ``database.env`` says
   ``BAOMI_OFFBOARD_RUNNER=systemd`` so it queues HR's requests instead of running them.

With ``BAOMI_COLLECTOR_DEPLOY=fleet`` the same file runs over the fleet instead: each
collector's key (``BAOMI_FLEET_COLLECTORS``) goes into root's ``authorized_keys`` restricted to
that collector's addresses (``from=``), never written through a link
(:mod:`baomi.fixes.fleet_key`).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.operations import files

from baomi import fleet_access as fleet
from baomi.controls import collector as core
from baomi.controls import collector_runs as runs
from baomi.controls import supervised
from baomi.deploy import wheels
from baomi.deploy.common import (
    CommandSucceeds,
    context,
    op_name,
    put_text,
    refuse,
    shell_if,
    unit_enabled_and_active,
)
from baomi.fixes import fleet_key

C = "collector"
WAIT_SECONDS = 60
# The collector also audits (pytest, testinfra) and offboards (pyinfra) the fleet.
EXTRA = "collector,admin"


class Addresses(FactBase[list[str]]):
    """The host's IP addresses (the server certificate names them, for clients using IPs)."""

    default = list

    def command(self) -> str:
        return "hostname -I 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return [a for line in output for a in line.split() if not a.startswith("fe80:")]


def init_command(want: core.Desired, addresses: list[str]) -> str:
    """``baomi collector init`` as the service user; its output (the password) to a 0600 file."""
    argv = [f"{core.VENV}/bin/baomi", "collector", "init", core.STATE_DIR,
            "--listen", want.listen]
    for name in want.names:
        argv += ["--name", name]
    for address in addresses:
        argv += ["--address", address]
    user = core.USER
    return "\n".join([
        "set -e",
        "out=$(mktemp)",
        f"set -a; . {core.ENV_FILE}; set +a  # BAOMI_COLLECTOR_DB: the URL, not on argv",
        f"setpriv --reuid={user} --regid={user} --init-groups {shlex.join(argv)} > \"$out\"",
        f"chmod 0600 \"$out\" && mv \"$out\" {core.FIRST_ADMIN}",
    ])


def move_ca_key_command() -> str:
    """Move the CA key from the service's folder to the root-only folder. ``mv`` renames (it
    never follows a link); what arrived is re-checked where the service user cannot reach
    it, and a link, a hard link or anything but a regular file is removed and refused."""
    src, dst = f"{core.STATE_DIR}/ca.key", core.CA_KEY
    return "\n".join([
        "set -e",
        f"install -d -m 0700 -o root -g root {core.CONF_DIR}",
        f"mv -T {src} {dst}.new",
        f"if [ -L {dst}.new ] || [ ! -f {dst}.new ] || [ \"$(stat -c %h {dst}.new)\" != 1 ]; "
        f"then rm -rf {dst}.new; "
        f"echo \"{src} was not a regular file (a link?): removed, never followed; $([ -f "
        f"{dst} ] && echo 'the CA key in {dst} is untouched' || echo 'no CA key is left: "
        "re-initialise the collector')\" >&2; exit 1; fi",
        f"chown root:root {dst}.new && chmod 0600 {dst}.new && mv -T {dst}.new {dst}",
    ])


def wait_command(want: core.Desired, systemd: bool) -> str:
    port = f"{want.port:04X}"
    log = (f"journalctl -u {core.UNIT} -n 5 --no-pager" if systemd else f"tail -n 5 {core.LOG}")
    return "\n".join([
        f"for i in $(seq {WAIT_SECONDS * 2}); do",
        f"  awk '$4 == \"0A\" && $2 ~ /:{port}$/ {{ found = 1 }} END {{ exit !found }}' "
        "/proc/net/tcp /proc/net/tcp6 && exit 0",
        "  sleep 0.5",
        "done",
        f"echo \"the collector does not listen on port {want.port} after {WAIT_SECONDS} s:\" >&2",
        f"{log} >&2",
        "exit 1",
    ])


def listening_test(want: core.Desired) -> str:
    return (f"awk '$4 == \"0A\" && $2 ~ /:{want.port:04X}$/ {{ found = 1 }} END "
            "{ exit !found }' /proc/net/tcp /proc/net/tcp6")


def runs_current_venv(pid: str) -> str:
    """Shell test: process PID was started from the venv the link points at now (its command
    line holds the venv's real path: the script's interpreter line)."""
    return (f"tr '\\0' ' ' < /proc/{pid}/cmdline 2>/dev/null | grep -qF "
            f"\"{core.VENV}.venvs/$(readlink {core.VENV} | sed 's|.*/||')/\"")


def supervisor_running() -> str:
    return supervised.supervisor_running(core.PIDFILE, core.SUPERVISOR)


def apply() -> None:
    want = core.desired(context())
    reason = core.not_applicable(want)
    if reason:
        shell_if(name=op_name(C, "collector"), check="true", command="true", reason=reason)
        return
    if want.problem:
        refuse(name=op_name(C, "policy"), message=want.problem)
        return
    built = wheels.built_or_exit(EXTRA, "baomi collector deploy")
    installed = wheels.install(C, "collector", built)
    if installed is None:
        return
    q = shlex.quote
    shell_if(name=op_name(C, f"user {core.USER}"), check=f"getent passwd {core.USER} >/dev/null",
             command=f"useradd --system --user-group --home-dir {core.STATE_DIR} "
                     f"--no-create-home --shell /usr/sbin/nologin {core.USER}",
             reason=f"{core.USER} exists")
    files.directory(name=op_name(C, core.STATE_DIR), path=core.STATE_DIR, user=core.USER,
                    group=core.USER, mode="0700")
    files.directory(name=op_name(C, core.CONF_DIR), path=core.CONF_DIR, user="root",
                    group="root", mode="0700")
    # With systemd, database.env also tells the service that root's runner offboards.
    systemd = host.get_fact(CommandSucceeds, check="[ -d /run/systemd/system ]")
    put_text(C, core.ENV_FILE, want.env_for(systemd), mode="0600")
    # The waivers of findings (read by the service, reloaded when this file changes).
    put_text(C, core.POLICY_COPY, Path(os.environ["BAOMI_POLICY"]).read_text(encoding="utf-8"),
             mode="0640", group=core.USER)
    # Their groups: the service cannot read root's fleet inventory; names and groups only.
    try:
        groups = fleet.groups_map_from_inventory(os.environ["BAOMI_FLEET_INVENTORY"])
    except (KeyError, fleet.FleetError) as exc:
        refuse(name=op_name(C, "the waivers' host → groups map"),
               message=f"the waivers' host → groups map: {exc}")
        return
    put_text(C, core.GROUPS_MAP, groups, mode="0640", group=core.USER)
    addresses = host.get_fact(Addresses)
    shell_if(name=op_name(C, "initialised (CA, server certificate, first admin)"),
             check=f"[ -f {core.STATE_DIR}/collector.toml ]",
             command=init_command(want, addresses),
             reason=f"{core.STATE_DIR} already initialised")
    shell_if(name=op_name(C, f"CA key only in {core.CONF_DIR}"),
             check=f"[ ! -e {core.STATE_DIR}/ca.key ] && [ ! -L {core.STATE_DIR}/ca.key ]",
             command=move_ca_key_command(), reason="not in the service's folder")
    files.get(name=op_name(C, "CA certificate to the controller"),
              src=f"{core.STATE_DIR}/ca.pem", dest=str(core.pinned_ca_path(host.name)),
              create_local_dir=True)
    if systemd:
        put_text(C, core.UNIT_PATH, want.unit)
        shell_if(name=op_name(C, f"{core.UNIT} runs the current venv and unit"),
                 check=f"systemctl show -p NeedDaemonReload --value {core.UNIT} | grep -qx no"
                       f" && {{ ! systemctl is-active -q {core.UNIT} || "
                       f"{runs_current_venv(f'$(systemctl show -p MainPID --value {core.UNIT})')}"
                       "; }",
                 command=f"systemctl daemon-reload && systemctl restart {core.UNIT}",
                 reason="nothing to restart")
        restart_on_new_database(f"systemctl try-restart {core.UNIT}")
        unit_enabled_and_active(C, core.UNIT)
    else:
        put_text(C, core.SUPERVISOR, want.supervisor, mode="0755")
        shell_if(name=op_name(C, "supervisor runs the current venv and script"),
                 check=f"! {{ {supervisor_running()}; }} || {{ [ \"$(cat {core.SCRIPT_DIGEST} "
                       f"2>/dev/null)\" = \"$(sha256sum < {core.SUPERVISOR})\" ] && ! for p in "
                       f"$(pgrep -u {core.USER} -f 'collector serve'); do "
                       f"{runs_current_venv('$p')} || echo stale; done | grep -q stale; }}",
                 command=f"pid=$(cat {core.PIDFILE} 2>/dev/null) && kill \"$pid\"; "
                         f"pkill -u {core.USER} -f 'collector serve'; sleep 0.5",
                 reason="nothing to restart")
        restart_on_new_database(f"pid=$(cat {core.PIDFILE} 2>/dev/null) && kill \"$pid\"; "
                                f"pkill -u {core.USER} -f 'collector serve'; sleep 0.5")
        shell_if(name=op_name(C, "supervisor running (no systemd)"),
                 check=supervisor_running(),
                 command=f"setsid -f {core.SUPERVISOR} >> {q(core.LOG)} 2>&1 < /dev/null",
                 reason=f"{core.SUPERVISOR} running")
    shell_if(name=op_name(C, f"listening on port {want.port}"), check=listening_test(want),
             command=wait_command(want, systemd), reason=f"port {want.port} listens")
    fleet_access(want, addresses, systemd)


def fleet_access(want: core.Desired, addresses: list[str], systemd: bool) -> None:
    """The fleet's inventory, host keys and policy, a key of the host's own, and the timer."""
    try:
        inventory, known = fleet.from_inventory(os.environ["BAOMI_FLEET_INVENTORY"])
    except (KeyError, fleet.FleetError) as exc:
        refuse(name=op_name(C, "the fleet for the regular audit"), message=str(exc))
        return
    q = shlex.quote
    files.directory(name=op_name(C, fleet.FLEET_DIR), path=fleet.FLEET_DIR, user="root",
                    group="root", mode="0700")
    put_text(C, fleet.INVENTORY, inventory, mode="0600")
    put_text(C, fleet.KNOWN_HOSTS, known)
    put_text(C, fleet.POLICY, Path(os.environ["BAOMI_POLICY"]).read_text(encoding="utf-8"))
    put_text(C, fleet.ADDRESSES, "".join(f"{a}\n" for a in addresses))
    comment = fleet.key_comment(host.name)
    shell_if(name=op_name(C, f"{fleet.KEY} made on the host"),
             check=f"[ -f {fleet.KEY} ] && [ ! -L {fleet.KEY} ] && [ -f {fleet.PUBLIC_KEY} ]",
             command=f"rm -f {fleet.KEY} {fleet.PUBLIC_KEY} && ssh-keygen -q -t ed25519 -N '' "
                     f"-C {q(comment)} -f {fleet.KEY} && chmod 0600 {fleet.KEY}",
             reason="the host's key exists (its private half never leaves it)")
    here = core.pinned_ca_path(host.name).parent
    files.get(name=op_name(C, "the key's public half to the controller"),
              src=fleet.PUBLIC_KEY, dest=str(here / "fleet_key.pub"), create_local_dir=True)
    files.get(name=op_name(C, "the host's addresses to the controller (from=)"),
              src=fleet.ADDRESSES, dest=str(here / "fleet_addresses"), create_local_dir=True)
    files.directory(name=op_name(C, fleet.AUDIT_STATE), path=fleet.AUDIT_STATE, user="root",
                    group="root", mode="0700")
    # The CA the run pins, copied from the service's folder without following a link there
    # (the service user could plant one); also where the audit's own collector check looks.
    own = f"{fleet.AUDIT_STATE}/collector/{host.name}/ca.pem"
    shell_if(name=op_name(C, f"{fleet.AUDIT_CA} (the collector's CA, pinned by the run)"),
             check=f"[ ! -L {fleet.AUDIT_CA} ] && cmp -s {fleet.AUDIT_CA} {q(own)} && "
                   f"dd if={core.STATE_DIR}/ca.pem iflag=nofollow status=none | "
                   f"cmp -s - {fleet.AUDIT_CA}",
             command=f"set -e; umask 077; mkdir -p {q(own.rsplit('/', 1)[0])}; "
                     f"dd if={core.STATE_DIR}/ca.pem iflag=nofollow of={fleet.AUDIT_CA}.new "
                     f"status=none; chmod 0644 {fleet.AUDIT_CA}.new; cp {fleet.AUDIT_CA}.new "
                     f"{q(own)}; mv -fT {fleet.AUDIT_CA}.new {fleet.AUDIT_CA}",
             reason="the same CA")
    if not systemd:
        shell_if(name=op_name(C, fleet.TIMER), check="true", command="true",
                 reason=runs.NO_SYSTEMD)
        return
    said = (f"reporting.schedule {want.schedule!r}: not a systemd calendar expression "
            "(systemd-analyze calendar refuses it)")
    shell_if(name=op_name(C, f"reporting.schedule {want.schedule!r}"),
             check=fleet.validate_schedule_command(want.schedule),
             command=f"echo {q(said)} >&2; exit 1", reason="systemd reads it")
    put_text(C, fleet.SERVICE_PATH, want.audit_service)
    put_text(C, fleet.TIMER_PATH, want.audit_timer)
    shell_if(name=op_name(C, "the audit's units loaded"),
             check=" && ".join(f"systemctl show -p NeedDaemonReload --value {u} | grep -qx no"
                               for u in (fleet.SERVICE, fleet.TIMER)),
             command=f"systemctl daemon-reload && systemctl try-restart {fleet.TIMER}",
             reason="loaded")
    unit_enabled_and_active(C, fleet.TIMER)
    offboard_runner(want)


def offboard_runner(want: core.Desired) -> None:
    """HR's offboarding run as root (R-OFF): its state folder, the service run by the path
    unit (a request recorded) and the timer (a missed trigger, the daily purge)."""
    files.directory(name=op_name(C, fleet.OFFBOARD_STATE), path=fleet.OFFBOARD_STATE,
                    user="root", group="root", mode="0700")
    for path, text in want.offboard_units:
        put_text(C, path, text)
    units = (fleet.OFFBOARD_SERVICE, fleet.OFFBOARD_PATH, fleet.OFFBOARD_TIMER)
    shell_if(name=op_name(C, "the offboarding runner's units loaded"),
             check=" && ".join(f"systemctl show -p NeedDaemonReload --value {u} | grep -qx no"
                               for u in units),
             command=f"systemctl daemon-reload && systemctl try-restart {fleet.OFFBOARD_PATH} "
                     f"{fleet.OFFBOARD_TIMER}",
             reason="loaded")
    unit_enabled_and_active(C, fleet.OFFBOARD_PATH)
    unit_enabled_and_active(C, fleet.OFFBOARD_TIMER)


def authorize_fleet() -> None:
    """On a fleet host: each collector's key for root, usable only from its addresses."""
    for collector in filter(None, os.environ.get("BAOMI_FLEET_COLLECTORS", "").split(",")):
        got = core.pinned_ca_path(collector).parent
        try:
            line = fleet.key_line((got / "fleet_key.pub").read_text(encoding="utf-8"),
                                  (got / "fleet_addresses").read_text(encoding="utf-8").split(),
                                  collector)
        except (OSError, UnicodeDecodeError, fleet.FleetError) as exc:
            refuse(name=op_name(C, f"the key of {collector}"), message=str(exc))
            continue
        shell_if(name=op_name(C, f"root's authorized_keys: the key of {collector} (from= its "
                                 "addresses)"),
                 check=fleet_key.authorized_test(line),
                 command=fleet_key.authorize(line, fleet.key_comment(collector)),
                 reason="authorised")


def restart_on_new_database(restart: str) -> None:
    """A running service started with another database.env restarts (its digest in /run,
    root only; missing on a first deploy, where nothing runs yet)."""
    digest = "/run/baomi-collector.env.sha256"
    shell_if(name=op_name(C, "the service runs with the current database.env"),
             check=f"[ \"$(cat {digest} 2>/dev/null)\" = \"$(sha256sum < {core.ENV_FILE})\" ]",
             command=f"(umask 077; sha256sum < {core.ENV_FILE} > {digest}); {restart}",
             reason="database.env unchanged")


# `baomi collector-deploy` runs this file on its own (it is not in the baseline).
if os.environ.get("BAOMI_COLLECTOR_DEPLOY") == "1":
    apply()
elif os.environ.get("BAOMI_COLLECTOR_DEPLOY") == "fleet":
    authorize_fleet()
