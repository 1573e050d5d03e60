"""R-ACL 最小权限, R-CLS 密级分类: sensitive paths owned and no looser than their level, marked."""

from __future__ import annotations

from typing import Any

import pytest

from baomi.checks.conftest import observe
from baomi.controls import sensitive_paths as core
from baomi.findings import Finding, report
from baomi.policy import Policy


def _findings(host: Any, policy: Policy, groups: set[str]) -> list[Finding]:
    want = core.desired(policy, groups)
    return core.compare(want, core.parse(observe(host, core.observe_script(want))))


@pytest.mark.clause("R-ACL")
def test_sensitive_paths_access(host: Any, policy: Policy, groups: set[str]) -> None:
    findings = [f for f in _findings(host, policy, groups) if "R-ACL" in f.clauses]
    assert not findings, report(findings)


@pytest.mark.clause("R-CLS")
def test_sensitive_paths_marked(host: Any, policy: Policy, groups: set[str]) -> None:
    findings = [f for f in _findings(host, policy, groups) if "R-CLS" in f.clauses]
    assert not findings, report(findings)
