"""R-PWD fixes: neutralise overriding pwquality lines, repair the PAM line, build the cracklib
dictionary, set login.defs ageing, ``chage`` human accounts.  Pure: shell text only."""

from __future__ import annotations

import shlex

from baomi import logindefs
from baomi.controls.passwords import (
    DROPIN,
    OWNED_ARGS,
    Desired,
    Observed,
    aged,
    drifting,
    effective,
    overriding,
    pam_findings,
    weak,
)
from baomi.pwquality import COMMON_PASSWORD, as_int, pwquality_line, read_pwquality


def weak_keys(want: Desired, seen: Observed) -> set[str]:
    """Owned keys whose effective value falls short of the policy."""
    return {k for k, e in effective(seen).items() if weak(want, k, e.value)}


def neutralise_script(seen: Observed, want: Desired) -> str:
    """Comment out what defeats the drop-in: lines read after it that set a short-falling value
    for a key whose effective value falls short, and the line that stops libpwquality's
    reading.  Nothing else in those files changes."""
    short = weak_keys(want, seen)
    lines = [s.line for s in overriding(seen, short)
             if (v := as_int(s.value)) is not None and weak(want, s.key, v)]
    reading = read_pwquality(seen.pwq_files)
    if seen.lib_rc != 0 and reading.error is not None and reading.error.path != DROPIN:
        lines.append(reading.error)
    commands = [f"sed -i '{line.number}s/^/# disabled by baomi (R-PWD): /' "
                f"{shlex.quote(line.path)}" for line in lines]
    return "; ".join(dict.fromkeys(commands))


def pam_weak_args(want: Desired, seen: Observed) -> list[str]:
    """Arguments of the pam_pwquality line that weaken the policy (and ``conf=``)."""
    line = pwquality_line(seen.pam)
    if line is None:
        return []
    found = [k for k in OWNED_ARGS if k != "conf" and (v := line.arg(k)) is not None
             and (n := as_int(v)) is not None and weak(want, k, n)]
    return found + (["conf"] if line.arg("conf") is not None else [])


def pam_needs_change(want: Desired, seen: Observed) -> bool:
    return bool(pam_findings(seen) or pam_weak_args(want, seen))


def pam_script(want: Desired, seen: Observed) -> str:
    """Make common-password run pam_pwquality (requisite, before pam_unix, no weakening args).

    A missing line is added by ``pam-auth-update`` (Debian's own tool, from the package's
    profile); weakening arguments are removed and the control set to requisite in place.  The
    script ends by verifying the result and fails loudly if it is still wrong.
    """
    q = shlex.quote(COMMON_PASSWORD)
    steps = []
    line = pwquality_line(seen.pam)
    if line is None:
        steps.append("pam-auth-update --enable pwquality")
    else:
        n = line.line.number
        args = pam_weak_args(want, seen)
        if args:
            steps.append(f"sed -i -E '{n}s/[[:space:]]({'|'.join(args)})=[^[:space:]]*//g' {q}")
        if line.control not in ("requisite", "required"):
            steps.append(f"sed -i -E '{n}s/^([[:space:]]*-?password[[:space:]]+)"
                         f"(\\[[^]]*\\]|[^[:space:]]+)/\\1requisite/' {q}")
    verify = (f"awk '$1 == \"password\" && $0 ~ /pam_pwquality\\.so/ && "
              "($2 == \"requisite\" || $2 == \"required\") { ok = 1 } "
              "$1 == \"password\" && $0 ~ /pam_unix\\.so/ && !ok { exit 1 } "
              f"END {{ exit !ok }}' {q}")
    steps.append(f"if ! {verify}; then echo '{COMMON_PASSWORD}: pam_pwquality.so is still not "
                 "requisite before pam_unix.so; fix it by hand or with pam-auth-update' >&2; "
                 "exit 1; fi")
    return "set -e; " + "; ".join(steps)


def dictionary_script(seen: Observed) -> str:
    """Build the cracklib dictionary (cracklib-runtime's own tool), then verify it is there."""
    target = shlex.quote(seen.dictpath + ".pwd")
    return (f"update-cracklib; test -e {target} || {{ echo 'update-cracklib did not make "
            f"'{target}; exit 1; }}")


def login_defs_script(want: Desired, seen: Observed) -> str:
    """Set each ageing key of login.defs (every line that sets it; appended when none does)."""
    return logindefs.set_script(want.login_defs, seen.login_defs)


def ageing_commands(want: Desired, seen: Observed) -> list[str]:
    """One ``chage`` per human account whose ageing differs (a missing last-change: today)."""
    a = want.ageing
    commands = []
    for account in aged(want, seen):
        if not drifting(want, account):
            continue
        today = ' -d "$(date +%F)"' if account.last_change is None else ""
        commands.append(f"chage -m {a.min_days} -M {a.max_days} -W {a.warn_days}{today} "
                        f"{shlex.quote(account.name)}")
    return commands
