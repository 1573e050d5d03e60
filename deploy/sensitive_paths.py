"""R-ACL 最小权限, R-CLS 密级分类 on a host: each sensitive path exists, owned and no looser than
its level allows (recursively), and marked with its level (fixes: baomi.fixes.sensitive_paths).
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import operation

from baomi.controls import sensitive_paths as core
from baomi.deploy.common import Observation, context, nothing_to_do, op_name, shell_if
from baomi.fixes import sensitive_paths as fix

C = core.CONTROL.name


def _seen(marking: str, want: core.PathWant) -> core.PathSeen:
    one = core.Desired(marking, (want,))
    return core.parse(host.get_fact(Observation, script=core.observe_script(one)), one).paths[0]


@operation()
def mark(want: core.PathWant, marking: str):  # type: ignore[no-untyped-def]
    """Write the level's mark (xattr or marker file) when it is missing or wrong."""
    seen = _seen(marking, want)
    if seen.mark == want.mark:
        host.noop(f"{want.path} is marked {want.mark!r}")
        return
    yield fix.mark_script(want, marking)


@operation()
def ownership(want: core.PathWant, marking: str):  # type: ignore[no-untyped-def]
    """chown only the entries (symlinks themselves, never their targets) owned otherwise."""
    seen = _seen(marking, want)
    if seen.root is not None and seen.owners.total == 0:
        host.noop(f"every entry under {want.path} is {want.owner}:{want.group}")
        return
    yield fix.ownership_script(want)


@operation()
def modes(want: core.PathWant, marking: str):  # type: ignore[no-untyped-def]
    """Remove the permission bits above the level's ceilings from the entries that have them."""
    seen = _seen(marking, want)
    if seen.root is not None and seen.modes.total == 0:
        host.noop(f"no entry under {want.path} is looser than "
                  f"{want.max_file_mode:04o}/{want.max_dir_mode:04o}")
        return
    yield fix.modes_script(want)


def apply() -> None:
    want = core.desired(context())
    reason = core.CONTROL.not_applicable(want)
    if reason:
        nothing_to_do(name=op_name(C, "sensitive paths"), reason=reason)
    for p in want.paths:
        q, owner, group = shlex.quote(p.path), shlex.quote(p.owner), shlex.quote(p.group)
        shell_if(name=op_name(C, f"group {p.group}"), check=f"getent group {group} >/dev/null",
                 command=f"groupadd --system {group}", reason=f"group {p.group} exists")
        # Accounts are approved and created elsewhere (R-PRV): a missing owner stops here.
        missing = (f"user {p.owner} (owner of {p.path}) does not exist: create it (R-PRV) "
                   "or change the policy's owner")
        shell_if(name=op_name(C, f"owner {p.owner}"), check=f"getent passwd {owner} >/dev/null",
                 command=f"echo {shlex.quote(missing)} >&2; exit 1",
                 reason=f"user {p.owner} exists")
        shell_if(name=op_name(C, f"{p.path} directory"), check=f"[ -d {q} ]",
                 command=f"mkdir -p -m {p.max_dir_mode:04o} {q}", reason=f"{p.path} exists")
        mark(name=op_name(C, f"{p.path} mark"), want=p, marking=want.marking)
        ownership(name=op_name(C, f"{p.path} owner {p.owner}:{p.group}"), want=p,
                  marking=want.marking)
        modes(name=op_name(C, f"{p.path} modes ≤ {p.max_file_mode:04o}/{p.max_dir_mode:04o}"),
              want=p, marking=want.marking)
        shell_if(name=op_name(C, f"{p.path} new files inherit group {p.group}"),
                 check=f"[ -z \"$({fix.no_setgid_dir(p)} -print -quit)\" ]",
                 command=fix.setgid_script(p),
                 reason=f"every directory under {p.path} is setgid {p.group}")
