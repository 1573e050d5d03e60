"""R-ACL / R-PWD fixes: login.defs keys, pam_umask in the session stacks, pam_unix's hashing
arguments.  Each edit touches only the lines named; each script verifies its result."""

from __future__ import annotations

import shlex

from baomi import logindefs
from baomi.controls.login_defaults import (
    METHOD_WORDS,
    PAM_UMASK_LINE,
    Desired,
    Observed,
    pam_hash_problem,
    umask_lines,
    unix_line,
)
from baomi.pwquality import COMMON_PASSWORD


def login_defs_script(want: Desired, seen: Observed) -> str:
    return logindefs.set_script({**want.umask, **want.hashing}, seen.login_defs)


def pam_umask_script(seen: Observed) -> str:
    """Append the pam_umask line where none is; drop a ``umask=`` argument where one is."""
    steps = []
    for path, text in seen.sessions.items():
        if text is None:
            continue  # no such stack on this host: nothing to add to (the check names it)
        q = shlex.quote(path)
        lines = umask_lines(text, path)
        if not lines:
            steps.append(f"printf '%s\\n' {shlex.quote(PAM_UMASK_LINE)} >> {q}")
        for line, args in lines:
            if "umask=" in args:
                steps.append(f"sed -i -E '{line.number}s/[[:space:]]umask=[^[:space:]]*//' {q}")
    return "; ".join(steps)


def pam_hash_script(want: Desired, seen: Observed) -> str:
    """Rewrite pam_unix's method word and rounds= on its own line; fail when there is none."""
    line = unix_line(seen.password)
    if line is None:
        return f"echo '{COMMON_PASSWORD}: no pam_unix.so password line to set' >&2; exit 1"
    if pam_hash_problem(want, line) is None:
        return ""
    words = "|".join(METHOD_WORDS)
    n, q = line.line.number, shlex.quote(COMMON_PASSWORD)
    return (f"sed -i -E '{n}s/[[:space:]]({words}|rounds=[^[:space:]]*)([[:space:]]|$)/ /g; "
            f"{n}s/[[:space:]]({words}|rounds=[^[:space:]]*)([[:space:]]|$)/ /g; "
            f"{n}s/[[:space:]]*$/ {want.pam_method} rounds={want.pam_rounds}/' {q}")
