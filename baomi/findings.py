"""Findings: what compare functions, checks and the agent report, each naming its clause.

Every finding carries the stable ID of the check that produced it (``ssh.permit_root_login``,
``sensitive_paths.file_mode``), like Wazuh SCA's ``id:`` or an InSpec control name: the
collector, waivers and audit history track one check over time by it.  A finding's identity on
a host is (check, subject).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from baomi.clauses import cite

SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
CHECK_ID = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*")


@dataclass(frozen=True)
class Finding:
    """One way a host differs from the policy.

    ``subject`` is what was looked at (a file, a setting, a user); ``expected`` and ``found``
    are the evidence, short and human-readable; never a secret (no password hashes, no keys).
    """

    check: str
    clauses: tuple[str, ...]
    severity: str
    subject: str
    expected: str
    found: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not CHECK_ID.fullmatch(self.check):
            raise ValueError(f"check ID {self.check!r}: expected '<control>.<check>'")
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"severity {self.severity!r}: one of {', '.join(SEVERITY_RANK)}")
        if not self.clauses:
            raise ValueError(f"finding of {self.check} names no clause")

    @property
    def control(self) -> str:
        return self.check.split(".", 1)[0]

    def __str__(self) -> str:
        clauses = ", ".join(cite(c) for c in self.clauses)
        return (f"[{clauses}] {self.subject}: expected {self.expected}, found {self.found}")

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "control": self.control, "clauses": list(self.clauses),
                "severity": self.severity, "subject": self.subject,
                "expected": self.expected, "found": self.found, "details": self.details}


def report(findings: list[Finding]) -> str:
    """The assertion message of a check: every finding on its own line (the evidence)."""
    return "\n".join(str(f) for f in findings) or "compliant"
