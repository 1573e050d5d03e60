"""Findings: what compare functions, checks and the agent report, each naming its clause."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from baomi.clauses import cite

SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


@dataclass(frozen=True)
class Finding:
    """One way a host differs from the policy.

    ``subject`` is what was looked at (a file, a setting, a user); ``expected`` and ``found``
    are the evidence, short and human-readable; never a secret (no password hashes, no keys).
    """

    control: str
    clauses: tuple[str, ...]
    severity: str
    subject: str
    expected: str
    found: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        clauses = ", ".join(cite(c) for c in self.clauses)
        return (f"[{clauses}] {self.subject}: expected {self.expected}, found {self.found}")

    def as_dict(self) -> dict[str, Any]:
        return {"control": self.control, "clauses": list(self.clauses),
                "severity": self.severity, "subject": self.subject,
                "expected": self.expected, "found": self.found, "details": self.details}


def report(findings: list[Finding]) -> str:
    """The assertion message of a check: every finding on its own line (the evidence)."""
    return "\n".join(str(f) for f in findings) or "compliant"
