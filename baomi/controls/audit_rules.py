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
``auditctl`` gets EPERM; the file is then installed and the load reported as not possible,
with the reason (:func:`skipped`), never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

from baomi.findings import Finding
from baomi.observe import cat, script, sections
from baomi.policy import Policy

CONTROL = "audit_rules"
CLAUSES = ("R-LOG",)
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


def desired(policy: Policy, groups: set[str]) -> Desired:
    a = policy.audit_rules
    perms = "".join(c for c in _PERMISSION_ORDER if c in a.permissions)
    watches: list[Watch] = []
    if a.enabled:
        for p in policy.paths_for(groups):
            level = policy.level(p.level)
            if level.audit:
                watches.append(Watch(p.path.rstrip("/") or "/", perms,
                                     f"{a.key_prefix}-{level.english}", level.severity))
    return Desired(tuple(watches), a.key_prefix)


def observe_script(rules_file: str = RULES_FILE) -> str:
    return script({
        "file": cat(rules_file),
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


def parse(output: str) -> Observed:
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


def _finding(subject: str, expected: str, found: str, severity: str = "high") -> Finding:
    return Finding(CONTROL, CLAUSES, severity, subject, expected, found)


def _rules(text: str) -> list[str]:
    return [normalise(line) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def compare_file(want: Desired, seen: Observed) -> list[Finding]:
    if want.content is None:
        if seen.file is not None:
            return [_finding(RULES_FILE, "absent (no path here needs kernel audit)",
                             "present", "medium")]
        return []
    if seen.file == want.content:
        return []
    if seen.file is None:
        return [_finding(RULES_FILE, f"{len(want.watches)} baomi watch rule(s)", "missing")]
    have = _rules(seen.file)
    missing = [w.rule for w in want.watches if w.rule not in have]
    extra = [r for r in have if r not in {w.rule for w in want.watches}]
    found = "; ".join([*(f"missing {r!r}" for r in missing), *(f"extra {r!r}" for r in extra)])
    return [_finding(RULES_FILE, "exactly the baomi watch rules", found or "edited content")]


def stale(want: Desired, seen: Observed) -> list[str]:
    """Loaded rules with a baomi key that the policy no longer asks for."""
    wanted = {w.rule for w in want.watches}
    return [r for r in seen.loaded or () if f" -k {want.key_prefix}-" in f" {r}"
            and r not in wanted]


def compare_loaded(want: Desired, seen: Observed) -> list[Finding]:
    """The kernel's rules; nothing to say where the kernel cannot be asked (see skipped)."""
    if seen.loaded is None:
        return []
    findings = []
    if want.watches and seen.enabled not in ("1", "2"):
        # Rules loaded into a disabled audit system record nothing.
        findings.append(_finding("kernel audit", "enabled 1 (auditd running)",
                                 f"enabled {seen.enabled or 'unknown'}"))
    findings += [_finding(f"kernel audit watch {w.path}", f"loaded {w.rule!r}", "not loaded",
                         w.severity) for w in want.watches if w.rule not in seen.loaded]
    findings.extend(_finding("kernel audit rules", "only the policy's baomi watches",
                             f"stale {r!r}", "low") for r in stale(want, seen))
    return findings


def compare(want: Desired, seen: Observed) -> list[Finding]:
    return compare_file(want, seen) + compare_loaded(want, seen)


def skipped(seen: Observed) -> list[str]:
    if seen.loaded is None:
        return [f"kernel audit rules: kernel load not possible here: {seen.load_error}"]
    return []
