"""R-TLS 加密传输, R-LOG on a host: sshd drop-in (keys only, approved crypto and host keys,
no forwarding, VERBOSE logs, banner), /etc/issue(.net); sshd -t before reload."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from baomi.controls import ssh as core
from baomi.deploy.common import Observation, context, op_name, put_text
from baomi.fixes.ssh import neutralise_script
from baomi.fixes.sshd import install_dropin_script

C = core.CONTROL.name


@operation()
def sshd_settings(want: core.Desired):  # type: ignore[no-untyped-def]
    """Install the drop-in and neutralise earlier overrides, only if `sshd -t` accepts it all."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)
    if not core.compare(want, seen):
        host.noop(f"{core.DROPIN} is in place and sshd -T shows the policy's values")
        return
    neutralise = neutralise_script(seen, want)
    install = install_dropin_script(core.DROPIN, want.dropin)
    yield f"{neutralise}; {install}" if neutralise else install


def apply() -> None:
    want = core.desired(context())
    for path in core.ISSUE_FILES:  # the banner before and after login prompts (R-TLS, R-LOG)
        put_text(C, path, want.banner)
    sshd_settings(name=op_name(C, f"{core.DROPIN} (sshd -t, reload)"), want=want)
