"""``/etc/login.defs``: shadow's defaults for new accounts, read and set key by key.

Several controls own keys of it (``passwords``: ageing, R-PWD; ``login_defaults``: UMASK and
the hashing method and cost, R-ACL/R-PWD).  shadow's ``getdef`` keeps the *last* line setting
a key, so that line is the effective one; setting a key rewrites every line that sets it (and
appends it when none does), leaving every other line alone.
"""

from __future__ import annotations

import shlex

from baomi.controls.contract import Check
from baomi.findings import Finding
from baomi.pwquality import Line

PATH = "/etc/login.defs"


def grep_command(keys: tuple[str, ...]) -> str:
    """LINE:TEXT of each line setting one of ``keys`` (exit 2 when the file is missing)."""
    return (f"[ -e {PATH} ] || exit 2; grep -nE '^[[:space:]]*(" + "|".join(keys)
            + f")([[:space:]]|$)' {PATH}; true")


def parse(text: str) -> tuple[Line, ...]:
    found = []
    for raw in text.splitlines():
        number, _, rest = raw.partition(":")
        if number.isdigit():
            found.append(Line(PATH, int(number), rest))
    return tuple(found)


def effective(lines: tuple[Line, ...] | None, keys: tuple[str, ...]) -> dict[str, Line]:
    """The last line setting each key (shadow's getdef keeps the last one)."""
    last: dict[str, Line] = {}
    for line in lines or ():
        parts = line.text.split(None, 1)
        if parts and parts[0] in keys:
            last[parts[0]] = line
    return last


def value(line: Line) -> str:
    parts = line.text.split(None, 1)
    return parts[1].strip().strip('"') if len(parts) > 1 else ""


def findings(check: Check, want: dict[str, str], lines: tuple[Line, ...] | None,
             severity: str = "medium") -> list[Finding]:
    """One finding per key whose effective value is not the wanted one (or the file is gone)."""
    if lines is None:
        return [check.finding(PATH, "the file, with " + ", ".join(want), "missing", severity)]
    last = effective(lines, tuple(want))
    out = []
    for key, wanted in want.items():
        line = last.get(key)
        if line is None:
            out.append(check.finding(f"{PATH} {key}", wanted, "unset", severity))
        elif value(line) != wanted:
            out.append(check.finding(f"{PATH} {key}", wanted,
                                     f"{value(line)} (line {line.number})", severity))
    return out


def set_script(want: dict[str, str], lines: tuple[Line, ...] | None) -> str:
    """Set each key in place on every line that sets it; append the keys that are missing."""
    q = shlex.quote(PATH)
    last = effective(lines, tuple(want))
    steps = []
    for key, wanted in want.items():
        line = last.get(key)
        if line is not None and value(line) == wanted:
            continue
        steps.append(f"sed -i -E 's/^[[:space:]]*{key}([[:space:]].*)?$/{key}\\t{wanted}/' {q}")
        if line is None:
            steps.append(f"printf '%s\\t%s\\n' {key} {wanted} >> {q}")
    return "; ".join(steps)
