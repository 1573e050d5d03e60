"""One read-only shell script per control, its output split back into labelled sections.

The deploy's facts, the checks and the agent run the *same* script (over SSH or locally) and
hand its output to the control's pure parser, so apply, audit and live watch read a host the
same way.  Each section carries the exit status of its command.

>>> text = script({"hello": "echo hi"})
>>> sections("\\n==> hello\\nhi\\n<== hello rc=0\\n")["hello"].out
'hi'
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_SECTION = re.compile(r"^==> (?P<name>[\w.-]+)\n(?P<out>.*?)\n?<== (?P=name) rc=(?P<rc>\d+)$",
                      re.M | re.S)


@dataclass(frozen=True)
class Section:
    out: str
    rc: int

    @property
    def ok(self) -> bool:
        return self.rc == 0


def script(commands: dict[str, str]) -> str:
    """A POSIX sh script printing each command's output between markers, never failing."""
    parts = []
    for name, command in commands.items():
        if not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"section name {name!r}: letters, digits, '.', '_' or '-' only")
        parts.append(f"printf '\\n==> %s\\n' {shlex.quote(name)}; "
                     f"( {command} ) 2>&1; "
                     f"printf '\\n<== %s rc=%d\\n' {shlex.quote(name)} $?")
    return "; ".join(parts)


def cat(path: str) -> str:
    """Print a file if it exists; rc 1 (and no output) when it does not."""
    quoted = shlex.quote(path)
    return f"if [ -e {quoted} ]; then cat {quoted}; else exit 1; fi"


class Sections(dict[str, Section]):
    """The sections of one run, by name."""

    def text(self, name: str) -> str | None:
        """The section's output when its command succeeded, else None (missing or failed)."""
        s = self.get(name)
        return s.out if s is not None and s.ok else None


def sections(output: str) -> Sections:
    found = Sections()
    for match in _SECTION.finditer(output):
        found[match["name"]] = Section(match["out"], int(match["rc"]))
    return found
