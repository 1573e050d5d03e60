"""R-ACL default umask and R-PWD hashing cost on a host: login.defs, pam_umask, pam_unix."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from baomi.controls import login_defaults as core
from baomi.deploy.common import Observation, context, op_name
from baomi.fixes.login_defaults import login_defs_script, pam_hash_script, pam_umask_script

C = core.CONTROL.name


@operation()
def login_defaults(want: core.Desired):  # type: ignore[no-untyped-def]
    """Set what differs, as the host is when the operation runs."""
    seen = core.parse(host.get_fact(Observation, script=core.observe_script(want)), want)
    if not core.compare(want, seen):
        host.noop(f"UMASK {want.umask['UMASK']}, pam_umask in the sessions, "
                  f"{want.pam_method} rounds={want.pam_rounds}")
        return
    steps = [s for s in (login_defs_script(want, seen), pam_umask_script(seen),
                         pam_hash_script(want, seen)) if s]
    yield "set -e; " + "; ".join(steps)


def apply() -> None:
    want = core.desired(context())
    login_defaults(name=op_name(C, "login.defs UMASK/hashing, pam_umask, pam_unix rounds"),
                   want=want)
