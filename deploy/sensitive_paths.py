"""R-ACL 最小权限, R-CLS 密级分类 on a host: each sensitive path exists, owned and no looser than
its level allows (recursively), and marked with its level.

Modes are fixed by *removing* the bits above the ceiling (``chmod g-w,o-rwx``) from the
entries that have them, never by forcing one mode, so stricter files stay stricter.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import operation

from baomi.controls import sensitive_paths as core
from baomi.deploy.common import Observation, groups, op_name, policy, shell_if

C = core.CONTROL


def _seen(marking: str, want: core.PathWant) -> core.PathSeen:
    script = core.observe_script(core.Desired(marking, (want,)))
    return core.parse(host.get_fact(Observation, script=script)).paths[0]


@operation()
def mark(want: core.PathWant, marking: str):  # type: ignore[no-untyped-def]
    """Write the level's mark (xattr or marker file) when it is missing or wrong."""
    seen = _seen(marking, want)
    if seen.mark == want.mark:
        host.noop(f"{want.path} is marked {want.mark!r}")
        return
    if marking == "xattr":
        yield core.write_xattr(want.path, want.mark)
        return
    marker = shlex.quote(f"{want.path.rstrip('/')}/{core.MARK_FILE}")
    # Created private, then given the tree's owner and the level's file ceiling.
    yield (f"(umask 077 && printf '%s\\n' {shlex.quote(want.mark)} > {marker}) && "
           f"chown {shlex.quote(want.owner)}:{shlex.quote(want.group)} {marker} && "
           f"chmod {want.max_file_mode:04o} {marker}")


@operation()
def ownership(want: core.PathWant, marking: str):  # type: ignore[no-untyped-def]
    """chown only the entries (symlinks themselves, never their targets) owned otherwise."""
    seen = _seen(marking, want)
    if seen.root is not None and seen.owners.total == 0:
        host.noop(f"every entry under {want.path} is {want.owner}:{want.group}")
        return
    q = shlex.quote(want.path)
    yield (core.owner_predicate(want) + f"; find {q} \\( \"$@\" \\) -exec chown -h "
           f"{shlex.quote(want.owner)}:{shlex.quote(want.group)} {{}} +")


@operation()
def modes(want: core.PathWant, marking: str):  # type: ignore[no-untyped-def]
    """Remove the permission bits above the level's ceilings from the entries that have them."""
    seen = _seen(marking, want)
    if seen.root is not None and seen.modes.total == 0:
        host.noop(f"no entry under {want.path} is looser than "
                  f"{want.max_file_mode:04o}/{want.max_dir_mode:04o}")
        return
    q = shlex.quote(want.path)
    yield (f"find {q} ! -type l -type d -perm /{want.dir_excess:03o} -exec chmod "
           f"{core.symbolic_removal(want.dir_excess)} {{}} + && "
           f"find {q} ! -type l ! -type d -perm /{want.file_excess:03o} -exec chmod "
           f"{core.symbolic_removal(want.file_excess)} {{}} +")


def apply() -> None:
    want = core.desired(policy(), groups())
    for reason in core.skipped(want):
        # Reported as "unchanged" with its reason, instead of no row at all.
        shell_if(name=op_name(C, "sensitive paths"), check="true", command="true", reason=reason)
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
        # setgid directories: files created later inherit the path's group instead of their
        # creator's, so everyday work keeps the tree compliant (R-ACL).
        shell_if(name=op_name(C, f"{p.path} new files inherit group {p.group}"),
                 check=f"[ -z \"$(find {q} ! -type l -type d ! -perm -2000 -print -quit)\" ]",
                 command=f"find {q} ! -type l -type d ! -perm -2000 -exec chmod g+s {{}} +",
                 reason=f"every directory under {p.path} is setgid {p.group}")
