"""The control contract: what every control provides, and the one generic way to run it.

A control is a pure module in ``baomi/controls/`` ending with ``CONTROL = Control(...)``:

- ``desired(ctx) -> D``: from the host's context (policy, inventory groups, name, controller
  records) to exact file contents and values;
- ``observe_script(want) -> str``: read-only shell, labelled sections (:mod:`baomi.observe`),
  so one round trip reads everything;
- ``parse(output, want) -> O``: the pure parser (unit-tested on output captured from lab hosts);
- ``compare(want, seen) -> [Finding]``: each finding made by one of the control's
  :class:`Check` s, so it carries a stable check ID and its clauses;
- ``not_applicable(want) -> str | None``: the whole control does not apply here (policy turns
  it off, nothing of it concerns this host's groups), decided before observing;
- ``skipped(want, seen) -> {check ID: reason}``: checks that cannot be looked at on this host;
- ``evidence(want, seen) -> {check ID: text}`` (optional): what a check looked at, shown with
  passing checks too (backup's snapshot ids, dates and restore sample).

The deploy (pyinfra), the checks (testinfra), the agent (locally) and the audit all go through
:func:`run`, so apply, audit and watch cannot disagree.  Host-changing shell ("fix" scripts)
never lives in a control module: see :mod:`baomi.fixes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from baomi.findings import CHECK_ID, Finding
from baomi.policy import Policy

D = TypeVar("D")
O = TypeVar("O")  # noqa: E741


@dataclass(frozen=True)
class HostContext:
    """Everything ``desired`` may depend on: nothing else (no files, no clock, no network)."""

    policy: Policy
    groups: frozenset[str]
    host: str = ""
    # Records the controller (or the collector) holds for this host, by name, e.g.
    # "account_requests" for the accounts control.  Absent means none.
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, policy: Policy, groups: Iterable[str], host: str = "",
           **inputs: Any) -> HostContext:
        return cls(policy, frozenset(groups), host, inputs)


@dataclass(frozen=True)
class Check:
    """One stable, named thing a control verifies: its findings carry ``id``."""

    id: str
    clauses: tuple[str, ...]
    title: str

    def __post_init__(self) -> None:
        if not CHECK_ID.fullmatch(self.id):
            raise ValueError(f"check ID {self.id!r}: expected '<control>.<check>'")

    @property
    def control(self) -> str:
        return self.id.split(".", 1)[0]

    def finding(self, subject: str, expected: str, found: str, severity: str = "high",
                **details: Any) -> Finding:
        return Finding(self.id, self.clauses, severity, subject, expected, found, details)


def check(check_id: str, title: str, clauses: tuple[str, ...] | None = None) -> Check:
    """A check of a registered control; its clauses default to the control's."""
    from baomi.controls.registry import entry

    return Check(check_id, clauses or entry(check_id.split(".", 1)[0]).clauses, title)


def file_findings(check_: Check, path: str, want: str | None, seen: str | None,
                  severity: str = "high") -> list[Finding]:
    """A file baomi writes whole: missing, edited, or present where the policy wants none."""
    if want == seen:
        return []
    if want is None:
        return [check_.finding(path, "absent (the policy asks for none)", "present", "medium")]
    return [check_.finding(path, "baomi's content", "missing" if seen is None
                           else "edited content", severity)]


def _always(want: Any) -> str | None:
    return None


def _nothing_skipped(want: Any, seen: Any) -> dict[str, str]:
    return {}


def _no_evidence(want: Any, seen: Any) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Control(Generic[D, O]):
    """A control's functions, called blindly by deploys, checks, the agent and the audit."""

    name: str
    checks: tuple[Check, ...]
    desired: Callable[[HostContext], D]
    observe_script: Callable[[D], str]
    parse: Callable[[str, D], O]
    compare: Callable[[D, O], list[Finding]]
    not_applicable: Callable[[D], str | None] = _always
    skipped: Callable[[D, O], dict[str, str]] = _nothing_skipped
    evidence: Callable[[D, O], dict[str, str]] = _no_evidence

    def __post_init__(self) -> None:
        ids = [c.id for c in self.checks]
        if len(set(ids)) != len(ids) or not ids:
            raise ValueError(f"control {self.name}: check IDs must be unique and non-empty")
        stray = [i for i in ids if not i.startswith(self.name + ".")]
        if stray:
            raise ValueError(f"control {self.name}: checks {stray} belong to another control")

    @property
    def clauses(self) -> tuple[str, ...]:
        from baomi.controls.registry import entry

        return entry(self.name).clauses

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(f"{self.name} has no check {check_id!r}")


PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "not applicable"


@dataclass(frozen=True)
class Result:
    """One control on one host: every check's status, its findings, reasons for what was skipped."""

    control: str
    host: str
    checks: tuple[Check, ...]
    findings: tuple[Finding, ...]
    not_applicable: Mapping[str, str]  # check ID → reason
    evidence: Mapping[str, str] = field(default_factory=dict)  # check ID → what was looked at

    def status(self, check_id: str) -> str:
        if check_id in self.not_applicable:
            return NOT_APPLICABLE
        return FAIL if self.findings_of(check_id) else PASS

    def findings_of(self, check_id: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check_id]

    def statuses(self) -> dict[str, str]:
        return {c.id: self.status(c.id) for c in self.checks}


def run(control: Control[D, O], ctx: HostContext, execute: Callable[[str], str]) -> Result:
    """Desired → observe (``execute`` runs the script on the host, over SSH or locally) →
    parse → compare, with "not applicable" reported the same way for every control."""
    want = control.desired(ctx)
    reason = control.not_applicable(want)
    if reason:
        return Result(control.name, ctx.host, control.checks, (),
                      {c.id: reason for c in control.checks})
    seen = control.parse(execute(control.observe_script(want)), want)
    return evaluate(control, ctx.host, want, seen)


def evaluate(control: Control[D, O], host: str, want: D, seen: O) -> Result:
    """The pure half of :func:`run`, for output already read (tests, the agent's rescans)."""
    findings = control.compare(want, seen)
    known = {c.id for c in control.checks}
    unknown = sorted({f.check for f in findings} - known)
    if unknown:
        raise ValueError(f"control {control.name} made findings of undeclared checks {unknown}")
    skipped = dict(control.skipped(want, seen))
    # A check that produced a finding is not "not applicable", whatever skipped() says.
    for f in findings:
        skipped.pop(f.check, None)
    return Result(control.name, host, control.checks, tuple(findings), skipped,
                  control.evidence(want, seen))
