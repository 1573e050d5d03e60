"""The resident agent on every host outside group ``collector`` (R-FIM, R-LOG, R-SEC).

Run by ``baomi agent-deploy -i INVENTORY`` (``controller/commands/agent_deploy.py``), not by
``baomi apply``: enrolling needs a one-time token the controller asks the collector for with
a person's session, and the agent is a service with a life of its own.  The command hands
this file, through the environment, the collector host whose CA to pin
(``BAOMI_AGENT_COLLECTOR``) and a 0600 file of one-time enrolment tokens, one bound to each
host (``BAOMI_AGENT_TOKENS``).  Steps, per host:

1. the wheels of ``baomi[agent]`` built on the controller, shipped, installed in the venv
   ``/opt/baomi/agent`` (:mod:`baomi.deploy.wheels`);
2. the configuration in ``/etc/baomi/agent``: the controller's policy and the collector's CA
   (the copy ``baomi collector-deploy`` fetched);
3. the inotify limits in ``/etc/sysctl.d/60-baomi-agent.conf``, applied at once only on a
   host with a kernel of its own (a lab container's ``/proc/sys`` is the lab machine's
   kernel: there the file waits for the next boot, and the row says so);
4. enrolled, unless already enrolled with the same collector and CA: the token goes to a
   root-only file (:func:`baomi.deploy.common.put_secret`), reaches ``baomi agent enroll``
   through its environment, never a command line, and the file is removed; the credential
   is 0600 in ``/var/lib/baomi-agent``.  Enrolling again stops the agent first (the command
   refuses while it runs);
5. the sandboxed unit ``baomi-agent.service``, enabled and started (restarted when the venv,
   unit, policy or enrolment changed); without systemd, a supervisor loop started with
   ``setsid`` (PID in ``/run/baomi-agent.pid``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import files
from pyinfra.operations.util import any_changed

from baomi.controls import agent as core
from baomi.controls import supervised
from baomi.controls.collector import pinned_ca
from baomi.deploy import wheels
from baomi.deploy.common import (
    CommandSucceeds,
    context,
    op_name,
    put_secret,
    put_text,
    refuse,
    shell_if,
    unit_enabled_and_active,
)
from baomi.sysctl import OWN_KERNEL  # PID 1 is init: a plain lab host (sshd) is no VM

C = "agent"
TOKEN_FILE = f"{core.STATE_DIR}/.enrol-token"


def limits_test() -> str:
    """Shell test: the live inotify limits are at least what the sysctl file asks."""
    return " && ".join(f"[ \"$(cat /proc/sys/{k.replace('.', '/')})\" -ge {v} ]"
                       for k, v in core.SYSCTL.items())


def enrolled_test(url: str) -> str:
    """Shell test: enrolled with URL, pinning the CA the deploy put in the configuration."""
    return (f"{core.VENV}/bin/python -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))"
            f"[\"collector\"] != sys.argv[2])' {core.ENROLMENT} {shlex.quote(url)} 2>/dev/null"
            f" && cmp -s {core.CA_FILE} {core.STATE_DIR}/collector-ca.pem")


def agent_pattern() -> str:
    """``pkill -f`` pattern of the running agent that does not match the shell running the
    pkill (its own command line holds the pattern: ``[/]`` matches ``/``, not ``[/]``)."""
    return shlex.quote(f"[/]{core.VENV[1:]}/bin/baomi agent run")


def enrol_command(url: str, groups: tuple[str, ...], systemd: bool) -> str:
    argv = [f"{core.VENV}/bin/baomi", "agent", "enroll", "--collector", url,
            "--ca", core.CA_FILE, "--host", host.name, "--policy", core.POLICY_FILE,
            "--state-dir", core.STATE_DIR]
    for group in groups:
        argv += ["--group", group]
    stop = (f"systemctl stop {core.UNIT} 2>/dev/null || true" if systemd else
            f"pid=$(cat {core.PIDFILE} 2>/dev/null) && kill \"$pid\" 2>/dev/null; "
            f"pkill -f {agent_pattern()} || true; sleep 1")
    return "\n".join([
        "set -e",
        f"trap 'rm -f {TOKEN_FILE}' EXIT",
        stop,
        f"BAOMI_ENROL_TOKEN=$(cat {TOKEN_FILE}) {shlex.join(argv)}",
    ])


@operation()
def enrol(url: str, token: str, groups: tuple[str, ...], systemd: bool):  # type: ignore[no-untyped-def]
    """Enrol the agent with TOKEN unless it already is with URL and the configured CA."""
    if host.get_fact(CommandSucceeds, check=enrolled_test(url)):
        host.noop(f"enrolled with {url}")
        return
    yield from put_secret(TOKEN_FILE, token)
    yield enrol_command(url, groups, systemd)


def _tokens() -> dict[str, str]:
    path = os.environ.get("BAOMI_AGENT_TOKENS", "")
    try:
        data = json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):
        data = {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def apply() -> None:
    ctx = context()
    want = core.desired(ctx)
    reason = core.not_applicable(want)
    if reason:
        shell_if(name=op_name(C, "agent"), check="true", command="true", reason=reason)
        return
    collector = os.environ.get("BAOMI_AGENT_COLLECTOR", "")
    ca = pinned_ca(collector) if collector else None
    if not ca:
        refuse(name=op_name(C, "collector CA"),
               message=f"no CA pinned for collector {collector!r} on the controller "
                       "(run baomi collector-deploy first)")
        return
    built = wheels.built_or_exit("agent", "baomi agent-deploy")
    installed = wheels.install(C, "agent", built)
    if installed is None:
        return
    files.directory(name=op_name(C, core.CONF_DIR), path=core.CONF_DIR, user="root",
                    group="root", mode="0755")
    files.directory(name=op_name(C, core.STATE_DIR), path=core.STATE_DIR, user="root",
                    group="root", mode="0700")
    # The unit's ReadWritePaths must exist before it starts.
    files.directory(name=op_name(C, want.spool_dir), path=want.spool_dir, user="root",
                    group="root", mode="0700")
    policy = put_text(C, core.POLICY_FILE, Path(ctx.policy.source).read_text(encoding="utf-8"))
    put_text(C, core.CA_FILE, ca)
    put_text(C, core.SYSCTL_FILE, want.sysctl)
    shell_if(name=op_name(C, "inotify limits live (a host with its own kernel)"),
             check=f"{limits_test()} || ! {{ {OWN_KERNEL}; }}",
             command=f"sysctl -q -p {core.SYSCTL_FILE}",
             reason=f"live limits already raised, or a container sharing the machine's kernel"
                    f" ({core.SYSCTL_FILE} applies at its next boot)")
    systemd = host.get_fact(CommandSucceeds, check="[ -d /run/systemd/system ]")
    token = _tokens().get(host.name)
    if token is None:
        refuse(name=op_name(C, "enrolment token"),
               message=f"no enrolment token for {host.name} (the command makes them)")
        return
    enrolled = enrol(name=op_name(C, f"enrolled with {want.collector}"), url=want.collector,
                     token=token, groups=want.groups, systemd=systemd)
    if systemd:
        unit = put_text(C, core.UNIT_PATH, want.unit)
        shell_if(name=op_name(C, f"{core.UNIT} restarted (new venv, unit, policy or enrolment)"),
                 check="false", reason="",
                 command=f"systemctl daemon-reload && systemctl restart {core.UNIT}",
                 _if=any_changed(*cast(Any, (installed, policy, enrolled, unit))))
        unit_enabled_and_active(C, core.UNIT)
    else:
        script = put_text(C, core.SUPERVISOR, want.supervisor, mode="0755")
        start = f"setsid -f {core.SUPERVISOR} >> {core.LOG} 2>&1 < /dev/null"
        running = supervised.supervisor_running(core.PIDFILE, core.SUPERVISOR)
        if host.get_fact(CommandSucceeds, check=running):
            shell_if(name=op_name(C, "supervisor restarted (new venv, script, policy or "
                                     "enrolment)"), check="false", reason="",
                     command=f"pid=$(cat {core.PIDFILE}) && kill \"$pid\"; "
                             f"pkill -f {agent_pattern()}; sleep 1; {start}",
                     _if=any_changed(*cast(Any, (installed, policy, enrolled, script))))
        else:
            shell_if(name=op_name(C, "supervisor started (no systemd)"), check="false",
                     reason="", command=start)


# `baomi agent-deploy` runs this file on its own (it is not in the baseline).
if os.environ.get("BAOMI_AGENT_DEPLOY") == "1":
    apply()
