"""R-ACL, R-DST on a host: no core dumps (suid_dumpable, hard core limit, systemd-coredump)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from baomi import sysctl
from baomi.controls import core_dumps as core
from baomi.deploy.common import Observation, context, nothing_to_do, op_name, put_text
from baomi.fixes.sysctl import disable_lines, install_sysctl
from baomi.sysctl import SHARED_KERNEL

C = core.CONTROL.name


def _seen(want: core.Desired) -> core.Observed:
    return core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)


@operation()
def suid_dumpable(want: core.Desired):  # type: ignore[no-untyped-def]
    """Install the sysctl file and load it where the kernel is the host's own."""
    seen = _seen(want)
    wrong = [f for f in core.compare(want, seen)
             if f.check in (core.LIVE.id, core.SYSCTL_FILE_CHECK.id)]
    later = sysctl.later_lines(core.SYSCTL_FILE, core.VALUES, seen.sysctl)
    if not wrong:
        host.noop(f"{core.SYSCTL_FILE} in place" + ("; live fs.suid_dumpable = 0"
                                                    if seen.sysctl.own_kernel
                                                    else f"; {SHARED_KERNEL}"))
        return
    steps = [disable_lines(later, "R-ACL"), install_sysctl(core.SYSCTL_FILE, want.sysctl_conf)]
    yield "\n".join(s for s in steps if s)


@operation()
def core_limits(want: core.Desired):  # type: ignore[no-untyped-def]
    """Comment out limits lines elsewhere that raise the hard core limit above 0."""
    raising = [(path, int(n)) for path, n in (r.split(": ", 1)[0].rsplit(":", 1)
                                              for r in _seen(want).raising)]
    script = disable_lines(raising, "R-ACL")
    if not script:
        host.noop("no other limits line raises the hard core limit")
        return
    yield script


def apply() -> None:
    want = core.desired(context())
    if core.not_applicable(want):
        return
    suid_dumpable(name=op_name(C, f"{core.SYSCTL_FILE} (sysctl -p on its own kernel)"),
                  want=want)
    put_text(C, core.LIMITS_FILE, want.limits_conf)
    core_limits(name=op_name(C, "other limits lines raising core"), want=want)
    if _seen(want).coredump:
        put_text(C, core.COREDUMP_FILE, want.coredump_conf)
    else:
        nothing_to_do(name=op_name(C, core.COREDUMP_FILE),
                      reason="systemd-coredump is not installed on this host")
