"""R-ACL 访问控制, R-DST 彻底销毁: no customer data in core dumps.

A core dump is a copy of a process's memory, written where whoever reads crash files can read
it, and kept past any retention: a process that read customer files must leave none.  Three
settings, each in a file of baomi's:

- ``fs.suid_dumpable = 0`` (``/etc/sysctl.d/99-zz-baomi-core-dumps.conf``, read after
  systemd-coredump's ``50-coredump.conf``, which sets 2): setuid programs never dump;
- ``* hard core 0`` and ``root hard core 0`` (``/etc/security/limits.d/baomi-core-dumps.conf``;
  limits.conf's ``*`` does not apply to root): PAM sessions cannot raise the core limit;
- where systemd-coredump is installed, ``Storage=none`` and ``ProcessSizeMax=0``
  (``/etc/systemd/coredump.conf.d/baomi.conf``): nothing is stored even if a dump happens.

The live ``fs.suid_dumpable`` is judged only on a host with its own kernel
(:mod:`baomi.sysctl`); any other limits line giving ``core`` a hard limit above 0 is named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from baomi import sysctl
from baomi.controls.contract import Control, HostContext, check, file_findings
from baomi.findings import Finding
from baomi.observe import cat, script, sections

SYSCTL_FILE_CHECK = check("core_dumps.sysctl_file",
                          "fs.suid_dumpable = 0 in baomi's sysctl.d file, not overridden")
LIVE = check("core_dumps.suid_dumpable_live", "the running kernel has fs.suid_dumpable = 0")
LIMITS = check("core_dumps.limits", "PAM sessions get a hard core limit of 0 (root included)")
COREDUMP = check("core_dumps.systemd_coredump",
                 "systemd-coredump stores nothing (Storage=none, ProcessSizeMax=0)")
CHECKS = (SYSCTL_FILE_CHECK, LIVE, LIMITS, COREDUMP)
HEADER = ("# Managed by baomi: R-ACL 访问控制, R-DST 彻底销毁 (no core dumps). "
          "Local edits are reverted.\n")

SYSCTL_FILE = "/etc/sysctl.d/99-zz-baomi-core-dumps.conf"
LIMITS_FILE = "/etc/security/limits.d/baomi-core-dumps.conf"
LIMITS_FILES = "/etc/security/limits.conf /etc/security/limits.d/*.conf"
COREDUMP_FILE = "/etc/systemd/coredump.conf.d/baomi.conf"
COREDUMP_BINARIES = "/lib/systemd/systemd-coredump /usr/lib/systemd/systemd-coredump"
VALUES = (("fs.suid_dumpable", "0"),)


@dataclass(frozen=True)
class Desired:
    enabled: bool
    sysctl_conf: str
    limits_conf: str
    coredump_conf: str


def desired(ctx: HostContext) -> Desired:
    return Desired(
        enabled=ctx.policy.core_dumps.enabled,
        sysctl_conf=sysctl.render(HEADER, VALUES),
        limits_conf=HEADER + "*\thard\tcore\t0\nroot\thard\tcore\t0\n",
        coredump_conf=HEADER + "[Coredump]\nStorage=none\nProcessSizeMax=0\n",
    )


def observe_script(want: Desired) -> str:
    keys = tuple(k for k, _ in VALUES)
    return script({
        **sysctl.commands(SYSCTL_FILE, keys),
        "limits_file": cat(LIMITS_FILE),
        # FILE:LINE:TEXT of every limits line about core (domain type item value).
        "limits": f"for f in {LIMITS_FILES}; do [ -f \"$f\" ] && "
                  "grep -HnE '^[[:space:]]*[^#[:space:]]+[[:space:]]+(hard|-)[[:space:]]+core"
                  "[[:space:]]' \"$f\"; done; true",
        "coredump": f"for f in {COREDUMP_BINARIES}; do [ -x \"$f\" ] && echo \"$f\"; done; true",
        "coredump_file": cat(COREDUMP_FILE),
    })


@dataclass(frozen=True)
class Observed:
    sysctl: sysctl.Seen
    limits_file: str | None
    raising: tuple[str, ...]           # "FILE:LINE: TEXT" of other hard core limits above 0
    coredump: bool                     # systemd-coredump installed
    coredump_file: str | None


_LIMIT = re.compile(r"^(/[^:]+):(\d+):\s*(\S+)\s+(hard|-)\s+core\s+(\S+)")


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)

    def raw(name: str) -> str:
        s = sec.get(name)
        return s.out if s is not None else ""

    raising = []
    for line in raw("limits").splitlines():
        m = _LIMIT.match(line.strip())
        if m and m[1] != LIMITS_FILE and m[5] != "0":
            raising.append(f"{m[1]}:{m[2]}: {m[3]} {m[4]} core {m[5]}")
    return Observed(
        sysctl=sysctl.parse_seen(sec),
        limits_file=sec.text("limits_file"),
        raising=tuple(raising),
        coredump=bool(raw("coredump").strip()),
        coredump_file=sec.text("coredump_file"),
    )


def compare(want: Desired, seen: Observed) -> list[Finding]:
    findings = sysctl.findings((SYSCTL_FILE_CHECK, SYSCTL_FILE_CHECK, LIVE), SYSCTL_FILE, VALUES,
                               want.sysctl_conf, seen.sysctl)
    findings += file_findings(LIMITS, LIMITS_FILE, want.limits_conf, seen.limits_file)
    for where in seen.raising:
        findings.append(LIMITS.finding(where.split(": ", 1)[0], "no hard core limit above 0",
                                       where.split(": ", 1)[1]))
    if seen.coredump:
        findings += file_findings(COREDUMP, COREDUMP_FILE, want.coredump_conf,
                                  seen.coredump_file)
    return findings


def not_applicable(want: Desired) -> str | None:
    return None if want.enabled else "core_dumps.enabled is false in the policy"


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    reasons = {} if seen.sysctl.own_kernel else {LIVE.id: sysctl.SHARED_KERNEL}
    if not seen.coredump:
        reasons[COREDUMP.id] = "systemd-coredump is not installed on this host"
    return reasons


def evidence(want: Desired, seen: Observed) -> dict[str, str]:
    shown = {LIMITS.id: f"{LIMITS_FILE}: * and root hard core 0; no other line raises it"}
    if seen.sysctl.own_kernel:
        shown[LIVE.id] = f"live fs.suid_dumpable = {seen.sysctl.live.get('fs.suid_dumpable', '?')}"
    return shown


CONTROL: Control[Desired, Observed] = Control(
    "core_dumps", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped,
    evidence)
