"""R-SEC 入侵检测 in the kernel: hardening sysctls from the policy, uncommon protocols refused.

One file, ``/etc/sysctl.d/99-zz-baomi-kernel.conf`` (read after Debian's
``99-protect-links.conf``; see :mod:`baomi.sysctl`), holds the policy's ``kernel.sysctl``
values; ``/etc/modprobe.d/baomi-net-protocols.conf`` refuses dccp, sctp, rds and tipc (network
protocols with a history of remotely reachable kernel bugs that no host here uses).

The control contract (:mod:`baomi.controls.contract`): the checks below; live values and
loaded modules are judged only on a host with a kernel of its own (a lab container shares the
lab machine's kernel: skipped with that reason, proven on the VM).  The install and the load
are in :mod:`baomi.fixes.kernel`.
"""

from __future__ import annotations

from dataclasses import dataclass

from baomi import modprobe, sysctl
from baomi.controls.contract import Control, HostContext, check, file_findings
from baomi.findings import Finding
from baomi.observe import cat, script, sections

SYSCTL_FILE_CHECK = check("kernel.sysctl_file", "baomi's sysctl.d file holds the policy's values")
OVERRIDDEN = check("kernel.sysctl_overridden",
                   "no sysctl file read after baomi's gives one of its keys another value")
LIVE = check("kernel.sysctl_live", "the running kernel has the policy's values")
PROTOCOLS_FILE = check("kernel.protocols_file", "baomi's modprobe.d refusal file is in place")
PROTOCOLS_REFUSED = check("kernel.protocols_refused",
                          "modprobe resolves each refused protocol to /bin/false")
PROTOCOLS_LOADED = check("kernel.protocols_loaded", "no refused protocol module is loaded")
CHECKS = (SYSCTL_FILE_CHECK, OVERRIDDEN, LIVE, PROTOCOLS_FILE, PROTOCOLS_REFUSED,
          PROTOCOLS_LOADED)
HEADER = "# Managed by baomi: R-SEC 入侵检测 (policy kernel). Local edits are reverted.\n"

SYSCTL_FILE = "/etc/sysctl.d/99-zz-baomi-kernel.conf"
MODPROBE_FILE = "/etc/modprobe.d/baomi-net-protocols.conf"


@dataclass(frozen=True)
class Desired:
    enabled: bool
    values: tuple[tuple[str, str], ...]
    sysctl_conf: str
    protocols: tuple[str, ...]
    modprobe_conf: str | None  # None: no protocol refused, the file must be absent


def desired(ctx: HostContext) -> Desired:
    k = ctx.policy.kernel
    return Desired(k.enabled, k.sysctl, sysctl.render(HEADER, k.sysctl), k.refuse_protocols,
                   HEADER + modprobe.refusal(k.refuse_protocols) if k.refuse_protocols
                   else None)


def observe_script(want: Desired) -> str:
    keys = tuple(k for k, _ in want.values)
    return script({
        **sysctl.commands(SYSCTL_FILE, keys),
        "modprobe_file": cat(MODPROBE_FILE),
        **modprobe.resolve_commands(want.protocols),
        "loaded": modprobe.loaded_command(want.protocols),
    })


@dataclass(frozen=True)
class Observed:
    sysctl: sysctl.Seen
    modprobe_file: str | None
    resolved: dict[str, str]           # protocol -> `modprobe -n -v` output
    loaded: tuple[str, ...] | None     # None: no loadable modules at all


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)

    def raw(name: str) -> str:
        s = sec.get(name)
        return s.out if s is not None else ""

    return Observed(
        sysctl=sysctl.parse_seen(sec),
        modprobe_file=sec.text("modprobe_file"),
        resolved={p: raw(modprobe.section(p)) for p in want.protocols},
        loaded=modprobe.parse_loaded(raw("loaded")),
    )


def compare(want: Desired, seen: Observed) -> list[Finding]:
    findings = sysctl.findings((SYSCTL_FILE_CHECK, OVERRIDDEN, LIVE), SYSCTL_FILE, want.values,
                               want.sysctl_conf, seen.sysctl)
    findings += file_findings(PROTOCOLS_FILE, MODPROBE_FILE, want.modprobe_conf, seen.modprobe_file)
    for module, found in modprobe.not_refused(seen.resolved).items():
        findings.append(PROTOCOLS_REFUSED.finding(f"modprobe -n -v {module}", modprobe.REFUSED,
                                                  found[-160:]))
    if seen.sysctl.own_kernel:
        for module in seen.loaded or ():
            findings.append(PROTOCOLS_LOADED.finding(f"kernel module {module}", "not loaded",
                                                     "loaded"))
    return findings


def not_applicable(want: Desired) -> str | None:
    return None if want.enabled else "kernel.enabled is false in the policy"


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    reasons = {}
    if not seen.sysctl.own_kernel:
        reasons = {LIVE.id: sysctl.SHARED_KERNEL, PROTOCOLS_LOADED.id: sysctl.SHARED_KERNEL}
    if not want.protocols:
        why = "kernel.refuse_protocols is empty"
        reasons.update({PROTOCOLS_REFUSED.id: why, PROTOCOLS_LOADED.id: why})
    return reasons


def evidence(want: Desired, seen: Observed) -> dict[str, str]:
    live = seen.sysctl.live
    shown = ", ".join(f"{k}={live.get(k, '?')}" for k, _ in want.values[:6])
    return {LIVE.id: f"live: {shown}, … ({len(want.values)} keys)"} \
        if seen.sysctl.own_kernel else {}


CONTROL: Control[Desired, Observed] = Control(
    "kernel", CHECKS, desired, observe_script, parse, compare, not_applicable, skipped,
    evidence)
