"""R-SEC 入侵检测 on a host: the policy's sysctl.d file (loaded where the kernel is the host's
own) and the uncommon network protocols refused in modprobe.d."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import files

from baomi import sysctl
from baomi.controls import kernel as core
from baomi.deploy.common import Observation, context, op_name, put_text
from baomi.fixes.sysctl import disable_lines, install_sysctl

C = core.CONTROL.name


@operation()
def sysctl_settings(want: core.Desired):  # type: ignore[no-untyped-def]
    """Install the file and load it, unless it is in place and (own kernel) live already."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)
    wrong = [f for f in core.compare(want, seen)
             if f.check in (core.SYSCTL_FILE_CHECK.id, core.LIVE.id, core.OVERRIDDEN.id)]
    later = sysctl.later_lines(core.SYSCTL_FILE, want.values, seen.sysctl)
    if not wrong or (not disable_lines(later, "R-SEC") and len(wrong) == len(later)):
        host.noop(f"{core.SYSCTL_FILE} in place" + (", live values equal" if seen.sysctl.own_kernel
                                                    else f"; {sysctl.SHARED_KERNEL}"))
        return
    steps = [disable_lines(later, "R-SEC"), install_sysctl(core.SYSCTL_FILE, want.sysctl_conf)]
    yield "\n".join(s for s in steps if s)


def apply() -> None:
    want = core.desired(context())
    if core.not_applicable(want):
        return
    sysctl_settings(name=op_name(C, f"{core.SYSCTL_FILE} (sysctl -p on its own kernel)"),
                    want=want)
    if want.modprobe_conf is not None:
        put_text(C, core.MODPROBE_FILE, want.modprobe_conf)
    else:
        files.file(name=op_name(C, f"{core.MODPROBE_FILE} absent"), path=core.MODPROBE_FILE,
                   present=False)
