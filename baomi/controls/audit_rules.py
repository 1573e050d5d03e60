"""R-LOG 访问日志与操作审计: kernel audit watches on the sensitive paths whose level asks for it.

One rules file, ``/etc/audit/rules.d/50-baomi.rules``, holds a watch per path that applies to
the host and whose level has ``audit: true``::

    -w /srv/customers -p rwa -k baomi-confidential

(``permissions`` and ``key_prefix`` come from ``policy.audit_rules``; the key names the level
in English, so ``ausearch -k baomi-top-secret`` finds every access to 绝密 data).  A ``-w`` on a
directory watches its whole subtree.  Where no path needs a watch (or ``enabled: false``) the
file must be absent.

The kernel's loaded rules (``auditctl -l``) are compared too where the kernel answers.  Kernel
audit works only from a machine's initial PID namespace: inside a container (the lab's hosts)
``auditctl`` gets EPERM; the file is then installed and the kernel check reported not
applicable, with the reason (:func:`skipped`), never hidden.

The control contract (:mod:`baomi.controls.contract`): checks ``audit_rules.file`` and
``audit_rules.loaded``; the deploy loads the file with ``augenrules --load`` (pyinfra writes it).
"""

from __future__ import annotations

from dataclasses import dataclass

from baomi.controls.contract import Control, HostContext, check
from baomi.findings import Finding
from baomi.observe import cat, script, sections

FILE = check("audit_rules.file", "the rules file holds exactly the policy's watches")
LOADED = check("audit_rules.loaded", "the kernel has the policy's watches loaded, audit enabled, "
               "no stale baomi watch")
CHECKS = (FILE, LOADED)
RULES_FILE = "/etc/audit/rules.d/50-baomi.rules"
HEADER = "## Managed by baomi: R-LOG 访问日志与操作审计. Local edits are reverted.\n"
_PERMISSION_ORDER = "rwxa"  # the order auditctl -l prints them in


@dataclass(frozen=True)
class Watch:
    path: str
    permissions: str
    key: str
    severity: str

    @property
    def rule(self) -> str:
        return f"-w {self.path} -p {self.permissions} -k {self.key}"


@dataclass(frozen=True)
class Desired:
    watches: tuple[Watch, ...]
    key_prefix: str

    @property
    def content(self) -> str | None:
        """The rules file's exact text; None: the file must not exist."""
        if not self.watches:
            return None
        return HEADER + "".join(f"{w.rule}\n" for w in self.watches)


def desired(ctx: HostContext) -> Desired:
    policy = ctx.policy
    a = policy.audit_rules
    perms = "".join(c for c in _PERMISSION_ORDER if c in a.permissions)
    watches: list[Watch] = []
    if a.enabled:
        for p in policy.paths_for(set(ctx.groups)):
            level = policy.level(p.level)
            if level.audit:
                watches.append(Watch(p.path.rstrip("/") or "/", perms,
                                     f"{a.key_prefix}-{level.english}", level.severity))
    return Desired(tuple(watches), a.key_prefix)


def observe_script(want: Desired) -> str:
    return script({
        "file": cat(RULES_FILE),
        "loaded": "command -v auditctl >/dev/null || { echo 'auditctl is not installed'; "
                  "exit 127; }; auditctl -l",
        "enabled": "auditctl -s 2>/dev/null | sed -n 's/^enabled //p'",
        "augenrules": "command -v augenrules",
    })


@dataclass(frozen=True)
class Observed:
    file: str | None
    loaded: tuple[str, ...] | None  # None: the kernel could not be asked (see load_error)
    load_error: str | None
    enabled: str | None
    augenrules: bool


def normalise(rule: str) -> str:
    return " ".join(rule.split())


def parse(output: str, want: Desired) -> Observed:
    sec = sections(output)
    file_ = sec.get("file")
    loaded_sec = sec.get("loaded")
    loaded: tuple[str, ...] | None = None
    error: str | None = None
    if loaded_sec is None:
        error = "no answer from auditctl -l"
    elif loaded_sec.ok:
        loaded = tuple(normalise(line) for line in loaded_sec.out.splitlines()
                       if line.strip() and line.strip() != "No rules")
    else:
        error = (loaded_sec.out.strip().splitlines() or [f"exit {loaded_sec.rc}"])[-1][:200]
    enabled = sec.get("enabled")
    aug = sec.get("augenrules")
    return Observed(
        file=file_.out if file_ is not None and file_.ok else None,
        loaded=loaded,
        load_error=None if loaded is not None else (error or "auditctl -l failed"),
        enabled=enabled.out.strip() if enabled is not None and enabled.ok and
        enabled.out.strip() else None,
        augenrules=aug is not None and aug.ok,
    )


def _rules(text: str) -> list[str]:
    return [normalise(line) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _file(want: Desired, seen: Observed) -> list[Finding]:
    if want.content is None:
        if seen.file is not None:
            return [FILE.finding(RULES_FILE, "absent (no path here needs kernel audit)",
                                 "present", "medium")]
        return []
    if seen.file == want.content:
        return []
    if seen.file is None:
        return [FILE.finding(RULES_FILE, f"{len(want.watches)} baomi watch rule(s)", "missing")]
    have = _rules(seen.file)
    missing = [w.rule for w in want.watches if w.rule not in have]
    extra = [r for r in have if r not in {w.rule for w in want.watches}]
    found = "; ".join([*(f"missing {r!r}" for r in missing), *(f"extra {r!r}" for r in extra)])
    return [FILE.finding(RULES_FILE, "exactly the baomi watch rules", found or "edited content")]


def stale(want: Desired, seen: Observed) -> list[str]:
    """Loaded rules with a baomi key that the policy no longer asks for."""
    wanted = {w.rule for w in want.watches}
    return [r for r in seen.loaded or () if f" -k {want.key_prefix}-" in f" {r}"
            and r not in wanted]


def _loaded(want: Desired, seen: Observed) -> list[Finding]:
    """The kernel's rules; nothing to say where the kernel cannot be asked (see skipped)."""
    if seen.loaded is None:
        return []
    findings = []
    if want.watches and seen.enabled not in ("1", "2"):
        # Rules loaded into a disabled audit system record nothing.
        findings.append(LOADED.finding("kernel audit", "enabled 1 (auditd running)",
                                       f"enabled {seen.enabled or 'unknown'}"))
    findings += [LOADED.finding(f"kernel audit watch {w.path}", f"loaded {w.rule!r}",
                                "not loaded", w.severity)
                 for w in want.watches if w.rule not in seen.loaded]
    findings.extend(LOADED.finding("kernel audit rules", "only the policy's baomi watches",
                                   f"stale {r!r}", "low") for r in stale(want, seen))
    return findings


def compare(want: Desired, seen: Observed) -> list[Finding]:
    return _file(want, seen) + _loaded(want, seen)


def skipped(want: Desired, seen: Observed) -> dict[str, str]:
    if seen.loaded is None:
        return {LOADED.id: f"kernel load not possible here: {seen.load_error}"}
    return {}


CONTROL: Control[Desired, Observed] = Control(
    "audit_rules", CHECKS, desired, observe_script, parse, compare, skipped=skipped)
