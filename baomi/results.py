"""The audit's results model: one record per host × check, built from the controls' findings.

The checks' pytest plugin (:mod:`baomi.checks.report`) makes a :class:`CheckResult` from the
:class:`~baomi.controls.contract.Result` a control returned (never from assertion text), with
the waivers' decision (:mod:`baomi.waivers`).  ``baomi audit`` renders the records (terminal,
JUnit, JSON, HTML), the collector keeps them as history, ``baomi audit diff`` compares two.

Evidence is what the check looked at: each finding's subject, expected and found value, or a
passing check's own evidence line.  Controls never put secrets there (no password hashes, no
customer file contents: the contract); this module also bounds every text and drops control
characters, since a host's output is not trusted.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from baomi.controls.contract import FAIL, NOT_APPLICABLE, PASS, Check, Result
from baomi.policy import Policy
from baomi.waivers import decide

WAIVED, ERROR = "waived", "error"
STATUSES = (PASS, FAIL, WAIVED, ERROR, NOT_APPLICABLE)
FORMAT = "baomi-audit/1"
MAX_TEXT = 1000
MAX_FINDINGS = 50  # per host × check; the rest are counted
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class AuditFileError(Exception):
    """An audit document is not one baomi wrote; the message names the file and why."""


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """A host's text made safe to show: bounded, no control characters."""
    text = _CONTROL_CHARS.sub("?", str(value))
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more)"


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class CheckResult:
    """One check on one host, as an auditor files it."""

    host: str
    check: str
    clauses: tuple[str, ...]
    title: str
    status: str
    reason: str = ""  # not applicable's reason, the error, the waiver's note
    evidence: tuple[dict[str, str], ...] = ()
    duration: float = 0.0
    timestamp: str = ""
    waiver: dict[str, Any] | None = None

    @property
    def control(self) -> str:
        return self.check.split(".", 1)[0]

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "check": self.check, "control": self.control,
                "clauses": list(self.clauses), "title": self.title, "status": self.status,
                "reason": self.reason, "evidence": [dict(e) for e in self.evidence],
                "duration": round(self.duration, 3), "timestamp": self.timestamp,
                "waiver": self.waiver}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> CheckResult:
        try:
            status = str(d["status"])
            if status not in STATUSES:
                raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
            waiver = d.get("waiver")
            return cls(str(d["host"]), str(d["check"]), tuple(str(c) for c in d["clauses"]),
                       str(d.get("title", "")), status, str(d.get("reason", "")),
                       tuple({str(k): str(v) for k, v in e.items()} for e in d["evidence"]),
                       float(d.get("duration", 0.0)), str(d.get("timestamp", "")),
                       dict(waiver) if isinstance(waiver, dict) else None)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AuditFileError(f"{where}: not an audit result ({type(exc).__name__}: "
                                 f"{exc})") from None


def _evidence(result: Result, check_id: str) -> tuple[dict[str, str], ...]:
    found = result.findings_of(check_id)
    out = [{"subject": clean(f.subject), "expected": clean(f.expected),
            "found": clean(f.found), "severity": f.severity} for f in found[:MAX_FINDINGS]]
    if len(found) > MAX_FINDINGS:
        out.append({"subject": f"… {len(found) - MAX_FINDINGS} more findings", "expected": "",
                    "found": "", "severity": "info"})
    if check_id in result.evidence:
        out.append({"looked_at": clean(result.evidence[check_id])})
    return tuple(out)


def record(result: Result, check: Check, policy: Policy, groups: Iterable[str],
           today: dt.date, duration: float = 0.0, timestamp: str = "") -> CheckResult:
    """The record of ``check`` from the control's ``result`` on its host, waivers decided."""
    status = result.status(check.id)
    reason, waiver = "", None
    if status == NOT_APPLICABLE:
        reason = clean(result.not_applicable[check.id])
    elif status == FAIL:
        decision = decide(policy, result.host, groups, check.id, check.clauses, today)
        if decision.waiver is not None:
            reason, waiver = decision.note(), decision.as_dict()
            status = WAIVED if decision.waived else FAIL
    return CheckResult(result.host, check.id, check.clauses, check.title, status, reason,
                       _evidence(result, check.id), duration, timestamp or now_utc(), waiver)


