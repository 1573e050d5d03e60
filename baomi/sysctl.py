"""Kernel settings in ``/etc/sysctl.d``: the file text, the live values, who overrides them.

Several controls own sysctl settings (``kernel``: R-SEC; ``core_dumps``: fs.suid_dumpable);
each writes its own file and judges it the same way, here:

- the file is read by ``sysctl --system`` (and systemd-sysctl) in *file name* order across
  ``/etc/sysctl.d``, ``/run/sysctl.d``, ``/usr/local/lib/sysctl.d``, ``/usr/lib/sysctl.d``,
  ``/lib/sysctl.d`` (a name in an earlier folder hides the same name in a later one), then
  ``/etc/sysctl.conf``; the last value read wins.  Debian ships
  ``/usr/lib/sysctl.d/99-protect-links.conf`` (``fs.protected_fifos = 1``), so baomi's files
  are named ``99-zz-baomi-*.conf`` to be read after it; any file read later that sets one of
  our keys to another value is named by the check;
- live values are looked at only on a host with a kernel of its own: a lab container shares
  the lab machine's kernel (``fs.*``, ``kernel.*`` are global), so there the file is written
  and waits for a boot, and the live check is not applicable with that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from baomi.controls.contract import Check, file_findings
from baomi.findings import Finding
from baomi.observe import Sections, cat

# A kernel of its own: PID 1 is an init (a plain lab host's PID 1 is sshd in a PID namespace),
# not a container by systemd's test, nor by PID 1's environment.
OWN_KERNEL = ("grep -qxE 'systemd|init' /proc/1/comm && "
              "command -v systemd-detect-virt >/dev/null && ! systemd-detect-virt -q -c && "
              "! tr '\\0' '\\n' < /proc/1/environ 2>/dev/null | grep -q '^container='")
SHARED_KERNEL = ("a container host shares the lab machine's kernel: live values are never "
                 "changed or judged here (the file applies at the host's next boot; proven on "
                 "the VM)")
DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
        "/lib/sysctl.d")
MAIN = "/etc/sysctl.conf"


def render(header: str, values: tuple[tuple[str, str], ...]) -> str:
    return header + "".join(f"{key} = {value}\n" for key, value in values)


def kernel_test() -> str:
    """Shell printing ``own`` or ``shared`` (see :data:`OWN_KERNEL`)."""
    return f"if {OWN_KERNEL}; then echo own; else echo shared; fi"


def live_command(keys: tuple[str, ...]) -> str:
    """``key = value`` per key the kernel has (unknown keys are left out, not an error)."""
    return "sysctl -e " + " ".join(keys) if keys else "true"


def settings_command(keys: tuple[str, ...]) -> str:
    """FILE:LINE:TEXT of every sysctl file line that sets one of ``keys``."""
    pattern = "|".join(k.replace(".", "[.]") for k in keys)
    files = " ".join(f"{d}/*.conf" for d in DIRS)
    return (f"for f in {files} {MAIN}; do [ -f \"$f\" ] && grep -HnE "
            f"'^[[:space:]]*-?({pattern})[[:space:]]*=' \"$f\"; done; true")


@dataclass(frozen=True)
class FileSetting:
    path: str
    line: int
    key: str
    value: str


def parse_live(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = " ".join(value.split())
    return out


def parse_settings(text: str) -> tuple[FileSetting, ...]:
    out = []
    for line in text.splitlines():
        m = re.match(r"^(/[^:]+):(\d+):\s*-?([^=\s]+)\s*=\s*(.*)$", line)
        if m:
            out.append(FileSetting(m[1], int(m[2]), m[3], " ".join(m[4].split())))
    return tuple(out)


def _order(path: str) -> tuple[int, str]:
    """Reading order of ``sysctl --system``: drop-ins by file name, /etc/sysctl.conf last."""
    return (1, "") if path == MAIN else (0, path.rsplit("/", 1)[1])


def overriding(ours: str, settings: tuple[FileSetting, ...], key: str,
               value: str) -> list[FileSetting]:
    """Lines read after our file (or hiding it) that give ``key`` another value."""
    name = ours.rsplit("/", 1)[1]
    shown: dict[str, str] = {}  # a file name in an earlier folder hides it in later ones
    for d in DIRS:
        for s in settings:
            if s.path.startswith(d + "/"):
                shown.setdefault(s.path.rsplit("/", 1)[1], d)
    found = []
    for s in settings:
        if s.path == ours or s.key != key or s.value == value:
            continue
        base = s.path.rsplit("/", 1)[1]
        hidden = s.path != MAIN and shown.get(base) != s.path.rsplit("/", 1)[0]
        if not hidden and (_order(s.path) > _order(ours) or base == name):
            found.append(s)
    return found


@dataclass(frozen=True)
class Seen:
    """A control's sysctl file, the live values of its keys, every line setting them."""

    file: str | None
    own_kernel: bool
    live: dict[str, str]
    settings: tuple[FileSetting, ...]


def commands(path: str, keys: tuple[str, ...]) -> dict[str, str]:
    """Observe-script sections for a control's file at ``path`` with ``keys``."""
    return {"sysctl_file": cat(path), "kernel": kernel_test(), "live": live_command(keys),
            "settings": settings_command(keys)}


def parse_seen(sec: Sections) -> Seen:
    def raw(name: str) -> str:
        s = sec.get(name)
        return s.out if s is not None else ""

    return Seen(sec.text("sysctl_file"), raw("kernel").strip() == "own",
                parse_live(raw("live")), parse_settings(raw("settings")))


def findings(checks: tuple[Check, Check, Check], path: str, values: tuple[tuple[str, str], ...],
             conf: str, seen: Seen) -> list[Finding]:
    """(file, overridden, live) checks: the file whole and key by key, the lines read after
    it that give a key another value, the live values where the kernel is the host's own."""
    file_check, overridden, live = checks
    out = file_findings(file_check, path, conf, seen.file)
    in_file = parse_live(seen.file or "")
    for key, value in values:
        if seen.file is not None and in_file.get(key) != value:  # the edit, named key by key
            out.append(file_check.finding(f"{key} in {path}", value, in_file.get(key, "missing")))
        for s in overriding(path, seen.settings, key, value):
            out.append(overridden.finding(f"{key} in {s.path}:{s.line}", value,
                                          f"{s.value} (read after {path})"))
        if seen.own_kernel and seen.live.get(key) != value:
            out.append(live.finding(f"live {key}", value, seen.live.get(key, "not in this kernel"),
                                    "critical"))
    return out


def later_lines(path: str, values: tuple[tuple[str, str], ...],
                seen: Seen) -> list[tuple[str, int]]:
    """(file, line) of each line read after ``path`` that defeats one of its values."""
    return [(s.path, s.line) for key, value in values
            for s in overriding(path, seen.settings, key, value)]
