"""R-SEC on a host: fail2ban's sshd jail from the policy (see :mod:`baomi.controls.ssh_guard`)."""

from __future__ import annotations

from typing import Any, cast

from pyinfra import host
from pyinfra.operations import apt, files
from pyinfra.operations.util import any_changed

from baomi.controls import ssh_guard as core
from baomi.deploy.common import (
    Observation,
    context,
    nothing_to_do,
    op_name,
    put_text,
    shell_if,
    unit_enabled_and_active,
)

C = core.CONTROL.name
RESTART = f"systemctl enable {core.SERVICE} && systemctl restart {core.SERVICE}"


def apply() -> None:
    want = core.desired(context())
    reason = core.not_applicable(want)
    systemd = host.get_fact(Observation, script="[ -d /run/systemd/system ] && echo yes || echo no")
    if not reason and systemd.strip() != "yes":
        reason = "no systemd on this host: nothing keeps fail2ban running"
    if reason:
        nothing_to_do(name=op_name(C, "fail2ban"), reason=reason)
        return
    apt.packages(name=op_name(C, "fail2ban package"), packages=["fail2ban", "nftables"])
    # fail2ban refuses to start a jail whose log file does not exist yet (a fresh host).
    files.file(name=op_name(C, core.AUTH_LOG), path=core.AUTH_LOG, present=True, user="root",
               group="adm", mode="0640")
    jail = put_text(C, core.JAIL_FILE, want.jail)
    shell_if(name=op_name(C, f"restart {core.SERVICE}"), check="false", command=RESTART,
             reason="", _if=any_changed(cast(Any, jail)))
    unit_enabled_and_active(C, core.SERVICE)