def error(host: str, check_id: str, clauses: tuple[str, ...], message: str,
          duration: float = 0.0, timestamp: str = "") -> CheckResult:
    """A check that could not be looked at (host unreachable, observe script failed)."""
    return CheckResult(host, check_id, clauses, "", ERROR, clean(message, 500), (), duration,
                       timestamp or now_utc())


@dataclass
class Audit:
    """One audit run: its scope, the policy it judged by, and every record."""

    results: list[CheckResult]
    organisation: str = ""
    policy: dict[str, Any] = field(default_factory=dict)  # file, version, sha256
    scope: dict[str, Any] = field(default_factory=dict)  # inventory, hosts, limit
    started: str = ""
    finished: str = ""
    waivers: list[dict[str, Any]] = field(default_factory=list)  # the policy's, with state
    warnings: list[str] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        return sorted({r.host for r in self.results} | set(self.scope.get("hosts", [])))

    @property
    def clauses(self) -> list[str]:
        from baomi.clauses import CLAUSES

        order = list(CLAUSES)
        found = {c for r in self.results for c in r.clauses}
        return sorted(found, key=lambda c: order.index(c) if c in order else len(order))

    def exit_status(self) -> int:
        """0 compliant (or waived), 1 findings, 2 could not audit some host or check."""
        statuses = {r.status for r in self.results}
        if ERROR in statuses or not self.results:
            return 2
        return 1 if FAIL in statuses else 0

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "organisation": self.organisation, "policy": self.policy,
                "scope": self.scope, "started": self.started, "finished": self.finished,
                "exit_status": self.exit_status(), "summary": summary(self.results),
                "scores": {"hosts": scores(self.results, "host"),
                           "clauses": scores(self.results, "clause")},
                "waivers": self.waivers, "warnings": self.warnings,
                "results": [r.as_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Audit:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise AuditFileError(f"{where}: not a baomi audit (expected \"format\": {FORMAT!r})")
        rows = d.get("results")
        if not isinstance(rows, list):
            raise AuditFileError(f"{where}: 'results' is not a list")
        results = [CheckResult.from_dict(r, f"{where}: results[{i}]")
                   for i, r in enumerate(rows)]
        return cls(results, str(d.get("organisation", "")), dict(d.get("policy") or {}),
                   dict(d.get("scope") or {}), str(d.get("started", "")),
                   str(d.get("finished", "")), list(d.get("waivers") or []),
                   [str(w) for w in d.get("warnings") or []])


def summary(results: Iterable[CheckResult]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] += 1
    return counts


def scores(results: Iterable[CheckResult], by: str) -> dict[str, dict[str, Any]]:
    """Compliance per host or per clause: (pass + waived) / every check that was judged
    (not applicable left out; an error counts against, it is not evidence of compliance)."""
    tally: dict[str, dict[str, int]] = {}
    for r in results:
        for key in ([r.host] if by == "host" else list(r.clauses)):
            counts = tally.setdefault(key, dict.fromkeys(STATUSES, 0))
            counts[r.status] += 1
    out: dict[str, dict[str, Any]] = {}
    for key, c in tally.items():
        judged = c[PASS] + c[WAIVED] + c[FAIL] + c[ERROR]
        score = round(100 * (c[PASS] + c[WAIVED]) / judged) if judged else None
        out[key] = {**c, "score": score}
    return out


def overall(host_scores: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The run's one score, from :func:`scores` per host: the same ratio over every host."""
    judged = [v for v in host_scores.values() if v["score"] is not None]
    total = sum(v[PASS] + v[WAIVED] + v[FAIL] + v[ERROR] for v in judged)
    good = sum(v[PASS] + v[WAIVED] for v in judged)
    return round(100 * good / total) if total else None


def diff(before: Audit, after: Audit) -> list[dict[str, str]]:
    """What changed between two audits, per (host, check): status moves, new, gone."""
    a = {(r.host, r.check): r for r in before.results}
    b = {(r.host, r.check): r for r in after.results}
    out = []
    for key in sorted(a.keys() | b.keys()):
        old, new = a.get(key), b.get(key)
        was = old.status if old else "absent"
        now = new.status if new else "absent"
        if was != now:
            row = new or old
            assert row is not None  # noqa: S101 (the key came from one of them)
            out.append({"host": key[0], "check": key[1], "clauses": " ".join(row.clauses),
                        "before": was, "after": now})
    return out
